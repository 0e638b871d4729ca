//! The requests and limits a container is given: the spec's, completed by pure rules the CRD
//! documents on every `resources` field (`kubectl explain kumikoapp.spec.api.resources`).
//!
//! - An effective request never exceeds its limit: kube-apiserver rejects such a container
//!   (`ValidateResourceRequirements`, pkg/apis/core/validation/validation.go) and CloudNativePG's
//!   webhook such a Cluster.
//! - Memory: a missing request with a limit takes the limit (as Kubernetes defaults it); without
//!   either it takes the default. Every container gets a memory limit, the spec's or else equal
//!   to its request, so no app can take a node's memory from its neighbours.
//! - CPU: a missing request takes the default, lowered to the spec's CPU limit when that is below
//!   it. A CPU limit only where the spec gives one: CPU is compressible (a busy container is
//!   throttled, never killed), so a default limit would only strand idle cores.
//!
//! The quota (`peak_requests`) and the CRD's quota rules sum these same effective requests.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kumiko_crds::rules::Resource;
use kumiko_crds::{
    DEFAULT_CPU_REQUEST, DEFAULT_DATABASE_CPU_REQUEST, DEFAULT_DATABASE_MEMORY_REQUEST,
    DEFAULT_MEMORY_REQUEST,
};

use crate::quantity::parse_quantity;

/// The requests a container gets when its spec sets none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defaults {
    /// The default CPU request.
    pub cpu: &'static str,
    /// The default memory request (and then the memory limit).
    pub memory: &'static str,
}

/// The defaults of a Kumiko container (API, worker, migrate).
pub const KUMIKO: Defaults = Defaults {
    cpu: DEFAULT_CPU_REQUEST,
    memory: DEFAULT_MEMORY_REQUEST,
};

/// The defaults of a Postgres instance of a dedicated cluster.
pub const DATABASE: Defaults = Defaults {
    cpu: DEFAULT_DATABASE_CPU_REQUEST,
    memory: DEFAULT_DATABASE_MEMORY_REQUEST,
};

/// The requests and limits of a container whose spec asks for `spec` (see the module docs).
/// Resources other than CPU and memory are passed through as the spec gives them.
pub fn effective(spec: Option<&ResourceRequirements>, defaults: Defaults) -> ResourceRequirements {
    let spec = spec.cloned().unwrap_or_default();
    let mut requests = spec.requests.unwrap_or_default();
    let mut limits = spec.limits.unwrap_or_default();

    if !requests.contains_key("cpu") {
        let default = Quantity(defaults.cpu.to_owned());
        let request = match limits.get("cpu") {
            Some(limit) if is_below(limit, &default) => limit.clone(),
            _ => default,
        };
        requests.insert("cpu".to_owned(), request);
    }
    if !requests.contains_key("memory") {
        let request = limits
            .get("memory")
            .cloned()
            .unwrap_or_else(|| Quantity(defaults.memory.to_owned()));
        requests.insert("memory".to_owned(), request);
    }
    if !limits.contains_key("memory")
        && let Some(request) = requests.get("memory")
    {
        limits.insert("memory".to_owned(), request.clone());
    }

    ResourceRequirements {
        requests: Some(requests),
        limits: Some(limits),
        claims: spec.claims,
    }
}

/// The effective request of `resource` as a number (cores or bytes), for the quota arithmetic;
/// 0 for a quantity that does not parse (the CRD refuses those).
pub fn effective_request(
    spec: Option<&ResourceRequirements>,
    defaults: Defaults,
    resource: Resource,
) -> f64 {
    effective(spec, defaults)
        .requests
        .as_ref()
        .and_then(|requests: &BTreeMap<String, Quantity>| requests.get(resource.as_str()))
        .and_then(|quantity| parse_quantity(&quantity.0))
        .unwrap_or(0.0)
}

/// Whether `quantity` is below `than`; false when either does not parse.
fn is_below(quantity: &Quantity, than: &Quantity) -> bool {
    match (parse_quantity(&quantity.0), parse_quantity(&than.0)) {
        (Some(a), Some(b)) => a < b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> ResourceRequirements {
        let map = |pairs: &[(&str, &str)]| {
            (!pairs.is_empty()).then(|| {
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
                    .collect()
            })
        };
        ResourceRequirements {
            requests: map(requests),
            limits: map(limits),
            claims: None,
        }
    }

    fn pairs(map: Option<&BTreeMap<String, Quantity>>) -> Vec<(String, String)> {
        map.map(|m| m.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect())
            .unwrap_or_default()
    }

    fn strings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn nothing_given_takes_the_default_requests_and_a_memory_limit_equal_to_the_request() {
        let resources = effective(None, KUMIKO);
        assert_eq!(
            pairs(resources.requests.as_ref()),
            strings(&[("cpu", "100m"), ("memory", "128Mi")])
        );
        assert_eq!(
            pairs(resources.limits.as_ref()),
            strings(&[("memory", "128Mi")])
        );
    }

    #[test]
    fn limits_below_the_defaults_become_the_requests() {
        let given = spec(&[], &[("cpu", "50m"), ("memory", "64Mi")]);
        let resources = effective(Some(&given), KUMIKO);
        assert_eq!(
            pairs(resources.requests.as_ref()),
            strings(&[("cpu", "50m"), ("memory", "64Mi")])
        );
        assert_eq!(
            pairs(resources.limits.as_ref()),
            strings(&[("cpu", "50m"), ("memory", "64Mi")])
        );
    }

    #[test]
    fn a_memory_limit_alone_is_the_memory_request_and_a_high_cpu_limit_keeps_the_default() {
        let given = spec(&[], &[("cpu", "2"), ("memory", "1Gi")]);
        let resources = effective(Some(&given), DATABASE);
        assert_eq!(
            pairs(resources.requests.as_ref()),
            strings(&[("cpu", "250m"), ("memory", "1Gi")])
        );
    }

    #[test]
    fn requests_given_are_kept_and_no_cpu_limit_is_invented() {
        let given = spec(&[("cpu", "2"), ("memory", "512Mi")], &[]);
        let resources = effective(Some(&given), KUMIKO);
        assert_eq!(
            pairs(resources.requests.as_ref()),
            strings(&[("cpu", "2"), ("memory", "512Mi")])
        );
        assert_eq!(
            pairs(resources.limits.as_ref()),
            strings(&[("memory", "512Mi")])
        );
    }

    #[test]
    fn no_effective_request_exceeds_its_limit() {
        let limits = [
            ("1m", "1Mi"),
            ("99m", "127Mi"),
            ("100m", "128Mi"),
            ("0.5", "0.5Gi"),
            ("4", "4Gi"),
        ];
        for (cpu, memory) in limits {
            for defaults in [KUMIKO, DATABASE] {
                let given = spec(&[], &[("cpu", cpu), ("memory", memory)]);
                let resources = effective(Some(&given), defaults);
                for resource in ["cpu", "memory"] {
                    let get = |map: &Option<BTreeMap<String, Quantity>>| {
                        parse_quantity(&map.as_ref().unwrap()[resource].0).unwrap()
                    };
                    assert!(
                        get(&resources.requests) <= get(&resources.limits),
                        "{resource} with limits {cpu}/{memory}: {resources:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn effective_request_is_a_number_for_the_quota() {
        let given = spec(&[], &[("memory", "1Gi")]);
        assert_eq!(
            effective_request(Some(&given), KUMIKO, Resource::Memory),
            1024.0 * 1024.0 * 1024.0
        );
        assert_eq!(effective_request(Some(&given), KUMIKO, Resource::Cpu), 0.1);
    }
}
