//! The installed `kubectl` against kube-sim: server-side apply of the KumikoApp CRD and the
//! examples, printer columns, `-o yaml`, `wait --for=condition`, `delete`, `explain`, `logs`,
//! `auth can-i`, `scale` (of a Deployment and of a custom resource), `get rs`, `describe`, and
//! `rollout status|history|undo|pause|resume|restart`.
//!
//! The CRD (`crds/kumikoapp.yaml`) and `examples/minimal.yaml` come from the repository; a missing
//! file fails the test with a message naming it.

// Test helpers outside #[test] functions: a failed set-up is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod controllers_support;

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use controllers_support::{SIM_POD_IMAGE, Sim};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube_sim::controllers::ControllersConfig;
use serde_json::json;

/// The workspace root.
fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A file of the repository, which must exist.
fn repository_file(relative: &str) -> PathBuf {
    let path = repository().join(relative);
    assert!(
        path.is_file(),
        "{relative} is missing: the kubectl suite applies it (generate it with `make crds` or add the example)"
    );
    path
}

/// kubectl against one sim, with its own kubeconfig and discovery cache.
struct Kubectl {
    kubeconfig: PathBuf,
    cache: tempfile::TempDir,
    _dir: tempfile::TempDir,
}

impl Kubectl {
    fn new(sim: &Sim) -> Kubectl {
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, sim.server.kubeconfig_yaml()).expect("kubeconfig written");
        Kubectl {
            kubeconfig,
            cache: tempfile::tempdir().expect("cache dir"),
            _dir: dir,
        }
    }

    async fn run(&self, args: &[&str]) -> Output {
        tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            .output()
            .await
            .expect("kubectl is installed (make deps)")
    }

    /// Runs kubectl, asserts success, returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert!(
            output.status.success(),
            "kubectl {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

fn kumikoapps(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kumiko.so", "v1alpha1", "KumikoApp"),
        "kumikoapps",
    );
    Api::namespaced_with(client.clone(), namespace, &resource)
}

#[tokio::test]
async fn kubectl_applies_crd_and_example_server_side_and_shows_printer_columns() {
    let crd = repository_file("crds/kumikoapp.yaml");
    let example = repository_file("examples/minimal.yaml");
    let sim = Sim::start(ControllersConfig::default()).await;
    let kubectl = Kubectl::new(&sim);

    let applied = kubectl
        .ok(&["apply", "--server-side", "-f", &crd.display().to_string()])
        .await;
    assert!(applied.contains("serverside-applied"), "{applied}");
    // A second manager applying the identical CRD co-owns its fields (the server-side apply
    // documentation, "Conflicts"): Helm and `kubectl apply --server-side` of the same chart CRD.
    let again = kubectl
        .ok(&[
            "apply",
            "--server-side",
            "--field-manager=helm",
            "-f",
            &crd.display().to_string(),
        ])
        .await;
    assert!(again.contains("serverside-applied"), "{again}");
    kubectl
        .ok(&[
            "wait",
            "--for=condition=Established",
            "crd/kumikoapps.kumiko.so",
            "--timeout=30s",
        ])
        .await;
    // The namespace by server-side apply (`kubectl create namespace` works too: see
    // kubectl_auth_can_i_answers_from_the_charts_rules).
    let namespace = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(
        namespace.path(),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: status\n",
    )
    .expect("namespace manifest");
    kubectl
        .ok(&[
            "apply",
            "--server-side",
            "-f",
            &namespace.path().display().to_string(),
        ])
        .await;
    let applied = kubectl
        .ok(&[
            "apply",
            "--server-side",
            "-f",
            &example.display().to_string(),
        ])
        .await;
    assert!(
        applied.contains("kumikoapp.kumiko.so/status serverside-applied"),
        "{applied}"
    );

    // The printer columns of the CRD, with the status as an operator would write it.
    let params = PatchParams::default();
    kumikoapps(&sim.client, "status")
        .patch_status(
            "status",
            &params,
            &Patch::Merge(json!({"status": {
                "api": {"summary": "2/2", "replicas": 2, "readyReplicas": 2,
                    "updatedReplicas": 2, "availableReplicas": 2},
                "worker": {"summary": "1/1", "replicas": 1, "readyReplicas": 1,
                    "updatedReplicas": 1, "availableReplicas": 1},
                "conditions": [{"type": "Ready", "status": "True", "reason": "RolledOut",
                    "message": "all processes run the current generation",
                    "lastTransitionTime": "2025-01-01T00:00:00Z", "observedGeneration": 1}]
            }})),
        )
        .await
        .expect("status written");
    let table = kubectl.ok(&["get", "kumikoapps", "-n", "status"]).await;
    let header: Vec<&str> = table
        .lines()
        .next()
        .expect("header")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "READY", "IMAGE", "API", "WORKER", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .expect("row")
        .split_whitespace()
        .collect();
    assert_eq!(
        &row[..5],
        ["status", "True", "kumiko-app:dev", "2/2", "1/1"],
        "{table}"
    );
    let wide = kubectl
        .ok(&["get", "kumikoapps", "-n", "status", "-o", "wide"])
        .await;
    assert!(
        wide.lines().next().expect("header").ends_with("REASON"),
        "{wide}"
    );
    assert!(wide.contains("RolledOut"), "{wide}");

    let yaml = kubectl
        .ok(&[
            "get",
            "kumikoapp",
            "status",
            "-n",
            "status",
            "-o",
            "yaml",
            "--show-managed-fields",
        ])
        .await;
    assert!(yaml.contains("kind: KumikoApp"), "{yaml}");
    assert!(yaml.contains("image: kumiko-app:dev"), "{yaml}");
    assert!(
        yaml.contains("manager: kubectl\n    operation: Apply"),
        "server-side apply records kubectl's field manager: {yaml}"
    );

    kubectl
        .ok(&[
            "wait",
            "--for=condition=Ready",
            "kumikoapp/status",
            "-n",
            "status",
            "--timeout=30s",
        ])
        .await;

    let deleted = kubectl
        .ok(&[
            "delete",
            "-f",
            &example.display().to_string(),
            "--wait=true",
        ])
        .await;
    assert!(
        deleted.contains("kumikoapp.kumiko.so \"status\" deleted"),
        "{deleted}"
    );
    let gone = kubectl
        .run(&["get", "kumikoapp", "status", "-n", "status"])
        .await;
    assert!(!gone.status.success());
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("NotFound"),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );
    sim.stop().await;
}

