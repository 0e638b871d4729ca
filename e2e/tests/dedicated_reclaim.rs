//! Deleting an app with a dedicated CNPG cluster. CloudNativePG makes each instance's
//! PersistentVolumeClaim owned by the Cluster, so whatever garbage-collects the Cluster takes the
//! volumes: with `reclaimPolicy: Retain` the Cluster must not be owned by the app. It outlives the
//! app, and the app created again with the same name adopts it with its data (the claims stay,
//! bound); with `Delete` the Cluster, its Secrets, its claims and its data go with the app.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::{Api, ResourceExt};
use kumiko_crds::names;
use kumiko_e2e::{TestApp, TestCluster, eventually, manifests, postgres};
use serde_json::Value;

/// The CNPG Clusters of `namespace`.
fn clusters(cluster: &TestCluster, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("postgresql.cnpg.io", "v1", "Cluster");
    Api::namespaced_with(
        cluster.client().clone(),
        namespace,
        &ApiResource::from_gvk(&gvk),
    )
}

/// The PersistentVolumeClaim of the Cluster's first instance (`<cluster>-1`, as CloudNativePG
/// names it), which holds the primary's data.
async fn primary_claim(
    cluster: &TestCluster,
    namespace: &str,
    database: &str,
) -> Option<PersistentVolumeClaim> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client().clone(), namespace);
    claims.get_opt(&format!("{database}-1")).await.unwrap()
}

/// A one-API-pod app on a dedicated cluster with `policy`.
fn manifest(cluster: &TestCluster, name: &str, namespace: &str, policy: &str) -> Value {
    let mut manifest = manifests::minimal_app(name, namespace, cluster.app_image());
    manifest["spec"]["database"]["reclaimPolicy"] = policy.into();
    manifest
}

/// Writes an incident into the app's database as its runtime role (the API server's proxy strips
/// the `Authorization` header the app's write API needs, so the test writes through Postgres).
async fn write_incident(cluster: &TestCluster, app: &TestApp, title: &str) {
    let uri = app.runtime_uri().await.unwrap();
    let reachable = cluster.postgres(&app.namespace, &uri).await.unwrap();
    let mut connection = postgres::connect(reachable.uri()).await.unwrap();
    sqlx::query(
        "INSERT INTO incidents (title, impact, started_at_ms) VALUES ($1, 'minor', 1780000000000)",
    )
    .bind(title)
    .execute(&mut connection)
    .await
    .unwrap();
}

/// The incident titles the app's API serves.
async fn incident_titles(cluster: &TestCluster, app: &TestApp) -> Vec<String> {
    eventually(
        "the API to list incidents",
        Duration::from_secs(30),
        || async {
            let (status, body) = cluster
                .service_get(&app.namespace, &names::api(&app.name), 80, "/api/incidents")
                .await?;
            if status != 200 {
                return Ok(None);
            }
            let incidents: Value = serde_json::from_str(&body)?;
            let titles = incidents
                .as_array()
                .or_else(|| incidents["incidents"].as_array())
                .map(|list| {
                    list.iter()
                        .filter_map(|incident| incident["title"].as_str().map(str::to_owned))
                        .collect::<Vec<_>>()
                });
            Ok(titles)
        },
    )
    .await
    .unwrap()
}

