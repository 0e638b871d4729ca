//! The ResourceQuota of the app's namespace, sized for the peak of a rollout (the `limit_range`
//! gives requests to containers without them so the quota admits them). The peak itself is
//! computed once, by `validate` ([`super::resources::peak_requests`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceQuota, ResourceQuotaSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::Context;
use crate::quantity::{format_cpu, format_memory};

/// The ResourceQuota: the spec's values where given, else the peak of a rollout.
pub(super) fn resource_quota(context: &Context<'_>) -> ResourceQuota {
    let quota = context.app.spec.quota.clone().unwrap_or_default();
    let peak = context.app.peak;
    let mut hard = BTreeMap::from([
        (
            "requests.cpu".to_owned(),
            quota.cpu.unwrap_or_else(|| Quantity(format_cpu(peak.cpu))),
        ),
        (
            "requests.memory".to_owned(),
            quota
                .memory
                .unwrap_or_else(|| Quantity(format_memory(peak.memory))),
        ),
        (
            "pods".to_owned(),
            Quantity(quota.pods.unwrap_or(peak.pods).to_string()),
        ),
    ]);
    match (quota.storage, peak.storage > 0.0) {
        (Some(storage), _) => {
            hard.insert("requests.storage".to_owned(), storage);
        }
        (None, true) => {
            hard.insert(
                "requests.storage".to_owned(),
                Quantity(format_memory(peak.storage)),
            );
        }
        (None, false) => {}
    }
    ResourceQuota {
        metadata: context.metadata(context.names().budget.clone(), "budget"),
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard),
            ..ResourceQuotaSpec::default()
        }),
        status: None,
    }
}
