//! The app's `networking.k8s.io/v1` NetworkPolicies (`spec.networkPolicy`, ingress isolation on by
//! default; see `kumiko_crds::network_policy` for what each allows and why).
//!
//! - `<app>-api`: the API pods accept connections only on the API port, from `apiFrom` (anyone
//!   when empty: a rule with no `from` admits every source, "NetworkPolicy", *NetworkPolicyIngressRule*
//!   in the Kubernetes API reference);
//! - `<app>-no-ingress`: the worker and migrate pods accept none (an `Ingress` policy with no
//!   rule);
//! - `<app>-db` (a dedicated cluster only): the CloudNativePG instances accept this app's pods on
//!   5432, each other on every port, the Kumiko operator's namespace on 5432 and CloudNativePG's
//!   operator namespace on 8000 and 5432;
//! - `<app>-egress` (opt-in): every pod of the app connects only to DNS, the database, Redis and
//!   the listed destinations.
//!
//! Each policy selects pods by the labels their builders put on them: the Kumiko pods by
//! [`Context::selector_labels`] (the Deployments' and the migrate Job's pod templates carry the
//! same), the CloudNativePG instances by the labels CloudNativePG gives them ([`CNPG_CLUSTER_LABEL`],
//! [`CNPG_POD_ROLE_LABEL`]). The test `every_selector_matches_the_pods_it_means` checks each against
//! the pods the builders make.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kumiko_crds::{EgressSpec, PeerSpec, Protocol, names};

use super::Context;
use super::pod::Process;
use crate::validate::{Database, Isolation};

/// The label CloudNativePG puts on every pod of a Cluster, valued with the Cluster's name
/// (`ClusterLabelName` in `pkg/utils/labels_annotations.go`, set on instance pods in
/// `pkg/specs/pods.go`).
pub const CNPG_CLUSTER_LABEL: &str = "cnpg.io/cluster";
/// The label CloudNativePG puts on a Cluster's pods saying what they are (`PodRoleLabelName`).
pub const CNPG_POD_ROLE_LABEL: &str = "cnpg.io/podRole";
/// The [`CNPG_POD_ROLE_LABEL`] value of a Postgres instance (`PodRoleInstance`).
pub const CNPG_POD_ROLE_INSTANCE: &str = "instance";
/// Postgres's port on a CloudNativePG instance.
pub const POSTGRES_PORT: i32 = 5432;
/// The instance manager's status port, which CloudNativePG's operator polls on every instance
/// (`StatusPort` in CloudNativePG's `pkg/management/url`).
pub const CNPG_STATUS_PORT: i32 = 8000;
/// The label Kubernetes puts on every Namespace, valued with its name (since 1.22; "Well-Known
/// Labels, Annotations and Taints": `kubernetes.io/metadata.name`).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// The namespace of the cluster DNS.
pub const DNS_NAMESPACE: &str = "kube-system";
/// The label of the cluster DNS pods: `k8s-app: kube-dns`, which kubeadm's CoreDNS manifests,
/// kind and most distributions keep for compatibility with the kube-dns they replaced.
pub const DNS_POD_LABEL: (&str, &str) = ("k8s-app", "kube-dns");
/// The DNS port.
pub const DNS_PORT: i32 = 53;
/// The component label value of the policies themselves.
const COMPONENT: &str = "network-policy";

/// The NetworkPolicies of one app.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkPolicies {
    /// `<app>-api`: the API port, from `apiFrom` (anyone by default).
    pub api: NetworkPolicy,
    /// `<app>-no-ingress`: nothing reaches the worker and migrate pods.
    pub no_ingress: NetworkPolicy,
    /// `<app>-db`: who reaches a dedicated cluster's instances (`None` for a shared or external
    /// database, which are not the app's to fence).
    pub database: Option<NetworkPolicy>,
    /// `<app>-egress`: where the app's pods connect to, when `egress` restricts it.
    pub egress: Option<NetworkPolicy>,
}

