//! Migrations, measured from outside: the real `kumiko-app` against a real Postgres whose schema
//! the test puts into each state (pending, ahead, dirty, checksum mismatch) with migration sets
//! built here from the app's own (`src/bin/kumiko-app/migrations`). The runtime's own set (jobs,
//! cron runs) is recorded in its own table and applied by `prepare` beside the app's.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

mod data_process;

use std::borrow::Cow;
use std::time::Duration;

use data_process::{Database, block_on, run, spawn};
use kumiko_runtime::migrations::{self, MigrationSet};
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The app's (kumiko-app's) Postgres migrations, as the binary embeds them.
static POSTGRES: Migrator = sqlx::migrate!("./src/bin/kumiko-app/migrations/postgres");

/// The app's Postgres migrations up to `version`, plus `extra` ones the binary does not have.
fn migrator(up_to: i64, extra: &[(i64, &str)]) -> Migrator {
    let mut steps: Vec<Migration> = POSTGRES
        .iter()
        .filter(|migration| migration.version <= up_to)
        .cloned()
        .collect();
    for (version, sql) in extra {
        steps.push(Migration::new(
            *version,
            Cow::Owned(format!("newer step {version}")),
            MigrationType::Simple,
            sqlx::AssertSqlSafe((*sql).to_owned()).into_sql_str(),
            false,
        ));
    }
    Migrator::with_migrations(steps)
}

/// Applies the runtime's set and `migrator` as the app's set.
fn prepare(database: &Database, migrator: &Migrator) {
    let target = database.target();
    block_on(migrations::apply_sets(
        &target,
        &[
            migrations::runtime_set(&target),
            MigrationSet::app(migrator),
        ],
    ))
    .expect("prepare the schema");
}

fn execute(database: &Database, sql: &'static str) {
    block_on(async {
        let mut connection = database.connect().await;
        sqlx::raw_sql(sql)
            .execute(&mut connection)
            .await
            .expect(sql);
    });
}

fn migration_rows(database: &Database) -> Vec<(i64, bool)> {
    block_on(async {
        let mut connection = database.connect().await;
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut connection)
            .await
            .unwrap_or_default()
    })
}

fn serve_env(database: &Database, mode: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", database.url.clone()),
        ("KUMIKO_MIGRATIONS_MODE", mode.to_owned()),
        ("KUMIKO_LINGER", "0s".to_owned()),
        ("KUMIKO_STARTUP_TIMEOUT", "30s".to_owned()),
    ]
}

