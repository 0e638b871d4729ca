//! The dedicated CNPG Cluster of an app in `cluster` mode.
//!
//! Its lifetime follows `spec.database.reclaimPolicy`, not the app's: with `Delete` it is owned by
//! the app (garbage-collected with it); with `Retain` it has no owner reference and outlives it.

use kumiko_crds::ReclaimPolicy;

use super::Context;
use crate::cnpg::{Cluster, ClusterSpec, ClusterStorage};
use crate::validate::Database;

/// The Cluster, or `None` when the app uses a shared or external database.
///
/// Superuser access is enabled: the operator creates the app's roles through the
/// `<cluster>-superuser` Secret (see `roles` for the trade-off).
pub(super) fn cluster(context: &Context<'_>) -> Option<Cluster> {
    let Database::Cluster {
        spec: cluster,
        resources,
        ..
    } = &context.app.database
    else {
        return None;
    };
    // CNPG (1.27) gives these to every container it runs for the cluster: postgres
    // (pkg/specs/pods.go), the bootstrap init container (pkg/specs/containers.go) and the job pods
    // (pkg/specs/jobs.go); its webhook rejects a request above its limit (validateResources in
    // internal/webhook/v1/cluster_webhook.go). So each gets a memory limit, none a request above it.
    let mut object = Cluster::new(
        &context.names().database_cluster,
        ClusterSpec {
            instances: cluster.instances,
            image_name: cluster.image_name.clone(),
            enable_superuser_access: Some(true),
            storage: ClusterStorage {
                size: cluster.storage.size.clone(),
                storage_class: cluster.storage.storage_class.clone(),
            },
            resources: Some(k8s_openapi::api::core::v1::ResourceRequirements {
                claims: None,
                ..resources.requirements.clone()
            }),
            backup: cluster.backup.clone(),
        },
    );
    object.metadata = context.metadata(context.names().database_cluster.clone(), "database");
    if context.app.spec.database.reclaim_policy == ReclaimPolicy::Retain {
        // CNPG makes the claims owned by the Cluster: an owner reference to the app would have
        // the garbage collector take Cluster, claims and volumes with the app. Retained, the
        // Cluster keeps only its labels, by which a re-created app of the same name adopts it.
        object.metadata.owner_references = None;
    }
    Some(object)
}
