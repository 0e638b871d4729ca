//! Boot phases: the sixteen phases of the Kumiko lifecycle in their fixed order, each with a
//! timeout and a failure policy, the whole boot capped by `KUMIKO_STARTUP_TIMEOUT`.
//!
//! A process drives its boot through a [`Boot`]: [`Boot::run`] runs one phase (exit at once on
//! failure, or retry with exponential backoff), [`Boot::run_or_fallback`] runs one that falls back
//! to a no-op, and [`Boot::skip`] records a phase the process does not use. Phases must be run in
//! order; a phase passed over is recorded as skipped. Every phase is logged with its duration.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};

use crate::config::format_duration;

/// A boot phase, in the order they run (seed 003).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// 1. Load configuration (environment, defaults).
    LoadConfiguration,
    /// 2. Initialise observability (structured logs); falls back to a no-op.
    Observability,
    /// 3. Initialise the secrets provider.
    Secrets,
    /// 4. Runtime checks (the platform the process runs on).
    RuntimeChecks,
    /// 5. Register components (every feature declares itself).
    RegisterComponents,
    /// 6. Boot validation: configuration and the component graph, every error at once.
    BootValidation,
    /// 7. Connect the database (retried with backoff).
    ConnectDatabase,
    /// 8. Schema baseline check.
    SchemaBaseline,
    /// 9. Migration check (the boot gate: exit / warn / apply).
    MigrationCheck,
    /// 10. Connect Redis (retried with backoff).
    ConnectRedis,
    /// 11. Initialise the search adapter.
    SearchAdapter,
    /// 12. Initialise file storage.
    FileStorage,
    /// 13. Start the outbox poller.
    OutboxPoller,
    /// 14. Start the jobs worker.
    JobsWorker,
    /// 15. Bind the API listener.
    BindListener,
    /// 16. State → ready.
    Ready,
}

impl Phase {
    /// Every phase, in boot order.
    pub const ALL: [Phase; 16] = [
        Phase::LoadConfiguration,
        Phase::Observability,
        Phase::Secrets,
        Phase::RuntimeChecks,
        Phase::RegisterComponents,
        Phase::BootValidation,
        Phase::ConnectDatabase,
        Phase::SchemaBaseline,
        Phase::MigrationCheck,
        Phase::ConnectRedis,
        Phase::SearchAdapter,
        Phase::FileStorage,
        Phase::OutboxPoller,
        Phase::JobsWorker,
        Phase::BindListener,
        Phase::Ready,
    ];

    /// The phase's position, 1 to 16.
    pub fn number(self) -> usize {
        self.index() + 1
    }

    fn index(self) -> usize {
        Phase::ALL
            .iter()
            .position(|phase| *phase == self)
            .unwrap_or_default()
    }

    /// The phase's machine name, as in the boot log (`connect_database`).
    pub fn name(self) -> &'static str {
        match self {
            Self::LoadConfiguration => "load_configuration",
            Self::Observability => "observability",
            Self::Secrets => "secrets",
            Self::RuntimeChecks => "runtime_checks",
            Self::RegisterComponents => "register_components",
            Self::BootValidation => "boot_validation",
            Self::ConnectDatabase => "connect_database",
            Self::SchemaBaseline => "schema_baseline",
            Self::MigrationCheck => "migration_check",
            Self::ConnectRedis => "connect_redis",
            Self::SearchAdapter => "search_adapter",
            Self::FileStorage => "file_storage",
            Self::OutboxPoller => "outbox_poller",
            Self::JobsWorker => "jobs_worker",
            Self::BindListener => "bind_listener",
            Self::Ready => "ready",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "phase {} ({})", self.number(), self.name())
    }
}

/// How a retried phase backs off between attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first delay.
    pub min_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
    /// Each delay is the previous one times this.
    pub factor: f32,
    /// One attempt may take at most this long.
    pub attempt_timeout: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            factor: 2.0,
            attempt_timeout: Duration::from_secs(10),
        }
    }
}

/// What a phase does when its step fails.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OnFailure {
    /// Stop the boot at once: the process exits non-zero, naming the phase.
    Exit,
    /// Retry transient failures with exponential backoff (jittered) until the phase's timeout or
    /// the startup cap; a permanent failure still exits at once.
    Retry(Backoff),
}