#[tokio::test]
async fn kubectl_explain_reads_the_crd_schema_through_discovery_and_openapi_v2() {
    let crd = repository_file("crds/kumikoapp.yaml");
    let sim = Sim::start(ControllersConfig::default()).await;
    let kubectl = Kubectl::new(&sim);
    kubectl
        .ok(&["apply", "--server-side", "-f", &crd.display().to_string()])
        .await;
    kubectl
        .ok(&[
            "wait",
            "--for=condition=Established",
            "crd/kumikoapps.kumiko.so",
            "--timeout=30s",
        ])
        .await;
    let explained = kubectl.ok(&["explain", "kumikoapps.spec"]).await;
    assert!(
        explained.contains("KIND:") && explained.contains("KumikoApp"),
        "{explained}"
    );
    assert!(
        explained.contains("image"),
        "the spec's fields are listed: {explained}"
    );
    let resources = kubectl
        .ok(&["api-resources", "--api-group=kumiko.so"])
        .await;
    assert!(resources.contains("kumikoapps"), "{resources}");

    // The same from the OpenAPI v2 document, which kubectl fetches as gnostic protobuf
    // (`application/com.github.proto-openapi.spec.v2.v1.0+protobuf`) and reads the definitions
    // of by their x-kubernetes-group-version-kind.
    let explained = kubectl
        .ok(&[
            "explain",
            "kumikoapps.spec.image",
            "--output=plaintext-openapiv2",
        ])
        .await;
    assert!(
        explained.contains("FIELD:    image <string>")
            && explained.contains("A change of image runs the migrate Job"),
        "{explained}"
    );
    let explained = kubectl
        .ok(&[
            "explain",
            "deployment.spec.strategy.rollingUpdate",
            "--output=plaintext-openapiv2",
        ])
        .await;
    assert!(
        explained.contains("maxSurge") && explained.contains("RESOURCE: rollingUpdate"),
        "{explained}"
    );
    sim.stop().await;
}

#[tokio::test]
async fn kubectl_waits_for_a_deployment_and_reads_pod_logs() {
    let sim = Sim::start(ControllersConfig::default()).await;
    let kubectl = Kubectl::new(&sim);
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = dir.path().join("web.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 2
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: app
        image: {SIM_POD_IMAGE}
        readinessProbe:
          httpGet: {{path: /health/ready, port: 3000}}
          periodSeconds: 1
"
        ),
    )
    .expect("manifest written");
    kubectl
        .ok(&[
            "apply",
            "--server-side",
            "-f",
            &manifest.display().to_string(),
        ])
        .await;
    kubectl
        .ok(&[
            "wait",
            "--for=condition=Available",
            "deployment/web",
            "--timeout=60s",
        ])
        .await;
    kubectl
        .ok(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    let pods = kubectl.ok(&["get", "pods", "-l", "app=web"]).await;
    assert_eq!(
        pods.lines()
            .filter(|l| l.contains("1/1") && l.contains("Running"))
            .count(),
        2,
        "{pods}"
    );
    let logs = kubectl.ok(&["logs", "deployment/web"]).await;
    assert!(logs.contains("listening on"), "{logs}");
    kubectl.ok(&["delete", "deployment", "web"]).await;
    kubectl
        .ok(&[
            "wait",
            "--for=delete",
            "pod",
            "-l",
            "app=web",
            "--timeout=60s",
        ])
        .await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    sim.stop().await;
}

