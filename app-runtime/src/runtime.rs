//! The process runner: boot (the sixteen phases), serve, and the drain-and-linger shutdown.
//!
//! [`run`] owns the phases every process shares: 1 configuration, 2 observability, 3 secrets,
//! 4 runtime checks, 5 component registration, 6 boot validation, 15 bind and 16 ready. The
//! process's own phases (7 to 14: database, migrations, Redis, background components) run in the
//! `app` callback, through [`Runtime`]; the callback returns the process's routes.
//!
//! Shutdown, on the first SIGTERM or SIGINT: state `draining` (readiness 503 at once, HTTP/1
//! responses `Connection: close`), linger, close the listener, drain in-flight requests (bounded),
//! cancel long-lived streams, stop background components in reverse start order (each bounded),
//! close the pools (bounded), flush the logs, exit 0. A watchdog exits 1 with a warning at
//! `KUMIKO_SHUTDOWN_TIMEOUT`; a second signal exits 1 at once.

use std::time::{Duration, Instant};

use axum::Router;
use futures::future::BoxFuture;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::boot::{Backoff, Boot, BootError, Phase, PhaseError, PhasePolicy};
use crate::component::{self, Component};
use crate::config::{Config, DatabaseTarget, Env, ProcessKind, format_duration};
use crate::db::{Pool, PoolOptions};
use crate::error::Error;
use crate::health::{Check, Health};
use crate::http::{self, Listener};
use crate::lifecycle::{Lifecycle, State};
use crate::metrics::Metrics;
use crate::shutdown::ShutdownHooks;
use crate::telemetry::{self, Telemetry};

/// Exit code of a clean shutdown.
pub const EXIT_OK: i32 = 0;
/// Exit code of a failed boot, a watchdog exit or a forced (second-signal) exit.
pub const EXIT_FAILURE: i32 = 1;

/// How long closing the pools may take at shutdown.
const POOL_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connections get to close after the drain, before they are dropped.
const CONNECTION_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the first round of readiness checks may take before `ready`.
const FIRST_CHECKS_TIMEOUT: Duration = Duration::from_secs(5);

/// What a process's boot callback works with: the configuration and the registries that the
/// shutdown sequence walks.
pub struct Runtime {
    /// The parsed configuration.
    pub config: Config,
    /// The environment snapshot the configuration came from.
    pub env: Env,
    /// The process lifecycle.
    pub lifecycle: Lifecycle,
    /// Readiness checks.
    pub health: Health,
    /// Background components' shutdown hooks (step 7, LIFO).
    pub components: ShutdownHooks,
    /// Pool closers (step 8, LIFO).
    pub pools: ShutdownHooks,
    /// Cancelled at shutdown step 6: long-lived streams (SSE) end when it fires.
    pub streams: CancellationToken,
    /// The boot phase runner.
    pub boot: Boot,
    /// Cancelled when the app asks to shut down ([`crate::app::Control::request_shutdown`], or a
    /// supervised component that ended): the process then shuts down as on SIGTERM.
    pub shutdown_requested: CancellationToken,
    /// The process's metrics (`GET /metrics`).
    pub metrics: Metrics,
    checks_stop: CancellationToken,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .field("lifecycle", &self.lifecycle)
            .finish_non_exhaustive()
    }
}

/// The process's boot callback: phases 7 to 14, returning the routes to serve. It gets the
/// components that passed boot validation (phase 6); nothing can be added to them afterwards.
pub type AppBoot = Box<
    dyn for<'a> FnOnce(&'a mut Runtime, Vec<Component>) -> BoxFuture<'a, Result<Router, BootError>>
        + Send,
>;

impl Runtime {
    /// Phase 7: connects the database pool with retry and backoff (until the startup cap), then
    /// registers its readiness check (`database`) and its closer.
    pub async fn connect_database(&mut self) -> Result<Pool, BootError> {
        let target = self.config.database.clone();
        let options = PoolOptions {
            max_connections: self.config.db_pool_size,
            ..PoolOptions::default()
        };
        let backoff = Backoff {
            attempt_timeout: Duration::from_secs(10),
            ..Backoff::default()
        };
        let options = PoolOptions {
            acquire_timeout: backoff.attempt_timeout,
            ..options
        };
        tracing::info!(database = %target.describe(), "connecting the database");
        let pool = self
            .boot
            .run(Phase::ConnectDatabase, PhasePolicy::retry(backoff), || {
                let target = target.clone();
                async move {
                    Pool::connect(&target, options)
                        .await
                        .map_err(PhaseError::from)
                }
            })
            .await?;
        let probe = pool.clone();
        self.register_check(Check::new("database", move || {
            let pool = probe.clone();
            async move {
                pool.ping()
                    .await
                    .map(|()| String::new())
                    .map_err(|error| crate::boot::ErrorChain(&error).to_string())
            }
        }))?;
        let closing = pool.clone();
        self.pools
            .register("database pool", POOL_CLOSE_TIMEOUT, move || async move {
                closing.close().await;
            });
        Ok(pool)
    }

