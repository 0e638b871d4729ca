"""Validates KumikoApp manifests against the openAPIV3Schema of crds/kumikoapp.yaml, with unknown
fields rejected as `kubectl apply` (strict field validation) rejects them and repeated keys of
list-maps and sets refused as the API server refuses them. The CRD's CEL rules need
an API server and are not evaluated here (the CEL tests and the e2e suite cover them).

As a program: python3 kumikoapp_schema.py CRD_PATH WHERE < manifests.yaml
validates every KumikoApp in the input and exits 1 when one does not validate (or none is found).
"""

import sys

import jsonschema
import yaml


def strict(schema):
    """The schema with unknown fields rejected: every object with properties and neither
    additionalProperties nor preserve-unknown-fields gets additionalProperties: false."""
    if isinstance(schema, dict):
        out = {key: strict(value) for key, value in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def duplicate_list_keys(schema, value, path, found):
    """Appends a message for each repeated key of a list the schema declares
    x-kubernetes-list-type map (by its x-kubernetes-list-map-keys) or set (by value), as the API
    server refuses them: once per key, at the index of its second appearance."""
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key, child in value.items():
            if key in properties:
                duplicate_list_keys(properties[key], child, f"{path}.{key}" if path else key, found)
    elif isinstance(value, list):
        list_type = schema.get("x-kubernetes-list-type")
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen = {}
        for index, item in enumerate(value):
            if list_type == "map" and isinstance(item, dict):
                identity = repr(sorted((k, repr(item[k])) for k in keys if k in item))
            elif list_type == "set":
                identity = repr(item)
            else:
                break
            seen[identity] = seen.get(identity, 0) + 1
            if seen[identity] == 2:
                found.append(f"{path}[{index}]: Duplicate value (x-kubernetes-list-type {list_type})")
        items = schema.get("items", {})
        for index, item in enumerate(value):
            duplicate_list_keys(items, item, f"{path}[{index}]", found)


def problems(app, crd):
    """Every way `app` (a parsed KumikoApp) breaks the CRD's schema, as `field: message` lines."""
    versions = {version["name"]: version for version in crd["spec"]["versions"]}
    version_name = str(app.get("apiVersion", "")).split("/")[-1]
    if version_name not in versions:
        return [f"apiVersion: the CRD does not serve version {version_name!r}"]
    schema = strict(versions[version_name]["schema"]["openAPIV3Schema"])
    schema.get("properties", {}).pop("metadata", None)
    body = {key: value for key, value in app.items() if key not in ("apiVersion", "kind", "metadata")}
    found = []
    for error in sorted(jsonschema.Draft4Validator(schema).iter_errors(body), key=lambda e: list(e.path)):
        field = ".".join(str(part) for part in error.path) or "(root)"
        found.append(f"{field}: {error.message}")
    duplicate_list_keys(schema, body, "", found)
    return found


def main():
    crd_path, where = sys.argv[1], sys.argv[2]
    with open(crd_path, encoding="utf-8") as handle:
        crd = next(doc for doc in yaml.safe_load_all(handle) if doc)
    apps = [doc for doc in yaml.safe_load_all(sys.stdin) if doc and doc.get("kind") == "KumikoApp"]
    if not apps:
        print(f"{where}: no KumikoApp found")
        sys.exit(1)
    failed = False
    for app in apps:
        for message in problems(app, crd):
            failed = True
            print(f"{where} (KumikoApp {app.get('metadata', {}).get('name')}): {message}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