/// The rendered RBAC objects of the chart (ServiceAccount, roles and bindings), as one YAML stream.
fn chart_rbac(namespace: &str) -> String {
    let helm = repository().join(".tools/bin/helm");
    let helm = if helm.is_file() {
        helm
    } else {
        PathBuf::from("helm")
    };
    let output = std::process::Command::new(&helm)
        .args([
            "template",
            "kumiko-operator",
            &repository()
                .join("charts/kumiko-operator")
                .display()
                .to_string(),
            "--namespace",
            namespace,
        ])
        .output()
        .expect("helm is installed (make deps)");
    assert!(
        output.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rendered = String::from_utf8(output.stdout).expect("UTF-8");
    rendered
        .split("\n---")
        .filter(|document| {
            [
                "kind: ServiceAccount",
                "kind: ClusterRole\n",
                "kind: ClusterRoleBinding",
                "kind: Role\n",
                "kind: RoleBinding",
            ]
            .iter()
            .any(|kind| document.contains(kind))
        })
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// "Using RBAC Authorization" and `kubectl auth can-i`: with the chart's RBAC applied, the
/// operator's ServiceAccount may do what the chart grants and nothing else, asked with
/// impersonation (`--as`) through a SelfSubjectAccessReview.
#[tokio::test]
async fn kubectl_auth_can_i_answers_from_the_charts_rules() {
    let sim = Sim::start(ControllersConfig::default()).await;
    let kubectl = Kubectl::new(&sim);
    let namespace = "kumiko-system";
    let rbac = tempfile::NamedTempFile::new().expect("temp file");
    // `kubectl create` sends protobuf, which kube-sim reads for the kinds it creates.
    kubectl.ok(&["create", "namespace", namespace]).await;
    std::fs::write(rbac.path(), chart_rbac(namespace)).expect("RBAC written");
    kubectl
        .ok(&[
            "apply",
            "--server-side",
            "-f",
            &rbac.path().display().to_string(),
        ])
        .await;
    let crd = repository_file("crds/kumikoapp.yaml");
    kubectl
        .ok(&["apply", "--server-side", "-f", &crd.display().to_string()])
        .await;
    let operator = format!("--as=system:serviceaccount:{namespace}:kumiko-operator");
    let kubectl = &kubectl;
    let can_i = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = kubectl.run(&args).await;
        let answer = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert!(
            answer == "yes" || answer == "no",
            "kubectl {}: {answer}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        answer == "yes"
    };
    let ask = |what: &[&str]| {
        let mut args = vec!["auth".to_owned(), "can-i".to_owned()];
        args.extend(what.iter().map(|part| (*part).to_owned()));
        args.push(operator.clone());
        args
    };
    assert!(can_i(ask(&["list", "secrets", "-A"])).await);
    // Every call the operator makes (see the chart's ClusterRole), and nothing it does not.
    let calls = [
        ("watch", "kumikoapps.kumiko.so", true),
        ("patch", "kumikoapps.kumiko.so", true),
        ("update", "kumikoapps.kumiko.so", false),
        // blockOwnerDeletion under OwnerReferencesPermissionEnforcement.
        (
            "update",
            "kumikoapps.kumiko.so --subresource=finalizers",
            true,
        ),
        ("get", "secrets", true),
        ("patch", "secrets", true),
        ("create", "secrets", true),
        ("delete", "secrets", false),
        ("watch", "services", true),
        ("delete", "services", false),
        ("list", "pods", true),
        ("get", "pods --subresource=log", true),
        ("delete", "pods", false),
        // Observe reads Deployments and Clusters from its caches: list and watch, no get.
        ("get", "deployments.apps", false),
        ("watch", "deployments.apps", true),
        ("delete", "deployments.apps", true),
        ("update", "deployments.apps", false),
        ("create", "jobs.batch", true),
        ("delete", "jobs.batch", true),
        ("delete", "poddisruptionbudgets.policy", true),
        ("get", "clusters.postgresql.cnpg.io", false),
        ("list", "clusters.postgresql.cnpg.io", true),
        ("delete", "horizontalpodautoscalers.autoscaling", true),
        ("create", "events.events.k8s.io", true),
        ("get", "configmaps", false),
        ("create", "rolebindings.rbac.authorization.k8s.io", false),
    ];
    for (verb, resource, expected) in calls {
        let mut what = vec![verb];
        what.extend(resource.split(' '));
        what.extend(["-n", "shop"]);
        assert_eq!(
            can_i(ask(&what)).await,
            expected,
            "can the operator {verb} {resource}?"
        );
    }
    assert!(
        can_i(ask(&[
            "patch",
            "kumikoapps.kumiko.so",
            "--subresource=status",
            "-n",
            "shop"
        ]))
        .await
    );
    assert!(can_i(ask(&["update", "leases/kumiko-operator", "-n", namespace])).await);
    assert!(
        !can_i(ask(&["update", "leases/another", "-n", namespace])).await,
        "only the operator's own Lease"
    );
    assert!(
        !can_i(ask(&[
            "delete",
            "clusters.postgresql.cnpg.io",
            "-n",
            "shop"
        ]))
        .await,
        "the operator may not delete a CNPG Cluster"
    );
    assert!(!can_i(ask(&["create", "clusterroles"])).await);
    sim.stop().await;
}

/// "Kubernetes Protobuf encoding" (API concepts): kubectl's typed clients send the built-in kinds
/// as `application/vnd.kubernetes.protobuf`, so each `kubectl create <kind>` below is a protobuf
/// body the API server decodes and defaults as if it were JSON (an empty string is unset, so
/// `restartPolicy` and `protocol` get their defaults).
#[tokio::test]
async fn kubectl_create_sends_built_in_kinds_as_protobuf() {
    let sim = Sim::start(ControllersConfig::default()).await;
    let kubectl = Kubectl::new(&sim);
    let image = format!("--image={SIM_POD_IMAGE}");
    for args in [
        vec![
            "create",
            "deployment",
            "web",
            &image,
            "--replicas=2",
            "--port=8080",
        ],
        vec!["create", "service", "clusterip", "web", "--tcp=80:8080"],
        vec!["create", "job", "once", &image],
        vec![
            "create",
            "role",
            "reader",
            "--verb=get,list",
            "--resource=pods",
        ],
        vec![
            "create",
            "rolebinding",
            "reader",
            "--role=reader",
            "--user=alice",
        ],
        vec![
            "create",
            "clusterrole",
            "secrets",
            "--verb=get",
            "--resource=secrets",
        ],
        vec![
            "create",
            "quota",
            "budget",
            "--hard=pods=20,limits.memory=4Gi",
        ],
        vec![
            "create",
            "poddisruptionbudget",
            "web",
            "--selector=app=web",
            "--min-available=1",
        ],
        vec!["create", "serviceaccount", "builder"],
        vec![
            "create",
            "secret",
            "generic",
            "token",
            "--from-literal=key=value",
        ],
        vec![
            "create",
            "configmap",
            "settings",
            "--from-literal=mode=fast",
        ],
    ] {
        let created = kubectl.ok(&args).await;
        assert!(created.contains("created"), "{args:?}: {created}");
    }
    let deployment = kubectl
        .ok(&["get", "deployment", "web", "-o", "json"])
        .await;
    let deployment: serde_json::Value = serde_json::from_str(&deployment).unwrap();
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"], 2);
    assert_eq!(spec["template"]["spec"]["restartPolicy"], "Always");
    let port = &spec["template"]["spec"]["containers"][0]["ports"][0];
    assert_eq!(port["containerPort"], 8080);
    assert_eq!(port["protocol"], "TCP");
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    let service = kubectl.ok(&["get", "service", "web", "-o", "json"]).await;
    let service: serde_json::Value = serde_json::from_str(&service).unwrap();
    assert_eq!(service["spec"]["ports"][0]["targetPort"], 8080);
    let quota = kubectl
        .ok(&["get", "quota", "budget", "-o", "jsonpath={.spec.hard}"])
        .await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&quota).unwrap(),
        json!({"pods": "20", "limits.memory": "4Gi"})
    );
    let secret = kubectl
        .ok(&["get", "secret", "token", "-o", "jsonpath={.data.key}"])
        .await;
    assert_eq!(secret, "dmFsdWU=");
    sim.stop().await;
}

