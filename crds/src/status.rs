//! The KumikoApp status, following the Kubernetes API conventions and kstatus.
//!
//! `observedGeneration` at the top and on every condition; conditions as a list-map keyed by `type`;
//! `Ready`, `Reconciling` and `Stalled` for tools (kubectl wait, Argo CD, Flux), and one condition
//! per step of the rollout for people.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

// The schema defaults `status` to `{observedGeneration: 0}`. kube-apiserver applies structural
// defaults when it reads an object from etcd (Kubernetes documentation, "Defaulting" under
// "Versions in CustomResourceDefinitions"; apiextensions-apiserver's
// `pkg/apiserver/schema/defaulting/algorithm.go` defaults a missing parent, then its properties),
// so a KumikoApp the operator has not seen yet reads as generation 1 observed at 0. kstatus
// (`cli-utils` `pkg/kstatus/status/generic.go` `checkGeneration`, used by Helm 4's `--wait`, Flux
// and Argo CD) then calls it InProgress. Without the default, a fresh object with no status and no
// conditions is "Current", and `helm install --wait` returns before the operator did anything.
/// What the operator last observed and did for a KumikoApp. Defaults to `observedGeneration: 0`
/// until the operator has seen the app, so tools that wait on kstatus (`helm --wait`, Flux) wait
/// for it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("default" = {}))]
pub struct KumikoAppStatus {
    /// The `metadata.generation` this status describes. When it lags the object's generation, the
    /// operator has not yet acted on the latest spec (0: not yet seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = 0))]
    pub observed_generation: Option<i64>,

    /// The app's conditions: `Ready`, `Reconciling`, `Stalled`, and the steps `DatabaseReady`,
    /// `RolesReady`, `Migrated`, `ApiAvailable`, `WorkerAvailable`, `RouteAccepted`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    #[schemars(length(max = 16))]
    pub conditions: Vec<Condition>,

    /// The image the API and worker Deployments run now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// The image whose migrations last succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrated_image: Option<String>,

    /// The name of the latest migrate Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_job: Option<String>,

    /// The API process type's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ProcessStatus>,

    /// The worker process type's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<ProcessStatus>,

    /// The value of the `kumiko.so/rotate-credentials` annotation the operator last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_credentials_for: Option<String>,

    /// The URLs the app answers on from outside the cluster (`spec.api.expose`): one per host,
    /// `https://` with TLS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub urls: Vec<String>,
}

/// Replica counts of one process type, as its Deployment reports them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessStatus {
    /// Desired pods.
    pub replicas: i32,
    /// Pods passing their readiness probe.
    pub ready_replicas: i32,
    /// Pods running the current pod template.
    pub updated_replicas: i32,
    /// Pods ready for at least `minReadySeconds`.
    pub available_replicas: i32,
    /// `ready/desired`, as `kubectl get` prints it.
    pub summary: String,
    /// The label selector of the process type's pods, in string form
    /// (`app.kubernetes.io/instance=shop,...`): the KumikoApp's `scale` subresource reports it, so
    /// a HorizontalPodAutoscaler can target the KumikoApp itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// True once a HorizontalPodAutoscaler sets the Deployment's replicas (`autoscaling` is set and
    /// the operator has handed the `replicas` field over to it). Always written, so that the
    /// status merge patch turns it off again.
    #[serde(default)]
    pub autoscaled: bool,
}

impl ProcessStatus {
    /// Builds the status from the counts, with the printable summary.
    pub fn new(replicas: i32, ready: i32, updated: i32, available: i32) -> Self {
        Self {
            replicas,
            ready_replicas: ready,
            updated_replicas: updated,
            available_replicas: available,
            summary: format!("{ready}/{replicas}"),
            selector: None,
            autoscaled: false,
        }
    }
}

/// The condition types of a KumikoApp.
pub mod condition {
    /// True when the current generation is fully rolled out and available.
    pub const READY: &str = "Ready";
    /// True while the operator is working towards the current spec (kstatus).
    pub const RECONCILING: &str = "Reconciling";
    /// True when progress needs a change of the spec or of the cluster (kstatus).
    pub const STALLED: &str = "Stalled";
    /// The database (CNPG cluster, shared cluster or external Secret) is reachable.
    pub const DATABASE_READY: &str = "DatabaseReady";
    /// The app's Postgres roles and their Secrets are in place.
    pub const ROLES_READY: &str = "RolesReady";
    /// The migrate Job for the desired image succeeded.
    pub const MIGRATED: &str = "Migrated";
    /// The API Deployment is available at the desired image.
    pub const API_AVAILABLE: &str = "ApiAvailable";
    /// The worker Deployment is available at the desired image.
    pub const WORKER_AVAILABLE: &str = "WorkerAvailable";
    /// The route of `spec.api.expose` carries traffic as far as it reports: an HTTPRoute's
    /// Gateway accepted it and resolved its references (True too when the app is not exposed,
    /// or exposed through an Ingress, which reports no acceptance).
    pub const ROUTE_ACCEPTED: &str = "RouteAccepted";
    /// The HorizontalPodAutoscalers of `spec.api.autoscaling` and `spec.worker.autoscaling`
    /// compute replica counts: their `ScalingActive` condition is True (False with the
    /// autoscaler's reason and message, e.g. `FailedGetResourceMetric` while no pod metrics come
    /// in). Present only while some process type autoscales; it never holds `Ready` back.
    pub const AUTOSCALER_ACTIVE: &str = "AutoscalerActive";
    /// The PodMonitor of `spec.monitoring` is in place (False with `PodMonitorCrdMissing` where
    /// the cluster does not serve `monitoring.coreos.com/v1` PodMonitors). Present only while
    /// monitoring is enabled; it never holds `Ready` back.
    pub const MONITORING_AVAILABLE: &str = "MonitoringAvailable";
}
