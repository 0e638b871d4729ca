//! One KumikoApp per namespace: a second one stalls with a message naming the first, and the
//! first keeps running.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kumiko_crds::names;
use kumiko_e2e::{TestApp, TestCluster, manifests};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_app_in_the_namespace_stalls_naming_the_first() {
    let cluster = TestCluster::start().await.unwrap();
    let namespace = cluster.namespace("duplicate").await.unwrap();
    let first = TestApp::apply(
        cluster.client(),
        &manifests::minimal_app("first", &namespace, cluster.app_image()),
    )
    .await
    .unwrap();
    first.wait_ready().await.unwrap();

    let second = TestApp::apply(
        cluster.client(),
        &manifests::minimal_app("second", &namespace, cluster.app_image()),
    )
    .await
    .unwrap();
    let stalled = second
        .wait_for("Stalled=True", Duration::from_secs(60), |app| {
            manifests::condition(app, "Stalled").is_some_and(|(status, _, _)| status == "True")
        })
        .await
        .unwrap();
    let (_, reason, message) = manifests::condition(&stalled, "Stalled").unwrap();
    assert_eq!(reason, "DuplicateApp");
    assert!(
        message.contains("KumikoApp first"),
        "the message names the first app: {message}"
    );
    assert!(
        !manifests::is_ready(&stalled),
        "a stalled app is not Ready: {:?}",
        stalled.status
    );

    // The second app got no workloads, and the first is still Ready.
    let deployments = second.api::<Deployment>();
    assert!(
        deployments
            .get_opt(&names::api("second"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(manifests::is_ready(&first.get().await.unwrap()));

    cluster.shutdown().await.unwrap();
}
