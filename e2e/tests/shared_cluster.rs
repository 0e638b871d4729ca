//! An app in another namespace than the shared CNPG cluster it uses (issue 12, defect 3). The
//! admin Secret is a verbatim copy of CNPG's `<cluster>-superuser` Secret, as CloudNativePG
//! 1.27 writes it (`pkg/specs/secrets.go`: `host: <cluster>-rw`, a Service name that resolves
//! only in the cluster's namespace, and `dbname: *`). The operator must qualify that host with
//! `spec.database.shared.clusterNamespace`, for its own connection and in the app's Secrets, or
//! the app's pods, in their own namespace, cannot resolve it (kubernetes.io "DNS for Services and
//! Pods": a short name is looked up in the pod's namespace only).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::core::v1::Service;
use kumiko_crds::names;
use kumiko_e2e::{SharedPostgres, TestApp, TestCluster, manifests, postgres};

const ADMIN_SECRET: &str = "shared-pg-admin";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_in_another_namespace_than_its_shared_cluster_becomes_ready_and_serves_from_the_database()
 {
    let cluster = TestCluster::start().await.unwrap();
    let shared = SharedPostgres::create(&cluster, "shared-pg").await.unwrap();
    let namespace = cluster.namespace("elsewhere").await.unwrap();
    assert_ne!(namespace, shared.namespace);
    shared
        .write_admin_secret(&cluster, &namespace, ADMIN_SECRET)
        .await
        .unwrap();
    let mut manifest = manifests::minimal_app("billing", &namespace, cluster.app_image());
    manifest["spec"]["database"] = shared.database_spec(ADMIN_SECRET);
    let app = TestApp::apply(cluster.client(), &manifest).await.unwrap();
    app.wait_ready().await.unwrap();

    // The app's Secrets name the shared cluster's -rw Service in the cluster's namespace.
    let qualified = format!("{}-rw.{}.svc", shared.name, shared.namespace);
    for secret in [
        names::owner_secret(&app.name),
        names::runtime_secret(&app.name),
    ] {
        assert_eq!(app.secret_value(&secret, "host").await.unwrap(), qualified);
        for key in ["uri", "jdbc-uri", "pgpass"] {
            let value = app.secret_value(&secret, key).await.unwrap();
            assert!(
                value.contains(&format!("{qualified}:5432")),
                "{secret} {key} names {qualified}:5432"
            );
        }
        assert_ne!(app.secret_value(&secret, "dbname").await.unwrap(), "*");
    }
    let runtime = app
        .secret_value(&names::runtime_secret(&app.name), "username")
        .await
        .unwrap();
    let reachable = cluster
        .postgres(&namespace, &app.runtime_uri().await.unwrap())
        .await
        .unwrap();
    assert_eq!(
        postgres::current_user(reachable.uri()).await.unwrap(),
        runtime
    );

    // The API's pods connect: a request that reads the database answers through the Service.
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
    assert_eq!(status, 200, "GET /api/status reads the database: {body}");

    cluster.shutdown().await.unwrap();
}
