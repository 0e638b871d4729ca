//! Counting the operator's requests to the Kubernetes API by verb (`/metrics`:
//! `kumiko_operator_api_requests_total{verb}`), so reads and writes per app can be measured.

use std::sync::Arc;

use http::{Method, Request, Uri};
use kube::Client;
use kube::client::{Body, ClientBuilder};
use tower::util::MapRequestLayer;

use super::metrics::Metrics;
use crate::Error;

/// The Kubernetes verb of a request, as RBAC and audit logs name it.
pub fn verb(method: &Method, uri: &Uri) -> &'static str {
    let is_watch = uri.query().is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair == "watch=true" || pair == "watch=1")
    });
    let collection = is_collection(uri.path());
    match *method {
        Method::GET if is_watch => "watch",
        Method::GET if collection => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if collection => "deletecollection",
        Method::DELETE => "delete",
        _ => "other",
    }
}

/// Whether `path` names a collection (`…/deployments`) rather than one object or a subresource.
fn is_collection(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // Drop `/api/<version>` or `/apis/<group>/<version>`.
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..),
        Some(&"apis") => segments.get(3..),
        _ => None,
    };
    let Some(mut rest) = rest else { return false };
    // `namespaces/<ns>/<resource>…` is a namespaced resource; `namespaces[/<name>]` is itself one.
    if rest.first() == Some(&"namespaces") && rest.len() >= 3 {
        rest = &rest[2..];
    }
    rest.len() == 1
}

/// Whether `verb` only reads.
pub fn is_read(verb: &str) -> bool {
    matches!(verb, "get" | "list" | "watch")
}

/// A client for `config` whose every request is counted in `metrics`.
pub fn counted_client(config: kube::Config, metrics: Arc<Metrics>) -> Result<Client, Error> {
    let count = MapRequestLayer::new(move |request: Request<Body>| {
        metrics.api_request(verb(request.method(), request.uri()));
        request
    });
    Ok(ClientBuilder::try_from(config)
        .map_err(Error::Connect)?
        .with_layer(&count)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verb_of(method: Method, uri: &str) -> &'static str {
        verb(&method, &uri.parse().unwrap())
    }

    #[test]
    fn reads_are_told_apart_by_path_and_watch_parameter() {
        assert_eq!(
            verb_of(Method::GET, "/apis/apps/v1/namespaces/a/deployments/web"),
            "get"
        );
        assert_eq!(
            verb_of(
                Method::GET,
                "/apis/batch/v1/namespaces/a/jobs?labelSelector=x%3Dy"
            ),
            "list"
        );
        assert_eq!(
            verb_of(
                Method::GET,
                "/apis/kumiko.so/v1alpha1/kumikoapps?watch=true&resourceVersion=5"
            ),
            "watch"
        );
        assert_eq!(verb_of(Method::GET, "/api/v1/namespaces"), "list");
        assert_eq!(verb_of(Method::GET, "/api/v1/namespaces/a"), "get");
        assert_eq!(
            verb_of(
                Method::GET,
                "/api/v1/namespaces/a/pods/p-1/log?tailLines=20"
            ),
            "get"
        );
    }

    #[test]
    fn writes_are_named_by_method() {
        let secret = "/api/v1/namespaces/a/secrets/s";
        assert_eq!(
            verb_of(Method::POST, "/api/v1/namespaces/a/events"),
            "create"
        );
        assert_eq!(verb_of(Method::PUT, secret), "update");
        assert_eq!(verb_of(Method::PATCH, secret), "patch");
        assert_eq!(verb_of(Method::DELETE, secret), "delete");
        assert_eq!(
            verb_of(Method::DELETE, "/api/v1/namespaces/a/secrets"),
            "deletecollection"
        );
        assert!(is_read("watch") && !is_read("patch"));
    }
}
