//! The HTTP layer: routes Kubernetes API paths to the cluster, parses query parameters and
//! bodies, negotiates Tables, streams watches and logs, and answers errors as `metav1.Status`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_stream::wrappers::ReceiverStream;

use crate::cluster::{Cluster, ListOptions};
use crate::discovery;
use crate::faults::FaultRule;
use crate::meta;
use crate::registry::ResourceType;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::{ApiError, success_status};
use crate::table;
use crate::write::{DeleteOptions, Deleted, FieldValidation, PatchType, Propagation, WriteOptions};

/// Shared state of the HTTP handlers.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The cluster.
    pub cluster: Arc<Cluster>,
    /// `host:port` the server listens on (for `/api`'s serverAddressByClientCIDRs).
    pub address: String,
}

/// The router: authentication first, then the connect subresources (proxy, portforward), then
/// everything else.
pub fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        .fallback(handle)
        .layer(axum::middleware::from_fn(protobuf_responses))
        .layer(axum::middleware::from_fn_with_state(
            state.cluster.clone(),
            crate::connect::intercept,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.cluster.clone(),
            authenticate,
        ))
        .with_state(state)
}

/// Answers in protobuf whom asks for it first ("Kubernetes Protobuf encoding", API concepts):
/// client-go's typed clients (kubectl's, Helm's) send `Accept: application/vnd.kubernetes.protobuf,
/// application/json`, and kube-apiserver answers every built-in kind, list and Status in protobuf
/// then. Tables and metadata-only answers (`;as=...`), custom resources and discovery stay JSON,
/// as kube-apiserver answers them; watch streams are framed where they are made (`resource`).
async fn protobuf_responses(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let first_accepted = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .and_then(|accept| accept.split(',').next())
        .map(str::trim)
        .unwrap_or_default()
        .to_owned();
    let is_watch = request.uri().path().contains("/watch/")
        || request.uri().query().is_some_and(|query| {
            query
                .split('&')
                .any(|pair| pair == "watch=true" || pair == "watch=1")
        });
    let wants_protobuf = first_accepted.starts_with(crate::protobuf::CONTENT_TYPE)
        && !first_accepted.contains("as=")
        && !first_accepted.contains("stream=watch")
        && !is_watch;
    let response = next.run(request).await;
    if !wants_protobuf
        || response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_none_or(|value| value.as_bytes() != b"application/json")
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return error_response(&ApiError::internal(
            "kube-sim could not read its own answer",
        ));
    };
    let encoded = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|object| crate::protobuf::encode(&object));
    match encoded {
        Some(Ok(protobuf)) => {
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::protobuf::CONTENT_TYPE),
            );
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(protobuf))
        }
        Some(Err(error)) => error_response(&error),
        None => Response::from_parts(parts, Body::from(bytes)),
    }
}

/// Answers the resource metrics API (`metrics.k8s.io`, see [`crate::pod_metrics`]) when the path
/// is under it and a metrics source runs; `None` otherwise.
fn metrics_api(
    cluster: &Cluster,
    user: &crate::rbac::UserInfo,
    method: &Method,
    uri: &Uri,
) -> Option<Response> {
    if !cluster.pod_metrics().is_enabled() {
        return None;
    }
    let segments = decode_segments(uri.path());
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let route = crate::pod_metrics::MetricsRoute::parse(&segments)?;
    let request = match route.authorization() {
        Some((verb, resource, namespace, name)) => crate::rbac::Request::Resource {
            verb: verb.to_owned(),
            group: crate::pod_metrics::GROUP.to_owned(),
            resource: resource.to_owned(),
            subresource: None,
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
        },
        None => crate::authz::non_resource(method.as_str(), uri.path()),
    };
    if let Err(error) = crate::authz::check(cluster, user, &request) {
        return Some(error_response(&error));
    }
    if method != Method::GET {
        return Some(error_response(&ApiError::method_not_allowed(
            method.as_str(),
            crate::pod_metrics::GROUP,
            "pods",
        )));
    }
    let selector = uri.query().and_then(|query| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "labelSelector")
            .map(|(_, value)| value.into_owned())
    });
    Some(
        match crate::pod_metrics::answer(cluster, &route, selector.as_deref()) {
            Ok(body) => json_response(200, &body, &[]),
            Err(error) => error_response(&error),
        },
    )
}

