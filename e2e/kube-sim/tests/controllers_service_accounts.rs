//! What the kubelet gives a pod to reach the API ("Accessing the Kubernetes API from a Pod",
//! "Configure Service Accounts for Pods"): `KUBERNETES_SERVICE_HOST`/`_PORT`, and at
//! `/var/run/secrets/kubernetes.io/serviceaccount/` a `token` for its ServiceAccount, the API
//! server's `ca.crt` and its `namespace`, in the pod's own mount namespace; nothing when
//! `automountServiceAccountToken` is false.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod controllers_support;

use std::time::Duration;

use controllers_support::{Sim, wait_for};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use kube::api::{Api, ListParams, LogParams, PostParams};
use kube_sim::controllers::{ControllersConfig, ImageMapping};
use serde_json::{Value, json};

const SH_IMAGE: &str = "sh:test";
const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

async fn run(sim: &Sim, namespace: &str, name: &str, spec: Value) -> (i32, String) {
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), namespace);
    let mut pod = json!({"metadata": {"name": name}, "spec": spec});
    pod["spec"]["restartPolicy"] = json!("Never");
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod).unwrap(),
    )
    .await
    .unwrap();
    let code = wait_for(
        &format!("pod {name} to finish"),
        Duration::from_secs(60),
        || async {
            let pod = pods.get(name).await.ok()?;
            let status = pod.status?.container_statuses?.into_iter().next()?;
            Some(status.state?.terminated?.exit_code)
        },
    )
    .await;
    let log = pods
        .logs(name, &LogParams::default())
        .await
        .unwrap_or_default();
    (code, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_gets_its_service_account_token_ca_and_the_api_address() {
    let sim = Sim::start(ControllersConfig {
        images: vec![ImageMapping {
            image: SH_IMAGE.to_owned(),
            binary: "/bin/sh".into(),
        }],
        ..ControllersConfig::default()
    })
    .await;
    let namespaces: Api<Namespace> = Api::all(sim.client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "robots"}})).unwrap(),
        )
        .await
        .unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(sim.client.clone(), "robots");
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "robot"}})).unwrap(),
        )
        .await
        .unwrap();
    let script = format!(
        "cat {MOUNT}/namespace; echo; echo \"$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT\"; cat {MOUNT}/token; echo; head -1 {MOUNT}/ca.crt"
    );
    let (code, log) = run(
        &sim,
        "robots",
        "reader",
        json!({"serviceAccountName": "robot", "containers": [{"name": "sh", "image": SH_IMAGE, "args": ["-c", script]}]}),
    )
    .await;
    assert_eq!(code, 0, "{log}");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[0], "robots");
    assert_eq!(
        lines[1],
        sim.server.addr().to_string(),
        "the API server's address"
    );
    assert_eq!(lines[3], "-----BEGIN CERTIFICATE-----");

    // The token authenticates as the pod's ServiceAccount (RBAC grants it nothing here).
    let mut config = sim.server.client_config().unwrap();
    config.headers = vec![(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&format!("Bearer {}", lines[2])).unwrap(),
    )];
    let as_robot: Api<ConfigMap> =
        Api::namespaced(kube::Client::try_from(config).unwrap(), "robots");
    let refused = as_robot.list(&ListParams::default()).await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("system:serviceaccount:robots:robot"),
        "{refused}"
    );

    // automountServiceAccountToken: false: no volume, and the path does not exist on the machine.
    let (code, log) = run(
        &sim,
        "robots",
        "without",
        json!({"serviceAccountName": "robot", "automountServiceAccountToken": false, "containers": [{"name": "sh", "image": SH_IMAGE, "args": ["-c", format!("test ! -e {MOUNT}")]}]}),
    )
    .await;
    assert_eq!(code, 0, "{log}");
    assert!(
        !std::path::Path::new(MOUNT).exists(),
        "the mount exists for the pod only"
    );
    sim.stop().await;
}
