//! Build: every child object of a KumikoApp, fully typed, from the app and what was observed.
//!
//! One file per kind of child, named for it: `service_account`, `resource_quota`, `limit_range`,
//! `cluster` (CNPG), `credentials` (the role Secrets), `job` (migrate), `deployment`, `service`,
//! `pod_disruption_budget`, `horizontal_pod_autoscaler`, `route`, `network_policy`, `pod_monitor`; `pod` is the pod template they share, `process` puts one process
//! type's objects together, `finalizer` is the KumikoApp's own finalizer patch.
//!
//! [`children`]`(validated, observed)` is a pure function of the [`ValidatedApp`] (nothing here
//! parses the spec again) and the observed facts. The controller's plan applies its result and
//! `kumiko-operator render` prints it, so what a user previews is what the controller applies.
//! Every object carries the `app.kubernetes.io/*` labels and a controller owner reference to the
//! KumikoApp, except a dedicated CNPG Cluster under `reclaimPolicy: Retain`, which must outlive
//! the app (see `cluster`).

mod cluster;
pub mod credentials;
mod deployment;
pub mod finalizer;
mod horizontal_pod_autoscaler;
mod job;
mod limit_range;
pub mod network_policy;
mod pod;
mod pod_disruption_budget;
pub mod pod_monitor;
mod process;
mod resource_quota;
pub mod resources;
pub mod route;
mod service;
mod service_account;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{LimitRange, ResourceQuota, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use kumiko_crds::{KumikoApp, names};

use crate::cnpg::Cluster;
use crate::observed::Observed;
use crate::prometheus_operator::PodMonitor;
use crate::validate::{Names, ValidatedApp};

pub use finalizer::FINALIZER;
pub use job::{MIGRATION_IMAGE_ANNOTATION, RETRY_MIGRATION_ANNOTATION, migration_hash};
pub use network_policy::NetworkPolicies;
pub use pod::CREDENTIALS_CHECKSUM_ANNOTATION;
pub use resources::{PeakRequests, peak_requests};
pub use route::Route;

/// The KumikoApp annotation whose change rotates the runtime role's password.
pub const ROTATE_CREDENTIALS_ANNOTATION: &str = "kumiko.so/rotate-credentials";

/// The manager name in `app.kubernetes.io/managed-by` and the server-side apply field manager.
pub const MANAGER: &str = "kumiko-operator";

/// Every child of one KumikoApp, in the order the controller applies them: the one list of
/// children. The executor (`controller::execute`) and `render` take it apart without `..`, so a
/// child added here that is not applied and rendered does not compile. (The credential Secrets are
/// not in it: their data comes from the roles step; see [`credentials`].)
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    /// The ServiceAccount every pod runs as (no automounted token).
    pub service_account: ServiceAccount,
    /// The namespace's budget.
    pub resource_quota: ResourceQuota,
    /// Default requests for containers that set none, so the quota admits them, and a default
    /// memory limit, so none runs without one.
    pub limit_range: LimitRange,
    /// The NetworkPolicies (`spec.networkPolicy`, on by default), applied before any pod runs.
    pub network_policies: Option<NetworkPolicies>,
    /// The dedicated CNPG Cluster, in `cluster` mode.
    pub database_cluster: Option<Cluster>,
    /// The migrate Job for the spec's image, once the database and roles are ready and while that
    /// image is not yet migrated.
    pub migrate_job: Option<Job>,
    /// The API Deployment, Service and PodDisruptionBudget, once some image has been migrated.
    pub api: Option<ProcessObjects>,
    /// The worker Deployment and PodDisruptionBudget, once some image has been migrated (absent
    /// when the spec has no worker).
    pub worker: Option<ProcessObjects>,
    /// The route from outside the cluster to the API (`spec.api.expose`), with the API's objects.
    pub route: Option<Route>,
    /// The PodMonitor of `spec.monitoring` (prometheus-operator), with the API's objects.
    pub pod_monitor: Option<PodMonitor>,
}

/// The objects of one process type.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessObjects {
    /// Its Deployment.
    pub deployment: Deployment,
    /// Its Service (the API only).
    pub service: Option<Service>,
    /// Its PodDisruptionBudget.
    pub pod_disruption_budget: PodDisruptionBudget,
    /// Its HorizontalPodAutoscaler, when the spec asks for autoscaling (the Deployment then
    /// carries no `replicas`: the autoscaler owns them).
    pub horizontal_pod_autoscaler: Option<HorizontalPodAutoscaler>,
}

