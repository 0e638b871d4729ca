//! Validate: the KumikoApp as every later step sees it, a [`ValidatedApp`], checked once.
//!
//! Pure: the caller passes what it observed (the namespace's other apps). Everything after this
//! step takes a [`ValidatedApp`]: the database mode as an enum, every duration and quantity parsed
//! once, the effective requests and limits computed once, the child names derived once. Nothing
//! later re-parses the spec or falls back silently: a value the CRD should have rejected (an app
//! stored under an older CRD keeps one, by validation ratcheting) is a permanent error here,
//! naming the field, and the app stalls (`Stalled=True`) until its spec or its namespace changes.
//!
//! Not to be confused with [`crate::validation`], which checks a manifest against the CRD's schema
//! for `render`, as the API server would.

use std::collections::BTreeSet;
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::ResourceRequirements;
use kumiko_crds::duration::parse_duration;
use kumiko_crds::{
    AutoscalingSpec, ClusterDatabase, EgressSpec, ExternalDatabase, KumikoApp, KumikoAppSpec,
    NetworkPolicySpec, PeerSpec, ReclaimPolicy, SharedDatabase, names,
};

use crate::desired::migration_hash;
use crate::desired::resources::{self, Effective};
use crate::quantity::parse_quantity;
use crate::roles::ClusterService;

/// Why an app cannot be reconciled, as a condition reason and a message naming the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// The condition reason (`DuplicateApp`, `InvalidSpec`).
    pub reason: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// The reason of a second KumikoApp in a namespace.
pub const DUPLICATE_APP: &str = "DuplicateApp";
/// The reason of a spec the operator cannot act on.
pub const INVALID_SPEC: &str = "InvalidSpec";

/// A KumikoApp checked and parsed once: what every step after `validate` takes.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedApp<'a> {
    /// The app as stored (its metadata for owner references and Events, its spec for the fields
    /// copied as they are).
    pub app: &'a KumikoApp,
    /// `app.spec`.
    pub spec: &'a KumikoAppSpec,
    /// Every name derived from the app's.
    pub names: Names,
    /// The database, by mode.
    pub database: Database<'a>,
    /// `spec.lifecycle`, parsed.
    pub lifecycle: Lifecycle,
    /// `spec.database.role.statementTimeout`, parsed.
    pub statement_timeout: Duration,
    /// The effective requests and limits of the Kumiko containers.
    pub resources: ProcessResources,
    /// `spec.api.autoscaling`, parsed.
    pub api_autoscaler: Option<Autoscaler>,
    /// `spec.worker.autoscaling`, parsed (`None` without a worker).
    pub worker_autoscaler: Option<Autoscaler>,
    /// What the app's pods request at the peak of a rollout (the computed quota).
    pub peak: resources::PeakRequests,
    /// `spec.networkPolicy`, checked (every CIDR parsed, every `except` inside its CIDR): `None`
    /// when `enabled: false` (no policies).
    pub network_policy: Option<Isolation<'a>>,
    /// The value of the `kumiko.so/rotate-credentials` annotation, if set.
    pub rotate_credentials: Option<&'a str>,
}

/// The NetworkPolicies the app asks for (`spec.networkPolicy`, on by default).
#[derive(Clone, Debug, PartialEq)]
pub struct Isolation<'a> {
    /// Who may connect to the API port (empty: anyone).
    pub api_from: &'a [PeerSpec],
    /// Where the pods may connect to, when restricted.
    pub egress: Option<&'a EgressSpec>,
}

/// The default of an unset `spec.networkPolicy`: ingress isolation on, egress open.
static DEFAULT_NETWORK_POLICY: std::sync::LazyLock<NetworkPolicySpec> =
    std::sync::LazyLock::new(NetworkPolicySpec::default);

