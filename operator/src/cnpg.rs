//! The CloudNativePG `postgresql.cnpg.io/v1` Cluster, typed with only the fields the operator sets
//! and reads (targeting CNPG ≥ 1.27).
//!
//! Fields CNPG defines but the operator does not use are left out on purpose: server-side apply
//! then owns exactly what is written here, and CNPG's defaults stay CNPG's.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The desired state of a CNPG Cluster.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "postgresql.cnpg.io",
    version = "v1",
    kind = "Cluster",
    plural = "clusters",
    namespaced,
    status = "ClusterStatus",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Number of instances (one primary, the rest replicas).
    pub instances: i32,
    /// The Postgres image; CNPG's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_name: Option<String>,
    /// Whether CNPG creates the `<cluster>-superuser` Secret and lets `postgres` log in. The
    /// operator needs it to create per-app roles (see `roles` for the trade-off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_superuser_access: Option<bool>,
    /// The instances' volumes.
    pub storage: ClusterStorage,
    /// CPU and memory of each instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Backup configuration, passed through from the KumikoApp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form")]
    pub backup: Option<serde_json::Value>,
}

/// The storage of each instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStorage {
    /// The volume size.
    pub size: Quantity,
    /// The StorageClass; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
}

/// What CNPG reports about a Cluster (only the fields the operator reads).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Human-readable phase, `Cluster in healthy state` when all is well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Instances ready to serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_instances: Option<i32>,
    /// The conditions, among them `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The phase CNPG reports when every instance is up.
pub const HEALTHY_PHASE: &str = "Cluster in healthy state";

impl Cluster {
    /// Whether CNPG reports the cluster ready: its `Ready` condition is True (or, for CNPG
    /// versions without it, the healthy phase).
    pub fn is_ready(&self) -> bool {
        let Some(status) = &self.status else {
            return false;
        };
        match status.conditions.iter().find(|c| c.type_ == "Ready") {
            Some(ready) => ready.status == "True",
            None => status.phase.as_deref() == Some(HEALTHY_PHASE),
        }
    }
}

fn free_form(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// The Secret CNPG creates with superuser credentials when `enableSuperuserAccess` is true.
pub fn superuser_secret(cluster: &str) -> String {
    format!("{cluster}-superuser")
}
