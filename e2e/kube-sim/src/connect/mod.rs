//! The API server's connect subresources that reach into pods, as kube-apiserver serves them:
//!
//! - `pods/NAME[:PORT]/proxy[/PATH]` and `services/NAME[:PORT]/proxy[/PATH]` ([`proxy`]): an HTTP
//!   request forwarded to the pod's process, or to a ready endpoint of the Service, answered with
//!   the upstream's status, headers and body (streamed); `503 ServiceUnavailable` as a Status
//!   when nothing can be reached;
//! - `pods/NAME/portforward?ports=P[,Q]` ([`portforward`]): a WebSocket in the
//!   `v4.channel.k8s.io` protocol that kube-rs's `Api::<Pod>::portforward` speaks, each port
//!   bridged to a TCP connection to the pod's process;
//! - `pods/NAME/exec?command=..` ([`exec`]): a command run beside a container's process, its
//!   standard streams over a WebSocket in the remote-command protocol (`v5.channel.k8s.io`).
//!
//! Pods run as local processes that listen on loopback ports, so a container port maps to the
//! loopback port the pod publishes for the container that declares it (the annotation
//! `kube-sim.kumiko.so/port-CONTAINER`, written by the simulated kubelet, or by the CNPG
//! simulation for its instance pods); a port that no container declares goes to the first
//! container's port, as the Service proxies do ([`crate::controllers::service_proxy`]). Only
//! plain HTTP is proxied (`https:` targets answer 503).
//!
//! These requests are served before the resource routes ([`intercept`]): they need the whole
//! request (its body as a stream, the connection upgrade), and they are neither reads nor writes
//! of stored objects. Fault rules do not apply to them.

pub mod exec;
pub mod portforward;
pub mod portforward_spdy;
pub mod proxy;
pub mod spdy;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use k8s_openapi::api::core::v1::Pod;

use crate::cluster::Cluster;
use crate::status::ApiError;

/// A request for one of the connect subresources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectTarget {
    /// `pods/NAME[:PORT]/proxy/PATH`.
    PodProxy {
        /// The namespace.
        namespace: String,
        /// `[SCHEME:]NAME[:PORT]`, split.
        target: NamePort,
        /// The path to request upstream, with its leading `/` (still percent-encoded).
        path: String,
    },
    /// `services/NAME[:PORT]/proxy/PATH`.
    ServiceProxy {
        /// The namespace.
        namespace: String,
        /// `[SCHEME:]NAME[:PORT]`, split.
        target: NamePort,
        /// The path to request upstream, with its leading `/` (still percent-encoded).
        path: String,
    },
    /// `pods/NAME/exec`.
    Exec {
        /// The namespace.
        namespace: String,
        /// The pod.
        pod: String,
    },
    /// `pods/NAME/portforward`.
    PortForward {
        /// The namespace.
        namespace: String,
        /// The pod.
        pod: String,
    },
}

/// The `[SCHEME:]NAME[:PORT]` segment of a proxy path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePort {
    /// `http` or `https` when given.
    pub scheme: Option<String>,
    /// The pod's or Service's name.
    pub name: String,
    /// The port (a number, or a Service port's name) when given.
    pub port: Option<String>,
}

impl NamePort {
    /// Splits `[SCHEME:]NAME[:PORT]` as kube-apiserver does.
    pub fn parse(segment: &str) -> NamePort {
        let parts: Vec<&str> = segment.split(':').collect();
        let (scheme, name, port) = match parts.as_slice() {
            [name] => (None, *name, None),
            [scheme @ ("http" | "https"), name, port] => (Some(*scheme), *name, Some(*port)),
            [name, port] => (None, *name, Some(*port)),
            _ => (None, segment, None),
        };
        NamePort {
            scheme: scheme.map(str::to_owned),
            name: name.to_owned(),
            port: port.filter(|p| !p.is_empty()).map(str::to_owned),
        }
    }
}

fn decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

