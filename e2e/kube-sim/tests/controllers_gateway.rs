//! The Gateway API (`--gateway-api`) and the simulated gateway, against the in-process API server:
//! the GatewayClass `kube-sim` is accepted, a Gateway of it is programmed with a loopback listener,
//! an HTTPRoute attached to it is accepted and routes by host to a Service's ready pod, and a
//! route whose hostnames miss the listener is refused with the Gateway API's reason.

// Test helpers outside #[test] functions: a failed set-up is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod controllers_support;

use std::time::Duration;

use controllers_support::{SIM_POD_IMAGE, Sim, wait_for};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DynamicObject, PostParams};
use kube_sim::controllers::ControllersConfig;
use kube_sim::controllers::gateway::{CONTROLLER_NAME, GATEWAY_CLASS, resource};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn condition<'a>(conditions: &'a Value, kind: &str) -> Option<&'a Value> {
    conditions.as_array()?.iter().find(|c| c["type"] == kind)
}

/// A `GET /` through `port` with `Host: host`: the status line and the body.
async fn get(port: u16, host: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("the listener accepts");
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.lines().next().unwrap_or_default().to_owned();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn an_http_route_on_a_kube_sim_gateway_is_accepted_and_routes_by_host() {
    let sim = Sim::start_with(
        kube_sim::Config {
            preload_gateway_api: true,
            ..kube_sim::Config::default()
        },
        ControllersConfig::default(),
    )
    .await;
    let client = &sim.client;
    let classes: Api<DynamicObject> =
        Api::all_with(client.clone(), &resource("GatewayClass", "gatewayclasses"));
    let gateways: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &resource("Gateway", "gateways"));
    let routes: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &resource("HTTPRoute", "httproutes"),
    );

    let class = wait_for(
        "the GatewayClass to be accepted",
        Duration::from_secs(20),
        || async {
            let class = classes.get(GATEWAY_CLASS).await.ok()?;
            (condition(&class.data["status"]["conditions"], "Accepted")?["status"] == "True")
                .then_some(class)
        },
    )
    .await;
    assert_eq!(class.data["spec"]["controllerName"], CONTROLLER_NAME);

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web-1", "labels": {"app": "web"}},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "app", "image": SIM_POD_IMAGE,
            "ports": [{"name": "http", "containerPort": 3000}],
            "readinessProbe": {"httpGet": {"path": "/health/ready", "port": "http"}, "periodSeconds": 1}}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &service)
        .await
        .unwrap();

    let gateway: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": "default"},
        "spec": {"gatewayClassName": GATEWAY_CLASS, "listeners": [
            {"name": "http", "port": 80, "protocol": "HTTP", "hostname": "*.example.test"}
        ]}
    }))
    .unwrap();
    gateways
        .create(&PostParams::default(), &gateway)
        .await
        .unwrap();
    let route = |name: &str, host: &str| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"parentRefs": [{"name": "edge"}], "hostnames": [host],
                     "rules": [{"backendRefs": [{"name": "web", "port": 80}]}]}
        }))
        .unwrap()
    };
    routes
        .create(&PostParams::default(), &route("shop", "shop.example.test"))
        .await
        .unwrap();
    routes
        .create(
            &PostParams::default(),
            &route("elsewhere", "shop.example.org"),
        )
        .await
        .unwrap();

    let accepted = wait_for(
        "the route to be accepted",
        Duration::from_secs(20),
        || async {
            let route = routes.get("shop").await.ok()?;
            let parent = route.data["status"]["parents"].get(0)?.clone();
            (condition(&parent["conditions"], "Accepted")?["status"] == "True").then_some(parent)
        },
    )
    .await;
    assert_eq!(accepted["controllerName"], CONTROLLER_NAME);
    assert_eq!(
        condition(&accepted["conditions"], "ResolvedRefs").unwrap()["status"],
        "True"
    );
    let refused = wait_for(
        "the other route to be refused",
        Duration::from_secs(20),
        || async {
            let route = routes.get("elsewhere").await.ok()?;
            let parent = route.data["status"]["parents"].get(0)?.clone();
            condition(&parent["conditions"], "Accepted").cloned()
        },
    )
    .await;
    assert_eq!(
        (refused["status"].as_str(), refused["reason"].as_str()),
        (Some("False"), Some("NoMatchingListenerHostname"))
    );

    let (gateway, port) = wait_for(
        "the Gateway to be programmed",
        Duration::from_secs(20),
        || async {
            let gateway = gateways.get("edge").await.ok()?;
            let programmed =
                condition(&gateway.data["status"]["conditions"], "Programmed")?["status"] == "True";
            let port: u16 = gateway
                .metadata
                .annotations
                .as_ref()?
                .get("kube-sim.kumiko.so/listener-port-80")?
                .parse()
                .ok()?;
            programmed.then_some((gateway, port))
        },
    )
    .await;
    assert_eq!(gateway.data["status"]["addresses"][0]["value"], "127.0.0.1");
    assert_eq!(gateway.data["status"]["listeners"][0]["attachedRoutes"], 1);

    let (status, body) = wait_for(
        "the pod through the Gateway",
        Duration::from_secs(30),
        || async {
            let (status, body) = get(port, "shop.example.test").await;
            status.contains(" 200 ").then_some((status, body))
        },
    )
    .await;
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("web-1"), "{body}");
    let (status, _) = get(port, "shop.example.org").await;
    assert!(
        status.contains(" 404 "),
        "a refused route carries no traffic: {status}"
    );

    // Converged: the controller stops writing once every status is as it should be.
    let before = routes.get("shop").await.unwrap().metadata.resource_version;
    let gateway_before = gateways
        .get("edge")
        .await
        .unwrap()
        .metadata
        .resource_version;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        routes.get("shop").await.unwrap().metadata.resource_version,
        before
    );
    assert_eq!(
        gateways
            .get("edge")
            .await
            .unwrap()
            .metadata
            .resource_version,
        gateway_before
    );
    sim.stop().await;
}
