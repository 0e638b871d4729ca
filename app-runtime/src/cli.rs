//! The commands every app gets (DESIGN §4): `serve`, `worker`, `migrate apply`, `migrate status`.
//!
//! [`parse`] reads them from the command line (clap); [`crate::app::App::run`] runs one. The two
//! migration commands open one dedicated connection (never a pool) to `DATABASE_URL`, or to the
//! SQLite file under `KUMIKO_DATA_DIR` without it, and cover the runtime's and the app's sets.
//!
//! - `migrate apply` logs each migration it applies (JSON lines unless `KUMIKO_LOG_FORMAT=text`),
//!   retries an unreachable database with backoff until `KUMIKO_STARTUP_TIMEOUT`, and exits 0 when
//!   both schemas are current (or ahead of this binary), 1 otherwise. The migration lock is
//!   released on every path.
//! - `migrate status` prints a table (or JSON with `--json`) on stdout and changes nothing. It
//!   exits 0 when it could read the state, whatever the state is; 1 when it could not.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::boot::ErrorChain;
use crate::config::{Config, Env, ProcessKind};
use crate::migrations::{self, AppMigrations};
use crate::runtime::EXIT_FAILURE;
use crate::{Error, telemetry};

/// The command line of an app on the runtime.
#[derive(Debug, Parser)]
#[command(about = "An app on the Kumiko runtime")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// One command.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Serve the app's routes and the health endpoints on PORT.
    Serve,
    /// Run background jobs (cron on the leader, queued jobs on any worker).
    Worker,
    /// Schema migrations (the runtime's and the app's).
    Migrate {
        /// What to do.
        #[command(subcommand)]
        action: MigrateAction,
    },
}

/// A `migrate` action.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum MigrateAction {
    /// Apply pending migrations (the pre-deploy step).
    Apply,
    /// Show applied, pending, unknown, dirty and mismatched migrations; change nothing.
    Status {
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
}

/// Parses the process's arguments for the app `name`; prints help or a usage error and exits
/// (code 2) when they do not parse.
pub fn parse(name: &'static str, version: &'static str) -> Command {
    let matches = Cli::command().name(name).version(version).get_matches();
    match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli.command,
        Err(error) => error.exit(),
    }
}

/// Parses `args` (the first is the program name) without exiting: for tests and custom mains.
pub fn try_parse_from<I, T>(args: I) -> Result<Command, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    Cli::try_parse_from(args).map(|cli| cli.command)
}

/// Parses the configuration; on mistakes, prints every one and returns `None`.
fn config(env: &Env) -> Option<Config> {
    let parsed = Config::from_env(ProcessKind::Migrate, env);
    if parsed.errors.is_empty() {
        return Some(parsed.config);
    }
    eprintln!("kumiko: {} configuration error(s):", parsed.errors.len());
    for error in &parsed.errors {
        eprintln!("  - {error}");
    }
    None
}

fn failed(what: &str, error: &Error) -> i32 {
    tracing::error!(error = %ErrorChain(error), "{what} failed");
    eprintln!("kumiko: {what} failed: {}", ErrorChain(error));
    telemetry::flush();
    EXIT_FAILURE
}

/// `migrate apply`; returns the exit code.
pub async fn migrate_apply(app: &AppMigrations, env: Env) -> i32 {
    let Some(config) = config(&env) else {
        return EXIT_FAILURE;
    };
    if let Err(error) = telemetry::init(config.log_format) {
        eprintln!("kumiko: logging is off: {error}");
    }
    let target = config.database.clone();
    let sets = app.sets(&target);
    tracing::info!(
        database = %target.describe(),
        instance = %config.instance_id,
        runtime_version = sets[0].migrator.iter().map(|m| m.version).max(),
        binary_version = sets[1].migrator.iter().map(|m| m.version).max(),
        "applying migrations"
    );
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times();
    let attempt = || migrations::apply_sets(&target, &sets);
    let retried = attempt
        .retry(backoff)
        .when(|error: &Error| matches!(error, Error::Connect { transient: true, .. }))
        .notify(|error, delay| {
            tracing::warn!(error = %ErrorChain(error), retry_in_ms = delay.as_millis(), "database not reachable; retrying");
        });
    let outcomes = match tokio::time::timeout(config.startup_timeout, retried).await {
        Ok(Ok(outcomes)) => outcomes,
        Ok(Err(error)) => return failed("migrate apply", &error),
        Err(_) => {
            let message = format!(
                "the database was not reachable within KUMIKO_STARTUP_TIMEOUT ({} s)",
                config.startup_timeout.as_secs()
            );
            tracing::error!("{message}");
            eprintln!("kumiko: migrate apply failed: {message}");
            telemetry::flush();
            return EXIT_FAILURE;
        }
    };
    for outcome in &outcomes {
        let set = outcome.owner.as_str();
        let report = &outcome.report;
        for migration in &outcome.applied {
            tracing::info!(
                set,
                version = migration.version,
                description = %migration.description,
                elapsed_ms = migration.elapsed_ms,
                "migration applied"
            );
        }
        let ahead = report.ahead();
        if ahead.is_empty() {
            tracing::info!(
                set,
                applied = outcome.applied.len(),
                database_version = report.database_version,
                "migrations applied; the schema is current"
            );
        } else {
            tracing::warn!(
                set,
                applied = outcome.applied.len(),
                database_version = report.database_version,
                binary_version = report.binary_version,
                ?ahead,
                "the database is ahead of this binary; its newer migrations were left alone"
            );
        }
    }
    telemetry::flush();
    0
}

/// `migrate status`; prints the table (or JSON) and returns the exit code.
pub async fn migrate_status(app: &AppMigrations, env: Env, json: bool) -> i32 {
    let Some(config) = config(&env) else {
        return EXIT_FAILURE;
    };
    let target = config.database;
    match migrations::status_sets(&target, &app.sets(&target)).await {
        Ok(reports) => {
            if json {
                println!("{}", migrations::render_sets_json(&reports));
            } else {
                println!("database: {}\n", target.describe());
                print!("{}", migrations::render_sets_table(&reports));
            }
            0
        }
        Err(error) => {
            eprintln!("kumiko: migrate status failed: {}", ErrorChain(&error));
            EXIT_FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_commands_parse() {
        assert_eq!(try_parse_from(["app", "serve"]).unwrap(), Command::Serve);
        assert_eq!(try_parse_from(["app", "worker"]).unwrap(), Command::Worker);
        assert_eq!(
            try_parse_from(["app", "migrate", "apply"]).unwrap(),
            Command::Migrate {
                action: MigrateAction::Apply
            }
        );
        assert_eq!(
            try_parse_from(["app", "migrate", "status", "--json"]).unwrap(),
            Command::Migrate {
                action: MigrateAction::Status { json: true }
            }
        );
        assert!(try_parse_from(["app", "serve-all"]).is_err());
    }
}
