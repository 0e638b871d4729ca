//! A simulated Gateway API implementation: the controller of the GatewayClass `kube-sim`
//! (`controllerName` [`CONTROLLER_NAME`]) for `gateway.networking.k8s.io/v1` GatewayClasses,
//! Gateways and HTTPRoutes, and a loopback HTTP listener per Gateway listener port that routes
//! by `Host` header and path to the ready endpoints of the backend Services.
//!
//! The API is served only when installed (`kube-sim --gateway-api`, [`crate::Config`]'s
//! `preload_gateway_api`), which also creates the GatewayClass `kube-sim` ([`gateway_class`]);
//! without it the watches here answer 404 and retry, as a controller waiting for its CRDs does.
//!
//! The rules, from the standard channel of kubernetes-sigs/gateway-api (`apis/v1/*_types.go`, the
//! doc comments of the fields and condition types cited):
//! - **GatewayClass** (`gatewayclass_types.go`): a class whose `spec.controllerName` is ours gets
//!   `Accepted` True (reason `Accepted`) for its generation; any other class is left alone.
//! - **Gateway** (`gateway_types.go`): a Gateway of a class of ours gets `status.addresses`
//!   (`IPAddress` `127.0.0.1`), `Accepted` (True, or False `ListenersNotValid` when no listener is
//!   valid) and `Programmed` (True once every valid listener has its loopback socket, else False
//!   `Pending`), and one `status.listeners[]` entry per listener with `supportedKinds`,
//!   `attachedRoutes` (the routes accepted on it, whatever their `ResolvedRefs`) and the
//!   `Accepted`, `Programmed` and `ResolvedRefs` conditions. Only `HTTP` listeners are supported:
//!   any other protocol is `Accepted` False `UnsupportedProtocol` (this implementation terminates
//!   no TLS, as the simulated ingress does not).
//! - **HTTPRoute attachment** (`shared_types.go` `ParentReference`, `RouteConditionReason`;
//!   `httproute_types.go` `Hostnames`): for each `parentRef` naming a Gateway of ours (group
//!   `gateway.networking.k8s.io`, kind `Gateway`, the route's namespace when unset), one
//!   `status.parents[]` entry with our `controllerName`. The listeners considered are those the
//!   `sectionName` and `port` name (all when unset; none: `Accepted` False `NoMatchingParent`);
//!   of those, the supported ones whose `allowedRoutes` admit the route (`namespaces.from`: `Same`
//!   the Gateway's namespace, `All` any; `kinds`, when set, must name `HTTPRoute`; none:
//!   `NotAllowedByListeners`); of those, the ones whose hostname intersects the route's
//!   (`NoMatchingListenerHostname` when none does). A `RegularExpression` path match is
//!   `Accepted` False `UnsupportedValue` (its support is implementation-specific).
//! - **ResolvedRefs** (`RouteReason*`): every `backendRef` must be a core `Service` (else
//!   `InvalidKind`) in the route's namespace (else `RefNotPermitted`: ReferenceGrant is not
//!   served, so no cross-namespace reference is ever permitted) that exists with the named port
//!   (else `BackendNotFound`). Each condition carries the route's `observedGeneration`; its
//!   `lastTransitionTime` changes only when its status does (`meta.SetStatusCondition`).
//! - **Hostnames**: a `*.` label is a suffix match (`*.example.com` matches `a.example.com` and
//!   `a.b.example.com`, not `example.com`); a listener and a route intersect when either has no
//!   hostname, or some pair matches one way or the other. The `Host` header's port is ignored.
//! - **Routing**: a connection to a listener port goes to the most specific listener matching
//!   the host (exact, then the longest wildcard, then none); among the routes accepted there the
//!   request's hostname precedence decides (most characters of a matching non-wildcard hostname,
//!   then of a matching hostname), then the match (`Exact` before `PathPrefix`, then the longest
//!   path, `PathPrefix` matching whole `/`-separated segments as the Ingress `Prefix` does), then
//!   the oldest route, then `namespace/name`, then rule order (`HTTPRouteRule` precedence). The
//!   backends are the rule's `backendRefs` of non-zero weight that resolve (weights otherwise
//!   ignored: endpoints are taken in turn); their endpoints as
//!   [`super::service_proxy::endpoints`] selects them (Running, Ready, not terminating). No
//!   listener or route: 404; a rule whose backends do not resolve: 500 (as `BackendRef` requires);
//!   no ready endpoint: 503.
//!
//! What a client needs to reach a listener: the Gateway's `status.addresses` (`127.0.0.1`) and the
//! loopback port, published as the Gateway's annotation
//! `kube-sim.kumiko.so/listener-port-<spec port>` ([`LISTENER_PORT_ANNOTATION_PREFIX`]): the
//! listener's `port` (80) cannot be bound on a shared machine.
//!
//! Not implemented (differences from a real implementation): `allowedRoutes.namespaces.from:
//! Selector` admits no route; ReferenceGrant, header/query/method matches, filters, timeouts and
//! retries are not served (the CRDs do not declare them, so they are pruned or rejected under
//! `fieldValidation=Strict`); Gateway `spec.addresses`, HTTPS/TLS listeners, and the route is
//! chosen once per connection from the first request (as in [`super::ingress`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::FIELD_MANAGER;
use super::ingress::{Backend, parse_head, path_matches, respond, target};
use super::service_proxy::endpoints;

/// The Gateway API group.
pub const GROUP: &str = "gateway.networking.k8s.io";
/// The `controllerName` of kube-sim's gateway controller.
pub const CONTROLLER_NAME: &str = "kube-sim.kumiko.so/gateway-controller";
/// The GatewayClass kube-sim installs with the Gateway API ([`gateway_class`]).
pub const GATEWAY_CLASS: &str = "kube-sim";
/// Prefix of the Gateway annotations that publish each listener port's loopback port:
/// `kube-sim.kumiko.so/listener-port-<spec port>` = the loopback port.
pub const LISTENER_PORT_ANNOTATION_PREFIX: &str = "kube-sim.kumiko.so/listener-port-";
/// The address every Gateway gets.
pub const ADDRESS: &str = "127.0.0.1";

/// The longest request head read before routing.
const MAX_HEAD: usize = 16 * 1024;

/// The GatewayClass `kube-sim`, managed by this controller.
pub fn gateway_class() -> Value {
    json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": "GatewayClass",
        "metadata": {"name": GATEWAY_CLASS},
        "spec": {
            "controllerName": CONTROLLER_NAME,
            "description": "kube-sim's simulated gateway (HTTP listeners on loopback ports)"
        }
    })
}

/// The API resource of a Gateway API kind.
pub fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, "v1", kind), plural)
}

/// The part of a GatewayClass spec read here.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClassSpec {
    #[serde(default)]
    controller_name: String,
}

/// The part of a Gateway spec read here.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// The GatewayClass.
    #[serde(default)]
    pub gateway_class_name: String,
    /// The listeners.
    #[serde(default)]
    pub listeners: Vec<Listener>,
}

/// A Gateway listener.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    /// Its name.
    pub name: String,
    /// The host name it matches; every host when unset.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Its port.
    pub port: i32,
    /// Its protocol.
    pub protocol: String,
    /// Which routes may attach.
    #[serde(default)]
    pub allowed_routes: Option<AllowedRoutes>,
}

