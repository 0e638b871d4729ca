//! Scaling the worker changes the worker Deployment alone: the API pods stay the same pods; dropping
//! the worker from the spec removes its Deployment and PodDisruptionBudget.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kumiko_e2e::app::pod_is_ready;
use kumiko_e2e::{TestApp, TestCluster, eventually, manifests};
use serde_json::json;

/// The (name, uid) of every pod.
fn identities(pods: &[Pod]) -> BTreeSet<(String, String)> {
    pods.iter()
        .map(|pod| {
            (
                pod.metadata.name.clone().unwrap_or_default(),
                pod.metadata.uid.clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_the_worker_leaves_the_api_untouched_and_dropping_it_removes_its_objects() {
    let cluster = TestCluster::start().await.unwrap();
    let namespace = cluster.namespace("scaling").await.unwrap();
    let app = TestApp::apply(
        cluster.client(),
        &manifests::minimal_app("scaling", &namespace, cluster.app_image()),
    )
    .await
    .unwrap();
    app.wait_ready().await.unwrap();
    let api_before = app.api_deployment().await.unwrap();
    let api_pods_before = identities(&app.pods("api").await.unwrap());
    assert_eq!(api_pods_before.len(), 1, "{api_pods_before:?}");

    app.patch_spec(json!({"worker": {"replicas": 3}}))
        .await
        .unwrap();

    let ready_workers = eventually("three ready worker pods", Duration::from_secs(60), || {
        let app = app.clone();
        async move {
            let deployment = app.worker_deployment().await?;
            let replicas = deployment.spec.as_ref().and_then(|spec| spec.replicas);
            let pods = app.pods("worker").await?;
            let ready = pods.iter().filter(|pod| pod_is_ready(pod)).count();
            Ok((replicas == Some(3) && ready == 3).then_some(ready))
        }
    })
    .await
    .unwrap();
    assert_eq!(ready_workers, 3);
    app.wait_ready().await.unwrap();

    let api_after = app.api_deployment().await.unwrap();
    assert_eq!(
        api_after.metadata.generation, api_before.metadata.generation,
        "the API Deployment's spec did not change"
    );
    assert_eq!(
        api_after.spec, api_before.spec,
        "the API Deployment's spec is the same"
    );
    let api_pods_after = identities(&app.pods("api").await.unwrap());
    assert_eq!(api_pods_after, api_pods_before, "the same API pods");

    // The worker dropped from the spec: its Deployment and PodDisruptionBudget go, the app stays
    // Ready.
    app.patch_spec(json!({"worker": null})).await.unwrap();
    let worker = kumiko_crds::names::worker(&app.name);
    eventually(
        "the worker Deployment and PodDisruptionBudget to be deleted",
        Duration::from_secs(30),
        || {
            let deployments = app.api::<k8s_openapi::api::apps::v1::Deployment>();
            let budgets = app.api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>();
            let worker = worker.clone();
            async move {
                let gone = deployments.get_opt(&worker).await?.is_none()
                    && budgets.get_opt(&worker).await?.is_none();
                Ok(gone.then_some(()))
            }
        },
    )
    .await
    .unwrap();
    app.wait_ready().await.unwrap();

    cluster.shutdown().await.unwrap();
}
