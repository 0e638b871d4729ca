//! The public way to build an app on the runtime: describe it once with [`App`], then hand it to
//! [`App::main`] (or [`App::run`]) and get the whole lifecycle and the operator contract's commands.
//!
//! An app describes, in one place: its HTTP routes (an axum [`Router`] with its own state, built
//! from the [`Context`] at boot), its [`Component`]s (each with a start closure that may capture
//! anything, an optional readiness probe and a stop hook, registered together), its jobs (a
//! [`JobRegistry`] of cron and queued jobs, built from the [`Context`]), its own migrations
//! ([`AppMigrations`], one set per backend) and its settings (`KUMIKO_*` variables with a
//! validator each).
//!
//! The description is frozen at boot validation (phase 6): [`App::run`] consumes the `App`, the
//! jobs closure runs before phase 6 (it gets the [`Settings`], not the database), boot validation
//! checks every component, setting and job together and reports every error at once, and then
//! registration is frozen: a readiness check registered later is
//! [`crate::Error::LateRegistration`]. Phases 7 to 14 only start what was declared.
//!
//! What each command does with the description:
//!
//! | command | phases 7 to 14 |
//! |---|---|
//! | `serve` | database, migration gate (runtime's and app's sets), Redis when `REDIS_URL` is set, the components that run in `serve`, then the routes |
//! | `worker` | the same, then leader election and the jobs worker; serves only `/health` and `/health/ready` |
//! | `migrate apply` | applies the runtime's and the app's pending migrations under one lock |
//! | `migrate status` | prints both sets' state; changes nothing |

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use redis::aio::ConnectionManager;
use tokio_util::sync::CancellationToken;

use crate::boot::{Backoff, BootError, ErrorChain, Phase, PhaseError, PhasePolicy};
use crate::component::{Component, Setting, Starter};
use crate::config::{Config, Env, ProcessKind, parse_duration};
use crate::db::Pool;
use crate::health::Check;
use crate::jobs::{JobRegistry, JobsWorker, WorkerConfig};
use crate::leader::{self, LeaderConfig, LeaderElection};
use crate::lifecycle::Lifecycle;
use crate::migrations::{self, AppMigrations};
use crate::runtime::{self, Runtime};

/// How long phase 9 may take to read the migration state (and apply it in `apply` mode).
const MIGRATION_CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one Redis command may take.
const REDIS_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long closing the Redis connection may take at shutdown.
const REDIS_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the jobs worker gets to finish its current job at shutdown.
const WORKER_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a queued job running at shutdown gets to finish after its cancellation signal.
const MAX_CANCEL_GRACE: Duration = Duration::from_secs(10);
/// How long releasing the leader key may take at shutdown.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// The setting for how often an idle worker polls the queue (default 1s).
pub const JOBS_POLL_INTERVAL_SETTING: &str = "KUMIKO_JOBS_POLL_INTERVAL";
/// The setting for the bound on one job run (default 60s).
pub const JOB_TIMEOUT_SETTING: &str = "KUMIKO_JOB_TIMEOUT";

type RoutesFn = Box<dyn FnOnce(&Context) -> Router + Send>;
type JobsFn = Box<dyn FnOnce(&Settings) -> JobRegistry + Send>;

/// What the jobs closure gets, before boot validation (phase 6): the environment, to read the
/// app's declared settings (boot validation checks them together with the jobs). Job handlers
/// get the database and the rest when they run ([`crate::jobs::CronContext`],
/// [`crate::jobs::QueuedContext`]).
#[derive(Clone, Debug)]
pub struct Settings {
    env: Env,
}

impl Settings {
    /// The value of a declared setting, trimmed; `None` when unset or empty.
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.env
            .get(name)
            .map(|value| value.trim())
            .filter(|value| !value.is_empty())
    }

    /// A declared duration setting, or `default` when unset (or when it does not parse: boot
    /// validation then reports it).
    pub fn duration_setting(&self, name: &str, default: Duration) -> Duration {
        self.setting(name)
            .and_then(|value| parse_duration(value).ok())
            .unwrap_or(default)
    }
}

