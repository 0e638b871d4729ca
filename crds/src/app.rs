//! The KumikoApp spec.
//!
//! Every field carries a doc comment: they become the CRD's descriptions and what `kubectl explain`
//! prints. Cross-field invariants are CEL rules (`x-kubernetes-validations`) so the API server
//! rejects a bad app before the operator sees it; [`crate::app::rules`] builds and documents them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvFromSource, EnvVar, LocalObjectReference, ResourceRequirements, Toleration,
    TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::status::KumikoAppStatus;

/// The longest KumikoApp name: the operator derives object names (`<app>-migrate-<hash>`,
/// `<app>-db-superuser`) and Postgres role names (`<app>_runtime`) from it, and each must fit its
/// own limit.
pub const MAX_APP_NAME_LENGTH: usize = 40;

/// The port the API process listens on unless `spec.api.port` says otherwise (the contract's).
pub const DEFAULT_PORT: i32 = kumiko_contract::DEFAULT_PORT as i32;

/// The CPU request given to a Kumiko container (and the LimitRange default) when the spec sets
/// none; a CPU limit below it lowers it to the limit.
pub const DEFAULT_CPU_REQUEST: &str = "100m";
/// The memory request given to a Kumiko container (and the LimitRange default) when the spec sets
/// neither a memory request nor a memory limit. It is also the memory limit of such a container.
pub const DEFAULT_MEMORY_REQUEST: &str = "128Mi";
/// The CPU request of a Postgres instance of a dedicated cluster when the spec sets none; a CPU
/// limit below it lowers it to the limit.
pub const DEFAULT_DATABASE_CPU_REQUEST: &str = "250m";
/// The memory request (and then the memory limit) of a Postgres instance of a dedicated cluster
/// when the spec sets neither a memory request nor a memory limit.
pub const DEFAULT_DATABASE_MEMORY_REQUEST: &str = "256Mi";

/// A Kumiko app: one image, an API and a worker process type, a database and a resource budget.
///
/// The operator gives the app a ResourceQuota, a database (a dedicated CloudNativePG cluster, a role
/// on a shared one, or an external database), its own Postgres roles, a migrate Job that runs once
/// per image before the rollout, and API and worker Deployments that drain without dropping requests.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kumiko.so",
    version = "v1alpha1",
    kind = "KumikoApp",
    plural = "kumikoapps",
    singular = "kumikoapp",
    shortname = "kapp",
    category = "kumiko",
    namespaced,
    status = "KumikoAppStatus",
    derive = "PartialEq",
    doc = "A Kumiko app: one image, an API and a worker process type, a database and a resource budget, run by the Kumiko operator.",
    validation = rules::name_is_dns_label(),
    validation = rules::name_fits_derived_names(),
    scale(
        spec_replicas_path = ".spec.api.replicas",
        status_replicas_path = ".status.api.replicas",
        label_selector_path = ".status.api.selector"
    ),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Whether the current generation is fully rolled out"),
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image", description = "The image the app runs (or is rolling out to)"),
    printcolumn(name = "API", type_ = "string", json_path = ".status.api.summary", description = "API pods ready/desired"),
    printcolumn(name = "Worker", type_ = "string", json_path = ".status.worker.summary", description = "Worker pods ready/desired"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", priority = 1, description = "Why the app is or is not Ready")
)]
#[x_kube(validation = rules::quota_fits_cpu())]
#[x_kube(validation = rules::quota_fits_memory())]
#[x_kube(validation = rules::quota_fits_pods())]
#[x_kube(validation = rules::quota_fits_storage())]
#[x_kube(validation = crate::network_policy::rules::external_database_egress_has_cidrs())]
#[x_kube(validation = crate::network_policy::rules::redis_egress_is_listed())]
#[serde(rename_all = "camelCase")]
pub struct KumikoAppSpec {
    /// The container image every process type runs, with a tag or a digest, for example
    /// `ghcr.io/acme/status:1.4.2`. A change of image runs the migrate Job for the new image before
    /// any pod moves to it.
    #[x_kube(validation = rules::image_reference())]
    #[schemars(length(max = 512))]
    pub image: String,

    /// When the kubelet pulls the image: `Always`, `IfNotPresent` or `Never`. Kubernetes' default
    /// applies when unset (`Always` for `:latest`, `IfNotPresent` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// Secrets in the app's namespace used to pull the image, each named once: a list keyed by
    /// `name`, as the Pod's `imagePullSecrets` is (`x-kubernetes-list-type: map`), so the API server
    /// rejects a repeated name here rather than when it applies the pod templates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// Environment variables for every process type (API, worker, migrate). The names of the
    /// operator/app contract (`PORT`, `DATABASE_URL`, `REDIS_URL`, `KUMIKO_*`) are the operator's
    /// and cannot be set here: use the spec fields that drive them. Each name appears once: a list
    /// keyed by `name`, as a container's `env` is (`x-kubernetes-list-type: map`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    #[x_kube(validation = rules::env_leaves_contract_names_alone())]
    pub env: Vec<EnvVar>,

