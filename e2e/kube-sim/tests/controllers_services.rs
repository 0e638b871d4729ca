//! CNPG Clusters against a real Postgres, the Service proxies, and quota admission, against the
//! in-process API server.

// Test helpers outside #[test] functions: a failed set-up is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod controllers_support;

use std::collections::BTreeMap;
use std::time::Duration;

use controllers_support::{SIM_POD_IMAGE, Sim, through_primary_portforward, wait_for};
use k8s_openapi::api::core::v1::{Pod, ResourceQuota, Secret, Service};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use kube_sim::controllers::{ControllersConfig, POD_PORT_ANNOTATION, PostgresSource};
use kumiko_testkit::TempPostgres;
use serde_json::json;
use sqlx::Connection;

fn cnpg_clusters(client: &kube::Client) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("postgresql.cnpg.io", "v1", "Cluster"),
        "clusters",
    );
    Api::namespaced_with(client.clone(), "default", &resource)
}

fn secret_strings(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}

async fn cluster_is_healthy(clusters: &Api<DynamicObject>, name: &str) -> Option<DynamicObject> {
    let cluster = clusters.get(name).await.ok()?;
    let status = cluster.data.get("status")?;
    (status.get("phase")?.as_str()? == "Cluster in healthy state").then_some(cluster)
}

#[tokio::test]
async fn cnpg_secrets_reach_a_real_postgres() {
    let sim = Sim::start(ControllersConfig {
        postgres: PostgresSource::Throwaway,
        ..ControllersConfig::default()
    })
    .await;
    let clusters = cnpg_clusters(&sim.client);
    let cluster: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
        "metadata": {"name": "shop-db", "namespace": "default"},
        "spec": {"instances": 2, "enableSuperuserAccess": true, "storage": {"size": "1Gi"},
            "bootstrap": {"initdb": {"database": "shop", "owner": "shop_owner"}}}
    }))
    .expect("cluster");
    clusters
        .create(&PostParams::default(), &cluster)
        .await
        .expect("cluster created");
    let healthy = wait_for("the Cluster to be healthy", Duration::from_secs(90), || {
        cluster_is_healthy(&clusters, "shop-db")
    })
    .await;
    let status = healthy.data["status"].clone();
    assert_eq!(status["readyInstances"], json!(2));
    assert_eq!(status["instances"], json!(2));
    assert_eq!(status["conditions"][0]["type"], json!("Ready"));
    assert_eq!(status["conditions"][0]["status"], json!("True"));

    let secrets: Api<Secret> = Api::namespaced(sim.client.clone(), "default");
    let app = secrets.get("shop-db-app").await.expect("app secret");
    assert_eq!(app.type_.as_deref(), Some("kubernetes.io/basic-auth"));
    let owner = &app.metadata.owner_references.as_ref().expect("owned")[0];
    assert_eq!(owner.kind, "Cluster");
    let data = secret_strings(&app);
    for key in [
        "username",
        "user",
        "password",
        "host",
        "port",
        "dbname",
        "uri",
        "jdbc-uri",
        "pgpass",
        "fqdn-uri",
        "fqdn-jdbc-uri",
    ] {
        assert!(data.contains_key(key), "the app Secret has {key}");
    }
    assert_eq!(data["host"], "shop-db-rw");
    assert_eq!(
        (data["username"].as_str(), data["dbname"].as_str()),
        ("shop_owner", "shop")
    );

    assert_eq!(data["port"], "5432");

    // The app Secret's URI logs in to the real database as its owner (from outside the cluster:
    // through a portforward; pods connect with it as it is, see controllers_dns.rs).
    let (uri, bridge) =
        through_primary_portforward(&sim.client, "default", "shop-db", &data["uri"]).await;
    let mut connection = sqlx::postgres::PgConnection::connect(&uri)
        .await
        .expect("the app Secret reaches Postgres");
    let (user, database): (String, String) =
        sqlx::query_as("SELECT current_user::text, current_database()::text")
            .fetch_one(&mut connection)
            .await
            .expect("query");
    assert_eq!((user.as_str(), database.as_str()), ("shop_owner", "shop"));
    let owner_of_db: String = sqlx::query_scalar(
        "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = 'shop'",
    )
    .fetch_one(&mut connection)
    .await
    .expect("query");
    assert_eq!(owner_of_db, "shop_owner");
    let _ = connection.close().await;

    // The superuser Secret too: CNPG's `*` database, its `uri` on the `-rw` Service.
    let superuser = secret_strings(
        &secrets
            .get("shop-db-superuser")
            .await
            .expect("superuser secret"),
    );
    assert_eq!(
        (superuser["host"].as_str(), superuser["dbname"].as_str()),
        ("shop-db-rw", "*")
    );
    let (url, superuser_bridge) = through_primary_portforward(
        &sim.client,
        "default",
        "shop-db",
        &superuser["uri"].replace("/*", "/postgres"),
    )
    .await;
    let mut connection = sqlx::postgres::PgConnection::connect(&url)
        .await
        .expect("the superuser Secret reaches Postgres");
    let is_superuser: bool =
        sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&mut connection)
            .await
            .expect("query");
    assert!(is_superuser);
    let _ = connection.close().await;

    let services: Api<Service> = Api::namespaced(sim.client.clone(), "default");
    for suffix in ["rw", "ro", "r"] {
        services
            .get(&format!("shop-db-{suffix}"))
            .await
            .expect("the CNPG Services exist");
    }

    // A reconciliation keeps the password.
    let again = secret_strings(&secrets.get("shop-db-app").await.expect("app secret"));
    assert_eq!(again["password"], data["password"]);
    bridge.abort();
    superuser_bridge.abort();
    sim.stop().await;
}

