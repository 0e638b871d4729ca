"""Checks how the objects `helm template` renders for the kumiko-operator chart fit together.

kubernetes-validate proves each object is well formed on its own; this proves the references
between them: selectors that select the pods, ports that exist, bindings to the ServiceAccount the
pods run as, the restricted security context, the leader-election wiring. It also checks the
ServiceMonitor, whose schema (a Prometheus Operator CRD) kubernetes-validate does not have: its
selector must select the metrics Service and its endpoint must name a port of that Service.

Usage: python3 chart_wiring.py NAMESPACE < rendered.yaml
Prints one line per problem and exits 1 when there is any.
"""

import sys

import yaml

UID = 65532


def subset(small, big):
    """Whether every key/value of `small` is in `big`."""
    return all(big.get(key) == value for key, value in (small or {}).items())


def check(objects, namespace):
    problems = []

    def problem(message):
        problems.append(message)

    by_kind = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)

    deployments = by_kind.get("Deployment", [])
    if len(deployments) != 1:
        problem(f"expected one Deployment, found {len(deployments)}")
        return problems
    deployment = deployments[0]
    spec = deployment["spec"]
    pod = spec["template"]
    pod_labels = pod["metadata"].get("labels", {})
    pod_spec = pod["spec"]

    if not subset(spec["selector"]["matchLabels"], pod_labels):
        problem("Deployment selector does not select its own pod template")
    if deployment["metadata"].get("namespace") != namespace:
        problem("Deployment is not in the release namespace")

    # Restricted Pod Security, numeric non-root user, read-only root filesystem.
    pod_security = pod_spec.get("securityContext", {})
    if pod_security.get("runAsNonRoot") is not True:
        problem("pod securityContext.runAsNonRoot is not true")
    if pod_security.get("runAsUser") != UID:
        problem(f"pod securityContext.runAsUser is not the numeric {UID}")
    if pod_security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problem("pod seccompProfile is not RuntimeDefault")

    containers = pod_spec["containers"]
    if len(containers) != 1:
        problem(f"expected one container, found {len(containers)}")
    container = containers[0]
    security = container.get("securityContext", {})
    if security.get("readOnlyRootFilesystem") is not True:
        problem("container readOnlyRootFilesystem is not true")
    if security.get("allowPrivilegeEscalation") is not False:
        problem("container allowPrivilegeEscalation is not false")
    if security.get("capabilities", {}).get("drop") != ["ALL"]:
        problem("container does not drop ALL capabilities")
    if container.get("args") != ["run"]:
        problem("container args are not [run]")
    if "resources" not in container or not container["resources"].get("requests"):
        problem("container has no resource requests")

    ports = {port["name"]: port["containerPort"] for port in container.get("ports", [])}
    env = {item["name"]: item for item in container.get("env", [])}
    for name in ("KUMIKO_HTTP_ADDR", "KUMIKO_LEASE_NAME", "RUST_LOG", "POD_NAME", "POD_NAMESPACE"):
        if name not in env:
            problem(f"container env lacks {name}")
    if "KUMIKO_HTTP_ADDR" in env and "http" in ports:
        address = env["KUMIKO_HTTP_ADDR"].get("value", "")
        if not address.endswith(f":{ports['http']}"):
            problem(f"KUMIKO_HTTP_ADDR {address} does not listen on containerPort {ports['http']}")
    field_paths = {
        name: env[name].get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        for name in ("POD_NAME", "POD_NAMESPACE")
        if name in env
    }
    if field_paths.get("POD_NAME") != "metadata.name":
        problem("POD_NAME does not come from metadata.name")
    if field_paths.get("POD_NAMESPACE") != "metadata.namespace":
        problem("POD_NAMESPACE does not come from metadata.namespace")

    for probe_name, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        probe = container.get(probe_name)
        if probe is None:
            problem(f"container has no {probe_name}")
            continue
        http = probe.get("httpGet", {})
        if http.get("path") != path:
            problem(f"{probe_name} does not probe {path}")
        if http.get("port") not in ports and http.get("port") not in ports.values():
            problem(f"{probe_name} probes port {http.get('port')}, which the container does not expose")

    replicas = spec.get("replicas", 1)
    affinity = pod_spec.get("affinity")
    if replicas > 1 and affinity is None and not pod_spec.get("topologySpreadConstraints"):
        problem(f"{replicas} replicas with neither anti-affinity nor topology spread across nodes")
    anti = (affinity or {}).get("podAntiAffinity", {})
    for term in anti.get("requiredDuringSchedulingIgnoredDuringExecution", []) + [
        weighted["podAffinityTerm"]
        for weighted in anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])
    ]:
        if not subset(term["labelSelector"]["matchLabels"], pod_labels):
            problem("the anti-affinity term does not select the operator's own pods")
        if term.get("topologyKey") != "kubernetes.io/hostname":
            problem("the anti-affinity term does not spread across nodes")

    # The metrics Service selects the pods and targets a declared port.
    services = by_kind.get("Service", [])
    if len(services) != 1:
        problem(f"expected one metrics Service, found {len(services)}")
    for service in services:
        if not subset(service["spec"]["selector"], pod_labels) or not service["spec"]["selector"]:
            problem(f"Service {service['metadata']['name']} does not select the operator pods")
        for port in service["spec"]["ports"]:
            if port["targetPort"] not in ports and port["targetPort"] not in ports.values():
                problem(f"Service port {port['name']} targets {port['targetPort']}, not a container port")

    for monitor in by_kind.get("ServiceMonitor", []):
        if monitor["apiVersion"] != "monitoring.coreos.com/v1":
            problem(f"ServiceMonitor has apiVersion {monitor['apiVersion']}")
        selector = monitor["spec"]["selector"]["matchLabels"]
        selected = [s for s in services if subset(selector, s["metadata"].get("labels", {}))]
        if len(selected) != 1:
            problem(f"ServiceMonitor selects {len(selected)} Services, not the metrics Service")
        port_names = {port["name"] for s in selected for port in s["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            if endpoint.get("port") not in port_names:
                problem(f"ServiceMonitor endpoint port {endpoint.get('port')} is not a port of the metrics Service")
            if endpoint.get("path") != "/metrics":
                problem("ServiceMonitor endpoint does not scrape /metrics")
        if namespace not in monitor["spec"].get("namespaceSelector", {}).get("matchNames", []):
            problem("ServiceMonitor does not look in the release namespace")

    for budget in by_kind.get("PodDisruptionBudget", []):
        if not subset(budget["spec"]["selector"]["matchLabels"], pod_labels):
            problem("PodDisruptionBudget does not select the operator pods")

    # The bindings grant their roles to the ServiceAccount the pods run as.
    account = pod_spec.get("serviceAccountName")
    roles = {(obj["kind"], obj["metadata"]["name"]): obj for kind in ("Role", "ClusterRole") for obj in by_kind.get(kind, [])}
    bindings = by_kind.get("RoleBinding", []) + by_kind.get("ClusterRoleBinding", [])
    for binding in bindings:
        ref = binding["roleRef"]
        if (ref["kind"], ref["name"]) not in roles:
            problem(f"{binding['kind']} {binding['metadata']['name']} refers to {ref['kind']} {ref['name']}, which the chart does not render")
        for subject in binding["subjects"]:
            if subject.get("name") != account or subject.get("namespace") != namespace:
                problem(f"{binding['kind']} {binding['metadata']['name']} binds {subject.get('namespace')}/{subject.get('name')}, not the pods' ServiceAccount {namespace}/{account}")
    if by_kind.get("ServiceAccount"):
        names = [obj["metadata"]["name"] for obj in by_kind["ServiceAccount"]]
        if account not in names:
            problem(f"the pods run as {account}, but the chart renders ServiceAccount(s) {names}")

    if bindings:
        lease_rules = [
            rule
            for obj in by_kind.get("Role", [])
            for rule in obj["rules"]
            if "leases" in rule.get("resources", [])
        ]
        lease_name = env.get("KUMIKO_LEASE_NAME", {}).get("value")
        granted = set()
        for rule in lease_rules:
            if rule.get("resourceNames") and lease_name not in rule["resourceNames"]:
                problem(f"the Lease rule names {rule['resourceNames']}, not the lease {lease_name} the operator uses")
            granted.update(rule["verbs"])
        for verb in ("get", "create", "update"):
            if verb not in granted:
                problem(f"the leader-election Role lacks {verb} on leases")
        for obj in by_kind.get("ClusterRole", []):
            for rule in obj["rules"]:
                if "leases" in rule.get("resources", []):
                    problem(f"ClusterRole {obj['metadata']['name']} grants leases cluster-wide; the Role in the release namespace is enough")
                if "*" in rule.get("verbs", []) or "*" in rule.get("resources", []):
                    problem(f"ClusterRole {obj['metadata']['name']} has a wildcard rule")
                # Data is sacred: the operator never deletes a CNPG Cluster (the garbage collector
                # does, for reclaimPolicy Delete), so it must not be able to.
                if (
                    "postgresql.cnpg.io" in rule.get("apiGroups", [])
                    and {"clusters", "*"} & set(rule.get("resources", []))
                    and {"delete", "deletecollection"} & set(rule.get("verbs", []))
                ):
                    problem(f"ClusterRole {obj['metadata']['name']} may delete CNPG Clusters, which hold the apps' data")

    return problems


def main():
    namespace = sys.argv[1]
    objects = [obj for obj in yaml.safe_load_all(sys.stdin) if obj]
    problems = check(objects, namespace)
    for message in problems:
        print(f"chart wiring: {message}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
