//! The PodDisruptionBudget of one process type: at most one pod voluntarily disrupted at a time.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Context;

/// The PodDisruptionBudget `name` of `component`'s pods.
pub(super) fn pod_disruption_budget(
    context: &Context<'_>,
    name: String,
    component: &str,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: context.metadata(name, component),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(context.selector_labels(component)),
                match_expressions: None,
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}
