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
pub async fn status(target: &DatabaseTarget, migrator: &Migrator) -> Result<MigrationReport, Error> {
    let mut connection = DedicatedConnection::open(target).await?;
    let report = read_report(&mut connection, migrator).await;
    connection.close().await;
    report
}

/// `migrate apply`: applies pending migrations on a dedicated connection, then closes it.
pub async fn apply_all(target: &DatabaseTarget, migrator: &Migrator) -> Result<ApplyOutcome, Error> {
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
            tracing::info!(?pending, mode = mode.as_str(), "applying pending migrations before boot");
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
            tracing::info!(?database_version, ?binary_version, mode = mode.as_str(), "schema is up to date");
        }
        GateDecision::BootAhead { ahead, .. } => tracing::warn!(
            ?database_version,
            ?binary_version,
            ?ahead,
            mode = mode.as_str(),
            "database is ahead of this binary (an older image during a rollout?); booting"
        ),
        GateDecision::BootWithPending { pending } => tracing::warn!(
            ?database_version,
            ?binary_version,
            ?pending,
            mode = mode.as_str(),
            "pending migrations; booting because KUMIKO_MIGRATIONS_MODE=warn: run `kumiko-app migrate apply`"
        ),
        GateDecision::ApplyThenBoot { pending } => {
            tracing::info!(?pending, mode = mode.as_str(), "pending migrations applied");
        }
        GateDecision::Refuse(drift) => tracing::error!(
            ?database_version,
            ?binary_version,
            mode = mode.as_str(),
            error = %drift,
            "refusing to boot"
        ),
    }
}
