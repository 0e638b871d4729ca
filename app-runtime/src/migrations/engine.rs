//! The I/O side of migrations: a dedicated connection, reading the migration table, applying.
//!
//! Everything here goes through sqlx's [`Migrate`] trait, so the same code serves Postgres and
//! SQLite. The only backend-specific query is the read-only check whether the migration table
//! exists, so that `migrate status` and the boot gate never create it.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection;
use sqlx::migrate::{Migrate, MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::SqliteConnection;

use super::gate::SchemaDriftError;
use super::report::{AppliedRecord, KnownMigration, MigrationReport, classify};
use crate::config::DatabaseTarget;
use crate::error::Error;

/// The table an app's own migrations are recorded in (sqlx's default, so `sqlx migrate` and
/// other tools read it as usual).
pub const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// The table the runtime's own migrations (jobs, cron runs) are recorded in: apart from the app's,
/// so the two sets are versioned independently and their version numbers never collide.
pub const RUNTIME_MIGRATIONS_TABLE: &str = "_kumiko_runtime_migrations";

/// Whose migrations a set holds; each owner has its own migration table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Owner {
    /// The runtime's own tables (jobs, cron runs), recorded in [`RUNTIME_MIGRATIONS_TABLE`].
    Runtime,
    /// The app's tables, recorded in [`MIGRATIONS_TABLE`].
    App,
}

impl Owner {
    /// The table this owner's migrations are recorded in.
    pub fn table(self) -> &'static str {
        match self {
            Self::Runtime => RUNTIME_MIGRATIONS_TABLE,
            Self::App => MIGRATIONS_TABLE,
        }
    }

    /// The owner's name in logs and `migrate status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Runtime => "runtime",
            Self::App => "app",
        }
    }
}

/// One migration set and its owner (which decides the table it is recorded in).
#[derive(Debug, Clone, Copy)]
pub struct MigrationSet<'a> {
    /// Whose migrations these are.
    pub owner: Owner,
    /// The migrations.
    pub migrator: &'a Migrator,
}

impl<'a> MigrationSet<'a> {
    /// An app's migrations (recorded in [`MIGRATIONS_TABLE`]).
    pub fn app(migrator: &'a Migrator) -> Self {
        Self {
            owner: Owner::App,
            migrator,
        }
    }

    /// The runtime's migrations (recorded in [`RUNTIME_MIGRATIONS_TABLE`]).
    pub fn runtime(migrator: &'a Migrator) -> Self {
        Self {
            owner: Owner::Runtime,
            migrator,
        }
    }
}

/// A connection opened for migrations only, never taken from (or returned to) a pool.
///
/// Postgres advisory locks belong to the session: on a pooled connection a lock left behind by a
/// failed run would outlive the run. This connection is closed when the run ends.
pub enum DedicatedConnection {
    /// A Postgres session.
    Postgres(PgConnection),
    /// An SQLite connection.
    Sqlite(SqliteConnection),
}

impl DedicatedConnection {
    /// Opens a new connection to `target`. For SQLite, the file (and its directory) is created
    /// when missing, as the embedded tier starts from nothing.
    pub async fn open(target: &DatabaseTarget) -> Result<Self, Error> {
        let connect_error = |source: sqlx::Error| Error::Connect {
            target: target.describe(),
            transient: !matches!(source, sqlx::Error::Configuration(_)),
            source,
        };
        match target {
            DatabaseTarget::Postgres { url } => {
                let options = PgConnectOptions::from_str(url.expose()).map_err(connect_error)?;
                PgConnection::connect_with(&options)
                    .await
                    .map(Self::Postgres)
                    .map_err(connect_error)
            }
            DatabaseTarget::Sqlite { path } => {
                let options = crate::db::sqlite_options(path)?;
                SqliteConnection::connect_with(&options)
                    .await
                    .map(Self::Sqlite)
                    .map_err(connect_error)
            }
        }
    }