/// A phase's timeout and failure policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhasePolicy {
    /// The phase's own budget; `None` means "until the startup cap".
    pub timeout: Option<Duration>,
    /// What a failure does.
    pub on_failure: OnFailure,
}

impl PhasePolicy {
    /// Exit at once on failure; the phase may take up to `timeout`.
    pub fn exit(timeout: Duration) -> Self {
        Self {
            timeout: Some(timeout),
            on_failure: OnFailure::Exit,
        }
    }

    /// Retry with `backoff` until the startup cap.
    pub fn retry(backoff: Backoff) -> Self {
        Self {
            timeout: None,
            on_failure: OnFailure::Retry(backoff),
        }
    }
}

/// The error a phase step returns: the cause, and whether trying again may help.
#[derive(Debug)]
pub struct PhaseError {
    /// Whether a retry may succeed (a network error) or not (a wrong setting).
    pub transient: bool,
    /// The cause.
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl PhaseError {
    /// A failure that may go away (connection refused, timeout).
    pub fn transient(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            transient: true,
            source: source.into(),
        }
    }

    /// A failure that retrying cannot fix (bad input, a refused schema).
    pub fn permanent(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            transient: false,
            source: source.into(),
        }
    }
}

impl fmt::Display for PhaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", ErrorChain(&*self.source))
    }
}

/// Formats an error with its chain of sources: `outer: inner: root`.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// Why the boot stopped.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// A phase's step failed under the `Exit` policy, or with a permanent error.
    #[error("boot failed in {phase} after {attempts} attempt(s), {elapsed}: {cause}")]
    PhaseFailed {
        /// The phase.
        phase: Phase,
        /// How many times the step ran.
        attempts: u32,
        /// How long the phase took, formatted.
        elapsed: String,
        /// The cause, with its chain.
        cause: String,
    },
    /// A phase ran out of its own timeout.
    #[error(
        "boot failed in {phase}: the phase timed out after {timeout} ({attempts} attempt(s)); \
         last error: {last_error}"
    )]
    PhaseTimeout {
        /// The phase.
        phase: Phase,
        /// The phase's budget, formatted.
        timeout: String,
        /// How many times the step ran.
        attempts: u32,
        /// The last failure seen, or "none".
        last_error: String,
    },
    /// The whole boot ran into `KUMIKO_STARTUP_TIMEOUT`.
    #[error(
        "boot failed in {phase}: KUMIKO_STARTUP_TIMEOUT ({timeout}) reached after {attempts} \
         attempt(s); last error: {last_error}"
    )]
    StartupTimeout {
        /// The phase that was running.
        phase: Phase,
        /// The startup cap, formatted.
        timeout: String,
        /// How many times the step ran.
        attempts: u32,
        /// The last failure seen, or "none".
        last_error: String,
    },
    /// Boot validation found mistakes; every one is listed.
    #[error("boot failed in {phase}: {} error(s): {}", errors.len(), numbered(errors))]
    Invalid {
        /// The phase that found them (boot validation).
        phase: Phase,
        /// Every mistake, one line each.
        errors: Vec<String>,
    },
    /// A phase was run after a later one (a bug in the process's boot sequence).
    #[error("{phase} was run after {after}; phases run in their fixed order")]
    OutOfOrder {
        /// The phase that came too late.
        phase: Phase,
        /// The phase already run.
        after: Phase,
    },
}

impl BootError {
    /// The phase the boot stopped in.
    pub fn phase(&self) -> Phase {
        match self {
            Self::PhaseFailed { phase, .. }
            | Self::PhaseTimeout { phase, .. }
            | Self::StartupTimeout { phase, .. }
            | Self::Invalid { phase, .. }
            | Self::OutOfOrder { phase, .. } => *phase,
        }
    }
}

fn numbered(errors: &[String]) -> String {
    errors
        .iter()
        .enumerate()
        .map(|(index, error)| format!("({}) {error}", index + 1))
        .collect::<Vec<_>>()
        .join("; ")
}

/// How a phase ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhaseOutcome {
    /// The step succeeded.
    Done,
    /// The process does not use the phase.
    Skipped(String),
    /// The step failed and the phase fell back to a no-op.
    FellBack(String),
    /// The step failed and the boot stopped.
    Failed(String),
}