fn status_json(database: &Database) -> serde_json::Value {
    let (code, stdout, stderr) = run(
        &["migrate", "status", "--json"],
        &[("DATABASE_URL", database.url.clone())],
        EXIT_TIMEOUT,
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{error}: {stdout}"))
}

fn states(status: &serde_json::Value) -> Vec<(i64, String)> {
    status["migrations"]
        .as_array()
        .expect("migrations array")
        .iter()
        .map(|entry| {
            (
                entry["version"].as_i64().unwrap(),
                entry["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn an_apps_own_migration_pending_ends_in_schema_drift_error_in_exit_mode() {
    let database = Database::start();
    prepare(&database, &migrator(1, &[]));
    let mut app = spawn(&["serve"], &serve_env(&database, "exit"));
    let status = app
        .wait_exit(EXIT_TIMEOUT)
        .unwrap_or_else(|| panic!("serve kept running:\n{}", app.output()));
    assert_ne!(status.code(), Some(0), "{}", app.output());
    let output = app.output();
    assert!(output.contains("SchemaDriftError"), "{output}");
    assert!(output.contains("pending migration(s) [2]"), "{output}");
    assert!(
        output.contains("migration_check"),
        "names the phase: {output}"
    );
    assert_eq!(
        migration_rows(&database),
        vec![(1, true)],
        "exit mode changes nothing"
    );
}

#[test]
fn pending_migration_boots_in_warn_mode_without_applying_it() {
    let database = Database::start();
    prepare(&database, &migrator(1, &[]));
    let mut app = spawn(&["serve"], &serve_env(&database, "warn"));
    app.wait_ready(READY_TIMEOUT);
    let warning = app
        .log("pending migrations; booting because KUMIKO_MIGRATIONS_MODE=warn: run the `migrate apply` command")
        .unwrap_or_else(|| panic!("no warning:\n{}", app.output()));
    assert_eq!(warning["level"], "WARN");
    assert_eq!(warning["pending"], "[2]");
    assert_eq!(migration_rows(&database), vec![(1, true)]);
    assert_eq!(app.terminate(EXIT_TIMEOUT).and_then(|s| s.code()), Some(0));
}

#[test]
fn pending_migration_is_applied_then_boots_in_apply_mode() {
    let database = Database::start();
    prepare(&database, &migrator(1, &[]));
    let mut app = spawn(&["serve"], &serve_env(&database, "apply"));
    app.wait_ready(READY_TIMEOUT);
    assert_eq!(migration_rows(&database), vec![(1, true), (2, true)]);
    assert_eq!(status_json(&database)["up_to_date"], true);
    assert_eq!(app.terminate(EXIT_TIMEOUT).and_then(|s| s.code()), Some(0));
}

#[test]
fn database_one_migration_ahead_boots_logging_both_versions() {
    let database = Database::start();
    prepare(
        &database,
        &migrator(
            2,
            &[(3, "ALTER TABLE components ADD COLUMN sort_key BIGINT")],
        ),
    );
    let mut app = spawn(&["serve"], &serve_env(&database, "exit"));
    app.wait_ready(READY_TIMEOUT);
    let record = app
        .log("database is ahead of this binary (an older image during a rollout?); booting")
        .unwrap_or_else(|| panic!("no log of the versions:\n{}", app.output()));
    assert_eq!(record["database_version"], 3, "{record}");
    assert_eq!(record["binary_version"], 2, "{record}");
    assert_eq!(app.terminate(EXIT_TIMEOUT).and_then(|s| s.code()), Some(0));
}

#[test]
fn failed_migration_leaves_the_advisory_lock_free_so_a_second_migrate_apply_runs() {
    let database = Database::start();
    // A table in the way makes the app's migration 2 fail (after migration 1 succeeded).
    execute(&database, "CREATE TABLE uptime_rollups (squatter TEXT)");
    let env = [("DATABASE_URL", database.url.clone())];
    let (code, stdout, stderr) = run(&["migrate", "apply"], &env, EXIT_TIMEOUT);
    assert_ne!(code, 0, "{stdout}\n{stderr}");
    assert!(stderr.contains("migration 2 (uptime) failed"), "{stderr}");
    assert_eq!(
        migration_rows(&database),
        vec![(1, true)],
        "migration 2 rolled back"
    );

    // While another session watches: no advisory lock is left behind.
    let locks: i64 = block_on(async {
        let mut connection = database.connect().await;
        sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
            .fetch_one(&mut connection)
            .await
            .unwrap()
    });
    assert_eq!(locks, 0);

    execute(&database, "DROP TABLE uptime_rollups");
    let (code, stdout, stderr) = run(&["migrate", "apply"], &env, EXIT_TIMEOUT);
    assert_eq!(
        code, 0,
        "the second run gets the lock and applies:\n{stdout}\n{stderr}"
    );
    assert_eq!(migration_rows(&database), vec![(1, true), (2, true)]);
}

#[test]
fn migrate_status_output_matches_the_database() {
    let database = Database::start();

    // Fresh: both pending, and status creates nothing.
    let fresh = status_json(&database);
    assert_eq!(
        states(&fresh),
        [(1, "pending".into()), (2, "pending".into())]
    );
    assert_eq!(fresh["database_version"], serde_json::Value::Null);
    assert!(migration_rows(&database).is_empty());

    // 1 applied, 2 pending, 3 ahead.
    prepare(
        &database,
        &migrator(1, &[(3, "CREATE TABLE ahead_of_binary (id BIGINT)")]),
    );
    let mixed = status_json(&database);
    assert_eq!(
        states(&mixed),
        [
            (1, "applied".into()),
            (2, "pending".into()),
            (3, "ahead".into())
        ]
    );
    assert_eq!(mixed["database_version"], 3);
    assert_eq!(mixed["binary_version"], 2);
    assert_eq!(mixed["up_to_date"], false);
    let (code, table, _) = run(
        &["migrate", "status"],
        &[("DATABASE_URL", database.url.clone())],
        EXIT_TIMEOUT,
    );
    assert_eq!(code, 0);
    assert!(table.contains("database: postgres://***@"), "{table}");
    assert!(
        !table.contains(kumiko_testkit::TempPostgres::SUPERUSER_PASSWORD),
        "the password is not printed: {table}"
    );
    let (app_table, runtime_table) = table
        .split_once("runtime migrations (_kumiko_runtime_migrations):")
        .unwrap_or_else(|| panic!("no runtime section: {table}"));
    assert!(
        runtime_table.contains("applied") && runtime_table.contains("jobs"),
        "{table}"
    );
    let rows: Vec<Vec<&str>> = app_table
        .lines()
        .filter(|line| line.starts_with(|c: char| c.is_ascii_digit()))
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["1", "applied", "statuspage"],
            vec!["2", "pending", "uptime"],
            vec!["3", "ahead", "(not", "in", "this", "binary)"],
        ],
        "{table}"
    );
    assert!(
        table.contains("database at 3, binary at 2: 1 applied, 1 pending, 1 ahead, 0 dirty, 0 checksum mismatch"),
        "{table}"
    );

    // 1 dirty, 2 applied with other SQL (checksum mismatch).
    execute(&database, "DELETE FROM _sqlx_migrations WHERE version = 3");
    prepare(&database, &migrator(2, &[]));
    execute(
        &database,
        "UPDATE _sqlx_migrations SET success = false WHERE version = 1; \
         UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = 2",
    );
    let before = migration_rows(&database);
    let broken = status_json(&database);
    assert_eq!(
        states(&broken),
        [(1, "dirty".into()), (2, "checksum_mismatch".into())]
    );
    assert_eq!(broken["summary"]["dirty"], 1);
    assert_eq!(broken["summary"]["checksum_mismatch"], 1);
    assert_eq!(migration_rows(&database), before, "status changes nothing");
}

#[test]
fn dirty_database_refuses_to_boot_even_in_apply_mode() {
    let database = Database::start();
    prepare(&database, &migrator(2, &[]));
    execute(
        &database,
        "UPDATE _sqlx_migrations SET success = false WHERE version = 2",
    );
    let mut app = spawn(&["worker"], &serve_env(&database, "apply"));
    let status = app
        .wait_exit(EXIT_TIMEOUT)
        .unwrap_or_else(|| panic!("worker booted on a dirty database:\n{}", app.output()));
    assert_ne!(status.code(), Some(0));
    let output = app.output();
    assert!(output.contains("dirty at migration 2"), "{output}");
}

#[test]
fn checksum_mismatch_refuses_to_boot_even_in_warn_mode() {
    let database = Database::start();
    prepare(&database, &migrator(2, &[]));
    execute(
        &database,
        "UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = 1",
    );
    let mut app = spawn(&["serve"], &serve_env(&database, "warn"));
    let status = app
        .wait_exit(EXIT_TIMEOUT)
        .unwrap_or_else(|| panic!("serve booted with an edited migration:\n{}", app.output()));
    assert_ne!(status.code(), Some(0));
    let output = app.output();
    assert!(output.contains("checksum mismatch"), "{output}");
    assert!(output.contains("[1]"), "{output}");
}

#[test]
fn the_runtimes_tables_and_an_apps_migration_numbered_the_same_do_not_collide() {
    let database = Database::start();
    let env = [("DATABASE_URL", database.url.clone())];
    let (code, stdout, stderr) = run(&["migrate", "apply"], &env, EXIT_TIMEOUT);
    assert_eq!(code, 0, "{stdout}\n{stderr}");

    // Both sets have a migration 1; each is recorded in its own table.
    assert_eq!(migration_rows(&database), vec![(1, true), (2, true)]);
    let runtime_rows: Vec<(i64, bool)> = block_on(async {
        let mut connection = database.connect().await;
        sqlx::query_as("SELECT version, success FROM _kumiko_runtime_migrations ORDER BY version")
            .fetch_all(&mut connection)
            .await
            .unwrap()
    });
    assert_eq!(runtime_rows, vec![(1, true), (2, true), (3, true)]);
    let status = status_json(&database);
    assert_eq!(status["sets"]["app"]["up_to_date"], true, "{status}");
    assert_eq!(status["sets"]["runtime"]["up_to_date"], true, "{status}");
    assert_eq!(
        status["sets"]["runtime"]["migrations"][0]["description"], "jobs",
        "{status}"
    );
    assert_eq!(
        status["sets"]["app"]["migrations"][0]["description"], "statuspage",
        "{status}"
    );

    // The gate sees both sets current and boots in exit mode.
    let mut app = spawn(&["serve"], &serve_env(&database, "exit"));
    app.wait_ready(READY_TIMEOUT);
    assert_eq!(app.terminate(EXIT_TIMEOUT).and_then(|s| s.code()), Some(0));
}

#[test]
fn a_pending_runtime_migration_refuses_to_boot_in_exit_mode_like_an_apps() {
    let database = Database::start();
    // Only the app's set is applied: the runtime's own migrations are pending.
    block_on(migrations::apply_all(&database.target(), &migrator(2, &[])))
        .expect("apply the app's set");
    let mut app = spawn(&["worker"], &serve_env(&database, "exit"));
    let status = app
        .wait_exit(EXIT_TIMEOUT)
        .unwrap_or_else(|| panic!("worker booted:\n{}", app.output()));
    assert_ne!(status.code(), Some(0));
    let output = app.output();
    assert!(output.contains("SchemaDriftError"), "{output}");
    assert!(
        output.contains("\"set\":\"runtime\""),
        "names the set: {output}"
    );
}
