//! Deleting an app on a shared CNPG cluster: with `reclaimPolicy: Delete` its database and roles
//! are dropped from Postgres; with `Retain` (the default) they stay. The cluster is one the
//! harness owns ([`SharedPostgres`]), so Postgres outlives the app and the test looks into it as
//! its superuser, the same way on kube-sim and on kind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use kumiko_crds::names;
use kumiko_e2e::{SharedPostgres, TestApp, TestCluster, manifests, postgres};

/// The admin Secret each app's namespace gets for the shared cluster.
const ADMIN_SECRET: &str = "shared-pg-admin";

/// What an app owns in Postgres.
struct Owned {
    owner: String,
    runtime: String,
    database: String,
}

/// The shared Cluster's volume is not the app's: its PersistentVolumeClaim (`<cluster>-1`, as
/// CloudNativePG names it) is there, bound, whatever the app's policy did.
async fn assert_shared_claim_kept(cluster: &TestCluster, shared: &SharedPostgres) {
    let claims: kube::Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        kube::Api::namespaced(cluster.client().clone(), &shared.namespace);
    let claim = claims
        .get_opt(&format!("{}-1", shared.name))
        .await
        .unwrap()
        .expect("the shared Cluster's claim");
    assert!(claim.metadata.deletion_timestamp.is_none());
    assert_eq!(
        claim.status.and_then(|status| status.phase).as_deref(),
        Some("Bound")
    );
}

/// Whether each of the app's roles and its database exist, asked as the superuser.
async fn existing(
    cluster: &TestCluster,
    shared: &SharedPostgres,
    owned: &Owned,
) -> (bool, bool, bool) {
    let admin = shared.superuser(cluster, "postgres").await.unwrap();
    (
        postgres::role_exists(admin.uri(), &owned.owner)
            .await
            .unwrap(),
        postgres::role_exists(admin.uri(), &owned.runtime)
            .await
            .unwrap(),
        postgres::database_exists(admin.uri(), &owned.database)
            .await
            .unwrap(),
    )
}

/// Applies an app on the shared cluster with `reclaim_policy`, waits until Ready, and returns
/// what it owns in Postgres (checked to exist).
async fn ready_app(
    cluster: &TestCluster,
    shared: &SharedPostgres,
    name: &str,
    reclaim_policy: &str,
) -> (TestApp, Owned) {
    let namespace = cluster.namespace(name).await.unwrap();
    shared
        .write_admin_secret(cluster, &namespace, ADMIN_SECRET)
        .await
        .unwrap();
    let mut manifest = manifests::minimal_app(name, &namespace, cluster.app_image());
    manifest["spec"]["database"] = shared.database_spec(ADMIN_SECRET);
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
    assert_eq!(
        existing(cluster, shared, &owned).await,
        (true, true, true),
        "the app's roles and database exist while it runs"
    );
    (app, owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_with_delete_policy_drops_the_database() {
    let cluster = TestCluster::start().await.unwrap();
    let shared = SharedPostgres::create(&cluster, "shared-pg").await.unwrap();
    let (app, owned) = ready_app(&cluster, &shared, "dropped", "Delete").await;

    app.delete_and_wait().await.unwrap();

    // `Delete` drops what the app owns in Postgres, not the shared Cluster's volume.
    assert_shared_claim_kept(&cluster, &shared).await;
    assert_eq!(
        existing(&cluster, &shared, &owned).await,
        (false, false, false),
        "roles {} and {} and database {} were dropped",
        owned.owner,
        owned.runtime,
        owned.database
    );

    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_with_retain_policy_keeps_the_database() {
    let cluster = TestCluster::start().await.unwrap();
    let shared = SharedPostgres::create(&cluster, "shared-pg").await.unwrap();
    let (app, owned) = ready_app(&cluster, &shared, "kept", "Retain").await;

    app.delete_and_wait().await.unwrap();

    assert_shared_claim_kept(&cluster, &shared).await;
    assert_eq!(
        existing(&cluster, &shared, &owned).await,
        (true, true, true),
        "roles {} and {} and database {} were kept",
        owned.owner,
        owned.runtime,
        owned.database
    );

    cluster.shutdown().await.unwrap();
}

/// "Namespaces": deleting the app's namespace deletes the app with everything in it; what
/// `Retain` keeps on a cluster that lives elsewhere (the shared one) stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_apps_namespace_keeps_what_retain_keeps_on_a_shared_cluster() {
    let cluster = TestCluster::start().await.unwrap();
    let shared = SharedPostgres::create(&cluster, "shared-pg").await.unwrap();
    let (app, owned) = ready_app(&cluster, &shared, "kept-ns", "Retain").await;

    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(cluster.client().clone());
    namespaces
        .delete(&app.namespace, &kube::api::DeleteParams::default())
        .await
        .unwrap();
    kumiko_e2e::eventually(
        "the app's namespace to be gone",
        std::time::Duration::from_secs(90),
        || {
            let namespaces = namespaces.clone();
            let namespace = app.namespace.clone();
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

    assert_eq!(
        existing(&cluster, &shared, &owned).await,
        (true, true, true),
        "roles {} and {} and database {} were kept",
        owned.owner,
        owned.runtime,
        owned.database
    );

    cluster.shutdown().await.unwrap();
}