    /// The connection as sqlx's migration driver.
    pub fn migrate(&mut self) -> &mut (dyn Migrate + Send) {
        match self {
            Self::Postgres(connection) => connection,
            Self::Sqlite(connection) => connection,
        }
    }

    /// Whether the migration table `table` exists, without creating it.
    pub async fn migrations_table_exists(&mut self, table: &str) -> Result<bool, Error> {
        let exists = match self {
            Self::Postgres(connection) => {
                sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
                    .bind(table)
                    .fetch_one(connection)
                    .await
            }
            Self::Sqlite(connection) => sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1)",
            )
            .bind(table)
            .fetch_one(connection)
            .await,
        };
        exists.map_err(|source| Error::Database {
            action: "checking whether the migration table exists",
            source,
        })
    }

    /// Closes the connection, ending the session (and any lock it still held).
    pub async fn close(self) {
        let closed = match self {
            Self::Postgres(connection) => connection.close().await,
            Self::Sqlite(connection) => connection.close().await,
        };
        if let Err(error) = closed {
            tracing::warn!(%error, "closing the migration connection failed; the server ends the session");
        }
    }
}

/// The "up" migrations of `migrator`, as the report compares them.
pub fn known_migrations(migrator: &Migrator) -> Vec<KnownMigration> {
    migrator
        .iter()
        .filter(|migration| !migration.migration_type.is_down_migration())
        .map(|migration| KnownMigration {
            version: migration.version,
            description: migration.description.to_string(),
            checksum: migration.checksum.to_vec(),
        })
        .collect()
}

fn migrate_error(action: &'static str) -> impl FnOnce(MigrateError) -> Error {
    move |source| Error::Migrate { action, source }
}

/// Reads the set's migration table and compares it with the set, changing nothing.
pub async fn read_report(
    connection: &mut DedicatedConnection,
    set: MigrationSet<'_>,
) -> Result<MigrationReport, Error> {
    let table = set.owner.table();
    let known = known_migrations(set.migrator);
    if !connection.migrations_table_exists(table).await? {
        return Ok(classify(&known, &[], None));
    }
    let migrate = connection.migrate();
    let dirty = migrate
        .dirty_version(table)
        .await
        .map_err(migrate_error("reading the dirty migration version"))?;
    let applied = applied_records(migrate, table).await?;
    Ok(classify(&known, &applied, dirty))
}

async fn applied_records(
    migrate: &mut (dyn Migrate + Send),
    table: &str,
) -> Result<Vec<AppliedRecord>, Error> {
    Ok(migrate
        .list_applied_migrations(table)
        .await
        .map_err(migrate_error("listing the applied migrations"))?
        .into_iter()
        .map(|applied| AppliedRecord {
            version: applied.version,
            checksum: applied.checksum.to_vec(),
        })
        .collect())
}

/// One migration `apply` ran.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AppliedMigration {
    /// Its version.
    pub version: i64,
    /// Its description.
    pub description: String,
    /// How long it took, in milliseconds.
    pub elapsed_ms: u64,
}

/// The result of a successful `apply`, for one set.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApplyOutcome {
    /// Whose migrations these were.
    pub owner: Owner,
    /// The migrations applied by this run, in order (empty when there was nothing to do).
    pub applied: Vec<AppliedMigration>,
    /// The report after the run.
    pub report: MigrationReport,
}

