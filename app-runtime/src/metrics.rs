//! `GET /metrics` in the Prometheus text format (prometheus-client, as the operator uses).
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `kumiko_http_requests_total` | `route`, `status` | requests answered (route = the matched path pattern, `unmatched` otherwise) |
//! | `kumiko_http_request_duration_seconds` | `route` | latency histogram |
//! | `kumiko_lifecycle_state` | `state` | 1 for the current state, 0 for the others |
//! | `kumiko_boot_phase_duration_seconds` | `phase` | each boot phase's duration |
//! | `kumiko_health_check_up` | `check` | 1 healthy, 0 otherwise |
//! | `kumiko_health_check_latency_seconds` | `check` | the last probe's latency |
//! | `kumiko_jobs_total` | `kind`, `outcome` | job runs (cron ticks and queued jobs) by outcome |
//! | `kumiko_job_duration_seconds` | `kind` | job run durations |
//! | `kumiko_scheduler_leader` | | 1 while this process is the scheduler leader |
//!
//! The lifecycle and the checks are read when scraped; the rest is recorded as it happens.
//! `KUMIKO_METRICS=off` turns the HTTP layer off (the endpoint stays).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::boot::PhaseRecord;
use crate::health::{CheckStatus, Health};
use crate::lifecycle::{Lifecycle, State as LifecycleState};

type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;
type RouteHistograms = Family<RouteLabel, Histogram, fn() -> Histogram>;

/// The HTTP counter's labels: borrowed, so counting a request allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: &'static str,
    status: u16,
}

/// The latency histogram's label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

/// How many distinct route patterns get their own label; the rest count as `other`. Patterns
/// come from the app's router, so real apps stay far below this.
const MAX_ROUTES: usize = 1000;
type Seconds = Gauge<f64, AtomicU64>;

/// The setting that turns the HTTP metrics layer off (`off`/`0`); on by default.
pub const METRICS_SETTING: &str = "KUMIKO_METRICS";

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

struct Inner {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: RouteHistograms,
    routes: std::sync::RwLock<std::collections::HashSet<&'static str>>,
    lifecycle: Family<Labels, Gauge>,
    boot_phases: Family<Labels, Seconds>,
    check_up: Family<Labels, Gauge>,
    check_latency: Family<Labels, Seconds>,
    jobs: Family<Labels, Counter>,
    job_duration: Histograms,
    leader: Gauge,
}

