//! Service names as pods resolve them, and Services reached at their ClusterIP on their own
//! ports, following kubernetes.io "DNS for Services and Pods": a Service `<svc>` of namespace
//! `<ns>` is `<svc>.<ns>.svc.cluster.local`, and a pod's search path is
//! `<pod ns>.svc.cluster.local svc.cluster.local cluster.local`, so `<svc>` resolves only in its
//! own namespace while `<svc>.<ns>`, `<svc>.<ns>.svc` and the full name resolve everywhere.

// Test helpers outside #[test] functions: a failed set-up is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod controllers_support;

use std::time::Duration;

use controllers_support::{Sim, wait_for};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, LogParams, PostParams};
use kube_sim::controllers::{ControllersConfig, ImageMapping, PostgresSource};
use serde_json::{Value, json};

const GETENT_IMAGE: &str = "getent:test";
const PSQL_IMAGE: &str = "psql:test";

fn config(postgres: PostgresSource) -> ControllersConfig {
    ControllersConfig {
        images: vec![
            ImageMapping {
                image: GETENT_IMAGE.to_owned(),
                binary: "/usr/bin/getent".into(),
            },
            ImageMapping {
                image: PSQL_IMAGE.to_owned(),
                binary: "/usr/bin/psql".into(),
            },
        ],
        postgres,
        backoff_base: Duration::from_secs(1),
        ..ControllersConfig::default()
    }
}

async fn namespace(sim: &Sim, name: &str) {
    let namespaces: Api<Namespace> = Api::all(sim.client.clone());
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .expect("namespace created");
}

/// Runs a pod of one container to completion; returns its exit code and its log.
async fn run_to_completion(
    sim: &Sim,
    namespace: &str,
    name: &str,
    container: Value,
) -> (i32, String) {
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), namespace);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [container]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("pod created");
    let code = wait_for(
        &format!("pod {namespace}/{name} to finish"),
        Duration::from_secs(60),
        || async {
            let pod = pods.get(name).await.ok()?;
            let status = pod.status?.container_statuses?.into_iter().next()?;
            Some(status.state?.terminated?.exit_code)
        },
    )
    .await;
    let log = pods
        .logs(name, &LogParams::default())
        .await
        .unwrap_or_default();
    (code, log)
}

async fn getent(sim: &Sim, namespace: &str, pod: &str, host: &str) -> i32 {
    let container = json!({"name": "resolve", "image": GETENT_IMAGE, "args": ["hosts", host]});
    run_to_completion(sim, namespace, pod, container).await.0
}

#[tokio::test]
async fn a_short_service_name_resolves_only_in_its_own_namespace_and_qualified_names_everywhere() {
    let sim = Sim::start(config(PostgresSource::None)).await;
    namespace(&sim, "team-a").await;
    namespace(&sim, "team-b").await;
    let services: Api<Service> = Api::namespaced(sim.client.clone(), "team-a");
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}
    }))
    .expect("service");
    let created = services
        .create(&PostParams::default(), &service)
        .await
        .expect("service created");
    let cluster_ip: std::net::Ipv4Addr = created
        .spec
        .and_then(|spec| spec.cluster_ip)
        .expect("a ClusterIP")
        .parse()
        .expect("an IPv4 ClusterIP");
    assert!(cluster_ip.is_loopback(), "{cluster_ip}");

    assert_eq!(
        getent(&sim, "team-a", "short-here", "web").await,
        0,
        "`web` from team-a"
    );
    assert_eq!(
        getent(&sim, "team-b", "short-elsewhere", "web").await,
        2,
        "`web` from team-b must not resolve (getent: key not found)"
    );
    for (pod, host) in [
        ("ns", "web.team-a"),
        ("svc", "web.team-a.svc"),
        ("fqdn", "web.team-a.svc.cluster.local"),
    ] {
        assert_eq!(
            getent(&sim, "team-b", pod, host).await,
            0,
            "`{host}` from team-b"
        );
    }
    let (_, log) = run_to_completion(
        &sim,
        "team-b",
        "address",
        json!({"name": "resolve", "image": GETENT_IMAGE, "args": ["hosts", "web.team-a.svc"]}),
    )
    .await;
    assert!(log.starts_with(&cluster_ip.to_string()), "{log}");
    sim.stop().await;
}