    /// Sources of environment variables (ConfigMaps, Secrets) for every process type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub env_from: Vec<EnvFromSource>,

    /// The API process type: serves HTTP on `port` (`kumiko-app serve`).
    #[serde(default)]
    pub api: ApiSpec,

    /// The worker process type: runs background and cron jobs (`kumiko-app worker`). Omit it, or set
    /// `replicas: 0`, for an app without background work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerSpec>,

    /// The pre-deploy migration Job (`kumiko-app migrate apply`), run once per image before the
    /// rollout.
    #[serde(default)]
    pub migrate: MigrateSpec,

    /// Boot and shutdown timings every process honours, and from which the operator derives probes
    /// and the termination grace period.
    #[serde(default)]
    pub lifecycle: LifecycleSpec,

    /// The app's database: exactly one of `cluster`, `shared` or `external`.
    pub database: DatabaseSpec,

    /// The resource budget of the app's namespace. When omitted, the operator sizes a quota from the
    /// spec (replicas × requests, plus one surge pod per process type and the migrate Job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaSpec>,

    /// Redis for leader election and shared state (`REDIS_URL`). Without it, each process is its own
    /// leader, which is right only for a single worker replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisSpec>,

    /// Which traffic reaches the app's pods and its dedicated database, and (opt-in, `egress`)
    /// where the pods may connect, as NetworkPolicies. Unset: ingress isolation on, egress open
    /// (the API port from anywhere; worker and migrate pods accept nothing; a dedicated database
    /// only from this app, its instances and the operators). See `networkPolicy.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<crate::network_policy::NetworkPolicySpec>,
    /// Prometheus scraping of every API and worker pod's `/metrics` through a
    /// prometheus-operator PodMonitor (`monitoring.coreos.com/v1`). Off when unset. Where the
    /// cluster does not serve PodMonitors, the `MonitoringAvailable` condition says what to
    /// install and the app is Ready all the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<crate::monitoring::MonitoringSpec>,

    /// Stops every write of the operator except status: nothing is created, changed or deleted while
    /// true.
    #[serde(default)]
    pub paused: bool,
}

/// When the kubelet pulls an image.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ImagePullPolicy {
    /// Pull on every pod start.
    Always,
    /// Pull only when the node lacks the image.
    IfNotPresent,
    /// Never pull; the image must be on the node.
    Never,
}

impl ImagePullPolicy {
    /// The value as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// Where a process type's pods may run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    /// Node labels a pod's node must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tolerations: Vec<Toleration>,

    /// Node and pod affinity rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// How pods spread across zones and nodes. When empty, the operator spreads the process type's
    /// pods across nodes (`ScheduleAnyway`). Each `topologyKey` and `whenUnsatisfiable` pair appears
    /// once: a list keyed by both, as the Pod's `topologySpreadConstraints` is
    /// (`x-kubernetes-list-type: map`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["topologyKey", "whenUnsatisfiable"]
    ))]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
}

/// The API process type.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiSpec {
    /// How many API pods run. 0 stops serving; at least 2 keep serving through a node drain.
    /// Ignored while `autoscaling` is set: the HorizontalPodAutoscaler sets the replicas then.
    /// `kubectl scale kumikoapp/<name> --replicas=N` sets this field (the KumikoApp's `scale`
    /// subresource).
    #[serde(default = "default_api_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,

    /// Scales the API pods with their CPU (and memory) use, by an `autoscaling/v2`
    /// HorizontalPodAutoscaler named after the API Deployment. While set, the operator leaves the
    /// Deployment's `replicas` to the autoscaler and never reverts it; the quota is sized for
    /// `maxReplicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// Overrides the container's entrypoint. Default: the image's entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub command: Option<Vec<String>>,

    /// Overrides the arguments. Default: `["serve"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub args: Option<Vec<String>>,

    /// The port the process listens on for traffic and health (`PORT`). Default 3000.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub port: i32,

    /// CPU and memory of each API container. Requests default to 100m CPU and 128Mi memory.
    /// A request may not exceed its limit (the API server rejects such a container). Memory: a
    /// container always gets a memory limit, so no app can take a node's memory from its
    /// neighbours; without one here it equals the memory request, and with only a memory limit the
    /// request takes the limit (as Kubernetes defaults it). CPU: a CPU limit only where given here,
    /// because CPU is compressible: a busy container is throttled, not killed, and an unused limit
    /// only strands cores; with only a CPU limit below the default request, the request takes the
    /// limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::request_within_limit("api.resources", rules::Resource::Cpu))]
    #[x_kube(validation = rules::request_within_limit("api.resources", rules::Resource::Memory))]
    pub resources: Option<ResourceRequirements>,

    /// Where API pods may run.
    #[serde(default)]
    pub scheduling: SchedulingSpec,

    /// How traffic reaches the API from outside the cluster (an Ingress or a Gateway API
    /// HTTPRoute, with TLS). Not exposed when unset: the API Service is reachable in the cluster
    /// only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose: Option<crate::expose::ExposeSpec>,
}