/// Authenticates a request by its bearer token (see [`crate::authn`]): the user goes into the
/// request's extensions and the `Authorization` header is removed; no known token is 401.
async fn authenticate(
    State(cluster): State<Arc<Cluster>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let token = crate::authn::bearer(
        request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok()),
    );
    let user = cluster
        .authenticator()
        .authenticate(token, |namespace, name| {
            cluster.service_account_uid(namespace, name)
        });
    let Some(user) = user else {
        return error_response(&ApiError::unauthorized());
    };
    let as_user = request
        .headers()
        .get("impersonate-user")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let as_groups: Vec<String> = request
        .headers()
        .get_all("impersonate-group")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .map(str::to_owned)
        .collect();
    let user = match crate::authz::impersonate(&cluster, user, as_user.as_deref(), &as_groups) {
        Ok(user) => user,
        Err(error) => return error_response(&error),
    };
    let headers = request.headers_mut();
    headers.remove(header::AUTHORIZATION);
    headers.remove("impersonate-user");
    headers.remove("impersonate-group");
    request.extensions_mut().insert(user);
    next.run(request).await
}

/// The authorizer's attributes of a resource request, and whether it may create its object (a
/// server-side apply of an object that does not exist needs `create` too).
fn resource_request(
    cl: &Cluster,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    t: &Target,
) -> Vec<crate::rbac::Request> {
    let q = query_map(uri);
    let watch = t.legacy_watch || parse_bool(&q, "watch");
    let verb = crate::authz::resource_verb(method.as_str(), t.name.is_some(), watch);
    let request = |verb: &str| crate::rbac::Request::Resource {
        verb: verb.to_owned(),
        group: t.group.clone(),
        resource: t.plural.clone(),
        subresource: t.subresource.clone(),
        namespace: t.namespace.clone(),
        name: t.name.clone(),
    };
    let mut requests = vec![request(verb)];
    let is_apply = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/apply-patch"));
    if verb == "patch"
        && is_apply
        && t.subresource.is_none()
        && let (Some(rt), Some(name)) = (
            cl.resource_type(&t.group, &t.version, &t.plural),
            t.name.as_deref(),
        )
        && cl
            .get(&rt, t.namespace.as_deref().unwrap_or_default(), name)
            .is_err()
    {
        requests.push(request("create"));
    }
    requests
}

/// Whether `route` is an access review (`authorization.k8s.io/v1` self/subject access reviews),
/// and which kind.
fn access_review_kind(t: &Target) -> Option<&'static str> {
    match (t.group.as_str(), t.plural.as_str(), t.name.as_deref()) {
        ("authorization.k8s.io", "selfsubjectaccessreviews", None) => {
            Some("SelfSubjectAccessReview")
        }
        ("authorization.k8s.io", "subjectaccessreviews", None) => Some("SubjectAccessReview"),
        _ => None,
    }
}

fn json_response(code: u16, body: &Value, warnings: &[String]) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|error| {
        tracing::warn!(%error, "a response could not be encoded as JSON");
        Vec::new()
    });
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

