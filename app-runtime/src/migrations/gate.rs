//! The boot gate's decision: may this process boot against this database's schema?
//!
//! [`decide`] is pure; [`super::boot_gate`] reads the report, acts on the decision and logs it.

use super::report::MigrationReport;
use crate::config::MigrationsMode;

/// The database schema does not match what this binary needs; the process must not boot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaDriftError {
    /// The database is behind the binary and the mode is `exit`.
    #[error(
        "SchemaDriftError: {count} pending migration(s) {versions} (database at {database}, binary at {binary}); \
         run `kumiko-app migrate apply` before starting, or set KUMIKO_MIGRATIONS_MODE=apply",
        count = pending.len(),
        versions = format_versions(pending),
        database = format_version(*database_version),
        binary = format_version(*binary_version),
    )]
    Pending {
        /// The versions not applied yet, ascending.
        pending: Vec<i64>,
        /// The highest version in the database.
        database_version: Option<i64>,
        /// The highest version in the binary.
        binary_version: Option<i64>,
    },
    /// A migration is recorded as failed part-way.
    #[error(
        "SchemaDriftError: the database is dirty at migration {version} (it failed part-way); \
         repair the schema by hand, delete that row from _sqlx_migrations, then run `kumiko-app migrate apply`"
    )]
    Dirty {
        /// The dirty version.
        version: i64,
    },
    /// Applied migrations whose SQL in the binary differs from what was applied.
    #[error(
        "SchemaDriftError: applied migration(s) {versions} differ from this binary's SQL (checksum mismatch); \
         a released migration was edited: restore its original SQL and add a new migration instead",
        versions = format_versions(versions)
    )]
    ChecksumMismatch {
        /// The changed versions, ascending.
        versions: Vec<i64>,
    },
}

fn format_version(version: Option<i64>) -> String {
    version.map_or_else(|| "none".to_owned(), |version| version.to_string())
}

fn format_versions(versions: &[i64]) -> String {
    let list: Vec<String> = versions.iter().map(i64::to_string).collect();
    format!("[{}]", list.join(", "))
}

/// What the boot gate does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateDecision {
    /// The schema is exactly the binary's: boot.
    Boot,
    /// The database is ahead of the binary (an older image during a rollout): boot, logging both
    /// versions.
    BootAhead {
        /// Versions only the database knows.
        ahead: Vec<i64>,
        /// The highest version in the database.
        database_version: Option<i64>,
        /// The highest version in the binary.
        binary_version: Option<i64>,
    },
    /// Pending migrations in `warn` mode: boot with a warning naming them.
    BootWithPending {
        /// The pending versions.
        pending: Vec<i64>,
    },
    /// Pending migrations in `apply` mode: apply them, then boot.
    ApplyThenBoot {
        /// The pending versions.
        pending: Vec<i64>,
    },
    /// Refuse to boot.
    Refuse(SchemaDriftError),
}

