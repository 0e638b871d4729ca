//! `spec.monitoring`: Prometheus scraping of the app's `/metrics`.
//!
//! The API and worker processes both serve `/metrics` (the Prometheus text format) on their one
//! HTTP port, the container port named `http`, beside `/health` and `/health/ready`. Only the API
//! has a Service, so a prometheus-operator `ServiceMonitor` (which discovers targets through a
//! Service's endpoints) would miss the worker; a `PodMonitor` selects the pods themselves and
//! covers both. The operator therefore makes one `monitoring.coreos.com/v1` PodMonitor per app
//! when `monitoring` is set and the cluster serves that API; where it does not, the status says
//! so (`MonitoringAvailable=False`) and the app is Ready all the same.

use std::collections::BTreeMap;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Prometheus scraping of the app's `/metrics` through a prometheus-operator PodMonitor (see the
/// module docs for why a PodMonitor). Setting the block opts in; `enabled: false` turns it off
/// and deletes the PodMonitor while keeping the settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Whether the operator makes the PodMonitor. Default true: setting `monitoring: {}` is
    /// enough.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,

    /// How often Prometheus scrapes each pod, written like `"30s"` or `"1m"`. Default: the
    /// Prometheus server's own scrape interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::duration::DURATION_PATTERN), length(min = 2, max = 16))]
    pub interval: Option<String>,

    /// Extra labels on the PodMonitor, for the `podMonitorSelector` of the Prometheus that
    /// should scrape the app, e.g. `release: kube-prometheus-stack` (kube-prometheus-stack's
    /// default selector). The `app.kubernetes.io/` labels are the operator's and cannot be set
    /// here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    #[x_kube(validation = rules::labels_leave_the_operators_alone())]
    pub labels: BTreeMap<String, String>,
}

fn enabled_by_default() -> bool {
    true
}

/// The CEL rules of `spec.monitoring`, each naming the field.
pub mod rules {
    use kube::core::{Reason, Rule};

    /// The extra labels leave the `app.kubernetes.io/` prefix alone: the operator selects its
    /// children by `app.kubernetes.io/managed-by` and names the app by the others.
    pub fn labels_leave_the_operators_alone() -> Rule {
        Rule::new("self.all(k, !k.startsWith('app.kubernetes.io/'))")
            .message("monitoring.labels cannot set app.kubernetes.io/ labels: the operator sets those on every object it makes")
            .reason(Reason::FieldValueForbidden)
    }
}