impl<'a> Isolation<'a> {
    /// The isolation `spec` asks for (`None` when `enabled: false`), after checking its CIDRs as
    /// the API server checks a NetworkPolicy's `ipBlock` (`ValidateIPBlock` in
    /// `pkg/apis/networking/validation/validation.go`: the CIDR parses, and each `except` is a
    /// strict subset of it); each problem names its field.
    fn new(spec: Option<&'a NetworkPolicySpec>, problems: &mut Vec<String>) -> Option<Self> {
        let spec = spec.unwrap_or(&*DEFAULT_NETWORK_POLICY);
        if let Some(egress) = &spec.egress {
            let field = "spec.networkPolicy.egress";
            for (i, cidr) in egress.database_cidrs.iter().enumerate() {
                ip_block_problems(&format!("{field}.databaseCidrs[{i}]"), cidr, &[], problems);
            }
            for (i, peer) in egress.redis.iter().enumerate() {
                if let Some(cidr) = &peer.cidr {
                    ip_block_problems(&format!("{field}.redis[{i}]"), cidr, &peer.except, problems);
                }
            }
            for (i, rule) in egress.to.iter().enumerate() {
                if let Some(cidr) = &rule.cidr {
                    ip_block_problems(&format!("{field}.to[{i}]"), cidr, &rule.except, problems);
                }
            }
        }
        spec.enabled.then_some(Self {
            api_from: &spec.api_from,
            egress: spec.egress.as_ref(),
        })
    }
}

/// The problems of an `ipBlock` of `cidr` less `except` at `field`: a CIDR that does not parse,
/// an exception that is not a strict subset of it.
pub fn ip_block_problems(field: &str, cidr: &str, except: &[String], problems: &mut Vec<String>) {
    let Ok(block) = cidr.parse::<IpNet>() else {
        problems.push(format!(
            "{field}.cidr: {cidr:?} is not a CIDR (e.g. 10.0.0.0/16)"
        ));
        return;
    };
    for (i, hole) in except.iter().enumerate() {
        match hole.parse::<IpNet>() {
            Ok(hole)
                if block.contains(&hole.network()) && hole.prefix_len() > block.prefix_len() => {}
            Ok(_) => problems.push(format!(
                "{field}.except[{i}]: {hole:?} must be a strict subset of {cidr}"
            )),
            Err(_) => problems.push(format!("{field}.except[{i}]: {hole:?} is not a CIDR")),
        }
    }
}

/// The names of the app and of every child, derived once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// The KumikoApp's name.
    pub app: String,
    /// The KumikoApp's namespace (`default` when the object names none).
    pub namespace: String,
    /// `<app>` ServiceAccount.
    pub service_account: String,
    /// The ResourceQuota and LimitRange.
    pub budget: String,
    /// The dedicated CNPG Cluster (cluster mode).
    pub database_cluster: String,
    /// The API Deployment, Service and PodDisruptionBudget.
    pub api: String,
    /// The worker Deployment and PodDisruptionBudget.
    pub worker: String,
    /// `<app>-db-owner`.
    pub owner_secret: String,
    /// `<app>-db-runtime`.
    pub runtime_secret: String,
    /// The migrate Job of the spec's image (`<app>-migrate-<hash>`).
    pub migrate_job: String,
    /// The NetworkPolicies.
    pub network_policies: NetworkPolicyNames,
}

/// The names of the app's NetworkPolicies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkPolicyNames {
    /// `<app>-api`: the API pods.
    pub api: String,
    /// `<app>-no-ingress`: the worker and migrate pods.
    pub no_ingress: String,
    /// `<app>-db`: a dedicated cluster's instances.
    pub database: String,
    /// `<app>-egress`: every pod's destinations.
    pub egress: String,
}

impl NetworkPolicyNames {
    /// Every name, in apply order.
    pub fn all(&self) -> [&str; 4] {
        [&self.api, &self.no_ingress, &self.database, &self.egress]
    }
}

impl Names {
    /// The names of app `app` in `namespace` whose migrate Job hash is `hash`.
    pub fn new(app: &str, namespace: &str, hash: &str) -> Self {
        Self {
            app: app.to_owned(),
            namespace: namespace.to_owned(),
            service_account: names::service_account(app),
            budget: names::budget(app),
            database_cluster: names::database_cluster(app),
            api: names::api(app),
            worker: names::worker(app),
            owner_secret: names::owner_secret(app),
            runtime_secret: names::runtime_secret(app),
            migrate_job: names::migrate_job(app, hash),
            network_policies: NetworkPolicyNames {
                api: names::api_network_policy(app),
                no_ingress: names::no_ingress_network_policy(app),
                database: names::database_network_policy(app),
                egress: names::egress_network_policy(app),
            },
        }
    }

    /// `namespace/name` of the app, for logs and metrics.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.app)
    }
}