/// Waits until garbage collection has removed the app's API Deployment (so it had every chance to
/// reach the Cluster too).
async fn wait_collected(app: &TestApp) {
    let deployments = app.api::<Deployment>();
    let api = names::api(&app.name);
    eventually(
        "the app's Deployments to be collected",
        Duration::from_secs(30),
        || {
            let deployments = deployments.clone();
            let api = api.clone();
            async move { Ok(deployments.get_opt(&api).await?.is_none().then_some(())) }
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_dedicated_cluster_outlives_its_app_and_is_adopted_with_its_data() {
    let cluster = TestCluster::start().await.unwrap();
    let namespace = cluster.namespace("retained").await.unwrap();
    let manifest = manifest(&cluster, "kept", &namespace, "Retain");
    let app = TestApp::apply(cluster.client(), &manifest).await.unwrap();
    app.wait_ready().await.unwrap();
    write_incident(&cluster, &app, "before the delete").await;
    let database = names::database_cluster(&app.name);
    let before = clusters(&cluster, &namespace).get(&database).await.unwrap();
    let claim_before = primary_claim(&cluster, &namespace, &database)
        .await
        .expect("CNPG gives the instance a PersistentVolumeClaim");
    assert_eq!(
        claim_before
            .owner_references()
            .first()
            .map(|o| o.uid.clone()),
        before.uid(),
        "owned by the Cluster"
    );

    app.delete_and_wait().await.unwrap();
    wait_collected(&app).await;

    // The data's volume is kept: the same claim, still bound, still the Cluster's.
    let claim_after = primary_claim(&cluster, &namespace, &database)
        .await
        .expect("the claim outlives the app");
    assert_eq!(claim_after.uid(), claim_before.uid(), "the same claim");
    assert!(claim_after.metadata.deletion_timestamp.is_none());
    assert_eq!(
        claim_after
            .status
            .as_ref()
            .and_then(|status| status.phase.as_deref()),
        Some("Bound")
    );

    let after = clusters(&cluster, &namespace).get(&database).await.unwrap();
    assert_eq!(after.uid(), before.uid(), "the same Cluster, not a new one");
    assert!(
        after.metadata.deletion_timestamp.is_none(),
        "the Cluster is not being deleted"
    );
    assert_eq!(
        after
            .labels()
            .get("app.kubernetes.io/instance")
            .map(String::as_str),
        Some("kept"),
        "it stays labelled with its app"
    );

    // The app again, same name and namespace: it adopts the Cluster, its roles and its data.
    let again = TestApp::apply(cluster.client(), &manifest).await.unwrap();
    again.wait_ready().await.unwrap();
    let adopted = clusters(&cluster, &namespace).get(&database).await.unwrap();
    assert_eq!(adopted.uid(), before.uid(), "adopted, not replaced");
    assert_eq!(
        incident_titles(&cluster, &again).await,
        vec!["before the delete".to_owned()],
        "the API serves the rows written before the delete"
    );
    let events: Api<Event> = again.api();
    let adoption = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|event| event.reason.as_deref() == Some("AdoptedDatabase"));
    assert!(adoption.is_some(), "an AdoptedDatabase Event says so");

    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedicated_cluster_with_delete_policy_goes_with_its_app_data_and_all() {
    let cluster = TestCluster::start().await.unwrap();
    let namespace = cluster.namespace("reclaimed").await.unwrap();
    let manifest = manifest(&cluster, "gone", &namespace, "Delete");
    let app = TestApp::apply(cluster.client(), &manifest).await.unwrap();
    app.wait_ready().await.unwrap();
    write_incident(&cluster, &app, "before the delete").await;
    let database = names::database_cluster(&app.name);
    let before = clusters(&cluster, &namespace).get(&database).await.unwrap();
    let claim_before = primary_claim(&cluster, &namespace, &database)
        .await
        .expect("CNPG gives the instance a PersistentVolumeClaim");

    app.delete_and_wait().await.unwrap();
    eventually("the Cluster to be gone", Duration::from_secs(30), || {
        let clusters = clusters(&cluster, &namespace);
        let database = database.clone();
        async move { Ok(clusters.get_opt(&database).await?.is_none().then_some(())) }
    })
    .await
    .unwrap();
    // Garbage collection takes the Cluster's claims, and the data with them.
    eventually(
        "the Cluster's PersistentVolumeClaim to be gone",
        Duration::from_secs(30),
        || {
            let (cluster, namespace, database) = (&cluster, &namespace, &database);
            async move {
                Ok(primary_claim(cluster, namespace, database)
                    .await
                    .is_none()
                    .then_some(()))
            }
        },
    )
    .await
    .unwrap();
    let secrets: Api<Secret> = app.api();
    for secret in [
        names::owner_secret(&app.name),
        names::runtime_secret(&app.name),
        format!("{database}-superuser"),
    ] {
        eventually(
            &format!("Secret {secret} to be gone"),
            Duration::from_secs(30),
            || {
                let secrets = secrets.clone();
                let secret = secret.clone();
                async move { Ok(secrets.get_opt(&secret).await?.is_none().then_some(())) }
            },
        )
        .await
        .unwrap();
    }

    // The app again: a new Cluster, and none of the old rows.
    let again = TestApp::apply(cluster.client(), &manifest).await.unwrap();
    again.wait_ready().await.unwrap();
    let fresh = clusters(&cluster, &namespace).get(&database).await.unwrap();
    assert_ne!(fresh.uid(), before.uid(), "a new Cluster");
    assert_ne!(
        primary_claim(&cluster, &namespace, &database)
            .await
            .expect("the new Cluster's claim")
            .uid(),
        claim_before.uid(),
        "on a new claim"
    );
    assert_eq!(
        incident_titles(&cluster, &again).await,
        Vec::<String>::new(),
        "the data went with the old Cluster"
    );

    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_delete_to_retain_releases_the_cluster_before_the_app_is_deleted() {
    let cluster = TestCluster::start().await.unwrap();
    let namespace = cluster.namespace("switched").await.unwrap();
    let app = TestApp::apply(
        cluster.client(),
        &manifest(&cluster, "switched", &namespace, "Delete"),
    )
    .await
    .unwrap();
    app.wait_ready().await.unwrap();
    let database = names::database_cluster(&app.name);
    let owned = clusters(&cluster, &namespace).get(&database).await.unwrap();
    assert_eq!(
        owned.owner_references().len(),
        1,
        "owned by the app under Delete"
    );

    // The policy changes on the live app: server-side apply drops the owner reference the
    // operator no longer applies.
    app.reapply(&manifest(&cluster, "switched", &namespace, "Retain"))
        .await
        .unwrap();
    eventually(
        "the Cluster to lose its owner reference",
        Duration::from_secs(30),
        || {
            let clusters = clusters(&cluster, &namespace);
            let database = database.clone();
            async move {
                let object = clusters.get(&database).await?;
                Ok(object.owner_references().is_empty().then_some(()))
            }
        },
    )
    .await
    .unwrap();

    app.delete_and_wait().await.unwrap();
    wait_collected(&app).await;
    let after = clusters(&cluster, &namespace).get(&database).await.unwrap();
    assert_eq!(after.uid(), owned.uid(), "the Cluster outlived the app");
    assert!(after.metadata.deletion_timestamp.is_none());

    cluster.shutdown().await.unwrap();
}
