//! Schema migrations: the runtime's own set and an app's set, `migrate apply`, `migrate status`
//! and the boot gate.
//!
//! Two sets, versioned apart: the runtime's own tables (jobs, cron runs; `migrations/` beside
//! this crate's `Cargo.toml`, one directory per backend) are recorded in
//! [`RUNTIME_MIGRATIONS_TABLE`], an app's own migrations in [`MIGRATIONS_TABLE`] (sqlx's default
//! table). An app's migration 1 and the runtime's migration 1 are different rows in different
//! tables, so their numbers never collide. Every operation covers both sets, the runtime's first,
//! and runs on a [`DedicatedConnection`], never on a pooled one.
//!
//! - [`apply_sets`] (the `migrate apply` command, the pre-deploy step) applies pending
//!   migrations of every set under one migration lock and releases the lock on every path.
//! - [`status_sets`] (`migrate status`) compares the database with the binary and changes nothing.
//! - [`gate_sets`] (boot phase 9) decides, by [`MigrationsMode`], whether the process may boot;
//!   the same refusal rules hold for every set (behind: refuse in `exit` mode; ahead: boot and log
//!   both versions; dirty or checksum mismatch: refuse in every mode).

mod engine;
mod gate;
mod render;
mod report;

pub use engine::{
    AppliedMigration, ApplyOutcome, DedicatedConnection, MIGRATIONS_TABLE, MigrationSet, Owner,
    RUNTIME_MIGRATIONS_TABLE, apply, known_migrations, read_report,
};
pub use gate::{GateDecision, SchemaDriftError, decide};
pub use render::{render_json, render_sets_json, render_sets_table, render_table};
pub use report::{
    AppliedRecord, KnownMigration, MigrationEntry, MigrationReport, MigrationState, classify,
};

use sqlx::migrate::Migrator;

use crate::config::{DatabaseTarget, MigrationsMode};
use crate::error::Error;

/// The runtime's own Postgres migrations (jobs, cron runs).
pub static RUNTIME_POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");

/// The runtime's own SQLite migrations (jobs, cron runs).
pub static RUNTIME_SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The runtime's migration set for `target`'s backend.
pub fn runtime_set(target: &DatabaseTarget) -> MigrationSet<'static> {
    MigrationSet::runtime(match target {
        DatabaseTarget::Postgres { .. } => &RUNTIME_POSTGRES,
        DatabaseTarget::Sqlite { .. } => &RUNTIME_SQLITE,
    })
}

/// An app's migrations, one set per backend (`sqlx::migrate!("./migrations/postgres")` and
/// `sqlx::migrate!("./migrations/sqlite")` in the app's crate).
#[derive(Debug, Clone, Copy)]
pub struct AppMigrations {
    /// Run on Postgres (`DATABASE_URL` set).
    pub postgres: &'static Migrator,
    /// Run on the embedded SQLite tier.
    pub sqlite: &'static Migrator,
}

/// A migration set with no migrations (an app that has no tables of its own).
pub static NO_MIGRATIONS: Migrator = Migrator::DEFAULT;

impl AppMigrations {
    /// No migrations of the app's own.
    pub fn none() -> Self {
        Self {
            postgres: &NO_MIGRATIONS,
            sqlite: &NO_MIGRATIONS,
        }
    }

    /// The set for `target`'s backend.
    pub fn for_target(&self, target: &DatabaseTarget) -> MigrationSet<'static> {
        MigrationSet::app(match target {
            DatabaseTarget::Postgres { .. } => self.postgres,
            DatabaseTarget::Sqlite { .. } => self.sqlite,
        })
    }

    /// Every set a process on `target` checks, in apply order: the runtime's, then the app's.
    pub fn sets(&self, target: &DatabaseTarget) -> [MigrationSet<'static>; 2] {
        [runtime_set(target), self.for_target(target)]
    }
}

/// One set's report, for `migrate status` over every set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetReport {
    /// Whose migrations.
    pub owner: Owner,
    /// Their state.
    pub report: MigrationReport,
}