/// A Deployment of `sim-pod` with one replica and `VERSION=v1`, rolled out one surge pod at a time.
fn sim_pod_deployment() -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 1
  selector:
    matchLabels: {{app: web}}
  strategy:
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: app
        image: {SIM_POD_IMAGE}
        env: [{{name: VERSION, value: v1}}]
        readinessProbe:
          httpGet: {{path: /health/ready, port: 3000}}
          periodSeconds: 1
"
    )
}

/// The lines of `kubectl rollout history` that list a revision: their revision numbers.
fn revisions(history: &str) -> Vec<u32> {
    history
        .lines()
        .filter_map(|line| line.split_whitespace().next()?.parse().ok())
        .collect()
}

/// "Deployments" (Kubernetes documentation): `kubectl scale` through the scale subresource,
/// `kubectl get rs` showing the ReplicaSets of each template, `kubectl rollout history` listing
/// the revisions, and `kubectl rollout undo` bringing the previous template back as a new
/// revision (the old ReplicaSet's revision moves up).
#[tokio::test]
async fn kubectl_scales_lists_replica_sets_and_rolls_back_a_deployment() {
    let sim = Sim::start(ControllersConfig::default()).await;
    let kubectl = Kubectl::new(&sim);
    let manifest = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(manifest.path(), sim_pod_deployment()).expect("manifest written");
    let manifest = manifest.path().display().to_string();
    kubectl
        .ok(&["apply", "--server-side", "-f", &manifest])
        .await;
    kubectl
        .ok(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;

    // Scale: the scale subresource answers, and the pods follow.
    let scaled = kubectl.ok(&["scale", "deploy/web", "--replicas=3"]).await;
    assert!(scaled.contains("deployment.apps/web scaled"), "{scaled}");
    kubectl
        .ok(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    let scale: serde_json::Value = serde_json::from_str(
        &kubectl
            .ok(&[
                "get",
                "--raw",
                "/apis/apps/v1/namespaces/default/deployments/web/scale",
            ])
            .await,
    )
    .expect("a Scale");
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(scale["status"]["replicas"], 3);
    assert_eq!(scale["status"]["selector"], "app=web");
    let pods = kubectl.ok(&["get", "pods", "-l", "app=web"]).await;
    assert_eq!(
        pods.lines()
            .filter(|l| l.contains("1/1") && l.contains("Running"))
            .count(),
        3,
        "{pods}"
    );

    // `kubectl get rs`: one ReplicaSet, 3 desired, current and ready.
    let first_rs = kubectl
        .ok(&["get", "rs", "-l", "app=web", "-o", "name"])
        .await;
    assert_eq!(first_rs.lines().count(), 1, "{first_rs}");
    let first_rs = first_rs
        .trim()
        .trim_start_matches("replicaset.apps/")
        .to_owned();
    assert!(first_rs.starts_with("web-"), "{first_rs}");
    let table = kubectl.ok(&["get", "rs"]).await;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]);
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with(&first_rs))
        .expect("the ReplicaSet's row")
        .split_whitespace()
        .collect();
    assert_eq!(&row[1..4], ["3", "3", "3"], "{table}");

    let described = kubectl.ok(&["describe", "deployment", "web"]).await;
    assert!(
        described
            .lines()
            .any(|line| line.starts_with("NewReplicaSet:")
                && line.ends_with(&format!(" {first_rs} (3/3 replicas created)"))),
        "{described}"
    );

    // Two template changes: revisions 2 and 3.
    for version in ["v2", "v3"] {
        kubectl
            .ok(&[
                "set",
                "env",
                "deployment/web",
                &format!("VERSION={version}"),
            ])
            .await;
        kubectl
            .ok(&["rollout", "status", "deployment/web", "--timeout=90s"])
            .await;
    }
    let history = kubectl.ok(&["rollout", "history", "deployment/web"]).await;
    assert_eq!(revisions(&history), [1, 2, 3], "{history}");
    let sets = kubectl.ok(&["get", "rs", "-l", "app=web"]).await;
    assert_eq!(sets.lines().count(), 4, "three ReplicaSets: {sets}");
    let revision_two = kubectl
        .ok(&["rollout", "history", "deployment/web", "--revision=2"])
        .await;
    assert!(revision_two.contains("VERSION:\tv2"), "{revision_two}");

    // Undo: the template of revision 2 comes back as revision 4.
    let undone = kubectl.ok(&["rollout", "undo", "deployment/web"]).await;
    assert!(
        undone.contains("deployment.apps/web rolled back"),
        "{undone}"
    );
    kubectl
        .ok(&["rollout", "status", "deployment/web", "--timeout=90s"])
        .await;
    let version = kubectl
        .ok(&[
            "get",
            "deployment/web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].env[0].value}",
        ])
        .await;
    assert_eq!(version, "v2");
    let revision = kubectl
        .ok(&[
            "get",
            "deployment/web",
            "-o",
            "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
        ])
        .await;
    assert_eq!(revision, "4");
    let history = kubectl.ok(&["rollout", "history", "deployment/web"]).await;
    assert_eq!(revisions(&history), [1, 3, 4], "{history}");
    let ready = kubectl
        .ok(&[
            "get",
            "deployment/web",
            "-o",
            "jsonpath={.status.readyReplicas}/{.status.updatedReplicas}/{.spec.replicas}",
        ])
        .await;
    assert_eq!(ready, "3/3/3");
    sim.stop().await;
}