    /// Registers one of the runtime's own readiness checks in phases 7 to 14 (the app's checks are
    /// its components' probes, declared before phase 6); a registration after the checks started
    /// is a boot error naming it.
    pub(crate) fn register_check(&self, check: Check) -> Result<(), BootError> {
        self.health
            .register_core(check)
            .map_err(|error| BootError::Invalid {
                phase: self.boot.current().unwrap_or(Phase::BootValidation),
                errors: vec![error.to_string()],
            })
    }
}

/// Runs a process: boot, serve, shut down. Returns the exit code.
///
/// `components` and `registration_errors` are the app's description (phase 5): boot validation
/// (phase 6) reports their errors with every configuration error at once, then freezes
/// registration ([`Health::register`] refuses from then on). `app` runs phases 7 to 14.
pub async fn run(
    kind: ProcessKind,
    env: Env,
    components: Vec<Component>,
    registration_errors: Vec<component::ValidationError>,
    app: AppBoot,
) -> i32 {
    let started = Instant::now();
    // Signals first: from here on SIGTERM/SIGINT never kill the process unannounced.
    let signals = Signals::install();
    let lifecycle = Lifecycle::new();
    let mut boot = Boot::new(started, crate::config::DEFAULT_STARTUP_TIMEOUT);

    // Phase 1: configuration. Mistakes are kept for phase 6, which reports them with the rest.
    let phase_started = Instant::now();
    let parsed = Config::from_env(kind, &env);
    boot.set_startup_timeout(parsed.config.startup_timeout);
    let config_errors = parsed.errors;
    let config = parsed.config;
    if let Err(error) = boot.mark_done(Phase::LoadConfiguration, phase_started.elapsed()) {
        return boot_failed(&error);
    }

    // Liveness from the first phase on: the listener is bound now and answers `/health` (200)
    // and `/health/ready` (503 with the boot's progress) while the phases run; the app's routes
    // are installed at phase 15. A bind that fails here is retried, and reported, at phase 15.
    let health = Health::new(lifecycle.clone());
    health.show_boot(boot.progress());
    let routes = http::LateRoutes::default();
    let metrics = Metrics::new();
    let track_http = crate::metrics::http_layer_enabled(
        env.get(crate::metrics::METRICS_SETTING).map(String::as_str),
    );
    let serving = {
        let health = health.clone();
        let routes = routes.clone();
        let metrics = metrics.clone();
        let lifecycle = lifecycle.clone();
        move || http::boot_router(health, routes, metrics, lifecycle, track_http)
    };
    let early_server = Listener::bind(config.port)
        .await
        .ok()
        .map(|listener| listener.serve(serving.clone()(), lifecycle.clone()));

    // Phase 2: observability, falling back to no logs rather than blocking the boot.
    let format = config.log_format;
    let telemetry = match boot
        .run_or_fallback(
            Phase::Observability,
            Duration::from_secs(1),
            async move { telemetry::init(format).map_err(PhaseError::from) },
            || Telemetry::NoOp,
        )
        .await
    {
        Ok(telemetry) => telemetry,
        Err(error) => return boot_failed(&error),
    };
    tracing::info!(
        process = %config.process,
        instance = %config.instance_id,
        version = env!("CARGO_PKG_VERSION"),
        telemetry = ?telemetry,
        "booting"
    );

    let mut runtime = Runtime {
        config,
        env,
        lifecycle: lifecycle.clone(),
        health,
        components: ShutdownHooks::new(),
        pools: ShutdownHooks::new(),
        streams: CancellationToken::new(),
        boot,
        shutdown_requested: CancellationToken::new(),
        metrics: metrics.clone(),
        checks_stop: CancellationToken::new(),
    };
    let shutdown_requested = runtime.shutdown_requested.clone();

    // A signal during boot stops it cleanly.
    let mut signals = match signals {
        Ok(signals) => signals,
        Err(error) => {
            let error = runtime
                .boot
                .fail_invalid(Phase::RuntimeChecks, vec![error.to_string()]);
            return boot_failed(&error);
        }
    };

    let booted = tokio::select! {
        biased;
        name = signals.recv() => Err(Some(name)),
        () = shutdown_requested.cancelled() => Err(Some("shutdown requested by the app")),
        booted = tokio::time::timeout(runtime.boot.remaining(), boot_phases(&mut runtime, config_errors, components, registration_errors, app, early_server.is_some())) => match booted {
            Ok(Ok(listener)) => Ok(listener),
            Ok(Err(error)) => return boot_failed(&error),
            Err(_elapsed) => return boot_failed(&runtime.boot.startup_timeout_error()),
        },
    };
    let (listener, router) = match booted {
        Ok(booted) => booted,
        Err(signal) => {
            lifecycle.advance(State::Draining);
            tracing::warn!(signal = signal.unwrap_or("signal"), "stopping during boot");
            start_watchdog(runtime.config.shutdown_timeout);
            let deadline = Some(Instant::now() + runtime.config.shutdown_timeout);
            signals.force_exit_on_next();
            runtime.components.run_lifo_until(deadline).await;
            runtime.pools.run_lifo_until(deadline).await;
            lifecycle.advance(State::Stopped);
            telemetry::flush();
            return EXIT_OK;
        }
    };

    // Phase 16: first round of checks, then ready.
    // The app's routes are served from now on (readiness says `starting` until the state flips).
    let phase_started = Instant::now();
    let router = if track_http {
        router.layer(crate::metrics::HttpLayer::new(metrics.clone()))
    } else {
        router
    };
    routes.install(router);
    let mut server = match (early_server, listener) {
        (Some(server), _) => server,
        (None, Some(listener)) => listener.serve(serving(), lifecycle.clone()),
        (None, None) => {
            // boot_phases binds at phase 15 whenever the early bind failed.
            let error = runtime.boot.fail_invalid(
                Phase::Ready,
                vec!["no listener was bound; this is a bug in the runtime".to_owned()],
            );
            return boot_failed(&error);
        }
    };
    let _ = tokio::time::timeout(FIRST_CHECKS_TIMEOUT, runtime.health.run_all_once()).await;
    let _check_tasks = runtime.health.start(runtime.checks_stop.clone());
    lifecycle.advance(State::Ready);
    if let Err(error) = runtime
        .boot
        .mark_done(Phase::Ready, phase_started.elapsed())
    {
        return boot_failed(&error);
    }
    metrics.record_boot(runtime.boot.records());
    tracing::info!(
        state = "ready",
        address = %server.address(),
        port = server.address().port(),
        boot_ms = started.elapsed().as_secs_f64() * 1000.0,
        "ready"
    );

    // Serve until the first signal (or the app asks to stop).
    let signal = tokio::select! {
        name = signals.recv() => name,
        () = shutdown_requested.cancelled() => "shutdown requested by the app",
    };
    lifecycle.advance(State::Draining);
    let shutdown_started = Instant::now();
    let deadline = Some(shutdown_started + runtime.config.shutdown_timeout);
    signals.force_exit_on_next();
    start_watchdog(runtime.config.shutdown_timeout);
    let config = &runtime.config;
    tracing::info!(
        signal,
        linger = %format_duration(config.linger),
        drain_timeout = %format_duration(config.drain_timeout),
        shutdown_timeout = %format_duration(config.shutdown_timeout),
        "draining: readiness is 503"
    );

    // Linger: the load balancer sees 503 and stops sending; we keep serving meanwhile.
    tokio::time::sleep(config.linger).await;
    server.close_listener().await;
    tracing::info!(in_flight = server.in_flight(), "listener closed");
    let left = server.drain(config.drain_timeout).await;
    if left == 0 {
        tracing::info!("in-flight requests drained");
    } else {
        tracing::warn!(
            in_flight = left,
            drain_timeout = %format_duration(config.drain_timeout),
            "drain timeout reached; dropping the requests still in flight"
        );
    }
    runtime.streams.cancel();
    let closed = server.close_connections(CONNECTION_CLOSE_TIMEOUT).await;
    tracing::info!(all_closed = closed, "streams cancelled, connections closed");
    runtime.checks_stop.cancel();
    runtime.health.drop_checks();
    runtime.components.run_lifo_until(deadline).await;
    runtime.pools.run_lifo_until(deadline).await;
    lifecycle.advance(State::Stopped);
    tracing::info!(
        state = "stopped",
        shutdown_ms = shutdown_started.elapsed().as_secs_f64() * 1000.0,
        "stopped"
    );
    telemetry::flush();
    EXIT_OK
}

