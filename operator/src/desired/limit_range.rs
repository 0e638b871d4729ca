//! The LimitRange of the app's namespace.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{LimitRange, LimitRangeItem, LimitRangeSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kumiko_crds::{DEFAULT_CPU_REQUEST, DEFAULT_MEMORY_REQUEST};

use super::Context;

/// The LimitRange: default requests for containers that set none, and a default memory limit
/// equal to the default memory request, so that no container in the namespace runs without a
/// memory limit. No default CPU limit: CPU is compressible (see `resources`).
///
/// Kubernetes' LimitRanger admission gives a container without a limit the `default` and without
/// a request the `defaultRequest` (or, with a limit only, the limit). Every container the operator
/// renders sets both itself; the LimitRange is for any other pod in the app's namespace.
pub(super) fn limit_range(context: &Context<'_>) -> LimitRange {
    LimitRange {
        metadata: context.metadata(context.names().budget.clone(), "budget"),
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
