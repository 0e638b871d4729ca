//! Schema migrations: the embedded sets, `migrate apply`, `migrate status` and the boot gate.
//!
//! The binary embeds one migration set per backend (`app-runtime/migrations/postgres` and
//! `app-runtime/migrations/sqlite`). Every operation runs on a [`DedicatedConnection`], never on
//! a pooled one.
//!
//! - [`apply_all`] (the `migrate apply` subcommand, the pre-deploy step) applies pending
//!   migrations under the migration lock and releases the lock on every path.
//! - [`status`] (`migrate status`) compares the database with the binary and changes nothing.
//! - [`boot_gate`] (boot phase 9) decides, by [`MigrationsMode`], whether the process may boot.

mod engine;
mod gate;
mod render;
mod report;

pub use engine::{
    AppliedMigration, ApplyOutcome, DedicatedConnection, MIGRATIONS_TABLE, apply, known_migrations,
    read_report,
};
pub use gate::{GateDecision, SchemaDriftError, decide};
pub use render::{render_json, render_table};
pub use report::{
    AppliedRecord, KnownMigration, MigrationEntry, MigrationReport, MigrationState, classify,
};

use sqlx::migrate::Migrator;

use crate::config::{DatabaseTarget, MigrationsMode};
use crate::error::Error;

/// The Postgres migrations compiled into this binary.
pub static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");

/// The SQLite migrations compiled into this binary.
pub static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");

/// The embedded migration set for `target`'s backend.
pub fn embedded(target: &DatabaseTarget) -> &'static Migrator {
    match target {
        DatabaseTarget::Postgres { .. } => &POSTGRES,
        DatabaseTarget::Sqlite { .. } => &SQLITE,
    }
}

/// `migrate status`: the state of every version, read on a dedicated connection, changing nothing.
pub async fn status(
    target: &DatabaseTarget,
    migrator: &Migrator,
) -> Result<MigrationReport, Error> {
    let mut connection = DedicatedConnection::open(target).await?;
    let report = read_report(&mut connection, migrator).await;
    connection.close().await;
    report
}

/// `migrate apply`: applies pending migrations on a dedicated connection, then closes it.
pub async fn apply_all(
    target: &DatabaseTarget,
    migrator: &Migrator,
) -> Result<ApplyOutcome, Error> {
    let mut connection = DedicatedConnection::open(target).await?;
    let outcome = apply(&mut connection, migrator).await;
    connection.close().await;
    outcome
}

/// What the boot gate found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateOutcome {
    /// The decision taken (after applying, in `apply` mode, the decision on the new state).
    pub decision: GateDecision,
    /// Migrations applied by the gate (only in `apply` mode).
    pub applied: Vec<AppliedMigration>,
    /// The schema state the process boots with.
    pub report: MigrationReport,
}

/// Boot phase 9: checks the schema against `migrator` and decides by `mode`.
///
/// Returns `Ok` when the process may boot (logging pending versions in `warn` mode and both
/// versions when the database is ahead), and [`Error::SchemaDrift`] when it must not: pending
/// migrations in `exit` mode, a dirty database, or a checksum mismatch (in every mode).
pub async fn boot_gate(
    target: &DatabaseTarget,
    migrator: &Migrator,
    mode: MigrationsMode,
) -> Result<GateOutcome, Error> {
    let mut connection = DedicatedConnection::open(target).await?;
    let outcome = run_gate(&mut connection, migrator, mode).await;
    connection.close().await;
    outcome
}

async fn run_gate(
    connection: &mut DedicatedConnection,
    migrator: &Migrator,
    mode: MigrationsMode,
) -> Result<GateOutcome, Error> {
    let report = read_report(connection, migrator).await?;
    let decision = decide(&report, mode);
    let (decision, applied, report) = match decision {
        GateDecision::ApplyThenBoot { pending } => {
            tracing::info!(
                ?pending,
                mode = mode.as_str(),
                "applying pending migrations before boot"
            );
            let outcome = apply(connection, migrator).await?;
            let decision = match decide(&outcome.report, mode) {
                // Applying cannot leave anything pending; if it did, booting would be wrong.
                GateDecision::ApplyThenBoot { pending } => {
                    GateDecision::Refuse(SchemaDriftError::Pending {
                        pending,
                        database_version: outcome.report.database_version,
                        binary_version: outcome.report.binary_version,
                    })
                }
                decision => decision,
            };
            (decision, outcome.applied, outcome.report)
        }
        other => (other, Vec::new(), report),
    };
    log_decision(&decision, &report, mode);
    match decision {
        GateDecision::Refuse(drift) => Err(drift.into()),
        decision => Ok(GateOutcome {
            decision,
            applied,
            report,
        }),
    }
}

fn log_decision(decision: &GateDecision, report: &MigrationReport, mode: MigrationsMode) {
    let database_version = report.database_version;
    let binary_version = report.binary_version;
    match decision {
        GateDecision::Boot => {
            tracing::info!(
                database_version,
                binary_version,
                mode = mode.as_str(),
                "schema is up to date"
            );
        }
        GateDecision::BootAhead { ahead, .. } => tracing::warn!(
            database_version,
            binary_version,
            ?ahead,
            mode = mode.as_str(),
            "database is ahead of this binary (an older image during a rollout?); booting"
        ),
        GateDecision::BootWithPending { pending } => tracing::warn!(
            database_version,
            binary_version,
            ?pending,
            mode = mode.as_str(),
            "pending migrations; booting because KUMIKO_MIGRATIONS_MODE=warn: run `kumiko-app migrate apply`"
        ),
        GateDecision::ApplyThenBoot { pending } => {
            tracing::info!(?pending, mode = mode.as_str(), "pending migrations applied");
        }
        GateDecision::Refuse(drift) => tracing::error!(
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
            assert_eq!(report.pending(), vec![1, 2], "{}", target.describe());
            assert_eq!(report.database_version, None);
            let mut connection = DedicatedConnection::open(target).await.unwrap();
            assert!(
                !connection.migrations_table_exists().await.unwrap(),
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
            let outcome = apply_all(target, embedded(target)).await.unwrap();
            let versions: Vec<i64> = outcome.applied.iter().map(|m| m.version).collect();
            assert_eq!(versions, vec![1, 2], "{}", target.describe());
            assert!(outcome.report.is_up_to_date());
            let again = apply_all(target, embedded(target)).await.unwrap();
            assert!(again.applied.is_empty(), "a second apply has nothing to do");
            let report = status(target, embedded(target)).await.unwrap();
            assert!(report.is_up_to_date(), "{report:?}");
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
        let error = apply(&mut failing, &migrator(&[ONE, BROKEN]))
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