fn cnpg_clusters(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("postgresql.cnpg.io", "v1", "Cluster"),
        "clusters",
    );
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// CNPG's Secrets name the `-rw` Service (`host: <cluster>-rw`, `uri` on
/// `<cluster>-rw.<ns>:5432`): a pod of the cluster's namespace connects with them as CNPG's
/// users' pods do, through its resolver and the Service's proxy at `<clusterIP>:5432`; a pod of
/// another namespace with the namespace-qualified `uri`.
#[tokio::test]
async fn pods_reach_a_cnpg_cluster_by_the_service_names_in_its_secrets() {
    let sim = Sim::start(config(PostgresSource::Throwaway)).await;
    namespace(&sim, "db").await;
    namespace(&sim, "apps").await;
    let cluster: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
        "metadata": {"name": "shop-db", "namespace": "db"},
        "spec": {"instances": 1, "enableSuperuserAccess": true, "storage": {"size": "1Gi"},
            "bootstrap": {"initdb": {"database": "shop", "owner": "shop_owner"}}}
    }))
    .expect("cluster");
    let clusters = cnpg_clusters(&sim.client, "db");
    clusters
        .create(&PostParams::default(), &cluster)
        .await
        .expect("cluster created");
    wait_for(
        "the Cluster to be healthy",
        Duration::from_secs(90),
        || async {
            let cluster = clusters.get("shop-db").await.ok()?;
            (cluster.data.get("status")?.get("phase")?.as_str()? == "Cluster in healthy state")
                .then_some(())
        },
    )
    .await;

    // The app Secret's `uri`, from the cluster's namespace and from another one (a Secret is
    // read only in its own namespace: the other pod gets the uri by value, as a user copies it).
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(sim.client.clone(), "db");
    let app = secrets.get("shop-db-app").await.expect("app secret");
    let uri = String::from_utf8(app.data.expect("data")["uri"].0.clone()).expect("utf-8");
    assert!(
        uri.contains("@shop-db-rw.db:5432/shop"),
        "the uri names the -rw Service"
    );
    let query = "SELECT current_user || '@' || current_database()";
    let (code, log) = run_to_completion(
        &sim,
        "db",
        "app-here",
        json!({"name": "psql", "image": PSQL_IMAGE,
            "env": [{"name": "URI", "valueFrom": {"secretKeyRef": {"name": "shop-db-app", "key": "uri"}}}],
            "args": ["$(URI)", "-tAc", query]}),
    )
    .await;
    assert_eq!((code, log.trim()), (0, "shop_owner@shop"), "{log}");
    let (code, log) = run_to_completion(
        &sim,
        "apps",
        "app-elsewhere",
        json!({"name": "psql", "image": PSQL_IMAGE, "args": [uri, "-tAc", query]}),
    )
    .await;
    assert_eq!((code, log.trim()), (0, "shop_owner@shop"), "{log}");

    // The superuser Secret's short `host` and `port`, from the cluster's namespace.
    let env = |key: &str, variable: &str| json!({"name": variable, "valueFrom": {"secretKeyRef": {"name": "shop-db-superuser", "key": key}}});
    let (code, log) = run_to_completion(
        &sim,
        "db",
        "superuser",
        json!({"name": "psql", "image": PSQL_IMAGE,
            "env": [env("host", "PGHOST"), env("port", "PGPORT"), env("username", "PGUSER"),
                env("password", "PGPASSWORD"), {"name": "PGDATABASE", "value": "postgres"}],
            "args": ["-tAc", "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"]}),
    )
    .await;
    assert_eq!((code, log.trim()), (0, "t"), "{log}");
    sim.stop().await;
}
