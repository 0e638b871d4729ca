//! Rotating the runtime role's credentials (`kumiko.so/rotate-credentials`): the old password
//! is rejected, the new one works, and the pods roll onto it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kumiko_e2e::app::pod_is_ready;
use kumiko_e2e::{TestApp, TestCluster, eventually, manifests, postgres};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_rotation_rejects_the_old_password_and_rolls_the_pods() {
    let cluster = TestCluster::start().await.unwrap();
    let namespace = cluster.namespace("rotate").await.unwrap();
    let app = TestApp::apply(
        cluster.client(),
        &manifests::minimal_app("rotate", &namespace, cluster.app_image()),
    )
    .await
    .unwrap();
    app.wait_ready().await.unwrap();
    let old_uri = app.runtime_uri().await.unwrap();
    let old = cluster.postgres(&namespace, &old_uri).await.unwrap();
    postgres::current_user(old.uri()).await.unwrap();
    let mut old_pods = BTreeSet::new();
    for component in ["api", "worker"] {
        for pod in app.pods(component).await.unwrap() {
            old_pods.insert(pod.metadata.uid.unwrap());
        }
    }

    app.apps()
        .patch(
            &app.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "kumiko.so/rotate-credentials": "e2e-1"
            }}})),
        )
        .await
        .unwrap();

    app.wait_for("rotated for e2e-1", Duration::from_secs(60), |current| {
        current
            .status
            .as_ref()
            .and_then(|status| status.rotated_credentials_for.as_deref())
            == Some("e2e-1")
    })
    .await
    .unwrap();
    let new_uri = app.runtime_uri().await.unwrap();
    assert_ne!(new_uri, old_uri, "the runtime Secret holds a new password");
    let rejected = postgres::current_user(old.uri()).await.unwrap_err();
    assert!(
        format!("{rejected:#}").contains("password authentication failed"),
        "{rejected:#}"
    );
    let new = cluster.postgres(&namespace, &new_uri).await.unwrap();
    postgres::current_user(new.uri()).await.unwrap();

    // Every API and worker pod is replaced, and the app is Ready on the new password.
    eventually("the pods to roll", Duration::from_secs(90), || {
        let app = app.clone();
        let old_pods = old_pods.clone();
        async move {
            let mut pods = app.pods("api").await?;
            pods.extend(app.pods("worker").await?);
            let rolled = pods.len() == 2
                && pods.iter().all(|pod| {
                    pod_is_ready(pod)
                        && !old_pods.contains(pod.metadata.uid.as_deref().unwrap_or(""))
                });
            let ready = manifests::is_ready(&app.get().await?);
            Ok((rolled && ready).then_some(()))
        }
    })
    .await
    .unwrap();

    cluster.shutdown().await.unwrap();
}
