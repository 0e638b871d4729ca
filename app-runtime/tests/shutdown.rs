//! The drain-and-linger shutdown, measured from outside: the real binary, real signals, raw
//! HTTP/1.1 over loopback.

mod app_process;

use std::time::{Duration, Instant};

use app_process::{Connection, get, serve};
use nix::sys::signal::Signal;

const BOOT: Duration = Duration::from_secs(30);

#[test]
fn readiness_turns_503_right_after_sigterm() {
    let mut app = serve().env("KUMIKO_LINGER", "3s").spawn();
    app.wait_ready(BOOT);
    assert_eq!(get(app.port, "/health/ready").unwrap().status, 200);

    app.sigterm();
    let sent = Instant::now();
    // Well before the linger ends (3 s), readiness is already 503 and names the state.
    let mut flipped = None;
    while sent.elapsed() < Duration::from_secs(2) {
        let response = get(app.port, "/health/ready").unwrap();
        if response.status == 503 {
            flipped = Some(response);
            break;
        }
    }
    let response = flipped.unwrap_or_else(|| panic!("still 200 after 2 s:\n{}", app.all_output()));
    let body: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(body["state"], "draining");
    assert_eq!(body["status"], "unready");
    assert_eq!(body["checks"][0]["name"], "database");
    // Liveness stays 200 while draining.
    assert_eq!(get(app.port, "/health").unwrap().status, 200);
    assert_eq!(
        app.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
}

#[test]
fn request_in_flight_at_sigterm_completes_with_200() {
    let mut app = serve()
        .env("KUMIKO_LINGER", "300ms")
        .env("KUMIKO_DRAIN_TIMEOUT", "10s")
        .spawn();
    app.wait_ready(BOOT);
    let port = app.port;
    let mut connection = Connection::open(port).unwrap();
    connection.send("/api/slow?ms=1500").unwrap();
    // The request is in flight once the app has started its handler; give it a moment.
    std::thread::sleep(Duration::from_millis(200));
    app.sigterm();
    let response = connection.read_head().unwrap();
    assert_eq!(response.status, 200, "{}", app.all_output());
    assert_eq!(response.header("connection"), Some("close"));
    assert_eq!(
        app.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
}

#[test]
fn responses_during_linger_carry_connection_close() {
    let mut app = serve().env("KUMIKO_LINGER", "2s").spawn();
    app.wait_ready(BOOT);
    // A keep-alive connection opened while ready gets no Connection: close...
    let mut kept = Connection::open(app.port).unwrap();
    let before = kept.get("/api/ping").unwrap();
    assert_eq!(before.status, 200);
    assert_eq!(before.header("connection"), None);

    app.sigterm();
    assert!(app.wait_for_log(Duration::from_secs(2), |line| line.contains("draining")));
    // ...its next response during the linger does, and the server then closes it.
    let during = kept.get("/api/ping").unwrap();
    assert_eq!(
        during.status, 200,
        "the app keeps serving during the linger"
    );
    assert_eq!(during.header("connection"), Some("close"));
    assert!(kept.closed_by_server(Duration::from_secs(1)));
    // New connections during the linger are served too, with Connection: close.
    let fresh = get(app.port, "/api/ping").unwrap();
    assert_eq!(fresh.status, 200);
    assert_eq!(fresh.header("connection"), Some("close"));
    assert_eq!(
        app.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
}

#[test]
fn exits_zero_within_linger_plus_drain_plus_one_second() {
    let linger = Duration::from_millis(300);
    let drain = Duration::from_secs(1);
    let mut app = serve()
        .env("KUMIKO_LINGER", "300ms")
        .env("KUMIKO_DRAIN_TIMEOUT", "1s")
        .spawn();
    app.wait_ready(BOOT);
    let mut busy = Connection::open(app.port).unwrap();
    busy.send("/api/slow?ms=600").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    app.sigterm();
    let sent = Instant::now();
    let status = app
        .wait_exit(linger + drain + Duration::from_secs(1))
        .unwrap_or_else(|| panic!("no exit within linger + drain + 1 s:\n{}", app.all_output()));
    assert_eq!(status.code(), Some(0), "{}", app.all_output());
    assert!(sent.elapsed() >= linger, "it lingered first");
    assert_eq!(busy.read_head().unwrap().status, 200);
}

#[test]
fn handler_that_never_returns_ends_in_exit_1_at_the_shutdown_cap_with_a_warning() {
    let mut app = serve()
        .env("KUMIKO_LINGER", "100ms")
        .env("KUMIKO_DRAIN_TIMEOUT", "60s")
        .env("KUMIKO_SHUTDOWN_TIMEOUT", "1500ms")
        .spawn();
    app.wait_ready(BOOT);
    let mut stuck = Connection::open(app.port).unwrap();
    stuck.send("/api/slow?ms=3600000").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    app.sigterm();
    let sent = Instant::now();
    let status = app
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no exit:\n{}", app.all_output()));
    let took = sent.elapsed();
    assert_eq!(status.code(), Some(1), "{}", app.all_output());
    assert!(
        took >= Duration::from_millis(1500),
        "exited before the cap: {took:?}"
    );
    let warned = app.json_logs().into_iter().any(|line| {
        line["level"] == "WARN"
            && line["message"]
                .as_str()
                .is_some_and(|m| m.contains("shutdown timeout"))
    });
    assert!(warned, "no warning line:\n{}", app.all_output());
}

#[test]
fn second_sigterm_exits_at_once() {
    let mut app = serve().env("KUMIKO_LINGER", "30s").spawn();
    app.wait_ready(BOOT);
    app.sigterm();
    assert!(app.wait_for_log(Duration::from_secs(2), |line| line.contains("draining")));
    app.sigterm();
    let sent = Instant::now();
    let status = app
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no exit after the second signal:\n{}", app.all_output()));
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "took {:?}",
        sent.elapsed()
    );
    assert_eq!(status.code(), Some(1), "a forced exit is not a clean one");
    assert!(
        app.stdout()
            .iter()
            .any(|line| line.contains("second signal"))
    );
}

#[test]
fn open_sse_stream_is_closed_and_does_not_hold_up_the_exit() {
    let mut app = serve()
        .env("KUMIKO_LINGER", "200ms")
        .env("KUMIKO_DRAIN_TIMEOUT", "20s")
        .env("KUMIKO_EVENTS_INTERVAL", "100ms")
        .spawn();
    app.wait_ready(BOOT);
    let mut stream = Connection::open(app.port).unwrap();
    stream.send("/api/events").unwrap();
    let head = stream.read_head().unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    let mut seen = String::new();
    while !seen.contains("event: hello") {
        seen.push_str(&stream.read_line().unwrap());
    }
    app.sigterm();
    let sent = Instant::now();
    // The stream ends (the server closes it) well before the 20 s drain timeout.
    assert!(
        stream.closed_by_server(Duration::from_secs(5)),
        "the stream stayed open"
    );
    let status = app
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no exit:\n{}", app.all_output()));
    assert_eq!(status.code(), Some(0), "{}", app.all_output());
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "took {:?}",
        sent.elapsed()
    );
}

#[test]
fn open_sse_client_receives_server_shutdown_before_its_stream_ends() {
    let mut app = serve()
        .env("KUMIKO_LINGER", "2s")
        .env("KUMIKO_DRAIN_TIMEOUT", "20s")
        .env("KUMIKO_EVENTS_INTERVAL", "10s")
        .spawn();
    app.wait_ready(BOOT);
    let mut stream = Connection::open(app.port).unwrap();
    stream.send("/api/events").unwrap();
    assert_eq!(stream.read_head().unwrap().status, 200);
    let mut seen = String::new();
    while !seen.contains("event: hello") {
        seen.push_str(&stream.read_line().unwrap());
    }
    app.sigterm();
    // The event arrives when draining starts, not at the end of the 2 s linger.
    let sent = Instant::now();
    let mut after = String::new();
    while !after.contains("event: server_shutdown") {
        match stream.read_line() {
            Ok(line) if !line.is_empty() => after.push_str(&line),
            other => panic!(
                "the stream ended without server_shutdown ({other:?}): {after}\n{}",
                app.all_output()
            ),
        }
    }
    while !after.contains("retry:") || !after.contains("\"reason\":\"draining\"") {
        after.push_str(&stream.read_line().unwrap());
    }
    // Ordering, not wall-clock: the event came while the process still lingered (the listener
    // closes only at the end of the 2 s linger).
    assert!(
        !app.stdout()
            .iter()
            .any(|line| line.contains("listener closed")),
        "server_shutdown came only after the linger ({:?}):\n{}",
        sent.elapsed(),
        app.all_output()
    );
    assert!(after.contains("retry: 500"), "{after}");
    // Then the response ends (chunked encoding's last chunk) while the process still lingers.
    let mut ended = false;
    while let Ok(line) = stream.read_line() {
        if line == "0\r\n" {
            ended = true;
            break;
        }
        if line.is_empty() {
            break;
        }
    }
    assert!(ended, "the stream did not end after server_shutdown");
    assert!(
        !app.stdout()
            .iter()
            .any(|line| line.contains("listener closed")),
        "the stream ended only after the linger ({:?}):\n{}",
        sent.elapsed(),
        app.all_output()
    );
    assert_eq!(
        app.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0),
        "{}",
        app.all_output()
    );
}