/// "Extend the Kubernetes API with CustomResourceDefinitions", section "Scale subresource":
/// `kubectl scale` of a custom resource writes `specReplicasPath`, and the Scale reads
/// `statusReplicasPath` and `labelSelectorPath`; RBAC checks the `scale` subresource on its own
/// ("Using RBAC Authorization", "Referring to resources").
#[tokio::test]
async fn kubectl_scales_a_custom_resource_and_rbac_checks_the_scale_subresource() {
    let sim = Sim::start(ControllersConfig::default()).await;
    let kubectl = Kubectl::new(&sim);
    let manifests = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(
        manifests.path(),
        "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
        labelSelectorPath: .status.selector
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              replicas: {type: integer}
          status:
            type: object
            properties:
              replicas: {type: integer}
              selector: {type: string}
",
    )
    .expect("CRD written");
    kubectl
        .ok(&[
            "apply",
            "--server-side",
            "-f",
            &manifests.path().display().to_string(),
        ])
        .await;
    kubectl
        .ok(&[
            "wait",
            "--for=condition=Established",
            "crd/widgets.example.com",
            "--timeout=30s",
        ])
        .await;
    let widget = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(
        widget.path(),
        "apiVersion: example.com/v1
kind: Widget
metadata: {name: w, namespace: default}
spec: {replicas: 1}
",
    )
    .expect("widget written");
    kubectl
        .ok(&[
            "apply",
            "--server-side",
            "-f",
            &widget.path().display().to_string(),
        ])
        .await;
    let resources = kubectl.ok(&["get", "--raw", "/apis/example.com/v1"]).await;
    assert!(resources.contains("\"widgets/scale\""), "{resources}");

    let scaled = kubectl.ok(&["scale", "widget/w", "--replicas=5"]).await;
    assert!(scaled.contains("widget.example.com/w scaled"), "{scaled}");
    let replicas = kubectl
        .ok(&["get", "widget/w", "-o", "jsonpath={.spec.replicas}"])
        .await;
    assert_eq!(replicas, "5");
    let scale: serde_json::Value = serde_json::from_str(
        &kubectl
            .ok(&[
                "get",
                "--raw",
                "/apis/example.com/v1/namespaces/default/widgets/w/scale",
            ])
            .await,
    )
    .expect("a Scale");
    assert_eq!(scale["spec"]["replicas"], 5);
    assert_eq!(scale["status"]["replicas"], 0, "no status yet");

    // A ServiceAccount that may patch widgets, but not widgets/scale, cannot scale.
    let rbac = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(
        rbac.path(),
        "apiVersion: v1
kind: ServiceAccount
metadata: {name: scaler, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: widgets, namespace: default}
rules:
- apiGroups: [example.com]
  resources: [widgets]
  verbs: [get, list, watch, patch, update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: scaler, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: widgets}
subjects:
- {kind: ServiceAccount, name: scaler, namespace: default}
",
    )
    .expect("RBAC written");
    kubectl
        .ok(&[
            "apply",
            "--server-side",
            "-f",
            &rbac.path().display().to_string(),
        ])
        .await;
    let as_scaler = "--as=system:serviceaccount:default:scaler";
    let denied = kubectl
        .run(&["scale", "widget/w", "--replicas=2", as_scaler])
        .await;
    assert!(!denied.status.success(), "scaling needs widgets/scale");
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(
        stderr.contains("widgets.example.com \"w\" is forbidden")
            && stderr.contains("resource \"widgets/scale\""),
        "{stderr}"
    );
    kubectl
        .ok(&[
            "patch",
            "role",
            "widgets",
            "--type=json",
            "-p",
            r#"[{"op": "add", "path": "/rules/-", "value": {"apiGroups": ["example.com"], "resources": ["widgets/scale"], "verbs": ["get", "patch", "update"]}}]"#,
        ])
        .await;
    kubectl
        .ok(&["scale", "widget/w", "--replicas=2", as_scaler])
        .await;
    let replicas = kubectl
        .ok(&["get", "widget/w", "-o", "jsonpath={.spec.replicas}"])
        .await;
    assert_eq!(replicas, "2");
    sim.stop().await;
}

