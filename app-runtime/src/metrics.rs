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

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
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

/// The HTTP counter's labels.
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

/// The HTTP latency buckets' upper bounds in nanoseconds: 0.5 ms doubling 16 times (the same
/// bounds as [`latency_histogram`]).
const LATENCY_BOUNDS_NANOS: [u64; 16] = {
    let mut bounds = [0u64; 16];
    let mut index = 0;
    while index < 16 {
        bounds[index] = 500_000u64 << index;
        index += 1;
    }
    bounds
};

/// The status codes a route counts (100 to 999, what `http::StatusCode` allows).
const STATUSES: usize = 900;

/// One route pattern's request counters and latency histogram, resolved once per route and then
/// reused: recording a request is a few relaxed atomic additions, with no lock, no label hashing
/// and no allocation.
struct RouteMetrics {
    route: &'static str,
    /// Requests by status code (index = status - 100).
    statuses: Box<[AtomicU64]>,
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; LATENCY_BOUNDS_NANOS.len() + 1],
    sum_nanos: AtomicU64,
}

impl RouteMetrics {
    fn new(route: &'static str) -> Self {
        Self {
            route,
            statuses: (0..STATUSES).map(|_| AtomicU64::new(0)).collect(),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }

    fn record(&self, status: u16, nanos: u64) {
        let slot = usize::from(status.clamp(100, 999) - 100);
        if let Some(counter) = self.statuses.get(slot) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let bucket = LATENCY_BOUNDS_NANOS
            .iter()
            .position(|bound| nanos <= *bound)
            .unwrap_or(LATENCY_BOUNDS_NANOS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// Every route's [`RouteMetrics`], exposed as `http_requests_total` and
/// `http_request_duration_seconds`. The handles live as long as the process (route patterns are
/// the router's, and at most [`MAX_ROUTES`] of them get their own).
#[derive(Debug)]
struct HttpMetrics {
    /// This registry's identity in the per-thread caches.
    id: u64,
    routes: std::sync::RwLock<std::collections::HashMap<&'static str, &'static RouteMetrics>>,
    unmatched: &'static RouteMetrics,
    other: &'static RouteMetrics,
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics")
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

static NEXT_HTTP_METRICS_ID: AtomicU64 = AtomicU64::new(1);

/// How many routes each thread keeps resolved (beyond that, lookups take the shared map).
const THREAD_CACHE: usize = 64;

thread_local! {
    /// Per thread: (registry id, the pattern's address, its handle). A hit is checked against the
    /// pattern's text, so a reused address can never count a request under another route.
    static RESOLVED: RefCell<Vec<(u64, usize, &'static RouteMetrics)>> = const { RefCell::new(Vec::new()) };
}

impl HttpMetrics {
    fn new() -> Self {
        Self {
            id: NEXT_HTTP_METRICS_ID.fetch_add(1, Ordering::Relaxed),
            routes: std::sync::RwLock::default(),
            unmatched: Box::leak(Box::new(RouteMetrics::new("unmatched"))),
            other: Box::leak(Box::new(RouteMetrics::new("other"))),
        }
    }

    /// The handle of `route` (a matched path pattern): from this thread's cache, else from the
    /// shared map (created there on first sight).
    fn resolve(&self, route: Option<&str>) -> &'static RouteMetrics {
        let Some(route) = route else {
            return self.unmatched;
        };
        let address = route.as_ptr() as usize;
        let cached = RESOLVED.with(|resolved| {
            resolved
                .borrow()
                .iter()
                .find(|(id, at, handle)| *id == self.id && *at == address && handle.route == route)
                .map(|(_, _, handle)| *handle)
        });
        if let Some(handle) = cached {
            return handle;
        }
        let handle = self.resolve_shared(route);
        RESOLVED.with(|resolved| {
            let mut resolved = resolved.borrow_mut();
            if resolved.len() < THREAD_CACHE {
                resolved.push((self.id, address, handle));
            }
        });
        handle
    }

    fn resolve_shared(&self, route: &str) -> &'static RouteMetrics {
        let known = self
            .routes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(route)
            .copied();
        if let Some(handle) = known {
            return handle;
        }
        let mut routes = self
            .routes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(handle) = routes.get(route) {
            return handle;
        }
        if routes.len() >= MAX_ROUTES {
            return self.other;
        }
        let name: &'static str = Box::leak(route.to_owned().into_boxed_str());
        let handle: &'static RouteMetrics = Box::leak(Box::new(RouteMetrics::new(name)));
        routes.insert(name, handle);
        handle
    }

    /// Every route with a request, sorted by pattern (the exposition is stable).
    fn snapshot(&self) -> Vec<&'static RouteMetrics> {
        let mut routes: Vec<&'static RouteMetrics> = self
            .routes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .copied()
            .chain([self.unmatched, self.other])
            .filter(|route| route.buckets.iter().any(|b| b.load(Ordering::Relaxed) > 0))
            .collect();
        routes.sort_by_key(|route| route.route);
        routes
    }
}

impl Collector for HttpMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let routes = self.snapshot();
        if routes.is_empty() {
            return Ok(());
        }
        let mut counters = encoder.encode_descriptor(
            "http_requests",
            "HTTP requests answered, by route pattern and status",
            None,
            MetricType::Counter,
        )?;
        for route in &routes {
            for (slot, counter) in route.statuses.iter().enumerate() {
                let count = counter.load(Ordering::Relaxed);
                if count == 0 {
                    continue;
                }
                let status = u16::try_from(slot + 100).unwrap_or(u16::MAX);
                counters
                    .encode_family(&HttpLabels {
                        route: route.route,
                        status,
                    })?
                    .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
            }
        }
        let mut histograms = encoder.encode_descriptor(
            "http_request_duration_seconds",
            "HTTP request latency, by route pattern",
            None,
            MetricType::Histogram,
        )?;
        for route in &routes {
            // Per-bucket counts, as prometheus-client's own histogram keeps them: the encoder
            // makes them cumulative.
            let mut count = 0u64;
            let mut buckets = Vec::with_capacity(route.buckets.len());
            for (index, observed) in route.buckets.iter().enumerate() {
                let observed = observed.load(Ordering::Relaxed);
                count += observed;
                let bound = LATENCY_BOUNDS_NANOS
                    .get(index)
                    .map_or(f64::INFINITY, |nanos| *nanos as f64 / 1e9);
                buckets.push((bound, observed));
            }
            let sum = route.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            histograms
                .encode_family(&RouteLabel { route: route.route })?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }
        Ok(())
    }
}

struct Inner {
    registry: Registry,
    http: Arc<HttpMetrics>,
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
        let http = Arc::new(HttpMetrics::new());
        registry.register_collector(Box::new(http.clone()));
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
            http,
            lifecycle,
            boot_phases,
            check_up,
            check_latency,
            jobs,
            job_duration,
            leader,
        }))
    }

    /// Records one HTTP request answered on `route` (a matched path pattern; `None` when no
    /// route matched).
    pub fn observe_http(&self, route: Option<&str>, status: u16, seconds: f64) {
        let nanos = (seconds * 1e9) as u64;
        self.0.http.resolve(route).record(status, nanos);
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

/// The HTTP layer: counts every request by route pattern and status, with its latency. Apply it
/// with `Router::layer`, so each request carries its [`MatchedPath`].
#[derive(Clone, Debug)]
pub struct HttpLayer {
    metrics: Metrics,
}

impl HttpLayer {
    /// The layer recording into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for HttpLayer {
    type Service = HttpService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpService {
            inner,
            http: self.metrics.0.http.clone(),
        }
    }
}