#[test]
fn sigint_drains_like_sigterm() {
    let mut app = serve().env("KUMIKO_LINGER", "100ms").spawn();
    app.wait_ready(BOOT);
    app.signal(Signal::SIGINT);
    let status = app.wait_exit(Duration::from_secs(10)).unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(app.stdout().iter().any(|line| line.contains("SIGINT")));
    assert!(app.stdout().iter().any(|line| line.contains("\"stopped\"")));
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_responses_during_the_linger_never_carry_connection_close() {
    let mut app = serve().env("KUMIKO_LINGER", "2s").spawn();
    let app = tokio::task::spawn_blocking(move || {
        app.wait_ready(BOOT);
        app
    })
    .await
    .unwrap();
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{}/api/ping", app.port);
    let before = client.get(&url).send().await.unwrap();
    assert_eq!(before.version(), reqwest::Version::HTTP_2);

    app.sigterm();
    let (app, drained) = tokio::task::spawn_blocking(move || {
        let drained = app.wait_for_log(Duration::from_secs(2), |line| line.contains("draining"));
        (app, drained)
    })
    .await
    .unwrap();
    assert!(drained);
    // A new HTTP/2 connection during the linger: served, and no connection-specific header
    // (which HTTP/2 forbids; a client would reject the response).
    let during = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap()
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(during.version(), reqwest::Version::HTTP_2);
    assert_eq!(during.status(), 200);
    assert!(during.headers().get("connection").is_none());
    assert_eq!(during.text().await.unwrap(), "pong");
    let mut app = app;
    let status = tokio::task::spawn_blocking(move || app.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(status.unwrap().code(), Some(0));
}
