//! `spec.api.expose` with an Ingress, end to end: the operator renders the Ingress, the status
//! carries the app's URL, and the app answers through the cluster's ingress by its host name.
//! On kube-sim that is the simulated ingress (the default IngressClass `kube-sim`), which routes
//! by `Host` header and path to the API Service's ready endpoints and publishes its address in
//! the Ingress's `status.loadBalancer.ingress`, as a real ingress controller does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::api::networking::v1::Ingress;
use kube::Api;
use kumiko_crds::names;
use kumiko_e2e::wait::eventually;
use kumiko_e2e::{TestApp, TestCluster, manifests};

const HOST: &str = "status.example.test";

/// `curl -H 'Host: HOST' http://ADDRESS/PATH`: the status code and the body.
async fn curl(address: &str, host: &str, path: &str) -> (u16, String) {
    let output = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-H",
            &format!("Host: {host}"),
            "-w",
            "\n%{http_code}",
            &format!("http://{address}{path}"),
        ])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// The address the ingress publishes on the Ingress: `ip:port` (port 80 when none is given).
fn published_address(ingress: &Ingress) -> Option<String> {
    let entry = ingress
        .status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?
        .clone();
    let host = entry.ip.or(entry.hostname)?;
    let port = entry
        .ports
        .and_then(|ports| ports.first().map(|p| p.port))
        .unwrap_or(80);
    Some(format!("{host}:{port}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_answers_through_the_ingress_by_its_host_name() {
    let cluster = TestCluster::start().await.unwrap();
    if !cluster.is_local() {
        eprintln!(
            "skipped: the e2e kind cluster runs no ingress controller; on kube-sim the simulated \
             ingress serves the Ingress"
        );
        return;
    }
    let namespace = cluster.namespace("traffic").await.unwrap();
    let mut manifest = manifests::minimal_app("status", &namespace, cluster.app_image());
    manifest["spec"]["api"]["expose"] = serde_json::json!({
        "hosts": [HOST],
        "ingress": {}
    });
    let app = TestApp::apply(cluster.client(), &manifest).await.unwrap();
    let ready = app.wait_ready().await.unwrap();

    let status = ready.status.as_ref().unwrap();
    assert_eq!(status.urls, vec![format!("http://{HOST}/")]);
    assert_eq!(
        manifests::condition(&ready, "RouteAccepted").map(|(status, reason, _)| (status, reason)),
        Some(("True".to_owned(), "Ingress".to_owned()))
    );

    let ingresses: Api<Ingress> = Api::namespaced(cluster.client().clone(), &namespace);
    let name = names::api(&app.name);
    let address = eventually(
        "the ingress to publish its address on the Ingress",
        Duration::from_secs(60),
        || {
            let ingresses = ingresses.clone();
            let name = name.clone();
            async move { Ok(published_address(&ingresses.get(&name).await?)) }
        },
    )
    .await
    .unwrap();

    // The status page, through the ingress, by host name.
    let (code, body) = eventually(
        "the status page through the ingress",
        Duration::from_secs(60),
        || {
            let address = address.clone();
            async move {
                let (code, body) = curl(&address, HOST, "/").await;
                Ok((code == 200).then_some((code, body)))
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("<title>Status</title>"), "{body}");
    let (code, _) = curl(&address, HOST, "/health/ready").await;
    assert_eq!(code, 200, "/health/ready through the ingress");

    // Another host name matches no rule.
    let (code, _) = curl(&address, "other.example.test", "/").await;
    assert_eq!(code, 404, "a host no Ingress names is not routed");

    // With no ready API pod, the ingress answers 503 (readiness is honoured).
    let mut scaled = manifest.clone();
    scaled["spec"]["api"]["replicas"] = serde_json::json!(0);
    app.reapply(&scaled).await.unwrap();
    eventually(
        "the ingress to answer 503 with no API pod",
        Duration::from_secs(90),
        || {
            let address = address.clone();
            async move { Ok((curl(&address, HOST, "/").await.0 == 503).then_some(())) }
        },
    )
    .await
    .unwrap();

    cluster.shutdown().await.unwrap();
}