/// The connect subresource a request path names, if any.
pub fn parse_path(path: &str) -> Option<ConnectTarget> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let mut parts = rest.splitn(5, '/');
    let namespace = decode(parts.next()?);
    let plural = parts.next()?;
    let name = decode(parts.next()?);
    let subresource = parts.next()?;
    let tail = parts.next();
    if namespace.is_empty() || name.is_empty() {
        return None;
    }
    let path = format!("/{}", tail.unwrap_or(""));
    match (plural, subresource) {
        ("pods", "proxy") => Some(ConnectTarget::PodProxy {
            namespace,
            target: NamePort::parse(&name),
            path,
        }),
        ("services", "proxy") => Some(ConnectTarget::ServiceProxy {
            namespace,
            target: NamePort::parse(&name),
            path,
        }),
        ("pods", "exec") if tail.is_none_or(str::is_empty) => Some(ConnectTarget::Exec {
            namespace,
            pod: name,
        }),
        ("pods", "portforward") if tail.is_none_or(str::is_empty) => {
            Some(ConnectTarget::PortForward {
                namespace,
                pod: name,
            })
        }
        _ => None,
    }
}

/// Serves the connect subresources; passes every other request on.
pub async fn intercept(
    State(cluster): State<Arc<Cluster>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(target) = parse_path(request.uri().path()) else {
        return next.run(request).await;
    };
    if let Some(user) = request.extensions().get::<crate::rbac::UserInfo>() {
        for attributes in authorization_requests(&target, request.method().as_str()) {
            if let Err(error) = crate::authz::check(&cluster, user, &attributes) {
                return status_response(&error);
            }
        }
    }
    match target {
        ConnectTarget::PodProxy {
            namespace,
            target,
            path,
        } => proxy::pod(&cluster, &namespace, &target, &path, request).await,
        ConnectTarget::ServiceProxy {
            namespace,
            target,
            path,
        } => proxy::service(&cluster, &namespace, &target, &path, request).await,
        ConnectTarget::Exec { namespace, pod } => exec::serve(&cluster, &namespace, &pod, request),
        ConnectTarget::PortForward { namespace, pod } => {
            portforward::serve(&cluster, &namespace, &pod, request)
        }
    }
}

/// The authorizer's attributes of a connect request, each of which must be allowed: the proxies
/// take the verb of the HTTP method (`get`, `create`, ...). `exec` and `portforward` take the
/// method's verb too (`get` for the WebSocket upgrade, a GET; `create` for SPDY's POST), and
/// also `create` whatever the method: kube-apiserver's compound authorization of the connect
/// subresources that run something in a pod (KEP-4006, feature gate
/// `AuthorizePodWebsocketUpgradeCreatePermission`, so `get` alone, as read-only roles grant it,
/// cannot exec), so a Role for `kubectl exec` grants `get` and `create` on `pods/exec`.
pub fn authorization_requests(target: &ConnectTarget, method: &str) -> Vec<crate::rbac::Request> {
    let by_method = crate::authz::resource_verb(method, true, false);
    let (resource, subresource, namespace, name, verbs) = match target {
        ConnectTarget::PodProxy {
            namespace, target, ..
        } => ("pods", "proxy", namespace, &target.name, vec![by_method]),
        ConnectTarget::ServiceProxy {
            namespace, target, ..
        } => (
            "services",
            "proxy",
            namespace,
            &target.name,
            vec![by_method],
        ),
        ConnectTarget::Exec { namespace, pod } => {
            ("pods", "exec", namespace, pod, vec![by_method, "create"])
        }
        ConnectTarget::PortForward { namespace, pod } => (
            "pods",
            "portforward",
            namespace,
            pod,
            vec![by_method, "create"],
        ),
    };
    let mut verbs = verbs;
    verbs.dedup();
    verbs
        .into_iter()
        .map(|verb| crate::rbac::Request::Resource {
            verb: verb.to_owned(),
            group: String::new(),
            resource: resource.to_owned(),
            subresource: Some(subresource.to_owned()),
            namespace: Some(namespace.clone()),
            name: Some(name.clone()),
        })
        .collect()
}

