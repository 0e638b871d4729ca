//! Boot phases every process type of the app runs the same way.

use std::time::Duration;

use kumiko_runtime::boot::{BootError, Phase, PhaseError, PhasePolicy};
use kumiko_runtime::migrations;
use kumiko_runtime::runtime::Runtime;

/// How long phase 9 may take to read the migration state (and apply it in `apply` mode).
const MIGRATION_CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// Phase 9: the boot gate for the embedded migrations, per `KUMIKO_MIGRATIONS_MODE`.
pub async fn check_migrations(runtime: &mut Runtime) -> Result<(), BootError> {
    let target = runtime.config.database.clone();
    let mode = runtime.config.migrations_mode;
    runtime
        .boot
        .run(
            Phase::MigrationCheck,
            PhasePolicy::exit(MIGRATION_CHECK_TIMEOUT),
            || {
                let target = target.clone();
                async move {
                    migrations::boot_gate(&target, migrations::embedded(&target), mode)
                        .await
                        .map(drop)
                        .map_err(PhaseError::from)
                }
            },
        )
        .await
        .map(drop)
}