/// What an app's closures get at boot: the configuration, the environment (read your declared
/// settings here), the database pool, Redis when configured, the lifecycle, the shutdown token of
/// long-lived streams and the [`Control`] handle.
#[derive(Clone)]
pub struct Context {
    /// The parsed configuration.
    pub config: Config,
    /// The environment snapshot (boot validation has checked every declared setting in it).
    pub env: Env,
    /// The database pool (SQLite or Postgres, by tier).
    pub pool: Pool,
    /// The Redis connection, when `REDIS_URL` is set.
    pub redis: Option<ConnectionManager>,
    /// The process lifecycle.
    pub lifecycle: Lifecycle,
    /// Cancelled when long-lived streams (SSE) must end at shutdown.
    pub streams: CancellationToken,
    /// Asks the process to shut down.
    pub control: Control,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.config)
            .field("redis", &self.redis.is_some())
            .field("lifecycle", &self.lifecycle)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// The value of a declared setting, trimmed; `None` when unset or empty.
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.env
            .get(name)
            .map(|value| value.trim())
            .filter(|value| !value.is_empty())
    }

    /// Wraps an SSE event stream so it sends `server_shutdown` (with a `retry` hint) and ends when
    /// the process starts draining; see [`crate::sse`].
    pub fn sse_until_shutdown<S>(
        &self,
        events: S,
    ) -> impl futures::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>
    + Send
    + 'static
    where
        S: futures::Stream<Item = axum::response::sse::Event> + Send + 'static,
    {
        crate::sse::until_shutdown(events, self.lifecycle.clone(), self.streams.clone())
    }

    /// A declared duration setting, or `default` when unset (boot validation has checked it).
    pub fn duration_setting(&self, name: &str, default: Duration) -> Duration {
        self.setting(name)
            .and_then(|value| parse_duration(value).ok())
            .unwrap_or(default)
    }
}

/// Lets an app steer its own process: ask it to shut down, or mark it temporarily not ready.
#[derive(Clone, Debug)]
pub struct Control {
    shutdown: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
    health: crate::health::Health,
}

impl Control {
    fn new(shutdown: CancellationToken, health: crate::health::Health) -> Self {
        Self {
            shutdown,
            reason: Arc::default(),
            health,
        }
    }

    /// Marks the process temporarily not ready (`/health/ready` answers 503 naming `reason`, for
    /// example while a cache warms) without leaving the `ready` state.
    pub fn set_unavailable(&self, reason: impl Into<String>) {
        self.health.set_unavailable(Some(reason.into()));
    }

    /// Ends [`Control::set_unavailable`]: readiness follows the state and the checks again.
    pub fn set_available(&self) {
        self.health.set_unavailable(None);
    }

    /// Asks the process to shut down as on SIGTERM (drain, stop components, exit 0). The first
    /// reason is logged.
    pub fn request_shutdown(&self, reason: impl Into<String>) {
        let reason = reason.into();
        let mut slot = self
            .reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_none() {
            tracing::warn!(reason = %reason, "shutdown requested");
            *slot = Some(reason);
        }
        self.shutdown.cancel();
    }

    /// Whether a shutdown was requested.
    pub fn shutdown_requested(&self) -> bool {
        self.shutdown.is_cancelled()
    }
}

/// An app on the Kumiko runtime, described once.
///
/// ```no_run
/// use axum::{Router, routing::get};
/// use kumiko_runtime::app::App;
///
/// fn main() {
///     App::new("hello")
///         .routes(|_context| Router::new().route("/hello", get(|| async { "hi" })))
///         .main()
/// }
/// ```
pub struct App {
    name: &'static str,
    version: &'static str,
    routes: Option<RoutesFn>,
    jobs: Option<JobsFn>,
    components: Vec<Component>,
    settings: Vec<Setting>,
    migrations: AppMigrations,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("name", &self.name)
            .field("components", &self.components)
            .field("settings", &self.settings)
            .field("routes", &self.routes.is_some())
            .field("jobs", &self.jobs.is_some())
            .finish_non_exhaustive()
    }
}

