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

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kumiko_crds::{
    DEFAULT_CPU_REQUEST, DEFAULT_DATABASE_CPU_REQUEST, DEFAULT_DATABASE_MEMORY_REQUEST,
    DEFAULT_MEMORY_REQUEST, KumikoAppSpec,
};

use crate::quantity::parse_quantity;
use crate::validate::{Database, ProcessResources};

/// The requests a container gets when its spec sets none, as written and as numbers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Defaults {
    /// The default CPU request.
    pub cpu: &'static str,
    /// [`Defaults::cpu`] in cores.
    pub cpu_cores: f64,
    /// The default memory request (and then the memory limit).
    pub memory: &'static str,
    /// [`Defaults::memory`] in bytes.
    pub memory_bytes: f64,
}

/// The defaults of a Kumiko container (API, worker, migrate).
pub const KUMIKO: Defaults = Defaults {
    cpu: DEFAULT_CPU_REQUEST,
    cpu_cores: 0.1,
    memory: DEFAULT_MEMORY_REQUEST,
    memory_bytes: 128.0 * 1024.0 * 1024.0,
};

/// The defaults of a Postgres instance of a dedicated cluster.
pub const DATABASE: Defaults = Defaults {
    cpu: DEFAULT_DATABASE_CPU_REQUEST,
    cpu_cores: 0.25,
    memory: DEFAULT_DATABASE_MEMORY_REQUEST,
    memory_bytes: 256.0 * 1024.0 * 1024.0,
};

/// A container's effective requests and limits, and its CPU and memory requests as numbers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Effective {
    /// What the container is given.
    pub requirements: ResourceRequirements,
    /// The CPU request in cores.
    pub cpu: f64,
    /// The memory request in bytes.
    pub memory: f64,
}

/// The requests and limits of a container whose spec (the field `field`) asks for `spec` (see the
/// module docs); an error naming the field when a CPU or memory quantity does not parse.
/// Resources other than CPU and memory are passed through as the spec gives them.
pub fn effective(
    spec: Option<&ResourceRequirements>,
    defaults: Defaults,
    field: &str,
) -> Result<Effective, String> {
    let spec = spec.cloned().unwrap_or_default();
    let mut requests = spec.requests.unwrap_or_default();
    let mut limits = spec.limits.unwrap_or_default();
    let number = |part: &str, quantity: Option<&Quantity>, name: &str| {
        quantity
            .map(|quantity| {
                parse_quantity(&quantity.0).ok_or_else(|| {
                    format!(
                        "{field}.{part}.{name}: {:?} is not a Kubernetes quantity",
                        quantity.0
                    )
                })
            })
            .transpose()
    };
    let cpu_request = number("requests", requests.get("cpu"), "cpu")?;
    let cpu_limit = number("limits", limits.get("cpu"), "cpu")?;
    let memory_request = number("requests", requests.get("memory"), "memory")?;
    let memory_limit = number("limits", limits.get("memory"), "memory")?;

    let cpu = match (cpu_request, cpu_limit, limits.get("cpu")) {
        (Some(request), _, _) => request,
        (None, Some(limit), Some(quantity)) if limit < defaults.cpu_cores => {
            requests.insert("cpu".to_owned(), quantity.clone());
            limit
        }
        (None, _, _) => {
            requests.insert("cpu".to_owned(), Quantity(defaults.cpu.to_owned()));
            defaults.cpu_cores
        }
    };
    let memory = match (memory_request, memory_limit, limits.get("memory")) {
        (Some(request), _, _) => request,
        (None, Some(limit), Some(quantity)) => {
            requests.insert("memory".to_owned(), quantity.clone());
            limit
        }
        (None, _, _) => {
            requests.insert("memory".to_owned(), Quantity(defaults.memory.to_owned()));
            defaults.memory_bytes
        }
    };
    if !limits.contains_key("memory")
        && let Some(request) = requests.get("memory")
    {
        limits.insert("memory".to_owned(), request.clone());
    }

    Ok(Effective {
        requirements: ResourceRequirements {
            requests: Some(requests),
            limits: Some(limits),
            claims: spec.claims,
        },
        cpu,
        memory,
    })
}