impl PhaseOutcome {
    /// The outcome's name in the boot log.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Skipped(_) => "skipped",
            Self::FellBack(_) => "fallback",
            Self::Failed(_) => "failed",
        }
    }
}

/// One phase in the boot record.
#[derive(Debug, Clone)]
pub struct PhaseRecord {
    /// The phase.
    pub phase: Phase,
    /// How it ended.
    pub outcome: PhaseOutcome,
    /// How long it took.
    pub duration: Duration,
    /// How many times its step ran (0 when skipped).
    pub attempts: u32,
}

/// Where the boot is, for `/health/ready` while the process is `starting`: the running phase,
/// its attempt and the last error seen in it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BootProgress {
    /// The phase's name (`connect_database`).
    pub phase: &'static str,
    /// Its number, 1 to 16.
    pub number: usize,
    /// How many times its step has started (0 before the first).
    pub attempt: u32,
    /// The last failure in this phase, if any.
    pub last_error: Option<String>,
}

/// A shared view of the boot's progress (clone = shared).
#[derive(Debug, Clone, Default)]
pub struct ProgressHandle(Arc<Mutex<Option<BootProgress>>>);

impl ProgressHandle {
    /// The latest progress, `None` before the first phase.
    pub fn get(&self) -> Option<BootProgress> {
        lock(&self.0).clone()
    }

    fn enter(&self, phase: Phase) {
        *lock(&self.0) = Some(BootProgress {
            phase: phase.name(),
            number: phase.number(),
            attempt: 0,
            last_error: None,
        });
    }

    fn attempt(&self, attempt: u32) {
        if let Some(progress) = lock(&self.0).as_mut() {
            progress.attempt = attempt;
        }
    }

    fn failed(&self, error: String) {
        if let Some(progress) = lock(&self.0).as_mut() {
            progress.last_error = Some(error);
        }
    }
}

/// Runs the boot phases in order and records them.
#[derive(Debug)]
pub struct Boot {
    started: Instant,
    startup_timeout: Duration,
    next: usize,
    records: Vec<PhaseRecord>,
    logged: usize,
    current: Option<Phase>,
    progress: ProgressHandle,
}

impl Boot {
    /// A boot that began at `started` and must reach ready within `startup_timeout`.
    pub fn new(started: Instant, startup_timeout: Duration) -> Self {
        Self {
            started,
            startup_timeout,
            next: 0,
            records: Vec::new(),
            logged: 0,
            current: None,
            progress: ProgressHandle::default(),
        }
    }

    /// The shared view of the boot's progress (phase, attempt, last error).
    pub fn progress(&self) -> ProgressHandle {
        self.progress.clone()
    }

    /// Changes the startup cap (once the configuration is loaded).
    pub fn set_startup_timeout(&mut self, startup_timeout: Duration) {
        self.startup_timeout = startup_timeout;
    }

    /// The startup cap.
    pub fn startup_timeout(&self) -> Duration {
        self.startup_timeout
    }

    /// When the boot began.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Time left until the startup cap.
    pub fn remaining(&self) -> Duration {
        self.startup_timeout.saturating_sub(self.started.elapsed())
    }

    /// The phases recorded so far.
    pub fn records(&self) -> &[PhaseRecord] {
        &self.records
    }

    /// The phase that is running or last ran (for a startup-timeout message).
    pub fn current(&self) -> Option<Phase> {
        self.current
    }

    /// The next phase to run (or `None` when all sixteen are recorded).
    pub fn next_phase(&self) -> Option<Phase> {
        Phase::ALL.get(self.next).copied()
    }

    /// Records `phase` as skipped, with the reason.
    pub fn skip(&mut self, phase: Phase, reason: &str) -> Result<(), BootError> {
        self.enter(phase)?;
        self.record(
            phase,
            PhaseOutcome::Skipped(reason.to_owned()),
            Duration::ZERO,
            0,
        );
        Ok(())
    }

    /// Records `phase` as done without a step of its own (the runtime's own bookkeeping phases).
    pub fn mark_done(&mut self, phase: Phase, duration: Duration) -> Result<(), BootError> {
        self.enter(phase)?;
        self.record(phase, PhaseOutcome::Done, duration, 1);
        Ok(())
    }

