//! Health: `GET /health` (liveness) and `GET /health/ready` (readiness).
//!
//! Readiness checks (database ping, Redis ping, worker heartbeat, scheduler leadership) run in
//! the background on their own interval; the handlers only read the cached result, so a probe
//! never waits on a dependency. A check can be informational (leadership): it is shown but never
//! makes the process unready.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::lifecycle::{Lifecycle, State};

type Probe = Arc<dyn Fn() -> BoxFuture<'static, Result<String, String>> + Send + Sync>;

/// A readiness check: a named probe run in the background.
#[derive(Clone)]
pub struct Check {
    name: String,
    critical: bool,
    interval: Duration,
    timeout: Duration,
    probe: Probe,
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Check")
            .field("name", &self.name)
            .field("critical", &self.critical)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl Check {
    /// A check named `name`. The probe returns `Ok(message)` when healthy (the message may be
    /// empty) and `Err(message)` when not. Defaults: every second, 2 s timeout, critical.
    pub fn new<F, Fut>(name: impl Into<String>, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        Self {
            name: name.into(),
            critical: true,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            probe: Arc::new(move || Box::pin(probe())),
        }
    }

    /// Shown on `/health/ready` but never makes the process unready (scheduler leadership).
    pub fn informational(mut self) -> Self {
        self.critical = false;
        self
    }

    /// Runs the probe every `interval`.
    pub fn every(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Fails a probe that takes longer than `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The check's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self) -> CheckReport {
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.timeout, (self.probe)()).await;
        let latency = started.elapsed();
        let (status, message) = match outcome {
            Ok(Ok(message)) => (CheckStatus::Healthy, message),
            Ok(Err(message)) => (CheckStatus::Unhealthy, message),
            Err(_) => (
                CheckStatus::Unhealthy,
                format!("no answer within {} ms", self.timeout.as_millis()),
            ),
        };
        CheckReport {
            name: self.name.clone(),
            critical: self.critical,
            status,
            latency_ms: Some(latency.as_secs_f64() * 1000.0),
            message,
            checked_at: Some(jiff::Timestamp::now().to_string()),
        }
    }
}

/// A check's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Not run yet.
    Pending,
    /// The last probe succeeded.
    Healthy,
    /// The last probe failed or timed out.
    Unhealthy,
}

/// A check's latest result, as shown in the readiness body.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CheckReport {
    /// The check.
    pub name: String,
    /// Whether it affects readiness.
    pub critical: bool,
    /// Its state.
    pub status: CheckStatus,
    /// The latest probe's latency.
    pub latency_ms: Option<f64>,
    /// The probe's message (why it failed, or e.g. `leader`/`follower`).
    pub message: String,
    /// When it last ran (RFC 3339).
    pub checked_at: Option<String>,
}

impl CheckReport {
    fn pending(check: &Check) -> Self {
        Self {
            name: check.name.clone(),
            critical: check.critical,
            status: CheckStatus::Pending,
            latency_ms: None,
            message: "not run yet".to_owned(),
            checked_at: None,
        }
    }
}

/// The readiness body.
#[derive(Debug, serde::Serialize)]
pub struct Readiness<'a> {
    /// `ready` or `unready`.
    pub status: &'static str,
    /// The lifecycle state.
    pub state: State,
    /// Every check.
    pub checks: &'a [CheckReport],
    /// While `starting`: the running boot phase, its attempt and its last error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot: Option<crate::boot::BootProgress>,
    /// Why the app marked itself temporarily not ready (it stays in `ready`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// Decides readiness: ready only in `ready` with every critical check healthy. Pure.
pub fn is_ready(state: State, checks: &[CheckReport]) -> bool {
    state == State::Ready
        && checks
            .iter()
            .all(|check| !check.critical || check.status == CheckStatus::Healthy)
}

/// Renders the readiness response for a state and the cached checks. Pure.
pub fn render_readiness(state: State, checks: &[CheckReport]) -> (StatusCode, Bytes) {
    render_readiness_during_boot(state, checks, None)
}

/// Like [`render_readiness`], with the boot's progress shown while the process is `starting`.
/// Pure.
pub fn render_readiness_during_boot(
    state: State,
    checks: &[CheckReport],
    boot: Option<crate::boot::BootProgress>,
) -> (StatusCode, Bytes) {
    render_readiness_full(state, checks, boot, None)
}

/// Renders the readiness response: state, checks, the boot's progress while `starting`, and the
/// app's own "temporarily not ready" reason, which makes it 503 in any state. Pure.
pub fn render_readiness_full(
    state: State,
    checks: &[CheckReport],
    boot: Option<crate::boot::BootProgress>,
    unavailable: Option<String>,
) -> (StatusCode, Bytes) {
    let ready = is_ready(state, checks) && unavailable.is_none();
    let body = Readiness {
        status: if ready { "ready" } else { "unready" },
        state,
        checks,
        boot: boot.filter(|_| state == State::Starting),
        unavailable,
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
    (status, Bytes::from(bytes))
}

struct Snapshot {
    reports: Vec<CheckReport>,
    healthy: bool,
    /// The body for `ready` with these reports, rendered once per change.
    ready_body: Bytes,
}

impl Snapshot {
    fn new(reports: Vec<CheckReport>) -> Self {
        let healthy = is_ready(State::Ready, &reports);
        let (_, ready_body) = render_readiness(State::Ready, &reports);
        Self {
            reports,
            healthy,
            ready_body,
        }
    }
}

/// The health registry: checks, their cached results, and the endpoint handlers.
#[derive(Clone)]
pub struct Health {
    lifecycle: Lifecycle,
    boot: Arc<RwLock<Option<crate::boot::ProgressHandle>>>,
    unavailable: Arc<RwLock<Option<String>>>,
    /// Set at the end of boot validation (phase 6): [`Health::register`] refuses from then on.
    declarations_frozen: Arc<std::sync::atomic::AtomicBool>,
    /// Set when the checks start (phase 16): nothing more is registered at all.
    frozen: Arc<std::sync::atomic::AtomicBool>,
    checks: Arc<Mutex<Vec<Check>>>,
    snapshot: Arc<RwLock<Arc<Snapshot>>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("lifecycle", &self.lifecycle)
            .finish_non_exhaustive()
    }
}

impl Health {
    /// A registry bound to the process lifecycle.
    pub fn new(lifecycle: Lifecycle) -> Self {
        Self {
            lifecycle,
            boot: Arc::default(),
            unavailable: Arc::default(),
            declarations_frozen: Arc::default(),
            frozen: Arc::default(),
            checks: Arc::default(),
            snapshot: Arc::new(RwLock::new(Arc::new(Snapshot::new(Vec::new())))),
        }
    }

    /// Registers a check before boot validation (phase 6). It shows as pending until its first
    /// run.
    ///
    /// Registration is frozen at boot validation: a check registered later is
    /// [`crate::Error::LateRegistration`], never a check that silently stays pending. (An app's
    /// checks are its components' probes, declared on the [`crate::app::App`] builder; the
    /// runtime binds them, and its own checks, in phases 7 to 14.)
    pub fn register(&self, check: Check) -> Result<(), crate::Error> {
        if self.declarations_frozen.load(Ordering::SeqCst) {
            return Err(crate::Error::LateRegistration {
                what: "readiness check",
                name: check.name,
            });
        }
        self.register_core(check)
    }

    /// Freezes [`Health::register`] (the end of boot validation, phase 6).
    pub fn freeze_registration(&self) {
        self.declarations_frozen.store(true, Ordering::SeqCst);
    }

    /// Registers one of the runtime's own checks (the database, Redis, the jobs worker, the
    /// leadership, and the probes of components declared before phase 6) in phases 7 to 14;
    /// refused once the checks started (phase 16).
    pub(crate) fn register_core(&self, check: Check) -> Result<(), crate::Error> {
        if self.frozen.load(Ordering::SeqCst) {
            return Err(crate::Error::LateRegistration {
                what: "readiness check",
                name: check.name,
            });
        }
        let mut checks = lock(&self.checks);
        checks.push(check);
        let reports = checks.iter().map(CheckReport::pending).collect();
        *write(&self.snapshot) = Arc::new(Snapshot::new(reports));
        Ok(())
    }

    /// Marks the check named `name` unhealthy at once (without waiting for its next run): a
    /// supervised component that ended is reported the moment it is noticed.
    pub fn mark_unhealthy(&self, name: &str, message: String) {
        let index = read(&self.snapshot)
            .reports
            .iter()
            .position(|report| report.name == name);
        if let Some(index) = index {
            let mut report = read(&self.snapshot).reports[index].clone();
            report.status = CheckStatus::Unhealthy;
            report.message = message;
            report.checked_at = Some(jiff::Timestamp::now().to_string());
            self.store(index, report);
        }
    }

    /// Drops the registered checks (at shutdown, once their tasks are told to stop), and with them
    /// the clients their probes hold (the Redis connection, the pool): the last reports stay shown.
    pub fn drop_checks(&self) {
        lock(&self.checks).clear();
    }

    /// Shows `boot`'s progress on `/health/ready` while the process is `starting`.
    pub fn show_boot(&self, boot: crate::boot::ProgressHandle) {
        *write(&self.boot) = Some(boot);
    }

    /// Marks the process temporarily not ready (readiness 503 naming `reason`) without leaving
    /// its lifecycle state; `None` makes it available again.
    pub fn set_unavailable(&self, reason: Option<String>) {
        let mut slot = write(&self.unavailable);
        if *slot != reason {
            tracing::info!(reason = ?reason, "availability changed");
        }
        *slot = reason;
    }

    /// The latest result of every check.
    pub fn reports(&self) -> Vec<CheckReport> {
        read(&self.snapshot).reports.clone()
    }

    /// Whether `/health/ready` answers 200 now.
    pub fn is_ready(&self) -> bool {
        self.lifecycle.state() == State::Ready && read(&self.snapshot).healthy
    }

    fn store(&self, index: usize, report: CheckReport) {
        let mut snapshot = write(&self.snapshot);
        let mut reports = snapshot.reports.clone();
        if let Some(slot) = reports.get_mut(index) {
            if slot.status != report.status {
                tracing::info!(
                    check = %report.name,
                    status = ?report.status,
                    message = %report.message,
                    "health check changed"
                );
            }
            *slot = report;
        }
        *snapshot = Arc::new(Snapshot::new(reports));
    }

    /// Runs every check once, concurrently (the first round before `ready`).
    pub async fn run_all_once(&self) {
        let checks = lock(&self.checks).clone();
        let reports = futures::future::join_all(checks.iter().map(Check::run)).await;
        for (index, report) in reports.into_iter().enumerate() {
            self.store(index, report);
        }
    }

    /// Starts one background task per check; they stop when `stop` is cancelled.
    /// Freezes registration.
    pub fn start(&self, stop: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        self.frozen.store(true, Ordering::SeqCst);
        let checks = lock(&self.checks).clone();
        checks
            .into_iter()
            .enumerate()
            .map(|(index, check)| {
                let health = self.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => break,
                            () = tokio::time::sleep(check.interval) => {}
                        }
                        let report = tokio::select! {
                            () = stop.cancelled() => break,
                            report = check.run() => report,
                        };
                        health.store(index, report);
                    }
                })
            })
            .collect()
    }

    /// `GET /health`: 200 while the process is alive, with its state. Touches nothing else.
    pub fn liveness(&self) -> Response {
        let body = match self.lifecycle.state() {
            State::Starting => &br#"{"status":"alive","state":"starting"}"#[..],
            State::Ready => br#"{"status":"alive","state":"ready"}"#,
            State::Draining => br#"{"status":"alive","state":"draining"}"#,
            State::Stopped => br#"{"status":"alive","state":"stopped"}"#,
        };
        json_response(StatusCode::OK, Bytes::from_static(body))
    }

    /// `GET /health/ready`: 200 only in `ready` with every critical check healthy, else 503 with
    /// every check's status, latency and message. Reads the cached results only.
    pub fn readiness(&self) -> Response {
        let state = self.lifecycle.state();
        let snapshot = read(&self.snapshot).clone();
        let unavailable = read(&self.unavailable);
        if state == State::Ready && snapshot.healthy && unavailable.is_none() {
            return json_response(StatusCode::OK, snapshot.ready_body.clone());
        }
        let boot = read(&self.boot).and_then(|boot| boot.get());
        let (status, body) = render_readiness_full(state, &snapshot.reports, boot, unavailable);
        json_response(status, body)
    }
}

fn json_response(status: StatusCode, body: Bytes) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A heartbeat a background loop beats; its check fails when the last beat is too old.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    origin: Instant,
    last_millis: Arc<AtomicU64>,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self::new()
    }
}

impl Heartbeat {
    /// A heartbeat that has just beaten.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            last_millis: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Records a beat now.
    pub fn beat(&self) {
        let millis = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_millis.store(millis, Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        let now = self.origin.elapsed();
        now.saturating_sub(Duration::from_millis(
            self.last_millis.load(Ordering::Relaxed),
        ))
    }

    /// A critical check named `name`: healthy while the last beat is younger than `max_age`.
    pub fn check(&self, name: impl Into<String>, max_age: Duration) -> Check {
        let heartbeat = self.clone();
        Check::new(name, move || {
            let age = heartbeat.age();
            async move {
                if age <= max_age {
                    Ok(format!("last beat {} ms ago", age.as_millis()))
                } else {
                    Err(format!(
                        "last beat {} ms ago, more than the allowed {} ms",
                        age.as_millis(),
                        max_age.as_millis()
                    ))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(name: &str, critical: bool, status: CheckStatus) -> CheckReport {
        CheckReport {
            name: name.to_owned(),
            critical,
            status,
            latency_ms: Some(1.0),
            message: String::new(),
            checked_at: None,
        }
    }

    #[test]
    fn ready_needs_the_ready_state_and_healthy_critical_checks() {
        let healthy = [report("database", true, CheckStatus::Healthy)];
        assert!(is_ready(State::Ready, &healthy));
        assert!(!is_ready(State::Starting, &healthy));
        assert!(!is_ready(State::Draining, &healthy));
        let failing = [report("database", true, CheckStatus::Unhealthy)];
        assert!(!is_ready(State::Ready, &failing));
        let pending = [report("database", true, CheckStatus::Pending)];
        assert!(!is_ready(State::Ready, &pending));
    }

    #[test]
    fn a_follower_is_still_ready() {
        let checks = [
            report("database", true, CheckStatus::Healthy),
            report("leadership", false, CheckStatus::Unhealthy),
        ];
        assert!(is_ready(State::Ready, &checks));
    }

    #[test]
    fn the_unready_body_names_every_check() {
        let checks = [
            report("database", true, CheckStatus::Unhealthy),
            report("leadership", false, CheckStatus::Healthy),
        ];
        let (status, body) = render_readiness(State::Ready, &checks);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["status"], "unready");
        assert_eq!(body["checks"][0]["name"], "database");
        assert_eq!(body["checks"][0]["status"], "unhealthy");
        assert_eq!(body["checks"][1]["name"], "leadership");
    }

    #[tokio::test]
    async fn handlers_answer_from_the_cache_and_follow_the_lifecycle() {
        let lifecycle = Lifecycle::new();
        let health = Health::new(lifecycle.clone());
        health
            .register(Check::new("always", || async { Ok(String::new()) }))
            .unwrap();
        assert_eq!(health.readiness().status(), StatusCode::SERVICE_UNAVAILABLE);
        health.run_all_once().await;
        assert_eq!(health.readiness().status(), StatusCode::SERVICE_UNAVAILABLE);
        lifecycle.advance(State::Ready);
        assert_eq!(health.readiness().status(), StatusCode::OK);
        lifecycle.advance(State::Draining);
        assert_eq!(health.readiness().status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(health.liveness().status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_slow_probe_is_reported_unhealthy_after_its_timeout() {
        let health = Health::new(Lifecycle::new());
        health
            .register(
                Check::new("slow", || async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Ok(String::new())
                })
                .timeout(Duration::from_millis(20)),
            )
            .unwrap();
        health.run_all_once().await;
        let reports = health.reports();
        assert_eq!(reports[0].status, CheckStatus::Unhealthy);
        assert!(reports[0].message.contains("no answer"));
    }

    #[test]
    fn a_check_registered_after_boot_validation_is_an_error_not_a_pending_check() {
        let health = Health::new(Lifecycle::new());
        health
            .register(Check::new("declared", || async { Ok(String::new()) }))
            .unwrap();
        health.freeze_registration();
        let error = health
            .register(Check::new("late", || async { Ok(String::new()) }))
            .unwrap_err();
        assert!(
            matches!(&error, crate::Error::LateRegistration { name, .. } if name == "late"),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("after boot validation"),
            "{error}"
        );
        // The runtime still binds its own checks in phases 7 to 14.
        health
            .register_core(Check::new("database", || async { Ok(String::new()) }))
            .unwrap();
        let names: Vec<String> = health.reports().into_iter().map(|r| r.name).collect();
        assert_eq!(
            names,
            ["declared", "database"],
            "the late check is not listed"
        );
    }

    #[tokio::test]
    async fn a_check_registered_after_the_checks_started_is_an_error_not_a_pending_check() {
        let health = Health::new(Lifecycle::new());
        health
            .register(Check::new("early", || async { Ok(String::new()) }))
            .unwrap();
        let stop = CancellationToken::new();
        let _tasks = health.start(stop.clone());
        let error = health
            .register_core(Check::new("late", || async { Ok(String::new()) }))
            .unwrap_err();
        assert!(
            matches!(&error, crate::Error::LateRegistration { name, .. } if name == "late"),
            "{error:?}"
        );
        assert_eq!(health.reports().len(), 1, "the late check is not listed");
        stop.cancel();
    }

    #[test]
    fn heartbeat_check_fails_when_the_beat_is_old() {
        let heartbeat = Heartbeat::new();
        heartbeat.beat();
        assert!(heartbeat.age() < Duration::from_secs(1));
    }
}