/// A listener's `allowedRoutes`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AllowedRoutes {
    /// The namespaces routes may attach from.
    #[serde(default)]
    pub namespaces: Option<RouteNamespaces>,
    /// The route kinds allowed; the protocol's when empty.
    #[serde(default)]
    pub kinds: Vec<RouteGroupKind>,
}

/// `allowedRoutes.namespaces`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteNamespaces {
    /// `All`, `Selector` or `Same` (the default).
    #[serde(default)]
    pub from: Option<String>,
}

/// A route kind.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteGroupKind {
    /// Its group; the Gateway API's when unset.
    #[serde(default)]
    pub group: Option<String>,
    /// Its kind.
    pub kind: String,
}

/// The part of an HTTPRoute spec read here.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    /// The parents.
    #[serde(default)]
    pub parent_refs: Vec<ParentRef>,
    /// The host names.
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// The rules.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// A route's `parentRef`, echoed in its status entry.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    /// The parent's group (the Gateway API's by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The parent's kind (`Gateway` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The parent's namespace; the route's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The parent's name.
    pub name: String,
    /// The listener's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// The listener's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

/// An HTTPRoute rule.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// The matches (the CRD defaults them to a `/` prefix).
    #[serde(default)]
    pub matches: Vec<RouteMatch>,
    /// The backends.
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
}

/// An HTTPRoute match.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    /// The path match.
    #[serde(default)]
    pub path: Option<PathMatch>,
}

/// A path match.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PathMatch {
    /// `Exact`, `PathPrefix` (the default) or `RegularExpression`.
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
    /// The path (`/` by default).
    #[serde(default)]
    pub value: Option<String>,
}

/// A backend reference.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    /// Its group (core by default).
    #[serde(default)]
    pub group: Option<String>,
    /// Its kind (`Service` by default).
    #[serde(default)]
    pub kind: Option<String>,
    /// Its name.
    pub name: String,
    /// Its namespace; the route's when unset.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The Service port.
    #[serde(default)]
    pub port: Option<i32>,
    /// Its weight (1 by default).
    #[serde(default)]
    pub weight: Option<i32>,
}

/// A Gateway API object as the decisions see it: identity, generation, spec and current status.
#[derive(Clone, Debug, PartialEq)]
pub struct Object<S> {
    /// Its namespace (empty for a GatewayClass).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// `metadata.generation`.
    pub generation: i64,
    /// `metadata.creationTimestamp`, as written (RFC 3339 sorts as text).
    pub created: String,
    /// Whether it is being deleted.
    pub terminating: bool,
    /// The spec.
    pub spec: S,
    /// The current status (`null` when none).
    pub status: Value,
}

/// A Gateway.
pub type Gateway = Object<GatewaySpec>;
/// An HTTPRoute.
pub type Route = Object<RouteSpec>;

/// The view of a dynamic object; `None` when its spec does not parse.
fn view<S: serde::de::DeserializeOwned>(object: &DynamicObject) -> Option<Object<S>> {
    let spec =
        serde_json::from_value(object.data.get("spec").cloned().unwrap_or(json!({}))).ok()?;
    Some(Object {
        namespace: object.namespace().unwrap_or_default(),
        name: object.name_any(),
        generation: object.metadata.generation.unwrap_or(0),
        created: object
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|time| time.0.to_string())
            .unwrap_or_default(),
        terminating: object.metadata.deletion_timestamp.is_some(),
        spec,
        status: object.data.get("status").cloned().unwrap_or(Value::Null),
    })
}

/// Whether `host` matches the hostname `pattern` (a leading `*.` is a suffix match).
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .and_then(|rest| rest.strip_suffix('.'))
            .is_some_and(|label| !label.is_empty()),
        None => pattern == host,
    }
}

/// Whether a listener hostname and a route hostname intersect (`Hostnames` doc).
fn hostnames_intersect(listener: &str, route: &str) -> bool {
    listener == route || host_matches(listener, route) || host_matches(route, listener)
}

/// Whether a listener with `listener` hostname and a route with `route` hostnames intersect.
pub fn listener_takes_hostnames(listener: Option<&str>, route: &[String]) -> bool {
    match listener {
        None => true,
        Some(listener) => {
            route.is_empty() || route.iter().any(|host| hostnames_intersect(listener, host))
        }
    }
}

/// Why a listener cannot carry routes, if it cannot: `(reason, message)`.
fn listener_problem(listener: &Listener) -> Option<(&'static str, String)> {
    (listener.protocol != "HTTP").then(|| {
        (
            "UnsupportedProtocol",
            format!(
                "protocol {} is not supported by kube-sim's gateway (HTTP only)",
                listener.protocol
            ),
        )
    })
}

/// Whether `listener` of a Gateway in `gateway_namespace` admits an HTTPRoute from `namespace`.
fn admits(listener: &Listener, gateway_namespace: &str, namespace: &str) -> bool {
    let allowed = listener.allowed_routes.clone().unwrap_or_default();
    let from = allowed
        .namespaces
        .and_then(|namespaces| namespaces.from)
        .unwrap_or_else(|| "Same".to_owned());
    let namespace_ok = match from.as_str() {
        "All" => true,
        "Same" => gateway_namespace == namespace,
        // Selector: not implemented, strictly refused (see the module doc); any other value is
        // refused by the CRD's enum.
        _ => false,
    };
    let kind_ok = allowed.kinds.is_empty()
        || allowed.kinds.iter().any(|kind| {
            kind.kind == "HTTPRoute" && kind.group.as_deref().unwrap_or(GROUP) == GROUP
        });
    namespace_ok && kind_ok
}

/// How a Gateway takes a route through one `parentRef`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attachment {
    /// Accepted on these listeners (indices into the Gateway's listeners).
    Accepted(Vec<usize>),
    /// Not accepted: the `Accepted` condition's reason and message.
    Refused(&'static str, String),
}

/// How `gateway` takes `route` through `parent` (which names it).
pub fn attach(gateway: &Gateway, route: &Route, parent: &ParentRef) -> Attachment {
    let named: Vec<usize> = gateway
        .spec
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, listener)| {
            parent
                .section_name
                .as_ref()
                .is_none_or(|section| *section == listener.name)
                && parent.port.is_none_or(|port| port == listener.port)
        })
        .map(|(index, _)| index)
        .collect();
    if named.is_empty() {
        return Attachment::Refused(
            "NoMatchingParent",
            format!(
                "Gateway {}/{} has no listener matching the parentRef's sectionName/port",
                gateway.namespace, gateway.name
            ),
        );
    }
    let allowed: Vec<usize> = named
        .into_iter()
        .filter(|&index| {
            let listener = &gateway.spec.listeners[index];
            listener_problem(listener).is_none()
                && admits(listener, &gateway.namespace, &route.namespace)
        })
        .collect();
    if allowed.is_empty() {
        return Attachment::Refused(
            "NotAllowedByListeners",
            format!(
                "no listener of Gateway {}/{} allows HTTPRoutes from namespace {}",
                gateway.namespace, gateway.name, route.namespace
            ),
        );
    }
    let matching: Vec<usize> = allowed
        .into_iter()
        .filter(|&index| {
            listener_takes_hostnames(
                gateway.spec.listeners[index].hostname.as_deref(),
                &route.spec.hostnames,
            )
        })
        .collect();
    if matching.is_empty() {
        return Attachment::Refused(
            "NoMatchingListenerHostname",
            format!(
                "no hostname of the route intersects a listener hostname of Gateway {}/{}",
                gateway.namespace, gateway.name
            ),
        );
    }
    if let Some(path) = route
        .spec
        .rules
        .iter()
        .flat_map(|rule| &rule.matches)
        .filter_map(|m| m.path.as_ref())
        .find(|path| path.type_.as_deref() == Some("RegularExpression"))
    {
        return Attachment::Refused(
            "UnsupportedValue",
            format!(
                "path match type RegularExpression ({}) is not supported by kube-sim's gateway",
                path.value.as_deref().unwrap_or_default()
            ),
        );
    }
    Attachment::Accepted(matching)
}

