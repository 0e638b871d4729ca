//! The resource metrics API, `metrics.k8s.io/v1beta1`, as metrics-server serves it to
//! `kubectl top` and the HorizontalPodAutoscaler: the CPU and memory each pod's containers use
//! now.
//!
//! Rules followed (metrics-server and `k8s.io/metrics/pkg/apis/metrics/v1beta1`):
//!
//! - the group is an aggregated API that only exists where a metrics source runs: without one
//!   (kube-sim without its simulated kubelet) it is not in discovery and its paths are 404, as on
//!   a cluster without metrics-server (`kubectl top` then says "Metrics API not available");
//! - `pods` (namespaced) and `nodes` (cluster-scoped) answer `get` and `list` only; lists take
//!   `labelSelector` (matched against the pod's labels) and return `PodMetricsList`;
//! - a `PodMetrics` carries the pod's name, namespace, labels and creation time, the `timestamp`
//!   and `window` of the sample, and each container's `usage` (`cpu` in nanocores, `memory`, the
//!   working set, in Ki);
//! - a pod without a sample yet (just started) is absent from lists and 404 on `get`;
//! - authorization is RBAC on the `metrics.k8s.io` group's `pods`/`nodes` resources.
//!
//! The samples come from the kubelet (`controllers::kubelet`): the CPU time and resident memory of
//! each container's process group, read from `/proc`, over the metrics resolution.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::selectors::LabelSelector;
use crate::status::ApiError;

/// The API group.
pub const GROUP: &str = "metrics.k8s.io";
/// The version served.
pub const VERSION: &str = "v1beta1";

/// What one container used over one sample window.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerUsage {
    /// The container's name.
    pub name: String,
    /// CPU use, in nanocores (billionths of a core).
    pub cpu_nanocores: u64,
    /// Resident memory, in bytes.
    pub memory_bytes: u64,
}

/// One pod's sample.
#[derive(Clone, Debug, PartialEq)]
pub struct PodUsage {
    /// When the window ended (RFC 3339).
    pub timestamp: String,
    /// The window's length in seconds.
    pub window_seconds: u64,
    /// Each running container's use.
    pub containers: Vec<ContainerUsage>,
}

/// The latest sample of every pod, and whether a metrics source runs at all.
#[derive(Debug, Default)]
pub struct PodMetrics {
    enabled: AtomicBool,
    samples: Mutex<BTreeMap<(String, String), PodUsage>>,
}

impl PodMetrics {
    /// A metrics source runs: the API is served from now on.
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::SeqCst);
    }

    /// Whether the API is served.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }

    /// Replaces every sample with `samples` (keyed by namespace and pod name): a pod missing from
    /// it has no metrics (any more).
    pub fn replace(&self, samples: BTreeMap<(String, String), PodUsage>) {
        *self
            .samples
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = samples;
    }

    fn sample(&self, namespace: &str, pod: &str) -> Option<PodUsage> {
        self.samples
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&(namespace.to_owned(), pod.to_owned()))
            .cloned()
    }

    fn all(&self) -> BTreeMap<(String, String), PodUsage> {
        self.samples
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// A request of the metrics API, parsed from its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricsRoute {
    /// `/apis/metrics.k8s.io`.
    Group,
    /// `/apis/metrics.k8s.io/v1beta1`.
    Resources,
    /// `pods` in one namespace or all, one by name or a list.
    Pods {
        /// The namespace (`None`: all).
        namespace: Option<String>,
        /// The pod (`None`: a list).
        name: Option<String>,
    },
    /// `nodes`, one by name or a list.
    Nodes {
        /// The node (`None`: a list).
        name: Option<String>,
    },
}