impl Default for ApiSpec {
    fn default() -> Self {
        Self {
            replicas: default_api_replicas(),
            autoscaling: None,
            command: None,
            args: None,
            port: DEFAULT_PORT,
            resources: None,
            scheduling: SchedulingSpec::default(),
            expose: None,
        }
    }
}

impl ApiSpec {
    /// The most API pods that run outside a rollout: the autoscaler's `maxReplicas` when it has
    /// one, else `replicas`.
    pub fn peak_replicas(&self) -> i32 {
        self.autoscaling
            .as_ref()
            .map_or(self.replicas, |autoscaling| autoscaling.max_replicas)
    }
}

/// The worker process type.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerSpec {
    /// How many worker pods run. With more than one, set `redis` so that cron jobs run once.
    /// Ignored while `autoscaling` is set.
    #[serde(default = "default_worker_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,

    /// Scales the worker pods with their CPU (and memory) use, by an `autoscaling/v2`
    /// HorizontalPodAutoscaler named after the worker Deployment. While set, the operator leaves
    /// the Deployment's `replicas` to the autoscaler; the quota is sized for `maxReplicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// Overrides the container's entrypoint. Default: the image's entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub command: Option<Vec<String>>,

    /// Overrides the arguments. Default: `["worker"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub args: Option<Vec<String>>,

    /// CPU and memory of each worker container. Requests default to 100m CPU and 128Mi memory.
    /// A request may not exceed its limit (the API server rejects such a container). Memory: a
    /// container always gets a memory limit, so no app can take a node's memory from its
    /// neighbours; without one here it equals the memory request, and with only a memory limit the
    /// request takes the limit (as Kubernetes defaults it). CPU: a CPU limit only where given here,
    /// because CPU is compressible: a busy container is throttled, not killed, and an unused limit
    /// only strands cores; with only a CPU limit below the default request, the request takes the
    /// limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::request_within_limit("worker.resources", rules::Resource::Cpu))]
    #[x_kube(validation = rules::request_within_limit("worker.resources", rules::Resource::Memory))]
    pub resources: Option<ResourceRequirements>,

    /// Where worker pods may run.
    #[serde(default)]
    pub scheduling: SchedulingSpec,
}

impl Default for WorkerSpec {
    fn default() -> Self {
        Self {
            replicas: default_worker_replicas(),
            autoscaling: None,
            command: None,
            args: None,
            resources: None,
            scheduling: SchedulingSpec::default(),
        }
    }
}

impl WorkerSpec {
    /// The most worker pods that run outside a rollout: the autoscaler's `maxReplicas` when it
    /// has one, else `replicas`.
    pub fn peak_replicas(&self) -> i32 {
        self.autoscaling
            .as_ref()
            .map_or(self.replicas, |autoscaling| autoscaling.max_replicas)
    }
}

/// Horizontal autoscaling of one process type: an `autoscaling/v2` HorizontalPodAutoscaler keeps
/// the average utilisation of the pods' requests near the targets, between `minReplicas` and
/// `maxReplicas`, with Kubernetes' scaling algorithm and default scale-up rate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rules::min_replicas_within_max())]
pub struct AutoscalingSpec {
    /// The fewest pods the autoscaler keeps. Default 1, as the HorizontalPodAutoscaler's.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,

    /// The most pods the autoscaler may run. The quota is sized for this many.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,

    /// The average CPU use the autoscaler aims for, in percent of the pods' CPU request. Default
    /// 80 when `targetMemoryUtilization` is not set either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub target_cpu_utilization: Option<i32>,

    /// The average memory use the autoscaler aims for, in percent of the pods' memory request.
    /// Unset: memory does not scale the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub target_memory_utilization: Option<i32>,

    /// How long the autoscaler looks back before it scales down: it takes the highest
    /// recommendation of this window, so a short dip does not remove pods. Written like `"5m"`;
    /// default `5m` (Kubernetes' default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::duration::DURATION_PATTERN), length(min = 2, max = 16))]
    pub scale_down_stabilization: Option<String>,
}

fn default_min_replicas() -> i32 {
    1
}

