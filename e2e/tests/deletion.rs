//! Deleting an app: with `reclaimPolicy: Delete` its database and roles are dropped from
//! Postgres; with `Retain` (the default) they stay.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use kube::api::DeleteParams;
use kumiko_crds::names;
use kumiko_e2e::{ClusterOptions, TestApp, TestCluster, eventually, manifests, postgres};

/// What an app owns in Postgres.
struct Owned {
    owner: String,
    runtime: String,
    database: String,
}

/// Applies an app with `reclaim_policy`, waits until Ready, and returns what it owns in Postgres
/// (checked to exist).
async fn ready_app(cluster: &TestCluster, name: &str, reclaim_policy: &str) -> (TestApp, Owned) {
    let namespace = cluster.namespace(name).await.unwrap();
    let mut manifest = manifests::minimal_app(name, &namespace, cluster.app_image());
    manifest["spec"]["database"]["reclaimPolicy"] = reclaim_policy.into();
    let app = TestApp::apply(cluster.client(), &manifest).await.unwrap();
    app.wait_ready().await.unwrap();
    let owned = Owned {
        owner: app
            .secret_value(&names::owner_secret(name), "username")
            .await
            .unwrap(),
        runtime: app
            .secret_value(&names::runtime_secret(name), "username")
            .await
            .unwrap(),
        database: app
            .secret_value(&names::owner_secret(name), "dbname")
            .await
            .unwrap(),
    };
    let admin = cluster.postgres_superuser_url("postgres").unwrap();
    assert!(postgres::role_exists(&admin, &owned.owner).await.unwrap());
    assert!(postgres::role_exists(&admin, &owned.runtime).await.unwrap());
    assert!(
        postgres::database_exists(&admin, &owned.database)
            .await
            .unwrap()
    );
    (app, owned)
}

/// Deletes the app and waits until it is gone (its finalizer ran).
async fn delete(app: &TestApp) {
    app.apps()
        .delete(&app.name, &DeleteParams::default())
        .await
        .unwrap();
    eventually("the app to be gone", Duration::from_secs(60), || {
        let apps = app.apps();
        let name = app.name.clone();
        async move { Ok(apps.get_opt(&name).await?.is_none().then_some(())) }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_with_delete_policy_drops_the_database() {
    let cluster = TestCluster::start_with(ClusterOptions {
        shared_postgres: true,
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    let (app, owned) = ready_app(&cluster, "dropped", "Delete").await;

    delete(&app).await;

    let admin = cluster.postgres_superuser_url("postgres").unwrap();
    assert!(
        !postgres::database_exists(&admin, &owned.database)
            .await
            .unwrap(),
        "database {} was dropped",
        owned.database
    );
    for role in [&owned.owner, &owned.runtime] {
        assert!(
            !postgres::role_exists(&admin, role).await.unwrap(),
            "role {role} was dropped"
        );
    }

    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_with_retain_policy_keeps_the_database() {
    let cluster = TestCluster::start_with(ClusterOptions {
        shared_postgres: true,
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    let (app, owned) = ready_app(&cluster, "kept", "Retain").await;

    delete(&app).await;

    let admin = cluster.postgres_superuser_url("postgres").unwrap();
    assert!(
        postgres::database_exists(&admin, &owned.database)
            .await
            .unwrap(),
        "database {} was kept",
        owned.database
    );
    for role in [&owned.owner, &owned.runtime] {
        assert!(
            postgres::role_exists(&admin, role).await.unwrap(),
            "role {role} was kept"
        );
    }

    cluster.shutdown().await.unwrap();
}