/// The `ResolvedRefs` condition of `route`: `(status, reason, message)`.
pub fn resolve_refs(route: &Route, services: &[Service]) -> (bool, &'static str, String) {
    for backend in route.spec.rules.iter().flat_map(|rule| &rule.backend_refs) {
        let group = backend.group.as_deref().unwrap_or_default();
        let kind = backend.kind.as_deref().unwrap_or("Service");
        if !group.is_empty() || kind != "Service" {
            return (
                false,
                "InvalidKind",
                format!(
                    "backendRef {group}/{kind} {} is not a Service",
                    backend.name
                ),
            );
        }
        if backend
            .namespace
            .as_ref()
            .is_some_and(|namespace| *namespace != route.namespace)
        {
            return (
                false,
                "RefNotPermitted",
                format!(
                    "backendRef to Service {}/{} is in another namespace and kube-sim serves no ReferenceGrant",
                    backend.namespace.as_deref().unwrap_or_default(),
                    backend.name
                ),
            );
        }
        let found = services.iter().find(|service| {
            service.namespace().as_deref() == Some(route.namespace.as_str())
                && service.name_any() == backend.name
        });
        let has_port = found.is_some_and(|service| {
            service
                .spec
                .iter()
                .flat_map(|spec| spec.ports.iter().flatten())
                .any(|port| Some(port.port) == backend.port)
        });
        if !has_port {
            return (
                false,
                "BackendNotFound",
                format!(
                    "Service {}/{} {}",
                    route.namespace,
                    backend.name,
                    if found.is_some() {
                        format!("has no port {}", backend.port.unwrap_or_default())
                    } else {
                        "does not exist".to_owned()
                    }
                ),
            );
        }
    }
    (true, "ResolvedRefs", "every backendRef resolved".to_owned())
}

/// The Gateway `parent` names for a route in `route_namespace`, if it is one of ours: its
/// `namespace/name`.
fn parent_gateway<'a>(
    parent: &ParentRef,
    route_namespace: &str,
    gateways: &'a [Gateway],
    classes: &BTreeSet<String>,
) -> Option<&'a Gateway> {
    if parent.group.as_deref().unwrap_or(GROUP) != GROUP
        || parent.kind.as_deref().unwrap_or("Gateway") != "Gateway"
    {
        return None;
    }
    let namespace = parent.namespace.as_deref().unwrap_or(route_namespace);
    gateways.iter().find(|gateway| {
        gateway.namespace == namespace
            && gateway.name == parent.name
            && !gateway.terminating
            && classes.contains(&gateway.spec.gateway_class_name)
    })
}

/// A condition as `meta.SetStatusCondition` writes it: `lastTransitionTime` kept from
/// `previous` (the current conditions) while the status stays the same, else `now`.
fn condition(
    previous: Option<&Value>,
    kind: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: i64,
    now: &str,
) -> Value {
    let status = if status { "True" } else { "False" };
    let since = previous
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
        .filter(|c| c.get("status").and_then(Value::as_str) == Some(status))
        .and_then(|c| c.get("lastTransitionTime"))
        .and_then(Value::as_str)
        .unwrap_or(now);
    json!({
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": since,
    })
}

/// A status the controller writes: the object (`namespace`, empty for a GatewayClass, and
/// `name`) and its whole new status.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusWrite {
    /// The namespace (empty: cluster-scoped).
    pub namespace: String,
    /// The name.
    pub name: String,
    /// The new status.
    pub status: Value,
}

/// What the controller writes to converge: only statuses that differ from the current ones.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// GatewayClass statuses.
    pub classes: Vec<StatusWrite>,
    /// Gateway statuses.
    pub gateways: Vec<StatusWrite>,
    /// HTTPRoute statuses.
    pub routes: Vec<StatusWrite>,
}

/// What the controller sees: the Gateway API objects, the Services, and the loopback port bound
/// for each `(gateway namespace, gateway name, listener port)`.
#[derive(Clone, Copy, Debug)]
pub struct World<'a> {
    /// Every GatewayClass as `(name, generation, controllerName, status)`.
    pub classes: &'a [Object<String>],
    /// Every Gateway.
    pub gateways: &'a [Gateway],
    /// Every HTTPRoute.
    pub routes: &'a [Route],
    /// Every Service.
    pub services: &'a [Service],
    /// The bound listener sockets.
    pub ports: &'a BTreeMap<(String, String, i32), u16>,
}

impl World<'_> {
    /// The names of the GatewayClasses this controller manages.
    fn our_classes(&self) -> BTreeSet<String> {
        self.classes
            .iter()
            .filter(|class| class.spec == CONTROLLER_NAME && !class.terminating)
            .map(|class| class.name.clone())
            .collect()
    }
}

