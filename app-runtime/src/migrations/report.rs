//! What the database's migration table says, compared with the migrations this binary carries.
//!
//! [`classify`] is pure: it takes the binary's migrations and the rows the database reports, and
//! decides the state of every version. The I/O that reads those rows lives in
//! [`super::engine`].

use std::collections::BTreeMap;

use serde::Serialize;

/// A migration this binary carries (an "up" migration of the embedded set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownMigration {
    /// The version, from the file name's numeric prefix.
    pub version: i64,
    /// The description, from the rest of the file name.
    pub description: String,
    /// SHA-384 of the SQL, as sqlx computes it.
    pub checksum: Vec<u8>,
}

/// A row of the database's migration table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedRecord {
    /// The version recorded.
    pub version: i64,
    /// The checksum recorded when it was applied.
    pub checksum: Vec<u8>,
}

/// The state of one migration version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationState {
    /// Applied, and the recorded checksum matches the binary's SQL.
    Applied,
    /// Known to the binary, not applied yet.
    Pending,
    /// Applied, but this binary does not know it: the database is ahead of the binary.
    Ahead,
    /// Recorded as failed part-way (`success = false`): needs a repair by hand.
    Dirty,
    /// Applied, but the binary's SQL for this version has a different checksum.
    ChecksumMismatch,
}

impl MigrationState {
    /// The label used in the human-readable table and the JSON output.
    pub fn label(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Pending => "pending",
            Self::Ahead => "ahead",
            Self::Dirty => "dirty",
            Self::ChecksumMismatch => "checksum_mismatch",
        }
    }
}

/// One version and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationEntry {
    /// The version.
    pub version: i64,
    /// The binary's description, or `None` for a version only the database knows.
    pub description: Option<String>,
    /// Its state.
    pub state: MigrationState,
}

/// Every version the binary or the database knows, with its state, in version order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationReport {
    /// One entry per version, ascending.
    pub entries: Vec<MigrationEntry>,
    /// The highest version the binary carries.
    pub binary_version: Option<i64>,
    /// The highest version recorded in the database (any state).
    pub database_version: Option<i64>,
}

impl MigrationReport {
    /// The versions in `state`, ascending.
    pub fn versions_in(&self, state: MigrationState) -> Vec<i64> {
        self.entries
            .iter()
            .filter(|entry| entry.state == state)
            .map(|entry| entry.version)
            .collect()
    }

    /// Versions the binary carries that the database has not applied.
    pub fn pending(&self) -> Vec<i64> {
        self.versions_in(MigrationState::Pending)
    }

    /// Versions the database has applied that the binary does not know.
    pub fn ahead(&self) -> Vec<i64> {
        self.versions_in(MigrationState::Ahead)
    }

    /// Versions recorded as failed part-way.
    pub fn dirty(&self) -> Vec<i64> {
        self.versions_in(MigrationState::Dirty)
    }

    /// Applied versions whose SQL in the binary has changed.
    pub fn checksum_mismatches(&self) -> Vec<i64> {
        self.versions_in(MigrationState::ChecksumMismatch)
    }

    /// True when every version is applied and matches: nothing pending, ahead, dirty or changed.
    pub fn is_up_to_date(&self) -> bool {
        self.entries
            .iter()
            .all(|entry| entry.state == MigrationState::Applied)
    }
}

