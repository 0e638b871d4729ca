//! Build: every child object of a KumikoApp, fully typed, from the app and what was observed.
//!
//! `desired(app, observed)` is a pure function. `kumiko-operator render` prints exactly its result,
//! so what a user previews is what the controller applies. Every object carries the
//! `app.kubernetes.io/*` labels and a controller owner reference to the KumikoApp, except a
//! dedicated CNPG Cluster under `reclaimPolicy: Retain`, which must outlive the app (see
//! `database`).

mod budget;
mod database;
mod migrate;
mod pod;
pub mod resources;
mod workloads;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{LimitRange, ResourceQuota, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use kumiko_crds::{KumikoApp, names};

use crate::cnpg::Cluster;
use crate::observed::Observed;

pub use budget::{PeakRequests, peak_requests};
pub use migrate::{MIGRATION_IMAGE_ANNOTATION, RETRY_MIGRATION_ANNOTATION, migration_hash};
pub use pod::{CREDENTIALS_CHECKSUM_ANNOTATION, grace_period_seconds};

/// The manager name in `app.kubernetes.io/managed-by` and the server-side apply field manager.
pub const MANAGER: &str = "kumiko-operator";

/// Every child of one KumikoApp, in the order the controller applies them.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// The ServiceAccount every pod runs as (no automounted token).
    pub service_account: ServiceAccount,
    /// The namespace's budget.
    pub resource_quota: ResourceQuota,
    /// Default requests for containers that set none, so the quota admits them, and a default
    /// memory limit, so none runs without one.
    pub limit_range: LimitRange,
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
    /// The image the Deployments run, when they exist.
    pub rollout_image: Option<String>,
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
}

/// Which image the Deployments run: the spec's once it is migrated, else the one they run now (the
/// old image keeps serving while a migration runs or after it failed), else none yet.
pub fn rollout_image(app: &KumikoApp, observed: &Observed) -> Option<String> {
    if observed.migrated_image.as_deref() == Some(app.spec.image.as_str()) {
        Some(app.spec.image.clone())
    } else {
        observed.running_image.clone()
    }
}

/// Builds every child of `app` given what was `observed`.
pub fn desired(app: &KumikoApp, observed: &Observed) -> Desired {
    let context = Context::new(app, observed);
    let rollout_image = rollout_image(app, observed);
    let needs_migration = observed.migrated_image.as_deref() != Some(app.spec.image.as_str());
    let migrate_job = (observed.database_ready && observed.roles_ready && needs_migration)
        .then(|| migrate::desired_migrate_job(&context));
    let (api, worker) = match &rollout_image {
        Some(image) => (
            Some(workloads::desired_api(&context, image)),
            workloads::desired_worker(&context, image),
        ),
        None => (None, None),
    };
    Desired {
        service_account: workloads::desired_service_account(&context),
        resource_quota: budget::desired_resource_quota(&context),
        limit_range: budget::desired_limit_range(&context),
        database_cluster: database::desired_cluster(&context),
        migrate_job,
        api,
        worker,
        rollout_image,
    }
}

/// What every builder needs: the app, the observation, and the common metadata.
struct Context<'a> {
    app: &'a KumikoApp,
    observed: &'a Observed,
    name: String,
    namespace: String,
}

impl<'a> Context<'a> {
    fn new(app: &'a KumikoApp, observed: &'a Observed) -> Self {
        Self {
            app,
            observed,
            name: app.metadata.name.clone().unwrap_or_default(),
            namespace: app
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_owned()),
        }
    }

    /// The labels that select one component's pods.
    fn selector_labels(&self, component: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (names::NAME_LABEL.to_owned(), "kumiko-app".to_owned()),
            (names::INSTANCE_LABEL.to_owned(), self.name.clone()),
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
            namespace: Some(self.namespace.clone()),
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
            name: self.name.clone(),
            uid: self
                .observed
                .app_uid
                .clone()
                .or_else(|| self.app.metadata.uid.clone())
                .unwrap_or_else(|| PLACEHOLDER_UID.to_owned()),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }
}

/// The owner UID `render` prints when the manifest has none (the API server assigns the real one).
pub const PLACEHOLDER_UID: &str = "00000000-0000-0000-0000-000000000000";

#[cfg(test)]
mod tests;