#[tokio::test]
async fn cnpg_clusters_share_an_existing_postgres_given_by_url() {
    let postgres = tokio::task::spawn_blocking(TempPostgres::start)
        .await
        .expect("join")
        .expect("postgres starts");
    let sim = Sim::start(ControllersConfig {
        postgres: PostgresSource::Url(postgres.superuser_url("postgres")),
        ..ControllersConfig::default()
    })
    .await;
    let clusters = cnpg_clusters(&sim.client);
    let cluster: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {"instances": 1, "storage": {"size": "1Gi"}}
    }))
    .expect("cluster");
    clusters
        .create(&PostParams::default(), &cluster)
        .await
        .expect("cluster created");
    wait_for("the Cluster to be healthy", Duration::from_secs(60), || {
        cluster_is_healthy(&clusters, "db")
    })
    .await;
    let secrets: Api<Secret> = Api::namespaced(sim.client.clone(), "default");
    let data = secret_strings(&secrets.get("db-app").await.expect("app secret"));
    assert_eq!(
        (data["host"].as_str(), data["port"].as_str()),
        ("db-rw", "5432")
    );
    assert_eq!(
        (data["username"].as_str(), data["dbname"].as_str()),
        ("app", "app")
    );
    assert!(
        secrets
            .get_opt("db-superuser")
            .await
            .expect("read")
            .is_none(),
        "superuser access is off"
    );
    let (uri, bridge) =
        through_primary_portforward(&sim.client, "default", "db", &data["uri"]).await;
    let connection = sqlx::postgres::PgConnection::connect(&uri)
        .await
        .expect("the app Secret reaches the given Postgres");
    let _ = connection.close().await;
    bridge.abort();
    sim.stop().await;
}