/// The app's database: exactly one mode.
#[derive(Clone, Debug, PartialEq)]
pub enum Database<'a> {
    /// A dedicated CNPG Cluster, `<app>-db`, created by the operator.
    Cluster {
        /// `spec.database.cluster`.
        spec: &'a ClusterDatabase,
        /// The effective requests and limits of each Postgres instance.
        resources: Effective,
        /// `spec.database.cluster.storage.size` in bytes.
        storage_bytes: f64,
    },
    /// Roles and a database on a CNPG cluster that several apps share.
    Shared {
        /// `spec.database.shared`.
        spec: &'a SharedDatabase,
    },
    /// A database the operator does not manage.
    External {
        /// `spec.database.external`.
        spec: &'a ExternalDatabase,
    },
}

/// `spec.lifecycle`, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifecycle {
    /// `KUMIKO_STARTUP_TIMEOUT`.
    pub startup_timeout: Duration,
    /// `KUMIKO_SHUTDOWN_TIMEOUT`.
    pub shutdown_timeout: Duration,
    /// `KUMIKO_LINGER`.
    pub linger: Duration,
    /// `KUMIKO_DRAIN_TIMEOUT`.
    pub drain_timeout: Duration,
}

impl Lifecycle {
    /// The termination grace period: the shutdown timeout (in whole seconds, rounded up) plus 5s,
    /// so the process's own watchdog fires before the kubelet's SIGKILL.
    pub fn grace_period_seconds(&self) -> i64 {
        whole_seconds(self.shutdown_timeout) + 5
    }

    /// The startup timeout in whole seconds, rounded up.
    pub fn startup_seconds(&self) -> i64 {
        whole_seconds(self.startup_timeout)
    }
}

fn whole_seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis().div_ceil(1000)).unwrap_or(i64::MAX)
}

/// The CPU utilisation an autoscaler aims for when the spec names no target (percent of the
/// request).
pub const DEFAULT_CPU_UTILIZATION: i32 = 80;
/// How far back an autoscaler looks before scaling down when the spec does not say: Kubernetes'
/// default `scaleDown.stabilizationWindowSeconds`.
pub const DEFAULT_SCALE_DOWN_STABILIZATION: Duration = Duration::from_secs(300);

/// One process type's autoscaling, parsed: what the HorizontalPodAutoscaler is built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Autoscaler {
    /// The fewest pods.
    pub min_replicas: i32,
    /// The most pods.
    pub max_replicas: i32,
    /// The CPU utilisation target in percent of the request, if CPU scales the pods.
    pub cpu_utilization: Option<i32>,
    /// The memory utilisation target in percent of the request, if memory scales the pods.
    pub memory_utilization: Option<i32>,
    /// The scale-down stabilisation window.
    pub scale_down_stabilization: Duration,
}

impl Autoscaler {
    /// Parses `spec` (at `field`, for messages), adding what is wrong to `problems`.
    fn new(field: &str, spec: &AutoscalingSpec, problems: &mut Vec<String>) -> Self {
        if spec.min_replicas > spec.max_replicas {
            problems.push(format!(
                "{field}.minReplicas: {} is more than maxReplicas ({}): lower minReplicas or \
                 raise maxReplicas",
                spec.min_replicas, spec.max_replicas
            ));
        }
        let scale_down_stabilization = match spec.scale_down_stabilization.as_deref() {
            None => DEFAULT_SCALE_DOWN_STABILIZATION,
            Some(value) => parse_duration(value).unwrap_or_else(|error| {
                problems.push(format!("{field}.scaleDownStabilization: {error}"));
                Duration::ZERO
            }),
        };
        let cpu_utilization = match (spec.target_cpu_utilization, spec.target_memory_utilization) {
            (None, None) => Some(DEFAULT_CPU_UTILIZATION),
            (cpu, _) => cpu,
        };
        Self {
            min_replicas: spec.min_replicas,
            max_replicas: spec.max_replicas,
            cpu_utilization,
            memory_utilization: spec.target_memory_utilization,
            scale_down_stabilization,
        }
    }

    /// The stabilisation window in whole seconds, rounded up, as the HorizontalPodAutoscaler
    /// takes it.
    pub fn scale_down_stabilization_seconds(&self) -> i32 {
        i32::try_from(whole_seconds(self.scale_down_stabilization)).unwrap_or(i32::MAX)
    }
}

