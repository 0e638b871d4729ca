//! `spec.api.expose` with a Gateway API HTTPRoute, end to end: the operator applies the HTTPRoute
//! attached to the Gateway the app names, holds the app not Ready (`RouteAccepted` False) while
//! no Gateway accepts the route, and reports Ready once the Gateway's controller has set the
//! route's `Accepted` and `ResolvedRefs` True; the app then answers through the Gateway by its host
//! name. On kube-sim (started with the Gateway API installed) that is its simulated gateway, the
//! controller of the GatewayClass `kube-sim`, whose listener ports are published on the Gateway's
//! `kube-sim.kumiko.so/listener-port-<port>` annotations.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kumiko_crds::names;
use kumiko_e2e::wait::eventually;
use kumiko_e2e::{TestApp, TestCluster, manifests};

const HOST: &str = "status.gateway.test";
const GATEWAY: &str = "web";

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

async fn kubectl(cluster: &TestCluster, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    let output = child.wait_with_output().await.unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

fn gateway_manifest(namespace: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: {GATEWAY}
  namespace: {namespace}
spec:
  gatewayClassName: kube-sim
  listeners:
    - name: http
      protocol: HTTP
      port: 80
      hostname: \"*.gateway.test\"
"
    )
}

/// The address of the Gateway's port-80 listener: `status.addresses[0]` and the loopback port
/// kube-sim publishes for it.
fn listener_address(gateway: &DynamicObject) -> Option<String> {
    let ip = gateway.data["status"]["addresses"][0]["value"].as_str()?;
    let port = gateway
        .metadata
        .annotations
        .as_ref()?
        .get("kube-sim.kumiko.so/listener-port-80")?;
    Some(format!("{ip}:{port}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_route_is_ready_once_its_gateway_accepts_it_and_routes_by_host() {
    let cluster = TestCluster::start().await.unwrap();
    if !cluster.is_local() {
        eprintln!(
            "skipped: the e2e kind cluster installs no Gateway API; on kube-sim its simulated \
             gateway serves the HTTPRoute"
        );
        return;
    }
    let namespace = cluster.namespace("gateway").await.unwrap();
    let mut manifest = manifests::minimal_app("status", &namespace, cluster.app_image());
    manifest["spec"]["api"]["expose"] = serde_json::json!({
        "hosts": [HOST],
        "gateway": {"name": GATEWAY}
    });
    let app = TestApp::apply(cluster.client(), &manifest).await.unwrap();
    let route_name = names::api(&app.name);

    // No Gateway yet: the route is applied, no controller accepts it, and the app says why.
    let waiting = app
        .wait_for(
            "RouteAccepted=False with its API pods available",
            Duration::from_secs(180),
            |app| {
                let api_ready = app
                    .status
                    .as_ref()
                    .and_then(|status| status.api.as_ref())
                    .is_some_and(|api| api.ready_replicas >= 1);
                api_ready
                    && manifests::condition(app, "RouteAccepted").is_some_and(
                        |(status, reason, _)| status == "False" && reason == "RouteNotAccepted",
                    )
            },
        )
        .await
        .unwrap();
    assert!(
        !manifests::is_ready(&waiting),
        "Ready before the route is accepted"
    );
    let (_, _, message) = manifests::condition(&waiting, "RouteAccepted").unwrap();
    assert!(
        message.contains(&format!("{namespace}/{GATEWAY}")) && message.contains(&route_name),
        "{message}"
    );
    let (ok, output) = kubectl(
        &cluster,
        &[
            "get",
            "httproute",
            &route_name,
            "-n",
            &namespace,
            "-o",
            "jsonpath={.status.parents}",
        ],
        None,
    )
    .await;
    assert!(ok, "{output}");
    assert!(
        output.trim().is_empty() || output.trim() == "[]",
        "no controller reports on a route to a missing Gateway: {output}"
    );

    // The Gateway appears: its controller accepts the route and the app becomes Ready.
    let (ok, output) = kubectl(
        &cluster,
        &["apply", "-f", "-"],
        Some(&gateway_manifest(&namespace)),
    )
    .await;
    assert!(ok, "kubectl apply of the Gateway: {output}");
    let ready = app.wait_ready().await.unwrap();
    assert_eq!(
        manifests::condition(&ready, "RouteAccepted").map(|(status, reason, _)| (status, reason)),
        Some(("True".to_owned(), "Accepted".to_owned()))
    );
    assert_eq!(
        ready.status.as_ref().unwrap().urls,
        vec![format!("http://{HOST}/")]
    );

    let gateways: Api<DynamicObject> = Api::namespaced_with(
        cluster.client().clone(),
        &namespace,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "Gateway"),
            "gateways",
        ),
    );
    let gateway = eventually(
        "the Gateway to be Programmed with one attached route",
        Duration::from_secs(30),
        || {
            let gateways = gateways.clone();
            async move {
                let gateway = gateways.get(GATEWAY).await?;
                let programmed = gateway.data["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Programmed" && c["status"] == "True");
                let attached = gateway.data["status"]["listeners"][0]["attachedRoutes"] == 1;
                Ok((programmed && attached).then_some(gateway))
            }
        },
    )
    .await
    .unwrap();
    let address = listener_address(&gateway).expect("the listener's address is published");

    // The status page through the Gateway, by host name.
    let (code, body) = eventually(
        "the status page through the Gateway",
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
    // A host the listener takes but no route names is not routed.
    let (code, _) = curl(&address, "other.gateway.test", "/").await;
    assert_eq!(code, 404, "a host no HTTPRoute names is not routed");

    // With no ready API pod, the Gateway answers 503 (readiness is honoured).
    let mut scaled = manifest.clone();
    scaled["spec"]["api"]["replicas"] = serde_json::json!(0);
    app.reapply(&scaled).await.unwrap();
    eventually(
        "the Gateway to answer 503 with no API pod",
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
