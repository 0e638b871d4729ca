//! Boot, measured from outside: phases, validation, retries against an unreachable database,
//! and the zero-install SQLite tier.

mod app_process;

use std::time::{Duration, Instant};

use app_process::{get, serve, worker};

#[test]
fn boot_log_shows_all_sixteen_phases_in_order_with_durations() {
    let mut app = serve().spawn();
    app.wait_ready(Duration::from_secs(30));
    // Phase 16 is logged just after the state turns ready: wait for its line, not the probe.
    assert!(
        app.wait_for_log(Duration::from_secs(30), |line| line
            .contains("\"message\":\"boot phase\"")
            && line.contains("\"number\":16")),
        "{}",
        app.all_output()
    );
    let phases: Vec<(u64, String)> = app
        .json_logs()
        .into_iter()
        .filter(|line| line["message"] == "boot phase")
        .map(|line| {
            assert!(line["duration_ms"].is_number(), "{line}");
            (
                line["number"].as_u64().unwrap(),
                line["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let numbers: Vec<u64> = phases.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        numbers,
        (1..=16).collect::<Vec<_>>(),
        "{}",
        app.all_output()
    );
    // Unused phases are recorded as skipped (secrets, Redis without REDIS_URL, search, ...).
    assert_eq!(phases[2].1, "skipped");
    assert_eq!(phases[9].1, "skipped");
    assert_eq!(phases[6].1, "done", "connect database");
    assert_eq!(phases[15].1, "done", "ready");
    app.sigterm();
}

#[test]
fn health_is_200_while_the_database_is_still_being_retried() {
    let port = kumiko_testkit::free_port().unwrap();
    let mut app = serve()
        .env(
            "DATABASE_URL",
            format!("postgres://app:hunter2secret@127.0.0.1:{port}/app"),
        )
        .env("KUMIKO_STARTUP_TIMEOUT", "60s")
        .env("KUMIKO_LINGER", "0s")
        .spawn();
    // Wait until the database phase has failed at least twice, watching from outside.
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        assert!(
            Instant::now() < deadline,
            "no retried database phase on /health/ready:\n{}",
            app.all_output()
        );
        if let Ok(ready) = get(app.port, "/health/ready") {
            assert_eq!(ready.status, 503, "{}", ready.body);
            let body: serde_json::Value = serde_json::from_str(&ready.body).unwrap();
            if body["boot"]["attempt"].as_u64().unwrap_or(0) >= 2 {
                break body;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Liveness never depends on the database.
    let live = get(app.port, "/health").unwrap();
    assert_eq!(live.status, 200, "{}", live.body);
    assert!(live.body.contains("starting"), "{}", live.body);
    assert_eq!(body["state"], "starting", "{body}");
    assert_eq!(body["boot"]["phase"], "connect_database", "{body}");
    assert_eq!(body["boot"]["number"], 7, "{body}");
    let last_error = body["boot"]["last_error"].as_str().unwrap_or_default();
    assert!(last_error.contains("connecting to postgres"), "{body}");
    assert!(!last_error.contains("hunter2secret"), "{body}");
    // The app's routes are not served yet.
    assert_eq!(get(app.port, "/api/ping").unwrap().status, 503);
    app.sigterm();
    assert_eq!(
        app.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0),
        "{}",
        app.all_output()
    );
}

#[test]
fn unreachable_postgres_is_retried_then_exits_at_the_startup_cap_naming_the_phase() {
    let port = kumiko_testkit::free_port().unwrap();
    let mut app = serve()
        .env(
            "DATABASE_URL",
            format!("postgres://app:hunter2secret@127.0.0.1:{port}/app"),
        )
        .env("KUMIKO_STARTUP_TIMEOUT", "2s")
        .spawn();
    let started = Instant::now();
    let status = app
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("no exit:\n{}", app.all_output()));
    let took = started.elapsed();
    assert_ne!(status.code(), Some(0));
    assert!(
        took >= Duration::from_secs(2),
        "gave up before the cap: {took:?}"
    );
    let logs = app.json_logs();
    let retries = logs
        .iter()
        .filter(|line| line["message"] == "boot phase failed, retrying")
        .count();
    assert!(retries >= 2, "expected retries:\n{}", app.all_output());
    let failure = logs
        .iter()
        .find(|line| line["message"] == "boot failed")
        .unwrap_or_else(|| panic!("no failure line:\n{}", app.all_output()));
    assert_eq!(failure["phase"], "connect_database");
    let error = failure["error"].as_str().unwrap();
    assert!(error.contains("phase 7 (connect_database)"), "{error}");
    assert!(error.contains("KUMIKO_STARTUP_TIMEOUT"), "{error}");
    assert!(
        !app.all_output().contains("hunter2secret"),
        "the password leaked into the output"
    );
}

#[test]
fn config_with_three_mistakes_reports_all_three() {
    let mut app = serve()
        .env("KUMIKO_LINGER", "soon")
        .env("KUMIKO_MIGRATIONS_MODE", "maybe")
        .env("KUMIKO_DRAIN_TIMOUT", "5s")
        .spawn();
    let status = app
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("no exit:\n{}", app.all_output()));
    assert_eq!(status.code(), Some(1));
    let logs = app.json_logs();
    let failure = logs
        .iter()
        .find(|line| line["message"] == "boot failed")
        .unwrap_or_else(|| panic!("no failure line:\n{}", app.all_output()));
    assert_eq!(failure["phase"], "boot_validation");
    let error = failure["error"].as_str().unwrap();
    assert!(error.contains("3 error(s)"), "{error}");
    assert!(
        error.contains("KUMIKO_LINGER: `soon` is not a duration"),
        "{error}"
    );
    assert!(error.contains("KUMIKO_MIGRATIONS_MODE: `maybe`"), "{error}");
    assert!(
        error.contains("KUMIKO_DRAIN_TIMOUT: is not a setting of this process; did you mean KUMIKO_DRAIN_TIMEOUT?"),
        "{error}"
    );
    // It never got as far as the database.
    assert!(!logs.iter().any(|line| line["phase"] == "connect_database"));
}

#[test]
fn no_environment_at_all_runs_on_sqlite() {
    let mut app = serve().no_environment().spawn();
    app.wait_ready(Duration::from_secs(30));
    assert_eq!(app.port, 3000, "PORT defaults to 3000");
    assert_eq!(get(app.port, "/api/ping").unwrap().body, "pong");
    let ready = get(app.port, "/health/ready").unwrap();
    assert!(ready.body.contains("\"database\""), "{}", ready.body);
    assert!(
        app.cwd().join("data").join("kumiko.db").exists(),
        "the SQLite file lives under ./data"
    );
    app.sigterm();
    assert_eq!(
        app.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
}

#[test]
fn sigterm_during_boot_stops_without_waiting_for_the_startup_cap() {
    let port = kumiko_testkit::free_port().unwrap();
    let mut app = serve()
        .env(
            "DATABASE_URL",
            format!("postgres://app:pw@127.0.0.1:{port}/app"),
        )
        .env("KUMIKO_STARTUP_TIMEOUT", "60s")
        .spawn();
    assert!(app.wait_for_log(Duration::from_secs(10), |line| {
        line.contains("boot phase failed, retrying")
    }));
    app.sigterm();
    let sent = Instant::now();
    let status = app
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no exit:\n{}", app.all_output()));
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "took {:?}",
        sent.elapsed()
    );
    assert_eq!(status.code(), Some(0), "{}", app.all_output());
    assert!(
        app.stdout()
            .iter()
            .any(|line| line.contains("stopping during boot"))
    );
}

/// The operator gives `spec.env` to every process type, so each accepts the other's settings.
#[test]
fn one_environment_boots_both_process_types() {
    let shared = [
        ("KUMIKO_JOBS_POLL_INTERVAL", "500ms"),
        ("KUMIKO_JOB_TIMEOUT", "5s"),
        ("KUMIKO_EVENTS_INTERVAL", "5s"),
        ("KUMIKO_ADMIN_TOKEN", "not-a-real-token"),
    ];
    let mut api = serve();
    let mut background = worker();
    for (key, value) in shared {
        api = api.env(key, value);
        background = background.env(key, value);
    }
    let mut api = api.spawn();
    let mut background = background.spawn();
    api.wait_ready(Duration::from_secs(30));
    background.wait_ready(Duration::from_secs(30));
    for mut app in [api, background] {
        app.sigterm();
        assert_eq!(
            app.wait_exit(Duration::from_secs(10)).unwrap().code(),
            Some(0),
            "{}",
            app.all_output()
        );
    }
}
