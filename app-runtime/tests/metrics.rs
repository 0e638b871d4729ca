//! `GET /metrics`, measured from outside on the real `kumiko-app`: requests by route and status,
//! the lifecycle state, the boot phases and the checks, in the Prometheus text format.

mod app_process;

use std::time::Duration;

use app_process::{get, serve};

#[test]
fn metrics_show_requests_by_route_and_status_the_state_the_boot_phases_and_the_checks() {
    let mut app = serve().env("KUMIKO_LINGER", "0s").spawn();
    app.wait_ready(Duration::from_secs(30));
    for _ in 0..3 {
        assert_eq!(get(app.port, "/api/ping").unwrap().status, 200);
    }
    assert_eq!(get(app.port, "/api/components/999").unwrap().status, 404);
    let response = get(app.port, "/metrics").unwrap();
    assert_eq!(response.status, 200);
    let text = response.body;
    for expected in [
        r#"kumiko_http_requests_total{route="/api/ping",status="200"} 3"#,
        r#"kumiko_http_requests_total{route="/api/components/{id}",status="404"} 1"#,
        r#"kumiko_lifecycle_state{state="ready"} 1"#,
        r#"kumiko_lifecycle_state{state="draining"} 0"#,
        r#"kumiko_boot_phase_duration_seconds{phase="connect_database"}"#,
        r#"kumiko_boot_phase_duration_seconds{phase="migration_check"}"#,
        r#"kumiko_health_check_up{check="database"} 1"#,
        r#"kumiko_health_check_latency_seconds{check="database"}"#,
        r#"kumiko_http_request_duration_seconds_bucket{le="#,
    ] {
        assert!(text.contains(expected), "missing {expected}:\n{text}");
    }
    app.sigterm();
    assert_eq!(
        app.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
}

#[test]
fn with_kumiko_metrics_off_requests_are_not_counted() {
    let mut app = serve()
        .env("KUMIKO_LINGER", "0s")
        .env("KUMIKO_METRICS", "off")
        .spawn();
    app.wait_ready(Duration::from_secs(30));
    assert_eq!(get(app.port, "/api/ping").unwrap().status, 200);
    let text = get(app.port, "/metrics").unwrap().body;
    assert!(!text.contains("kumiko_http_requests_total{"), "{text}");
    assert!(
        text.contains(r#"kumiko_lifecycle_state{state="ready"} 1"#),
        "{text}"
    );
    app.sigterm();
    assert_eq!(
        app.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
}