/// The pre-deploy migration Job.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrateSpec {
    /// Overrides the container's entrypoint. Default: the image's entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub command: Option<Vec<String>>,

    /// Overrides the arguments. Default: `["migrate", "apply"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub args: Option<Vec<String>>,

    /// How long the Job may run before Kubernetes stops it, in seconds. Default 600.
    #[serde(default = "default_migrate_deadline")]
    #[schemars(range(min = 1, max = 86400))]
    pub active_deadline_seconds: i64,

    /// How many times a failed migration pod is retried. Default 0: a failed migration is reported,
    /// not retried, because a half-applied migration needs a person.
    #[serde(default)]
    #[schemars(range(min = 0, max = 10))]
    pub backoff_limit: i32,

    /// CPU and memory of the migrate container. Requests default to 100m CPU and 128Mi memory.
    /// A request may not exceed its limit (the API server rejects such a container). Memory: a
    /// container always gets a memory limit, so no app can take a node's memory from its
    /// neighbours; without one here it equals the memory request, and with only a memory limit the
    /// request takes the limit (as Kubernetes defaults it). CPU: a CPU limit only where given here,
    /// because CPU is compressible: a busy container is throttled, not killed, and an unused limit
    /// only strands cores; with only a CPU limit below the default request, the request takes the
    /// limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::request_within_limit("migrate.resources", rules::Resource::Cpu))]
    #[x_kube(validation = rules::request_within_limit("migrate.resources", rules::Resource::Memory))]
    pub resources: Option<ResourceRequirements>,
}

impl Default for MigrateSpec {
    fn default() -> Self {
        Self {
            command: None,
            args: None,
            active_deadline_seconds: default_migrate_deadline(),
            backoff_limit: 0,
            resources: None,
        }
    }
}

/// Boot and shutdown timings (seed 003). Durations are written like `"40s"`, `"1m30s"`, `"500ms"`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rules::shutdown_covers_linger_and_drain())]
pub struct LifecycleSpec {
    /// The longest a process may take from start to ready (`KUMIKO_STARTUP_TIMEOUT`); the startup
    /// probe allows this long. Default `120s`.
    #[serde(default = "default_startup_timeout")]
    #[schemars(regex(pattern = crate::duration::DURATION_PATTERN), length(min = 2, max = 16))]
    pub startup_timeout: String,

    /// The hard cap on a graceful shutdown (`KUMIKO_SHUTDOWN_TIMEOUT`). The pod's termination grace
    /// period is this plus 5s. Must exceed `linger + drainTimeout`. Default `40s`.
    #[serde(default = "default_shutdown_timeout")]
    #[schemars(regex(pattern = crate::duration::DURATION_PATTERN), length(min = 2, max = 16))]
    pub shutdown_timeout: String,

    /// How long a draining process keeps serving after readiness turns 503, so load balancers stop
    /// sending traffic first (`KUMIKO_LINGER`). Default `3s`.
    #[serde(default = "default_linger")]
    #[schemars(regex(pattern = crate::duration::DURATION_PATTERN), length(min = 2, max = 16))]
    pub linger: String,

    /// How long in-flight requests may take to finish after the listener closes
    /// (`KUMIKO_DRAIN_TIMEOUT`). Default `30s`.
    #[serde(default = "default_drain_timeout")]
    #[schemars(regex(pattern = crate::duration::DURATION_PATTERN), length(min = 2, max = 16))]
    pub drain_timeout: String,
}

impl Default for LifecycleSpec {
    fn default() -> Self {
        Self {
            startup_timeout: default_startup_timeout(),
            shutdown_timeout: default_shutdown_timeout(),
            linger: default_linger(),
            drain_timeout: default_drain_timeout(),
        }
    }
}

/// The app's database. Exactly one of `cluster`, `shared` and `external` is set, and which one
/// cannot change after creation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rules::exactly_one_database_mode())]
#[x_kube(validation = rules::database_mode_is_immutable())]
pub struct DatabaseSpec {
    /// A dedicated CloudNativePG cluster for this app, created and owned by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterDatabase>,

    /// A database and roles on an existing CloudNativePG cluster that several apps share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharedDatabase>,

    /// A database the operator does not manage, reached through a Secret holding its URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalDatabase>,

    /// Settings of the app's runtime role.
    #[serde(default)]
    pub role: RoleSpec,

    /// What happens to the app's data when the KumikoApp is deleted. `Retain` (the default)
    /// keeps it; `Delete` removes it. By database mode:
    ///
    /// - `cluster`: with `Retain` the CNPG Cluster (and so its PersistentVolumeClaims and
    ///   volumes), its roles and its database outlive the app: the Cluster carries no owner
    ///   reference to the app, only its labels (`app.kubernetes.io/instance: <app>`), and a
    ///   KumikoApp created again with the same name in the same namespace adopts it, data
    ///   included. With `Delete` the operator drops the app's roles and database, then the
    ///   Cluster is garbage-collected with the app, and CNPG's claims and volumes with it.
    /// - `shared`: the cluster is never touched. `Retain` keeps the app's roles and database on
    ///   it; `Delete` terminates the app's sessions and drops them.
    /// - `external`: the operator creates nothing in that database and removes nothing.
    ///
    /// In every mode the credential Secrets (`<app>-db-owner`, `<app>-db-runtime`) go with the
    /// app; a re-created app sets new passwords on the retained roles. Deleting the whole
    /// namespace deletes everything in it, a retained Cluster and its claims included: keep data
    /// that must survive its namespace in a shared cluster elsewhere, or in backups
    /// (`cluster.backup`).
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,
}