/// What an app's pods request at the peak of a rollout: every replica plus one surge pod per
/// process type, the migrate Job, and a dedicated database's instances plus one CNPG job pod.
///
/// Each pod counts with its effective requests ([`effective`]: a memory limit alone is the
/// request, a CPU limit below the default lowers it). The same sum the CRD's quota rules compute,
/// so a quota the API accepted always fits.
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

/// Computes [`PeakRequests`] from the spec's replica counts (an autoscaler's `maxReplicas` where
/// set) and the effective requests.
pub fn peak_requests(
    spec: &KumikoAppSpec,
    resources: &ProcessResources,
    database: &Database<'_>,
) -> PeakRequests {
    let api_pods = spec.api.peak_replicas() + 1;
    let worker = spec
        .worker
        .as_ref()
        .filter(|worker| worker.peak_replicas() > 0)
        .zip(resources.worker.as_ref());
    let worker_pods = worker.map_or(0, |(worker, _)| worker.peak_replicas() + 1);
    let cluster = match database {
        Database::Cluster {
            spec,
            resources,
            storage_bytes,
        } => Some((spec.instances, resources, *storage_bytes)),
        Database::Shared { .. } | Database::External { .. } => None,
    };
    let database_pods = cluster.map_or(0, |(instances, _, _)| instances + 1);
    let sum = |request: fn(&Effective) -> f64| {
        f64::from(api_pods) * request(&resources.api)
            + worker.map_or(0.0, |(_, effective)| {
                f64::from(worker_pods) * request(effective)
            })
            + request(&resources.migrate)
            + cluster.map_or(0.0, |(_, effective, _)| {
                f64::from(database_pods) * request(effective)
            })
    };
    PeakRequests {
        cpu: sum(|effective| effective.cpu),
        memory: sum(|effective| effective.memory),
        pods: api_pods + worker_pods + 1 + database_pods,
        storage: cluster.map_or(0.0, |(instances, _, bytes)| f64::from(instances) * bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

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
        let resources = effective(None, KUMIKO, "f").unwrap().requirements;
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
        let resources = effective(Some(&given), KUMIKO, "f").unwrap().requirements;
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
        let resources = effective(Some(&given), DATABASE, "f").unwrap().requirements;
        assert_eq!(
            pairs(resources.requests.as_ref()),
            strings(&[("cpu", "250m"), ("memory", "1Gi")])
        );
    }

    #[test]
    fn requests_given_are_kept_and_no_cpu_limit_is_invented() {
        let given = spec(&[("cpu", "2"), ("memory", "512Mi")], &[]);
        let resources = effective(Some(&given), KUMIKO, "f").unwrap().requirements;
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
                let resources = effective(Some(&given), defaults, "f").unwrap().requirements;
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
    fn effective_requests_are_numbers_for_the_quota() {
        let given = spec(&[], &[("memory", "1Gi")]);
        let resources = effective(Some(&given), KUMIKO, "spec.api.resources").unwrap();
        assert_eq!(resources.memory, 1024.0 * 1024.0 * 1024.0);
        assert_eq!(resources.cpu, 0.1);
    }

    #[test]
    fn the_default_numbers_are_the_default_quantities() {
        for defaults in [KUMIKO, DATABASE] {
            assert_eq!(parse_quantity(defaults.cpu), Some(defaults.cpu_cores));
            assert_eq!(parse_quantity(defaults.memory), Some(defaults.memory_bytes));
        }
    }

    #[test]
    fn an_unparsable_limit_is_an_error_naming_the_field() {
        let given = spec(&[], &[("cpu", "lots")]);
        assert_eq!(
            effective(Some(&given), KUMIKO, "spec.api.resources"),
            Err("spec.api.resources.limits.cpu: \"lots\" is not a Kubernetes quantity".to_owned())
        );
    }
}