    /// Records a failure found outside a step (boot validation's list of errors).
    pub fn fail_invalid(&mut self, phase: Phase, errors: Vec<String>) -> BootError {
        if let Err(error) = self.enter(phase) {
            return error;
        }
        self.record(
            phase,
            PhaseOutcome::Failed(format!("{} error(s)", errors.len())),
            Duration::ZERO,
            1,
        );
        BootError::Invalid { phase, errors }
    }

    /// Runs `phase`: its step under its policy, bounded by its timeout and the startup cap.
    pub async fn run<T, F, Fut>(
        &mut self,
        phase: Phase,
        policy: PhasePolicy,
        step: F,
    ) -> Result<T, BootError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, PhaseError>>,
    {
        self.enter(phase)?;
        let started = Instant::now();
        let (budget, capped_by_startup) = self.budget(policy.timeout);
        let attempts = Arc::new(Mutex::new((0u32, None::<String>)));
        let mut step = step;
        let step_attempts = attempts.clone();
        let progress = self.progress.clone();
        // Every call is counted and its failure remembered, for the log, the error and readiness.
        let mut attempt = move || {
            let count = {
                let mut attempts = lock(&step_attempts);
                attempts.0 += 1;
                attempts.0
            };
            progress.attempt(count);
            let fut = step();
            let attempts = step_attempts.clone();
            let progress = progress.clone();
            async move {
                let result = fut.await;
                if let Err(error) = &result {
                    lock(&attempts).1 = Some(error.to_string());
                    progress.failed(error.to_string());
                }
                result
            }
        };
        let outcome = match policy.on_failure {
            OnFailure::Exit => tokio::time::timeout(budget, attempt()).await,
            OnFailure::Retry(backoff) => {
                let attempt_timeout = backoff.attempt_timeout;
                let bounded = move || {
                    let fut = attempt();
                    async move {
                        tokio::time::timeout(attempt_timeout, fut)
                            .await
                            .unwrap_or_else(|_| {
                                Err(PhaseError::transient(format!(
                                    "the attempt timed out after {}",
                                    format_duration(attempt_timeout)
                                )))
                            })
                    }
                };
                let builder = ExponentialBuilder::default()
                    .with_min_delay(backoff.min_delay)
                    .with_max_delay(backoff.max_delay)
                    .with_factor(backoff.factor)
                    .with_jitter()
                    .without_max_times();
                let notify_attempts = attempts.clone();
                let retried = bounded
                    .retry(builder)
                    .sleep(tokio::time::sleep)
                    .when(|error: &PhaseError| error.transient)
                    .notify(move |error: &PhaseError, delay: Duration| {
                        let count = lock(&notify_attempts).0;
                        tracing::warn!(
                            phase = phase.name(),
                            number = phase.number(),
                            attempt = count,
                            retry_in_ms = delay.as_millis() as u64,
                            error = %error,
                            "boot phase failed, retrying"
                        );
                    });
                tokio::time::timeout(budget, retried).await
            }
        };
        let duration = started.elapsed();
        let (count, last_error) = lock(&attempts).clone();
        match outcome {
            Ok(Ok(value)) => {
                self.record(phase, PhaseOutcome::Done, duration, count);
                Ok(value)
            }
            Ok(Err(error)) => {
                let cause = error.to_string();
                self.record(phase, PhaseOutcome::Failed(cause.clone()), duration, count);
                Err(BootError::PhaseFailed {
                    phase,
                    attempts: count,
                    elapsed: format_duration(duration),
                    cause,
                })
            }
            Err(_elapsed) => {
                let last_error = last_error.unwrap_or_else(|| "none".to_owned());
                self.record(
                    phase,
                    PhaseOutcome::Failed(format!("timed out; last error: {last_error}")),
                    duration,
                    count,
                );
                if capped_by_startup {
                    Err(BootError::StartupTimeout {
                        phase,
                        timeout: format_duration(self.startup_timeout),
                        attempts: count,
                        last_error,
                    })
                } else {
                    Err(BootError::PhaseTimeout {
                        phase,
                        timeout: format_duration(budget),
                        attempts: count,
                        last_error,
                    })
                }
            }
        }
    }