impl DatabaseSpec {
    /// The database mode, as the spec names it.
    pub fn mode(&self) -> Option<DatabaseMode> {
        match (&self.cluster, &self.shared, &self.external) {
            (Some(_), None, None) => Some(DatabaseMode::Cluster),
            (None, Some(_), None) => Some(DatabaseMode::Shared),
            (None, None, Some(_)) => Some(DatabaseMode::External),
            _ => None,
        }
    }
}

/// Which kind of database an app uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatabaseMode {
    /// `spec.database.cluster`.
    Cluster,
    /// `spec.database.shared`.
    Shared,
    /// `spec.database.external`.
    External,
}

/// A dedicated CloudNativePG cluster (`postgresql.cnpg.io/v1` Cluster, CNPG ≥ 1.27).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterDatabase {
    /// How many Postgres instances: 1 primary plus replicas. Default 1; 3 for high availability.
    #[serde(default = "default_instances")]
    #[schemars(range(min = 1, max = 9))]
    pub instances: i32,

    /// The volume of each instance.
    pub storage: StorageSpec,

    /// The Postgres container image (CNPG's `imageName`). Default: the CNPG operator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub image_name: Option<String>,

    /// CPU and memory of each Postgres instance. Requests default to 250m CPU and 256Mi memory.
    /// A request may not exceed its limit (the API server rejects such a container). Memory: a
    /// container always gets a memory limit, so no app can take a node's memory from its
    /// neighbours; without one here it equals the memory request, and with only a memory limit the
    /// request takes the limit (as Kubernetes defaults it). CPU: a CPU limit only where given here,
    /// because CPU is compressible: a busy container is throttled, not killed, and an unused limit
    /// only strands cores; with only a CPU limit below the default request, the request takes the
    /// limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::request_within_limit("database.cluster.resources", rules::Resource::Cpu))]
    #[x_kube(validation = rules::request_within_limit("database.cluster.resources", rules::Resource::Memory))]
    pub resources: Option<ResourceRequirements>,

    /// Passed unchanged to the Cluster's `spec.backup` (see the CloudNativePG documentation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::app::preserve_unknown_fields")]
    pub backup: Option<serde_json::Value>,
}

/// A persistent volume request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rules::storage_never_shrinks())]
pub struct StorageSpec {
    /// The size of each instance's volume, for example `10Gi`. It can grow, never shrink.
    pub size: Quantity,

    /// The StorageClass. Default: the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub storage_class: Option<String>,
}

/// A database on an existing CloudNativePG cluster that several apps share.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SharedDatabase {
    /// The shared Cluster's name.
    #[schemars(length(min = 1, max = 50))]
    pub cluster_name: String,

    /// The shared Cluster's namespace. A short host in the admin Secret (CNPG writes its
    /// `-rw` Service name, `<clusterName>-rw`) is qualified with it, as
    /// `<host>.<clusterNamespace>.svc`, for the operator and in the app's credential Secrets, so
    /// the app's pods resolve it from their own namespace. Default: the app's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub cluster_namespace: Option<String>,

    /// A Secret in the app's namespace with admin credentials for the shared cluster: a copy of
    /// CNPG's `<clusterName>-superuser` Secret, or CNPG's keys (`username`, `password`, and
    /// optionally `host`, `port`, `dbname`), or one `uri`. Without a host the operator dials
    /// `<clusterName>-rw` on port 5432; a `dbname` of `*` means `postgres`. The operator uses it
    /// only to create this app's roles and database.
    pub admin_secret: LocalObjectReference,
}

/// A database the operator does not manage.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalDatabase {
    /// The Secret (in the app's namespace) and key holding a `postgres://` URI. The operator
    /// provisions no roles for an external database: every process, the migrate Job included,
    /// connects with this URI.
    pub uri_secret: SecretKeyRef,
}

/// A key of a Secret in the app's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// The key within the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Settings of the app's runtime Postgres role (the one `serve` and `worker` use).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleSpec {
    /// The most connections the runtime role may hold at once (`CONNECTION LIMIT`). Default 20.
    #[serde(default = "default_connection_limit")]
    #[schemars(range(min = 1, max = 10000))]
    pub connection_limit: i32,

    /// The longest a statement of the runtime role may run (`statement_timeout`). Default `30s`.
    #[serde(default = "default_statement_timeout")]
    #[schemars(regex(pattern = crate::duration::DURATION_PATTERN), length(min = 2, max = 16))]
    pub statement_timeout: String,
}