fn error_response(err: &ApiError) -> Response {
    let mut resp = json_response(err.code, &err.to_status(), &[]);
    if let Some(secs) = err.details.retry_after_seconds
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

enum Route {
    Version,
    Api,
    Apis,
    Group(String),
    Resources(String, String),
    OpenApiRoot,
    OpenApiGv(String, String),
    OpenApiV2,
    Health,
    Faults(Option<String>),
    Resource(Target),
}

/// A resource request's target.
struct Target {
    group: String,
    version: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
    subresource: Option<String>,
    legacy_watch: bool,
}

fn decode_segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

fn route(cluster: &Cluster, path: &str) -> Option<Route> {
    let segs = decode_segments(path);
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["version"] => return Some(Route::Version),
        ["healthz" | "livez" | "readyz", ..] => return Some(Route::Health),
        ["api"] => return Some(Route::Api),
        ["apis"] => return Some(Route::Apis),
        ["apis", g] => return Some(Route::Group(g.to_string())),
        ["openapi", "v2"] => return Some(Route::OpenApiV2),
        ["openapi", "v3"] => return Some(Route::OpenApiRoot),
        ["openapi", "v3", "api", v] => return Some(Route::OpenApiGv(String::new(), v.to_string())),
        ["openapi", "v3", "apis", g, v] => {
            return Some(Route::OpenApiGv(g.to_string(), v.to_string()));
        }
        ["sim", "faults"] => return Some(Route::Faults(None)),
        ["sim", "faults", id] => return Some(Route::Faults(Some(id.to_string()))),
        _ => {}
    }
    let (group, version, rest) = match s.as_slice() {
        ["api", v, rest @ ..] => (String::new(), v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (g.to_string(), v.to_string(), rest),
        _ => return None,
    };
    let (legacy_watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    if rest.is_empty() {
        return if legacy_watch {
            None
        } else {
            Some(Route::Resources(group, version))
        };
    }
    let registry_has = |plural: &str| cluster.resource_type(&group, &version, plural).is_some();
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..] if registry_has(plural) => {
            (Some(ns.to_string()), [&[*plural][..], tail].concat())
        }
        other => (None, other.to_vec()),
    };
    let target = |plural: &str, name: Option<&str>, sub: Option<&str>| Target {
        group: group.clone(),
        version: version.clone(),
        namespace: namespace.clone(),
        plural: plural.to_string(),
        name: name.map(str::to_string),
        subresource: sub.map(str::to_string),
        legacy_watch,
    };
    match rest.as_slice() {
        [plural] => Some(Route::Resource(target(plural, None, None))),
        [plural, name] => Some(Route::Resource(target(plural, Some(name), None))),
        [plural, name, sub] => Some(Route::Resource(target(plural, Some(name), Some(sub)))),
        _ => None,
    }
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

fn parse_bool(q: &HashMap<String, String>, key: &str) -> bool {
    matches!(q.get(key).map(String::as_str), Some("true" | "1"))
}

fn list_options(q: &HashMap<String, String>, rt: &ResourceType) -> Result<ListOptions, ApiError> {
    let label_selector = match q.get("labelSelector") {
        Some(s) => LabelSelector::parse(s)?,
        None => LabelSelector::default(),
    };
    let mut field_selector = match q.get("fieldSelector") {
        Some(s) => FieldSelector::parse(s, &rt.kind, rt.namespaced)?,
        None => FieldSelector::default(),
    };
    if rt.group == "events.k8s.io" {
        for t in &mut field_selector.terms {
            t.field = crate::events::core_field(&t.field);
        }
    }
    let limit = match q.get("limit") {
        Some(l) => l
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit: {l}")))?
            .max(0) as usize,
        None => 0,
    };
    let send_initial_events = match q.get("sendInitialEvents").map(String::as_str) {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    };
    Ok(ListOptions {
        label_selector,
        field_selector,
        limit,
        continue_token: q.get("continue").filter(|c| !c.is_empty()).cloned(),
        resource_version: q.get("resourceVersion").cloned(),
        resource_version_match: q.get("resourceVersionMatch").cloned(),
        allow_bookmarks: parse_bool(q, "allowWatchBookmarks"),
        send_initial_events,
        timeout_seconds: q.get("timeoutSeconds").and_then(|t| t.parse().ok()),
    })
}

fn dry_run(q: &HashMap<String, String>) -> Result<bool, ApiError> {
    match q.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "dryRun: Unsupported value: {other:?}: supported values: \"All\""
        ))),
    }
}

fn write_options(
    q: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<WriteOptions, ApiError> {
    let explicit = q.get("fieldManager").filter(|m| !m.is_empty()).cloned();
    let manager = explicit.clone().unwrap_or_else(|| {
        let ua = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown");
        let mut m = ua.split('/').next().unwrap_or("unknown").to_string();
        m.truncate(128);
        m
    });
    if manager.len() > 128 {
        return Err(ApiError::bad_request(
            "fieldManager: Too long: may not be more than 128 bytes",
        ));
    }
    Ok(WriteOptions {
        dry_run: dry_run(q)?,
        manager,
        manager_explicit: explicit.is_some(),
        field_validation: FieldValidation::parse(
            q.get("fieldValidation").map_or("", String::as_str),
        )?,
        force: parse_bool(q, "force"),
    })
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return Ok(v);
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the request body is not UTF-8"))?;
    serde_saphyr::from_str::<Value>(text).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml: {e}"
        ))
    })
}

