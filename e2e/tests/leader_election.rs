//! Two operator replicas: one holds the Lease and reconciles; killed, another takes the Lease
//! and carries on. On kube-sim the harness runs the two replicas in-process; on an existing
//! cluster they are the chart's two pods, and the leader's pod is deleted with grace period 0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use kumiko_e2e::app::pod_is_ready;
use kumiko_e2e::{ClusterOptions, TestApp, TestCluster, eventually, manifests};
use serde_json::json;

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
    // On kube-sim: replica-a first, so it leads; then replica-b stands by. On an existing
    // cluster the chart's replicas are running already (starting does nothing there).
    cluster.start_operator("replica-a", true).unwrap();
    if cluster.is_local() {
        eventually("replica-a to lead", Duration::from_secs(30), || async {
            Ok((cluster.operator_leader().await?.as_deref() == Some("replica-a")).then_some(()))
        })
        .await
        .unwrap();
    }
    cluster.start_operator("replica-b", true).unwrap();
    let leader = eventually("a replica to lead", Duration::from_secs(60), || async {
        cluster.operator_leader().await
    })
    .await
    .unwrap();
    phase(&format!("{leader} leads"));

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
        cluster.operator_leader().await.unwrap().as_deref(),
        Some(leader.as_str()),
        "the leader kept the Lease while it was alive"
    );

    cluster.kill_operator_replica(&leader).await.unwrap();
    app.patch_spec(json!({"worker": {"replicas": 2}}))
        .await
        .unwrap();

    // The Lease expires (15 s without renewal), another replica takes it and reconciles the
    // change.
    let successor = eventually("another replica to lead", Duration::from_secs(60), || {
        let cluster = &cluster;
        let leader = leader.clone();
        async move {
            Ok(cluster
                .operator_leader()
                .await?
                .filter(|holder| *holder != leader))
        }
    })
    .await
    .unwrap();
    phase(&format!("{successor} leads"));
    eventually("two ready workers", Duration::from_secs(90), || {
        let app = app.clone();
        async move {
            let pods = app.pods("worker").await?;
            Ok((pods.iter().filter(|pod| pod_is_ready(pod)).count() == 2).then_some(()))
        }
    })
    .await
    .unwrap();
    app.wait_ready().await.unwrap();
    phase(&format!("scaled by {successor}"));

    cluster.shutdown().await.unwrap();
    phase("shut down");
}