async fn fetch(port: u16) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    response.split("\r\n\r\n").nth(1).map(str::to_owned)
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
async fn service_proxy_skips_unready_and_terminating_pods() {
    let sim = Sim::start(ControllersConfig::default()).await;
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    for name in ["a", "b", "c"] {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"terminationGracePeriodSeconds": 5, "containers": [{"name": "app", "image": SIM_POD_IMAGE,
                "ports": [{"name": "http", "containerPort": 3000}],
                "env": [{"name": "SIM_POD_IGNORE_SIGTERM", "value": if name == "c" { "1" } else { "0" }}],
                "readinessProbe": {"httpGet": {"path": "/health/ready", "port": "http"},
                    "periodSeconds": 1, "failureThreshold": 1, "timeoutSeconds": 5}}]}
        }))
        .expect("pod");
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("pod created");
    }
    let services: Api<Service> = Api::namespaced(sim.client.clone(), "default");
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}
    }))
    .expect("service");
    services
        .create(&PostParams::default(), &service)
        .await
        .expect("service created");
    let proxy_port: u16 = wait_for(
        "the proxy port annotation",
        Duration::from_secs(20),
        || async {
            let service = services.get("web").await.ok()?;
            service
                .metadata
                .annotations?
                .get("kube-sim.kumiko.so/proxy-port-80")?
                .parse()
                .ok()
        },
    )
    .await;
    wait_for("every pod to be ready", Duration::from_secs(30), || async {
        let listed = pods.list(&Default::default()).await.ok()?;
        (listed.items.iter().filter(|p| ready(p)).count() == 3).then_some(())
    })
    .await;

    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..9 {
        seen.insert(fetch(proxy_port).await.expect("the proxy answers"));
    }
    assert_eq!(
        seen,
        ["a", "b", "c"].map(str::to_owned).into(),
        "round robin over ready pods"
    );

    // b turns unready: it leaves the rotation.
    let b = pods.get("b").await.expect("b");
    let b_port: u16 = b.metadata.annotations.as_ref().expect("annotations")[POD_PORT_ANNOTATION]
        .parse()
        .expect("port");
    fetch_path(b_port, "/unready").await;
    wait_for("b to be unready", Duration::from_secs(20), || async {
        (!ready(&pods.get("b").await.ok()?)).then_some(())
    })
    .await;
    // c terminates (it ignores SIGTERM, so it stays for its 5s grace period): it leaves too.
    pods.delete("c", &DeleteParams::default())
        .await
        .expect("delete c");
    wait_for("c to be terminating", Duration::from_secs(10), || async {
        pods.get("c")
            .await
            .ok()?
            .metadata
            .deletion_timestamp
            .map(|_| ())
    })
    .await;
    for _ in 0..6 {
        assert_eq!(
            fetch(proxy_port).await.as_deref(),
            Some("a"),
            "only the ready, live pod"
        );
    }
    sim.stop().await;
}

async fn fetch_path(port: u16, path: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let _ = stream.write_all(request.as_bytes()).await;
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink).await;
    }
}

#[tokio::test]
async fn quota_rejects_pods_over_its_hard_limits_and_counts_usage() {
    let sim = Sim::start(ControllersConfig {
        instant: true,
        ..ControllersConfig::default()
    })
    .await;
    let quotas: Api<ResourceQuota> = Api::namespaced(sim.client.clone(), "default");
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "compute"},
        "spec": {"hard": {"pods": "2", "requests.memory": "1Gi"}}
    }))
    .expect("quota");
    quotas
        .create(&PostParams::default(), &quota)
        .await
        .expect("quota created");
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    let pod = |name: &str, memory: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "app", "image": "x",
                "resources": {"requests": {"memory": memory}}}]}
        }))
        .expect("pod")
    };
    pods.create(&PostParams::default(), &pod("first", "768Mi"))
        .await
        .expect("within quota");
    let error = pods
        .create(&PostParams::default(), &pod("second", "512Mi"))
        .await
        .expect_err("over quota");
    let kube::Error::Api(status) = error else {
        panic!("an API error: {error}");
    };
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        status.message,
        "pods \"second\" is forbidden: exceeded quota: compute, requested: requests.memory=512Mi, \
         used: requests.memory=768Mi, limited: requests.memory=1Gi"
    );
    let used = wait_for(
        "the quota's used figures",
        Duration::from_secs(20),
        || async {
            let quota = quotas.get("compute").await.ok()?;
            let used = quota.status?.used?;
            (used.get("pods")?.0 == "1").then_some(used)
        },
    )
    .await;
    assert_eq!(used["requests.memory"].0, "768Mi");

    pods.delete("first", &DeleteParams::default())
        .await
        .expect("deleted");
    wait_for("the usage to drop", Duration::from_secs(20), || async {
        let used = quotas.get("compute").await.ok()?.status?.used?;
        (used.get("pods")?.0 == "0").then_some(())
    })
    .await;
    pods.create(&PostParams::default(), &pod("second", "512Mi"))
        .await
        .expect("fits once the first is gone");
    sim.stop().await;
}
