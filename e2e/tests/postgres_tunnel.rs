//! Postgres reached from the test process through the API server: a Secret host that names a
//! Service (`<cluster>-rw`, as CNPG writes it) goes through a local tunnel over the portforward
//! of a ready pod behind the Service. On kube-sim the pod is the CNPG simulation's instance pod
//! and the bytes reach its real Postgres; on kind, CNPG's primary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use kumiko_e2e::{SharedPostgres, TestCluster, postgres};
use sqlx::Connection;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_hosts_reach_postgres_through_a_portforward_tunnel() {
    let cluster = TestCluster::start().await.unwrap();
    let shared = SharedPostgres::create(&cluster, "tunnel-pg").await.unwrap();
    let superuser = shared.superuser_name().unwrap().to_owned();
    let short = format!("{}-rw", shared.name);
    let qualified = format!("{}-rw.{}.svc", shared.name, shared.namespace);

    // The short name from the Cluster's namespace, the qualified one from anywhere.
    for (namespace, host) in [
        (shared.namespace.as_str(), short.as_str()),
        ("default", qualified.as_str()),
    ] {
        let uri = shared.superuser_uri(host, "5432", "postgres").unwrap();
        let reachable = cluster.postgres(namespace, &uri).await.unwrap();
        assert!(reachable.tunnelled(), "{host} goes through a tunnel");
        assert!(
            reachable.uri().contains("@127.0.0.1:"),
            "the URI points at the tunnel's loopback port"
        );
        assert_eq!(
            postgres::current_user(reachable.uri()).await.unwrap(),
            superuser
        );

        // Several connections at once, each over its own portforward.
        let mut first = postgres::connect(reachable.uri()).await.unwrap();
        let mut second = postgres::connect(reachable.uri()).await.unwrap();
        let (a, b): (i32, i32) = (
            sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(&mut first)
                .await
                .unwrap(),
            sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(&mut second)
                .await
                .unwrap(),
        );
        assert_ne!(a, b, "two server sessions");
        first.close().await.unwrap();
        second.close().await.unwrap();
    }

    // A host that names no Service fails with the reason.
    let uri = shared
        .superuser_uri("no-such-service", "5432", "postgres")
        .unwrap();
    let error = cluster
        .postgres(&shared.namespace, &uri)
        .await
        .err()
        .expect("no such Service");
    assert!(
        format!("{error:#}").contains("no-such-service"),
        "{error:#}"
    );

    cluster.shutdown().await.unwrap();
}
