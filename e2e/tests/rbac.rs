//! The operator runs under exactly its chart's RBAC (on kube-sim the harness gives it the chart's
//! ServiceAccount, roles and bindings). Without one of the chart's rules it cannot converge: it
//! reports the API server's 403 in the app's status and in an Event, naming what it was doing,
//! instead of retrying blindly or pretending to be Ready.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kumiko_e2e::{ClusterOptions, TestApp, TestCluster, eventually, manifests};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_charts_rule_for_jobs_the_app_reports_the_403() {
    let cluster = TestCluster::start_with(ClusterOptions {
        rbac_without: Some("jobs"),
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    if !cluster.is_local() {
        // On an existing cluster the operator's RBAC is whatever its chart installed.
        return;
    }
    let namespace = cluster.namespace("rbac").await.unwrap();
    let app = TestApp::apply(
        cluster.client(),
        &manifests::minimal_app("forbidden", &namespace, cluster.app_image()),
    )
    .await
    .unwrap();

    let message = eventually(
        "Stalled=True naming the 403",
        Duration::from_secs(60),
        || {
            let app = app.clone();
            async move {
                let stored = app.get().await?;
                Ok(manifests::condition(&stored, "Stalled")
                    .filter(|(status, _, _)| status == "True")
                    .map(|(_, _, message)| message))
            }
        },
    )
    .await
    .unwrap();
    assert!(
        message.contains("jobs.batch") && message.contains("is forbidden"),
        "{message}"
    );
    assert!(
        message.contains("system:serviceaccount:kumiko-system:kumiko-operator"),
        "names the operator's identity: {message}"
    );
    let stored = app.get().await.unwrap();
    assert_ne!(
        manifests::condition(&stored, "Ready").map(|(status, _, _)| status),
        Some("True".to_owned())
    );

    let events: kube::Api<Event> = app.api();
    let reported = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .any(|event| {
            event.type_.as_deref() == Some("Warning")
                && event
                    .note
                    .as_deref()
                    .is_some_and(|note| note.contains("is forbidden"))
        });
    assert!(reported, "a Warning Event carries the 403");
    cluster.shutdown().await.unwrap();
}
