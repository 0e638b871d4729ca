//! A migration that fails: the old image keeps serving, `MigrationFailed` carries the log tail,
//! and fixing the image recovers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kumiko_crds::{condition, names};
use kumiko_e2e::app::pod_is_ready;
use kumiko_e2e::cluster::BROKEN_MIGRATION_ERROR;
use kumiko_e2e::{TestApp, TestCluster, eventually, manifests};
use serde_json::json;

fn template_image(deployment: &Deployment) -> Option<String> {
    deployment
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .image
        .clone()
}

fn pod_uids(pods: &[k8s_openapi::api::core::v1::Pod]) -> BTreeSet<String> {
    pods.iter()
        .filter_map(|pod| pod.metadata.uid.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_migration_keeps_the_old_image_serving_until_the_image_is_fixed() {
    let cluster = TestCluster::start().await.unwrap();
    let namespace = cluster.namespace("failedmig").await.unwrap();
    let v1 = cluster.app_image().to_owned();
    let broken = cluster.broken_migration_image().unwrap().to_owned();
    let v2 = cluster.app_image_v2().unwrap().to_owned();
    let app = TestApp::apply(
        cluster.client(),
        &manifests::minimal_app("failedmig", &namespace, &v1),
    )
    .await
    .unwrap();
    app.wait_ready().await.unwrap();
    let api_pods_before = pod_uids(&app.pods("api").await.unwrap());

    app.patch_spec(json!({"image": broken})).await.unwrap();

    let failed = app
        .wait_for(
            "Migrated=False with reason MigrationFailed",
            Duration::from_secs(60),
            |app| {
                manifests::condition(app, condition::MIGRATED).is_some_and(|(status, reason, _)| {
                    status == "False" && reason == "MigrationFailed"
                })
            },
        )
        .await
        .unwrap();
    let (_, _, message) = manifests::condition(&failed, condition::MIGRATED).unwrap();
    assert!(
        message.contains(BROKEN_MIGRATION_ERROR),
        "the condition carries the Job's log tail: {message}"
    );
    // The program printed its DATABASE_URL and, alone on a line, the owner role's password: the
    // status holds neither.
    let password = app
        .secret_value(&names::owner_secret(&app.name), "password")
        .await
        .unwrap();
    assert!(
        !message.contains(&password),
        "a password in the status: {message}"
    );
    assert!(
        message.contains("[line withheld: it may contain a credential]")
            && message.contains("kumiko: as [redacted]"),
        "both lines redacted: {message}"
    );
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(cluster.client().clone(), &namespace);
    let failures: Vec<_> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|event| event.reason.as_deref() == Some("MigrationFailed"))
        .collect();
    assert_eq!(failures.len(), 1, "one MigrationFailed Event: {failures:?}");
    let note = failures[0].note.clone().unwrap_or_default();
    assert!(
        note.contains("failed to migrate") && !note.contains(&password),
        "{note}"
    );
    assert_eq!(
        failures[0]
            .related
            .as_ref()
            .map(|related| related.kind.clone()),
        Some(Some("Job".to_owned()))
    );

    // The old image keeps serving: same Deployment template, same pods, requests answered.
    let deployment = app.api_deployment().await.unwrap();
    assert_eq!(template_image(&deployment).as_deref(), Some(v1.as_str()));
    let api_pods = app.pods("api").await.unwrap();
    assert_eq!(pod_uids(&api_pods), api_pods_before);
    assert!(api_pods.iter().all(pod_is_ready));
    let service = app
        .api::<Service>()
        .get(&names::api(&app.name))
        .await
        .unwrap();
    let port = u16::try_from(service.spec.unwrap().ports.unwrap()[0].port).unwrap();
    let (status, body) = cluster
        .service_get(&namespace, &names::api(&app.name), port, "/api/status")
        .await
        .unwrap();
    assert_eq!(
        status, 200,
        "the old pods answer through the Service: {body}"
    );

    // Fixing the image recovers.
    app.patch_spec(json!({"image": v2})).await.unwrap();
    eventually(
        "the app Ready on the fixed image",
        Duration::from_secs(90),
        || {
            let app = app.clone();
            let v2 = v2.clone();
            async move {
                let current = app.get().await?;
                let deployment = app.api_deployment().await?;
                let migrated = manifests::condition(&current, condition::MIGRATED)
                    .is_some_and(|(status, _, _)| status == "True");
                Ok((manifests::is_ready(&current)
                    && migrated
                    && template_image(&deployment).as_deref() == Some(v2.as_str()))
                .then_some(()))
            }
        },
    )
    .await
    .unwrap();

    cluster.shutdown().await.unwrap();
}