impl Default for RoleSpec {
    fn default() -> Self {
        Self {
            connection_limit: default_connection_limit(),
            statement_timeout: default_statement_timeout(),
        }
    }
}

/// What happens to the app's Postgres roles and database when the KumikoApp is deleted.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum ReclaimPolicy {
    /// Keep the roles and the data (and a dedicated Cluster, which a re-created app adopts).
    #[default]
    Retain,
    /// Terminate the app's sessions, then drop its roles and its database (and a dedicated
    /// Cluster with its volumes).
    Delete,
}

/// The resource budget of the app's namespace (a ResourceQuota). Each value that is set must fit
/// what the spec asks for; each value left out is computed from the spec.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaSpec {
    /// Total CPU requests (`requests.cpu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,

    /// Total memory requests (`requests.memory`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,

    /// The most pods at once (`pods`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub pods: Option<i32>,

    /// Total storage requested by volume claims (`requests.storage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Quantity>,
}

/// Where the app finds Redis.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisSpec {
    /// The Secret and key holding the `redis://` URL, given to every process as `REDIS_URL`.
    pub url_secret: SecretKeyRef,
}

fn default_api_replicas() -> i32 {
    2
}
fn default_worker_replicas() -> i32 {
    1
}
fn default_port() -> i32 {
    DEFAULT_PORT
}
fn default_migrate_deadline() -> i64 {
    600
}
fn default_startup_timeout() -> String {
    kumiko_contract::duration::format_duration(kumiko_contract::DEFAULT_STARTUP_TIMEOUT)
}
fn default_shutdown_timeout() -> String {
    kumiko_contract::duration::format_duration(kumiko_contract::DEFAULT_SHUTDOWN_TIMEOUT)
}
fn default_linger() -> String {
    kumiko_contract::duration::format_duration(kumiko_contract::DEFAULT_LINGER)
}
fn default_drain_timeout() -> String {
    kumiko_contract::duration::format_duration(kumiko_contract::DEFAULT_DRAIN_TIMEOUT)
}
fn default_instances() -> i32 {
    1
}
fn default_connection_limit() -> i32 {
    20
}
fn default_statement_timeout() -> String {
    "30s".to_owned()
}

