//! The status page described once, for both of its releases (`main.rs`, `v2.rs`).

use std::time::Duration;

use kumiko_runtime::app::{App, Context};
use kumiko_runtime::component::Component;
use kumiko_runtime::config::parse_duration;
use kumiko_runtime::migrations::AppMigrations;
use sqlx::migrate::Migrator;
use tokio::sync::broadcast;

use crate::api;
use crate::statuspage::uptime;

/// The first release's Postgres migrations.
static POSTGRES: Migrator = sqlx::migrate!("./src/bin/kumiko-app/migrations/postgres");
/// The first release's SQLite migrations.
static SQLITE: Migrator = sqlx::migrate!("./src/bin/kumiko-app/migrations/sqlite");
/// The second release's Postgres migrations: the first release's (the same files, linked) and one
/// more.
static POSTGRES_V2: Migrator = sqlx::migrate!("./src/bin/kumiko-app/migrations-v2/postgres");
/// The second release's SQLite migrations.
static SQLITE_V2: Migrator = sqlx::migrate!("./src/bin/kumiko-app/migrations-v2/sqlite");

/// Default interval between SSE heartbeats.
const DEFAULT_EVENTS_INTERVAL: Duration = Duration::from_secs(15);

/// A release of the status page. Both run the same code; the second brings one more migration,
/// so the demo has an upgrade whose migrate Job does something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(
    dead_code,
    reason = "each program constructs its own release; the other is built but unused"
)]
pub enum Release {
    /// `kumiko-app` (`kumiko-app:dev` in the demo and the e2e suite).
    First,
    /// `kumiko-app-v2` (`kumiko-app:v2` in the demo): adds the index of incidents by component.
    Second,
}

impl Release {
    /// The version `--version` prints.
    fn version(self) -> &'static str {
        match self {
            Release::First => env!("CARGO_PKG_VERSION"),
            Release::Second => concat!(env!("CARGO_PKG_VERSION"), "-v2"),
        }
    }

    /// The release's migrations, per backend.
    pub fn migrations(self) -> AppMigrations {
        match self {
            Release::First => AppMigrations {
                postgres: &POSTGRES,
                sqlite: &SQLITE,
            },
            Release::Second => AppMigrations {
                postgres: &POSTGRES_V2,
                sqlite: &SQLITE_V2,
            },
        }
    }
}

/// The whole app, described once.
pub fn app(release: Release) -> App {
    App::new("kumiko-app")
        .version(release.version())
        .migrations(release.migrations())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_release_keeps_the_first_releases_migrations_unchanged_and_adds_one() {
        for (first, second) in [(&POSTGRES, &POSTGRES_V2), (&SQLITE, &SQLITE_V2)] {
            let first: Vec<_> = first
                .iter()
                .map(|m| (m.version, m.checksum.clone()))
                .collect();
            let second: Vec<_> = second
                .iter()
                .map(|m| (m.version, m.checksum.clone()))
                .collect();
            assert_eq!(second.len(), first.len() + 1, "one more migration");
            assert_eq!(
                second[..first.len()],
                first[..],
                "the released ones, byte for byte"
            );
        }
    }
}