/// `503 ServiceUnavailable`, kube-apiserver's answer when a proxy cannot reach its target.
pub fn service_unavailable(message: impl Into<String>) -> ApiError {
    ApiError {
        code: 503,
        reason: "ServiceUnavailable".to_owned(),
        message: message.into(),
        causes: Vec::new(),
        details: Box::default(),
    }
}

/// An error as a `metav1.Status` response.
pub fn status_response(error: &ApiError) -> Response {
    let mut response = Response::new(Body::from(error.to_status().to_string()));
    *response.status_mut() =
        StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The stored pod `namespace/name`, typed.
pub fn read_pod(cluster: &Cluster, namespace: &str, name: &str) -> Result<Pod, ApiError> {
    let pods = cluster
        .resource_type("", "v1", "pods")
        .ok_or_else(|| ApiError::internal("pods are not registered"))?;
    let pod = cluster.get(&pods, namespace, name)?;
    serde_json::from_value(pod).map_err(|error| ApiError::internal(format!("pod {name}: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_paths_keep_the_rest_of_the_path_encoded() {
        assert_eq!(
            parse_path("/api/v1/namespaces/shop/pods/web-1:3000/proxy/health/ready"),
            Some(ConnectTarget::PodProxy {
                namespace: "shop".to_owned(),
                target: NamePort {
                    scheme: None,
                    name: "web-1".to_owned(),
                    port: Some("3000".to_owned()),
                },
                path: "/health/ready".to_owned(),
            })
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/shop/services/https:web:http/proxy/a%20b/c"),
            Some(ConnectTarget::ServiceProxy {
                namespace: "shop".to_owned(),
                target: NamePort {
                    scheme: Some("https".to_owned()),
                    name: "web".to_owned(),
                    port: Some("http".to_owned()),
                },
                path: "/a%20b/c".to_owned(),
            })
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/shop/services/web/proxy"),
            Some(ConnectTarget::ServiceProxy {
                namespace: "shop".to_owned(),
                target: NamePort::parse("web"),
                path: "/".to_owned(),
            })
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/shop/pods/db-1/portforward"),
            Some(ConnectTarget::PortForward {
                namespace: "shop".to_owned(),
                pod: "db-1".to_owned(),
            })
        );
        assert_eq!(
            parse_path("/api/v1/namespaces/shop/pods/web-1/exec"),
            Some(ConnectTarget::Exec {
                namespace: "shop".to_owned(),
                pod: "web-1".to_owned(),
            })
        );
    }

    #[test]
    fn exec_and_portforward_need_the_methods_verb_and_create() {
        let exec = ConnectTarget::Exec {
            namespace: "shop".to_owned(),
            pod: "web-1".to_owned(),
        };
        let verbs = |target: &ConnectTarget, method: &str| -> Vec<String> {
            authorization_requests(target, method)
                .into_iter()
                .map(|request| match request {
                    crate::rbac::Request::Resource { verb, .. } => verb,
                    crate::rbac::Request::NonResource { verb, .. } => verb,
                })
                .collect()
        };
        assert_eq!(verbs(&exec, "GET"), ["get", "create"]);
        assert_eq!(verbs(&exec, "POST"), ["create"]);
        let proxy = ConnectTarget::PodProxy {
            namespace: "shop".to_owned(),
            target: NamePort::parse("web-1"),
            path: "/".to_owned(),
        };
        assert_eq!(verbs(&proxy, "GET"), ["get"]);
    }

    #[test]
    fn other_paths_are_not_connect_requests() {
        for path in [
            "/api/v1/namespaces/shop/pods/web-1",
            "/api/v1/namespaces/shop/pods/web-1/log",
            "/api/v1/namespaces/shop/pods/web-1/portforward/extra",
            "/api/v1/namespaces/shop/pods/web-1/exec/extra",
            "/api/v1/namespaces/shop/deployments/web/proxy/x",
            "/apis/apps/v1/namespaces/shop/deployments/web",
            "/api/v1/pods",
        ] {
            assert_eq!(parse_path(path), None, "{path}");
        }
    }
}