/// The effective requests and limits of the Kumiko containers.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessResources {
    /// Each API container.
    pub api: Effective,
    /// Each worker container (when the spec has a worker).
    pub worker: Option<Effective>,
    /// The migrate container.
    pub migrate: Effective,
}

impl<'a> ValidatedApp<'a> {
    /// Checks and parses `app`'s spec (every rule the schema cannot express, and every value it
    /// should have refused), reporting every problem at once.
    pub fn new(app: &'a KumikoApp) -> Result<Self, Invalid> {
        let spec = &app.spec;
        let mut problems = Vec::new();
        let mut duration = |field: &str, value: &str| match parse_duration(value) {
            Ok(duration) => duration,
            Err(error) => {
                problems.push(format!("{field}: {error}"));
                Duration::ZERO
            }
        };
        let lifecycle = Lifecycle {
            startup_timeout: duration(
                "spec.lifecycle.startupTimeout",
                &spec.lifecycle.startup_timeout,
            ),
            shutdown_timeout: duration(
                "spec.lifecycle.shutdownTimeout",
                &spec.lifecycle.shutdown_timeout,
            ),
            linger: duration("spec.lifecycle.linger", &spec.lifecycle.linger),
            drain_timeout: duration("spec.lifecycle.drainTimeout", &spec.lifecycle.drain_timeout),
        };
        let statement_timeout = duration(
            "spec.database.role.statementTimeout",
            &spec.database.role.statement_timeout,
        );
        let api_autoscaler =
            spec.api.autoscaling.as_ref().map(|autoscaling| {
                Autoscaler::new("spec.api.autoscaling", autoscaling, &mut problems)
            });
        let worker_autoscaler = spec
            .worker
            .as_ref()
            .and_then(|worker| worker.autoscaling.as_ref())
            .map(|autoscaling| {
                Autoscaler::new("spec.worker.autoscaling", autoscaling, &mut problems)
            });
        let network_policy = Isolation::new(spec.network_policy.as_ref(), &mut problems);
        problems.extend(duplicate_keys(spec));
        problems.extend(unparsable_quantities(spec));
        problems.extend(requests_above_limits(spec));
        let mut effective = |field: &str, given: Option<&ResourceRequirements>, defaults| {
            resources::effective(given, defaults, field).unwrap_or_else(|problem| {
                problems.push(problem);
                Effective::default()
            })
        };
        let process_resources = ProcessResources {
            api: effective(
                "spec.api.resources",
                spec.api.resources.as_ref(),
                resources::KUMIKO,
            ),
            worker: spec.worker.as_ref().map(|worker| {
                effective(
                    "spec.worker.resources",
                    worker.resources.as_ref(),
                    resources::KUMIKO,
                )
            }),
            migrate: effective(
                "spec.migrate.resources",
                spec.migrate.resources.as_ref(),
                resources::KUMIKO,
            ),
        };
        let database = match (
            &spec.database.cluster,
            &spec.database.shared,
            &spec.database.external,
        ) {
            (Some(cluster), None, None) => {
                let resources = effective(
                    "spec.database.cluster.resources",
                    cluster.resources.as_ref(),
                    resources::DATABASE,
                );
                let storage_bytes = match parse_quantity(&cluster.storage.size.0) {
                    Some(bytes) => bytes,
                    None => {
                        problems.push(format!(
                            "spec.database.cluster.storage.size: {:?} is not a Kubernetes quantity",
                            cluster.storage.size.0
                        ));
                        0.0
                    }
                };
                Some(Database::Cluster {
                    spec: cluster,
                    resources,
                    storage_bytes,
                })
            }
            (None, Some(shared), None) => Some(Database::Shared { spec: shared }),
            (None, None, Some(external)) => Some(Database::External { spec: external }),
            _ => {
                problems.push(
                    "spec.database: set exactly one of `cluster`, `shared` or `external`"
                        .to_owned(),
                );
                None
            }
        };
        let (Some(database), true) = (database, problems.is_empty()) else {
            return Err(Invalid {
                reason: INVALID_SPEC,
                message: problems.join("; "),
            });
        };
        let name = app.metadata.name.clone().unwrap_or_default();
        let namespace = app
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let peak = resources::peak_requests(spec, &process_resources, &database);
        Ok(Self {
            app,
            spec,
            names: Names::new(&name, &namespace, &migration_hash(app)),
            database,
            lifecycle,
            statement_timeout,
            resources: process_resources,
            api_autoscaler,
            worker_autoscaler,
            peak,
            network_policy,
            rotate_credentials: app
                .metadata
                .annotations
                .as_ref()
                .and_then(|annotations| {
                    annotations.get(crate::desired::ROTATE_CREDENTIALS_ANNOTATION)
                })
                .map(String::as_str),
        })
    }