/// The statuses to write to converge `world` (`now`: the time for new transitions).
pub fn plan(world: World<'_>, now: &str) -> Plan {
    let ours = world.our_classes();
    let mut plan = Plan::default();
    let changed = |current: &Value, wanted: &Value| current != wanted;
    for class in world.classes.iter().filter(|c| ours.contains(&c.name)) {
        let conditions = class.status.get("conditions");
        let status = json!({"conditions": [condition(
            conditions, "Accepted", true, "Accepted",
            "the GatewayClass is managed by kube-sim's gateway controller", class.generation, now,
        )]});
        if changed(&class.status, &status) {
            plan.classes.push(StatusWrite {
                namespace: String::new(),
                name: class.name.clone(),
                status,
            });
        }
    }
    // Each route's attachments, per parentRef naming a Gateway of ours.
    let mut attached: HashMap<(String, String, usize), i32> = HashMap::new();
    for route in world.routes.iter().filter(|route| !route.terminating) {
        let (resolved, resolved_reason, resolved_message) = resolve_refs(route, world.services);
        let previous = route
            .status
            .get("parents")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut parents: Vec<Value> = previous
            .iter()
            .filter(|entry| {
                entry.get("controllerName").and_then(Value::as_str) != Some(CONTROLLER_NAME)
            })
            .cloned()
            .collect();
        for parent in &route.spec.parent_refs {
            let Some(gateway) = parent_gateway(parent, &route.namespace, world.gateways, &ours)
            else {
                continue;
            };
            let echoed = serde_json::to_value(parent).unwrap_or(Value::Null);
            let old_conditions = previous
                .iter()
                .find(|entry| {
                    entry.get("controllerName").and_then(Value::as_str) == Some(CONTROLLER_NAME)
                        && entry.get("parentRef") == Some(&echoed)
                })
                .and_then(|entry| entry.get("conditions"));
            let (accepted, reason, message) = match attach(gateway, route, parent) {
                Attachment::Accepted(listeners) => {
                    for index in listeners {
                        *attached
                            .entry((gateway.namespace.clone(), gateway.name.clone(), index))
                            .or_default() += 1;
                    }
                    (
                        true,
                        "Accepted",
                        format!("accepted by Gateway {}/{}", gateway.namespace, gateway.name),
                    )
                }
                Attachment::Refused(reason, message) => (false, reason, message),
            };
            parents.push(json!({
                "parentRef": echoed,
                "controllerName": CONTROLLER_NAME,
                "conditions": [
                    condition(old_conditions, "Accepted", accepted, reason, &message, route.generation, now),
                    condition(old_conditions, "ResolvedRefs", resolved, resolved_reason, &resolved_message, route.generation, now),
                ],
            }));
        }
        let status = json!({"parents": parents});
        let current = if route.status.is_null() {
            json!({"parents": []})
        } else {
            route.status.clone()
        };
        if changed(&current, &status) {
            plan.routes.push(StatusWrite {
                namespace: route.namespace.clone(),
                name: route.name.clone(),
                status,
            });
        }
    }
    for gateway in world
        .gateways
        .iter()
        .filter(|g| !g.terminating && ours.contains(&g.spec.gateway_class_name))
    {
        let generation = gateway.generation;
        let old_listeners = gateway
            .status
            .get("listeners")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut valid = 0;
        let mut unbound = 0;
        let listeners: Vec<Value> = gateway
            .spec
            .listeners
            .iter()
            .enumerate()
            .map(|(index, listener)| {
                let old = old_listeners
                    .iter()
                    .find(|l| l.get("name").and_then(Value::as_str) == Some(&listener.name))
                    .and_then(|l| l.get("conditions"));
                let key = (
                    gateway.namespace.clone(),
                    gateway.name.clone(),
                    listener.port,
                );
                let condition = |kind, status, reason: &str, message: &str| {
                    condition(old, kind, status, reason, message, generation, now)
                };
                let (kinds, conditions) = match listener_problem(listener) {
                    Some((reason, message)) => (
                        json!([]),
                        vec![
                            condition("Accepted", false, reason, &message),
                            condition("Programmed", false, "Invalid", &message),
                            condition("ResolvedRefs", true, "ResolvedRefs", "no references"),
                        ],
                    ),
                    None => {
                        valid += 1;
                        let programmed = match world.ports.get(&key) {
                            Some(port) => condition(
                                "Programmed",
                                true,
                                "Programmed",
                                &format!("listening on {ADDRESS}:{port}"),
                            ),
                            None => {
                                unbound += 1;
                                condition(
                                    "Programmed",
                                    false,
                                    "Pending",
                                    "the loopback listener is not bound yet",
                                )
                            }
                        };
                        (
                            json!([{"group": GROUP, "kind": "HTTPRoute"}]),
                            vec![
                                condition("Accepted", true, "Accepted", "listener accepted"),
                                programmed,
                                condition("ResolvedRefs", true, "ResolvedRefs", "no references"),
                            ],
                        )
                    }
                };
                json!({
                    "name": listener.name,
                    "supportedKinds": kinds,
                    "attachedRoutes": attached
                        .get(&(gateway.namespace.clone(), gateway.name.clone(), index))
                        .copied()
                        .unwrap_or(0),
                    "conditions": conditions,
                })
            })
            .collect();
        let old = gateway.status.get("conditions");
        let accepted = if valid > 0 {
            condition(
                old,
                "Accepted",
                true,
                "Accepted",
                "the Gateway is accepted",
                generation,
                now,
            )
        } else {
            condition(
                old,
                "Accepted",
                false,
                "ListenersNotValid",
                "no listener is valid",
                generation,
                now,
            )
        };
        let programmed = if valid > 0 && unbound == 0 {
            condition(
                old,
                "Programmed",
                true,
                "Programmed",
                "every valid listener is bound on the Gateway's address",
                generation,
                now,
            )
        } else {
            condition(
                old,
                "Programmed",
                false,
                if valid == 0 { "Invalid" } else { "Pending" },
                "not every valid listener is bound",
                generation,
                now,
            )
        };
        let status = json!({
            "addresses": [{"type": "IPAddress", "value": ADDRESS}],
            "conditions": [accepted, programmed],
            "listeners": listeners,
        });
        if changed(&gateway.status, &status) {
            plan.gateways.push(StatusWrite {
                namespace: gateway.namespace.clone(),
                name: gateway.name.clone(),
                status,
            });
        }
    }
    plan
}

/// The listener sockets `world` needs: `(gateway namespace, gateway name, listener port)` of
/// every supported listener of a Gateway of ours.
pub fn wanted_sockets(world: World<'_>) -> BTreeSet<(String, String, i32)> {
    let ours = world.our_classes();
    world
        .gateways
        .iter()
        .filter(|g| !g.terminating && ours.contains(&g.spec.gateway_class_name))
        .flat_map(|gateway| {
            gateway
                .spec
                .listeners
                .iter()
                .filter(|listener| listener_problem(listener).is_none())
                .map(|listener| {
                    (
                        gateway.namespace.clone(),
                        gateway.name.clone(),
                        listener.port,
                    )
                })
        })
        .collect()
}

/// The annotations publishing a Gateway's loopback ports (`spec port` → `loopback port`).
pub fn port_annotations(ports: &BTreeMap<i32, u16>) -> BTreeMap<String, String> {
    ports
        .iter()
        .map(|(spec, bound)| {
            (
                format!("{LISTENER_PORT_ANNOTATION_PREFIX}{spec}"),
                bound.to_string(),
            )
        })
        .collect()
}

/// Where a request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Routed {
    /// No listener or route matches: 404.
    NotFound,
    /// A rule matches; its backends (Service refs of non-zero weight, in the route's namespace).
    Backends(Vec<Backend>),
}

