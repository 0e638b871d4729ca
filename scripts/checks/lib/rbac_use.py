"""RBAC equals use: the chart grants the operator exactly what it does.

Reads the operator's authorization decisions that the e2e suite recorded on kube-sim (one JSON
file per scenario in the directory given, written when KUMIKO_RBAC_USE_DIR is set), and the
chart's rendered RBAC on stdin. Fails when the operator was refused anything (a rule is
missing), or when a granted (group, resource, verb) was used by no scenario and is not listed,
with the reason it is kept, in the allowlist file.
"""

import json
import pathlib
import sys

import yaml


def granted(objects):
    """(group, resource, verb) of every rule of the operator's ClusterRole and Roles."""
    rules = set()
    for obj in objects:
        if obj.get("kind") not in ("ClusterRole", "Role"):
            continue
        if obj.get("aggregationRule") or "aggregate-to" in json.dumps(obj["metadata"].get("labels", {})):
            continue  # the roles the chart offers users (view/edit), not the operator's
        for rule in obj.get("rules", []):
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    for verb in rule.get("verbs", []):
                        rules.add((group, resource, verb))
    return rules


def main():
    use_dir = pathlib.Path(sys.argv[1])
    allowlist_path = pathlib.Path(sys.argv[2])
    objects = [obj for obj in yaml.safe_load_all(sys.stdin) if obj]
    files = sorted(use_dir.glob("*.json"))
    if not files:
        print(f"rbac-use: FAIL: no recorded decisions in {use_dir}: run the e2e suite with KUMIKO_RBAC_USE_DIR={use_dir}")
        return 1
    used, refused = set(), set()
    for path in files:
        for decided in json.loads(path.read_text()):
            key = (decided["group"], decided["resource"], decided["verb"])
            (used if decided["allowed"] else refused).add(key)
    allowlist = {}
    for line in allowlist_path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        rule, _, reason = line.partition(" ")
        group, resource, verb = rule.split(":")
        allowlist[(group, resource, verb)] = reason.strip()
    failed = False
    for group, resource, verb in sorted(refused):
        print(f"rbac-use: FAIL: the operator was refused {verb} {resource} in group {group!r}: the chart lacks a rule")
        failed = True
    unused = granted(objects) - used
    for key in sorted(unused):
        if key in allowlist:
            print(f"rbac-use: kept unused {key[2]} {key[1]} ({key[0] or 'core'}): {allowlist[key]}")
        else:
            print(f"rbac-use: FAIL: the chart grants {key[2]} {key[1]} in group {key[0]!r}, which no scenario used: remove it, or list it in {allowlist_path} with the reason")
            failed = True
    for key in sorted(set(allowlist) - unused):
        if key in used:
            print(f"rbac-use: FAIL: {allowlist_path} lists {key}, which the scenarios use: drop the line")
            failed = True
    if not failed:
        print(f"rbac-use: {len(used)} permissions used across {len(files)} scenarios, none refused; every granted one is used or listed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