impl MetricsRoute {
    /// The route of `segments` (the path split at `/`), when it is under the metrics group.
    pub fn parse(segments: &[&str]) -> Option<Self> {
        let route = match segments {
            ["apis", GROUP] => Self::Group,
            ["apis", GROUP, VERSION] => Self::Resources,
            ["apis", GROUP, VERSION, "pods"] => Self::Pods {
                namespace: None,
                name: None,
            },
            ["apis", GROUP, VERSION, "namespaces", namespace, "pods"] => Self::Pods {
                namespace: Some((*namespace).to_owned()),
                name: None,
            },
            [
                "apis",
                GROUP,
                VERSION,
                "namespaces",
                namespace,
                "pods",
                name,
            ] => Self::Pods {
                namespace: Some((*namespace).to_owned()),
                name: Some((*name).to_owned()),
            },
            ["apis", GROUP, VERSION, "nodes"] => Self::Nodes { name: None },
            ["apis", GROUP, VERSION, "nodes", name] => Self::Nodes {
                name: Some((*name).to_owned()),
            },
            _ => return None,
        };
        Some(route)
    }

    /// What RBAC checks: (verb, resource, namespace, name) for resource requests.
    pub fn authorization(
        &self,
    ) -> Option<(&'static str, &'static str, Option<&str>, Option<&str>)> {
        match self {
            Self::Group | Self::Resources => None,
            Self::Pods { namespace, name } => Some((
                if name.is_some() { "get" } else { "list" },
                "pods",
                namespace.as_deref(),
                name.as_deref(),
            )),
            Self::Nodes { name } => Some((
                if name.is_some() { "get" } else { "list" },
                "nodes",
                None,
                name.as_deref(),
            )),
        }
    }
}

/// The `APIGroup` entry of the metrics group, for `/apis`.
pub fn group_entry() -> Value {
    let version = json!({"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION});
    json!({"name": GROUP, "versions": [version.clone()], "preferredVersion": version})
}

/// Answers a GET of `route`; `selector` is the `labelSelector` query parameter.
pub fn answer(
    cluster: &Cluster,
    route: &MetricsRoute,
    selector: Option<&str>,
) -> Result<Value, ApiError> {
    let metrics = cluster.pod_metrics();
    match route {
        MetricsRoute::Group => {
            let mut group = group_entry();
            group["kind"] = json!("APIGroup");
            group["apiVersion"] = json!("v1");
            Ok(group)
        }
        MetricsRoute::Resources => Ok(json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": format!("{GROUP}/{VERSION}"),
            "resources": [
                {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
                {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]},
            ],
        })),
        MetricsRoute::Pods {
            namespace,
            name: Some(name),
        } => {
            let namespace = namespace.as_deref().unwrap_or("default");
            let pod = pod_object(cluster, namespace, name);
            match (pod, metrics.sample(namespace, name)) {
                (Some(pod), Some(usage)) => Ok(pod_metrics(&pod, &usage)),
                _ => Err(ApiError::not_found(GROUP, "pods", name)),
            }
        }
        MetricsRoute::Pods {
            namespace,
            name: None,
        } => {
            let selector = LabelSelector::parse(selector.unwrap_or_default())?;
            let pods = cluster.snapshot("", "pods", namespace.as_deref());
            let samples = metrics.all();
            let items: Vec<Value> = pods
                .iter()
                .filter(|pod| selector.matches(pod.pointer("/metadata/labels")))
                .filter_map(|pod| {
                    let key = (
                        string_at(pod, "/metadata/namespace"),
                        string_at(pod, "/metadata/name"),
                    );
                    samples.get(&key).map(|usage| pod_metrics(pod, usage))
                })
                .collect();
            Ok(json!({
                "kind": "PodMetricsList",
                "apiVersion": format!("{GROUP}/{VERSION}"),
                "metadata": {},
                "items": items,
            }))
        }
        MetricsRoute::Nodes { name } => {
            let node = node_metrics(&metrics.all());
            match name.as_deref() {
                Some(crate::controllers::kubelet::env::NODE_NAME) => Ok(node),
                Some(other) => Err(ApiError::not_found(GROUP, "nodes", other)),
                None => Ok(json!({
                    "kind": "NodeMetricsList",
                    "apiVersion": format!("{GROUP}/{VERSION}"),
                    "metadata": {},
                    "items": [node],
                })),
            }
        }
    }
}