fn delete_options(q: &HashMap<String, String>, body: &Bytes) -> Result<DeleteOptions, ApiError> {
    let b: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    let mut propagation = match b
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .or(q.get("propagationPolicy").map(String::as_str))
    {
        Some(p) if !p.is_empty() => Some(Propagation::parse(p)?),
        _ => None,
    };
    let orphan = b
        .get("orphanDependents")
        .and_then(Value::as_bool)
        .or_else(|| q.get("orphanDependents").map(|v| v == "true"));
    if let Some(o) = orphan {
        if propagation.is_some() {
            return Err(ApiError::bad_request(
                "orphanDependents and propagationPolicy cannot both be set",
            ));
        }
        propagation = Some(if o {
            Propagation::Orphan
        } else {
            Propagation::Background
        });
    }
    let dry = b
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|v| v == "All"))
        || dry_run(q)?;
    Ok(DeleteOptions {
        propagation,
        grace_period_seconds: b
            .get("gracePeriodSeconds")
            .and_then(Value::as_i64)
            .or_else(|| q.get("gracePeriodSeconds").and_then(|g| g.parse().ok())),
        precondition_uid: b
            .get("preconditions")
            .and_then(|p| p.get("uid"))
            .and_then(Value::as_str)
            .map(str::to_string),
        precondition_rv: b
            .get("preconditions")
            .and_then(|p| p.get("resourceVersion"))
            .and_then(Value::as_str)
            .map(str::to_string),
        dry_run: dry,
    })
}

/// Whether the client's first choice in `Accept` names `media_type_parameter` (`as=Table`, ...).
fn first_accepted_has(headers: &HeaderMap, media_type_parameter: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .next()
                .is_some_and(|first| first.contains(media_type_parameter))
        })
}

fn wants_table(headers: &HeaderMap) -> bool {
    first_accepted_has(headers, "as=Table")
}

/// Whether the client asked for metadata only (`as=PartialObjectMetadata` for objects and watch
/// events, `as=PartialObjectMetadataList` for lists), as its first choice.
fn wants_metadata(headers: &HeaderMap) -> bool {
    first_accepted_has(headers, "as=PartialObjectMetadata")
}

/// An object as `meta.k8s.io/v1` `PartialObjectMetadata`: its metadata, nothing else.
fn partial_object_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

fn verb_of(method: &Method, t: &Target, q: &HashMap<String, String>) -> &'static str {
    match (method.as_str(), t.name.is_some()) {
        ("GET", false) if t.legacy_watch || parse_bool(q, "watch") => "watch",
        ("GET", false) => "list",
        ("GET", true) if t.legacy_watch => "watch",
        ("GET", true) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", false) => "deletecollection",
        ("DELETE", true) => "delete",
        _ => "unknown",
    }
}

async fn handle(
    State(app): State<AppState>,
    axum::Extension(user): axum::Extension<crate::rbac::UserInfo>,
    method: Method,
    uri: Uri,
    mut headers: HeaderMap,
    mut body: Bytes,
) -> Response {
    let cl = &app.cluster;
    let protobuf = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with(crate::protobuf::CONTENT_TYPE));
    if protobuf && !body.is_empty() {
        match crate::protobuf::decode(&body) {
            Ok(object) => {
                body = Bytes::from(object.to_string());
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
            Err(error) => return error_response(&error),
        }
    }
    if let Some(response) = metrics_api(cl, &user, &method, &uri) {
        return response;
    }
    let Some(route) = route(cl, uri.path()) else {
        let request = crate::authz::non_resource(method.as_str(), uri.path());
        if let Err(error) = crate::authz::check(cl, &user, &request) {
            return error_response(&error);
        }
        return error_response(&ApiError::path_not_found(uri.path()));
    };
    let requests = match &route {
        Route::Resource(t) => resource_request(cl, &method, &uri, &headers, t),
        _ => vec![crate::authz::non_resource(method.as_str(), uri.path())],
    };
    if let Some(
        crate::rbac::Request::Resource { verb, .. }
        | crate::rbac::Request::NonResource { verb, .. },
    ) = requests.first()
    {
        cl.count_request(&user.name, verb);
    }
    for request in &requests {
        if let Err(error) = crate::authz::check(cl, &user, request) {
            return error_response(&error);
        }
    }
    if let Route::Resource(t) = &route
        && let Some(kind) = access_review_kind(t)
    {
        if method != Method::POST {
            return error_response(&ApiError::method_not_allowed(
                method.as_str(),
                &t.group,
                &t.plural,
            ));
        }
        let review: Value = match serde_json::from_slice(&body) {
            Ok(review) => review,
            Err(error) => return error_response(&ApiError::bad_request(error.to_string())),
        };
        return match crate::authz::access_review(cl, &user, kind, &review) {
            Ok(answer) => json_response(201, &answer, &[]),
            Err(error) => error_response(&error),
        };
    }
    let get_only = |v: Value| {
        if method == Method::GET {
            json_response(200, &v, &[])
        } else {
            error_response(&ApiError::method_not_allowed(method.as_str(), "", ""))
        }
    };
    match route {
        Route::Version => get_only(discovery::version()),
        Route::Health => {
            let mut r = Response::new(Body::from("ok"));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            r
        }
        Route::Api => get_only(discovery::core_versions(&app.address)),
        Route::Apis => {
            let mut groups = discovery::group_list(&cl.registry());
            if cl.pod_metrics().is_enabled()
                && let Some(list) = groups.get_mut("groups").and_then(Value::as_array_mut)
            {
                list.push(crate::pod_metrics::group_entry());
            }
            get_only(groups)
        }
        Route::Group(g) => match discovery::group(&cl.registry(), &g) {
            Some(v) => get_only(v),
            None => error_response(&ApiError::path_not_found(uri.path())),
        },
        Route::Resources(g, v) => match discovery::resource_list(&cl.registry(), &g, &v) {
            Some(doc) => get_only(doc),
            None => error_response(&ApiError::path_not_found(uri.path())),
        },
        Route::OpenApiRoot => get_only(discovery::openapi_root(&cl.registry())),
        Route::OpenApiV2 => {
            let doc = discovery::openapi_v2(&cl.registry());
            let wants_protobuf = headers
                .get(header::ACCEPT)
                .and_then(|accept| accept.to_str().ok())
                .is_some_and(|accept| {
                    accept.contains("application/com.github.proto-openapi.spec.v2")
                });
            if method != Method::GET {
                error_response(&ApiError::method_not_allowed(method.as_str(), "", ""))
            } else if wants_protobuf {
                match crate::protobuf::encode_openapi_v2(&doc) {
                    Ok(bytes) => {
                        let mut response = Response::new(Body::from(bytes));
                        response.headers_mut().insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static(crate::protobuf::OPENAPI_V2_CONTENT_TYPE),
                        );
                        response
                    }
                    Err(error) => error_response(&error),
                }
            } else {
                get_only(doc)
            }
        }
        Route::OpenApiGv(g, v) => match discovery::openapi_gv(&cl.registry(), &g, &v) {
            Some(doc) => get_only(doc),
            None => error_response(&ApiError::path_not_found(uri.path())),
        },
        Route::Faults(id) => faults(cl, &method, id.as_deref(), &body),
        Route::Resource(t) => match resource(cl, &method, &uri, &headers, &body, t).await {
            Ok(r) => r,
            Err(e) => error_response(&e),
        },
    }
}

