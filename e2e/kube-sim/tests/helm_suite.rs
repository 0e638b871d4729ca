//! The installed Helm 4 against kube-sim: `helm install --wait`, `helm status`,
//! `helm upgrade --wait` and `helm uninstall --wait` of the operator chart
//! (`charts/kumiko-operator`).
//!
//! Helm 4 waits with kstatus (`--wait=watcher`, cli-utils' status watcher), which reads a
//! Deployment's status through its ReplicaSets and their pods; the release is installed only
//! once every object is Current. The operator image is mapped to the `sim-pod` test program,
//! which stays up and answers the chart's probes (`/healthz`, `/readyz`) with 200: this suite
//! tests what Helm sends and waits for, not the operator (the e2e suite runs the real one).

// Test helpers outside #[test] functions: a failed set-up is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod controllers_support;

use std::path::PathBuf;
use std::process::Output;

use controllers_support::Sim;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use kube_sim::controllers::{ControllersConfig, ImageMapping};

/// The workspace root.
fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The namespace the chart is installed in.
const NAMESPACE: &str = "kumiko-system";

/// Helm against one sim, with its own kubeconfig, cache and configuration directories.
struct Helm {
    binary: PathBuf,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

impl Helm {
    fn new(sim: &Sim) -> Helm {
        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, sim.server.kubeconfig_yaml()).expect("kubeconfig written");
        let tools = repository().join(".tools/bin/helm");
        Helm {
            binary: if tools.is_file() {
                tools
            } else {
                PathBuf::from("helm")
            },
            kubeconfig,
            dir,
        }
    }

    async fn run(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(&self.binary)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env("HELM_CACHE_HOME", self.dir.path().join("cache"))
            .env("HELM_CONFIG_HOME", self.dir.path().join("config"))
            .env("HELM_DATA_HOME", self.dir.path().join("data"))
            .args(args)
            .output()
            .await
            .expect("helm is installed (make deps)")
    }

    /// Runs helm, asserts success, returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert!(
            output.status.success(),
            "helm {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

fn annotation(rs: &ReplicaSet, key: &str) -> Option<String> {
    rs.metadata.annotations.as_ref()?.get(key).cloned()
}

#[tokio::test]
async fn helm_installs_upgrades_and_uninstalls_the_operator_chart_with_wait() {
    let sim = Sim::start(ControllersConfig {
        images: vec![ImageMapping {
            image: "kumiko-operator".to_owned(),
            binary: env!("CARGO_BIN_EXE_sim-pod").into(),
        }],
        ..ControllersConfig::default()
    })
    .await;
    let helm = Helm::new(&sim);
    let chart = repository()
        .join("charts/kumiko-operator")
        .display()
        .to_string();
    let image = [
        "--set",
        "image.repository=kumiko-operator",
        "--set",
        "image.tag=dev",
    ];

    // Install and wait: returns once the Deployment is rolled out (kstatus Current).
    let mut install = vec![
        "install",
        "kumiko-operator",
        chart.as_str(),
        "--namespace",
        NAMESPACE,
        "--create-namespace",
        "--wait",
        "--timeout",
        "120s",
    ];
    install.extend(image);
    let installed = helm.ok(&install).await;
    assert!(installed.contains("STATUS: deployed"), "{installed}");
    let deployments: Api<Deployment> = Api::namespaced(sim.client.clone(), NAMESPACE);
    let deployment = deployments.get("kumiko-operator").await.expect("deployed");
    let status = deployment.status.clone().expect("status");
    assert_eq!(
        (status.ready_replicas, status.updated_replicas),
        (Some(2), Some(2)),
        "--wait returned before the rollout finished"
    );

    let status = helm
        .ok(&["status", "kumiko-operator", "--namespace", NAMESPACE])
        .await;
    assert!(
        status.contains("STATUS: deployed") && status.contains("REVISION: 1"),
        "{status}"
    );

    // Upgrade with a changed template (the log level) and replica count: a new ReplicaSet
    // rolls out, and --wait returns once it has.
    let mut upgrade = vec![
        "upgrade",
        "kumiko-operator",
        chart.as_str(),
        "--namespace",
        NAMESPACE,
        "--wait",
        "--timeout",
        "120s",
        "--set",
        "replicaCount=3",
        "--set",
        "logLevel=debug",
    ];
    upgrade.extend(image);
    let upgraded = helm.ok(&upgrade).await;
    assert!(
        upgraded.contains("STATUS: deployed") && upgraded.contains("REVISION: 2"),
        "{upgraded}"
    );
    let replica_sets: Api<ReplicaSet> = Api::namespaced(sim.client.clone(), NAMESPACE);
    let sets = replica_sets
        .list(&ListParams::default())
        .await
        .expect("replica sets")
        .items;
    assert_eq!(sets.len(), 2, "one ReplicaSet per template");
    let newest = sets
        .iter()
        .find(|rs| annotation(rs, "deployment.kubernetes.io/revision").as_deref() == Some("2"))
        .expect("the new ReplicaSet has revision 2");
    let ready = newest.status.as_ref().and_then(|s| s.ready_replicas);
    assert_eq!(
        (newest.spec.as_ref().and_then(|s| s.replicas), ready),
        (Some(3), Some(3)),
        "--wait returned before the new ReplicaSet was ready"
    );
    let oldest = sets
        .iter()
        .find(|rs| annotation(rs, "deployment.kubernetes.io/revision").as_deref() == Some("1"))
        .expect("the old ReplicaSet is kept");
    assert_eq!(oldest.spec.as_ref().and_then(|s| s.replicas), Some(0));

    // Uninstall and wait: the chart's objects are gone; the CRD from crds/ stays, as Helm
    // documents ("Helm never deletes CRDs").
    helm.ok(&[
        "uninstall",
        "kumiko-operator",
        "--namespace",
        NAMESPACE,
        "--wait",
        "--timeout",
        "120s",
    ])
    .await;
    assert!(
        deployments
            .get_opt("kumiko-operator")
            .await
            .expect("get")
            .is_none(),
        "the Deployment is gone"
    );
    let service_accounts: Api<ServiceAccount> = Api::namespaced(sim.client.clone(), NAMESPACE);
    assert!(
        service_accounts
            .get_opt("kumiko-operator")
            .await
            .expect("get")
            .is_none()
    );
    let cluster_roles: Api<ClusterRole> = Api::all(sim.client.clone());
    assert!(
        cluster_roles
            .get_opt("kumiko-operator")
            .await
            .expect("get")
            .is_none()
    );
    controllers_support::wait_for(
        "the ReplicaSets and pods to be collected",
        std::time::Duration::from_secs(60),
        || async {
            let sets = replica_sets.list(&ListParams::default()).await.ok()?;
            let pods: Api<Pod> = Api::namespaced(sim.client.clone(), NAMESPACE);
            let pods = pods.list(&ListParams::default()).await.ok()?;
            (sets.items.is_empty() && pods.items.is_empty()).then_some(())
        },
    )
    .await;
    let crds: Api<CustomResourceDefinition> = Api::all(sim.client.clone());
    assert!(
        crds.get_opt("kumikoapps.kumiko.so")
            .await
            .expect("get")
            .is_some(),
        "the CRD stays"
    );
    let gone = helm
        .run(&["status", "kumiko-operator", "--namespace", NAMESPACE])
        .await;
    assert!(!gone.status.success(), "the release is gone");
    sim.stop().await;
}