impl App {
    /// An app named `name` (the command's name in `--help`, and part of the default leader key
    /// `kumiko:<name>:scheduler-leader`).
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            version: env!("CARGO_PKG_VERSION"),
            routes: None,
            jobs: None,
            components: Vec::new(),
            settings: Vec::new(),
            migrations: AppMigrations::none(),
        }
    }

    /// The app's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The version shown by `--version` (pass `env!("CARGO_PKG_VERSION")` of the app's crate).
    pub fn version(mut self, version: &'static str) -> Self {
        self.version = version;
        self
    }

    /// The app's HTTP routes, built once at boot from the [`Context`] (attach your own state with
    /// `Router::with_state`). Served by `serve` beside `/health` and `/health/ready`.
    pub fn routes<F>(mut self, routes: F) -> Self
    where
        F: FnOnce(&Context) -> Router + Send + 'static,
    {
        self.routes = Some(Box::new(routes));
        self
    }

    /// The app's jobs (cron and queued), built once from the [`Settings`] before boot validation
    /// (phase 6), which reports a bad schedule or a name registered twice with every other error
    /// (in every process type); run by `worker`.
    pub fn jobs<F>(mut self, jobs: F) -> Self
    where
        F: FnOnce(&Settings) -> JobRegistry + Send + 'static,
    {
        self.jobs = Some(Box::new(jobs));
        self
    }

    /// Registers a component (its declaration, and its task, probe and stop hook if it has them).
    pub fn component(mut self, component: Component) -> Self {
        self.components.push(component);
        self
    }

    /// Declares a `KUMIKO_*` setting of the app with its validator (boot validation rejects a
    /// value the validator refuses, and any `KUMIKO_*` variable nobody declared).
    pub fn setting(
        mut self,
        variable: &'static str,
        validate: fn(&str) -> Result<(), String>,
    ) -> Self {
        self.settings.push(Setting { variable, validate });
        self
    }

    /// The app's own migrations, one set per backend. They are recorded in `_sqlx_migrations`,
    /// apart from the runtime's own tables, so version numbers never collide.
    pub fn migrations(mut self, migrations: AppMigrations) -> Self {
        self.migrations = migrations;
        self
    }

    /// Parses the command line (`serve`, `worker`, `migrate apply`, `migrate status [--json]`),
    /// runs the command with the process environment and exits with its code.
    pub fn main(self) -> ! {
        let command = crate::cli::parse(self.name, self.version);
        let env = crate::config::env_from_process();
        let code = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(tokio_runtime) => tokio_runtime.block_on(self.run(command, env)),
            Err(error) => {
                eprintln!("kumiko: starting the async runtime failed: {error}");
                runtime::EXIT_FAILURE
            }
        };
        // Exit without waiting for tasks that shutdown already abandoned.
        std::process::exit(code)
    }

    /// Runs one command with `env`; returns the exit code.
    pub async fn run(self, command: crate::cli::Command, env: Env) -> i32 {
        match command {
            crate::cli::Command::Serve => self.run_process(ProcessKind::Api, env).await,
            crate::cli::Command::Worker => self.run_process(ProcessKind::Worker, env).await,
            crate::cli::Command::Migrate {
                action: crate::cli::MigrateAction::Apply,
            } => crate::cli::migrate_apply(&self.migrations, env).await,
            crate::cli::Command::Migrate {
                action: crate::cli::MigrateAction::Status { json },
            } => crate::cli::migrate_status(&self.migrations, env, json).await,
        }
    }

    /// The declarations boot validation checks: the runtime's jobs settings, the app's settings
    /// and every component (whether or not it runs in this process, so one environment serves
    /// every process type).
    fn declarations(&mut self) -> Vec<Component> {
        let mut declared = vec![
            Component::new("kumiko-jobs")
                .setting(
                    crate::metrics::METRICS_SETTING,
                    crate::metrics::validate_setting,
                )
                .setting(JOBS_POLL_INTERVAL_SETTING, validate_poll_interval)
                .setting(JOB_TIMEOUT_SETTING, validate_job_timeout)
                .setting(leader::KEY_SETTING, leader::validate_key),
        ];
        if !self.settings.is_empty() {
            let mut settings = Component::new("app-settings");
            settings.settings = std::mem::take(&mut self.settings);
            declared.push(settings);
        }
        declared.append(&mut self.components);
        declared
    }

    async fn run_process(mut self, kind: ProcessKind, env: Env) -> i32 {
        let components = self.declarations();
        // Phase 5: the jobs register now, so boot validation checks them with the rest.
        let settings = Settings { env: env.clone() };
        let jobs = self.jobs.map(|jobs| jobs(&settings)).unwrap_or_default();
        let registration_errors = jobs
            .errors()
            .iter()
            .map(|error| {
                let (subject, problem) = error.split_once(": ").unwrap_or(("jobs", error));
                crate::component::ValidationError {
                    subject: subject.to_owned(),
                    problem: problem.to_owned(),
                }
            })
            .collect();
        let parts = Parts {
            name: self.name,
            kind,
            routes: self.routes,
            jobs,
            migrations: self.migrations,
        };
        let boot: runtime::AppBoot =
            Box::new(move |runtime, components| Box::pin(boot(runtime, components, parts)));
        runtime::run(kind, env, components, registration_errors, boot).await
    }
}