/// The process's metrics (clone = shared).
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `kumiko` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kumiko");
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route pattern and status",
            http_requests.clone(),
        );
        let http_duration: RouteHistograms = Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency, by route pattern",
            http_duration.clone(),
        );
        let lifecycle = Family::<Labels, Gauge>::default();
        registry.register(
            "lifecycle_state",
            "1 for the process's lifecycle state",
            lifecycle.clone(),
        );
        let boot_phases = Family::<Labels, Seconds>::default();
        registry.register(
            "boot_phase_duration_seconds",
            "How long each boot phase took",
            boot_phases.clone(),
        );
        let check_up = Family::<Labels, Gauge>::default();
        registry.register(
            "health_check_up",
            "1 while a readiness check is healthy",
            check_up.clone(),
        );
        let check_latency = Family::<Labels, Seconds>::default();
        registry.register(
            "health_check_latency_seconds",
            "The latest probe's latency, by check",
            check_latency.clone(),
        );
        let jobs = Family::<Labels, Counter>::default();
        registry.register(
            "jobs",
            "Job runs (cron ticks and queued jobs), by kind and outcome",
            jobs.clone(),
        );
        let job_duration: Histograms = Family::new_with_constructor(latency_histogram);
        registry.register(
            "job_duration_seconds",
            "Job run durations, by kind",
            job_duration.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "scheduler_leader",
            "1 while this process is the scheduler leader",
            leader.clone(),
        );
        Self(Arc::new(Inner {
            registry,
            http_requests,
            http_duration,
            routes: std::sync::RwLock::default(),
            lifecycle,
            boot_phases,
            check_up,
            check_latency,
            jobs,
            job_duration,
            leader,
        }))
    }

    /// Records one HTTP request.
    pub fn observe_http(&self, route: &str, status: u16, seconds: f64) {
        let route = self.intern(route);
        self.0
            .http_requests
            .get_or_create(&HttpLabels { route, status })
            .inc();
        self.0
            .http_duration
            .get_or_create(&RouteLabel { route })
            .observe(seconds);
    }

    /// The route pattern as a `'static` label: each distinct pattern is kept once (they are the
    /// router's, so few), past [`MAX_ROUTES`] they count as `other`.
    fn intern(&self, route: &str) -> &'static str {
        let known = self
            .0
            .routes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(route)
            .copied();
        if let Some(route) = known {
            return route;
        }
        let mut routes = self
            .0
            .routes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(route) = routes.get(route) {
            return route;
        }
        if routes.len() >= MAX_ROUTES {
            return "other";
        }
        let interned: &'static str = Box::leak(route.to_owned().into_boxed_str());
        routes.insert(interned);
        interned
    }

    /// Records the boot's phases (once the process is ready).
    pub fn record_boot(&self, records: &[PhaseRecord]) {
        for record in records {
            self.0
                .boot_phases
                .get_or_create(&vec![("phase", record.phase.name().to_owned())])
                .set(record.duration.as_secs_f64());
        }
    }

    /// Records one job run: `outcome` is `succeeded`, `failed` or `cancelled`.
    pub fn observe_job(&self, kind: &str, outcome: &'static str, seconds: f64) {
        self.0
            .jobs
            .get_or_create(&vec![
                ("kind", kind.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
        self.0
            .job_duration
            .get_or_create(&vec![("kind", kind.to_owned())])
            .observe(seconds);
    }

    /// Sets the scheduler-leader gauge.
    pub fn set_leader(&self, leader: bool) {
        self.0.leader.set(i64::from(leader));
    }

    /// The text exposition, with the lifecycle state and the checks read now.
    pub fn render(&self, lifecycle: &Lifecycle, health: &Health) -> String {
        let current = lifecycle.state();
        for state in [
            LifecycleState::Starting,
            LifecycleState::Ready,
            LifecycleState::Draining,
            LifecycleState::Stopped,
        ] {
            self.0
                .lifecycle
                .get_or_create(&vec![("state", state.as_str().to_owned())])
                .set(i64::from(state == current));
        }
        for report in health.reports() {
            let labels = vec![("check", report.name.clone())];
            self.0
                .check_up
                .get_or_create(&labels)
                .set(i64::from(report.status == CheckStatus::Healthy));
            if let Some(latency_ms) = report.latency_ms {
                self.0
                    .check_latency
                    .get_or_create(&labels)
                    .set(latency_ms / 1000.0);
            }
        }
        let mut text = String::new();
        if let Err(error) = encode(&mut text, &self.0.registry) {
            tracing::warn!(%error, "encoding the metrics failed");
        }
        text
    }
}

/// The HTTP layer: counts every request by route pattern and status, with its latency.
pub async fn track_http(
    State(metrics): State<Metrics>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    let route = matched
        .as_ref()
        .map(MatchedPath::as_str)
        .unwrap_or("unmatched");
    metrics.observe_http(
        route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Whether `KUMIKO_METRICS` leaves the HTTP layer on (anything but `off`, `0`, `false`, `no`).
pub fn http_layer_enabled(value: Option<&str>) -> bool {
    !matches!(
        value
            .map(|value| value.trim().to_ascii_lowercase())
            .as_deref(),
        Some("off" | "0" | "false" | "no")
    )
}

/// Checks `KUMIKO_METRICS` (for boot validation).
pub fn validate_setting(value: &str) -> Result<(), String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "on" | "1" | "true" | "yes" | "off" | "0" | "false" | "no" => Ok(()),
        _ => Err(format!("`{value}` is not on or off")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_carries_requests_state_checks_jobs_and_leadership() {
        let metrics = Metrics::new();
        metrics.observe_http("/api/ping", 200, 0.001);
        metrics.observe_job("greet", "succeeded", 0.01);
        metrics.set_leader(true);
        let lifecycle = Lifecycle::new();
        lifecycle.advance(LifecycleState::Ready);
        let text = metrics.render(&lifecycle, &Health::new(lifecycle.clone()));
        assert!(
            text.contains(r#"kumiko_http_requests_total{route="/api/ping",status="200"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kumiko_lifecycle_state{state="ready"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kumiko_lifecycle_state{state="starting"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kumiko_jobs_total{kind="greet",outcome="succeeded"} 1"#),
            "{text}"
        );
        assert!(text.contains("kumiko_scheduler_leader 1"), "{text}");
        assert!(
            text.contains("kumiko_http_request_duration_seconds_bucket"),
            "{text}"
        );
    }

    #[test]
    fn the_http_layer_is_on_unless_turned_off() {
        assert!(http_layer_enabled(None));
        assert!(http_layer_enabled(Some("on")));
        assert!(!http_layer_enabled(Some("off")));
        assert!(!http_layer_enabled(Some(" 0 ")));
        assert!(validate_setting("maybe").is_err());
    }
}
