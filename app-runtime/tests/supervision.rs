//! Supervision and control, measured from outside on the lifecycle fixture
//! (`examples/lifecycle_fixture.rs`): a component that panics is noticed at once (readiness names
//! it, the process shuts down cleanly), an app can mark itself temporarily not ready, an app can
//! request its own shutdown, and the Redis connection is closed during the shutdown (seen from the
//! Redis server's client list while the process still runs).

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

mod app_process;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use app_process::{example, get};
use kumiko_testkit::TempRedis;

const BOOT: Duration = Duration::from_secs(60);

fn readiness(port: u16) -> (u16, serde_json::Value) {
    let response = get(port, "/health/ready").unwrap();
    let body = serde_json::from_str(&response.body).unwrap_or(serde_json::Value::Null);
    (response.status, body)
}

#[test]
fn a_panicking_component_makes_readiness_fail_naming_it_and_the_process_exit_cleanly() {
    let mut app = example("lifecycle_fixture", &["serve"])
        .env("KUMIKO_FIXTURE_PANIC_AFTER", "1s")
        .env("KUMIKO_LINGER", "3s")
        .spawn();
    app.wait_ready(BOOT);
    // After the panic, during the linger, readiness is 503 and names the component and why.
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        assert!(
            Instant::now() < deadline,
            "still ready:\n{}",
            app.all_output()
        );
        let (status, body) = readiness(app.port);
        if status == 503 {
            break body;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let check = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|check| check["name"] == "flaky-cache")
        .unwrap_or_else(|| panic!("no flaky-cache check: {body}"))
        .clone();
    assert_eq!(check["status"], "unhealthy", "{body}");
    let message = check["message"].as_str().unwrap();
    assert!(
        message.contains("panicked: flaky-cache lost its backing store"),
        "{body}"
    );
    let status = app
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no exit:\n{}", app.all_output()));
    assert_eq!(status.code(), Some(0), "{}", app.all_output());
    let logs = app.stdout().join("\n");
    assert!(
        logs.contains("component ended before shutdown; shutting down"),
        "{logs}"
    );
    assert!(logs.contains("draining: readiness is 503"), "{logs}");
}

