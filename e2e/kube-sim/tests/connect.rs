//! The API server's proxy and portforward subresources, against real pod processes (`sim-pod`)
//! and the real Postgres behind a CNPG Cluster's instance pod; through kube-rs and `kubectl`.

// Test helpers outside #[test] functions: a failed set-up is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod controllers_support;

use std::time::Duration;

use axum::http::{Method, Request};
use controllers_support::{SIM_POD_IMAGE, Sim, wait_for};
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use kube_sim::controllers::{ControllersConfig, PostgresSource};
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A client that returns 503s as they come: kube-rs retries them by default (up to 15 times, with
/// a growing back-off), which would hide the proxied status.
fn proxy_client(sim: &Sim) -> kube::Client {
    let mut config = sim.server.client_config().expect("client config");
    config.default_retry = false;
    kube::Client::try_from(config).expect("client")
}

/// Sends `method path` through the client; returns the status and the body.
async fn call(client: &kube::Client, method: Method, path: &str, body: &str) -> (u16, String) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .body(kube::client::Body::from(body.as_bytes().to_vec()))
        .expect("request");
    let response = client.send(request).await.expect("the API server answers");
    let status = response.status().as_u16();
    let bytes = response.into_body().collect_bytes().await.expect("body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn get(client: &kube::Client, path: &str) -> (u16, String) {
    call(client, Method::GET, path, "").await
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Creates `sim-pod` pods labelled `app: web` serving on container port 3000 (`http`), and waits
/// until they are ready.
async fn web_pods(sim: &Sim, names: &[&str]) -> Api<Pod> {
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    for name in names {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "app", "image": SIM_POD_IMAGE,
                "ports": [{"name": "http", "containerPort": 3000}],
                "readinessProbe": {"httpGet": {"path": "/health/ready", "port": "http"},
                    "periodSeconds": 1, "failureThreshold": 1, "timeoutSeconds": 5}}]}
        }))
        .expect("pod");
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("pod created");
    }
    let count = names.len();
    wait_for("the pods to be ready", Duration::from_secs(30), || async {
        let listed = pods.list(&Default::default()).await.ok()?;
        (listed.items.iter().filter(|p| ready(p)).count() == count).then_some(())
    })
    .await;
    pods
}