/// Phases 3 to 15.
async fn boot_phases(
    runtime: &mut Runtime,
    config_errors: Vec<crate::config::ConfigError>,
    components: Vec<Component>,
    registration_errors: Vec<component::ValidationError>,
    app: AppBoot,
    bound_early: bool,
) -> Result<(Option<Listener>, Router), BootError> {
    runtime
        .boot
        .skip(Phase::Secrets, "secrets come from the environment")?;

    // Phase 4: the platform fits (a multi-threaded runtime; a writable data directory for SQLite).
    let data_dir = match &runtime.config.database {
        DatabaseTarget::Sqlite { path } => path.parent().map(std::path::Path::to_path_buf),
        DatabaseTarget::Postgres { .. } => None,
    };
    runtime
        .boot
        .run(
            Phase::RuntimeChecks,
            PhasePolicy::exit(Duration::from_secs(5)),
            || {
                let data_dir = data_dir.clone();
                async move { runtime_checks(data_dir.as_deref()).map_err(PhaseError::from) }
            },
        )
        .await?;

    // Phase 5: components declare themselves; phase 6 checks them with the configuration.
    let started = Instant::now();
    let names: Vec<&str> = components.iter().map(|c| c.name).collect();
    tracing::info!(components = ?names, "components registered");
    runtime
        .boot
        .mark_done(Phase::RegisterComponents, started.elapsed())?;
    let mut errors = component::validate(&config_errors, &components, &runtime.env);
    errors.extend(registration_errors);
    if !errors.is_empty() {
        let errors = errors.iter().map(ToString::to_string).collect();
        return Err(runtime.boot.fail_invalid(Phase::BootValidation, errors));
    }
    // The description is frozen: nothing is registered from here on (the runtime binds what was
    // declared in phases 7 to 14).
    runtime.health.freeze_registration();
    runtime
        .boot
        .mark_done(Phase::BootValidation, started.elapsed())?;

    // Phases 7 to 14: the process's own, with the validated (now frozen) components.
    let router = app(runtime, components).await?;

    // Phase 15: the listener bound at the start serves the app's routes from phase 16 on; when
    // that early bind failed, bind now (and fail the boot naming this phase if it fails again).
    let port = runtime.config.port;
    let listener = runtime
        .boot
        .run(
            Phase::BindListener,
            PhasePolicy::exit(Duration::from_secs(5)),
            || async move {
                if bound_early {
                    return Ok(None);
                }
                Listener::bind(port)
                    .await
                    .map(Some)
                    .map_err(PhaseError::from)
            },
        )
        .await?;
    Ok((listener, router))
}