    /// Runs `phase` once; on failure or timeout logs a warning and uses `fallback()` (a no-op
    /// provider) instead of stopping the boot.
    pub async fn run_or_fallback<T, Fut>(
        &mut self,
        phase: Phase,
        timeout: Duration,
        step: Fut,
        fallback: impl FnOnce() -> T,
    ) -> Result<T, BootError>
    where
        Fut: Future<Output = Result<T, PhaseError>>,
    {
        self.enter(phase)?;
        let started = Instant::now();
        let (budget, _) = self.budget(Some(timeout));
        let outcome = tokio::time::timeout(budget, step).await;
        let duration = started.elapsed();
        match outcome {
            Ok(Ok(value)) => {
                self.record(phase, PhaseOutcome::Done, duration, 1);
                Ok(value)
            }
            Ok(Err(error)) => {
                self.record(
                    phase,
                    PhaseOutcome::FellBack(error.to_string()),
                    duration,
                    1,
                );
                Ok(fallback())
            }
            Err(_) => {
                let reason = format!("timed out after {}", format_duration(budget));
                self.record(phase, PhaseOutcome::FellBack(reason), duration, 1);
                Ok(fallback())
            }
        }
    }

    /// Builds the error for a boot that ran into the startup cap outside a phase's own timeout
    /// (the backstop around the whole boot).
    pub fn startup_timeout_error(&self) -> BootError {
        BootError::StartupTimeout {
            phase: self.current.unwrap_or(Phase::LoadConfiguration),
            timeout: format_duration(self.startup_timeout),
            attempts: 1,
            last_error: "none".to_owned(),
        }
    }

    /// Writes the phases recorded so far that are not logged yet, once a log subscriber exists.
    pub fn flush_log(&mut self) {
        if !tracing::dispatcher::has_been_set() {
            return;
        }
        for record in &self.records[self.logged..] {
            log_record(record);
        }
        self.logged = self.records.len();
    }

    fn budget(&self, timeout: Option<Duration>) -> (Duration, bool) {
        let remaining = self.remaining();
        match timeout {
            Some(timeout) if timeout < remaining => (timeout, false),
            _ => (remaining, true),
        }
    }

    fn enter(&mut self, phase: Phase) -> Result<(), BootError> {
        let index = phase.index();
        if index < self.next {
            let after = Phase::ALL
                .get(self.next.saturating_sub(1))
                .copied()
                .unwrap_or(phase);
            return Err(BootError::OutOfOrder { phase, after });
        }
        while self.next < index {
            if let Some(passed) = Phase::ALL.get(self.next).copied() {
                self.record(
                    passed,
                    PhaseOutcome::Skipped("not used by this process".to_owned()),
                    Duration::ZERO,
                    0,
                );
            }
            self.next += 1;
        }
        self.next = index + 1;
        self.current = Some(phase);
        self.progress.enter(phase);
        Ok(())
    }

    fn record(&mut self, phase: Phase, outcome: PhaseOutcome, duration: Duration, attempts: u32) {
        self.records.push(PhaseRecord {
            phase,
            outcome,
            duration,
            attempts,
        });
        self.flush_log();
    }
}