/// Where a request for `host` and `path` to `gateway`'s listener port `port` goes, among `routes`
/// (only those accepted on the chosen listener count).
pub fn route_request(
    gateway: &Gateway,
    port: i32,
    routes: &[Route],
    host: &str,
    path: &str,
) -> Routed {
    let host = host
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(host, |(name, _)| name)
        .to_ascii_lowercase();
    // The most specific listener on this port matching the host.
    let listener = gateway
        .spec
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| l.port == port && listener_problem(l).is_none())
        .filter(|(_, l)| l.hostname.as_deref().is_none_or(|h| host_matches(h, &host)))
        .max_by_key(|(_, l)| match l.hostname.as_deref() {
            None => (0, 0),
            Some(h) if h.starts_with("*.") => (1, h.len()),
            Some(h) => (2, h.len()),
        });
    let Some((index, listener)) = listener else {
        return Routed::NotFound;
    };
    type Rank = ((usize, usize), bool, usize, std::cmp::Reverse<String>);
    /// Equal ranks: the smaller `namespace/name`, then the earlier rule.
    type Tie = std::cmp::Reverse<(String, String)>;
    let mut best: Option<(Rank, Tie, Vec<Backend>)> = None;
    for route in routes.iter().filter(|r| !r.terminating) {
        let on_listener = route.spec.parent_refs.iter().any(|parent| {
            parent.group.as_deref().unwrap_or(GROUP) == GROUP
                && parent.kind.as_deref().unwrap_or("Gateway") == "Gateway"
                && parent.namespace.as_deref().unwrap_or(&route.namespace) == gateway.namespace
                && parent.name == gateway.name
                && matches!(attach(gateway, route, parent), Attachment::Accepted(l) if l.contains(&index))
        });
        if !on_listener {
            continue;
        }
        // The route hostnames that apply on this listener, and the request's match among them.
        let host_rank = if route.spec.hostnames.is_empty() {
            match listener.hostname.as_deref() {
                None => Some((0, 0)),
                Some(h) if h.starts_with("*.") => Some((0, h.len())),
                Some(h) => Some((h.len(), h.len())),
            }
        } else {
            route
                .spec
                .hostnames
                .iter()
                .filter(|h| listener_takes_hostnames(listener.hostname.as_deref(), &[(*h).clone()]))
                .filter(|h| host_matches(h, &host))
                .map(|h| {
                    if h.starts_with("*.") {
                        (0, h.len())
                    } else {
                        (h.len(), h.len())
                    }
                })
                .max()
        };
        let Some(host_rank) = host_rank else {
            continue;
        };
        for (rule_index, rule) in route.spec.rules.iter().enumerate() {
            let default = [RouteMatch::default()];
            let matches: &[RouteMatch] = if rule.matches.is_empty() {
                &default
            } else {
                &rule.matches
            };
            for m in matches {
                let kind = m
                    .path
                    .as_ref()
                    .and_then(|p| p.type_.as_deref())
                    .unwrap_or("PathPrefix");
                let value = m
                    .path
                    .as_ref()
                    .and_then(|p| p.value.as_deref())
                    .unwrap_or("/");
                let matched = match kind {
                    "Exact" => value == path,
                    "PathPrefix" => path_matches("Prefix", value, path),
                    _ => false,
                };
                if !matched {
                    continue;
                }
                let rank: Rank = (
                    host_rank,
                    kind == "Exact",
                    value.len(),
                    std::cmp::Reverse(route.created.clone()),
                );
                let tie = std::cmp::Reverse((
                    format!("{}/{}", route.namespace, route.name),
                    format!("{rule_index:05}"),
                ));
                let better = best.as_ref().is_none_or(|(r, t, _)| (&rank, &tie) > (r, t));
                if better {
                    let backends = rule
                        .backend_refs
                        .iter()
                        .filter(|b| b.weight.unwrap_or(1) > 0)
                        .filter(|b| {
                            b.group.as_deref().unwrap_or_default().is_empty()
                                && b.kind.as_deref().unwrap_or("Service") == "Service"
                                && b.namespace.as_deref().is_none_or(|n| n == route.namespace)
                        })
                        .filter_map(|b| {
                            Some(Backend {
                                namespace: route.namespace.clone(),
                                service: b.name.clone(),
                                port: IntOrString::Int(b.port?),
                            })
                        })
                        .collect();
                    best = Some((rank, tie, backends));
                }
            }
        }
    }
    best.map_or(Routed::NotFound, |(_, _, backends)| {
        Routed::Backends(backends)
    })
}

struct Stores {
    classes: Store<DynamicObject>,
    gateways: Store<DynamicObject>,
    routes: Store<DynamicObject>,
    services: Store<Service>,
    pods: Store<Pod>,
    next: AtomicUsize,
}

fn views<S: serde::de::DeserializeOwned>(store: &Store<DynamicObject>) -> Vec<Object<S>> {
    store.state().iter().filter_map(|o| view(o)).collect()
}

fn class_views(store: &Store<DynamicObject>) -> Vec<Object<String>> {
    views::<ClassSpec>(store)
        .into_iter()
        .map(|class| Object {
            namespace: class.namespace,
            name: class.name,
            generation: class.generation,
            created: class.created,
            terminating: class.terminating,
            spec: class.spec.controller_name,
            status: class.status,
        })
        .collect()
}

async fn handle(mut inbound: TcpStream, stores: Arc<Stores>, key: (String, String, i32)) {
    let mut head = Vec::with_capacity(1024);
    let mut buffer = [0u8; 4096];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        match inbound.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => head.extend_from_slice(&buffer[..read]),
        }
        if head.len() > MAX_HEAD {
            return respond(inbound, "431 Request Header Fields Too Large", "").await;
        }
    }
    let Some((host, path)) = parse_head(&head) else {
        return respond(inbound, "400 Bad Request", "no Host header\n").await;
    };
    let gateways: Vec<Gateway> = views(&stores.gateways);
    let Some(gateway) = gateways
        .iter()
        .find(|g| g.namespace == key.0 && g.name == key.1)
    else {
        return respond(inbound, "404 Not Found", "no such Gateway\n").await;
    };
    let routes: Vec<Route> = views(&stores.routes);
    let backends = match route_request(gateway, key.2, &routes, &host, &path) {
        Routed::NotFound => {
            return respond(inbound, "404 Not Found", "no HTTPRoute matches\n").await;
        }
        Routed::Backends(backends) => backends,
    };
    let services = stores.services.state();
    let targets: Vec<_> = backends
        .iter()
        .filter_map(|backend| {
            let service = services.iter().find(|s| {
                s.name_any() == backend.service
                    && s.namespace().as_deref() == Some(backend.namespace.as_str())
            })?;
            target(service, backend)
        })
        .collect();
    if targets.is_empty() {
        return respond(
            inbound,
            "500 Internal Server Error",
            "no backendRef resolves\n",
        )
        .await;
    }
    let pods = stores.pods.state();
    let candidates: Vec<u16> = targets
        .iter()
        .flat_map(|target| endpoints(pods.iter().map(|pod| &**pod), target))
        .collect();
    let start = stores.next.fetch_add(1, Ordering::Relaxed);
    for offset in 0..candidates.len() {
        let port = candidates[(start + offset) % candidates.len()];
        if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", port)).await {
            if outbound.write_all(&head).await.is_err() {
                continue;
            }
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            return;
        }
    }
    respond(inbound, "503 Service Unavailable", "no ready endpoint\n").await;
}

fn reflect<K>(api: Api<K>, writer: Writer<K>, notify: Arc<Notify>, tasks: &mut Vec<JoinHandle<()>>)
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash + Default + Send + Sync,
{
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .for_each(move |_| {
            notify.notify_one();
            async {}
        });
    tasks.push(tokio::spawn(stream));
}

fn reflect_dynamic(
    client: &kube::Client,
    resource: &ApiResource,
    notify: Arc<Notify>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Store<DynamicObject> {
    let writer = Writer::new(resource.clone());
    let reader = writer.as_reader();
    let api = Api::<DynamicObject>::all_with(client.clone(), resource);
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .for_each(move |event| {
            if let Err(error) = event {
                tracing::debug!(%error, "gateway: watch error (is the Gateway API installed?)");
            }
            notify.notify_one();
            async {}
        });
    tasks.push(tokio::spawn(stream));
    reader
}

struct Socket {
    port: u16,
    task: JoinHandle<()>,
}

async fn bind(stores: &Arc<Stores>, key: &(String, String, i32)) -> Option<Socket> {
    let listener = match TcpListener::bind((ADDRESS, 0)).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::warn!(%error, "gateway: cannot listen");
            return None;
        }
    };
    let port = listener.local_addr().ok()?.port();
    let stores = stores.clone();
    let key = key.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((inbound, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            tokio::spawn(handle(inbound, stores.clone(), key.clone()));
        }
    });
    Some(Socket { port, task })
}