fn faults(cl: &Cluster, method: &Method, id: Option<&str>, body: &Bytes) -> Response {
    let f = cl.faults();
    match (method.as_str(), id) {
        ("GET", None) => {
            let rules: Vec<Value> = f
                .list()
                .into_iter()
                .map(|(id, r)| json!({"id": id, "rule": r}))
                .collect();
            json_response(200, &json!({"rules": rules}), &[])
        }
        ("POST", Some("cut-watches")) => {
            f.cut_watches();
            json_response(200, &json!({"cut": true}), &[])
        }
        ("POST", None) => match serde_json::from_slice::<FaultRule>(body) {
            Ok(rule) => json_response(201, &json!({"id": f.add(rule)}), &[]),
            Err(e) => error_response(&ApiError::bad_request(format!("invalid fault rule: {e}"))),
        },
        ("DELETE", None) => {
            f.clear();
            json_response(200, &json!({"cleared": true}), &[])
        }
        ("DELETE", Some(id)) => match id.parse::<u64>() {
            Ok(n) if f.remove(n) => json_response(200, &json!({"removed": n}), &[]),
            _ => error_response(&ApiError::path_not_found(id)),
        },
        _ => error_response(&ApiError::method_not_allowed(method.as_str(), "", "")),
    }
}

async fn resource(
    cl: &Arc<Cluster>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    t: Target,
) -> Result<Response, ApiError> {
    let rt = cl
        .resource_type(&t.group, &t.version, &t.plural)
        .ok_or_else(|| ApiError::path_not_found(uri.path()))?;
    if rt.namespaced && t.namespace.is_none() && t.name.is_some() {
        return Err(ApiError::path_not_found(uri.path()));
    }
    if !rt.namespaced && t.namespace.is_some() {
        return Err(ApiError::path_not_found(uri.path()));
    }
    let q = query_map(uri);
    let verb = verb_of(method, &t, &q);
    let fault = cl.faults().take(
        verb,
        &rt.group,
        &rt.plural,
        t.subresource.as_deref(),
        t.namespace.as_deref(),
    );
    if !fault.latency.is_zero() {
        tokio::time::sleep(fault.latency).await;
    }
    if let Some(e) = fault.error {
        return Err(e);
    }
    let ns = t.namespace.clone().unwrap_or_default();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !body.is_empty()
        && (content_type.starts_with("application/vnd.kubernetes.protobuf")
            || content_type.starts_with("application/cbor"))
    {
        // Only JSON (and YAML) bodies are understood; clients fall back to JSON on 415.
        return Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {content_type:?})"
        )));
    }
    let table = wants_table(headers);
    let metadata_only = !table && wants_metadata(headers);
    let include_object = q
        .get("includeObject")
        .cloned()
        .unwrap_or_else(|| "Metadata".into());
    match (verb, t.subresource.as_deref()) {
        ("list", None) => {
            let opts = list_options(&q, &rt)?;
            let list = cl.list(&rt, t.namespace.as_deref(), &opts)?;
            if table {
                let items = list["items"].as_array().cloned().unwrap_or_default();
                let items: Vec<Value> = items
                    .iter()
                    .map(|i| crate::cluster::render(&rt, i))
                    .collect();
                return Ok(json_response(
                    200,
                    &table::table(&rt, &items, list["metadata"].clone(), &include_object, true),
                    &[],
                ));
            }
            if metadata_only {
                let items: Vec<Value> = list["items"]
                    .as_array()
                    .map(|items| items.iter().map(partial_object_metadata).collect())
                    .unwrap_or_default();
                return Ok(json_response(
                    200,
                    &json!({
                        "kind": "PartialObjectMetadataList",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": list["metadata"].clone(),
                        "items": items,
                    }),
                    &[],
                ));
            }
            Ok(json_response(200, &list, &[]))
        }
        ("watch", None) => {
            let mut opts = list_options(&q, &rt)?;
            if let Some(name) = &t.name {
                opts.field_selector.terms.push(crate::selectors::FieldTerm {
                    field: "metadata.name".into(),
                    negated: false,
                    value: name.clone(),
                });
            }
            let rx = crate::watch::start(
                cl,
                &rt,
                t.namespace.as_deref(),
                &opts,
                fault.cut_watch_after,
            )?;
            let rt2 = rt.clone();
            let mut first = true;
            // A client whose first choice is protobuf gets a protobuf watch stream of the kinds
            // that have a message (kube-apiserver answers custom resources in JSON).
            let protobuf_watch = !table
                && !metadata_only
                && headers
                    .get(header::ACCEPT)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|accept| accept.split(',').next())
                    .is_some_and(|first| {
                        first.trim().starts_with(crate::protobuf::CONTENT_TYPE)
                            && !first.contains("as=")
                    })
                && crate::protobuf::can_encode(&rt.api_version(), &rt.kind);
            if protobuf_watch {
                let api_version = rt.api_version();
                let stream = ReceiverStream::new(rx).map(move |ev| {
                    let frame = crate::protobuf::encode_watch_event(&ev, &api_version)
                        .unwrap_or_else(|error| {
                            tracing::warn!(%error, "a watch event could not be encoded as protobuf");
                            Vec::new()
                        });
                    Ok::<Bytes, Infallible>(Bytes::from(frame))
                });
                let mut resp = Response::new(Body::from_stream(stream));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(crate::protobuf::WATCH_CONTENT_TYPE),
                );
                return Ok(resp);
            }
            let stream = ReceiverStream::new(rx).map(move |ev| {
                let ev = if table && ev["type"] != "ERROR" && ev["type"] != "BOOKMARK" {
                    let obj = ev["object"].clone();
                    let tbl = table::table(&rt2, &[obj], json!({}), &include_object, first);
                    first = false;
                    json!({"type": ev["type"], "object": tbl})
                } else if metadata_only && ev["type"] != "ERROR" && ev["type"] != "BOOKMARK" {
                    json!({"type": ev["type"], "object": partial_object_metadata(&ev["object"])})
                } else {
                    ev
                };
                // Written straight to bytes (not through `Display`, which formats piecewise).
                let mut frame = serde_json::to_vec(&ev).unwrap_or_else(|error| {
                    tracing::warn!(%error, "a watch event could not be encoded as JSON");
                    Vec::new()
                });
                frame.push(b'\n');
                Ok::<Bytes, Infallible>(Bytes::from(frame))
            });
            let mut resp = Response::new(Body::from_stream(stream));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(resp)
        }
        ("get", None) => {
            let name = t.name.as_deref().unwrap_or_default();
            let obj = cl.get(&rt, &ns, name)?;
            if table {
                let rv = meta::meta_str(&obj, "resourceVersion")
                    .unwrap_or_default()
                    .to_string();
                return Ok(json_response(
                    200,
                    &table::table(
                        &rt,
                        &[obj],
                        json!({"resourceVersion": rv}),
                        &include_object,
                        true,
                    ),
                    &[],
                ));
            }
            if metadata_only {
                return Ok(json_response(200, &partial_object_metadata(&obj), &[]));
            }
            Ok(json_response(200, &obj, &[]))
        }
        ("get", Some("status")) if rt.status_subresource => {
            let obj = cl.get(&rt, &ns, t.name.as_deref().unwrap_or_default())?;
            Ok(json_response(200, &obj, &[]))
        }
        ("get", Some("scale")) => {
            let paths = crate::scale::scale_paths(&rt)
                .ok_or_else(|| ApiError::path_not_found(uri.path()))?;
            let obj = cl.get(&rt, &ns, t.name.as_deref().unwrap_or_default())?;
            Ok(json_response(
                200,
                &crate::scale::to_scale(&paths, &obj),
                &[],
            ))
        }
        ("update" | "patch", Some("scale")) => {
            let paths = crate::scale::scale_paths(&rt)
                .ok_or_else(|| ApiError::path_not_found(uri.path()))?;
            let opts = write_options(&q, headers)?;
            let name = t.name.as_deref().unwrap_or_default();
            let patch_type = if verb == "patch" {
                let ct = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                match PatchType::from_content_type(ct) {
                    // A Scale has no list, so a strategic merge patch is a merge patch.
                    Some(PatchType::Merge | PatchType::Strategic) => Some(ScaleWrite::Merge),
                    Some(PatchType::Json) => Some(ScaleWrite::Json),
                    Some(PatchType::Apply) | None => {
                        return Err(ApiError::unsupported_media_type(format!(
                            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {ct:?})"
                        )));
                    }
                }
            } else {
                None
            };
            // An unconditional write retries on a conflict, as kube-apiserver's
            // GuaranteedUpdate does; a Scale with a resourceVersion is a precondition.
            let mut attempts = 0;
            loop {
                attempts += 1;
                let obj = cl.get(&rt, &ns, name)?;
                let current = crate::scale::to_scale(&paths, &obj);
                let scale = match patch_type {
                    None => parse_body(body)?,
                    Some(ScaleWrite::Merge) => {
                        crate::patch::merge_patch(&current, &parse_body(body)?)
                    }
                    Some(ScaleWrite::Json) => {
                        crate::patch::json_patch(&current, &parse_body(body)?)?
                    }
                };
                let conditional = scale
                    .get("metadata")
                    .and_then(|m| m.get("resourceVersion"))
                    .and_then(Value::as_str)
                    .is_some_and(|rv| !rv.is_empty() && patch_type.is_none());
                let updated = crate::scale::apply_scale(&rt, &paths, &obj, &scale)?;
                match cl.update(&rt, &ns, name, updated, Some("scale"), &opts) {
                    Ok(w) => {
                        return Ok(json_response(
                            200,
                            &crate::scale::to_scale(&paths, &w.object),
                            &w.warnings,
                        ));
                    }
                    Err(error) if error.code == 409 && !conditional && attempts < 5 => continue,
                    Err(error) => return Err(error),
                }
            }
        }
        ("get", Some("log")) if rt.group.is_empty() && rt.kind == "Pod" => {
            pod_log(cl, &rt, &ns, t.name.as_deref().unwrap_or_default(), &q).await
        }
        ("create", None) => {
            let opts = write_options(&q, headers)?;
            let w = cl.create(&rt, &ns, parse_body(body)?, &opts)?;
            Ok(json_response(
                if w.created { 201 } else { 200 },
                &w.object,
                &w.warnings,
            ))
        }
        ("create", Some("eviction")) if rt.group.is_empty() && rt.kind == "Pod" => {
            let name = t.name.as_deref().unwrap_or_default();
            let ev = parse_body(body)?;
            let del = DeleteOptions {
                grace_period_seconds: ev
                    .get("deleteOptions")
                    .and_then(|d| d.get("gracePeriodSeconds"))
                    .and_then(Value::as_i64),
                dry_run: dry_run(&q)?,
                ..Default::default()
            };
            cl.delete(&rt, &ns, name, &del)?;
            Ok(json_response(
                201,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                &[],
            ))
        }
        ("update", sub @ (None | Some("status") | Some("finalize"))) => {
            if sub == Some("finalize") && !(rt.group.is_empty() && rt.kind == "Namespace") {
                return Err(ApiError::path_not_found(uri.path()));
            }
            let opts = write_options(&q, headers)?;
            let w = cl.update(
                &rt,
                &ns,
                t.name.as_deref().unwrap_or_default(),
                parse_body(body)?,
                sub,
                &opts,
            )?;
            Ok(json_response(200, &w.object, &w.warnings))
        }
        ("patch", sub @ (None | Some("status"))) => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let pt = PatchType::from_content_type(ct).ok_or_else(|| {
                ApiError::unsupported_media_type(format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?})"
                ))
            })?;
            let opts = write_options(&q, headers)?;
            let w = cl.patch(
                &rt,
                &ns,
                t.name.as_deref().unwrap_or_default(),
                pt,
                body,
                sub,
                &opts,
            )?;
            Ok(json_response(
                if w.created { 201 } else { 200 },
                &w.object,
                &w.warnings,
            ))
        }
        ("delete", None) => {
            let name = t.name.as_deref().unwrap_or_default();
            let opts = delete_options(&q, body)?;
            match cl.delete(&rt, &ns, name, &opts)? {
                Deleted::Gone(obj) => {
                    if rt.group.is_empty() && rt.kind == "Pod" {
                        Ok(json_response(200, &obj, &[]))
                    } else {
                        let status = success_status(&rt.group, &rt.plural, name, meta::uid(&obj));
                        Ok(json_response(200, &status, &[]))
                    }
                }
                Deleted::Pending(obj) => Ok(json_response(200, &obj, &[])),
            }
        }
        ("deletecollection", None) => {
            let list_opts = list_options(&q, &rt)?;
            let opts = delete_options(&q, body)?;
            let list = cl.delete_collection(&rt, t.namespace.as_deref(), &list_opts, &opts)?;
            Ok(json_response(200, &list, &[]))
        }
        (verb, _) => Err(ApiError::method_not_allowed(verb, &rt.group, &rt.plural)),
    }
}