/// "Deployments", "Pausing and Resuming a rollout of a Deployment": a paused Deployment creates
/// no ReplicaSet for a new template and reports `Progressing` `DeploymentPaused`; resumed, it rolls
/// the template out; `kubectl rollout restart` rolls out a new ReplicaSet of the same spec.
#[tokio::test]
async fn kubectl_pauses_resumes_and_restarts_a_rollout() {
    let sim = Sim::start(ControllersConfig::default()).await;
    let kubectl = Kubectl::new(&sim);
    let manifest = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(manifest.path(), sim_pod_deployment()).expect("manifest written");
    kubectl
        .ok(&[
            "apply",
            "--server-side",
            "-f",
            &manifest.path().display().to_string(),
        ])
        .await;
    kubectl
        .ok(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    let count_sets = || async {
        kubectl
            .ok(&["get", "rs", "-l", "app=web", "-o", "name"])
            .await
            .lines()
            .count()
    };
    assert_eq!(count_sets().await, 1);

    kubectl.ok(&["rollout", "pause", "deployment/web"]).await;
    kubectl
        .ok(&["set", "env", "deployment/web", "VERSION=v2"])
        .await;
    kubectl
        .ok(&[
            "wait",
            "--for=jsonpath={.status.conditions[?(@.type==\"Progressing\")].reason}=DeploymentPaused",
            "deployment/web",
            "--timeout=30s",
        ])
        .await;
    assert_eq!(
        count_sets().await,
        1,
        "paused: no ReplicaSet for the new template"
    );

    kubectl.ok(&["rollout", "resume", "deployment/web"]).await;
    kubectl
        .ok(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    assert_eq!(count_sets().await, 2);

    kubectl.ok(&["rollout", "restart", "deployment/web"]).await;
    kubectl
        .ok(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    assert_eq!(count_sets().await, 3, "a restart is a new template");
    let history = kubectl.ok(&["rollout", "history", "deployment/web"]).await;
    assert_eq!(revisions(&history), [1, 2, 3], "{history}");
    sim.stop().await;
}

/// A pod whose image does not exist shows `ErrImagePull`/`ImagePullBackOff` in `kubectl get
/// pods`, and the kubelet's Events ("Pulling image", "Failed to pull image", "Back-off pulling
/// image") in `kubectl get events` and `kubectl describe`, as on a real cluster.
#[tokio::test]
async fn kubectl_shows_a_pod_of_an_unknown_image_in_image_pull_back_off_with_its_events() {
    let sim = Sim::start(ControllersConfig {
        backoff_base: Duration::from_secs(1),
        ..ControllersConfig::default()
    })
    .await;
    let kubectl = Kubectl::new(&sim);
    kubectl
        .ok(&[
            "run",
            "ghost",
            "--image=registry.example/ghost:404",
            "--restart=Never",
        ])
        .await;
    let mut seen = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "kubectl get pods showed only {seen:?}"
        );
        let pods = kubectl.ok(&["get", "pod", "ghost", "--no-headers"]).await;
        assert!(pods.contains("0/1"), "never ready: {pods}");
        for status in ["ErrImagePull", "ImagePullBackOff"] {
            if pods.split_whitespace().nth(2) == Some(status) {
                seen.insert(status);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events = kubectl
        .ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=ghost",
        ])
        .await;
    for expected in [
        "Pulling image \"registry.example/ghost:404\"",
        "Failed to pull image \"registry.example/ghost:404\"",
        "Error: ErrImagePull",
        "Back-off pulling image \"registry.example/ghost:404\"",
        "Error: ImagePullBackOff",
        "Successfully assigned default/ghost to kube-sim",
    ] {
        assert!(events.contains(expected), "{expected}: {events}");
    }
    let described = kubectl.ok(&["describe", "pod", "ghost"]).await;
    assert!(described.contains("ImagePullBackOff") || described.contains("ErrImagePull"));
    assert!(
        described.contains("Back-off pulling image \"registry.example/ghost:404\""),
        "{described}"
    );
    sim.stop().await;
}

/// `kubectl get events --field-selector involvedObject.name=<pod>` for a pod whose readiness
/// probe fails: the kubelet's `Unhealthy` Event with the probe's message, counted (`(x N over
/// ...)` in describe) rather than repeated.
#[tokio::test]
async fn kubectl_get_events_shows_a_failing_readiness_probe() {
    let sim = Sim::start(ControllersConfig::default()).await;
    let kubectl = Kubectl::new(&sim);
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = dir.path().join("unready.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: unready
  namespace: default
spec:
  containers:
  - name: app
    image: {SIM_POD_IMAGE}
    env:
    - {{name: SIM_POD_READY_AFTER_MS, value: \"600000\"}}
    readinessProbe:
      httpGet: {{path: /health/ready, port: 3000}}
      periodSeconds: 1
"
        ),
    )
    .expect("manifest written");
    kubectl
        .ok(&["apply", "-f", &manifest.display().to_string()])
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let events = loop {
        let events = kubectl
            .ok(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=unready",
                "-o",
                "json",
            ])
            .await;
        let parsed: serde_json::Value = serde_json::from_str(&events).expect("json");
        let counted = parsed["items"].as_array().is_some_and(|items| {
            items.iter().any(|e| {
                e["reason"] == "Unhealthy"
                    && e["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("statuscode: 503"))
                    && e["count"].as_i64() >= Some(2)
            })
        });
        if counted {
            break parsed;
        }
        assert!(std::time::Instant::now() < deadline, "{events}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let unhealthy: Vec<&serde_json::Value> = events["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| {
            e["reason"] == "Unhealthy"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("statuscode: 503"))
        })
        .collect();
    assert_eq!(unhealthy.len(), 1, "counted, not repeated: {unhealthy:?}");
    assert_eq!(unhealthy[0]["type"], "Warning");
    assert_eq!(unhealthy[0]["source"]["component"], "kubelet");
    assert_eq!(
        unhealthy[0]["involvedObject"]["fieldPath"],
        "spec.containers{app}"
    );
    let message = unhealthy[0]["message"].as_str().expect("message");
    assert!(
        message.starts_with("Readiness probe failed: HTTP probe failed with statuscode: 503"),
        "{message}"
    );
    let table = kubectl
        .ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=unready",
        ])
        .await;
    for reason in ["Scheduled", "Pulled", "Created", "Started", "Unhealthy"] {
        assert!(table.contains(reason), "{reason}: {table}");
    }
    sim.stop().await;
}

/// `kubectl logs` of a CNPG instance pod prints its Postgres's log, as for any Running
/// container; the pod also has the Events a kubelet records for it.
#[tokio::test]
async fn kubectl_logs_of_a_database_pod_prints_its_postgres_log() {
    let sim = Sim::start(ControllersConfig {
        postgres: kube_sim::controllers::PostgresSource::Throwaway,
        ..ControllersConfig::default()
    })
    .await;
    let kubectl = Kubectl::new(&sim);
    let dir = tempfile::tempdir().expect("temp dir");
    let manifest = dir.path().join("db.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: postgresql.cnpg.io/v1
kind: Cluster
metadata:
  name: db
  namespace: default
spec:
  instances: 1
  storage: {size: 1Gi}
",
    )
    .expect("manifest written");
    kubectl
        .ok(&["apply", "-f", &manifest.display().to_string()])
        .await;
    // The Cluster is Ready once its instance pods are.
    kubectl
        .ok(&[
            "wait",
            "--for=condition=Ready",
            "cluster/db",
            "--timeout=90s",
        ])
        .await;
    kubectl
        .ok(&["wait", "--for=condition=Ready", "pod/db-1", "--timeout=90s"])
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let output = kubectl.run(&["logs", "db-1"]).await;
        let logs = String::from_utf8_lossy(&output.stdout);
        if output.status.success()
            && logs.contains("database system is ready to accept connections")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kubectl logs db-1: {logs}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let claims = kubectl.ok(&["get", "pvc", "db-1"]).await;
    assert!(
        claims.contains("Bound") && claims.contains("1Gi") && claims.contains("RWO"),
        "{claims}"
    );
    let events = kubectl
        .ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=db-1",
        ])
        .await;
    assert!(events.contains("Started container postgres"), "{events}");
    sim.stop().await;
}

