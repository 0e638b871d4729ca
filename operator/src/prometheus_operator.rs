//! The prometheus-operator `monitoring.coreos.com/v1` PodMonitor, typed with only the fields the
//! operator sets (as [`crate::gateway_api`] types the HTTPRoute).
//!
//! Field names and types follow prometheus-operator's `pkg/apis/monitoring/v1/podmonitor_types.go`
//! and its generated CRD (`monitoring.coreos.com_podmonitors.yaml`): `spec.selector` (a
//! `metav1.LabelSelector`) is the one required field of the spec; `spec.podMetricsEndpoints[]`
//! names the container port by name (`port`), the HTTP `path`, and the scrape `interval` (a
//! Prometheus duration; the Prometheus server's own interval when unset). A pod without a
//! container port of that name yields no target.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The desired state of a PodMonitor: which pods Prometheus scrapes, and how.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "monitoring.coreos.com",
    version = "v1",
    kind = "PodMonitor",
    plural = "podmonitors",
    namespaced,
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct PodMonitorSpec {
    /// The pods to scrape, in the PodMonitor's namespace.
    pub selector: LabelSelector,
    /// The endpoints of each pod to scrape.
    pub pod_metrics_endpoints: Vec<PodMetricsEndpoint>,
}

/// One endpoint of a pod that serves Prometheus metrics.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodMetricsEndpoint {
    /// The name of the container port.
    pub port: String,
    /// The HTTP path.
    pub path: String,
    /// How often to scrape; the Prometheus server's scrape interval when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
}