fn string_at(object: &Value, pointer: &str) -> String {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn pod_object(cluster: &Cluster, namespace: &str, name: &str) -> Option<Value> {
    cluster
        .snapshot("", "pods", Some(namespace))
        .into_iter()
        .find(|pod| pod.pointer("/metadata/name").and_then(Value::as_str) == Some(name))
}

/// CPU as metrics-server prints it: nanocores with the `n` suffix.
pub fn cpu_quantity(nanocores: u64) -> String {
    format!("{nanocores}n")
}

/// Memory as metrics-server prints it: whole KiB with the `Ki` suffix.
pub fn memory_quantity(bytes: u64) -> String {
    format!("{}Ki", bytes / 1024)
}

/// The `PodMetrics` of `pod` from its sample.
pub fn pod_metrics(pod: &Value, usage: &PodUsage) -> Value {
    let mut metadata = json!({
        "name": string_at(pod, "/metadata/name"),
        "namespace": string_at(pod, "/metadata/namespace"),
        "creationTimestamp": usage.timestamp,
    });
    if let Some(labels) = pod.pointer("/metadata/labels") {
        metadata["labels"] = labels.clone();
    }
    let containers: Vec<Value> = usage
        .containers
        .iter()
        .map(|container| {
            json!({
                "name": container.name,
                "usage": {
                    "cpu": cpu_quantity(container.cpu_nanocores),
                    "memory": memory_quantity(container.memory_bytes),
                },
            })
        })
        .collect();
    json!({
        "kind": "PodMetrics",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": metadata,
        "timestamp": usage.timestamp,
        "window": format!("{}s", usage.window_seconds),
        "containers": containers,
    })
}

/// The one node's metrics: the sum of every pod's (kube-sim's pods all run on it).
fn node_metrics(samples: &BTreeMap<(String, String), PodUsage>) -> Value {
    let (cpu, memory) = samples
        .values()
        .flat_map(|usage| usage.containers.iter())
        .fold((0_u64, 0_u64), |(cpu, memory), container| {
            (
                cpu.saturating_add(container.cpu_nanocores),
                memory.saturating_add(container.memory_bytes),
            )
        });
    let newest = samples.values().map(|usage| usage.timestamp.clone()).max();
    let window = samples.values().map(|usage| usage.window_seconds).max();
    json!({
        "kind": "NodeMetrics",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": {"name": crate::controllers::kubelet::env::NODE_NAME, "creationTimestamp": newest},
        "timestamp": newest,
        "window": format!("{}s", window.unwrap_or(0)),
        "usage": {"cpu": cpu_quantity(cpu), "memory": memory_quantity(memory)},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_paths_parse_and_others_do_not() {
        assert_eq!(
            MetricsRoute::parse(&["apis", GROUP, VERSION, "namespaces", "shop", "pods"]),
            Some(MetricsRoute::Pods {
                namespace: Some("shop".to_owned()),
                name: None
            })
        );
        assert_eq!(
            MetricsRoute::parse(&["apis", GROUP, VERSION, "namespaces", "shop", "pods", "a"])
                .and_then(|route| route
                    .authorization()
                    .map(|(verb, resource, _, _)| (verb, resource))),
            Some(("get", "pods"))
        );
        assert_eq!(MetricsRoute::parse(&["apis", "apps", "v1"]), None);
        assert_eq!(
            MetricsRoute::parse(&["apis", GROUP, "v1", "pods"]),
            None,
            "only v1beta1 is served"
        );
    }

    #[test]
    fn pod_metrics_carry_the_pods_labels_and_metrics_server_units() {
        let pod = json!({"metadata": {"name": "a", "namespace": "shop", "labels": {"app": "x"}}});
        let usage = PodUsage {
            timestamp: "2026-12-03T10:00:00Z".to_owned(),
            window_seconds: 15,
            containers: vec![ContainerUsage {
                name: "api".to_owned(),
                cpu_nanocores: 250_000_000,
                memory_bytes: 64 * 1024 * 1024,
            }],
        };
        let metrics = pod_metrics(&pod, &usage);
        assert_eq!(metrics["metadata"]["labels"]["app"], "x");
        assert_eq!(metrics["window"], "15s");
        assert_eq!(metrics["containers"][0]["usage"]["cpu"], "250000000n");
        assert_eq!(metrics["containers"][0]["usage"]["memory"], "65536Ki");
    }
}