/// What the boot callback takes from the [`App`].
struct Parts {
    name: &'static str,
    kind: ProcessKind,
    routes: Option<RoutesFn>,
    jobs: JobRegistry,
    migrations: AppMigrations,
}

fn validate_poll_interval(value: &str) -> Result<(), String> {
    match parse_duration(value)? {
        interval if interval >= Duration::from_millis(10) => Ok(()),
        _ => Err(format!(
            "`{value}` is too short; use at least 10ms (default 1s)"
        )),
    }
}

fn validate_job_timeout(value: &str) -> Result<(), String> {
    match parse_duration(value)? {
        timeout if timeout >= Duration::from_secs(1) => Ok(()),
        _ => Err(format!(
            "`{value}` is too short; use at least 1s (default 60s)"
        )),
    }
}

/// Phases 7 to 14 of `serve` and `worker`.
async fn boot(
    runtime: &mut Runtime,
    components: Vec<Component>,
    parts: Parts,
) -> Result<Router, BootError> {
    let pool = runtime.connect_database().await?;

    // Phase 9: the boot gate over the runtime's and the app's migrations.
    let target = runtime.config.database.clone();
    let mode = runtime.config.migrations_mode;
    let app_migrations = parts.migrations;
    runtime
        .boot
        .run(
            Phase::MigrationCheck,
            PhasePolicy::exit(MIGRATION_CHECK_TIMEOUT),
            || {
                let target = target.clone();
                async move {
                    migrations::gate_sets(&target, &app_migrations.sets(&target), mode)
                        .await
                        .map(drop)
                        .map_err(PhaseError::from)
                }
            },
        )
        .await?;

    // Phase 10: Redis, when the tier has it; without it the process is its own leader.
    let redis = match runtime.config.redis_url.clone() {
        None => {
            runtime.boot.skip(
                Phase::ConnectRedis,
                "no REDIS_URL: this process is its own scheduler leader",
            )?;
            None
        }
        Some(url) => {
            tracing::info!(redis = %url, "connecting Redis");
            let connection = runtime
                .boot
                .run(
                    Phase::ConnectRedis,
                    PhasePolicy::retry(Backoff::default()),
                    || {
                        let url = url.clone();
                        async move {
                            leader::connect_redis(&url, REDIS_COMMAND_TIMEOUT)
                                .await
                                .map_err(PhaseError::from)
                        }
                    },
                )
                .await?;
            runtime.register_check(leader::redis_health_check(connection.clone()))?;
            let closing = connection.clone();
            runtime.pools.register(
                "redis connection",
                REDIS_CLOSE_TIMEOUT,
                move || async move {
                    // The connection manager closes its socket when its last clone is dropped:
                    // the checks dropped theirs when they stopped, the leader election drops its
                    // own when it stops (a component hook, before this one); this is the boot's.
                    drop(closing);
                    tracing::info!("redis connection closed");
                },
            );
            Some(connection)
        }
    };

    let context = Context {
        config: runtime.config.clone(),
        env: runtime.env.clone(),
        pool: pool.clone(),
        redis: redis.clone(),
        lifecycle: runtime.lifecycle.clone(),
        streams: runtime.streams.clone(),
        control: Control::new(runtime.shutdown_requested.clone(), runtime.health.clone()),
    };

    // Phase 14: background work. Starting the tasks cannot fail; the phase records its duration.
    let started = Instant::now();
    if parts.kind == ProcessKind::Worker {
        start_jobs_worker(runtime, &context, parts.name, redis, parts.jobs).await?;
    }
    for component in components {
        if component.runs_in(parts.kind) && component.has_lifecycle() {
            start_component(runtime, &context, component)?;
        }
    }
    runtime
        .boot
        .mark_done(Phase::JobsWorker, started.elapsed())?;

    let router = match (parts.kind, parts.routes) {
        (ProcessKind::Api, Some(routes)) => routes(&context),
        (ProcessKind::Api, None) | (ProcessKind::Worker | ProcessKind::Migrate, _) => Router::new(),
    };
    Ok(router)
}