/// Compares the binary's migrations with the database's rows.
///
/// `dirty_version` is the version the database reports as failed part-way, if any. A dirty
/// version is reported as [`MigrationState::Dirty`] whether or not the binary knows it; that
/// takes precedence over a checksum comparison, since the recorded row describes a failure.
pub fn classify(
    known: &[KnownMigration],
    applied: &[AppliedRecord],
    dirty_version: Option<i64>,
) -> MigrationReport {
    let applied_by_version: BTreeMap<i64, &AppliedRecord> = applied
        .iter()
        .map(|record| (record.version, record))
        .collect();
    let known_by_version: BTreeMap<i64, &KnownMigration> = known
        .iter()
        .map(|migration| (migration.version, migration))
        .collect();

    let mut versions: Vec<i64> = known_by_version
        .keys()
        .chain(applied_by_version.keys())
        .copied()
        .collect();
    versions.sort_unstable();
    versions.dedup();

    let entries = versions
        .into_iter()
        .map(|version| {
            let known = known_by_version.get(&version);
            let applied = applied_by_version.get(&version);
            let state = if dirty_version == Some(version) {
                MigrationState::Dirty
            } else {
                match (known, applied) {
                    (Some(known), Some(applied)) if known.checksum == applied.checksum => {
                        MigrationState::Applied
                    }
                    (Some(_), Some(_)) => MigrationState::ChecksumMismatch,
                    (Some(_), None) => MigrationState::Pending,
                    (None, _) => MigrationState::Ahead,
                }
            };
            MigrationEntry {
                version,
                description: known.map(|known| known.description.clone()),
                state,
            }
        })
        .collect();

    MigrationReport {
        entries,
        binary_version: known_by_version.keys().next_back().copied(),
        database_version: applied_by_version
            .keys()
            .next_back()
            .copied()
            .max(dirty_version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(version: i64, sql: &str) -> KnownMigration {
        KnownMigration {
            version,
            description: format!("migration {version}"),
            checksum: sql.as_bytes().to_vec(),
        }
    }

    fn applied(version: i64, sql: &str) -> AppliedRecord {
        AppliedRecord {
            version,
            checksum: sql.as_bytes().to_vec(),
        }
    }

    #[test]
    fn fresh_database_has_every_migration_pending() {
        let report = classify(&[known(1, "a"), known(2, "b")], &[], None);
        assert_eq!(report.pending(), vec![1, 2]);
        assert_eq!(report.binary_version, Some(2));
        assert_eq!(report.database_version, None);
        assert!(!report.is_up_to_date());
    }

    #[test]
    fn matching_rows_are_applied_and_up_to_date() {
        let report = classify(
            &[known(1, "a"), known(2, "b")],
            &[applied(1, "a"), applied(2, "b")],
            None,
        );
        assert_eq!(report.versions_in(MigrationState::Applied), vec![1, 2]);
        assert!(report.is_up_to_date());
        assert_eq!(report.database_version, Some(2));
    }

    #[test]
    fn database_ahead_reports_unknown_versions_without_description() {
        let report = classify(&[known(1, "a")], &[applied(1, "a"), applied(2, "b")], None);
        assert_eq!(report.ahead(), vec![2]);
        assert_eq!(report.entries[1].description, None);
        assert_eq!(report.binary_version, Some(1));
        assert_eq!(report.database_version, Some(2));
    }

    #[test]
    fn changed_sql_of_an_applied_version_is_a_checksum_mismatch() {
        let report = classify(
            &[known(1, "a"), known(2, "changed")],
            &[applied(1, "a"), applied(2, "b")],
            None,
        );
        assert_eq!(report.checksum_mismatches(), vec![2]);
        assert_eq!(report.versions_in(MigrationState::Applied), vec![1]);
    }

    #[test]
    fn dirty_version_wins_over_checksum_comparison() {
        let report = classify(
            &[known(1, "a"), known(2, "b")],
            &[applied(1, "a"), applied(2, "b")],
            Some(2),
        );
        assert_eq!(report.dirty(), vec![2]);
        assert!(report.checksum_mismatches().is_empty());
    }

    #[test]
    fn mixed_states_are_reported_in_version_order() {
        let report = classify(
            &[known(1, "a"), known(2, "b"), known(4, "d")],
            &[applied(1, "a"), applied(2, "x"), applied(3, "c")],
            None,
        );
        let states: Vec<_> = report
            .entries
            .iter()
            .map(|entry| (entry.version, entry.state))
            .collect();
        assert_eq!(
            states,
            vec![
                (1, MigrationState::Applied),
                (2, MigrationState::ChecksumMismatch),
                (3, MigrationState::Ahead),
                (4, MigrationState::Pending),
            ]
        );
    }
}