/// The service [`HttpLayer`] wraps a route in.
#[derive(Clone, Debug)]
pub struct HttpService<S> {
    inner: S,
    http: Arc<HttpMetrics>,
}

impl<S, B> tower::Service<Request<B>> for HttpService<S>
where
    S: tower::Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let route = self.http.resolve(
            request
                .extensions()
                .get::<MatchedPath>()
                .map(MatchedPath::as_str),
        );
        Tracked {
            inner: self.inner.call(request),
            route,
            started: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request being answered; records its status and latency when the response is ready.
    pub struct Tracked<F> {
        #[pin]
        inner: F,
        route: &'static RouteMetrics,
        started: Instant,
    }
}

impl<F, E> Future for Tracked<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        if let Ok(response) = &output {
            let nanos = u64::try_from(this.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            this.route.record(response.status().as_u16(), nanos);
        }
        Poll::Ready(output)
    }
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
        metrics.observe_http(Some("/api/ping"), 200, 0.001);
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

    #[tokio::test]
    async fn the_layer_counts_each_route_pattern_and_status_apart_and_unmatched_requests_too() {
        use tower::ServiceExt as _;
        let metrics = Metrics::new();
        let router = axum::Router::new()
            .route("/items/{id}", axum::routing::get(|| async { "item" }))
            .route(
                "/fail",
                axum::routing::get(|| async { axum::http::StatusCode::INTERNAL_SERVER_ERROR }),
            )
            .layer(HttpLayer::new(metrics.clone()));
        for path in ["/items/1", "/items/2", "/items/3", "/fail", "/nowhere"] {
            let request = axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap();
            router.clone().oneshot(request).await.unwrap();
        }
        let lifecycle = Lifecycle::new();
        let text = metrics.render(&lifecycle, &Health::new(lifecycle.clone()));
        assert!(
            text.contains(r#"kumiko_http_requests_total{route="/items/{id}",status="200"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kumiko_http_requests_total{route="/fail",status="500"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"kumiko_http_request_duration_seconds_count{route="/items/{id}"} 3"#),
            "{text}"
        );
        // Cumulative buckets, the last one holding every observation.
        assert!(
            text.contains(
                r#"kumiko_http_request_duration_seconds_bucket{le="+Inf",route="/items/{id}"} 3"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"kumiko_http_request_duration_seconds_bucket{le="+Inf",route="/fail"} 1"#
            ),
            "{text}"
        );
        // The router's fallback is layered too: a request no route matched counts as `unmatched`.
        assert!(
            text.contains(r#"kumiko_http_requests_total{route="unmatched",status="404"} 1"#),
            "{text}"
        );
        assert!(!text.contains("/nowhere"), "{text}");
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
