//! The Gateway API `gateway.networking.k8s.io/v1` HTTPRoute and the cert-manager `cert-manager.io/v1`
//! Certificate, typed with only the fields the operator sets and reads (as [`crate::cnpg`] is).
//!
//! HTTPRoute status (Gateway API `apis/v1/httproute_types.go`, `shared_types.go`): each Gateway the
//! route attaches to reports one `status.parents[]` entry, with the `parentRef` it is about, the
//! `controllerName` of the gateway implementation, and conditions of which `Accepted` (the
//! Gateway's listeners take the route) and `ResolvedRefs` (every backend reference resolved) are
//! the two a route needs to carry traffic; each condition carries the route's `observedGeneration`
//! it judged.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The desired state of an HTTPRoute.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "HTTPRoute",
    plural = "httproutes",
    namespaced,
    status = "HttpRouteStatus",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    /// The Gateways (and listeners) the route attaches to.
    pub parent_refs: Vec<ParentReference>,
    /// The host names the route matches; every host when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// The routing rules.
    pub rules: Vec<HttpRouteRule>,
}

/// A reference to a Gateway (or one of its listeners).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    /// The Gateway's name.
    pub name: String,
    /// The Gateway's namespace; the route's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The listener's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// One rule: requests matching `matches` go to `backendRefs`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteRule {
    /// The request matches (any one matches the rule).
    pub matches: Vec<HttpRouteMatch>,
    /// Where matched requests go.
    pub backend_refs: Vec<BackendRef>,
}

/// A request match on the path.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteMatch {
    /// The path match.
    pub path: PathMatch,
}

/// A path match: `PathPrefix` with a value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PathMatch {
    /// `PathPrefix`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The prefix.
    pub value: String,
}

/// A Service backend.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    /// The Service's name (in the route's namespace).
    pub name: String,
    /// The Service port.
    pub port: i32,
}

/// What the Gateways report about a route.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteStatus {
    /// One entry per Gateway (parent) the route attaches to.
    #[serde(default)]
    pub parents: Vec<RouteParentStatus>,
}

/// One Gateway's report about a route.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteParentStatus {
    /// The parent this entry is about.
    pub parent_ref: ParentReference,
    /// The gateway implementation that wrote it.
    #[serde(default)]
    pub controller_name: String,
    /// `Accepted`, `ResolvedRefs` and others.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// The route condition: the Gateway accepted the route.
pub const ACCEPTED: &str = "Accepted";
/// The route condition: every reference of the route resolved.
pub const RESOLVED_REFS: &str = "ResolvedRefs";

/// The desired state of a cert-manager Certificate.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "cert-manager.io",
    version = "v1",
    kind = "Certificate",
    plural = "certificates",
    namespaced,
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSpec {
    /// The `kubernetes.io/tls` Secret cert-manager writes.
    pub secret_name: String,
    /// The host names the certificate is for.
    pub dns_names: Vec<String>,
    /// The issuer.
    pub issuer_ref: CertificateIssuerRef,
}

/// A cert-manager issuer reference.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateIssuerRef {
    /// The issuer's name.
    pub name: String,
    /// `Issuer` or `ClusterIssuer`.
    pub kind: String,
    /// `cert-manager.io`.
    pub group: String,
}