impl NetworkPolicies {
    /// The policies as a list, in apply order.
    pub fn iter(&self) -> impl Iterator<Item = &NetworkPolicy> {
        [Some(&self.api), Some(&self.no_ingress)]
            .into_iter()
            .chain([self.database.as_ref(), self.egress.as_ref()])
            .flatten()
    }
}

/// The app's NetworkPolicies, `None` when `spec.networkPolicy.enabled` is false.
pub(super) fn network_policies(context: &Context<'_>) -> Option<NetworkPolicies> {
    let isolation = context.app.network_policy.as_ref()?;
    Some(NetworkPolicies {
        api: api(context, isolation),
        no_ingress: no_ingress(context),
        database: database(context),
        egress: isolation
            .egress
            .map(|egress| egress_policy(context, egress)),
    })
}

/// The pods of every process type of the app (API, worker, migrate).
pub(super) fn app_pods(context: &Context<'_>) -> LabelSelector {
    let mut labels = context.selector_labels("");
    labels.remove(names::COMPONENT_LABEL);
    LabelSelector {
        match_labels: Some(labels),
        match_expressions: None,
    }
}

/// The instances of the dedicated cluster.
pub(super) fn database_pods(context: &Context<'_>) -> LabelSelector {
    cnpg_instances(&context.names().database_cluster)
}

/// The instances of CloudNativePG Cluster `cluster`.
fn cnpg_instances(cluster: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([
            (CNPG_CLUSTER_LABEL.to_owned(), cluster.to_owned()),
            (
                CNPG_POD_ROLE_LABEL.to_owned(),
                CNPG_POD_ROLE_INSTANCE.to_owned(),
            ),
        ])),
        match_expressions: None,
    }
}

/// The namespace named `namespace`.
fn namespace_named(namespace: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(
            NAMESPACE_NAME_LABEL.to_owned(),
            namespace.to_owned(),
        )])),
        match_expressions: None,
    }
}

fn tcp(port: i32) -> NetworkPolicyPort {
    port_of(port, Protocol::Tcp)
}

fn port_of(port: i32, protocol: Protocol) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some(protocol.as_str().to_owned()),
        end_port: None,
    }
}

fn pods(selector: LabelSelector) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(selector),
        ..NetworkPolicyPeer::default()
    }
}

fn ip_block(cidr: &str, except: &[String]) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.to_owned(),
            except: (!except.is_empty()).then(|| except.to_vec()),
        }),
        ..NetworkPolicyPeer::default()
    }
}

/// A peer of the spec (`apiFrom`, or a selector destination of `egress`).
fn selected(
    namespace_selector: Option<&LabelSelector>,
    pod_selector: Option<&LabelSelector>,
) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: namespace_selector.cloned(),
        pod_selector: pod_selector.cloned(),
        ip_block: None,
    }
}

fn policy(
    context: &Context<'_>,
    name: String,
    pod_selector: LabelSelector,
    ingress: Option<Vec<NetworkPolicyIngressRule>>,
    egress: Option<Vec<NetworkPolicyEgressRule>>,
) -> NetworkPolicy {
    let policy_types = [
        ingress.as_ref().map(|_| "Ingress"),
        egress.as_ref().map(|_| "Egress"),
    ]
    .into_iter()
    .flatten()
    .map(str::to_owned)
    .collect();
    NetworkPolicy {
        metadata: context.metadata(name, COMPONENT),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(pod_selector),
            policy_types: Some(policy_types),
            ingress,
            egress,
        }),
    }
}

/// `<app>-api`: the API pods accept the API port from `apiFrom`, or from anyone.
fn api(context: &Context<'_>, isolation: &Isolation<'_>) -> NetworkPolicy {
    let from = (!isolation.api_from.is_empty()).then(|| {
        isolation
            .api_from
            .iter()
            .map(
                |PeerSpec {
                     namespace_selector,
                     pod_selector,
                 }| {
                    selected(namespace_selector.as_ref(), pod_selector.as_ref())
                },
            )
            .collect()
    });
    policy(
        context,
        context.names().network_policies.api.clone(),
        LabelSelector {
            match_labels: Some(context.selector_labels(Process::Api.name())),
            match_expressions: None,
        },
        Some(vec![NetworkPolicyIngressRule {
            from,
            ports: Some(vec![tcp(context.app.spec.api.port)]),
        }]),
        None,
    )
}

