//! `kumiko-app`, the reference app on the Kumiko runtime: a public status page (components,
//! incidents, an uptime roll-up), built on the runtime's public API only, exactly as any other
//! app would be.
//!
//! Commands (DESIGN §4, provided by the runtime): `serve` (the API), `worker` (background jobs),
//! `migrate apply` (the pre-deploy step) and `migrate status`. Configuration comes from the
//! environment only.
//!
//! Settings of the app (boot validation rejects an undeclared `KUMIKO_*`):
//! `KUMIKO_ADMIN_TOKEN` (bearer token for writes; unset = write API off, 403),
//! `KUMIKO_EVENTS_INTERVAL` (SSE heartbeat, default 15s), `KUMIKO_TEST_ROUTES=1` (enables
//! `/api/slow?ms=N`, used by the shutdown tests and the benchmark),
//! `KUMIKO_UPTIME_ROLLUP_INTERVAL` (default 60s), `KUMIKO_UPTIME_WINDOW` (default 720h).

mod api;
mod statuspage;

use std::time::Duration;

use kumiko_runtime::app::{App, Context};
use kumiko_runtime::component::Component;
use kumiko_runtime::config::parse_duration;
use kumiko_runtime::migrations::AppMigrations;
use sqlx::migrate::Migrator;
use tokio::sync::broadcast;

use crate::statuspage::uptime;

/// The status page's Postgres migrations.
static POSTGRES: Migrator = sqlx::migrate!("./src/bin/kumiko-app/migrations/postgres");
/// The status page's SQLite migrations.
static SQLITE: Migrator = sqlx::migrate!("./src/bin/kumiko-app/migrations/sqlite");

/// Default interval between SSE heartbeats.
const DEFAULT_EVENTS_INTERVAL: Duration = Duration::from_secs(15);

fn main() {
    app().main()
}

/// The status page's migrations, per backend.
fn migrations() -> AppMigrations {
    AppMigrations {
        postgres: &POSTGRES,
        sqlite: &SQLITE,
    }
}

/// The whole app, described once.
fn app() -> App {
    App::new("kumiko-app")
        .version(env!("CARGO_PKG_VERSION"))
        .migrations(migrations())
        .component(Component::new("status-page"))
        .component(Component::new("events").requires("status-page"))
        .component(Component::new("write-api").requires("status-page"))
        .component(
            Component::new("uptime")
                .requires("status-page")
                .setting(uptime::ROLLUP_INTERVAL_SETTING, uptime::validate_interval)
                .setting(uptime::WINDOW_SETTING, uptime::validate_window),
        )
        .setting("KUMIKO_EVENTS_INTERVAL", validate_interval)
        .setting("KUMIKO_ADMIN_TOKEN", |_| Ok(()))
        .setting("KUMIKO_TEST_ROUTES", validate_flag)
        .routes(routes)
        .jobs(|context| {
            uptime::job_registry(
                context.duration_setting(
                    uptime::ROLLUP_INTERVAL_SETTING,
                    uptime::DEFAULT_ROLLUP_INTERVAL,
                ),
                context.duration_setting(uptime::WINDOW_SETTING, uptime::DEFAULT_WINDOW),
            )
        })
}

/// The API's routes and their state.
fn routes(context: &Context) -> axum::Router {
    let test_routes = context
        .setting("KUMIKO_TEST_ROUTES")
        .and_then(parse_flag)
        .unwrap_or(false);
    let admin_token = context.setting("KUMIKO_ADMIN_TOKEN").map(str::to_owned);
    if admin_token.is_none() {
        tracing::info!("KUMIKO_ADMIN_TOKEN is not set: the write API is off");
    }
    let state = api::AppState {
        pool: context.pool.clone(),
        lifecycle: context.lifecycle.clone(),
        instance: context.config.instance_id.clone(),
        streams: context.streams.clone(),
        events_interval: context
            .duration_setting("KUMIKO_EVENTS_INTERVAL", DEFAULT_EVENTS_INTERVAL),
        changes: broadcast::channel(256).0,
        admin_token,
    };
    api::routes(state, test_routes)
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
