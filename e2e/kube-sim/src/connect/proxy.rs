//! `pods/NAME[:PORT]/proxy` and `services/NAME[:PORT]/proxy`: HTTP forwarded to a pod's process.
//!
//! The request goes upstream with its method, the path after `proxy` and the query, its headers
//! (less hop-by-hop ones and `Authorization`, which is for the API server) and its body, over a
//! new HTTP/1.1 connection to the pod's loopback port; the answer comes back as the upstream gave
//! it (status, headers, streamed body), whatever the status. As in kube-apiserver:
//!
//! - a pod's port defaults to the first port its containers declare;
//! - a Service's port is named by number or name, and may be left out when the Service has one
//!   port; the request goes to a ready endpoint, chosen round robin as the Service proxies choose
//!   them ([`service_proxy::endpoints`]);
//! - `503 ServiceUnavailable` (a Status) when nothing can be reached: `no endpoints available for
//!   service "web"`, `no service port "x" found for service "web"` (a number unquoted), `error
//!   trying to reach service: dial tcp 127.0.0.1:PORT: ...`.

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::uri::PathAndQuery;
use axum::response::Response;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::net::TcpStream;

use super::{NamePort, read_pod, service_unavailable, status_response};
use crate::cluster::Cluster;
use crate::controllers::service_proxy::{self, pod_target_port};
use crate::status::ApiError;

/// The pod IP every simulated pod reports.
const POD_IP: &str = "127.0.0.1";

/// Headers that belong to one connection and are never forwarded.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Serves `pods/NAME[:PORT]/proxy/PATH`.
pub async fn pod(
    cluster: &Cluster,
    namespace: &str,
    target: &NamePort,
    path: &str,
    request: Request,
) -> Response {
    match pod_port(cluster, namespace, target) {
        Ok(port) => forward(request, port, path).await,
        Err(error) => status_response(&error),
    }
}

/// Serves `services/NAME[:PORT]/proxy/PATH`.
pub async fn service(
    cluster: &Cluster,
    namespace: &str,
    target: &NamePort,
    path: &str,
    request: Request,
) -> Response {
    match service_port(cluster, namespace, target) {
        Ok(port) => forward(request, port, path).await,
        Err(error) => status_response(&error),
    }
}

fn check_scheme(target: &NamePort) -> Result<(), ApiError> {
    match target.scheme.as_deref() {
        None | Some("http") => Ok(()),
        Some(other) => Err(service_unavailable(format!(
            "error trying to reach service: kube-sim proxies plain HTTP only, not {other}"
        ))),
    }
}

/// The loopback port behind a pod's container port.
fn pod_port(cluster: &Cluster, namespace: &str, target: &NamePort) -> Result<u16, ApiError> {
    let pod = read_pod(cluster, namespace, &target.name)?;
    check_scheme(target)?;
    let port: i32 = match &target.port {
        Some(text) => text.parse().map_err(|_| {
            ApiError::bad_request(format!("invalid port {text:?} for pod {}", target.name))
        })?,
        None => first_declared_port(&pod).unwrap_or(80),
    };
    let has_ip = pod
        .status
        .as_ref()
        .and_then(|status| status.pod_ip.as_deref())
        .is_some_and(|ip| !ip.is_empty());
    let loopback = pod_target_port(&pod, &IntOrString::Int(port));
    match loopback {
        Some(loopback) if has_ip => Ok(loopback),
        _ => Err(service_unavailable(format!(
            "error trying to reach service: pod {} has no IP address yet",
            target.name
        ))),
    }
}

fn first_declared_port(pod: &Pod) -> Option<i32> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|container| container.ports.iter().flatten())
        .map(|port| port.container_port)
        .next()
}

/// The loopback port of a ready endpoint of a Service port.
fn service_port(cluster: &Cluster, namespace: &str, target: &NamePort) -> Result<u16, ApiError> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let services = cluster
        .resource_type("", "v1", "services")
        .ok_or_else(|| ApiError::internal("services are not registered"))?;
    let service: Service =
        serde_json::from_value(cluster.get(&services, namespace, &target.name)?)
            .map_err(|error| ApiError::internal(format!("service {}: {error}", target.name)))?;
    check_scheme(target)?;
    let spec = service.spec.clone().unwrap_or_default();
    let ports = spec.ports.clone().unwrap_or_default();
    let wanted = target.port.as_deref().unwrap_or("");
    let port = ports
        .iter()
        .find(|port| match wanted {
            "" => ports.len() == 1 || port.name.as_deref().unwrap_or("").is_empty(),
            text => port.name.as_deref() == Some(text) || port.port.to_string() == text,
        })
        .ok_or_else(|| {
            // kube-apiserver's wording: a number bare, a name quoted.
            let port = match wanted.parse::<i32>() {
                Ok(number) => number.to_string(),
                Err(_) => format!("{wanted:?}"),
            };
            service_unavailable(format!(
                "no service port {port} found for service {:?}",
                target.name
            ))
        })?;
    let selector = spec.selector.clone().unwrap_or_default();
    let no_endpoints = || {
        service_unavailable(format!(
            "no endpoints available for service {:?}",
            target.name
        ))
    };
    if selector.is_empty() {
        return Err(no_endpoints());
    }
    let endpoint_target = service_proxy::Target {
        namespace: namespace.to_owned(),
        selector,
        target_port: port
            .target_port
            .clone()
            .unwrap_or(IntOrString::Int(port.port)),
        publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
    };
    let pods: Vec<Pod> = cluster
        .snapshot("", "pods", Some(namespace))
        .into_iter()
        .filter_map(|pod| serde_json::from_value(pod).ok())
        .collect();
    let endpoints = service_proxy::endpoints(pods.iter(), &endpoint_target);
    if endpoints.is_empty() {
        return Err(no_endpoints());
    }
    Ok(endpoints[NEXT.fetch_add(1, Ordering::Relaxed) % endpoints.len()])
}

/// Forwards `request` to `127.0.0.1:port` at `path` (plus the request's query).
async fn forward(request: Request, port: u16, path: &str) -> Response {
    let unreachable = |error: &dyn std::fmt::Display| {
        status_response(&service_unavailable(format!(
            "error trying to reach service: dial tcp {POD_IP}:{port}: {error}"
        )))
    };
    let stream = match TcpStream::connect((POD_IP, port)).await {
        Ok(stream) => stream,
        Err(error) => return unreachable(&error),
    };
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(error) => return unreachable(&error),
        };
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "proxy: upstream connection ended");
        }
    });

    let (mut parts, body) = request.into_parts();
    let path_and_query = match parts.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    parts.uri = match path_and_query.parse::<PathAndQuery>() {
        Ok(path_and_query) => path_and_query.into(),
        Err(error) => {
            return status_response(&ApiError::bad_request(format!(
                "invalid proxy path {path_and_query:?}: {error}"
            )));
        }
    };
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::AUTHORIZATION);
    if let Ok(host) = HeaderValue::from_str(&format!("{POD_IP}:{port}")) {
        parts.headers.insert(header::HOST, host);
    }
    let upstream = hyper::Request::from_parts(parts, body);
    match sender.send_request(upstream).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Err(error) => status_response(&service_unavailable(format!(
            "error trying to reach service: {error}"
        ))),
    }
}

/// Removes the hop-by-hop headers, and those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("close, x-hop"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        strip_hop_by_hop(&mut headers);
        let names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, vec!["x-kept"]);
    }
}
