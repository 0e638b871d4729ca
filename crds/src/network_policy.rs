//! `spec.networkPolicy`: which traffic reaches the app's pods and its dedicated database, and
//! (opt-in) where the app's pods may connect.
//!
//! Ingress isolation is on unless `enabled: false`. The operator then makes `networking.k8s.io/v1`
//! NetworkPolicies that:
//!
//! - let the API pods accept connections only on the API port, from the peers in `apiFrom`
//!   (default: from anywhere, as a Service reached through an Ingress controller or a Gateway in
//!   another namespace must be);
//! - let the worker and migrate pods accept no connection at all;
//! - let the instances of a dedicated CloudNativePG cluster accept connections only from this
//!   app's pods (port 5432), from each other (every port: replication), from the Kumiko
//!   operator's namespace (5432, for the roles), and from CloudNativePG's operator namespace (8000,
//!   the instance manager's status port, and 5432). A shared cluster belongs to whoever runs it and
//!   is not fenced here.
//!
//! Kubernetes documents that traffic from the pod's own node (the kubelet's probes) is always
//! allowed ("Network Policies", *Behavior of to and from selectors*), so the probes keep working.
//! NetworkPolicies are additive: a policy of your own that allows more (say, Prometheus on a
//! metrics port) is honoured beside these.
//!
//! `egress`, when set, restricts where every pod of the app (API, worker, migrate) connects to: DNS
//! (`dns`), the database (a dedicated or shared CloudNativePG cluster's instances on 5432, or
//! `databaseCidrs` for an external one), Redis (`redis`) and the `to` list. It is off by default
//! because it breaks any app that calls out to a service nobody listed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Which traffic reaches the app's pods and its dedicated database, and (opt-in) where the app's
/// pods may connect, as `networking.k8s.io/v1` NetworkPolicies. Ingress isolation is on unless
/// `enabled` is false: the API pods accept connections only on the API port (from `apiFrom`,
/// default anywhere), the worker and migrate pods accept none, and a dedicated CloudNativePG
/// cluster accepts connections only from this app's pods, its own instances, the Kumiko operator's
/// namespace and CloudNativePG's operator namespace. A shared cluster is not fenced (it is not
/// the app's). Policies are additive: your own policies may allow more.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Make the NetworkPolicies (default true). `false` makes none and deletes those made before,
    /// the egress policy too: an `egress` beside it is ignored. (Not refused: a server-side apply
    /// that drops `egress` and sets `enabled: false` at once may leave an `egress` holding only
    /// its defaults, and turning the policies off must not fail on it.)
    #[serde(default = "enabled")]
    pub enabled: bool,

    /// Who may connect to the API port: each entry a namespace selector, a pod selector, or both
    /// (pods matching the pod selector in namespaces matching the namespace selector; a pod
    /// selector alone means pods of the app's namespace). Empty (the default): any source, in or
    /// outside the cluster, may connect to the API port. Put your Ingress controller's or Gateway's
    /// namespace here to allow only it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub api_from: Vec<PeerSpec>,

    /// Restrict where the app's pods (API, worker, migrate) may connect to. Unset (the default):
    /// anywhere. Set: only DNS (unless `dns: false`), the database, Redis (`redis`) and the `to`
    /// list; anything else is refused, which breaks an app that calls a service not listed here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressSpec>,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            api_from: Vec::new(),
            egress: None,
        }
    }
}

/// A set of pods that may connect: by namespace, by pod labels, or both.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rules::peer_selects_something())]
pub struct PeerSpec {
    /// The namespaces whose pods may connect (`{}`: every namespace). A namespace's name is in its
    /// `kubernetes.io/metadata.name` label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// The pods that may connect (`{}`: every pod), in the namespaces `namespaceSelector` selects,
    /// or in the app's namespace without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
}

