//! Drift is undone: a change by someone else to a field the operator manages is put back within
//! seconds of the watch event (not at the next resync), reported by a `DriftCorrected` Event
//! naming the object and the field manager that changed it, and the app is Ready again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams};
use kumiko_crds::names;
use kumiko_e2e::{TestApp, TestCluster, eventually, manifests};
use serde_json::json;

/// The field manager of the hand edit (what `kubectl patch` sends by default).
const HAND: &str = "kubectl-patch";
/// The field manager of `kubectl scale`.
const SCALE: &str = "kubectl-scale";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_scaled_by_hand_is_put_back_within_seconds() {
    let cluster = TestCluster::start().await.unwrap();
    let namespace = cluster.namespace("drift").await.unwrap();
    let app = TestApp::apply(
        cluster.client(),
        &manifests::minimal_app("drift", &namespace, cluster.app_image()),
    )
    .await
    .unwrap();
    app.wait_ready().await.unwrap();
    let deployments = app.api::<Deployment>();
    let api = names::api(&app.name);

    // By hand, as `kubectl scale` or `kubectl patch` would: the API Deployment to 4 replicas.
    let edited = Instant::now();
    deployments
        .patch(
            &api,
            &PatchParams {
                field_manager: Some(HAND.to_owned()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();

    eventually(
        "the API Deployment back at the spec's 1 replica",
        Duration::from_secs(5),
        || {
            let deployments = deployments.clone();
            let api = api.clone();
            async move {
                let replicas = deployments.get(&api).await?.spec.and_then(|s| s.replicas);
                Ok((replicas == Some(1)).then_some(()))
            }
        },
    )
    .await
    .unwrap();
    let restored_after = edited.elapsed();

    let events: kube::Api<Event> = app.api();
    let corrected = eventually("a DriftCorrected Event", Duration::from_secs(10), || {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await?;
            Ok(list
                .items
                .into_iter()
                .find(|event| event.reason.as_deref() == Some("DriftCorrected")))
        }
    })
    .await
    .unwrap();
    let note = corrected.note.unwrap_or_default();
    assert!(note.contains(&format!("Deployment {api}")), "{note}");
    assert!(note.contains(HAND), "names the field manager: {note}");
    assert_eq!(
        corrected.regarding.and_then(|r| r.name).as_deref(),
        Some(app.name.as_str()),
        "reported on the app"
    );

    app.wait_ready().await.unwrap();
    println!("restored {restored_after:?} after the edit");

    // Through the scale subresource, as `kubectl scale` writes (its managedFields entry names the
    // `scale` subresource): put back too.
    deployments
        .patch_scale(
            &api,
            &PatchParams {
                field_manager: Some(SCALE.to_owned()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    eventually(
        "the API Deployment back at 1 replica after a scale",
        Duration::from_secs(5),
        || {
            let deployments = deployments.clone();
            let api = api.clone();
            async move {
                let replicas = deployments.get(&api).await?.spec.and_then(|s| s.replicas);
                Ok((replicas == Some(1)).then_some(()))
            }
        },
    )
    .await
    .unwrap();
    app.wait_ready().await.unwrap();
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_credential_secret_is_written_again_from_the_roles() {
    let cluster = TestCluster::start().await.unwrap();
    let namespace = cluster.namespace("drift-secret").await.unwrap();
    let app = TestApp::apply(
        cluster.client(),
        &manifests::minimal_app("drifts", &namespace, cluster.app_image()),
    )
    .await
    .unwrap();
    app.wait_ready().await.unwrap();
    let runtime = names::runtime_secret(&app.name);
    let host = app.secret_value(&runtime, "host").await.unwrap();
    let uri = app.secret_value(&runtime, "uri").await.unwrap();

    // By hand: the runtime Secret's host and uri point somewhere else.
    let secrets = app.api::<Secret>();
    secrets
        .patch(
            &runtime,
            &PatchParams {
                field_manager: Some(HAND.to_owned()),
                ..PatchParams::default()
            },
            &Patch::Merge(
                json!({"stringData": {"host": "elsewhere", "uri": "postgresql://x@elsewhere/db"}}),
            ),
        )
        .await
        .unwrap();

    eventually(
        "the runtime Secret's host and uri put back",
        Duration::from_secs(5),
        || {
            let app = app.clone();
            let runtime = runtime.clone();
            let (host, uri) = (host.clone(), uri.clone());
            async move {
                let now = (
                    app.secret_value(&runtime, "host").await?,
                    app.secret_value(&runtime, "uri").await?,
                );
                Ok((now == (host, uri)).then_some(()))
            }
        },
    )
    .await
    .unwrap();
    app.wait_ready().await.unwrap();
    cluster.shutdown().await.unwrap();
}
