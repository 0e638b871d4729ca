//! `spec.api.expose`: how traffic reaches the API from outside the cluster.
//!
//! The app is exposed either through a `networking.k8s.io/v1` Ingress (`ingress`, with a class
//! name) or through a Gateway API `gateway.networking.k8s.io/v1` HTTPRoute attached to a Gateway
//! the user names (`gateway`); exactly one. Both route the host names in `hosts` and the path
//! prefix `path` to the API Service. TLS comes from a Secret the user names (`tls.secretName`) or
//! from a cert-manager issuer (`tls.issuer`):
//!
//! - on an Ingress, cert-manager's ingress-shim reads the `cert-manager.io/cluster-issuer` (or
//!   `cert-manager.io/issuer`) annotation and the Ingress's `spec.tls[].secretName`, and makes the
//!   Certificate itself (cert-manager documentation, "Securing Ingress Resources");
//! - on an HTTPRoute, TLS is terminated by the Gateway's listener, which the route cannot
//!   configure, and cert-manager's gateway-shim reads annotations on the Gateway only
//!   (cert-manager documentation, "Annotated Gateway resource"). The Gateway is the user's, so the
//!   operator makes a cert-manager `Certificate` for the hosts into the Secret `tls.secretName`
//!   (default `<app>-tls`), for the Gateway's listener to reference.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// How traffic reaches the API from outside the cluster: an Ingress or an HTTPRoute, for some host
/// names and a path prefix, with or without TLS.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rules::exactly_one_route_kind())]
#[x_kube(validation = rules::tls_needs_hosts())]
pub struct ExposeSpec {
    /// The host names the app answers on, e.g. `status.example.com` (a wildcard `*.example.com`
    /// is allowed). Required with `tls`; without hosts, every host name the Ingress controller or
    /// Gateway receives is routed to the app.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = rules::hosts_are_dns_names())]
    pub hosts: Vec<String>,

    /// The path prefix routed to the app. Default `/`.
    #[serde(default = "default_path")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = rules::path_is_absolute())]
    pub path: String,

    /// Route through a `networking.k8s.io/v1` Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressRoute>,

    /// Route through a Gateway API HTTPRoute attached to an existing Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayRoute>,

    /// TLS for the hosts. Needs `hosts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

/// An Ingress.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressRoute {
    /// The IngressClass (`spec.ingressClassName`); the cluster's default class when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub class_name: Option<String>,
}

/// The Gateway an HTTPRoute attaches to (its `parentRefs[0]`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRoute {
    /// The Gateway's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// The Gateway's namespace; the app's when unset. A Gateway in another namespace must allow
    /// routes from the app's (its listeners' `allowedRoutes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,

    /// The Gateway listener to attach to (`sectionName`); every listener that allows the route
    /// when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub section_name: Option<String>,
}

/// Where the TLS certificate of the hosts comes from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rules::tls_has_a_source())]
pub struct TlsSpec {
    /// The `kubernetes.io/tls` Secret holding the certificate. With `issuer`, the Secret
    /// cert-manager writes (default `<app>-tls`); without, a Secret the user provides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,

    /// A cert-manager issuer that issues the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<IssuerRef>,
}

/// A cert-manager Issuer or ClusterIssuer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// The issuer's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// `ClusterIssuer` (the default) or `Issuer` (in the app's namespace).
    #[serde(default)]
    pub kind: IssuerKind,
}

/// The kind of a cert-manager issuer.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum IssuerKind {
    /// A cluster-wide `ClusterIssuer`.
    #[default]
    ClusterIssuer,
    /// A namespaced `Issuer` in the app's namespace.
    Issuer,
}

impl IssuerKind {
    /// The kind as cert-manager spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIssuer => "ClusterIssuer",
            Self::Issuer => "Issuer",
        }
    }
}

fn default_path() -> String {
    "/".to_owned()
}

/// The CEL rules of `spec.api.expose`, each naming the field.
pub mod rules {
    use kube::core::{Reason, Rule};

    /// Exactly one of `ingress` and `gateway`.
    pub fn exactly_one_route_kind() -> Rule {
        Rule::new("has(self.ingress) != has(self.gateway)")
            .message("api.expose must set exactly one of ingress or gateway")
            .reason(Reason::FieldValueInvalid)
    }

    /// TLS names the hosts its certificate is for.
    pub fn tls_needs_hosts() -> Rule {
        Rule::new("!has(self.tls) || (has(self.hosts) && self.hosts.size() > 0)")
            .message("api.expose.tls needs api.expose.hosts: a certificate is for named hosts")
            .field_path(".tls")
            .reason(Reason::FieldValueRequired)
    }

    /// TLS has a certificate source.
    pub fn tls_has_a_source() -> Rule {
        Rule::new("has(self.secretName) || has(self.issuer)")
            .message("api.expose.tls must set secretName (a Secret you provide), issuer (cert-manager issues it), or both")
            .reason(Reason::FieldValueRequired)
    }

    /// Each host is a lowercase DNS name, optionally with a leading `*.` wildcard (as an Ingress
    /// rule's and an HTTPRoute's `hostname` allow).
    pub fn hosts_are_dns_names() -> Rule {
        Rule::new(
            "self.all(h, h.size() <= 253 && h.matches('^(\\\\*\\\\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'))",
        )
        .message("api.expose.hosts must be lowercase DNS names such as status.example.com, optionally starting with *.")
        .reason(Reason::FieldValueInvalid)
    }

    /// The path prefix is absolute.
    pub fn path_is_absolute() -> Rule {
        Rule::new("self.startsWith('/')")
            .message("api.expose.path must start with /")
            .reason(Reason::FieldValueInvalid)
    }
}