#[test]
fn an_app_can_mark_itself_not_ready_without_leaving_ready() {
    let mut app = example("lifecycle_fixture", &["serve"])
        .env("KUMIKO_FIXTURE_WARM_FOR", "2s")
        .env("KUMIKO_LINGER", "0s")
        .spawn();
    // Ready in its lifecycle, but not ready for traffic while it warms.
    let deadline = Instant::now() + BOOT;
    let body = loop {
        assert!(Instant::now() < deadline, "{}", app.all_output());
        if let Ok(response) = get(app.port, "/health/ready") {
            let body: serde_json::Value = serde_json::from_str(&response.body).unwrap_or_default();
            if body["state"] == "ready" {
                assert_eq!(response.status, 503, "{body}");
                break body;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(body["unavailable"], "warming the cache", "{body}");
    assert_eq!(get(app.port, "/health").unwrap().status, 200);
    // Warm: readiness follows the state and the checks again.
    app.wait_ready(Duration::from_secs(20));
    let (status, body) = readiness(app.port);
    assert_eq!(status, 200, "{body}");
    assert!(body.get("unavailable").is_none(), "{body}");
    app.sigterm();
    assert_eq!(
        app.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0),
        "{}",
        app.all_output()
    );
}

#[test]
fn a_component_that_asked_for_restarts_is_restarted_and_the_process_stays_up() {
    let mut app = example("lifecycle_fixture", &["serve"])
        .env("KUMIKO_FIXTURE_CRASH_ONCE", "1")
        .env("KUMIKO_LINGER", "0s")
        .spawn();
    app.wait_ready(BOOT);
    assert!(
        app.wait_for_log(Duration::from_secs(20), |line| line
            .contains("component ended before shutdown; restarting it")
            && line.contains("panicked: phoenix burns once")),
        "no restart:\n{}",
        app.all_output()
    );
    // While it is down, readiness names it.
    let (status, body) = readiness(app.port);
    assert_eq!(status, 503, "{body}");
    assert!(body.to_string().contains("restarting"), "{body}");
    // Restarted (after its 1 s backoff), not shut down: ready again, still serving.
    app.wait_ready(Duration::from_secs(20));
    assert!(app.try_exit().is_none(), "{}", app.all_output());
    assert!(
        !app.stdout().join("\n").contains("draining"),
        "{}",
        app.all_output()
    );
    app.sigterm();
    assert_eq!(
        app.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0),
        "{}",
        app.all_output()
    );
}

#[test]
fn a_bad_cron_schedule_is_reported_at_boot_validation_with_every_other_error_even_in_serve() {
    // The jobs register before boot validation (phase 6), which checks them with the settings;
    // nothing is registered after it, so `serve` (which never runs jobs) refuses the same
    // description a worker would.
    let mut app = example("lifecycle_fixture", &["serve"])
        .env("KUMIKO_FIXTURE_CRON_AT", "0 25 * * *")
        .env("KUMIKO_FIXTURE_WARM_FOR", "soon")
        .spawn();
    let status = app
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no exit:\n{}", app.all_output()));
    assert_eq!(status.code(), Some(1), "{}", app.all_output());
    let logs = app.json_logs();
    let failure = logs
        .iter()
        .find(|line| line["message"] == "boot failed")
        .unwrap_or_else(|| panic!("no failure line:\n{}", app.all_output()));
    assert_eq!(failure["phase"], "boot_validation", "{failure}");
    let error = failure["error"].as_str().unwrap();
    assert!(error.contains("2 error(s)"), "{error}");
    assert!(error.contains("cron job fixture-cron-at"), "{error}");
    assert!(error.contains("0 25 * * *"), "{error}");
    assert!(error.contains("KUMIKO_FIXTURE_WARM_FOR"), "{error}");
    assert!(!logs.iter().any(|line| line["phase"] == "connect_database"));
}

#[test]
fn an_app_that_requests_shutdown_drains_and_exits_cleanly() {
    let mut app = example("lifecycle_fixture", &["serve"])
        .env("KUMIKO_LINGER", "2s")
        .spawn();
    app.wait_ready(BOOT);
    // The app's own code (a route here) asks; no signal is sent.
    let response = get(app.port, "/stop?reason=fixture-lost-its-license").unwrap();
    assert_eq!(response.status, 200, "{}", app.all_output());
    // Draining: readiness 503 (during the linger), liveness still 200.
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        assert!(
            Instant::now() < deadline,
            "still ready:\n{}",
            app.all_output()
        );
        let (status, body) = readiness(app.port);
        if status == 503 {
            break body;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(body["state"], "draining", "{body}");
    assert_eq!(get(app.port, "/health").unwrap().status, 200);
    let status = app
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no exit:\n{}", app.all_output()));
    assert_eq!(status.code(), Some(0), "{}", app.all_output());
    let logs = app.json_logs();
    let requested = logs
        .iter()
        .find(|line| line["message"] == "shutdown requested")
        .unwrap_or_else(|| panic!("no request line:\n{}", app.all_output()));
    assert_eq!(
        requested["reason"], "fixture-lost-its-license",
        "{requested}"
    );
    let draining = logs
        .iter()
        .find(|line| line["message"] == "draining: readiness is 503")
        .unwrap_or_else(|| panic!("no drain:\n{}", app.all_output()));
    assert_eq!(
        draining["signal"], "shutdown requested by the app",
        "{draining}"
    );
    for step in ["listener closed", "in-flight requests drained", "stopped"] {
        assert!(
            logs.iter().any(|line| line["message"] == step),
            "no {step:?}:\n{}",
            app.all_output()
        );
    }
}

/// A plain RESP connection to the test's Redis server, to look at its clients from the server's
/// side.
struct RedisObserver {
    reader: BufReader<TcpStream>,
    id: String,
}

impl RedisObserver {
    fn connect(redis: &TempRedis) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", redis.port())).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut observer = Self {
            reader: BufReader::new(stream),
            id: String::new(),
        };
        observer.id = observer
            .command("CLIENT ID")
            .trim_start_matches(':')
            .to_owned();
        observer
    }

    /// Sends an inline command; answers an integer reply as `:n` and a bulk string as its text.
    fn command(&mut self, command: &str) -> String {
        write!(self.reader.get_mut(), "{command}\r\n").unwrap();
        let mut head = String::new();
        self.reader.read_line(&mut head).unwrap();
        let head = head.trim_end();
        match head.strip_prefix('$') {
            Some(length) => {
                let length: usize = length.parse().unwrap();
                let mut body = vec![0; length + 2];
                self.reader.read_exact(&mut body).unwrap();
                body.truncate(length);
                String::from_utf8(body).unwrap()
            }
            None => head.to_owned(),
        }
    }

    /// The server's clients other than this observer (`CLIENT LIST` lines).
    fn other_clients(&mut self) -> Vec<String> {
        let own = format!("id={} ", self.id);
        self.command("CLIENT LIST")
            .lines()
            .filter(|line| !line.starts_with(&own))
            .map(str::to_owned)
            .collect()
    }
}

#[test]
fn the_redis_connection_is_closed_on_shutdown() {
    let redis = TempRedis::start().unwrap();
    let mut observer = RedisObserver::connect(&redis);
    assert_eq!(observer.other_clients(), Vec::<String>::new());
    // The holder keeps the database pool's close (the last hook, after the Redis close) waiting
    // 4 s: a window in which the process is alive but its Redis connection should be gone.
    let mut app = example("lifecycle_fixture", &["serve"])
        .env("REDIS_URL", redis.url())
        .env("KUMIKO_LINGER", "0s")
        .env("KUMIKO_FIXTURE_HOLD_DB_AT_SHUTDOWN", "4s")
        .spawn();
    app.wait_ready(BOOT);
    let running = observer.other_clients();
    assert!(!running.is_empty(), "the app has no Redis connection");

    app.sigterm();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let clients = observer.other_clients();
        if clients.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still connected: {clients:?}\n{}",
            app.all_output()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Gone from the server's list while the process still runs (so it is not the exit closing
    // the socket), and before the database pool could close.
    assert!(
        app.try_exit().is_none(),
        "the connection only went away with the process:\n{}",
        app.all_output()
    );
    assert!(
        !app.stdout()
            .iter()
            .any(|line| line.contains("fixture holder released the connection")),
        "{}",
        app.all_output()
    );
    let status = app
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no exit:\n{}", app.all_output()));
    assert_eq!(status.code(), Some(0), "{}", app.all_output());
    let logs = app.stdout().join("\n");
    assert!(logs.contains("redis connection closed"), "{logs}");
    assert!(
        logs.contains("fixture holder released the connection"),
        "{logs}"
    );
}
