//! `migrate status` output: a table for people (the default) and JSON for tools (`--json`).

use std::fmt::Write as _;

use serde::Serialize;

use super::report::{MigrationEntry, MigrationReport, MigrationState};

/// The description shown for a version only the database knows.
const UNKNOWN_DESCRIPTION: &str = "(not in this binary)";

/// Renders `report` as an aligned table followed by a one-line summary.
pub fn render_table(report: &MigrationReport) -> String {
    let mut out = String::new();
    let version_width = report
        .entries
        .iter()
        .map(|entry| entry.version.to_string().len())
        .chain(std::iter::once("VERSION".len()))
        .max()
        .unwrap_or(7);
    let state_width = "checksum_mismatch".len();
    let _ = writeln!(
        out,
        "{:<version_width$}  {:<state_width$}  DESCRIPTION",
        "VERSION", "STATE"
    );
    for entry in &report.entries {
        let _ = writeln!(
            out,
            "{:<version_width$}  {:<state_width$}  {}",
            entry.version,
            entry.state.label(),
            entry.description.as_deref().unwrap_or(UNKNOWN_DESCRIPTION)
        );
    }
    let summary = Summary::of(report);
    let _ = writeln!(
        out,
        "\ndatabase at {}, binary at {}: {} applied, {} pending, {} ahead, {} dirty, {} checksum mismatch",
        version_label(report.database_version),
        version_label(report.binary_version),
        summary.applied,
        summary.pending,
        summary.ahead,
        summary.dirty,
        summary.checksum_mismatch
    );
    out
}

fn version_label(version: Option<i64>) -> String {
    version.map_or_else(|| "none".to_owned(), |version| version.to_string())
}

/// Counts per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
struct Summary {
    applied: usize,
    pending: usize,
    ahead: usize,
    dirty: usize,
    checksum_mismatch: usize,
}

impl Summary {
    fn of(report: &MigrationReport) -> Self {
        let mut summary = Self::default();
        for entry in &report.entries {
            match entry.state {
                MigrationState::Applied => summary.applied += 1,
                MigrationState::Pending => summary.pending += 1,
                MigrationState::Ahead => summary.ahead += 1,
                MigrationState::Dirty => summary.dirty += 1,
                MigrationState::ChecksumMismatch => summary.checksum_mismatch += 1,
            }
        }
        summary
    }
}

#[derive(Serialize)]
struct JsonStatus<'a> {
    database_version: Option<i64>,
    binary_version: Option<i64>,
    up_to_date: bool,
    summary: Summary,
    migrations: &'a [MigrationEntry],
}

/// Renders `report` as one JSON object:
/// `{database_version, binary_version, up_to_date, summary: {applied, pending, ahead, dirty,
/// checksum_mismatch}, migrations: [{version, description, state}]}`.
pub fn render_json(report: &MigrationReport) -> String {
    let status = JsonStatus {
        database_version: report.database_version,
        binary_version: report.binary_version,
        up_to_date: report.is_up_to_date(),
        summary: Summary::of(report),
        migrations: &report.entries,
    };
    // Serialising plain structs of integers, strings and enums cannot fail.
    serde_json::to_string_pretty(&status)
        .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"))
}

/// Renders every set's report as tables: the app's first (the migrations people write), then the
/// runtime's own, each headed by its migration table.
pub fn render_sets_table(reports: &[super::SetReport]) -> String {
    let mut out = String::new();
    for owner in [super::Owner::App, super::Owner::Runtime] {
        for set in reports.iter().filter(|set| set.owner == owner) {
            if !out.is_empty() {
                out.push('\n');
            }
            let _ = writeln!(out, "{} migrations ({}):", owner.as_str(), owner.table());
            out.push_str(&render_table(&set.report));
        }
    }
    out
}

/// Renders every set's report as one JSON object: the app's report as in [`render_json`] at the
/// top level (tools that read one set keep working), and each set under `sets` keyed by owner
/// (`{"sets": {"app": {...}, "runtime": {...}}}`).
pub fn render_sets_json(reports: &[super::SetReport]) -> String {
    let mut root = serde_json::Map::new();
    let mut sets = serde_json::Map::new();
    for set in reports {
        let value: serde_json::Value =
            serde_json::from_str(&render_json(&set.report)).unwrap_or(serde_json::Value::Null);
        if set.owner == super::Owner::App
            && let serde_json::Value::Object(fields) = &value
        {
            root.extend(fields.clone());
        }
        sets.insert(set.owner.as_str().to_owned(), value);
    }
    root.insert("sets".to_owned(), serde_json::Value::Object(sets));
    serde_json::to_string_pretty(&serde_json::Value::Object(root))
        .unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrations::report::{AppliedRecord, KnownMigration, classify};

    fn mixed_report() -> MigrationReport {
        let known = [(1, "a"), (2, "b"), (4, "d")].map(|(version, sql)| KnownMigration {
            version,
            description: format!("step {version}"),
            checksum: sql.as_bytes().to_vec(),
        });
        let applied = [(1, "a"), (2, "x"), (3, "c")].map(|(version, sql)| AppliedRecord {
            version,
            checksum: sql.as_bytes().to_vec(),
        });
        classify(&known, &applied, None)
    }

    #[test]
    fn table_lists_each_version_with_state_and_summary() {
        let table = render_table(&mixed_report());
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("VERSION"), "{table}");
        assert!(
            lines[1].contains("applied") && lines[1].contains("step 1"),
            "{table}"
        );
        assert!(lines[2].contains("checksum_mismatch"), "{table}");
        assert!(
            lines[3].contains("ahead") && lines[3].contains(UNKNOWN_DESCRIPTION),
            "{table}"
        );
        assert!(
            lines[4].contains("pending") && lines[4].contains("step 4"),
            "{table}"
        );
        assert!(
            table.contains("database at 3, binary at 4: 1 applied, 1 pending, 1 ahead, 0 dirty, 1 checksum mismatch"),
            "{table}"
        );
    }

    #[test]
    fn json_carries_versions_states_and_summary() {
        let json: serde_json::Value =
            serde_json::from_str(&render_json(&mixed_report())).expect("valid JSON");
        assert_eq!(json["database_version"], 3);
        assert_eq!(json["binary_version"], 4);
        assert_eq!(json["up_to_date"], false);
        assert_eq!(json["summary"]["pending"], 1);
        assert_eq!(json["migrations"][2]["state"], "ahead");
        assert_eq!(
            json["migrations"][2]["description"],
            serde_json::Value::Null
        );
        assert_eq!(json["migrations"][1]["state"], "checksum_mismatch");
    }
}