/// Leader election and the jobs worker, with their checks and (LIFO) shutdown hooks: the worker
/// stops first, then the leader key is released. Before it starts, work left `running` by an
/// instance that no longer exists is recovered (seed 002's boot-time cleanup of orphan runs).
async fn start_jobs_worker(
    runtime: &mut Runtime,
    context: &Context,
    name: &str,
    redis: Option<ConnectionManager>,
    registry: JobRegistry,
) -> Result<(), BootError> {
    let leader_config = LeaderConfig {
        key: context
            .setting(leader::KEY_SETTING)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("kumiko:{name}:scheduler-leader")),
        ..LeaderConfig::default()
    };
    let worker_config = WorkerConfig {
        poll_interval: context.duration_setting(JOBS_POLL_INTERVAL_SETTING, Duration::from_secs(1)),
        job_timeout: context.duration_setting(JOB_TIMEOUT_SETTING, Duration::from_secs(60)),
        // The most a running job gets after its cancellation signal; at shutdown it gets less
        // when less is left of the budget (`jobs::cancel_grace`).
        cancel_grace: MAX_CANCEL_GRACE,
        metrics: Some(runtime.metrics.clone()),
        ..WorkerConfig::new(runtime.config.instance_id.clone())
    };
    match crate::jobs::recover_orphans(
        &context.pool,
        &worker_config.instance_id,
        worker_config.presumed_gone_after(),
        crate::jobs::Orphans::AtBoot,
    )
    .await
    {
        Ok(_) => {}
        Err(error) => tracing::warn!(
            error = %ErrorChain(&error),
            "recovering orphaned work failed; stale locks are still reclaimed after KUMIKO_JOB_TIMEOUT"
        ),
    }
    let election = match redis {
        Some(connection) => {
            LeaderElection::start(connection, &runtime.config.instance_id, leader_config)
        }
        None => LeaderElection::standalone(),
    };
    let worker = JobsWorker::start(
        context.pool.clone(),
        election.handle(),
        registry,
        worker_config,
    );
    // Leadership as a metric: follows the election's published state.
    let metrics = runtime.metrics.clone();
    let leadership = election.handle();
    let mut changes = leadership.subscribe();
    metrics.set_leader(leadership.is_leader());
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            metrics.set_leader(leadership.is_leader());
        }
    });
    runtime.register_check(worker.health_check())?;
    runtime.register_check(election.handle().health_check())?;
    let hooks = &runtime.components;
    // LIFO: registered first, the release runs after the worker has stopped.
    hooks.register("leader election", RELEASE_TIMEOUT, move || async move {
        match election.shutdown().await {
            Ok(released) => tracing::info!(released, "leader election stopped"),
            Err(error) => tracing::warn!(
                error = %ErrorChain(&error),
                "releasing the leader key failed; it expires with its TTL"
            ),
        }
    });
    // The hook is told what is left of KUMIKO_SHUTDOWN_TIMEOUT when it runs; the running job's
    // grace is a share of that, not a figure fixed at boot.
    hooks.register_bounded(
        "jobs worker",
        WORKER_STOP_TIMEOUT,
        move |budget| async move {
            worker.stop(budget).await;
        },
    );
    Ok(())
}

/// Whether a supervised component's task is still running, or how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TaskState {
    Running,
    Ended(String),
}