/// Where the app's pods may connect to once egress is restricted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rules::egress_allows_something())]
pub struct EgressSpec {
    /// Allow DNS (default true): port 53 over UDP and TCP to the cluster DNS pods, selected as
    /// kubeadm, kind and most distributions label CoreDNS: pods labelled `k8s-app: kube-dns` in
    /// the `kube-system` namespace. Set false only if the pods resolve no name (the database
    /// host is a Service name) or your cluster's DNS runs elsewhere (then list it in `to`).
    #[serde(default = "enabled")]
    pub dns: bool,

    /// The CIDRs of an external database (`database.external`), reached on any port: the operator
    /// cannot read the host from the URI Secret. Required with an external database. A dedicated
    /// or shared CloudNativePG cluster is allowed without it (its instances on port 5432).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = rules::cidrs_are_cidrs("egress.databaseCidrs"))]
    pub database_cidrs: Vec<String>,

    /// Where Redis runs (`spec.redis`), reached on `redisPort`. Required with `spec.redis`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub redis: Vec<EgressPeerSpec>,

    /// The port of Redis (default 6379).
    #[serde(default = "default_redis_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub redis_port: i32,

    /// Anything else the app calls: each entry a CIDR (with exceptions) or pods, on some ports
    /// (every port when `ports` is empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub to: Vec<EgressRuleSpec>,
}

/// A destination: a CIDR, or pods by namespace and labels.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rules::egress_peer_is_one_kind())]
pub struct EgressPeerSpec {
    /// An IPv4 or IPv6 CIDR such as `10.0.3.0/24` (`ipBlock.cidr`); not with the selectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = rules::cidr_is_cidr("egress.redis.cidr"))]
    pub cidr: Option<String>,

    /// Addresses within `cidr` that are excluded (`ipBlock.except`), each a CIDR inside `cidr`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = rules::cidrs_are_cidrs("egress.redis.except"))]
    pub except: Vec<String>,

    /// The namespaces of the destination pods (`{}`: every namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// The destination pods (`{}`: every pod), in the namespaces `namespaceSelector` selects, or
    /// in the app's namespace without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
}

/// One more destination the app's pods may connect to: a CIDR (with exceptions) or pods, on some
/// ports.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rules::egress_peer_is_one_kind())]
pub struct EgressRuleSpec {
    /// An IPv4 or IPv6 CIDR such as `203.0.113.0/24` (`ipBlock.cidr`); not with the selectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = rules::cidr_is_cidr("egress.to.cidr"))]
    pub cidr: Option<String>,

    /// Addresses within `cidr` that are excluded (`ipBlock.except`), each a CIDR inside `cidr`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = rules::cidrs_are_cidrs("egress.to.except"))]
    pub except: Vec<String>,

    /// The namespaces of the destination pods (`{}`: every namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// The destination pods (`{}`: every pod), in the namespaces `namespaceSelector` selects, or
    /// in the app's namespace without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,

    /// The destination ports (every port when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub ports: Vec<PortSpec>,
}

/// A port and its protocol.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortSpec {
    /// The port number.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// `TCP` (the default), `UDP` or `SCTP`.
    #[serde(default)]
    pub protocol: Protocol,
}

/// A transport protocol of a NetworkPolicy port.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum Protocol {
    /// TCP.
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
    /// SCTP.
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    /// The protocol as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
        }
    }
}

fn enabled() -> bool {
    true
}

fn default_redis_port() -> i32 {
    6379
}

/// The CEL rules of `spec.networkPolicy`, each naming the field.
pub mod rules {
    use kube::core::{Message, Reason, Rule};

    /// An IPv4 CIDR (`a.b.c.d/n`, each octet 0-255, n 0-32) or an IPv6 CIDR (hex groups and
    /// colons, `/n` 0-128), as a CEL regular expression. The operator parses each CIDR again
    /// (`validate`), so this only has to refuse what is plainly not a CIDR, in the API server.
    pub const CIDR_PATTERN: &str = "^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/(3[0-2]|[12]?[0-9])$|^[0-9a-fA-F:.]*:[0-9a-fA-F:.]*/(12[0-8]|1[01][0-9]|[1-9]?[0-9])$";