    /// The `-rw` Service of the CNPG cluster that holds the app's roles: `<app>-db-rw` in the
    /// app's namespace (dedicated), `<clusterName>-rw` in `clusterNamespace`, default the app's
    /// (shared); `None` for an external database, which has no roles step.
    pub fn roles_cluster(&self) -> Option<ClusterService> {
        match &self.database {
            Database::Cluster { .. } => Some(ClusterService::read_write(
                &self.names.database_cluster,
                &self.names.namespace,
            )),
            Database::Shared { spec } => Some(ClusterService::read_write(
                &spec.cluster_name,
                spec.cluster_namespace
                    .as_deref()
                    .unwrap_or(&self.names.namespace),
            )),
            Database::External { .. } => None,
        }
    }

    /// Whether the roles and the database are dropped when the app is deleted.
    pub fn deletes_on_reclaim(&self) -> bool {
        match self.spec.database.reclaim_policy {
            ReclaimPolicy::Delete => true,
            ReclaimPolicy::Retain => false,
        }
    }
}

/// Checks `app` against the other KumikoApps of its namespace (`neighbours` may include `app`
/// itself; it is skipped) and the rules the schema cannot express, and parses it.
pub fn validate<'a>(
    app: &'a KumikoApp,
    neighbours: &[&KumikoApp],
) -> Result<ValidatedApp<'a>, Invalid> {
    if let Some(first) = first_app_of_namespace(app, neighbours) {
        let namespace = app.metadata.namespace.as_deref().unwrap_or("default");
        return Err(Invalid {
            reason: DUPLICATE_APP,
            message: format!(
                "namespace {namespace} already holds KumikoApp {first}; only one KumikoApp per \
                 namespace is reconciled: delete this one or move it to its own namespace"
            ),
        });
    }
    ValidatedApp::new(app)
}