/// Which image the Deployments run: the spec's once it is migrated, else the one they run now (the
/// old image keeps serving while a migration runs or after it failed), else none yet.
pub fn rollout_image(app: &ValidatedApp<'_>, observed: &Observed) -> Option<String> {
    if observed.migrated_image.as_deref() == Some(app.spec.image.as_str()) {
        Some(app.spec.image.clone())
    } else {
        observed.running_image.clone()
    }
}

/// Builds every child of `app` given what was `observed`.
pub fn children(app: &ValidatedApp<'_>, observed: &Observed) -> Children {
    let context = Context::new(app, observed);
    let rollout_image = rollout_image(app, observed);
    let needs_migration = observed.migrated_image.as_deref() != Some(app.spec.image.as_str());
    let migrate_job = (observed.database_ready && observed.roles_ready && needs_migration)
        .then(|| job::migrate_job(&context));
    let (api, worker) = match &rollout_image {
        Some(image) => (
            Some(process::api(&context, image)),
            process::worker(&context, image),
        ),
        None => (None, None),
    };
    let route = api
        .as_ref()
        .and(app.spec.api.expose.as_ref())
        .map(|expose| route::route(&context, expose));
    let pod_monitor = api
        .as_ref()
        .and(app.spec.monitoring.as_ref())
        .filter(|monitoring| monitoring.enabled)
        .map(|monitoring| pod_monitor::pod_monitor(&context, monitoring));
    Children {
        service_account: service_account::service_account(&context),
        resource_quota: resource_quota::resource_quota(&context),
        limit_range: limit_range::limit_range(&context),
        network_policies: network_policy::network_policies(&context),
        database_cluster: cluster::cluster(&context),
        migrate_job,
        api,
        worker,
        route,
        pod_monitor,
    }
}

/// What every builder needs: the validated app and the observation.
struct Context<'a> {
    app: &'a ValidatedApp<'a>,
    observed: &'a Observed,
}

impl<'a> Context<'a> {
    fn new(app: &'a ValidatedApp<'a>, observed: &'a Observed) -> Self {
        Self { app, observed }
    }

    /// The app's and its children's names.
    fn names(&self) -> &'a Names {
        &self.app.names
    }

    /// The labels that select one component's pods.
    fn selector_labels(&self, component: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (names::NAME_LABEL.to_owned(), "kumiko-app".to_owned()),
            (names::INSTANCE_LABEL.to_owned(), self.names().app.clone()),
            (names::COMPONENT_LABEL.to_owned(), component.to_owned()),
        ])
    }

    /// The full label set of a child.
    fn labels(&self, component: &str) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels(component);
        labels.insert(names::MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned());
        labels
    }

    /// Metadata of a child named `name` for `component`, owned by the app.
    fn metadata(&self, name: String, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.names().namespace.clone()),
            labels: Some(self.labels(component)),
            owner_references: Some(vec![self.owner_reference()]),
            ..ObjectMeta::default()
        }
    }

    /// The controller owner reference to the KumikoApp: deleting the app deletes its children.
    fn owner_reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: KumikoApp::api_version(&()).into_owned(),
            kind: KumikoApp::kind(&()).into_owned(),
            name: self.names().app.clone(),
            uid: self
                .observed
                .app_uid
                .clone()
                .or_else(|| self.app.app.metadata.uid.clone())
                .unwrap_or_else(|| PLACEHOLDER_UID.to_owned()),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }
}

/// The label selector of `component`'s pods of app `app`, in string form (`key=value,...`, keys
/// sorted): what the KumikoApp's status reports for its `scale` subresource.
pub fn selector_string(app: &str, component: &str) -> String {
    let labels = BTreeMap::from([
        (names::NAME_LABEL, "kumiko-app"),
        (names::INSTANCE_LABEL, app),
        (names::COMPONENT_LABEL, component),
    ]);
    labels
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The owner UID `render` prints when the manifest has none (the API server assigns the real one).
pub const PLACEHOLDER_UID: &str = "00000000-0000-0000-0000-000000000000";

#[cfg(test)]
mod tests;
