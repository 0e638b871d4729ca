//! The reference app's two releases on one database, as the demo's upgrade from `kumiko-app:dev`
//! to `kumiko-app:v2` runs them: `kumiko-app-v2 migrate apply` (the migrate Job) applies exactly
//! its one more migration, and the first release still boots and serves against the newer schema
//! (its old pods keep serving while and after the Job runs). On the embedded SQLite tier, which
//! runs the same migration engine as Postgres.

mod app_process;

use std::time::Duration;

use app_process::{get, program};

const BOOT: Duration = Duration::from_secs(60);
const EXIT: Duration = Duration::from_secs(30);

const FIRST: &str = env!("CARGO_BIN_EXE_kumiko-app");
const SECOND: &str = env!("CARGO_BIN_EXE_kumiko-app-v2");

/// Runs `binary args` on the SQLite database in `data_dir` to its end; its stdout.
fn run(binary: &str, args: &[&str], data_dir: &std::path::Path) -> String {
    let mut process = program(binary, args)
        .env("KUMIKO_DATA_DIR", data_dir.display().to_string())
        .spawn();
    let status = process.wait_exit(EXIT).unwrap_or_else(|| {
        panic!(
            "`{binary} {args:?}` did not exit:\n{}",
            process.all_output()
        )
    });
    assert_eq!(
        status.code(),
        Some(0),
        "`{binary} {args:?}`:\n{}",
        process.all_output()
    );
    process.stdout().join("\n")
}

/// The app set's migrations in `migrate status --json`: (version, description, state).
fn app_migrations(status: &str) -> Vec<(i64, String, String)> {
    let json: serde_json::Value =
        serde_json::from_str(status).unwrap_or_else(|error| panic!("{error}: {status}"));
    json["sets"]["app"]["migrations"]
        .as_array()
        .unwrap_or_else(|| panic!("no app migrations: {json}"))
        .iter()
        .map(|migration| {
            (
                migration["version"].as_i64().unwrap_or_default(),
                migration["description"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                migration["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn the_second_release_applies_one_more_migration_and_the_first_keeps_serving_on_its_schema() {
    let data = tempfile::tempdir().unwrap();
    run(FIRST, &["migrate", "apply"], data.path());
    let before = app_migrations(&run(SECOND, &["migrate", "status", "--json"], data.path()));
    assert_eq!(
        before
            .iter()
            .map(|(v, _, state)| (*v, state.as_str()))
            .collect::<Vec<_>>(),
        [(1, "applied"), (2, "applied"), (3, "pending")],
        "the second release sees the first's migrations applied and its own pending: {before:?}"
    );
    assert_eq!(before[2].1, "incidents by component");

    run(SECOND, &["migrate", "apply"], data.path());
    let after = app_migrations(&run(SECOND, &["migrate", "status", "--json"], data.path()));
    assert!(
        after.iter().all(|(_, _, state)| state == "applied") && after.len() == 3,
        "every migration of the second release is applied: {after:?}"
    );

    // The first release boots against the database one migration ahead and serves.
    let mut api = program(FIRST, &["serve"])
        .env("KUMIKO_DATA_DIR", data.path().display().to_string())
        .env("KUMIKO_LINGER", "0s")
        .spawn();
    api.wait_ready(BOOT);
    let page = get(api.port, "/").unwrap();
    assert_eq!(page.status, 200, "{}", api.all_output());
}

#[test]
fn the_second_release_names_itself_in_its_version() {
    let data = tempfile::tempdir().unwrap();
    let first = run(FIRST, &["--version"], data.path());
    let second = run(SECOND, &["--version"], data.path());
    assert!(second.ends_with("-v2"), "{second}");
    assert_eq!(
        second.trim_end_matches("-v2"),
        first,
        "the same program otherwise"
    );
}