fn log_record(record: &PhaseRecord) {
    let duration_ms = record.duration.as_secs_f64() * 1000.0;
    let phase = record.phase.name();
    let number = record.phase.number();
    let status = record.outcome.as_str();
    match &record.outcome {
        PhaseOutcome::Done => tracing::info!(
            phase,
            number,
            status,
            duration_ms,
            attempts = record.attempts,
            "boot phase"
        ),
        PhaseOutcome::Skipped(reason) => {
            tracing::info!(phase, number, status, duration_ms, reason = %reason, "boot phase")
        }
        PhaseOutcome::FellBack(cause) => tracing::warn!(
            phase,
            number,
            status,
            duration_ms,
            cause = %cause,
            "boot phase fell back to a no-op"
        ),
        PhaseOutcome::Failed(cause) => tracing::error!(
            phase,
            number,
            status,
            duration_ms,
            attempts = record.attempts,
            cause = %cause,
            "boot phase failed"
        ),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot() -> Boot {
        Boot::new(Instant::now(), Duration::from_secs(5))
    }

    #[tokio::test]
    async fn phases_passed_over_are_recorded_as_skipped() {
        let mut boot = boot();
        boot.run(
            Phase::LoadConfiguration,
            PhasePolicy::exit(Duration::from_secs(1)),
            || async { Ok(()) },
        )
        .await
        .unwrap();
        boot.run(
            Phase::ConnectDatabase,
            PhasePolicy::exit(Duration::from_secs(1)),
            || async { Ok(()) },
        )
        .await
        .unwrap();
        let outcomes: Vec<_> = boot
            .records()
            .iter()
            .map(|r| (r.phase.number(), r.outcome.as_str()))
            .collect();
        assert_eq!(
            outcomes,
            [
                (1, "done"),
                (2, "skipped"),
                (3, "skipped"),
                (4, "skipped"),
                (5, "skipped"),
                (6, "skipped"),
                (7, "done")
            ]
        );
    }

    #[tokio::test]
    async fn running_a_phase_out_of_order_is_an_error() {
        let mut boot = boot();
        boot.skip(Phase::MigrationCheck, "test").unwrap();
        let error = boot
            .run(
                Phase::ConnectDatabase,
                PhasePolicy::exit(Duration::from_secs(1)),
                || async { Ok(()) },
            )
            .await
            .unwrap_err();
        assert!(matches!(error, BootError::OutOfOrder { .. }), "{error}");
    }

    #[tokio::test]
    async fn exit_policy_fails_at_once_naming_the_phase_and_cause() {
        let mut boot = boot();
        let mut calls = 0;
        let error = boot
            .run(
                Phase::MigrationCheck,
                PhasePolicy::exit(Duration::from_secs(1)),
                || {
                    calls += 1;
                    async { Err::<(), _>(PhaseError::transient("pending migrations")) }
                },
            )
            .await
            .unwrap_err();
        assert_eq!(calls, 1);
        let message = error.to_string();
        assert!(message.contains("phase 9 (migration_check)"), "{message}");
        assert!(message.contains("pending migrations"), "{message}");
    }

    #[tokio::test]
    async fn retry_policy_retries_transient_failures_until_success() {
        let mut boot = boot();
        let mut calls = 0;
        let backoff = Backoff {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            ..Backoff::default()
        };
        let value = boot
            .run(Phase::ConnectDatabase, PhasePolicy::retry(backoff), || {
                calls += 1;
                let this_call = calls;
                async move {
                    if this_call < 3 {
                        Err(PhaseError::transient("connection refused"))
                    } else {
                        Ok(this_call)
                    }
                }
            })
            .await
            .unwrap();
        assert_eq!(value, 3);
        assert_eq!(boot.records().last().unwrap().attempts, 3);
    }

    #[tokio::test]
    async fn retry_policy_stops_on_a_permanent_failure() {
        let mut boot = boot();
        let mut calls = 0;
        let error = boot
            .run(
                Phase::ConnectDatabase,
                PhasePolicy::retry(Backoff::default()),
                || {
                    calls += 1;
                    async { Err::<(), _>(PhaseError::permanent("bad password")) }
                },
            )
            .await
            .unwrap_err();
        assert_eq!(calls, 1);
        assert!(matches!(error, BootError::PhaseFailed { .. }));
    }

    #[tokio::test]
    async fn retries_end_at_the_startup_cap_with_the_last_error() {
        let mut boot = Boot::new(Instant::now(), Duration::from_millis(200));
        let backoff = Backoff {
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(20),
            ..Backoff::default()
        };
        let error = boot
            .run(
                Phase::ConnectDatabase,
                PhasePolicy::retry(backoff),
                || async { Err::<(), _>(PhaseError::transient("connection refused")) },
            )
            .await
            .unwrap_err();
        let BootError::StartupTimeout {
            phase,
            attempts,
            last_error,
            ..
        } = &error
        else {
            panic!("expected a startup timeout, got {error}");
        };
        assert_eq!(*phase, Phase::ConnectDatabase);
        assert!(*attempts > 1);
        assert_eq!(last_error, "connection refused");
    }

    #[tokio::test]
    async fn fallback_policy_uses_the_no_op() {
        let mut boot = boot();
        let value = boot
            .run_or_fallback(
                Phase::Observability,
                Duration::from_secs(1),
                async { Err::<&str, _>(PhaseError::permanent("no collector")) },
                || "no-op",
            )
            .await
            .unwrap();
        assert_eq!(value, "no-op");
        assert_eq!(boot.records()[1].outcome.as_str(), "fallback");
    }
}