/// Applies every pending migration of every set, in the order given (the runtime's first), all
/// under one migration lock.
///
/// The lock (a Postgres advisory lock, one per database, so it covers every set; SQLite
/// serialises writers itself) is released on every path, including a failed migration. A dirty
/// table or a checksum mismatch in any set stops the run before anything is applied. Versions
/// only the database knows (it is ahead) are left alone: an older image's pre-deploy step during a
/// rollback succeeds without touching them.
pub async fn apply(
    connection: &mut DedicatedConnection,
    sets: &[MigrationSet<'_>],
) -> Result<Vec<ApplyOutcome>, Error> {
    let migrate = connection.migrate();
    migrate
        .lock()
        .await
        .map_err(migrate_error("taking the migration lock"))?;
    let result = apply_pending_sets(migrate, sets).await;
    let unlocked = migrate
        .unlock()
        .await
        .map_err(migrate_error("releasing the migration lock"));
    let applied = match (result, unlocked) {
        (Ok(applied), Ok(())) => applied,
        (Err(error), Ok(())) => return Err(error),
        (Ok(_), Err(unlock_error)) => return Err(unlock_error),
        (Err(error), Err(unlock_error)) => {
            // The run's own error is the one to report; closing the connection ends the session
            // and with it the lock.
            tracing::warn!(error = %unlock_error, "releasing the migration lock after a failure failed");
            return Err(error);
        }
    };
    let mut outcomes = Vec::with_capacity(sets.len());
    for (set, applied) in sets.iter().zip(applied) {
        let report = read_report(connection, *set).await?;
        outcomes.push(ApplyOutcome {
            owner: set.owner,
            applied,
            report,
        });
    }
    Ok(outcomes)
}

/// Checks every set first (a dirty table or a checksum mismatch anywhere stops the run before
/// anything is applied), then applies each set's pending migrations in order.
async fn apply_pending_sets(
    migrate: &mut (dyn Migrate + Send),
    sets: &[MigrationSet<'_>],
) -> Result<Vec<Vec<AppliedMigration>>, Error> {
    let mut pending_per_set = Vec::with_capacity(sets.len());
    for set in sets {
        pending_per_set.push(check_before_apply(migrate, *set).await?);
    }
    let mut done = Vec::with_capacity(sets.len());
    for (set, pending) in sets.iter().zip(pending_per_set) {
        done.push(apply_pending(migrate, *set, &pending).await?);
    }
    Ok(done)
}

/// Creates the set's table when missing, refuses a dirty table or a checksum mismatch, and
/// returns the pending versions.
async fn check_before_apply(
    migrate: &mut (dyn Migrate + Send),
    set: MigrationSet<'_>,
) -> Result<Vec<i64>, Error> {
    let table = set.owner.table();
    migrate
        .ensure_migrations_table(table)
        .await
        .map_err(migrate_error("creating the migration table"))?;
    let dirty = migrate
        .dirty_version(table)
        .await
        .map_err(migrate_error("reading the dirty migration version"))?;
    if let Some(version) = dirty {
        return Err(SchemaDriftError::Dirty { version }.into());
    }
    let applied = applied_records(migrate, table).await?;
    let report = classify(&known_migrations(set.migrator), &applied, None);
    let mismatched = report.checksum_mismatches();
    if !mismatched.is_empty() {
        return Err(SchemaDriftError::ChecksumMismatch {
            versions: mismatched,
        }
        .into());
    }
    Ok(report.pending())
}

async fn apply_pending(
    migrate: &mut (dyn Migrate + Send),
    set: MigrationSet<'_>,
    pending: &[i64],
) -> Result<Vec<AppliedMigration>, Error> {
    let table = set.owner.table();
    let migrator = set.migrator;
    let mut done = Vec::with_capacity(pending.len());
    for migration in migrator.iter().filter(|migration| {
        !migration.migration_type.is_down_migration() && pending.contains(&migration.version)
    }) {
        tracing::info!(
            set = set.owner.as_str(),
            version = migration.version,
            description = %migration.description,
            "applying migration"
        );
        let elapsed =
            migrate
                .apply(table, migration)
                .await
                .map_err(|source| Error::MigrationFailed {
                    version: migration.version,
                    description: migration.description.to_string(),
                    source,
                })?;
        done.push(AppliedMigration {
            version: migration.version,
            description: migration.description.to_string(),
            elapsed_ms: duration_ms(elapsed),
        });
    }
    Ok(done)
}

fn duration_ms(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}
