//! Two operator replicas: one holds the Lease and reconciles; killed, the other takes over and
//! carries on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kumiko_e2e::app::pod_is_ready;
use kumiko_e2e::{ClusterOptions, TestApp, TestCluster, eventually, manifests};
use serde_json::json;

async fn holder(leases: &Api<Lease>) -> anyhow::Result<Option<String>> {
    Ok(leases
        .get_opt("kumiko-operator")
        .await?
        .and_then(|lease| lease.spec)
        .and_then(|spec| spec.holder_identity))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operator_replicas_elect_one_leader_and_fail_over() {
    let mut cluster = TestCluster::start_with(ClusterOptions {
        no_operator: true,
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let phase = |name: &str| {
        eprintln!(
            "e2e[leader] {:>6.1}s {name}",
            started.elapsed().as_secs_f64()
        )
    };
    if !cluster.is_local() {
        eprintln!("skipped: needs operator replicas started by the harness (kube-sim)");
        return;
    }
    let leases: Api<Lease> = Api::namespaced(cluster.client().clone(), "default");
    cluster.start_operator("replica-a", true).unwrap();
    eventually("replica-a to lead", Duration::from_secs(30), || async {
        Ok((holder(&leases).await?.as_deref() == Some("replica-a")).then_some(()))
    })
    .await
    .unwrap();
    phase("replica-a leads");
    cluster.start_operator("replica-b", true).unwrap();

    let namespace = cluster.namespace("leader").await.unwrap();
    let app = TestApp::apply(
        cluster.client(),
        &manifests::minimal_app("leader", &namespace, cluster.app_image()),
    )
    .await
    .unwrap();
    app.wait_ready().await.unwrap();
    phase("app ready");
    assert_eq!(
        holder(&leases).await.unwrap().as_deref(),
        Some("replica-a"),
        "the first replica kept the Lease while it was alive"
    );

    cluster.kill_operator("replica-a").await.unwrap();
    app.patch_spec(json!({"worker": {"replicas": 2}}))
        .await
        .unwrap();

    // The Lease expires (15 s without renewal), replica-b takes it and reconciles the change.
    eventually("replica-b to lead", Duration::from_secs(45), || async {
        Ok((holder(&leases).await?.as_deref() == Some("replica-b")).then_some(()))
    })
    .await
    .unwrap();
    phase("replica-b leads");
    eventually("two ready workers", Duration::from_secs(60), || {
        let app = app.clone();
        async move {
            let pods = app.pods("worker").await?;
            Ok((pods.iter().filter(|pod| pod_is_ready(pod)).count() == 2).then_some(()))
        }
    })
    .await
    .unwrap();
    app.wait_ready().await.unwrap();
    phase("scaled by replica-b");

    cluster.shutdown().await.unwrap();
    phase("shut down");
}
