//! The minimal example app (`examples/minimal.rs`), built on the public API only, runs the whole
//! lifecycle as a real process: boot on SQLite, ready, its route, its queued job on the worker,
//! SIGTERM, drain, exit 0.

mod app_process;

use std::time::Duration;

use app_process::{example, get, send};

const BOOT: Duration = Duration::from_secs(60);
const EXIT: Duration = Duration::from_secs(20);

#[test]
fn minimal_example_boots_on_sqlite_serves_runs_its_jobs_and_drains_on_sigterm() {
    // serve: no database configured, so the embedded SQLite tier (migrations applied at boot).
    let mut api = example("minimal", &["serve"])
        .env("KUMIKO_LINGER", "2s")
        .spawn();
    api.wait_ready(BOOT);
    let ready: serde_json::Value =
        serde_json::from_str(&get(api.port, "/health/ready").unwrap().body).unwrap();
    assert_eq!(ready["state"], "ready", "{ready}");
    assert_eq!(get(api.port, "/health").unwrap().status, 200);
    let (status, body) = send(api.port, "POST", "/greet/ada", None, "");
    assert_eq!(status, 202, "{body}\n{}", api.all_output());

    // The worker shares the SQLite file, runs the queued job and schedules the cron job.
    let mut worker = example("minimal", &["worker"])
        .env("KUMIKO_DATA_DIR", api.data_dir().display().to_string())
        .env("KUMIKO_LINGER", "0s")
        .env("KUMIKO_JOBS_POLL_INTERVAL", "100ms")
        .spawn();
    worker.wait_ready(BOOT);
    assert!(
        worker.wait_for_log(BOOT, |line| line.contains("job succeeded")
            && line.contains("\"kind\":\"greet\"")),
        "the queued job did not run:\n{}",
        worker.all_output()
    );
    assert!(
        worker
            .stdout()
            .iter()
            .any(|line| line.contains("cron scheduler started")
                && line.contains("count-greetings")),
        "{}",
        worker.all_output()
    );

    // The worker's metrics count the job and show its leadership (no Redis: its own leader).
    let metrics = get(worker.port, "/metrics").unwrap().body;
    assert!(
        metrics.contains(r#"kumiko_jobs_total{kind="greet",outcome="succeeded"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("kumiko_scheduler_leader 1"), "{metrics}");

    // SIGTERM: readiness 503 (seen from outside during the API's linger), drain, exit 0, for
    // both processes.
    api.sigterm();
    let deadline = std::time::Instant::now() + EXIT;
    loop {
        let ready = get(api.port, "/health/ready").unwrap();
        if ready.status == 503 {
            assert!(ready.body.contains("draining"), "{}", ready.body);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "readiness never turned 503:\n{}",
            api.all_output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    worker.sigterm();
    // (One signal each: a second one would force the exit.)
    for (name, mut process) in [("serve", api), ("worker", worker)] {
        let status = process
            .wait_exit(EXIT)
            .unwrap_or_else(|| panic!("{name} did not exit:\n{}", process.all_output()));
        assert_eq!(status.code(), Some(0), "{name}:\n{}", process.all_output());
        let logs = process.stdout().join("\n");
        assert!(
            logs.contains("draining: readiness is 503"),
            "{name}: {logs}"
        );
        assert!(logs.contains("\"state\":\"stopped\""), "{name}: {logs}");
    }
}

#[test]
fn minimal_example_migrate_status_lists_its_migration_and_the_runtimes_apart() {
    let mut app = example("minimal", &["migrate", "status", "--json"]).spawn();
    let status = app.wait_exit(EXIT).expect("migrate status exits");
    assert_eq!(status.code(), Some(0), "{}", app.all_output());
    let json: serde_json::Value = serde_json::from_str(&app.stdout().join("\n"))
        .unwrap_or_else(|error| panic!("{error}: {}", app.all_output()));
    assert_eq!(
        json["sets"]["app"]["migrations"][0]["description"],
        "greetings"
    );
    assert_eq!(json["sets"]["app"]["migrations"][0]["state"], "pending");
    assert_eq!(
        json["sets"]["runtime"]["migrations"][0]["description"],
        "jobs"
    );
}
