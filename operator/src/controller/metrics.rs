//! The operator's Prometheus metrics (`/metrics`).

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Every metric the operator exports, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<Labels, Counter>,
    failures: Family<Labels, Counter>,
    duration: Histogram,
    apps: Family<Labels, Gauge>,
    writes: Family<Labels, Counter>,
    api_requests: Family<Labels, Counter>,
    drift_corrections: Family<Labels, Counter>,
    leader: Gauge,
    readiness: Mutex<HashMap<String, &'static str>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `kumiko_operator` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kumiko_operator");
        let reconciles = Family::<Labels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles run, by result",
            reconciles.clone(),
        );
        let failures = Family::<Labels, Counter>::default();
        registry.register(
            "reconcile_failures",
            "Failed reconciles, by error category",
            failures.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "reconcile_duration_seconds",
            "How long one reconcile took",
            duration.clone(),
        );
        let apps = Family::<Labels, Gauge>::default();
        registry.register("apps", "KumikoApps by their Ready condition", apps.clone());
        let writes = Family::<Labels, Counter>::default();
        registry.register(
            "writes",
            "Writes to the Kubernetes API, by kind of object (steady state: none)",
            writes.clone(),
        );
        let api_requests = Family::<Labels, Counter>::default();
        registry.register(
            "api_requests",
            "Requests to the Kubernetes API, by verb (get, list and watch read; the rest write)",
            api_requests.clone(),
        );
        let drift_corrections = Family::<Labels, Counter>::default();
        registry.register(
            "drift_corrections",
            "Children put back after someone else changed a field the operator manages, by kind",
            drift_corrections.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the lease",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            failures,
            duration,
            apps,
            writes,
            api_requests,
            drift_corrections,
            leader,
            readiness: Mutex::new(HashMap::new()),
        }
    }

    /// Records one finished reconcile.
    pub fn reconciled(&self, seconds: f64, failure_category: Option<&'static str>) {
        self.duration.observe(seconds);
        let result = if failure_category.is_some() {
            "error"
        } else {
            "ok"
        };
        self.reconciles
            .get_or_create(&vec![("result", result.to_owned())])
            .inc();
        if let Some(category) = failure_category {
            self.failures
                .get_or_create(&vec![("category", category.to_owned())])
                .inc();
        }
    }

    /// Records one write (apply, create, delete or status patch) of an object of `kind`.
    pub fn wrote(&self, kind: &str) {
        self.writes
            .get_or_create(&vec![("kind", kind.to_owned())])
            .inc();
    }

    /// Records one child of `kind` put back after someone else changed it.
    pub fn drift_corrected(&self, kind: &str) {
        self.drift_corrections
            .get_or_create(&vec![("kind", kind.to_owned())])
            .inc();
    }

    /// The number of drift corrections so far, all kinds together.
    pub fn drift_corrections_total(&self) -> u64 {
        WRITE_KINDS
            .iter()
            .filter_map(|kind| {
                self.drift_corrections
                    .get(&vec![("kind", (*kind).to_owned())])
            })
            .map(|counter| counter.get())
            .sum()
    }

    /// Records one request to the Kubernetes API.
    pub fn api_request(&self, verb: &'static str) {
        self.api_requests
            .get_or_create(&vec![("verb", verb.to_owned())])
            .inc();
    }

    /// The number of writes so far, all kinds together.
    pub fn writes_total(&self) -> u64 {
        let mut total = 0;
        for kind in WRITE_KINDS {
            if let Some(counter) = self.writes.get(&vec![("kind", (*kind).to_owned())]) {
                total += counter.get();
            }
        }
        total
    }

    /// The number of reconciles so far (successful and failed).
    pub fn reconciles_total(&self) -> u64 {
        ["ok", "error"]
            .iter()
            .filter_map(|result| {
                self.reconciles
                    .get(&vec![("result", (*result).to_owned())])
                    .map(|counter| counter.get())
            })
            .sum()
    }

    /// Records an app's `Ready` status (`None` when the app is gone).
    pub fn app_readiness(&self, app: &str, ready: Option<&'static str>) {
        let Ok(mut readiness) = self.readiness.lock() else {
            return;
        };
        match ready {
            Some(status) => readiness.insert(app.to_owned(), status),
            None => readiness.remove(app),
        };
        for status in ["True", "False", "Unknown"] {
            let count = readiness.values().filter(|value| **value == status).count();
            self.apps
                .get_or_create(&vec![("ready", status.to_owned())])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// The kinds of object the operator writes (labels of the writes counter).
pub const WRITE_KINDS: &[&str] = &[
    "ServiceAccount",
    "ResourceQuota",
    "LimitRange",
    "Cluster",
    "Secret",
    "Job",
    "Deployment",
    "Service",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "KumikoApp",
    "KumikoAppStatus",
    "Event",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_text_names_every_family_with_the_prefix() {
        let metrics = Metrics::new();
        metrics.reconciled(0.01, None);
        metrics.reconciled(0.02, Some("kube_api"));
        metrics.wrote("Deployment");
        metrics.app_readiness("shop/shop", Some("True"));
        let text = metrics.encode();
        for needle in [
            "kumiko_operator_reconciles_total{result=\"ok\"} 1",
            "kumiko_operator_reconcile_failures_total{category=\"kube_api\"} 1",
            "kumiko_operator_reconcile_duration_seconds_count 2",
            "kumiko_operator_writes_total{kind=\"Deployment\"} 1",
            "kumiko_operator_apps{ready=\"True\"} 1",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        assert_eq!(metrics.writes_total(), 1);
    }

    #[test]
    fn a_deleted_app_leaves_the_readiness_gauge() {
        let metrics = Metrics::new();
        metrics.app_readiness("a/a", Some("Unknown"));
        metrics.app_readiness("a/a", None);
        assert!(
            metrics
                .encode()
                .contains("kumiko_operator_apps{ready=\"Unknown\"} 0")
        );
    }
}