/// Every resource list the operator copies into a container or the Cluster, with its field.
fn resource_fields(spec: &KumikoAppSpec) -> [(&'static str, Option<&ResourceRequirements>); 4] {
    [
        ("spec.api.resources", spec.api.resources.as_ref()),
        (
            "spec.worker.resources",
            spec.worker.as_ref().and_then(|w| w.resources.as_ref()),
        ),
        ("spec.migrate.resources", spec.migrate.resources.as_ref()),
        (
            "spec.database.cluster.resources",
            spec.database
                .cluster
                .as_ref()
                .and_then(|c| c.resources.as_ref()),
        ),
    ]
}

/// Quantities in requests and limits that are not Kubernetes quantities (the API server refuses
/// them in a pod template; the CRD's `quantity()` rules refuse them too).
fn unparsable_quantities(spec: &KumikoAppSpec) -> Vec<String> {
    let mut problems = Vec::new();
    for (field, resources) in resource_fields(spec) {
        let Some(resources) = resources else { continue };
        for (part, map) in [
            ("requests", &resources.requests),
            ("limits", &resources.limits),
        ] {
            for (name, quantity) in map.iter().flatten() {
                if parse_quantity(&quantity.0).is_none() {
                    problems.push(format!(
                        "{field}.{part}.{name}: {:?} is not a Kubernetes quantity",
                        quantity.0
                    ));
                }
            }
        }
    }
    problems
}

/// Repeated keys of the lists the operator copies into every pod template. The CRD declares them
/// list-maps and the API server refuses a duplicate, but an app stored under an older CRD keeps
/// one (validation ratcheting), and server-side apply of its Deployments would fail on it.
fn duplicate_keys(spec: &KumikoAppSpec) -> Vec<String> {
    let mut problems = Vec::new();
    let mut check = |field: &str, keys: Vec<String>, what: &str| {
        let mut seen = BTreeSet::new();
        for (index, key) in keys.into_iter().enumerate() {
            if !seen.insert(key.clone()) {
                problems.push(format!(
                    "{field}[{index}]: {key} appears twice: {what}; remove or rename the repeat"
                ));
            }
        }
    };
    check(
        "spec.env",
        spec.env
            .iter()
            .map(|e| format!("name {:?}", e.name))
            .collect(),
        "env is keyed by name",
    );
    check(
        "spec.imagePullSecrets",
        spec.image_pull_secrets
            .iter()
            .map(|s| format!("name {:?}", s.name))
            .collect(),
        "imagePullSecrets is keyed by name",
    );
    let spread = [
        ("spec.api", Some(&spec.api.scheduling)),
        ("spec.worker", spec.worker.as_ref().map(|w| &w.scheduling)),
    ];
    for (process, scheduling) in spread {
        let Some(scheduling) = scheduling else {
            continue;
        };
        check(
            &format!("{process}.scheduling.topologySpreadConstraints"),
            scheduling
                .topology_spread_constraints
                .iter()
                .map(|c| {
                    format!(
                        "topologyKey {:?} with whenUnsatisfiable {:?}",
                        c.topology_key, c.when_unsatisfiable
                    )
                })
                .collect(),
            "topologySpreadConstraints is keyed by topologyKey and whenUnsatisfiable",
        );
    }
    problems
}

/// Requests above their limits, which kube-apiserver refuses in every pod template and CNPG's
/// webhook in the Cluster (the CRD refuses them too; see [`duplicate_keys`] for why this repeats it).
fn requests_above_limits(spec: &KumikoAppSpec) -> Vec<String> {
    let mut problems = Vec::new();
    for (field, resources) in resource_fields(spec) {
        let Some(resources) = resources else { continue };
        let (Some(requests), Some(limits)) = (&resources.requests, &resources.limits) else {
            continue;
        };
        for (name, request) in requests {
            let Some(limit) = limits.get(name) else {
                continue;
            };
            if let (Some(r), Some(l)) = (parse_quantity(&request.0), parse_quantity(&limit.0))
                && r > l
            {
                problems.push(format!(
                    "{field}.requests.{name}: {} is above {field}.limits.{name} ({}): lower the request or raise the limit",
                    request.0, limit.0
                ));
            }
        }
    }
    problems
}

/// The app that owns the namespace when it is not `app`: the oldest other app (by creation time,
/// then name) that is not being deleted.
fn first_app_of_namespace(app: &KumikoApp, neighbours: &[&KumikoApp]) -> Option<String> {
    let key = |candidate: &KumikoApp| {
        (
            candidate
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|time| time.0),
            candidate.metadata.name.clone().unwrap_or_default(),
        )
    };
    let own_key = key(app);
    neighbours
        .iter()
        .filter(|other| {
            other.metadata.namespace == app.metadata.namespace
                && other.metadata.name != app.metadata.name
                && other.metadata.deletion_timestamp.is_none()
        })
        .map(|other| key(other))
        .filter(|other_key| match (&other_key.0, &own_key.0) {
            // An object without a timestamp has not been persisted: it never owns the namespace.
            (None, _) => false,
            (Some(_), None) => true,
            (Some(_), Some(_)) => *other_key < own_key,
        })
        .min()
        .map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn app(name: &str, created_second: i64) -> KumikoApp {
        let mut app: KumikoApp = serde_json::from_value(serde_json::json!({
            "apiVersion": "kumiko.so/v1alpha1",
            "kind": "KumikoApp",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {
                "image": "ghcr.io/kumiko/app:1",
                "api": {"replicas": 1},
                "database": {"cluster": {"instances": 1, "storage": {"size": "1Gi"}}}
            }
        }))
        .unwrap();
        app.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + created_second).unwrap(),
        ));
        app
    }

    #[test]
    fn a_lone_app_is_valid() {
        let first = app("first", 0);
        assert!(validate(&first, &[&first]).is_ok());
    }

    #[test]
    fn second_app_in_namespace_stalls_naming_the_first() {
        let first = app("first", 0);
        let second = app("second", 10);
        let invalid = validate(&second, &[&first, &second]).unwrap_err();
        assert_eq!(invalid.reason, DUPLICATE_APP);
        assert!(
            invalid.message.contains("KumikoApp first"),
            "{}",
            invalid.message
        );
        assert!(validate(&first, &[&first, &second]).is_ok());
    }

    #[test]
    fn apps_created_in_the_same_second_are_ordered_by_name() {
        let alpha = app("alpha", 0);
        let beta = app("beta", 0);
        assert!(validate(&beta, &[&alpha, &beta]).is_err());
        assert!(validate(&alpha, &[&alpha, &beta]).is_ok());
    }

    #[test]
    fn an_app_being_deleted_frees_the_namespace() {
        let mut first = app("first", 0);
        first.metadata.deletion_timestamp = first.metadata.creation_timestamp.clone();
        let second = app("second", 10);
        assert!(validate(&second, &[&first, &second]).is_ok());
    }

    #[test]
    fn apps_in_other_namespaces_do_not_count() {
        let mut other = app("other", 0);
        other.metadata.namespace = Some("elsewhere".to_owned());
        let second = app("second", 10);
        assert!(validate(&second, &[&other, &second]).is_ok());
    }

    /// An app stored before the CRD declared these lists (validation ratcheting keeps it) stalls
    /// naming the repeated key, instead of failing every Deployment apply.
    #[test]
    fn repeated_list_keys_stall_naming_the_field() {
        let mut broken = app("first", 0);
        broken.spec.env = serde_json::from_value(serde_json::json!([
            {"name": "A", "value": "1"}, {"name": "B"}, {"name": "A", "value": "2"}
        ]))
        .unwrap();
        broken.spec.image_pull_secrets =
            serde_json::from_value(serde_json::json!([{"name": "ghcr"}, {"name": "ghcr"}]))
                .unwrap();
        broken.spec.api.scheduling.topology_spread_constraints =
            serde_json::from_value(serde_json::json!([
                {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"},
                {"maxSkew": 2, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}
            ]))
            .unwrap();
        let invalid = validate(&broken, &[]).unwrap_err();
        assert_eq!(invalid.reason, INVALID_SPEC);
        for needle in [
            "spec.env[2]: name \"A\" appears twice",
            "spec.imagePullSecrets[1]: name \"ghcr\" appears twice",
            "spec.api.scheduling.topologySpreadConstraints[1]: topologyKey \"zone\"",
        ] {
            assert!(
                invalid.message.contains(needle),
                "{needle}: {}",
                invalid.message
            );
        }
    }

    #[test]
    fn a_request_above_its_limit_stalls_naming_the_field() {
        let mut broken = app("first", 0);
        broken.spec.migrate.resources = serde_json::from_value(serde_json::json!({
            "requests": {"memory": "1Gi"}, "limits": {"memory": "512Mi"}
        }))
        .unwrap();
        let invalid = validate(&broken, &[]).unwrap_err();
        assert_eq!(
            invalid.message,
            "spec.migrate.resources.requests.memory: 1Gi is above spec.migrate.resources.limits.memory (512Mi): lower the request or raise the limit"
        );
        broken.spec.migrate.resources = serde_json::from_value(serde_json::json!({
            "requests": {"memory": "512Mi"}, "limits": {"memory": "0.5Gi"}
        }))
        .unwrap();
        assert!(validate(&broken, &[]).is_ok());
    }

    #[test]
    fn unparsable_durations_name_the_field() {
        let mut broken = app("first", 0);
        broken.spec.lifecycle.linger = "soon".to_owned();
        let invalid = validate(&broken, &[]).unwrap_err();
        assert_eq!(invalid.reason, INVALID_SPEC);
        assert!(
            invalid.message.contains("spec.lifecycle.linger"),
            "{}",
            invalid.message
        );
    }

    /// The CRD refuses both; an app stored under an older CRD stalls naming the field.
    #[test]
    fn an_autoscaler_with_min_above_max_or_a_bad_window_stalls_naming_the_field() {
        let mut broken = app("first", 0);
        broken.spec.api.autoscaling = Some(
            serde_json::from_value(serde_json::json!({
                "minReplicas": 4, "maxReplicas": 2, "scaleDownStabilization": "later"
            }))
            .unwrap(),
        );
        let invalid = validate(&broken, &[]).unwrap_err();
        assert_eq!(invalid.reason, INVALID_SPEC);
        for field in [
            "spec.api.autoscaling.minReplicas: 4 is more than maxReplicas (2)",
            "spec.api.autoscaling.scaleDownStabilization: \"later\" is not a duration",
        ] {
            assert!(invalid.message.contains(field), "{}", invalid.message);
        }
    }

    #[test]
    fn an_unparsable_statement_timeout_stalls_naming_the_field() {
        let mut broken = app("first", 0);
        broken.spec.database.role.statement_timeout = "forever".to_owned();
        let invalid = validate(&broken, &[]).unwrap_err();
        assert_eq!(invalid.reason, INVALID_SPEC);
        assert!(
            invalid
                .message
                .starts_with("spec.database.role.statementTimeout: \"forever\" is not a duration"),
            "{}",
            invalid.message
        );
    }

    /// No silent fallback: a quantity the API server would refuse stalls the app naming the field
    /// (the builders used to treat it as absent, or as 0 in the quota).
    #[test]
    fn unparsable_quantities_stall_naming_the_field() {
        let mut broken = app("first", 0);
        broken.spec.api.resources = serde_json::from_value(serde_json::json!({
            "limits": {"cpu": "lots"}
        }))
        .unwrap();
        broken.spec.database.cluster.as_mut().unwrap().storage.size =
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("big".to_owned());
        let invalid = validate(&broken, &[]).unwrap_err();
        assert_eq!(invalid.reason, INVALID_SPEC);
        for needle in [
            "spec.api.resources.limits.cpu: \"lots\" is not a Kubernetes quantity",
            "spec.database.cluster.storage.size: \"big\" is not a Kubernetes quantity",
        ] {
            assert!(
                invalid.message.contains(needle),
                "{needle}: {}",
                invalid.message
            );
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut broken = app("first", 0);
        broken.spec.lifecycle.linger = "soon".to_owned();
        broken.spec.database.cluster = None;
        let invalid = validate(&broken, &[]).unwrap_err();
        assert!(invalid.message.contains("spec.lifecycle.linger"));
        assert!(invalid.message.contains("spec.database: set exactly one"));
    }

    #[test]
    fn a_validated_app_carries_parsed_durations_names_mode_and_effective_resources() {
        let mut valid = app("shop", 0);
        valid.spec.lifecycle.shutdown_timeout = "1m500ms".to_owned();
        valid.spec.database.cluster.as_mut().unwrap().storage.size =
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("2Gi".to_owned());
        let validated = validate(&valid, &[]).unwrap();
        assert_eq!(
            validated.lifecycle.shutdown_timeout,
            Duration::from_millis(60_500)
        );
        assert_eq!(validated.lifecycle.grace_period_seconds(), 61 + 5);
        assert_eq!(validated.statement_timeout, Duration::from_secs(30));
        assert_eq!(validated.names.api, "shop-api");
        assert_eq!(validated.names.namespace, "shop");
        assert!(validated.names.migrate_job.starts_with("shop-migrate-"));
        let Database::Cluster { storage_bytes, .. } = &validated.database else {
            panic!("cluster mode: {:?}", validated.database)
        };
        assert_eq!(*storage_bytes, 2.0 * 1024.0 * 1024.0 * 1024.0);
        assert_eq!(validated.resources.api.cpu, 0.1);
        assert_eq!(validated.resources.api.memory, 128.0 * 1024.0 * 1024.0);
        assert_eq!(
            validated.roles_cluster(),
            Some(ClusterService::read_write("shop-db", "shop"))
        );
    }

    #[test]
    fn a_shared_cluster_is_found_in_its_cluster_namespace_or_the_apps() {
        let mut shared = app("billing", 0);
        shared.spec.database.cluster = None;
        shared.spec.database.shared = serde_json::from_value(serde_json::json!(
            {"clusterName": "shared-pg", "clusterNamespace": "databases", "adminSecret": {"name": "admin"}}
        ))
        .unwrap();
        assert_eq!(
            validate(&shared, &[]).unwrap().roles_cluster(),
            Some(ClusterService::read_write("shared-pg", "databases"))
        );
        if let Some(spec) = shared.spec.database.shared.as_mut() {
            spec.cluster_namespace = None;
        }
        assert_eq!(
            validate(&shared, &[]).unwrap().roles_cluster(),
            Some(ClusterService::read_write("shared-pg", "shop"))
        );
    }
}
