//! `spec.monitoring` end to end: on a cluster without prometheus-operator the app becomes Ready
//! and `MonitoringAvailable=False` (`PodMonitorCrdMissing`) says what to install; once the
//! PodMonitor CRD is installed, the operator (not restarted) creates the PodMonitor, whose
//! selector picks the app's API and worker pods and whose endpoint names their HTTP port;
//! monitoring turned off deletes it. kube-sim answers 404 for the resources of a CRD that is
//! not installed and serves any CRD once created, as kube-apiserver does; the CRD installed here
//! is a minimal structural one written for the suite (`fixtures/podmonitor-crd.yaml`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ListParams, PostParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use kumiko_e2e::{TestApp, TestCluster, eventually, manifests};
use serde_json::json;

fn pod_monitors(cluster: &TestCluster, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "PodMonitor"),
        "podmonitors",
    );
    Api::namespaced_with(cluster.client().clone(), namespace, &resource)
}

/// `matchLabels` and `matchExpressions` (`In` only) of a PodMonitor's selector as a label
/// selector string for a list of pods.
fn selector_string(monitor: &DynamicObject) -> String {
    let selector = &monitor.data["spec"]["selector"];
    let mut terms: Vec<String> = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| format!("{key}={}", value.as_str().unwrap()))
        .collect();
    for expression in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        assert_eq!(expression["operator"], "In");
        let values: Vec<&str> = expression["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|value| value.as_str().unwrap())
            .collect();
        terms.push(format!(
            "{} in ({})",
            expression["key"].as_str().unwrap(),
            values.join(",")
        ));
    }
    terms.join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_monitor_appears_once_its_crd_is_installed_and_goes_when_monitoring_is_turned_off() {
    let cluster = TestCluster::start().await.unwrap();
    if !cluster.is_local() {
        eprintln!(
            "skipped: the test installs and relies on the absence of the PodMonitor CRD, which \
             only a fresh kube-sim guarantees"
        );
        return;
    }
    let namespace = cluster.namespace("monitoring").await.unwrap();
    let mut manifest = manifests::minimal_app("status", &namespace, cluster.app_image());
    manifest["spec"]["monitoring"] = json!({
        "interval": "30s",
        "labels": {"release": "kube-prometheus-stack"}
    });
    let app = TestApp::apply(cluster.client(), &manifest).await.unwrap();

    // No CRD: Ready all the same, and the condition says what to install.
    let ready = app
        .wait_for(
            "Ready with MonitoringAvailable=False",
            Duration::from_secs(120),
            |app| {
                manifests::is_ready(app)
                    && manifests::condition(app, "MonitoringAvailable")
                        .is_some_and(|(status, _, _)| status == "False")
            },
        )
        .await
        .unwrap();
    let (_, reason, message) = manifests::condition(&ready, "MonitoringAvailable").unwrap();
    assert_eq!(reason, "PodMonitorCrdMissing");
    assert!(
        message.contains("monitoring.coreos.com/v1 PodMonitor"),
        "{message}"
    );

    // The CRD installed: the PodMonitor follows without an operator restart.
    let crd: CustomResourceDefinition =
        serde_saphyr::from_str(include_str!("fixtures/podmonitor-crd.yaml")).unwrap();
    Api::<CustomResourceDefinition>::all(cluster.client().clone())
        .create(&PostParams::default(), &crd)
        .await
        .unwrap();
    let monitors = pod_monitors(&cluster, &namespace);
    // kube-runtime's watcher retries a failed list with back-off of up to 30 s.
    let monitor = eventually(
        "the PodMonitor after the CRD is installed",
        Duration::from_secs(90),
        || {
            let monitors = monitors.clone();
            async move { Ok(monitors.get_opt("status").await?) }
        },
    )
    .await
    .unwrap();
    let labels = monitor.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("release").map(String::as_str),
        Some("kube-prometheus-stack")
    );
    let endpoint = &monitor.data["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["interval"], "30s");
    let port = endpoint["port"].as_str().unwrap().to_owned();

    // The selector picks the API and the worker pods, each declaring the named port.
    let pods: Api<Pod> = Api::namespaced(cluster.client().clone(), &namespace);
    let selected = pods
        .list(&ListParams::default().labels(&selector_string(&monitor)))
        .await
        .unwrap()
        .items;
    let mut components: Vec<String> = selected
        .iter()
        .filter_map(|pod| {
            pod.metadata
                .labels
                .as_ref()?
                .get("app.kubernetes.io/component")
                .cloned()
        })
        .collect();
    components.sort();
    components.dedup();
    assert_eq!(components, vec!["api".to_owned(), "worker".to_owned()]);
    for pod in &selected {
        let declared: Vec<&str> = pod
            .spec
            .iter()
            .flat_map(|spec| &spec.containers)
            .flat_map(|container| container.ports.iter().flatten())
            .filter_map(|declared| declared.name.as_deref())
            .collect();
        assert!(
            declared.contains(&port.as_str()),
            "{:?} lacks port {port}",
            pod.metadata.name
        );
    }
    let app_now = app
        .wait_for("MonitoringAvailable=True", Duration::from_secs(30), |app| {
            manifests::condition(app, "MonitoringAvailable")
                .is_some_and(|(status, _, _)| status == "True")
        })
        .await
        .unwrap();
    assert!(manifests::is_ready(&app_now));

    // Turned off: deleted, and the condition goes.
    app.patch_spec(json!({"monitoring": {"enabled": false}}))
        .await
        .unwrap();
    eventually(
        "the PodMonitor to be deleted",
        Duration::from_secs(60),
        || {
            let monitors = monitors.clone();
            async move { Ok(monitors.get_opt("status").await?.is_none().then_some(())) }
        },
    )
    .await
    .unwrap();
    let off = app
        .wait_for(
            "without MonitoringAvailable",
            Duration::from_secs(30),
            |app| manifests::condition(app, "MonitoringAvailable").is_none(),
        )
        .await
        .unwrap();
    assert!(manifests::is_ready(&off));
    cluster.shutdown().await.unwrap();
}
