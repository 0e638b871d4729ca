//! `kumiko-app migrate apply` (the pre-deploy step) and `kumiko-app migrate status`.
//!
//! Both open one dedicated connection (never a pool) to `DATABASE_URL`, or to the SQLite file
//! under `KUMIKO_DATA_DIR` without it.
//!
//! - `apply` logs each migration it applies (JSON lines unless `KUMIKO_LOG_FORMAT=text`), retries
//!   an unreachable database with backoff until `KUMIKO_STARTUP_TIMEOUT`, and exits 0 when the
//!   schema is current (or ahead of this binary), 1 otherwise. The migration lock is released on
//!   every path.
//! - `status` prints a table (or JSON with `--json`) on stdout and changes nothing. It exits 0
//!   when it could read the state, whatever the state is; 1 when it could not.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use kumiko_runtime::boot::ErrorChain;
use kumiko_runtime::config::{Config, Env, ProcessKind};
use kumiko_runtime::migrations;
use kumiko_runtime::{Error, telemetry};

/// Exit code of a failed command.
const EXIT_FAILURE: i32 = 1;

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
pub async fn apply(env: Env) -> i32 {
    let Some(config) = config(&env) else {
        return EXIT_FAILURE;
    };
    if let Err(error) = telemetry::init(config.log_format) {
        eprintln!("kumiko: logging is off: {error}");
    }
    let target = config.database.clone();
    let migrator = migrations::embedded(&target);
    tracing::info!(
        database = %target.describe(),
        instance = %config.instance_id,
        binary_version = migrator.iter().map(|m| m.version).max(),
        "applying migrations"
    );
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times();
    let attempt = || migrations::apply_all(&target, migrator);
    let retried = attempt
        .retry(backoff)
        .when(|error: &Error| matches!(error, Error::Connect { transient: true, .. }))
        .notify(|error, delay| {
            tracing::warn!(error = %ErrorChain(error), retry_in_ms = delay.as_millis(), "database not reachable; retrying");
        });
    let outcome = match tokio::time::timeout(config.startup_timeout, retried).await {
        Ok(Ok(outcome)) => outcome,
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
    let report = &outcome.report;
    for migration in &outcome.applied {
        tracing::info!(
            version = migration.version,
            description = %migration.description,
            elapsed_ms = migration.elapsed_ms,
            "migration applied"
        );
    }
    let ahead = report.ahead();
    if ahead.is_empty() {
        tracing::info!(
            applied = outcome.applied.len(),
            database_version = report.database_version,
            "migrations applied; the schema is current"
        );
    } else {
        tracing::warn!(
            applied = outcome.applied.len(),
            database_version = report.database_version,
            binary_version = report.binary_version,
            ?ahead,
            "the database is ahead of this binary; its newer migrations were left alone"
        );
    }
    telemetry::flush();
    0
}

/// `migrate status`; prints the table (or JSON) and returns the exit code.
pub async fn status(env: Env, json: bool) -> i32 {
    let Some(config) = config(&env) else {
        return EXIT_FAILURE;
    };
    let target = config.database;
    match migrations::status(&target, migrations::embedded(&target)).await {
        Ok(report) => {
            if json {
                println!("{}", migrations::render_json(&report));
            } else {
                println!("database: {}\n", target.describe());
                print!("{}", migrations::render_table(&report));
            }
            0
        }
        Err(error) => {
            eprintln!("kumiko: migrate status failed: {}", ErrorChain(&error));
            EXIT_FAILURE
        }
    }
}
