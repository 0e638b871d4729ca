//! Injected API faults (409 Conflicts, 500s, cut watches) while an app is created: the operator
//! retries and converges.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use kube_sim::faults::FaultRule;
use kumiko_e2e::{TestApp, TestCluster, manifests};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_api_faults_still_converge_to_ready() {
    let cluster = TestCluster::start().await.unwrap();
    let Some(sim) = cluster.sim() else {
        eprintln!(
            "skipped: API faults can only be injected into kube-sim's API server, and \
             KUMIKO_E2E_KUBECONFIG names another cluster"
        );
        return;
    };
    let namespace = cluster.namespace("faults").await.unwrap();
    let faults = sim.cluster().faults();
    let in_namespace =
        |verb: &str, resource: &str, subresource: Option<&str>, error: u16| FaultRule {
            verb: Some(verb.to_owned()),
            resource: Some(resource.to_owned()),
            subresource: subresource.map(str::to_owned),
            namespace: Some(namespace.clone()),
            error: Some(error),
            times: Some(2),
            ..FaultRule::default()
        };
    let counted = [
        in_namespace("patch", "deployments.apps", None, 409),
        in_namespace("patch", "jobs.batch", None, 500),
        in_namespace("patch", "secrets", None, 500),
        in_namespace("patch", "kumikoapps.kumiko.so", Some("status"), 409),
        in_namespace("get", "secrets", None, 503),
        FaultRule {
            verb: Some("watch".to_owned()),
            resource: Some("kumikoapps.kumiko.so".to_owned()),
            cut_watch_after_ms: Some(300),
            times: Some(3),
            ..FaultRule::default()
        },
    ];
    let ids: Vec<u64> = counted.into_iter().map(|rule| faults.add(rule)).collect();
    let app = TestApp::apply(
        cluster.client(),
        &manifests::minimal_app("faults", &namespace, cluster.app_image()),
    )
    .await
    .unwrap();
    faults.cut_watches();

    app.wait_ready().await.unwrap();

    // The faults really happened: every counted rule was used up.
    let left: Vec<_> = faults
        .list()
        .into_iter()
        .filter(|(id, rule)| ids.contains(id) && rule.times != Some(0))
        .collect();
    assert!(left.is_empty(), "faults never triggered: {left:?}");

    cluster.shutdown().await.unwrap();
}
