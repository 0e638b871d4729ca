"""Checks the GitOps examples and the pinned CloudNativePG install in infra/.

kubernetes-validate has no schemas for Argo CD and Flux objects, so this checks what would break
them in a cluster that the YAML alone does not show:
  - every path an Argo CD Application, a Flux Kustomization or a HelmRelease reads exists here;
  - every file a kustomization.yaml lists exists;
  - the Helm values the Argo CD Application and the Flux HelmRelease pass (and the kind values)
    are printed for chart.sh-style validation by the caller (one file per values set);
  - the health script embedded in argocd-cm-health.yaml is health.lua, byte for byte;
  - the CNPG manifest URL in infra/cnpg/kustomization.yaml and in the docs is the one built from
    infra/cnpg/VERSION;
  - every KumikoApp in infra/ validates against the CRD's openAPIV3Schema (CEL rules excluded:
    they need an API server; the e2e suite covers them).

Usage: python3 gitops.py ROOT VALUES_DIR
Prints one line per problem and exits 1 when there is any.
"""

import json
import os
import sys

import yaml

from kumikoapp_schema import problems as kumikoapp_problems


def load_all(path):
    with open(path, encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def cnpg_url(version):
    major, minor, _patch = version.split(".")
    return (
        "https://raw.githubusercontent.com/cloudnative-pg/cloudnative-pg/"
        f"release-{major}.{minor}/releases/cnpg-{version}.yaml"
    )


def main():
    root, values_dir = sys.argv[1], sys.argv[2]
    problems = []

    def problem(message):
        problems.append(message)

    def exists(relative, what):
        path = os.path.join(root, relative[2:] if relative.startswith("./") else relative)
        if not os.path.exists(path):
            problem(f"{what} reads {relative}, which does not exist in the repository")

    infra = os.path.join(root, "infra")
    yaml_files = []
    for directory, _dirs, files in os.walk(infra):
        for name in files:
            if name.endswith(".yaml"):
                yaml_files.append(os.path.join(directory, name))
    yaml_files.sort()

    kumiko_apps = []
    values_sets = []
    for path in yaml_files:
        relative = os.path.relpath(path, root)
        try:
            documents = load_all(path)
        except yaml.YAMLError as error:
            problem(f"{relative} is not valid YAML: {error}")
            continue
        for doc in documents:
            kind = doc.get("kind")
            api = doc.get("apiVersion", "")
            name = doc.get("metadata", {}).get("name", "?")
            where = f"{relative} ({kind} {name})"
            if kind == "Kustomization" and api.startswith("kustomize.config.k8s.io/"):
                for resource in doc.get("resources", []):
                    if "://" in resource:
                        continue
                    exists(os.path.join(os.path.dirname(relative), resource), where)
            elif kind == "Application" and api.startswith("argoproj.io/"):
                source = doc["spec"]["source"]
                exists(source["path"], where)
                helm = source.get("helm", {})
                if "valuesObject" in helm:
                    values_sets.append((where, helm["valuesObject"]))
                if doc["spec"]["destination"].get("server") is None and doc["spec"]["destination"].get("name") is None:
                    problem(f"{where} has no destination server or name")
            elif kind == "Kustomization" and api.startswith("kustomize.toolkit.fluxcd.io/"):
                exists(doc["spec"]["path"], where)
                for check in doc["spec"].get("healthChecks", []):
                    if check.get("kind") == "KumikoApp" and check.get("apiVersion") != "kumiko.so/v1alpha1":
                        problem(f"{where} health-checks KumikoApp as {check.get('apiVersion')}")
            elif kind == "HelmRelease" and api.startswith("helm.toolkit.fluxcd.io/"):
                exists(doc["spec"]["chart"]["spec"]["chart"], where)
                if "values" in doc["spec"]:
                    values_sets.append((where, doc["spec"]["values"]))
            elif kind == "KumikoApp":
                kumiko_apps.append((where, doc))

    # The kind values are values too.
    kind_values = os.path.join(infra, "kind", "operator-values.yaml")
    if os.path.exists(kind_values):
        values_sets.append(("infra/kind/operator-values.yaml", load_all(kind_values)[0]))
    os.makedirs(values_dir, exist_ok=True)
    with open(os.path.join(values_dir, "index.txt"), "w", encoding="utf-8") as index:
        for number, (where, values) in enumerate(values_sets):
            file = os.path.join(values_dir, f"values-{number}.yaml")
            with open(file, "w", encoding="utf-8") as handle:
                yaml.safe_dump(values, handle)
            index.write(f"{file}\t{where}\n")

    # The Argo CD health script, embedded verbatim.
    health = os.path.join(infra, "gitops", "argocd", "health.lua")
    config_map = os.path.join(infra, "gitops", "argocd", "argocd-cm-health.yaml")
    with open(health, encoding="utf-8") as handle:
        script = handle.read()
    embedded = load_all(config_map)[0]["data"].get("resource.customizations.health.kumiko.so_KumikoApp")
    if embedded != script:
        problem("argocd-cm-health.yaml does not embed health.lua verbatim: re-embed it (see infra/README.md)")

    # The CNPG pin.
    with open(os.path.join(infra, "cnpg", "VERSION"), encoding="utf-8") as handle:
        version = handle.read().strip()
    url = cnpg_url(version)
    cnpg_kustomization = load_all(os.path.join(infra, "cnpg", "kustomization.yaml"))[0]
    if cnpg_kustomization.get("resources") != [url]:
        problem(f"infra/cnpg/kustomization.yaml does not install exactly {url}")
    for doc in ("infra/README.md", "charts/kumiko-operator/README.md"):
        path = os.path.join(root, doc)
        if not os.path.exists(path):
            problem(f"{doc} is missing")
            continue
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        if url not in text:
            problem(f"{doc} does not give the pinned CNPG manifest {url}")
        for line_number, line in enumerate(text.splitlines(), 1):
            if "releases/cnpg-" in line and url not in line:
                problem(f"{doc}:{line_number} names a CNPG manifest other than {url}")

    # KumikoApps against the CRD schema.
    crd_path = os.path.join(root, "crds", "kumikoapp.yaml")
    if kumiko_apps and not os.path.exists(crd_path):
        problem("crds/kumikoapp.yaml is missing (run make crds): cannot validate the example KumikoApps")
    elif kumiko_apps:
        crd = load_all(crd_path)[0]
        for where, app in kumiko_apps:
            for message in kumikoapp_problems(app, crd):
                problem(f"{where}: {message}")

    for message in problems:
        print(f"gitops: {message}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