/// How a PATCH of the scale subresource changes the current Scale.
#[derive(Clone, Copy)]
enum ScaleWrite {
    /// A merge patch (or a strategic one: a Scale has no list).
    Merge,
    /// A JSON patch.
    Json,
}

async fn pod_log(
    cl: &Arc<Cluster>,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let pod = cl.get(rt, ns, name)?;
    let names: Vec<String> = ["containers", "initContainers"]
        .iter()
        .flat_map(|l| {
            pod.get("spec")
                .and_then(|s| s.get(*l))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
        .collect();
    let main: Vec<String> = pod
        .get("spec")
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let container = match q.get("container").filter(|c| !c.is_empty()) {
        Some(c) if names.contains(c) => c.clone(),
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        None if main.len() == 1 => main[0].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                main.join(" ")
            )));
        }
    };
    if parse_bool(q, "previous") {
        return Err(ApiError::bad_request(format!(
            "previous terminated container \"{container}\" in pod \"{name}\" not found"
        )));
    }
    let Some(log) = cl.pod_logs().read(ns, name, &container) else {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
        )));
    };
    let mut out: Vec<u8> = match q.get("tailLines").and_then(|t| t.parse::<usize>().ok()) {
        Some(n) => crate::logs::tail_lines(&log, n).to_vec(),
        None => log.clone(),
    };
    let limit = q.get("limitBytes").and_then(|l| l.parse::<usize>().ok());
    if let Some(l) = limit {
        out.truncate(l);
    }
    let text_response = |body: Body| {
        let mut r = Response::new(body);
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        r
    };
    if !parse_bool(q, "follow") {
        return Ok(text_response(Body::from(out)));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let logs_cl = Arc::downgrade(cl);
    let (ns, name) = (ns.to_string(), name.to_string());
    let mut offset = log.len();
    tokio::spawn(async move {
        if tx.send(Bytes::from(out)).await.is_err() {
            return;
        }
        let mut changed = match logs_cl.upgrade() {
            Some(cl) => cl.pod_logs().subscribe(),
            None => return,
        };
        loop {
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = tx.closed() => return,
            }
            let Some(cl) = logs_cl.upgrade() else { return };
            match cl.pod_logs().read(&ns, &name, &container) {
                Some(l) if l.len() > offset => {
                    let chunk = Bytes::copy_from_slice(&l[offset..]);
                    offset = l.len();
                    if tx.send(chunk).await.is_err() {
                        return;
                    }
                }
                Some(_) => {}
                None => return,
            }
        }
    });
    let stream = ReceiverStream::new(rx).map(Ok::<Bytes, Infallible>);
    Ok(text_response(Body::from_stream(stream)).into_response())
}