/// A Deployment of one `sim-pod` with an env var and a ServiceAccount volume, for exec.
fn exec_deployment() -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 1
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: app
        image: {SIM_POD_IMAGE}
        env: [{{name: VERSION, value: v1}}, {{name: SIM_POD_PRINT_ENV, value: VERSION}}]
"
    )
}

/// Applies `manifest` (YAML) and waits until `deployment/NAME` is Available.
async fn apply_and_wait(kubectl: &Kubectl, manifest: &str, deployment: &str) {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), manifest).expect("manifest written");
    kubectl
        .ok(&[
            "apply",
            "--server-side",
            "-f",
            &file.path().display().to_string(),
        ])
        .await;
    kubectl
        .ok(&[
            "wait",
            "--for=condition=Available",
            deployment,
            "--timeout=60s",
        ])
        .await;
}

/// kubectl with its stdin fed `input` (then closed), bounded by a generous deadline.
async fn kubectl_with_input(kubectl: &Kubectl, args: &[&str], input: &[u8]) -> Output {
    let mut child = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubectl.kubeconfig)
        .arg("--cache-dir")
        .arg(kubectl.cache.path())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl is installed (make deps)");
    let mut stdin = child.stdin.take().expect("stdin piped");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, input)
        .await
        .expect("stdin written");
    drop(stdin);
    tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("kubectl {} did not end", args.join(" ")))
        .expect("kubectl ran")
}

/// `kubectl exec` without a terminal (kubectl 1.32's WebSocket executor, `v5.channel.k8s.io`):
/// the command runs with the container's environment, working directory and mount namespace
/// (the pod's ServiceAccount volume is there), stdout and stderr stay apart, the exit code is
/// kubectl's, the image's program is the container's binary, and stdin reaches the command up to
/// its end (the v5 close signal).
#[tokio::test]
async fn kubectl_exec_runs_a_command_in_the_container_and_exits_with_its_code() {
    let sim = Sim::start(ControllersConfig::default()).await;
    let kubectl = Kubectl::new(&sim);
    apply_and_wait(&kubectl, &exec_deployment(), "deployment/web").await;

    let script = concat!(
        "echo version=$VERSION host=$HOSTNAME; ",
        "test \"$(pwd)\" = \"$HOME\" && echo in-the-working-directory; ",
        "echo namespace=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace); ",
        "echo to-stderr >&2; exit 3"
    );
    let output = kubectl
        .run(&["exec", "deploy/web", "--", "sh", "-c", script])
        .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stdout}{stderr}");
    assert!(stdout.contains("version=v1 host=web-"), "{stdout}");
    assert!(stdout.contains("in-the-working-directory"), "{stdout}");
    assert!(stdout.contains("namespace=default"), "{stdout}");
    assert!(!stdout.contains("to-stderr"), "{stdout}");
    assert!(stderr.contains("to-stderr"), "{stderr}");
    assert!(
        !std::path::Path::new("/var/run/secrets/kubernetes.io/serviceaccount/namespace").exists(),
        "the ServiceAccount volume is the pod's alone"
    );

    // `sim-pod` names the image's program: the container's binary runs (and cannot listen on the
    // container's port, which its own process holds: exit 2).
    let output = kubectl
        .run(&["exec", "deploy/web", "-c", "app", "--", "sim-pod", "extra"])
        .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("VERSION=v1"), "{stdout}");
    assert!(stdout.contains(r#"args=["extra"]"#), "{stdout}");
    assert_eq!(output.status.code(), Some(2), "{stdout}");
    // A shell in the container finds the image's program on PATH, as in an image.
    let output = kubectl
        .run(&[
            "exec",
            "deploy/web",
            "--",
            "sh",
            "-c",
            "sim-pod from-a-shell",
        ])
        .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(r#"args=["from-a-shell"]"#), "{stdout}");

    let output = kubectl_with_input(
        &kubectl,
        &[
            "exec",
            "-i",
            "deploy/web",
            "--",
            "sh",
            "-c",
            "cat; echo end-of-input",
        ],
        b"first line\nsecond line\n",
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout, "first line\nsecond line\nend-of-input\n");

    let unknown = kubectl
        .run(&["exec", "deploy/web", "-c", "nope", "--", "true"])
        .await;
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("container nope is not valid"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    sim.stop().await;
}

/// `kubectl exec -it` from a terminal (`script(1)` gives kubectl one): the command runs on a
/// terminal of its own whose size is kubectl's, reads what is typed, and kubectl exits with its
/// code.
#[tokio::test]
async fn kubectl_exec_with_a_tty_runs_the_command_on_a_terminal() {
    let sim = Sim::start(ControllersConfig::default()).await;
    let kubectl = Kubectl::new(&sim);
    apply_and_wait(&kubectl, &exec_deployment(), "deployment/web").await;
    let command = format!(
        "stty cols 100 rows 30; kubectl --kubeconfig {} --cache-dir {} exec -it deploy/web -- sh -c {}",
        kubectl.kubeconfig.display(),
        kubectl.cache.path().display(),
        "'test -t 0 && test -t 1 && echo on-a-terminal; stty size; read line; echo typed-$line; exit 4'"
    );
    let mut child = tokio::process::Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("script(1) is installed (util-linux)");
    let mut stdin = child.stdin.take().expect("stdin piped");
    let stdout = child.stdout.take().expect("stdout piped");
    // Type the line once the command is waiting for it.
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    let reader = tokio::spawn(async move {
        let mut stdout = stdout;
        let mut seen = Vec::new();
        let mut buffer = [0_u8; 4096];
        let mut signal = Some(seen_tx);
        loop {
            match tokio::io::AsyncReadExt::read(&mut stdout, &mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => seen.extend_from_slice(&buffer[..read]),
            }
            if String::from_utf8_lossy(&seen).contains("30 100")
                && let Some(signal) = signal.take()
            {
                let _ = signal.send(());
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    let _ = tokio::time::timeout(Duration::from_secs(60), seen_rx).await;
    tokio::io::AsyncWriteExt::write_all(&mut stdin, b"hello\r")
        .await
        .expect("typed");
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("kubectl exec -it ended")
        .expect("script ran");
    let seen = reader.await.expect("reader");
    assert!(seen.contains("on-a-terminal"), "{seen}");
    assert!(
        seen.contains("30 100"),
        "the terminal has kubectl's size: {seen}"
    );
    assert!(seen.contains("typed-hello"), "{seen}");
    assert_eq!(status.code(), Some(4), "{seen}");
    drop(stdin);
    sim.stop().await;
}

/// kube-apiserver authorizes `pods/exec` by the method's verb (`get` for the WebSocket upgrade)
/// and `create` as well (KEP-4006's compound authorization): a Role with `get` alone is refused
/// (kubectl's SPDY fallback, a POST, is `create`, refused too). (`create` alone works on a real
/// cluster through that fallback; kube-sim serves no SPDY exec, so it is not exercised here.)
#[tokio::test]
async fn kubectl_exec_needs_get_and_create_on_pods_exec() {
    let sim = Sim::start(ControllersConfig::default()).await;
    let kubectl = Kubectl::new(&sim);
    apply_and_wait(&kubectl, &exec_deployment(), "deployment/web").await;
    let rbac = |verbs: &str| {
        format!(
            "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: exec, namespace: default}}
rules:
- apiGroups: ['']
  resources: [pods]
  verbs: [get, list]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list]
- apiGroups: ['']
  resources: [pods/exec]
  verbs: [{verbs}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: exec, namespace: default}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: exec}}
subjects:
- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: jane}}
"
        )
    };
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let path = file.path().display().to_string();
    for (verbs, allowed) in [("get", false), ("get, create", true)] {
        std::fs::write(file.path(), rbac(verbs)).expect("rbac written");
        kubectl
            .ok(&["apply", "--server-side", "--force-conflicts", "-f", &path])
            .await;
        let output = kubectl
            .run(&["--as=jane", "exec", "deploy/web", "--", "echo", "hi"])
            .await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.success(), allowed, "verbs {verbs}: {stderr}");
        if !allowed {
            assert!(stderr.contains("forbidden"), "verbs {verbs}: {stderr}");
        }
    }
    sim.stop().await;
}

/// `kubectl port-forward TARGET 0:PORT` in the background: the local port it prints, and the
/// process (killed on drop).
async fn port_forward(
    kubectl: &Kubectl,
    target: &str,
    ports: &str,
    websockets: bool,
) -> (u16, tokio::process::Child) {
    let mut child = tokio::process::Command::new("kubectl")
        // kubectl's switch for its WebSocket tunnel (on by default): off, it speaks SPDY alone.
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets.to_string())
        .arg("--kubeconfig")
        .arg(&kubectl.kubeconfig)
        .arg("--cache-dir")
        .arg(kubectl.cache.path())
        .args(["port-forward", target, ports])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl is installed (make deps)");
    let stdout = child.stdout.take().expect("stdout piped");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("kubectl port-forward {target} printed nothing"))
        .expect("stdout read")
        .unwrap_or_else(|| panic!("kubectl port-forward {target} ended"));
    // "Forwarding from 127.0.0.1:43121 -> 3000"
    let port = line
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output: {line}"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (port, child)
}

