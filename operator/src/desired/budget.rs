//! The namespace's budget: a ResourceQuota sized for the peak of a rollout, and a LimitRange that
//! gives requests to containers without them so the quota admits them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, ResourceQuota, ResourceQuotaSpec,
    ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kumiko_crds::{
    DEFAULT_CPU_REQUEST, DEFAULT_DATABASE_CPU_REQUEST, DEFAULT_DATABASE_MEMORY_REQUEST,
    DEFAULT_MEMORY_REQUEST, KumikoAppSpec, names,
};

use super::Context;
use crate::quantity::{format_cpu, format_memory, parse_quantity};

/// What an app's pods request at the peak of a rollout: every replica plus one surge pod per
/// process type, the migrate Job, and a dedicated database's instances plus one CNPG job pod.
///
/// The same sum the CRD's quota rules compute, so a quota the API accepted always fits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PeakRequests {
    /// CPU cores.
    pub cpu: f64,
    /// Memory bytes.
    pub memory: f64,
    /// Pods.
    pub pods: i32,
    /// Volume bytes.
    pub storage: f64,
}

fn request_of(resources: Option<&ResourceRequirements>, resource: &str, default: &str) -> f64 {
    resources
        .and_then(|r| r.requests.as_ref())
        .and_then(|requests| requests.get(resource))
        .and_then(|quantity| parse_quantity(&quantity.0))
        .or_else(|| parse_quantity(default))
        .unwrap_or(0.0)
}

/// Computes [`PeakRequests`] for a spec.
pub fn peak_requests(spec: &KumikoAppSpec) -> PeakRequests {
    let api_pods = spec.api.replicas + 1;
    let worker = spec.worker.as_ref().filter(|worker| worker.replicas > 0);
    let worker_pods = worker.map_or(0, |worker| worker.replicas + 1);
    let cluster = spec.database.cluster.as_ref();
    let database_pods = cluster.map_or(0, |cluster| cluster.instances + 1);

    let sum = |resource: &str, default: &str, database_default: &str| {
        f64::from(api_pods) * request_of(spec.api.resources.as_ref(), resource, default)
            + worker.map_or(0.0, |w| {
                f64::from(worker_pods) * request_of(w.resources.as_ref(), resource, default)
            })
            + request_of(spec.migrate.resources.as_ref(), resource, default)
            + cluster.map_or(0.0, |c| {
                f64::from(database_pods)
                    * request_of(c.resources.as_ref(), resource, database_default)
            })
    };
    PeakRequests {
        cpu: sum("cpu", DEFAULT_CPU_REQUEST, DEFAULT_DATABASE_CPU_REQUEST),
        memory: sum(
            "memory",
            DEFAULT_MEMORY_REQUEST,
            DEFAULT_DATABASE_MEMORY_REQUEST,
        ),
        pods: api_pods + worker_pods + 1 + database_pods,
        storage: cluster.map_or(0.0, |c| {
            f64::from(c.instances) * parse_quantity(&c.storage.size.0).unwrap_or(0.0)
        }),
    }
}

/// The ResourceQuota: the spec's values where given, else the peak of a rollout.
pub(super) fn desired_resource_quota(context: &Context<'_>) -> ResourceQuota {
    let spec = &context.app.spec;
    let quota = spec.quota.clone().unwrap_or_default();
    let peak = peak_requests(spec);
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
        metadata: context.metadata(names::budget(&context.name), "budget"),
        spec: Some(ResourceQuotaSpec {
            hard: Some(hard),
            ..ResourceQuotaSpec::default()
        }),
        status: None,
    }
}

/// The LimitRange: default requests for containers that set none.
pub(super) fn desired_limit_range(context: &Context<'_>) -> LimitRange {
    LimitRange {
        metadata: context.metadata(names::budget(&context.name), "budget"),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".to_owned(),
                default_request: Some(BTreeMap::from([
                    ("cpu".to_owned(), Quantity(DEFAULT_CPU_REQUEST.to_owned())),
                    (
                        "memory".to_owned(),
                        Quantity(DEFAULT_MEMORY_REQUEST.to_owned()),
                    ),
                ])),
                ..LimitRangeItem::default()
            }],
        }),
    }
}