fn now_text() -> String {
    let now = super::pods::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

async fn write_status(client: &kube::Client, resource: &ApiResource, write: &StatusWrite) {
    let api: Api<DynamicObject> = if write.namespace.is_empty() {
        Api::all_with(client.clone(), resource)
    } else {
        Api::namespaced_with(client.clone(), &write.namespace, resource)
    };
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let patch = json!({"status": write.status});
    if let Err(error) = api
        .patch_status(&write.name, &params, &Patch::Merge(patch))
        .await
    {
        tracing::debug!(%error, kind = %resource.kind, name = %write.name, "gateway: writing a status failed");
    }
}

async fn publish_ports(
    client: &kube::Client,
    resource: &ApiResource,
    gateway: &DynamicObject,
    ports: &BTreeMap<i32, u16>,
) {
    let wanted = port_annotations(ports);
    let current: BTreeMap<String, String> = gateway
        .annotations()
        .iter()
        .filter(|(key, _)| key.starts_with(LISTENER_PORT_ANNOTATION_PREFIX))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    if current == wanted {
        return;
    }
    let mut annotations = serde_json::Map::new();
    for key in current.keys() {
        annotations.insert(key.clone(), Value::Null);
    }
    for (key, value) in wanted {
        annotations.insert(key, Value::String(value));
    }
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &gateway.namespace().unwrap_or_default(),
        resource,
    );
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let patch = json!({"metadata": {"annotations": annotations}});
    if let Err(error) = api
        .patch(&gateway.name_any(), &params, &Patch::Merge(patch))
        .await
    {
        tracing::debug!(%error, gateway = %gateway.name_any(), "gateway: publishing the ports failed");
    }
}