/// `kubectl port-forward` to a pod and to a Service (kubectl resolves the Service port to a
/// pod's container port itself), with HTTP requests through it: kubectl 1.32 tunnels SPDY/3.1
/// through a WebSocket (`SPDY/3.1+portforward.k8s.io`), one pair of streams per connection;
/// with `KUBECTL_PORT_FORWARD_WEBSOCKETS=false` it upgrades to SPDY itself.
#[tokio::test]
async fn kubectl_port_forwards_to_a_pod_and_to_a_service() {
    let sim = Sim::start(ControllersConfig::default()).await;
    let kubectl = Kubectl::new(&sim);
    let manifest = format!(
        "{}        ports: [{{name: http, containerPort: 3000}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: http}}]
",
        exec_deployment()
    );
    apply_and_wait(&kubectl, &manifest, "deployment/web").await;
    let pod = kubectl
        .ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ])
        .await;
    let client = reqwest::Client::new();
    for (target, websockets) in [
        (format!("pod/{pod}"), true),
        ("svc/web".to_owned(), true),
        ("svc/web".to_owned(), false),
    ] {
        let remote = if target.starts_with("svc/") {
            "0:80"
        } else {
            "0:3000"
        };
        let (port, mut child) = port_forward(&kubectl, &target, remote, websockets).await;
        // Several connections, one after the other and at once.
        for _ in 0..2 {
            let body = client
                .get(format!("http://127.0.0.1:{port}/"))
                .send()
                .await
                .unwrap_or_else(|error| panic!("GET through {target}: {error}"))
                .text()
                .await
                .expect("body");
            assert_eq!(body, pod, "through {target}");
        }
        let (a, b) = tokio::join!(
            client.get(format!("http://127.0.0.1:{port}/health")).send(),
            client
                .get(format!("http://127.0.0.1:{port}/health/ready"))
                .send()
        );
        assert_eq!(a.expect("health").status(), 200);
        assert_eq!(b.expect("ready").status(), 200);
        let _ = child.kill().await;
    }
    sim.stop().await;
}