/// Decides what the boot gate does with `report` in `mode`.
///
/// A dirty database or a checksum mismatch refuses in every mode; pending migrations follow the
/// mode; a database that is only ahead of the binary boots.
pub fn decide(report: &MigrationReport, mode: MigrationsMode) -> GateDecision {
    if let Some(&version) = report.dirty().first() {
        return GateDecision::Refuse(SchemaDriftError::Dirty { version });
    }
    let mismatched = report.checksum_mismatches();
    if !mismatched.is_empty() {
        return GateDecision::Refuse(SchemaDriftError::ChecksumMismatch {
            versions: mismatched,
        });
    }
    let pending = report.pending();
    if !pending.is_empty() {
        return match mode {
            MigrationsMode::Exit => GateDecision::Refuse(SchemaDriftError::Pending {
                pending,
                database_version: report.database_version,
                binary_version: report.binary_version,
            }),
            MigrationsMode::Warn => GateDecision::BootWithPending { pending },
            MigrationsMode::Apply => GateDecision::ApplyThenBoot { pending },
        };
    }
    let ahead = report.ahead();
    if !ahead.is_empty() {
        return GateDecision::BootAhead {
            ahead,
            database_version: report.database_version,
            binary_version: report.binary_version,
        };
    }
    GateDecision::Boot
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrations::report::{AppliedRecord, KnownMigration, classify};

    fn known(versions: &[i64]) -> Vec<KnownMigration> {
        versions
            .iter()
            .map(|&version| KnownMigration {
                version,
                description: format!("m{version}"),
                checksum: vec![version as u8],
            })
            .collect()
    }

    fn applied(versions: &[i64]) -> Vec<AppliedRecord> {
        versions
            .iter()
            .map(|&version| AppliedRecord {
                version,
                checksum: vec![version as u8],
            })
            .collect()
    }

    const ALL_MODES: [MigrationsMode; 3] = [
        MigrationsMode::Exit,
        MigrationsMode::Warn,
        MigrationsMode::Apply,
    ];

    #[test]
    fn up_to_date_schema_boots_in_every_mode() {
        let report = classify(&known(&[1, 2]), &applied(&[1, 2]), None);
        for mode in ALL_MODES {
            assert_eq!(decide(&report, mode), GateDecision::Boot);
        }
    }

    #[test]
    fn pending_in_exit_mode_is_schema_drift_listing_the_versions() {
        let report = classify(&known(&[1, 2, 3]), &applied(&[1]), None);
        let decision = decide(&report, MigrationsMode::Exit);
        let GateDecision::Refuse(error) = decision else {
            panic!("expected a refusal, got {decision:?}");
        };
        assert_eq!(
            error,
            SchemaDriftError::Pending {
                pending: vec![2, 3],
                database_version: Some(1),
                binary_version: Some(3),
            }
        );
        let message = error.to_string();
        assert!(message.contains("SchemaDriftError"), "{message}");
        assert!(message.contains("[2, 3]"), "{message}");
        assert!(message.contains("migrate apply"), "{message}");
    }

    #[test]
    fn pending_in_warn_mode_boots_with_the_pending_versions() {
        let report = classify(&known(&[1, 2]), &applied(&[1]), None);
        assert_eq!(
            decide(&report, MigrationsMode::Warn),
            GateDecision::BootWithPending { pending: vec![2] }
        );
    }

    #[test]
    fn pending_in_apply_mode_applies_then_boots() {
        let report = classify(&known(&[1, 2]), &[], None);
        assert_eq!(
            decide(&report, MigrationsMode::Apply),
            GateDecision::ApplyThenBoot {
                pending: vec![1, 2]
            }
        );
    }

    #[test]
    fn database_ahead_boots_in_every_mode_with_both_versions() {
        let report = classify(&known(&[1]), &applied(&[1, 2]), None);
        for mode in ALL_MODES {
            assert_eq!(
                decide(&report, mode),
                GateDecision::BootAhead {
                    ahead: vec![2],
                    database_version: Some(2),
                    binary_version: Some(1),
                }
            );
        }
    }

    #[test]
    fn dirty_database_refuses_in_every_mode() {
        let report = classify(&known(&[1, 2]), &applied(&[1, 2]), Some(2));
        for mode in ALL_MODES {
            assert_eq!(
                decide(&report, mode),
                GateDecision::Refuse(SchemaDriftError::Dirty { version: 2 })
            );
        }
    }

    #[test]
    fn checksum_mismatch_refuses_in_every_mode() {
        let mut binary = known(&[1, 2]);
        binary[0].checksum = vec![99];
        let report = classify(&binary, &applied(&[1]), None);
        for mode in ALL_MODES {
            assert_eq!(
                decide(&report, mode),
                GateDecision::Refuse(SchemaDriftError::ChecksumMismatch { versions: vec![1] })
            );
        }
    }
}