/// `<app>-no-ingress`: the worker and migrate pods accept nothing.
fn no_ingress(context: &Context<'_>) -> NetworkPolicy {
    let mut selector = app_pods(context);
    selector.match_expressions = Some(vec![LabelSelectorRequirement {
        key: names::COMPONENT_LABEL.to_owned(),
        operator: "In".to_owned(),
        values: Some(vec![
            Process::Worker.name().to_owned(),
            Process::Migrate.name().to_owned(),
        ]),
    }]);
    policy(
        context,
        context.names().network_policies.no_ingress.clone(),
        selector,
        Some(Vec::new()),
        None,
    )
}

/// `<app>-db`: who reaches a dedicated cluster's instances.
fn database(context: &Context<'_>) -> Option<NetworkPolicy> {
    match context.app.database {
        Database::Cluster { .. } => {}
        Database::Shared { .. } | Database::External { .. } => return None,
    }
    let operators = &context.observed.operators;
    let rules = vec![
        NetworkPolicyIngressRule {
            from: Some(vec![pods(app_pods(context))]),
            ports: Some(vec![tcp(POSTGRES_PORT)]),
        },
        // Replication and the instance managers talk among the instances on any port.
        NetworkPolicyIngressRule {
            from: Some(vec![pods(database_pods(context))]),
            ports: None,
        },
        NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(namespace_named(&operators.kumiko)),
                ..NetworkPolicyPeer::default()
            }]),
            ports: Some(vec![tcp(POSTGRES_PORT)]),
        },
        NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(namespace_named(&operators.cnpg)),
                ..NetworkPolicyPeer::default()
            }]),
            ports: Some(vec![tcp(CNPG_STATUS_PORT), tcp(POSTGRES_PORT)]),
        },
    ];
    Some(policy(
        context,
        context.names().network_policies.database.clone(),
        database_pods(context),
        Some(rules),
        None,
    ))
}