/// The schema of a free-form object passed through to another API.
pub(crate) fn preserve_unknown_fields(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// The CEL rules of the KumikoApp CRD, each with a message that names the field and the fix.
pub mod rules {
    use kube::core::{Message, Reason, Rule};

    /// `metadata.name` is a DNS-1035 label: Services and Postgres identifiers derive from it.
    pub fn name_is_dns_label() -> Rule {
        Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
            .message("metadata.name must start with a lowercase letter and contain only lowercase letters, digits and '-' (a DNS-1035 label), because Service and Postgres role names derive from it")
            .reason(Reason::FieldValueInvalid)
    }

    /// `metadata.name` leaves room for the longest derived name.
    pub fn name_fits_derived_names() -> Rule {
        Rule::new(format!(
            "self.metadata.name.size() <= {}",
            super::MAX_APP_NAME_LENGTH
        ))
        .message(Message::Message(format!(
            "metadata.name must be at most {} characters: the operator derives <name>-migrate-<hash> (63 at most) and Postgres role names from it",
            super::MAX_APP_NAME_LENGTH
        )))
        .reason(Reason::FieldValueInvalid)
    }

    /// An image reference with a registry path and a tag or digest.
    pub fn image_reference() -> Rule {
        let component = "[a-z0-9]+((\\\\.|_|__|-+)[a-z0-9]+)*";
        let domain = "[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\\\\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*(:[0-9]+)?/";
        let tag = ":[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127}";
        let digest = "@sha256:[a-f0-9]{64}";
        Rule::new(format!(
            "self.matches('^({domain})?{component}(/{component})*({tag}({digest})?|{digest})$')"
        ))
        .message("image must be an image reference with a tag or a digest, for example ghcr.io/acme/status:1.4.2 or ghcr.io/acme/status@sha256:<64 hex digits>")
        .reason(Reason::FieldValueInvalid)
    }

    /// The environment variables the operator sets itself (the contract's).
    pub const CONTRACT_ENV_NAMES: &[&str] = kumiko_contract::env::OPERATOR_SET;

    /// `spec.env` does not set a name of the operator/app contract.
    pub fn env_leaves_contract_names_alone() -> Rule {
        let names = CONTRACT_ENV_NAMES
            .iter()
            .map(|name| format!("'{name}'"))
            .collect::<Vec<_>>()
            .join(", ");
        Rule::new(format!("self.all(e, !(e.name in [{names}]))"))
            .message("env must not set PORT, DATABASE_URL, REDIS_URL or KUMIKO_* variables: the operator sets them from api.port, database, redis and lifecycle")
            .reason(Reason::FieldValueForbidden)
    }

    /// The shutdown cap leaves time for the linger and the drain.
    pub fn shutdown_covers_linger_and_drain() -> Rule {
        Rule::new("duration(self.shutdownTimeout) > duration(self.linger) + duration(self.drainTimeout)")
            .message("lifecycle.shutdownTimeout must be longer than lifecycle.linger + lifecycle.drainTimeout, or the shutdown watchdog cuts every drain short: raise shutdownTimeout or lower linger/drainTimeout")
            .field_path(".shutdownTimeout")
            .reason(Reason::FieldValueInvalid)
    }

    /// An autoscaler's `minReplicas` is at most its `maxReplicas` (the HorizontalPodAutoscaler
    /// would be rejected by the API server otherwise: `ValidateHorizontalPodAutoscalerSpec`).
    pub fn min_replicas_within_max() -> Rule {
        Rule::new("!has(self.minReplicas) || self.minReplicas <= self.maxReplicas")
            .message("autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas: lower minReplicas or raise maxReplicas")
            .field_path(".minReplicas")
            .reason(Reason::FieldValueInvalid)
    }

    /// Exactly one of the three database modes.
    pub fn exactly_one_database_mode() -> Rule {
        Rule::new("(has(self.cluster) ? 1 : 0) + (has(self.shared) ? 1 : 0) + (has(self.external) ? 1 : 0) == 1")
            .message("database must set exactly one of cluster, shared or external")
            .reason(Reason::FieldValueInvalid)
    }

    /// The database mode cannot change after creation: moving data between modes is a migration
    /// a person runs, not a field edit.
    pub fn database_mode_is_immutable() -> Rule {
        Rule::new("has(self.cluster) == has(oldSelf.cluster) && has(self.shared) == has(oldSelf.shared) && has(self.external) == has(oldSelf.external)")
            .message("the database mode (cluster, shared or external) cannot change after creation: create a new KumikoApp and move the data")
            .reason(Reason::FieldValueForbidden)
    }

    /// A dedicated cluster's volumes can grow but not shrink (CloudNativePG cannot shrink them).
    pub fn storage_never_shrinks() -> Rule {
        Rule::new("quantity(string(self.size)).compareTo(quantity(string(oldSelf.size))) >= 0")
            .message("database.cluster.storage.size cannot shrink (volumes only grow): keep it at least the old size")
            .field_path(".size")
            .reason(Reason::FieldValueForbidden)
    }

    /// A compute resource a container requests and may be limited in.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Resource {
        /// `cpu`.
        Cpu,
        /// `memory`.
        Memory,
    }

    impl Resource {
        /// The resource's name in `requests` and `limits`.
        pub fn as_str(self) -> &'static str {
            match self {
                Self::Cpu => "cpu",
                Self::Memory => "memory",
            }
        }
    }

    /// The `resource` request of the `ResourceRequirements` at `field` (e.g. `api.resources`) is
    /// at most its limit. kube-apiserver rejects a container whose request exceeds its limit
    /// (`ValidateResourceRequirements` in `pkg/apis/core/validation/validation.go`: "must be less
    /// than or equal to cpu limit of …"), so such a spec would stall every rollout; here it is
    /// refused when it is written.
    pub fn request_within_limit(field: &str, resource: Resource) -> Rule {
        let name = resource.as_str();
        Rule::new(format!(
            "!has(self.requests) || !has(self.limits) || !('{name}' in self.requests) || !('{name}' in self.limits) \
             || quantity(string(self.requests['{name}'])).compareTo(quantity(string(self.limits['{name}']))) <= 0"
        ))
        .message(Message::Message(format!(
            "{field}.requests.{name} must be less than or equal to {field}.limits.{name}: Kubernetes rejects a container whose request is above its limit; lower the request or raise the limit"
        )))
        .reason(Reason::FieldValueInvalid)
    }

    /// The CEL expression for the effective request of `resource` of a container whose
    /// `ResourceRequirements` lives at `path`: the spec's request; else, for memory, the spec's
    /// limit (as Kubernetes defaults a missing request); else `default`, lowered to the spec's CPU
    /// limit when that is below it. The operator's `peak_requests` computes the same.
    fn request(path: &str, resource: Resource, default: &str) -> String {
        let name = resource.as_str();
        let has = |section: &str| {
            format!(
                "has({path}.resources) && has({path}.resources.{section}) && '{name}' in {path}.resources.{section}"
            )
        };
        let value = |section: &str| {
            format!("quantity(string({path}.resources.{section}['{name}'])).asApproximateFloat()")
        };
        let (has_request, request, has_limit, limit) = (
            has("requests"),
            value("requests"),
            has("limits"),
            value("limits"),
        );
        let default = format!("quantity('{default}').asApproximateFloat()");
        match resource {
            Resource::Memory => {
                format!("({has_request} ? {request} : ({has_limit} ? {limit} : {default}))")
            }
            Resource::Cpu => format!(
                "({has_request} ? {request} : ({has_limit} && {limit} < {default} ? {limit} : {default}))"
            ),
        }
    }

    /// What the spec needs of `resource` at the peak of a rollout: every replica plus one surge pod
    /// per process type, the migrate Job, and the dedicated database's instances plus one CNPG job
    /// pod.
    fn peak_request(resource: Resource, default: &str, database_default: &str) -> String {
        let api = request("self.api", resource, default);
        let worker = request("self.worker", resource, default);
        let migrate = request("self.migrate", resource, default);
        let database = request("self.database.cluster", resource, database_default);
        let (api_replicas, worker_replicas) = (replicas("self.api"), replicas("self.worker"));
        format!(
            "(double({api_replicas}) + 1.0) * {api} \
             + (has(self.worker) && {worker_replicas} > 0 ? (double({worker_replicas}) + 1.0) * {worker} : 0.0) \
             + {migrate} \
             + (has(self.database.cluster) ? (double(self.database.cluster.instances) + 1.0) * {database} : 0.0)"
        )
    }

    /// The CEL expression for the most pods the process type at `path` runs outside a rollout:
    /// the autoscaler's `maxReplicas` when it has one, else `replicas`. The operator's
    /// `peak_replicas` computes the same.
    fn replicas(path: &str) -> String {
        format!("(has({path}.autoscaling) ? {path}.autoscaling.maxReplicas : {path}.replicas)")
    }

    fn quota_fits(field: &str, resource: Resource, default: &str, database_default: &str) -> Rule {
        // The tolerance absorbs floating-point rounding of sums like 0.1 + 0.2.
        Rule::new(format!(
            "!has(self.quota) || !has(self.quota.{field}) || quantity(string(self.quota.{field})).asApproximateFloat() * 1.000001 >= {}",
            peak_request(resource, default, database_default)
        ))
        .message(Message::Message(format!(
            "quota.{field} is smaller than the app needs at the peak of a rollout ((api.replicas + 1) + (worker.replicas + 1) + 1 migrate Job + (database instances + 1), with autoscaling.maxReplicas for replicas where set, each × its {} request, a missing request taken as the operator does): raise quota.{field} or remove it to let the operator size it",
            resource.as_str()
        )))
        .field_path(format!(".quota.{field}"))
        .reason(Reason::FieldValueInvalid)
    }

    /// `quota.cpu` fits the peak CPU requests.
    pub fn quota_fits_cpu() -> Rule {
        quota_fits(
            "cpu",
            Resource::Cpu,
            super::DEFAULT_CPU_REQUEST,
            super::DEFAULT_DATABASE_CPU_REQUEST,
        )
    }

    /// `quota.memory` fits the peak memory requests.
    pub fn quota_fits_memory() -> Rule {
        quota_fits(
            "memory",
            Resource::Memory,
            super::DEFAULT_MEMORY_REQUEST,
            super::DEFAULT_DATABASE_MEMORY_REQUEST,
        )
    }

    /// `quota.pods` fits the peak pod count.
    pub fn quota_fits_pods() -> Rule {
        let (api, worker) = (replicas("self.api"), replicas("self.worker"));
        Rule::new(format!(
            "!has(self.quota) || !has(self.quota.pods) || self.quota.pods >= \
             {api} + 1 \
             + (has(self.worker) && {worker} > 0 ? {worker} + 1 : 0) \
             + 1 \
             + (has(self.database.cluster) ? self.database.cluster.instances + 1 : 0)",
        ))
        .message("quota.pods is smaller than the app needs at the peak of a rollout ((api.replicas + 1) + (worker.replicas + 1) + 1 migrate Job + (database instances + 1), with autoscaling.maxReplicas for replicas where set): raise quota.pods or remove it")
        .field_path(".quota.pods")
        .reason(Reason::FieldValueInvalid)
    }

    /// `quota.storage` fits a dedicated cluster's volumes.
    pub fn quota_fits_storage() -> Rule {
        Rule::new(
            "!has(self.quota) || !has(self.quota.storage) || !has(self.database.cluster) || \
             quantity(string(self.quota.storage)).asApproximateFloat() * 1.000001 >= \
             double(self.database.cluster.instances) * quantity(string(self.database.cluster.storage.size)).asApproximateFloat()",
        )
        .message("quota.storage is smaller than database.cluster.instances × database.cluster.storage.size: raise quota.storage or remove it")
        .field_path(".quota.storage")
        .reason(Reason::FieldValueInvalid)
    }
}
