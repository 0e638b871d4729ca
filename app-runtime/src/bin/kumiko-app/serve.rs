//! `kumiko-app serve`: the API process. Boot phases 7 to 14 of the app, and its routes:
//!
//! - `GET /api/ping`: a bare route (the benchmark's baseline for `/health/ready`).
//! - `GET /api/events`: the SSE stream (a `hello`, then a `heartbeat` every
//!   `KUMIKO_EVENTS_INTERVAL`); it ends when the runtime cancels streams at shutdown.
//! - `GET /api/slow?ms=N`: sleeps N ms, then answers; only with `KUMIKO_TEST_ROUTES=1` (the
//!   shutdown tests and benchmarks use it to hold a request in flight).

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use kumiko_runtime::boot::{BootError, Phase, PhaseError, PhasePolicy};
use kumiko_runtime::component::Component;
use kumiko_runtime::config::{Env, ProcessKind, parse_duration};
use kumiko_runtime::db::Pool;
use kumiko_runtime::lifecycle::Lifecycle;
use kumiko_runtime::migrations;
use kumiko_runtime::runtime::{self, Runtime};
use tokio_util::sync::CancellationToken;

/// The longest `/api/slow` sleeps (a request that "never returns" in tests).
const SLOW_MAX: Duration = Duration::from_secs(3600);
/// How long the boot gate (phase 9) may take.
const MIGRATION_CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// Default interval between SSE heartbeats.
const DEFAULT_EVENTS_INTERVAL: Duration = Duration::from_secs(15);

/// Runs `serve`; returns the exit code.
pub async fn run(env: Env) -> i32 {
    runtime::run(ProcessKind::Api, env, components(), boot).await
}

/// The app's components, checked in boot validation.
fn components() -> Vec<Component> {
    vec![
        Component::new("database"),
        Component::new("status-page").requires("database"),
        Component::new("events")
            .requires("status-page")
            .setting("KUMIKO_EVENTS_INTERVAL", validate_interval),
        Component::new("test-routes").setting("KUMIKO_TEST_ROUTES", validate_flag),
    ]
}

fn validate_interval(value: &str) -> Result<(), String> {
    match parse_duration(value)? {
        interval if interval >= Duration::from_millis(10) => Ok(()),
        _ => Err(format!(
            "`{value}` is too short; use at least 10ms (default 15s)"
        )),
    }
}

fn validate_flag(value: &str) -> Result<(), String> {
    parse_flag(value)
        .map(drop)
        .ok_or_else(|| format!("`{value}` is not a flag; use 1/true or 0/false"))
}

fn parse_flag(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// What the handlers share.
#[derive(Clone)]
struct AppState {
    #[allow(dead_code)]
    pool: Pool,
    lifecycle: Lifecycle,
    instance: String,
    streams: CancellationToken,
    events_interval: Duration,
}

/// Phases 7 to 14 of the API process.
fn boot(runtime: &mut Runtime) -> BoxFuture<'_, Result<Router, BootError>> {
    Box::pin(async move {
        let pool = runtime.connect_database().await?;

        let target = runtime.config.database.clone();
        let mode = runtime.config.migrations_mode;
        runtime
            .boot
            .run(
                Phase::MigrationCheck,
                PhasePolicy::exit(MIGRATION_CHECK_TIMEOUT),
                || {
                    let target = target.clone();
                    async move {
                        migrations::boot_gate(&target, migrations::embedded(&target), mode)
                            .await
                            .map(drop)
                            .map_err(PhaseError::from)
                    }
                },
            )
            .await?;

        let env = &runtime.env;
        let events_interval = env
            .get("KUMIKO_EVENTS_INTERVAL")
            .and_then(|value| parse_duration(value).ok())
            .unwrap_or(DEFAULT_EVENTS_INTERVAL);
        let test_routes = env
            .get("KUMIKO_TEST_ROUTES")
            .and_then(|value| parse_flag(value))
            .unwrap_or(false);

        let state = AppState {
            pool,
            lifecycle: runtime.lifecycle.clone(),
            instance: runtime.config.instance_id.clone(),
            streams: runtime.streams.clone(),
            events_interval,
        };
        let mut router = Router::new()
            .route("/api/ping", get(ping))
            .route("/api/events", get(events));
        if test_routes {
            router = router.route("/api/slow", get(slow));
        }
        Ok(router.with_state(state))
    })
}

async fn ping() -> &'static str {
    "pong"
}

#[derive(Debug, serde::Deserialize)]
struct SlowQuery {
    ms: Option<u64>,
}

async fn slow(Query(query): Query<SlowQuery>) -> Response {
    let Some(ms) = query.ms else {
        return (
            StatusCode::BAD_REQUEST,
            "ms: missing; use /api/slow?ms=NUMBER (milliseconds)",
        )
            .into_response();
    };
    let duration = Duration::from_millis(ms).min(SLOW_MAX);
    tokio::time::sleep(duration).await;
    format!("slept {} ms", duration.as_millis()).into_response()
}

async fn events(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let hello = Event::default().event("hello").data(
        serde_json::json!({
            "instance": state.instance,
            "state": state.lifecycle.state(),
        })
        .to_string(),
    );
    let interval = state.events_interval;
    let heartbeats = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval_at(
        tokio::time::Instant::now() + interval,
        interval,
    ))
    .map(|_| Event::default().event("heartbeat").data("{}"));
    let stream = futures::stream::once(async move { hello })
        .chain(heartbeats)
        .map(Ok)
        .take_until(state.streams.cancelled_owned());
    Sse::new(stream).keep_alive(KeepAlive::default())
}
