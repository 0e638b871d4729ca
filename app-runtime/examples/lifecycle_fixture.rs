//! A test fixture, not an example to copy: an app on the public API whose misbehaviour the
//! process tests (`tests/supervision.rs`) switch on with settings.
//!
//! - `KUMIKO_FIXTURE_PANIC_AFTER=<duration>`: the component `flaky-cache` panics after that long.
//! - `KUMIKO_FIXTURE_WARM_FOR=<duration>`: the component `warmer` marks the process not ready
//!   ("warming the cache") for that long after boot, without leaving `ready`.
//! - `KUMIKO_FIXTURE_CRON=<expression>` (and `KUMIKO_FIXTURE_CRON_TZ`, default UTC): the cron
//!   job `fixture-cron` on that schedule; each run logs `fixture cron started`, then `fixture cron
//!   fired` with its tick. With `KUMIKO_FIXTURE_CRON_SLOW_ON=<instance>` a run on that instance
//!   takes an hour instead, unless cancelled at shutdown.
//! - `KUMIKO_FIXTURE_CRASH_ONCE=1`: the component `phoenix` (restarted up to once) panics on its
//!   first run, 300 ms after boot, and runs normally after its restart.
//! - `KUMIKO_FIXTURE_CRON_AT=<expression>`: the cron job `fixture-cron-at`, registered with
//!   `JobRegistry::cron_at` as written (no setting validator), so a bad expression is left to the
//!   job registry's own check at boot validation.
//! - Queued jobs of kind `nap` (payload `{"slow_on": "<instance>"}`) log `fixture nap started`,
//!   then take an hour on that instance, unless cancelled at shutdown, and 50 ms elsewhere. With
//!   `"stubborn": true` the hour-long nap ignores its cancellation signal.
//! - `GET /stop?reason=<text>`: the app asks its own process to shut down with
//!   `Control::request_shutdown(<text>)` (as an app would on an unrecoverable condition).
//! - `KUMIKO_FIXTURE_HOLD_DB_AT_SHUTDOWN=<duration>`: the component `db-holder` keeps a database
//!   connection checked out for that long after it is told to stop, so closing the database pool
//!   (the last shutdown hook) waits for it: the process stays alive that long after the hooks
//!   before it (the Redis close) have run. It logs `fixture holder released the connection`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use std::collections::HashMap;

use axum::{Router, extract::Query, routing::get};
use kumiko_runtime::app::App;
use kumiko_runtime::component::Component;
use kumiko_runtime::config::parse_duration;
use kumiko_runtime::db::Pool;
use kumiko_runtime::jobs::{CronJob, JobRegistry, Schedule};

const PANIC_AFTER: &str = "KUMIKO_FIXTURE_PANIC_AFTER";
const WARM_FOR: &str = "KUMIKO_FIXTURE_WARM_FOR";
const CRASH_ONCE: &str = "KUMIKO_FIXTURE_CRASH_ONCE";
const CRON: &str = "KUMIKO_FIXTURE_CRON";
const CRON_TZ: &str = "KUMIKO_FIXTURE_CRON_TZ";
const CRON_SLOW_ON: &str = "KUMIKO_FIXTURE_CRON_SLOW_ON";
const CRON_AT: &str = "KUMIKO_FIXTURE_CRON_AT";
const HOLD_DB: &str = "KUMIKO_FIXTURE_HOLD_DB_AT_SHUTDOWN";

/// A database connection checked out of either pool.
#[expect(
    dead_code,
    reason = "held only for its drop, which returns it to the pool"
)]
enum Held {
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
}

/// Whether `phoenix` has crashed already (it crashes on its first run only).
static CRASHED: AtomicBool = AtomicBool::new(false);

fn validate(value: &str) -> Result<(), String> {
    parse_duration(value).map(drop)
}

