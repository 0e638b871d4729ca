//! Deleting the namespace of an app ("Namespaces": everything in it is deleted, finalizers run
//! first). The app's finalizer must not hold the namespace in `Terminating` for ever, whatever
//! goes first (its database's Secret, the CNPG Cluster, the app), and with `reclaimPolicy:
//! Delete` on a dedicated cluster the data goes with the namespace.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use kube::Api;
use kube::api::DeleteParams;
use kumiko_e2e::{TestApp, TestCluster, eventually, manifests};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_namespace_of_an_app_completes() {
    let cluster = TestCluster::start().await.unwrap();
    let namespace = cluster.namespace("doomed").await.unwrap();
    let mut manifest = manifests::minimal_app("doomed", &namespace, cluster.app_image());
    manifest["spec"]["database"]["reclaimPolicy"] = "Delete".into();
    let app = TestApp::apply(cluster.client(), &manifest).await.unwrap();
    app.wait_ready().await.unwrap();
    // The dedicated Cluster's data lives on a claim in the namespace, bound, so it goes with it.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client().clone(), &namespace);
    let claim = claims
        .get_opt(&format!(
            "{}-1",
            kumiko_crds::names::database_cluster("doomed")
        ))
        .await
        .unwrap()
        .expect("the Cluster's PersistentVolumeClaim");
    assert_eq!(
        claim.status.and_then(|status| status.phase).as_deref(),
        Some("Bound")
    );

    let namespaces: Api<Namespace> = Api::all(cluster.client().clone());
    namespaces
        .delete(&namespace, &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the namespace to be gone (not stuck Terminating on the app's finalizer)",
        Duration::from_secs(90),
        || {
            let namespaces = namespaces.clone();
            let namespace = namespace.clone();
            async move {
                Ok(namespaces
                    .get_opt(&namespace)
                    .await?
                    .is_none()
                    .then_some(()))
            }
        },
    )
    .await
    .unwrap();
    assert!(
        app.apps().get_opt(&app.name).await.unwrap().is_none(),
        "the app went with it"
    );
    cluster.shutdown().await.unwrap();
}
