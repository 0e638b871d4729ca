//! `kumiko-app worker`: background jobs.
//!
//! Boot phases 7 to 14 of the worker: the database (7), the boot gate (9), Redis when
//! `REDIS_URL` is set (10; without it the process is its own leader), then the jobs worker (14):
//! leader election, the uptime roll-up as a cron job (leader only) and the uptime recompute as a
//! queued job (any worker). The worker serves only `/health` and `/health/ready` on `PORT`, with
//! the checks `database`, `redis` (with Redis), `jobs-worker` (the queue loop's heartbeat) and
//! `scheduler-leader` (informational: a follower is still ready).
//!
//! Shutdown (LIFO): the jobs worker stops first (no cron tick starts after it), then the leader
//! key is released, then the pool closes.
//!
//! Settings: `KUMIKO_UPTIME_ROLLUP_INTERVAL` (default 60s), `KUMIKO_UPTIME_WINDOW` (default
//! 720h), `KUMIKO_JOBS_POLL_INTERVAL` (default 1s), `KUMIKO_JOB_TIMEOUT` (default 60s),
//! `KUMIKO_LEADER_KEY` (default `kumiko:kumiko-app:scheduler-leader`).

use std::time::Duration;

use axum::Router;
use futures::future::BoxFuture;
use kumiko_runtime::boot::{Backoff, BootError, ErrorChain, Phase, PhaseError, PhasePolicy};
use kumiko_runtime::component::Component;
use kumiko_runtime::config::{Env, ProcessKind, parse_duration};
use kumiko_runtime::jobs::{JobsWorker, WorkerConfig};
use kumiko_runtime::leader::{self, LeaderConfig, LeaderElection};
use kumiko_runtime::runtime::{self, Runtime};
use kumiko_runtime::statuspage::uptime;

/// The setting for how often an idle worker polls the queue.
const POLL_INTERVAL_SETTING: &str = "KUMIKO_JOBS_POLL_INTERVAL";
/// The setting for the bound on one job run.
const JOB_TIMEOUT_SETTING: &str = "KUMIKO_JOB_TIMEOUT";
/// How long the jobs worker gets to finish its current job at shutdown.
const WORKER_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long releasing the leader key may take at shutdown.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `worker`; returns the exit code.
pub async fn run(env: Env) -> i32 {
    runtime::run(ProcessKind::Worker, env, components(), boot).await
}

/// The worker's components, checked in boot validation.
fn components() -> Vec<Component> {
    vec![
        Component::new("database"),
        Component::new("leader-election").setting(leader::KEY_SETTING, leader::validate_key),
        Component::new("jobs")
            .requires("database")
            .requires("leader-election")
            .setting(POLL_INTERVAL_SETTING, validate_poll_interval)
            .setting(JOB_TIMEOUT_SETTING, validate_job_timeout),
        Component::new("uptime-rollup")
            .requires("jobs")
            .setting(uptime::ROLLUP_INTERVAL_SETTING, uptime::validate_interval)
            .setting(uptime::WINDOW_SETTING, uptime::validate_window),
        // One environment feeds every process type (the operator gives `spec.env` to all), so
        // the API's settings are known here too: validated, not used.
        crate::serve::api_settings("api-settings"),
    ]
}

/// The worker's own settings, for processes that share its environment (boot validation rejects
/// undeclared `KUMIKO_*` names).
pub(crate) fn jobs_settings(name: &'static str) -> Component {
    Component::new(name)
        .setting(POLL_INTERVAL_SETTING, validate_poll_interval)
        .setting(JOB_TIMEOUT_SETTING, validate_job_timeout)
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

/// A declared duration setting, or its default (boot validation has checked the value).
fn duration_setting(env: &Env, name: &str, default: Duration) -> Duration {
    env.get(name)
        .and_then(|value| parse_duration(value).ok())
        .unwrap_or(default)
}

/// Phases 7 to 14 of the worker.
fn boot(runtime: &mut Runtime) -> BoxFuture<'_, Result<Router, BootError>> {
    Box::pin(async move {
        let pool = runtime.connect_database().await?;

        crate::phases::check_migrations(runtime).await?;

        let leader_config = LeaderConfig {
            key: runtime
                .env
                .get(leader::KEY_SETTING)
                .map(|key| key.trim().to_owned())
                .filter(|key| !key.is_empty())
                .unwrap_or_else(|| leader::DEFAULT_KEY.to_owned()),
            ..LeaderConfig::default()
        };
        let redis = match runtime.config.redis_url.clone() {
            None => {
                runtime.boot.skip(
                    Phase::ConnectRedis,
                    "no REDIS_URL: this process is its own scheduler leader",
                )?;
                None
            }
            Some(url) => {
                let timeout = leader_config.command_timeout;
                tracing::info!(redis = %url, "connecting Redis");
                let connection = runtime
                    .boot
                    .run(
                        Phase::ConnectRedis,
                        PhasePolicy::retry(Backoff::default()),
                        || {
                            let url = url.clone();
                            async move {
                                leader::connect_redis(&url, timeout)
                                    .await
                                    .map_err(PhaseError::from)
                            }
                        },
                    )
                    .await?;
                runtime
                    .health
                    .register(leader::redis_health_check(connection.clone()));
                Some(connection)
            }
        };

        let env = &runtime.env;
        let worker_config = WorkerConfig {
            poll_interval: duration_setting(env, POLL_INTERVAL_SETTING, Duration::from_secs(1)),
            job_timeout: duration_setting(env, JOB_TIMEOUT_SETTING, Duration::from_secs(60)),
            ..WorkerConfig::new(runtime.config.instance_id.clone())
        };
        let registry = uptime::job_registry(
            duration_setting(
                env,
                uptime::ROLLUP_INTERVAL_SETTING,
                uptime::DEFAULT_ROLLUP_INTERVAL,
            ),
            duration_setting(env, uptime::WINDOW_SETTING, uptime::DEFAULT_WINDOW),
        );
        // Phase 14: starting the tasks cannot fail; the phase records its duration.
        let started = std::time::Instant::now();
        let election = match redis {
            Some(connection) => {
                LeaderElection::start(connection, &runtime.config.instance_id, leader_config)
            }
            None => LeaderElection::standalone(),
        };
        let worker = JobsWorker::start(pool, election.handle(), registry, worker_config);
        runtime
            .boot
            .mark_done(Phase::JobsWorker, started.elapsed())?;
        let health = &runtime.health;
        let components = &runtime.components;
        health.register(worker.health_check());
        health.register(election.handle().health_check());
        // LIFO: registered first, the release runs after the worker has stopped.
        components.register("leader election", RELEASE_TIMEOUT, move || async move {
            match election.shutdown().await {
                Ok(released) => tracing::info!(released, "leader election stopped"),
                Err(error) => tracing::warn!(
                    error = %ErrorChain(&error),
                    "releasing the leader key failed; it expires with its TTL"
                ),
            }
        });
        components.register("jobs worker", WORKER_STOP_TIMEOUT, move || async move {
            worker
                .stop(WORKER_STOP_TIMEOUT - Duration::from_secs(1))
                .await;
        });
        Ok(Router::new())
    })
}