fn runtime_checks(data_dir: Option<&std::path::Path>) -> Result<(), Error> {
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::CurrentThread
    {
        return Err(Error::RuntimeCheck(
            "the runtime needs tokio's multi-threaded scheduler".to_owned(),
        ));
    }
    if let Some(dir) = data_dir.filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

fn boot_failed(error: &BootError) -> i32 {
    tracing::error!(phase = error.phase().name(), number = error.phase().number(), error = %error, "boot failed");
    // Also on stderr, for a person without a log viewer (and for a failure before logging).
    eprintln!("kumiko: {error}");
    telemetry::flush();
    EXIT_FAILURE
}

/// Exits 1 with a warning if shutdown takes longer than `timeout`. A plain thread, so it fires
/// even when every async worker is stuck.
fn start_watchdog(timeout: Duration) {
    let spawned = std::thread::Builder::new()
        .name("shutdown-watchdog".to_owned())
        .spawn(move || {
            std::thread::sleep(timeout);
            tracing::warn!(
                shutdown_timeout = %format_duration(timeout),
                "shutdown timeout reached (KUMIKO_SHUTDOWN_TIMEOUT): forcing exit"
            );
            telemetry::flush();
            std::process::exit(EXIT_FAILURE);
        });
    if let Err(error) = spawned {
        tracing::warn!(error = %error, "could not start the shutdown watchdog");
    }
}

/// SIGTERM and SIGINT.
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn install() -> Result<Self, Error> {
        Ok(Self {
            term: signal(SignalKind::terminate()).map_err(Error::Signals)?,
            int: signal(SignalKind::interrupt()).map_err(Error::Signals)?,
        })
    }

    /// The next signal's name.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }

    /// From now on, a further signal exits at once (exit code 1).
    fn force_exit_on_next(mut self) {
        tokio::spawn(async move {
            let name = self.recv().await;
            tracing::warn!(signal = name, "second signal: exiting now");
            telemetry::flush();
            std::process::exit(EXIT_FAILURE);
        });
    }
}