fn main() {
    App::new("lifecycle-fixture")
        .setting(PANIC_AFTER, validate)
        .setting(WARM_FOR, validate)
        .setting(CRASH_ONCE, |_| Ok(()))
        .component(
            Component::new("phoenix").start_restarting(1, move |context, stop| {
                let crash =
                    context.setting(CRASH_ONCE).is_some() && !CRASHED.swap(true, Ordering::SeqCst);
                async move {
                    if crash {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        panic!("phoenix burns once");
                    }
                    stop.cancelled().await;
                    Ok(())
                }
            }),
        )
        .setting(CRON, |value| {
            Schedule::cron(value, "UTC")
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .setting(CRON_TZ, |value| {
            Schedule::cron("0 * * * *", value)
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .setting(CRON_SLOW_ON, |_| Ok(()))
        .setting(CRON_AT, |_| Ok(()))
        .jobs(|context| {
            let mut jobs = JobRegistry::new();
            if let Some(expression) = context.setting(CRON_AT) {
                jobs = jobs.cron_at("fixture-cron-at", expression, "UTC", |_tick| async { Ok(()) });
            }
            if let Some(expression) = context.setting(CRON) {
                let zone = context.setting(CRON_TZ).unwrap_or("UTC");
                let slow_on = context.setting(CRON_SLOW_ON).map(str::to_owned);
                // Boot validation has checked both settings.
                if let Ok(schedule) = Schedule::cron(expression, zone) {
                    jobs = jobs.cron(CronJob::scheduled(
                        "fixture-cron",
                        schedule,
                        move |tick| {
                            let slow = slow_on.as_deref() == Some(tick.instance_id.as_str());
                            async move {
                                tracing::info!(
                                    scheduled_for_ms = tick.scheduled_for_ms,
                                    "fixture cron started"
                                );
                                if slow {
                                    tokio::select! {
                                        () = tokio::time::sleep(Duration::from_secs(3600)) => {}
                                        () = tick.cancel.cancelled() => return Err(kumiko_runtime::Error::Job {
                                            job: "fixture-cron".to_owned(),
                                            message: "woken by the shutdown".to_owned(),
                                        }),
                                    }
                                }
                                tracing::info!(
                                    scheduled_for_ms = tick.scheduled_for_ms,
                                    "fixture cron fired"
                                );
                                Ok(())
                            }
                        },
                    ));
                }
            }
            jobs.queued("nap", |job| async move {
                tracing::info!(
                    job_id = job.id,
                    attempt = job.attempt,
                    "fixture nap started"
                );
                let slow = job.payload["slow_on"].as_str() == Some(job.instance_id.as_str());
                let nap = if slow {
                    Duration::from_secs(3600)
                } else {
                    Duration::from_millis(50)
                };
                if slow && job.payload["stubborn"] == true {
                    // Ignores the cancellation signal: only the end of its grace stops it.
                    tokio::time::sleep(nap).await;
                    return Ok(());
                }
                tokio::select! {
                    () = tokio::time::sleep(nap) => Ok(()),
                    () = job.cancel.cancelled() => Err(kumiko_runtime::Error::Job {
                        job: "nap".to_owned(),
                        message: "woken by the shutdown".to_owned(),
                    }),
                }
            })
        })
        .routes(|context| {
            let control = context.control.clone();
            Router::new()
                .route("/ping", get(|| async { "pong" }))
                .route(
                    "/stop",
                    get(move |Query(query): Query<HashMap<String, String>>| async move {
                        let reason = query.get("reason").cloned().unwrap_or_default();
                        control.request_shutdown(reason);
                        "stopping"
                    }),
                )
        })
        .setting(HOLD_DB, validate)
        .component(Component::new("db-holder").start(|context, stop| async move {
            let hold = context.duration_setting(HOLD_DB, Duration::ZERO);
            if hold.is_zero() {
                stop.cancelled().await;
                return Ok(());
            }
            let connection = match &context.pool {
                Pool::Sqlite(pool) => pool.acquire().await.map(Held::Sqlite),
                Pool::Postgres(pool) => pool.acquire().await.map(Held::Postgres),
            }
            .map_err(|error| kumiko_runtime::Error::Job {
                job: "db-holder".to_owned(),
                message: error.to_string(),
            })?;
            stop.cancelled().await;
            // Stops at once (its hook finishes) but leaves the connection checked out a while.
            tokio::spawn(async move {
                tokio::time::sleep(hold).await;
                drop(connection);
                tracing::info!("fixture holder released the connection");
            });
            Ok(())
        }))
        .component(
            Component::new("flaky-cache").start(|context, stop| async move {
                let Some(after) = context
                    .setting(PANIC_AFTER)
                    .map(|_| context.duration_setting(PANIC_AFTER, Duration::ZERO))
                else {
                    stop.cancelled().await;
                    return Ok(());
                };
                tokio::select! {
                    () = stop.cancelled() => Ok(()),
                    () = tokio::time::sleep(after) => panic!("flaky-cache lost its backing store"),
                }
            }),
        )
        .component(Component::new("warmer").start(|context, stop| async move {
            let warm_for = context.duration_setting(WARM_FOR, Duration::ZERO);
            if !warm_for.is_zero() {
                context.control.set_unavailable("warming the cache");
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = tokio::time::sleep(warm_for) => {}
                }
                context.control.set_available();
            }
            stop.cancelled().await;
            Ok(())
        }))
        .main()
}