    /// A peer names a namespace selector, a pod selector or both (an empty peer is refused by
    /// the API server: `ValidateNetworkPolicyPeer`, "must specify a peer").
    pub fn peer_selects_something() -> Rule {
        Rule::new("has(self.namespaceSelector) || has(self.podSelector)")
            .message(
                "networkPolicy.apiFrom entries must set namespaceSelector, podSelector or both",
            )
            .reason(Reason::FieldValueRequired)
    }

    /// An egress destination (a Redis entry or a `to` entry) is a CIDR or selectors, not both (`ValidateNetworkPolicyPeer`:
    /// "may not specify both ipBlock and another peer"), and not neither; `except` goes with a
    /// CIDR.
    pub fn egress_peer_is_one_kind() -> Rule {
        Rule::new("(has(self.cidr) ? 1 : 0) + (has(self.namespaceSelector) || has(self.podSelector) ? 1 : 0) == 1 && (has(self.cidr) || !has(self.except) || size(self.except) == 0)")
            .message("networkPolicy.egress destinations must set either cidr (with optional except) or namespaceSelector/podSelector, not both and not neither")
            .reason(Reason::FieldValueInvalid)
    }

    /// Egress without DNS allows at least something besides the database.
    pub fn egress_allows_something() -> Rule {
        Rule::new("self.dns || (has(self.to) && size(self.to) > 0) || (has(self.redis) && size(self.redis) > 0) || (has(self.databaseCidrs) && size(self.databaseCidrs) > 0)")
            .message("networkPolicy.egress with dns: false and nothing in to, redis or databaseCidrs lets the pods resolve no name: keep dns or list destinations")
            .field_path(".dns")
            .reason(Reason::FieldValueInvalid)
    }

    /// `field` is a CIDR.
    pub fn cidr_is_cidr(field: &str) -> Rule {
        Rule::new(format!("self.matches('{CIDR_PATTERN}')"))
            .message(Message::Message(format!(
                "networkPolicy {field} must be a CIDR such as 10.0.0.0/16 or fd00::/8"
            )))
            .reason(Reason::FieldValueInvalid)
    }

    /// Every entry of `field` is a CIDR.
    pub fn cidrs_are_cidrs(field: &str) -> Rule {
        Rule::new(format!("self.all(c, c.matches('{CIDR_PATTERN}'))"))
            .message(Message::Message(format!(
                "networkPolicy.{field} entries must be CIDRs such as 10.0.0.0/16 or fd00::/8"
            )))
            .reason(Reason::FieldValueInvalid)
    }

    /// Restricted egress in external-database mode lists the database's CIDRs (the operator
    /// cannot read its host); without them every connection to the database is refused.
    pub fn external_database_egress_has_cidrs() -> Rule {
        Rule::new("!has(self.networkPolicy) || (has(self.networkPolicy.enabled) && !self.networkPolicy.enabled) || !has(self.networkPolicy.egress) || !has(self.database.external) || (has(self.networkPolicy.egress.databaseCidrs) && size(self.networkPolicy.egress.databaseCidrs) > 0)")
            .message("networkPolicy.egress.databaseCidrs is required with database.external: list the external database's addresses, or the pods cannot reach it")
            .field_path(".networkPolicy.egress.databaseCidrs")
            .reason(Reason::FieldValueRequired)
    }

    /// Restricted egress with `spec.redis` says where Redis is.
    pub fn redis_egress_is_listed() -> Rule {
        Rule::new("!has(self.networkPolicy) || (has(self.networkPolicy.enabled) && !self.networkPolicy.enabled) || !has(self.networkPolicy.egress) || !has(self.redis) || (has(self.networkPolicy.egress.redis) && size(self.networkPolicy.egress.redis) > 0)")
            .message("networkPolicy.egress.redis is required with spec.redis: name Redis's pods or CIDR, or the pods cannot reach it")
            .field_path(".networkPolicy.egress.redis")
            .reason(Reason::FieldValueRequired)
    }
}
