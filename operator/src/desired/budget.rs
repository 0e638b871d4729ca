//! The namespace's budget: a ResourceQuota sized for the peak of a rollout, and a LimitRange that
//! gives requests to containers without them so the quota admits them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, ResourceQuota, ResourceQuotaSpec,
    ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kumiko_crds::rules::Resource;
use kumiko_crds::{DEFAULT_CPU_REQUEST, DEFAULT_MEMORY_REQUEST, KumikoAppSpec, names};

use super::{Context, resources};
use crate::quantity::{format_cpu, format_memory, parse_quantity};

/// What an app's pods request at the peak of a rollout: every replica plus one surge pod per
/// process type, the migrate Job, and a dedicated database's instances plus one CNPG job pod.
///
/// Each pod counts with its effective requests (`resources::effective`: a memory limit alone is
/// the request, a CPU limit below the default lowers it). The same sum the CRD's quota rules
/// compute, so a quota the API accepted always fits.
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

/// Computes [`PeakRequests`] for a spec.
pub fn peak_requests(spec: &KumikoAppSpec) -> PeakRequests {
    let api_pods = spec.api.replicas + 1;
    let worker = spec.worker.as_ref().filter(|worker| worker.replicas > 0);
    let worker_pods = worker.map_or(0, |worker| worker.replicas + 1);
    let cluster = spec.database.cluster.as_ref();
    let database_pods = cluster.map_or(0, |cluster| cluster.instances + 1);

    let sum = |resource: Resource| {
        let kumiko = |r: Option<&ResourceRequirements>| {
            resources::effective_request(r, resources::KUMIKO, resource)
        };
        f64::from(api_pods) * kumiko(spec.api.resources.as_ref())
            + worker.map_or(0.0, |w| {
                f64::from(worker_pods) * kumiko(w.resources.as_ref())
            })
            + kumiko(spec.migrate.resources.as_ref())
            + cluster.map_or(0.0, |c| {
                f64::from(database_pods)
                    * resources::effective_request(
                        c.resources.as_ref(),
                        resources::DATABASE,
                        resource,
                    )
            })
    };
    PeakRequests {
        cpu: sum(Resource::Cpu),
        memory: sum(Resource::Memory),
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

/// The LimitRange: default requests for containers that set none, and a default memory limit
/// equal to the default memory request, so that no container in the namespace runs without a
/// memory limit. No default CPU limit: CPU is compressible (see `resources`).
///
/// Kubernetes' LimitRanger admission gives a container without a limit the `default` and without
/// a request the `defaultRequest` (or, with a limit only, the limit). Every container the operator
/// renders sets both itself; the LimitRange is for any other pod in the app's namespace.
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
                default: Some(BTreeMap::from([(
                    "memory".to_owned(),
                    Quantity(DEFAULT_MEMORY_REQUEST.to_owned()),
                )])),
                ..LimitRangeItem::default()
            }],
        }),
    }
}
