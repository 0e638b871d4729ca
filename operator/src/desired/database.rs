//! The dedicated CNPG Cluster of an app in `cluster` mode.
//!
//! Its lifetime follows `spec.database.reclaimPolicy`, not the app's: with `Delete` it is owned by
//! the app (garbage-collected with it); with `Retain` it has no owner reference and outlives it.

use k8s_openapi::api::core::v1::ResourceRequirements;
use kumiko_crds::{ReclaimPolicy, names};

use super::{Context, resources};
use crate::cnpg::{Cluster, ClusterSpec, ClusterStorage};

/// The Cluster, or `None` when the app uses a shared or external database.
///
/// Superuser access is enabled: the operator creates the app's roles through the
/// `<cluster>-superuser` Secret (see `roles` for the trade-off).
pub(super) fn desired_cluster(context: &Context<'_>) -> Option<Cluster> {
    let cluster = context.app.spec.database.cluster.as_ref()?;
    // CNPG (1.27) gives these to every container it runs for the cluster: postgres
    // (pkg/specs/pods.go), the bootstrap init container (pkg/specs/containers.go) and the job pods
    // (pkg/specs/jobs.go); its webhook rejects a request above its limit (validateResources in
    // internal/webhook/v1/cluster_webhook.go). So each gets a memory limit, none a request above it.
    let resources = resources::effective(cluster.resources.as_ref(), resources::DATABASE);
    let mut object = Cluster::new(
        &names::database_cluster(&context.name),
        ClusterSpec {
            instances: cluster.instances,
            image_name: cluster.image_name.clone(),
            enable_superuser_access: Some(true),
            storage: ClusterStorage {
                size: cluster.storage.size.clone(),
                storage_class: cluster.storage.storage_class.clone(),
            },
            resources: Some(ResourceRequirements {
                requests: resources.requests,
                limits: resources.limits,
                claims: None,
            }),
            backup: cluster.backup.clone(),
        },
    );
    object.metadata = context.metadata(names::database_cluster(&context.name), "database");
    if context.app.spec.database.reclaim_policy == ReclaimPolicy::Retain {
        // CNPG makes the claims owned by the Cluster: an owner reference to the app would have
        // the garbage collector take Cluster, claims and volumes with the app. Retained, the
        // Cluster keeps only its labels, by which a re-created app of the same name adopts it.
        object.metadata.owner_references = None;
    }
    Some(object)
}