/// `migrate status` of one set: the state of every version, changing nothing.
pub async fn status(
    target: &DatabaseTarget,
    migrator: &Migrator,
) -> Result<MigrationReport, Error> {
    let mut reports = status_sets(target, &[MigrationSet::app(migrator)]).await?;
    Ok(reports.remove(0).report)
}

/// `migrate status` of every set, read on one dedicated connection, changing nothing.
pub async fn status_sets(
    target: &DatabaseTarget,
    sets: &[MigrationSet<'_>],
) -> Result<Vec<SetReport>, Error> {
    let mut connection = DedicatedConnection::open(target).await?;
    let mut reports = Vec::with_capacity(sets.len());
    let mut failure = None;
    for set in sets {
        match read_report(&mut connection, *set).await {
            Ok(report) => reports.push(SetReport {
                owner: set.owner,
                report,
            }),
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    connection.close().await;
    match failure {
        Some(error) => Err(error),
        None => Ok(reports),
    }
}

/// `migrate apply` of one (app) set on a dedicated connection, then closes it.
pub async fn apply_all(
    target: &DatabaseTarget,
    migrator: &Migrator,
) -> Result<ApplyOutcome, Error> {
    let mut outcomes = apply_sets(target, &[MigrationSet::app(migrator)]).await?;
    Ok(outcomes.remove(0))
}

/// `migrate apply` of every set (in order, under one lock) on a dedicated connection.
pub async fn apply_sets(
    target: &DatabaseTarget,
    sets: &[MigrationSet<'_>],
) -> Result<Vec<ApplyOutcome>, Error> {
    let mut connection = DedicatedConnection::open(target).await?;
    let outcome = apply(&mut connection, sets).await;
    connection.close().await;
    outcome
}

/// What the boot gate found and did, for one set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateOutcome {
    /// Whose migrations.
    pub owner: Owner,
    /// The decision taken (after applying, in `apply` mode, the decision on the new state).
    pub decision: GateDecision,
    /// Migrations applied by the gate (only in `apply` mode).
    pub applied: Vec<AppliedMigration>,
    /// The schema state the process boots with.
    pub report: MigrationReport,
}

/// Boot phase 9 for one (app) set; see [`gate_sets`].
pub async fn boot_gate(
    target: &DatabaseTarget,
    migrator: &Migrator,
    mode: MigrationsMode,
) -> Result<GateOutcome, Error> {
    let mut outcomes = gate_sets(target, &[MigrationSet::app(migrator)], mode).await?;
    Ok(outcomes.remove(0))
}

/// Boot phase 9: checks every set against the database and decides by `mode`.
///
/// Returns `Ok` when the process may boot (logging pending versions in `warn` mode and both
/// versions when the database is ahead), and [`Error::SchemaDrift`] when it must not: pending
/// migrations in `exit` mode, a dirty table, or a checksum mismatch (in every mode), in any set.
/// Nothing is applied when any set refuses.
pub async fn gate_sets(
    target: &DatabaseTarget,
    sets: &[MigrationSet<'_>],
    mode: MigrationsMode,
) -> Result<Vec<GateOutcome>, Error> {
    let mut connection = DedicatedConnection::open(target).await?;
    let outcome = run_gate(&mut connection, sets, mode).await;
    connection.close().await;
    outcome
}

async fn run_gate(
    connection: &mut DedicatedConnection,
    sets: &[MigrationSet<'_>],
    mode: MigrationsMode,
) -> Result<Vec<GateOutcome>, Error> {
    let mut outcomes = Vec::with_capacity(sets.len());
    for set in sets {
        let report = read_report(connection, *set).await?;
        outcomes.push(GateOutcome {
            owner: set.owner,
            decision: decide(&report, mode),
            applied: Vec::new(),
            report,
        });
    }
    let refusal = outcomes
        .iter()
        .any(|outcome| matches!(outcome.decision, GateDecision::Refuse(_)));
    let to_apply = outcomes
        .iter()
        .any(|outcome| matches!(outcome.decision, GateDecision::ApplyThenBoot { .. }));
    if to_apply && !refusal {
        for outcome in &outcomes {
            if let GateDecision::ApplyThenBoot { pending } = &outcome.decision {
                tracing::info!(
                    set = outcome.owner.as_str(),
                    ?pending,
                    mode = mode.as_str(),
                    "applying pending migrations before boot"
                );
            }
        }
        let applied = apply(connection, sets).await?;
        outcomes = applied
            .into_iter()
            .map(|applied| {
                let decision = match decide(&applied.report, mode) {
                    // Applying cannot leave anything pending; if it did, booting would be wrong.
                    GateDecision::ApplyThenBoot { pending } => {
                        GateDecision::Refuse(SchemaDriftError::Pending {
                            pending,
                            database_version: applied.report.database_version,
                            binary_version: applied.report.binary_version,
                        })
                    }
                    decision => decision,
                };
                GateOutcome {
                    owner: applied.owner,
                    decision,
                    applied: applied.applied,
                    report: applied.report,
                }
            })
            .collect();
    }
    for outcome in &outcomes {
        log_decision(outcome, mode);
    }
    if let Some(drift) = outcomes.iter().find_map(|outcome| match &outcome.decision {
        GateDecision::Refuse(drift) => Some(drift.clone()),
        GateDecision::Boot
        | GateDecision::BootAhead { .. }
        | GateDecision::BootWithPending { .. }
        | GateDecision::ApplyThenBoot { .. } => None,
    }) {
        return Err(drift.into());
    }
    Ok(outcomes)
}

fn log_decision(outcome: &GateOutcome, mode: MigrationsMode) {
    let set = outcome.owner.as_str();
    let table = outcome.owner.table();
    let database_version = outcome.report.database_version;
    let binary_version = outcome.report.binary_version;
    match &outcome.decision {
        GateDecision::Boot => {
            tracing::info!(
                set,
                table,
                database_version,
                binary_version,
                mode = mode.as_str(),
                "schema is up to date"
            );
        }
        GateDecision::BootAhead { ahead, .. } => tracing::warn!(
            set,
            table,
            database_version,
            binary_version,
            ?ahead,
            mode = mode.as_str(),
            "database is ahead of this binary (an older image during a rollout?); booting"
        ),
        GateDecision::BootWithPending { pending } => tracing::warn!(
            set,
            table,
            database_version,
            binary_version,
            ?pending,
            mode = mode.as_str(),
            "pending migrations; booting because KUMIKO_MIGRATIONS_MODE=warn: run the `migrate apply` command"
        ),
        GateDecision::ApplyThenBoot { pending } => {
            tracing::info!(
                set,
                table,
                ?pending,
                mode = mode.as_str(),
                "pending migrations applied"
            );
        }
        GateDecision::Refuse(drift) => tracing::error!(
            set,
            table,
            database_version,
            binary_version,
            mode = mode.as_str(),
            error = %drift,
            "refusing to boot"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::Duration;

    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType};

    use super::*;
    use crate::config::SecretUrl;

    /// The runtime's own set for `target`.
    fn embedded(target: &DatabaseTarget) -> &'static Migrator {
        runtime_set(target).migrator
    }

    /// A migration set built in the test: versions with their SQL.
    fn migrator(steps: &[(i64, &str)]) -> Migrator {
        Migrator::with_migrations(
            steps
                .iter()
                .map(|(version, sql)| {
                    Migration::new(
                        *version,
                        Cow::Owned(format!("step {version}")),
                        MigrationType::Simple,
                        sqlx::AssertSqlSafe(sql.to_string()).into_sql_str(),
                        false,
                    )
                })
                .collect(),
        )
    }

    const ONE: (i64, &str) = (1, "CREATE TABLE one (id BIGINT PRIMARY KEY)");
    const TWO: (i64, &str) = (2, "CREATE TABLE two (id BIGINT PRIMARY KEY)");
    const BROKEN: (i64, &str) = (
        2,
        "CREATE TABLE two (id BIGINT PRIMARY KEY); SELECT * FROM no_such_table",
    );

    /// A database of each backend: a fresh SQLite file and a throwaway Postgres server.
    struct Databases {
        _dir: tempfile::TempDir,
        _postgres: kumiko_testkit::TempPostgres,
        targets: Vec<DatabaseTarget>,
    }

    fn databases() -> Databases {
        let dir = tempfile::tempdir().unwrap();
        let postgres = kumiko_testkit::TempPostgres::start().unwrap();
        let targets = vec![
            DatabaseTarget::Sqlite {
                path: dir.path().join("data").join("kumiko.db"),
            },
            DatabaseTarget::Postgres {
                url: SecretUrl::new(postgres.superuser_url("postgres")),
            },
        ];
        Databases {
            _dir: dir,
            _postgres: postgres,
            targets,
        }
    }

    async fn execute(target: &DatabaseTarget, sql: &'static str) {
        match DedicatedConnection::open(target).await.unwrap() {
            DedicatedConnection::Postgres(mut connection) => {
                sqlx::raw_sql(sql).execute(&mut connection).await.unwrap();
            }
            DedicatedConnection::Sqlite(mut connection) => {
                sqlx::raw_sql(sql).execute(&mut connection).await.unwrap();
            }
        }
    }

    #[tokio::test]
    async fn status_of_a_fresh_database_is_all_pending_and_creates_nothing() {
        let databases = databases();
        for target in &databases.targets {
            let report = status(target, embedded(target)).await.unwrap();
            assert_eq!(report.pending(), vec![1, 2, 3], "{}", target.describe());
            assert_eq!(report.database_version, None);
            let mut connection = DedicatedConnection::open(target).await.unwrap();
            assert!(
                !connection
                    .migrations_table_exists(MIGRATIONS_TABLE)
                    .await
                    .unwrap(),
                "status must not create the migration table on {}",
                target.describe()
            );
            connection.close().await;
        }
    }

    #[tokio::test]
    async fn embedded_migrations_apply_on_both_backends_and_then_are_up_to_date() {
        let databases = databases();
        for target in &databases.targets {
            let sets = [runtime_set(target)];
            let outcome = apply_sets(target, &sets).await.unwrap().remove(0);
            let versions: Vec<i64> = outcome.applied.iter().map(|m| m.version).collect();
            assert_eq!(versions, vec![1, 2, 3], "{}", target.describe());
            assert!(outcome.report.is_up_to_date());
            let again = apply_sets(target, &sets).await.unwrap().remove(0);
            assert!(again.applied.is_empty(), "a second apply has nothing to do");
            let report = status_sets(target, &sets).await.unwrap().remove(0).report;
            assert!(report.is_up_to_date(), "{report:?}");
        }
    }

    #[tokio::test]
    async fn the_runtimes_tables_and_an_apps_migration_numbered_the_same_do_not_collide() {
        let databases = databases();
        for target in &databases.targets {
            // The app's own migration 1 (and 2), beside the runtime's migration 1.
            let app = migrator(&[ONE, TWO]);
            let sets = [runtime_set(target), MigrationSet::app(&app)];
            let outcomes = apply_sets(target, &sets).await.unwrap();
            let applied: Vec<(Owner, Vec<i64>)> = outcomes
                .iter()
                .map(|o| (o.owner, o.applied.iter().map(|m| m.version).collect()))
                .collect();
            assert_eq!(
                applied,
                vec![(Owner::Runtime, vec![1, 2, 3]), (Owner::App, vec![1, 2])],
                "{}",
                target.describe()
            );
            let reports = status_sets(target, &sets).await.unwrap();
            assert!(
                reports.iter().all(|r| r.report.is_up_to_date()),
                "{reports:?}"
            );
            let outcomes = gate_sets(target, &sets, MigrationsMode::Exit)
                .await
                .unwrap();
            assert!(
                outcomes.iter().all(|o| o.decision == GateDecision::Boot),
                "{outcomes:?}"
            );
            // The app's table holds only the app's rows: the runtime's are in their own table.
            let mut connection = DedicatedConnection::open(target).await.unwrap();
            let app_rows = read_report(&mut connection, MigrationSet::app(&app))
                .await
                .unwrap();
            assert_eq!(app_rows.database_version, Some(2));
            assert!(
                connection
                    .migrations_table_exists(RUNTIME_MIGRATIONS_TABLE)
                    .await
                    .unwrap()
            );
            connection.close().await;
        }
    }

    #[tokio::test]
    async fn a_pending_app_migration_refuses_in_exit_mode_and_applies_nothing_of_either_set() {
        let databases = databases();
        for target in &databases.targets {
            let app = migrator(&[ONE]);
            let error = gate_sets(
                target,
                &[runtime_set(target), MigrationSet::app(&app)],
                MigrationsMode::Exit,
            )
            .await
            .unwrap_err();
            assert!(
                matches!(&error, Error::SchemaDrift(SchemaDriftError::Pending { .. })),
                "{error:?}"
            );
            let reports = status_sets(target, &[runtime_set(target), MigrationSet::app(&app)])
                .await
                .unwrap();
            assert_eq!(reports[0].report.pending(), vec![1, 2, 3]);
            assert_eq!(reports[1].report.pending(), vec![1]);
        }
    }

    #[tokio::test]
    async fn status_reports_applied_pending_ahead_dirty_and_checksum_mismatch() {
        let databases = databases();
        for target in &databases.targets {
            apply_all(
                target,
                &migrator(&[ONE, TWO, (3, "CREATE TABLE three (id BIGINT)")]),
            )
            .await
            .unwrap();
            execute(
                target,
                "UPDATE _sqlx_migrations SET success = false WHERE version = 3",
            )
            .await;
            // The binary: 1 unchanged, 2 edited, 3 unknown... and 4 new.
            let binary = migrator(&[ONE, (2, "CREATE TABLE two (id TEXT)"), (4, "SELECT 1")]);
            let report = status(target, &binary).await.unwrap();
            let states: Vec<_> = report
                .entries
                .iter()
                .map(|e| (e.version, e.state))
                .collect();
            assert_eq!(
                states,
                vec![
                    (1, MigrationState::Applied),
                    (2, MigrationState::ChecksumMismatch),
                    (3, MigrationState::Dirty),
                    (4, MigrationState::Pending),
                ],
                "{}",
                target.describe()
            );
            assert_eq!(report.database_version, Some(3));
            assert_eq!(report.binary_version, Some(4));
        }
    }

    #[tokio::test]
    async fn pending_migration_is_schema_drift_in_exit_mode_and_boots_in_warn_and_apply() {
        let databases = databases();
        for target in &databases.targets {
            apply_all(target, &migrator(&[ONE])).await.unwrap();
            let binary = migrator(&[ONE, TWO]);

            let error = boot_gate(target, &binary, MigrationsMode::Exit)
                .await
                .unwrap_err();
            assert!(
                matches!(
                    &error,
                    Error::SchemaDrift(SchemaDriftError::Pending { pending, .. }) if pending == &vec![2]
                ),
                "{error:?}"
            );

            let warned = boot_gate(target, &binary, MigrationsMode::Warn)
                .await
                .unwrap();
            assert_eq!(
                warned.decision,
                GateDecision::BootWithPending { pending: vec![2] }
            );
            assert_eq!(
                warned.report.pending(),
                vec![2],
                "warn mode changes nothing"
            );

            let applied = boot_gate(target, &binary, MigrationsMode::Apply)
                .await
                .unwrap();
            assert_eq!(applied.decision, GateDecision::Boot);
            assert_eq!(applied.applied.len(), 1);
            assert!(applied.report.is_up_to_date());
        }
    }

    #[tokio::test]
    async fn database_one_migration_ahead_boots_in_every_mode() {
        let databases = databases();
        for target in &databases.targets {
            apply_all(target, &migrator(&[ONE, TWO])).await.unwrap();
            let older_binary = migrator(&[ONE]);
            for mode in [
                MigrationsMode::Exit,
                MigrationsMode::Warn,
                MigrationsMode::Apply,
            ] {
                let outcome = boot_gate(target, &older_binary, mode).await.unwrap();
                assert_eq!(
                    outcome.decision,
                    GateDecision::BootAhead {
                        ahead: vec![2],
                        database_version: Some(2),
                        binary_version: Some(1),
                    }
                );
            }
            // The older image's pre-deploy step succeeds and leaves the newer version alone.
            let outcome = apply_all(target, &older_binary).await.unwrap();
            assert!(outcome.applied.is_empty());
            assert_eq!(outcome.report.ahead(), vec![2]);
        }
    }

    #[tokio::test]
    async fn dirty_database_and_checksum_mismatch_refuse_to_boot_in_every_mode() {
        let databases = databases();
        for target in &databases.targets {
            apply_all(target, &migrator(&[ONE, TWO])).await.unwrap();
            let edited = migrator(&[ONE, (2, "CREATE TABLE two (id TEXT)")]);
            for mode in [
                MigrationsMode::Exit,
                MigrationsMode::Warn,
                MigrationsMode::Apply,
            ] {
                let error = boot_gate(target, &edited, mode).await.unwrap_err();
                assert!(
                    matches!(
                        error,
                        Error::SchemaDrift(SchemaDriftError::ChecksumMismatch { .. })
                    ),
                    "{error:?}"
                );
            }
            let error = apply_all(target, &edited).await.unwrap_err();
            assert!(matches!(
                error,
                Error::SchemaDrift(SchemaDriftError::ChecksumMismatch { .. })
            ));

            execute(
                target,
                "UPDATE _sqlx_migrations SET success = false WHERE version = 2",
            )
            .await;
            let same = migrator(&[ONE, TWO]);
            for mode in [
                MigrationsMode::Exit,
                MigrationsMode::Warn,
                MigrationsMode::Apply,
            ] {
                let error = boot_gate(target, &same, mode).await.unwrap_err();
                assert!(
                    matches!(
                        error,
                        Error::SchemaDrift(SchemaDriftError::Dirty { version: 2 })
                    ),
                    "{error:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn failed_migration_releases_the_advisory_lock_while_its_session_stays_open() {
        let postgres = kumiko_testkit::TempPostgres::start().unwrap();
        let target = DatabaseTarget::Postgres {
            url: SecretUrl::new(postgres.superuser_url("postgres")),
        };
        let mut failing = DedicatedConnection::open(&target).await.unwrap();
        let broken = migrator(&[ONE, BROKEN]);
        let error = apply(&mut failing, &[MigrationSet::app(&broken)])
            .await
            .unwrap_err();
        assert!(
            matches!(error, Error::MigrationFailed { version: 2, .. }),
            "{error:?}"
        );

        // The failed run's session is still open: only an explicit unlock can have freed the lock.
        let DedicatedConnection::Postgres(session) = &mut failing else {
            unreachable!("a Postgres target opens a Postgres session");
        };
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
        )
        .fetch_one(&mut *session)
        .await
        .unwrap();
        assert_eq!(held, 0, "the failed run still holds the advisory lock");

        // A second run on another session gets the lock at once and applies the fixed set.
        let fixed = migrator(&[ONE, TWO]);
        let second = tokio::time::timeout(Duration::from_secs(30), apply_all(&target, &fixed))
            .await
            .expect("the second apply waits for the lock forever")
            .unwrap();
        assert_eq!(
            second.applied.iter().map(|m| m.version).collect::<Vec<_>>(),
            vec![2]
        );
        assert!(second.report.is_up_to_date());
        failing.close().await;
    }
}