/// `<app>-egress`: where every pod of the app may connect.
fn egress_policy(context: &Context<'_>, egress: &EgressSpec) -> NetworkPolicy {
    let mut rules = Vec::new();
    if egress.dns {
        rules.push(NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(namespace_named(DNS_NAMESPACE)),
                pod_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        DNS_POD_LABEL.0.to_owned(),
                        DNS_POD_LABEL.1.to_owned(),
                    )])),
                    match_expressions: None,
                }),
                ip_block: None,
            }]),
            ports: Some(vec![
                port_of(DNS_PORT, Protocol::Udp),
                port_of(DNS_PORT, Protocol::Tcp),
            ]),
        });
    }
    let database_peer = match &context.app.database {
        Database::Cluster { .. } => Some(pods(database_pods(context))),
        Database::Shared { spec } => Some(NetworkPolicyPeer {
            namespace_selector: Some(namespace_named(
                spec.cluster_namespace
                    .as_deref()
                    .unwrap_or(&context.names().namespace),
            )),
            pod_selector: Some(cnpg_instances(&spec.cluster_name)),
            ip_block: None,
        }),
        Database::External { .. } => None,
    };
    if let Some(peer) = database_peer {
        rules.push(NetworkPolicyEgressRule {
            to: Some(vec![peer]),
            ports: Some(vec![tcp(POSTGRES_PORT)]),
        });
    }
    if !egress.database_cidrs.is_empty() {
        rules.push(NetworkPolicyEgressRule {
            to: Some(
                egress
                    .database_cidrs
                    .iter()
                    .map(|cidr| ip_block(cidr, &[]))
                    .collect(),
            ),
            ports: None,
        });
    }
    if !egress.redis.is_empty() {
        rules.push(NetworkPolicyEgressRule {
            to: Some(
                egress
                    .redis
                    .iter()
                    .map(|peer| match &peer.cidr {
                        Some(cidr) => ip_block(cidr, &peer.except),
                        None => {
                            selected(peer.namespace_selector.as_ref(), peer.pod_selector.as_ref())
                        }
                    })
                    .collect(),
            ),
            ports: Some(vec![tcp(egress.redis_port)]),
        });
    }
    for rule in &egress.to {
        let peer = match &rule.cidr {
            Some(cidr) => ip_block(cidr, &rule.except),
            None => selected(rule.namespace_selector.as_ref(), rule.pod_selector.as_ref()),
        };
        rules.push(NetworkPolicyEgressRule {
            to: Some(vec![peer]),
            ports: (!rule.ports.is_empty()).then(|| {
                rule.ports
                    .iter()
                    .map(|port| port_of(port.port, port.protocol))
                    .collect()
            }),
        });
    }
    policy(
        context,
        context.names().network_policies.egress.clone(),
        app_pods(context),
        None,
        Some(rules),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use kumiko_crds::KumikoApp;

    use super::{NetworkPolicies, POSTGRES_PORT};
    use crate::desired::{Children, children};
    use crate::observed::Observed;
    use crate::validate::ValidatedApp;

    fn app(spec: &str) -> KumikoApp {
        serde_saphyr::from_str(&format!(
            "apiVersion: kumiko.so/v1alpha1\nkind: KumikoApp\nmetadata: {{name: shop, namespace: shop}}\nspec:\n  image: ghcr.io/acme/shop:1.0.0\n{spec}"
        ))
        .expect("test manifest parses")
    }

    const CLUSTER: &str =
        "  worker: {replicas: 1}\n  database: {cluster: {storage: {size: 1Gi}}}\n";

    /// Every child, at a first deploy (the migrate Job) and once rolled out (the Deployments).
    fn built(app: &KumikoApp) -> (Children, Children) {
        let validated = ValidatedApp::new(app).expect("test app is valid");
        let first = children(&validated, &Observed::default_for_render());
        let rolled = children(
            &validated,
            &Observed {
                migrated_image: Some(app.spec.image.clone()),
                running_image: Some(app.spec.image.clone()),
                ..Observed::default_for_render()
            },
        );
        (first, rolled)
    }

    fn policies(app: &KumikoApp) -> NetworkPolicies {
        built(app).0.network_policies.expect("policies are on")
    }

    /// The labels CloudNativePG puts on the instance pods of Cluster `cluster`
    /// (`pkg/specs/pods.go` with the names of `pkg/utils/labels_annotations.go`, CloudNativePG
    /// 1.27): `cnpg.io/cluster`, `cnpg.io/instanceName`, `cnpg.io/podRole: instance`,
    /// `cnpg.io/instanceRole` and the deprecated `role`.
    fn cnpg_instance_labels(cluster: &str, role: &str) -> BTreeMap<String, String> {
        [
            ("cnpg.io/cluster", cluster.to_owned()),
            ("cnpg.io/instanceName", format!("{cluster}-1")),
            ("cnpg.io/podRole", "instance".to_owned()),
            ("cnpg.io/instanceRole", role.to_owned()),
            ("role", role.to_owned()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
    }

    /// Whether `selector` selects a pod labelled `labels` (`matchLabels` and `matchExpressions`
    /// ANDed, as `metav1.LabelSelectorAsSelector` reads them).
    fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
        let by_labels = selector
            .match_labels
            .iter()
            .flatten()
            .all(|(key, value)| labels.get(key) == Some(value));
        let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let value = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                other => panic!("unknown operator {other}"),
            }
        });
        by_labels && by_expressions
    }

    /// Every pod of the app's namespace as the builders (and CloudNativePG) label it, by name.
    fn pods_of(app: &KumikoApp) -> BTreeMap<&'static str, BTreeMap<String, String>> {
        let (first, rolled) = built(app);
        let template_labels = |template: &PodTemplateSpec| {
            template
                .metadata
                .as_ref()
                .and_then(|meta| meta.labels.clone())
                .expect("a pod template has labels")
        };
        let mut pods = BTreeMap::new();
        if let Some(job) = &first.migrate_job {
            pods.insert(
                "migrate",
                template_labels(&job.spec.as_ref().expect("job spec").template),
            );
        }
        for (name, process) in [("api", &rolled.api), ("worker", &rolled.worker)] {
            if let Some(process) = process {
                let spec = process.deployment.spec.as_ref().expect("deployment spec");
                pods.insert(name, template_labels(&spec.template));
            }
        }
        if let Some(cluster) = &first.database_cluster {
            let name = cluster.metadata.name.as_deref().expect("cluster name");
            pods.insert("database-primary", cnpg_instance_labels(name, "primary"));
            pods.insert("database-replica", cnpg_instance_labels(name, "replica"));
        }
        pods
    }

    /// The pods of `pods` that `selector` selects, by name.
    fn selected<'a>(
        selector: &LabelSelector,
        pods: &BTreeMap<&'a str, BTreeMap<String, String>>,
    ) -> Vec<&'a str> {
        pods.iter()
            .filter(|(_, labels)| selects(selector, labels))
            .map(|(name, _)| *name)
            .collect()
    }

    /// The in-namespace peers (a pod selector without a namespace selector or IP block) of a
    /// policy, ingress and egress.
    fn local_peers(policy: &NetworkPolicy) -> Vec<&LabelSelector> {
        let spec = policy.spec.as_ref().expect("policy spec");
        let from = spec
            .ingress
            .iter()
            .flatten()
            .flat_map(|rule| rule.from.iter().flatten());
        let to = spec
            .egress
            .iter()
            .flatten()
            .flat_map(|rule| rule.to.iter().flatten());
        from.chain(to)
            .filter(|peer: &&NetworkPolicyPeer| {
                peer.namespace_selector.is_none() && peer.ip_block.is_none()
            })
            .filter_map(|peer| peer.pod_selector.as_ref())
            .collect()
    }

    fn pod_selector(policy: &NetworkPolicy) -> &LabelSelector {
        policy
            .spec
            .as_ref()
            .and_then(|spec| spec.pod_selector.as_ref())
            .expect("a pod selector")
    }

    /// A policy, the pods it must apply to, and the pods each of its in-namespace peers must
    /// select.
    type Case<'a> = (&'a NetworkPolicy, Vec<&'a str>, Vec<Vec<&'a str>>);

    #[test]
    fn every_selector_matches_the_pods_it_means() {
        let app = app(&format!(
            "{CLUSTER}  networkPolicy: {{egress: {{to: [{{cidr: 203.0.113.0/24}}]}}}}\n"
        ));
        let pods = pods_of(&app);
        assert_eq!(pods.len(), 5, "{pods:?}");
        let policies = policies(&app);
        let app_pods = vec!["api", "migrate", "worker"];
        let database = vec!["database-primary", "database-replica"];
        let cases: [Case<'_>; 4] = [
            (&policies.api, vec!["api"], vec![]),
            (&policies.no_ingress, vec!["migrate", "worker"], vec![]),
            (
                policies
                    .database
                    .as_ref()
                    .expect("a dedicated cluster's policy"),
                database.clone(),
                vec![app_pods.clone(), database.clone()],
            ),
            (
                policies.egress.as_ref().expect("the egress policy"),
                app_pods.clone(),
                vec![database.clone()],
            ),
        ];
        for (policy, expected, expected_peers) in cases {
            let name = policy.metadata.name.clone().unwrap_or_default();
            assert_eq!(
                selected(pod_selector(policy), &pods),
                expected,
                "the pods {name} applies to"
            );
            let peers: Vec<Vec<&str>> = local_peers(policy)
                .into_iter()
                .map(|peer| selected(peer, &pods))
                .collect();
            assert_eq!(peers, expected_peers, "the peers of {name}");
            assert!(
                peers.iter().all(|matched| !matched.is_empty()),
                "a peer of {name} selects no pod"
            );
        }
    }

    #[test]
    fn a_selector_that_matches_nothing_is_caught() {
        let pods = pods_of(&app(CLUSTER));
        let stale = LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "cnpg.io/cluster".to_owned(),
                "shop".to_owned(),
            )])),
            match_expressions: None,
        };
        assert!(selected(&stale, &pods).is_empty());
    }

    #[test]
    fn policies_are_on_by_default_and_the_api_port_is_open_to_anyone() {
        let policies = policies(&app(CLUSTER));
        let spec = policies.api.spec.as_ref().unwrap();
        assert_eq!(
            spec.policy_types.as_deref(),
            Some(&["Ingress".to_owned()][..])
        );
        let rules = spec.ingress.as_ref().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].from, None, "no from: every source");
        let ports = rules[0].ports.as_ref().unwrap();
        assert_eq!(
            ports[0].port,
            Some(IntOrString::Int(kumiko_crds::DEFAULT_PORT))
        );
        assert!(policies.egress.is_none(), "egress is opt-in");
        let no_ingress = policies.no_ingress.spec.as_ref().unwrap();
        assert_eq!(no_ingress.ingress.as_deref(), Some(&[][..]));
        assert_eq!(
            no_ingress.policy_types.as_deref(),
            Some(&["Ingress".to_owned()][..])
        );
    }

    #[test]
    fn api_from_peers_become_the_only_sources() {
        let policies = policies(&app(&format!(
            "{CLUSTER}  api: {{port: 9000}}\n  networkPolicy:\n    apiFrom:\n      - namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: ingress-nginx}}}}\n"
        )));
        let rule = &policies
            .api
            .spec
            .as_ref()
            .unwrap()
            .ingress
            .as_ref()
            .unwrap()[0];
        let from = rule.from.as_ref().unwrap();
        assert_eq!(from.len(), 1);
        let namespace = from[0].namespace_selector.as_ref().unwrap();
        assert_eq!(
            namespace.match_labels.as_ref().unwrap()["kubernetes.io/metadata.name"],
            "ingress-nginx"
        );
        assert_eq!(
            rule.ports.as_ref().unwrap()[0].port,
            Some(IntOrString::Int(9000))
        );
    }

    #[test]
    fn the_database_admits_the_app_its_instances_and_both_operators_namespaces() {
        let app = app(CLUSTER);
        let validated = ValidatedApp::new(&app).unwrap();
        let mut observed = Observed::default_for_render();
        observed.operators.kumiko = "ops".to_owned();
        observed.operators.cnpg = "databases".to_owned();
        let policies = children(&validated, &observed).network_policies.unwrap();
        let database = policies.database.unwrap();
        let rules = database.spec.unwrap().ingress.unwrap();
        let namespace_rule = |namespace: &str| {
            rules
                .iter()
                .find(|rule| {
                    rule.from.iter().flatten().any(|peer| {
                        peer.namespace_selector
                            .as_ref()
                            .and_then(|s| s.match_labels.as_ref())
                            .is_some_and(|l| l["kubernetes.io/metadata.name"] == namespace)
                    })
                })
                .unwrap_or_else(|| panic!("no rule for namespace {namespace}"))
        };
        let ports = |rule: &k8s_openapi::api::networking::v1::NetworkPolicyIngressRule| {
            rule.ports
                .iter()
                .flatten()
                .filter_map(|port| match port.port {
                    Some(IntOrString::Int(port)) => Some(port),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(ports(namespace_rule("ops")), vec![POSTGRES_PORT]);
        assert_eq!(
            ports(namespace_rule("databases")),
            vec![8000, POSTGRES_PORT]
        );
        assert_eq!(rules.len(), 4);
    }

    #[test]
    fn a_shared_or_external_database_is_not_fenced() {
        let shared = app(
            "  database: {shared: {clusterName: pg, clusterNamespace: data, adminSecret: {name: admin}}}\n",
        );
        assert!(policies(&shared).database.is_none());
        let external = app("  database: {external: {uriSecret: {name: db, key: uri}}}\n");
        assert!(policies(&external).database.is_none());
    }

    #[test]
    fn turned_off_there_are_no_policies() {
        let app = app(&format!("{CLUSTER}  networkPolicy: {{enabled: false}}\n"));
        assert!(built(&app).0.network_policies.is_none());
    }

    #[test]
    fn egress_allows_dns_the_database_redis_and_the_listed_destinations_only() {
        let shared = app(
            "  database: {shared: {clusterName: pg, clusterNamespace: data, adminSecret: {name: admin}}}\n  redis: {urlSecret: {name: redis, key: url}}\n  networkPolicy:\n    egress:\n      redis: [{podSelector: {matchLabels: {app: redis}}}]\n      to:\n        - {cidr: 10.0.0.0/8, except: [10.1.0.0/16], ports: [{port: 443}]}\n",
        );
        let egress = policies(&shared).egress.unwrap();
        let spec = egress.spec.unwrap();
        assert_eq!(
            spec.policy_types.as_deref(),
            Some(&["Egress".to_owned()][..])
        );
        let rules = spec.egress.unwrap();
        assert_eq!(rules.len(), 4, "dns, database, redis, one destination");
        let dns = &rules[0];
        let protocols: Vec<_> = dns
            .ports
            .iter()
            .flatten()
            .map(|p| (p.port.clone(), p.protocol.clone()))
            .collect();
        assert_eq!(
            protocols,
            vec![
                (Some(IntOrString::Int(53)), Some("UDP".to_owned())),
                (Some(IntOrString::Int(53)), Some("TCP".to_owned()))
            ]
        );
        let database = &rules[1].to.as_ref().unwrap()[0];
        let namespace = database.namespace_selector.as_ref().unwrap();
        assert_eq!(
            namespace.match_labels.as_ref().unwrap()["kubernetes.io/metadata.name"],
            "data"
        );
        assert_eq!(
            database
                .pod_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["cnpg.io/cluster"],
            "pg"
        );
        assert_eq!(
            rules[2].ports.as_ref().unwrap()[0].port,
            Some(IntOrString::Int(6379))
        );
        let block = rules[3].to.as_ref().unwrap()[0].ip_block.as_ref().unwrap();
        assert_eq!(block.cidr, "10.0.0.0/8");
        assert_eq!(
            block.except.as_deref(),
            Some(&["10.1.0.0/16".to_owned()][..])
        );
    }

    #[test]
    fn egress_without_dns_leaves_dns_out() {
        let app = app(&format!(
            "{CLUSTER}  networkPolicy: {{egress: {{dns: false, to: [{{cidr: 10.0.0.0/8}}]}}}}\n"
        ));
        let rules = policies(&app).egress.unwrap().spec.unwrap().egress.unwrap();
        assert_eq!(rules.len(), 2, "database and the destination");
        assert!(rules.iter().all(|rule| {
            rule.ports
                .iter()
                .flatten()
                .all(|p| p.port != Some(IntOrString::Int(53)))
        }));
    }

    #[test]
    fn an_except_outside_its_cidr_is_refused_naming_the_field() {
        let app = app(&format!(
            "{CLUSTER}  networkPolicy: {{egress: {{to: [{{cidr: 10.0.0.0/16, except: [10.1.0.0/24]}}]}}}}\n"
        ));
        let invalid = ValidatedApp::new(&app).unwrap_err();
        assert!(
            invalid
                .message
                .contains("spec.networkPolicy.egress.to[0].except[0]"),
            "{}",
            invalid.message
        );
        let equal = app_with_except("10.0.0.0/16", "10.0.0.0/16");
        assert!(ValidatedApp::new(&equal).is_err(), "not a strict subset");
        let inside = app_with_except("10.0.0.0/16", "10.0.4.0/24");
        assert!(ValidatedApp::new(&inside).is_ok());
    }

    fn app_with_except(cidr: &str, except: &str) -> KumikoApp {
        app(&format!(
            "{CLUSTER}  networkPolicy: {{egress: {{to: [{{cidr: {cidr}, except: [{except}]}}]}}}}\n"
        ))
    }
}
