//! `kumiko-app serve`: the API process. Its components (checked in boot validation), boot
//! phases 7 to 14 (database, migration gate, Redis when set), and the routes of [`crate::api`].

use std::time::Duration;

use axum::Router;
use futures::future::BoxFuture;
use kumiko_runtime::boot::{Backoff, BootError, Phase, PhaseError, PhasePolicy};
use kumiko_runtime::component::Component;
use kumiko_runtime::config::{Env, ProcessKind, parse_duration};
use kumiko_runtime::leader;
use kumiko_runtime::runtime::{self, Runtime};
use kumiko_runtime::statuspage::uptime;
use tokio::sync::broadcast;

use crate::api::{self, AppState};

/// How long one Redis command may take.
const REDIS_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Default interval between SSE heartbeats.
const DEFAULT_EVENTS_INTERVAL: Duration = Duration::from_secs(15);

/// Runs `serve`; returns the exit code.
pub async fn run(env: Env) -> i32 {
    runtime::run(ProcessKind::Api, env, components(), boot).await
}

/// The app's components, checked in boot validation.
pub fn components() -> Vec<Component> {
    vec![
        Component::new("database"),
        Component::new("status-page").requires("database"),
        Component::new("events").requires("status-page"),
        // Settings the worker reads are declared here too: one environment serves both.
        Component::new("uptime")
            .requires("database")
            .setting(uptime::ROLLUP_INTERVAL_SETTING, uptime::validate_interval)
            .setting(uptime::WINDOW_SETTING, uptime::validate_window),
        Component::new("leader").setting(leader::KEY_SETTING, leader::validate_key),
        Component::new("write-api").requires("status-page"),
        api_settings("api-settings"),
        crate::worker::jobs_settings("jobs-settings"),
    ]
}

/// The API's settings, for every process that shares its environment (boot validation rejects
/// undeclared `KUMIKO_*` names, and the operator gives one environment to every process type).
pub(crate) fn api_settings(name: &'static str) -> Component {
    Component::new(name)
        .setting("KUMIKO_EVENTS_INTERVAL", validate_interval)
        .setting("KUMIKO_ADMIN_TOKEN", |_| Ok(()))
        .setting("KUMIKO_TEST_ROUTES", validate_flag)
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

/// Phases 7 to 14 of the API process.
fn boot(runtime: &mut Runtime) -> BoxFuture<'_, Result<Router, BootError>> {
    Box::pin(async move {
        let pool = runtime.connect_database().await?;

        crate::phases::check_migrations(runtime).await?;

        // Phase 10: Redis, when the tier has it (the API only checks it; the worker elects).
        if let Some(url) = runtime.config.redis_url.clone() {
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
                                .map_err(PhaseError::transient)
                        }
                    },
                )
                .await?;
            runtime
                .health
                .register(leader::redis_health_check(connection));
        }

        let env = &runtime.env;
        let events_interval = env
            .get("KUMIKO_EVENTS_INTERVAL")
            .and_then(|value| parse_duration(value).ok())
            .unwrap_or(DEFAULT_EVENTS_INTERVAL);
        let test_routes = env
            .get("KUMIKO_TEST_ROUTES")
            .and_then(|value| parse_flag(value))
            .unwrap_or(false);
        let admin_token = env
            .get("KUMIKO_ADMIN_TOKEN")
            .map(|token| token.trim().to_owned())
            .filter(|token| !token.is_empty());
        if admin_token.is_none() {
            tracing::info!("KUMIKO_ADMIN_TOKEN is not set: the write API is off");
        }

        let state = AppState {
            pool,
            lifecycle: runtime.lifecycle.clone(),
            instance: runtime.config.instance_id.clone(),
            streams: runtime.streams.clone(),
            events_interval,
            changes: broadcast::channel(256).0,
            admin_token,
        };
        Ok(api::routes(state, test_routes))
    })
}