/// Starts one component: its supervised task, its readiness check (named after it) and its
/// shutdown hook (cancel the task, wait for it, then the stop hook; bounded together).
fn start_component(
    runtime: &mut Runtime,
    context: &Context,
    component: Component,
) -> Result<(), BootError> {
    let name = component.name;
    let stop = CancellationToken::new();
    let state = Arc::new(Mutex::new(TaskState::Running));
    let supervisor = component.start.map(|starter| {
        let context = context.clone();
        let stop = stop.clone();
        let state = state.clone();
        let health = runtime.health.clone();
        tokio::spawn(async move {
            let control = context.control.clone();
            let (mut once, restart, max_restarts) = match starter {
                Starter::Once(start) => (Some(start), None, 0),
                Starter::Restarting {
                    start,
                    max_restarts,
                } => (None, Some(start), max_restarts),
            };
            let mut restarts = 0u32;
            loop {
                let run = match (once.take(), &restart) {
                    (Some(start), _) => start(context.clone(), stop.clone()),
                    (None, Some(start)) => start(context.clone(), stop.clone()),
                    (None, None) => return,
                };
                let outcome = tokio::spawn(run).await;
                if stop.is_cancelled() {
                    if let Ok(Err(error)) = &outcome {
                        tracing::warn!(component = name, error = %ErrorChain(error), "component failed while stopping");
                    }
                    return;
                }
                let ended = describe_end(outcome);
                if restart.is_some() && restarts < max_restarts {
                    restarts += 1;
                    let delay = restart_delay(restarts);
                    // Not ready while it is down; ready again once its check sees it running.
                    let down = format!("component {name} {ended}; restarting");
                    *state
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) =
                        TaskState::Ended(format!("{ended}; restarting"));
                    health.mark_unhealthy(name, down);
                    tracing::warn!(component = name, ended = %ended, restart = restarts, max_restarts, delay_ms = delay.as_millis() as u64, "component ended before shutdown; restarting it");
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                    *state
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = TaskState::Running;
                    continue;
                }
                tracing::error!(component = name, ended = %ended, "component ended before shutdown; shutting down");
                *state
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    TaskState::Ended(ended.clone());
                health.mark_unhealthy(name, format!("component {name} {ended}"));
                control.request_shutdown(format!("component {name} {ended}"));
                return;
            }
        })
    });
    if supervisor.is_some() || component.probe.is_some() {
        let probe = component.probe.clone();
        let state = state.clone();
        runtime.register_check(Check::new(name, move || {
            let ended = match &*state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
            {
                TaskState::Running => None,
                TaskState::Ended(how) => Some(format!("component {name} {how}")),
            };
            let probe = probe.clone();
            async move {
                match (ended, probe) {
                    (Some(ended), _) => Err(ended),
                    (None, Some(probe)) => probe().await,
                    (None, None) => Ok("running".to_owned()),
                }
            }
        }))?;
    }
    let on_stop = component.stop;
    runtime
        .components
        .register(name, component.stop_timeout, move || async move {
            stop.cancel();
            if let Some(supervisor) = supervisor {
                let _ = supervisor.await;
            }
            if let Some(on_stop) = on_stop {
                on_stop().await;
            }
        });
    tracing::info!(component = name, "component started");
    Ok(())
}

/// The delay before restart number `restart` (1-based) of a component: 1 s, 2 s, 4 s, ... at most
/// 30 s.
fn restart_delay(restart: u32) -> Duration {
    Duration::from_secs(1u64 << restart.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

/// How a component's task ended, in words for the log and the readiness check.
fn describe_end(outcome: Result<Result<(), crate::Error>, tokio::task::JoinError>) -> String {
    match outcome {
        Ok(Ok(())) => "exited before shutdown".to_owned(),
        Ok(Err(error)) => format!("failed: {}", ErrorChain(&error)),
        Err(error) if error.is_panic() => {
            let payload = error.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|message| (*message).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_owned());
            format!("panicked: {message}")
        }
        Err(_) => "was cancelled".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_described_with_its_message() {
        let outcome = tokio::spawn(async {
            if true {
                panic!("cache exploded");
            }
            Ok(())
        })
        .await;
        assert_eq!(describe_end(outcome), "panicked: cache exploded");
        let outcome = tokio::spawn(async {
            Err(crate::Error::Component {
                component: "cache".to_owned(),
                message: "gone".to_owned(),
            })
        })
        .await;
        assert_eq!(describe_end(outcome), "failed: component cache: gone");
    }

    #[test]
    fn restarts_back_off_up_to_thirty_seconds() {
        assert_eq!(restart_delay(1), Duration::from_secs(1));
        assert_eq!(restart_delay(2), Duration::from_secs(2));
        assert_eq!(restart_delay(5), Duration::from_secs(16));
        assert_eq!(restart_delay(6), Duration::from_secs(30));
        assert_eq!(restart_delay(60), Duration::from_secs(30));
    }

    #[test]
    fn the_runtime_declares_its_jobs_settings_and_the_app_its_own() {
        let mut app = App::new("demo")
            .setting("KUMIKO_DEMO_GREETING", |_| Ok(()))
            .component(Component::new("cache"));
        let declared = app.declarations();
        let names: Vec<&str> = declared.iter().map(|c| c.name).collect();
        assert_eq!(names, ["kumiko-jobs", "app-settings", "cache"]);
        let settings: Vec<&str> = declared
            .iter()
            .flat_map(|c| c.settings.iter().map(|s| s.variable))
            .collect();
        assert!(settings.contains(&"KUMIKO_JOBS_POLL_INTERVAL"));
        assert!(settings.contains(&"KUMIKO_LEADER_KEY"));
        assert!(settings.contains(&"KUMIKO_DEMO_GREETING"));
    }
}