fn status_message(body: &str) -> (String, String) {
    let status: Value = serde_json::from_str(body).expect("a Status");
    assert_eq!(status["kind"], "Status", "{body}");
    (
        status["reason"].as_str().unwrap_or_default().to_owned(),
        status["message"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn pod_proxy_answers_with_the_process_status_and_body() {
    let sim = Sim::start(ControllersConfig::default()).await;
    let pods = web_pods(&sim, &["web-1"]).await;
    let client = proxy_client(&sim);
    let base = "/api/v1/namespaces/default/pods/web-1:3000/proxy";

    assert_eq!(
        get(&client, &format!("{base}/health/ready")).await,
        (200, "ready".to_owned())
    );
    // The upstream's error statuses come through as they are, not as Status objects.
    assert_eq!(get(&client, &format!("{base}/unready")).await.0, 200);
    assert_eq!(
        get(&client, &format!("{base}/health/ready")).await,
        (503, "not ready".to_owned())
    );
    get(&client, &format!("{base}/fail-liveness")).await;
    assert_eq!(
        get(&client, &format!("{base}/health")).await,
        (500, "dead".to_owned())
    );
    // Without a port: the first declared one. Any method, the query goes along.
    assert_eq!(
        call(
            &client,
            Method::POST,
            "/api/v1/namespaces/default/pods/web-1/proxy/items?color=red",
            "{}"
        )
        .await,
        (200, "web-1".to_owned())
    );
    let log = pods
        .logs("web-1", &Default::default())
        .await
        .expect("the pod's log");
    assert!(log.contains("request /items?color=red -> 200"), "{log}");

    // A pod that does not exist: 404; a process that is gone: 503 Status.
    let (code, body) = get(&client, "/api/v1/namespaces/default/pods/nope:3000/proxy/").await;
    assert_eq!(code, 404, "{body}");
    let crashed: Pod = serde_json::from_value(json!({
        "metadata": {"name": "crashed"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "app", "image": SIM_POD_IMAGE,
            "ports": [{"containerPort": 3000}],
            "env": [{"name": "SIM_POD_EXIT_CODE", "value": "3"}]}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &crashed).await.unwrap();
    wait_for("crashed to fail", Duration::from_secs(30), || async {
        let pod = pods.get("crashed").await.ok()?;
        (pod.status?.phase.as_deref() == Some("Failed")).then_some(())
    })
    .await;
    let (code, body) = get(
        &client,
        "/api/v1/namespaces/default/pods/crashed:3000/proxy/health",
    )
    .await;
    assert_eq!(code, 503, "{body}");
    let (reason, message) = status_message(&body);
    assert_eq!(reason, "ServiceUnavailable");
    assert!(
        message.starts_with("error trying to reach service"),
        "{message}"
    );
    sim.stop().await;
}

#[tokio::test]
async fn service_proxy_spreads_over_ready_endpoints_and_503s_without_one() {
    let sim = Sim::start(ControllersConfig::default()).await;
    let pods = web_pods(&sim, &["web-a", "web-b"]).await;
    let client = proxy_client(&sim);
    let services: Api<Service> = Api::namespaced(sim.client.clone(), "default");
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    }))
    .expect("service");
    services
        .create(&PostParams::default(), &service)
        .await
        .expect("service created");

    let mut seen = std::collections::BTreeSet::new();
    for target in ["web:80", "web:http", "web"] {
        for _ in 0..2 {
            let (code, body) = get(
                &client,
                &format!("/api/v1/namespaces/default/services/{target}/proxy/"),
            )
            .await;
            assert_eq!(code, 200, "{target}: {body}");
            seen.insert(body);
        }
    }
    assert_eq!(seen, ["web-a", "web-b"].map(str::to_owned).into());

    let (code, body) = get(
        &client,
        "/api/v1/namespaces/default/services/web:grpc/proxy/",
    )
    .await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(
        status_message(&body).1,
        "no service port \"grpc\" found for service \"web\""
    );
    let (code, body) = get(&client, "/api/v1/namespaces/default/services/web:81/proxy/").await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(
        status_message(&body).1,
        "no service port 81 found for service \"web\""
    );

    // Only ready pods are endpoints: with none ready, 503.
    for name in ["web-a", "web-b"] {
        get(
            &client,
            &format!("/api/v1/namespaces/default/pods/{name}:3000/proxy/unready"),
        )
        .await;
    }
    wait_for(
        "both pods to be unready",
        Duration::from_secs(20),
        || async {
            let listed = pods.list(&Default::default()).await.ok()?;
            listed.items.iter().all(|p| !ready(p)).then_some(())
        },
    )
    .await;
    let (code, body) = get(&client, "/api/v1/namespaces/default/services/web/proxy/").await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(
        status_message(&body),
        (
            "ServiceUnavailable".to_owned(),
            "no endpoints available for service \"web\"".to_owned()
        )
    );
    sim.stop().await;
}

#[tokio::test]
async fn kubectl_get_raw_goes_through_the_proxy() {
    let sim = Sim::start(ControllersConfig::default()).await;
    web_pods(&sim, &["web-1"]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, sim.server.kubeconfig_yaml()).expect("kubeconfig");
    let kubectl = |path: &'static str| {
        let kubeconfig = kubeconfig.clone();
        async move {
            tokio::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["get", "--raw", path])
                .output()
                .await
                .expect("kubectl runs")
        }
    };
    let output = kubectl("/api/v1/namespaces/default/pods/web-1:3000/proxy/").await;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "web-1");

    let output = kubectl("/api/v1/namespaces/default/services/missing/proxy/").await;
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("services \"missing\" not found"),
        "{output:?}"
    );
    // portforward without a WebSocket upgrade is refused as kube-apiserver refuses it.
    let output = kubectl("/api/v1/namespaces/default/pods/web-1/portforward?ports=3000").await;
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("Upgrade request required"),
        "{output:?}"
    );
    sim.stop().await;
}