/// Runs the gateway controller and its listeners until `shutdown`.
pub async fn run(client: kube::Client, shutdown: CancellationToken) {
    let class_resource = resource("GatewayClass", "gatewayclasses");
    let gateway_resource = resource("Gateway", "gateways");
    let route_resource = resource("HTTPRoute", "httproutes");
    let notify = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    let classes = reflect_dynamic(&client, &class_resource, notify.clone(), &mut tasks);
    let gateways = reflect_dynamic(&client, &gateway_resource, notify.clone(), &mut tasks);
    let routes = reflect_dynamic(&client, &route_resource, notify.clone(), &mut tasks);
    let services_writer = Writer::default();
    let services = services_writer.as_reader();
    reflect(
        Api::<Service>::all(client.clone()),
        services_writer,
        notify.clone(),
        &mut tasks,
    );
    let pods_writer = Writer::default();
    let pods = pods_writer.as_reader();
    reflect(
        Api::<Pod>::all(client.clone()),
        pods_writer,
        Arc::new(Notify::new()),
        &mut tasks,
    );
    let stores = Arc::new(Stores {
        classes,
        gateways,
        routes,
        services,
        pods,
        next: AtomicUsize::new(0),
    });
    let mut sockets: BTreeMap<(String, String, i32), Socket> = BTreeMap::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = notify.notified() => {}
        }
        // Let a burst of events settle into the stores.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let class_list = class_views(&stores.classes);
        let gateway_list: Vec<Gateway> = views(&stores.gateways);
        let route_list: Vec<Route> = views(&stores.routes);
        let service_list: Vec<Service> = stores
            .services
            .state()
            .iter()
            .map(|s| Service::clone(s))
            .collect();
        let unbound = BTreeMap::new();
        let wanted = wanted_sockets(World {
            classes: &class_list,
            gateways: &gateway_list,
            routes: &route_list,
            services: &service_list,
            ports: &unbound,
        });
        sockets.retain(|key, socket| {
            let keep = wanted.contains(key);
            if !keep {
                socket.task.abort();
            }
            keep
        });
        for key in &wanted {
            if !sockets.contains_key(key)
                && let Some(socket) = bind(&stores, key).await
            {
                sockets.insert(key.clone(), socket);
            }
        }
        let ports: BTreeMap<(String, String, i32), u16> = sockets
            .iter()
            .map(|(key, socket)| (key.clone(), socket.port))
            .collect();
        for gateway in stores.gateways.state() {
            let namespace = gateway.namespace().unwrap_or_default();
            let name = gateway.name_any();
            let mine: BTreeMap<i32, u16> = ports
                .iter()
                .filter(|((n, g, _), _)| *n == namespace && *g == name)
                .map(|((_, _, spec), bound)| (*spec, *bound))
                .collect();
            if !mine.is_empty() {
                publish_ports(&client, &gateway_resource, &gateway, &mine).await;
            }
        }
        let world = World {
            classes: &class_list,
            gateways: &gateway_list,
            routes: &route_list,
            services: &service_list,
            ports: &ports,
        };
        let plan = plan(world, &now_text());
        for write in &plan.classes {
            write_status(&client, &class_resource, write).await;
        }
        for write in &plan.gateways {
            write_status(&client, &gateway_resource, write).await;
        }
        for write in &plan.routes {
            write_status(&client, &route_resource, write).await;
        }
    }
    for (_, socket) in sockets {
        socket.task.abort();
    }
    for task in tasks {
        task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-01-01T00:00:00Z";
    const LATER: &str = "2026-01-01T00:05:00Z";

    fn class(name: &str, controller: &str) -> Object<String> {
        Object {
            namespace: String::new(),
            name: name.into(),
            generation: 1,
            created: NOW.into(),
            terminating: false,
            spec: controller.into(),
            status: Value::Null,
        }
    }

    fn gateway(namespace: &str, name: &str, class: &str, listeners: Value) -> Gateway {
        Object {
            namespace: namespace.into(),
            name: name.into(),
            generation: 2,
            created: NOW.into(),
            terminating: false,
            spec: serde_json::from_value(
                json!({"gatewayClassName": class, "listeners": listeners}),
            )
            .unwrap(),
            status: Value::Null,
        }
    }

    fn http(name: &str, hostname: Option<&str>, from: &str) -> Value {
        json!({"name": name, "port": 80, "protocol": "HTTP", "hostname": hostname,
               "allowedRoutes": {"namespaces": {"from": from}}})
    }

    fn route(namespace: &str, name: &str, spec: Value) -> Route {
        Object {
            namespace: namespace.into(),
            name: name.into(),
            generation: 3,
            created: NOW.into(),
            terminating: false,
            spec: serde_json::from_value(spec).unwrap(),
            status: Value::Null,
        }
    }

    fn simple_route(namespace: &str, name: &str, gateway: Value, hosts: Value) -> Route {
        route(
            namespace,
            name,
            json!({"parentRefs": [gateway], "hostnames": hosts, "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                 "backendRefs": [{"name": "api", "port": 80}]}
            ]}),
        )
    }

    fn service(namespace: &str, name: &str, port: i32) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": port, "targetPort": "http"}]}
        }))
        .unwrap()
    }

    struct Fixture {
        classes: Vec<Object<String>>,
        gateways: Vec<Gateway>,
        routes: Vec<Route>,
        services: Vec<Service>,
        ports: BTreeMap<(String, String, i32), u16>,
    }

    impl Fixture {
        fn new(gateways: Vec<Gateway>, routes: Vec<Route>) -> Self {
            Fixture {
                classes: vec![
                    class(GATEWAY_CLASS, CONTROLLER_NAME),
                    class("other", "example.com/other"),
                ],
                ports: gateways
                    .iter()
                    .map(|g| ((g.namespace.clone(), g.name.clone(), 80), 40080))
                    .collect(),
                gateways,
                routes,
                services: vec![service("shop", "api", 80)],
            }
        }

        fn world(&self) -> World<'_> {
            World {
                classes: &self.classes,
                gateways: &self.gateways,
                routes: &self.routes,
                services: &self.services,
                ports: &self.ports,
            }
        }

        fn plan(&self) -> Plan {
            plan(self.world(), NOW)
        }
    }

    fn route_status<'a>(plan: &'a Plan, name: &str) -> Option<&'a Value> {
        plan.routes
            .iter()
            .find(|write| write.name == name)
            .map(|write| &write.status)
    }

    /// `(type, status, reason)` of every condition of the route's first parent entry.
    fn parent_conditions(status: &Value) -> Vec<(String, String, String)> {
        status["parents"][0]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["type"].as_str().unwrap().to_owned(),
                    c["status"].as_str().unwrap().to_owned(),
                    c["reason"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    fn accepted_reason(fixture: &Fixture, name: &str) -> (String, String) {
        let status = route_status(&fixture.plan(), name).cloned().unwrap();
        let (_, status, reason) = parent_conditions(&status)
            .into_iter()
            .find(|(kind, _, _)| kind == "Accepted")
            .unwrap();
        (status, reason)
    }

    #[test]
    fn a_gateway_class_of_ours_is_accepted_and_another_is_left_alone() {
        let fixture = Fixture::new(vec![], vec![]);
        let plan = fixture.plan();
        assert_eq!(plan.classes.len(), 1);
        assert_eq!(plan.classes[0].name, GATEWAY_CLASS);
        let condition = &plan.classes[0].status["conditions"][0];
        assert_eq!(condition["type"], "Accepted");
        assert_eq!(condition["status"], "True");
        assert_eq!(condition["observedGeneration"], 1);
    }

    #[test]
    fn a_route_on_our_gateway_is_accepted_resolved_and_counted_on_its_listener() {
        let fixture = Fixture::new(
            vec![gateway(
                "shop",
                "web",
                GATEWAY_CLASS,
                json!([http("http", Some("*.example.com"), "Same")]),
            )],
            vec![simple_route(
                "shop",
                "api",
                json!({"name": "web"}),
                json!(["shop.example.com"]),
            )],
        );
        let plan = fixture.plan();
        let status = route_status(&plan, "api").unwrap();
        assert_eq!(status["parents"][0]["controllerName"], CONTROLLER_NAME);
        assert_eq!(status["parents"][0]["parentRef"]["name"], "web");
        assert_eq!(
            parent_conditions(status),
            vec![
                ("Accepted".into(), "True".into(), "Accepted".into()),
                ("ResolvedRefs".into(), "True".into(), "ResolvedRefs".into())
            ]
        );
        assert_eq!(
            status["parents"][0]["conditions"][0]["observedGeneration"],
            3
        );
        let gateway = &plan.gateways[0].status;
        assert_eq!(gateway["listeners"][0]["attachedRoutes"], 1);
        assert_eq!(gateway["addresses"][0]["value"], ADDRESS);
        assert_eq!(gateway["conditions"][1]["type"], "Programmed");
        assert_eq!(gateway["conditions"][1]["status"], "True");
    }

    #[test]
    fn a_gateway_is_not_programmed_until_its_listener_is_bound() {
        let mut fixture = Fixture::new(
            vec![gateway(
                "shop",
                "web",
                GATEWAY_CLASS,
                json!([http("http", None, "Same")]),
            )],
            vec![],
        );
        fixture.ports.clear();
        let plan = fixture.plan();
        let programmed = &plan.gateways[0].status["conditions"][1];
        assert_eq!(
            (programmed["status"].as_str(), programmed["reason"].as_str()),
            (Some("False"), Some("Pending"))
        );
    }

    #[test]
    fn a_same_namespace_listener_refuses_a_route_from_another_namespace_and_all_allows_it() {
        let same = Fixture::new(
            vec![gateway(
                "infra",
                "web",
                GATEWAY_CLASS,
                json!([http("http", None, "Same")]),
            )],
            vec![simple_route(
                "shop",
                "api",
                json!({"name": "web", "namespace": "infra"}),
                json!([]),
            )],
        );
        assert_eq!(
            accepted_reason(&same, "api"),
            ("False".into(), "NotAllowedByListeners".into())
        );
        let all = Fixture::new(
            vec![gateway(
                "infra",
                "web",
                GATEWAY_CLASS,
                json!([http("http", None, "All")]),
            )],
            vec![simple_route(
                "shop",
                "api",
                json!({"name": "web", "namespace": "infra"}),
                json!([]),
            )],
        );
        assert_eq!(
            accepted_reason(&all, "api"),
            ("True".into(), "Accepted".into())
        );
    }

    #[test]
    fn a_route_whose_hostnames_miss_every_listener_is_not_accepted() {
        let fixture = Fixture::new(
            vec![gateway(
                "shop",
                "web",
                GATEWAY_CLASS,
                json!([http("http", Some("*.example.com"), "Same")]),
            )],
            vec![simple_route(
                "shop",
                "api",
                json!({"name": "web"}),
                json!(["example.com", "shop.example.net"]),
            )],
        );
        assert_eq!(
            accepted_reason(&fixture, "api"),
            ("False".into(), "NoMatchingListenerHostname".into())
        );
        assert_eq!(
            fixture.plan().gateways[0].status["listeners"][0]["attachedRoutes"],
            0
        );
    }

    #[test]
    fn a_section_name_no_listener_has_is_no_matching_parent() {
        let fixture = Fixture::new(
            vec![gateway(
                "shop",
                "web",
                GATEWAY_CLASS,
                json!([http("http", None, "Same")]),
            )],
            vec![simple_route(
                "shop",
                "api",
                json!({"name": "web", "sectionName": "https"}),
                json!([]),
            )],
        );
        assert_eq!(
            accepted_reason(&fixture, "api"),
            ("False".into(), "NoMatchingParent".into())
        );
    }

    #[test]
    fn an_https_listener_is_unsupported_and_takes_no_route() {
        let listener = json!({"name": "https", "port": 443, "protocol": "HTTPS"});
        let fixture = Fixture::new(
            vec![gateway("shop", "web", GATEWAY_CLASS, json!([listener]))],
            vec![simple_route(
                "shop",
                "api",
                json!({"name": "web"}),
                json!([]),
            )],
        );
        let plan = fixture.plan();
        let listener = &plan.gateways[0].status["listeners"][0];
        assert_eq!(listener["conditions"][0]["reason"], "UnsupportedProtocol");
        assert_eq!(
            plan.gateways[0].status["conditions"][0]["reason"],
            "ListenersNotValid"
        );
        assert_eq!(
            accepted_reason(&fixture, "api"),
            ("False".into(), "NotAllowedByListeners".into())
        );
    }

    #[test]
    fn backend_refs_resolve_only_to_an_existing_service_port_in_the_route_namespace() {
        let gateways = vec![gateway(
            "shop",
            "web",
            GATEWAY_CLASS,
            json!([http("http", None, "Same")]),
        )];
        let reason = |backend: Value| {
            let route = route(
                "shop",
                "api",
                json!({"parentRefs": [{"name": "web"}], "rules": [{"backendRefs": [backend]}]}),
            );
            let fixture = Fixture::new(gateways.clone(), vec![route]);
            let status = route_status(&fixture.plan(), "api").cloned().unwrap();
            parent_conditions(&status)[1].clone()
        };
        assert_eq!(reason(json!({"name": "api", "port": 80})).2, "ResolvedRefs");
        assert_eq!(
            reason(json!({"name": "missing", "port": 80})),
            (
                "ResolvedRefs".into(),
                "False".into(),
                "BackendNotFound".into()
            )
        );
        assert_eq!(
            reason(json!({"name": "api", "port": 81})).2,
            "BackendNotFound"
        );
        assert_eq!(
            reason(json!({"name": "api", "namespace": "other", "port": 80})).2,
            "RefNotPermitted"
        );
        assert_eq!(
            reason(json!({"group": "example.com", "kind": "Bucket", "name": "api"})).2,
            "InvalidKind"
        );
    }

    #[test]
    fn a_route_to_a_missing_gateway_or_one_of_another_class_gets_no_entry_from_us() {
        let fixture = Fixture::new(
            vec![gateway(
                "shop",
                "theirs",
                "other",
                json!([http("http", None, "Same")]),
            )],
            vec![
                simple_route("shop", "missing", json!({"name": "nowhere"}), json!([])),
                simple_route("shop", "other", json!({"name": "theirs"}), json!([])),
            ],
        );
        let plan = fixture.plan();
        assert!(
            plan.gateways.is_empty(),
            "a Gateway of another class is left alone"
        );
        assert!(route_status(&plan, "missing").is_none(), "{plan:?}");
        assert!(route_status(&plan, "other").is_none(), "{plan:?}");
    }

    #[test]
    fn another_controller_s_parent_entries_are_kept() {
        let mut fixture = Fixture::new(
            vec![gateway(
                "shop",
                "web",
                GATEWAY_CLASS,
                json!([http("http", None, "Same")]),
            )],
            vec![simple_route(
                "shop",
                "api",
                json!({"name": "web"}),
                json!([]),
            )],
        );
        let theirs = json!({"parentRef": {"name": "elsewhere"}, "controllerName": "example.com/gw",
                            "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                                            "message": "", "lastTransitionTime": NOW}]});
        fixture.routes[0].status = json!({"parents": [theirs.clone()]});
        let status = route_status(&fixture.plan(), "api").cloned().unwrap();
        assert_eq!(status["parents"][0], theirs);
        assert_eq!(status["parents"][1]["controllerName"], CONTROLLER_NAME);
    }

    #[test]
    fn a_converged_world_plans_nothing_and_keeps_transition_times() {
        let mut fixture = Fixture::new(
            vec![gateway(
                "shop",
                "web",
                GATEWAY_CLASS,
                json!([http("http", None, "Same")]),
            )],
            vec![simple_route(
                "shop",
                "api",
                json!({"name": "web"}),
                json!([]),
            )],
        );
        let first = fixture.plan();
        fixture.classes[0].status = first.classes[0].status.clone();
        fixture.gateways[0].status = first.gateways[0].status.clone();
        fixture.routes[0].status = route_status(&first, "api").cloned().unwrap();
        assert_eq!(plan(fixture.world(), LATER), Plan::default());
        // A change of status is a transition at the new time.
        fixture.services.clear();
        let later = plan(fixture.world(), LATER);
        let resolved = &route_status(&later, "api").unwrap()["parents"][0]["conditions"][1];
        assert_eq!(resolved["status"], "False");
        assert_eq!(resolved["lastTransitionTime"], LATER);
        let accepted = &route_status(&later, "api").unwrap()["parents"][0]["conditions"][0];
        assert_eq!(accepted["lastTransitionTime"], NOW);
    }

    #[test]
    fn a_wildcard_hostname_is_a_suffix_match() {
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(host_matches("*.example.com", "a.b.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "aexample.com"));
        assert!(host_matches("a.example.com", "a.example.com"));
        assert!(listener_takes_hostnames(
            Some("test.example.com"),
            &["*.example.com".into()]
        ));
        assert!(listener_takes_hostnames(
            Some("*.example.com"),
            &["foo.test.example.com".into()]
        ));
        assert!(!listener_takes_hostnames(
            Some("*.example.com"),
            &["example.com".into()]
        ));
        assert!(listener_takes_hostnames(None, &["anything.test".into()]));
        assert!(listener_takes_hostnames(Some("a.test"), &[]));
    }

    fn service_of(routed: Routed) -> Option<String> {
        match routed {
            Routed::Backends(backends) => backends.first().map(|b| b.service.clone()),
            Routed::NotFound => None,
        }
    }

    #[test]
    fn requests_go_to_the_most_specific_hostname_then_the_longest_path() {
        let web = gateway(
            "shop",
            "web",
            GATEWAY_CLASS,
            json!([http("http", None, "Same")]),
        );
        let backend = |name: &str| json!([{"name": name, "port": 80}]);
        let routes = vec![
            route(
                "shop",
                "wild",
                json!({"parentRefs": [{"name": "web"}], "hostnames": ["*.example.com"],
                "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": backend("wild")}]}),
            ),
            route(
                "shop",
                "exact",
                json!({"parentRefs": [{"name": "web"}], "hostnames": ["a.example.com"],
                "rules": [
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": backend("root")},
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}], "backendRefs": backend("api")},
                    {"matches": [{"path": {"type": "Exact", "value": "/api/v1"}}], "backendRefs": backend("exact")}
                ]}),
            ),
        ];
        let to = |host: &str, path: &str| service_of(route_request(&web, 80, &routes, host, path));
        assert_eq!(to("a.example.com:8080", "/x"), Some("root".into()));
        assert_eq!(to("a.example.com", "/api/users"), Some("api".into()));
        assert_eq!(to("a.example.com", "/apis"), Some("root".into()));
        assert_eq!(to("a.example.com", "/api/v1"), Some("exact".into()));
        assert_eq!(to("b.c.example.com", "/api"), Some("wild".into()));
        assert_eq!(to("example.com", "/"), None);
        assert_eq!(
            route_request(&web, 8080, &routes, "a.example.com", "/"),
            Routed::NotFound
        );
    }

    #[test]
    fn a_route_not_accepted_on_the_listener_carries_no_traffic() {
        let web = gateway(
            "infra",
            "web",
            GATEWAY_CLASS,
            json!([http("http", None, "Same")]),
        );
        let routes = vec![simple_route(
            "shop",
            "api",
            json!({"name": "web", "namespace": "infra"}),
            json!([]),
        )];
        assert_eq!(
            route_request(&web, 80, &routes, "x.test", "/"),
            Routed::NotFound
        );
    }

    #[test]
    fn the_oldest_route_wins_a_tie() {
        let web = gateway(
            "shop",
            "web",
            GATEWAY_CLASS,
            json!([http("http", None, "Same")]),
        );
        let mut newer = simple_route("shop", "a-newer", json!({"name": "web"}), json!([]));
        newer.created = LATER.into();
        newer.spec.rules[0].backend_refs[0].name = "newer".into();
        let older = simple_route("shop", "z-older", json!({"name": "web"}), json!([]));
        let routes = vec![newer, older];
        assert_eq!(
            service_of(route_request(&web, 80, &routes, "x.test", "/")),
            Some("api".into())
        );
    }
}