#[tokio::test]
async fn portforward_carries_tcp_to_the_pod_process() {
    let sim = Sim::start(ControllersConfig::default()).await;
    let pods = web_pods(&sim, &["web-1"]).await;

    // Two connections, one after the other, each its own WebSocket.
    for _ in 0..2 {
        let mut forwarder = pods
            .portforward("web-1", &[3000])
            .await
            .expect("portforward");
        let mut stream = forwarder.take_stream(3000).expect("the port's stream");
        stream
            .write_all(b"GET /hello HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("read until the pod closes");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("web-1"), "{response}");
        drop(stream);
        // The server closed the WebSocket when the pod's connection ended; kube-rs then fails
        // to send its own Close, which is how it ends against kube-apiserver too.
        let _ = forwarder.join().await;
    }

    // A pod that is not running (bound to a node no kubelet serves): refused before any upgrade.
    let pending: Pod = serde_json::from_value(json!({
        "metadata": {"name": "pending"},
        "spec": {"nodeName": "another-node", "containers": [{"name": "app", "image": SIM_POD_IMAGE}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pending).await.unwrap();
    let error = pods
        .portforward("pending", &[3000])
        .await
        .err()
        .expect("refused");
    assert!(error.to_string().contains("is not running"), "{error}");
    sim.stop().await;
}

fn secret_strings(secret: &Secret) -> std::collections::BTreeMap<String, String> {
    secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}

#[tokio::test]
async fn cnpg_instance_pods_forward_to_the_real_postgres() {
    let sim = Sim::start(ControllersConfig {
        postgres: PostgresSource::Throwaway,
        ..ControllersConfig::default()
    })
    .await;
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("postgresql.cnpg.io", "v1", "Cluster"),
        "clusters",
    );
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(sim.client.clone(), "default", &resource);
    let cluster: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
        "metadata": {"name": "pg", "namespace": "default"},
        "spec": {"instances": 2, "enableSuperuserAccess": true, "storage": {"size": "1Gi"},
            "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}}
    }))
    .unwrap();
    clusters
        .create(&PostParams::default(), &cluster)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    wait_for(
        "two ready instance pods",
        Duration::from_secs(90),
        || async {
            let listed = pods
                .list(&kube::api::ListParams::default().labels("cnpg.io/cluster=pg"))
                .await
                .ok()?;
            (listed.items.iter().filter(|p| ready(p)).count() == 2).then_some(listed.items)
        },
    )
    .await;
    let primary = pods.get("pg-1").await.unwrap();
    let labels = primary.metadata.labels.clone().unwrap();
    assert_eq!(labels["cnpg.io/instanceRole"], "primary");
    assert_eq!(labels["cnpg.io/podRole"], "instance");
    let container = &primary.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        container
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["cpu"]
            .0,
        "250m"
    );
    assert_eq!(
        pods.get("pg-2").await.unwrap().metadata.labels.unwrap()["cnpg.io/instanceRole"],
        "replica"
    );

    // Postgres over the pod's portforward, with the superuser Secret's credentials.
    let secrets: Api<Secret> = Api::namespaced(sim.client.clone(), "default");
    let superuser = wait_for("the superuser Secret", Duration::from_secs(30), || async {
        secrets.get_opt("pg-superuser").await.ok().flatten()
    })
    .await;
    let superuser = secret_strings(&superuser);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap().port();
    let bridge = {
        let pods = pods.clone();
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = listener.accept().await.unwrap();
                let mut forwarder = pods.portforward("pg-1", &[5432]).await.unwrap();
                let mut upstream = forwarder.take_stream(5432).unwrap();
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut upstream).await;
                    drop(upstream);
                    let _ = forwarder.join().await;
                });
            }
        })
    };
    let url = format!(
        "postgres://{}:{}@127.0.0.1:{local}/postgres",
        superuser["username"], superuser["password"]
    );
    let mut connection = sqlx::postgres::PgConnection::connect(&url)
        .await
        .expect("Postgres through the portforward");
    let is_superuser: bool =
        sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&mut connection)
            .await
            .unwrap();
    assert!(is_superuser);
    connection.close().await.unwrap();

    // A deleted instance pod comes back.
    let uid = primary.metadata.uid.clone().unwrap();
    pods.delete("pg-1", &DeleteParams::default()).await.unwrap();
    wait_for("pg-1 to be recreated", Duration::from_secs(30), || async {
        let pod = pods.get_opt("pg-1").await.ok().flatten()?;
        (pod.metadata.uid.as_deref() != Some(uid.as_str()) && ready(&pod)).then_some(())
    })
    .await;

    // Fewer instances: the pods past the count go.
    clusters
        .patch(
            "pg",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"instances": 1}})),
        )
        .await
        .unwrap();
    wait_for("pg-2 to go", Duration::from_secs(30), || async {
        pods.get_opt("pg-2").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(pods.get_opt("pg-1").await.unwrap().is_some());
    bridge.abort();
    sim.stop().await;
}
