//! The status page's API through the real `serve` process: writes need the admin token, changes
//! reach SSE clients, the page renders what the API stores.

mod app_process;

use std::time::Duration;

use app_process::{Connection, get, send, serve};

const TOKEN: &str = "test-admin-token";

#[test]
fn status_page_api_stores_components_and_incidents_and_streams_the_changes() {
    let mut app = serve()
        .env("KUMIKO_ADMIN_TOKEN", TOKEN)
        .env("KUMIKO_LINGER", "0s")
        .spawn();
    app.wait_ready(Duration::from_secs(30));

    let mut events = Connection::open(app.port).unwrap();
    events.send("/api/events").unwrap();
    assert_eq!(events.read_head().unwrap().status, 200);

    let (status, body) = send(
        app.port,
        "POST",
        "/api/components",
        Some(TOKEN),
        r#"{"name":"API","description":"the <api>"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let component: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = component["id"].as_i64().unwrap();

    let (status, body) = send(
        app.port,
        "PUT",
        &format!("/api/components/{id}/status"),
        Some(TOKEN),
        r#"{"status":"degraded"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(
        app.port,
        "POST",
        "/api/incidents",
        Some(TOKEN),
        &format!(r#"{{"title":"Slow responses","impact":"minor","component_id":{id}}}"#),
    );
    assert_eq!(status, 201, "{body}");

    // The SSE client saw the component and the incident.
    let mut seen = String::new();
    while !seen.contains("event: incident") {
        seen.push_str(&events.read_line().unwrap());
    }
    assert!(seen.contains("event: component"), "{seen}");

    let summary: serde_json::Value =
        serde_json::from_str(&get(app.port, "/api/status").unwrap().body).unwrap();
    assert_eq!(summary["overall"], "degraded");
    assert_eq!(summary["open_incidents"][0]["title"], "Slow responses");

    let page = get(app.port, "/").unwrap();
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("<strong>API</strong>: degraded"),
        "{}",
        page.body
    );
    assert!(page.body.contains("Slow responses"));

    assert_eq!(get(app.port, "/api/components/999999").unwrap().status, 404);
    let (status, body) = send(
        app.port,
        "POST",
        "/api/components",
        Some(TOKEN),
        r#"{"name":""}"#,
    );
    assert_eq!(status, 400);
    assert!(body.contains("\"field\":\"name\""), "{body}");

    app.sigterm();
    assert_eq!(
        app.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
}

#[test]
fn writes_are_refused_without_the_admin_token() {
    let mut app = serve().env("KUMIKO_LINGER", "0s").spawn();
    app.wait_ready(Duration::from_secs(30));
    let (status, body) = send(
        app.port,
        "POST",
        "/api/components",
        None,
        r#"{"name":"API"}"#,
    );
    assert_eq!(status, 403);
    assert!(body.contains("KUMIKO_ADMIN_TOKEN"), "{body}");
    assert_eq!(get(app.port, "/api/components").unwrap().body, "[]");
    app.sigterm();
    let _ = app.wait_exit(Duration::from_secs(10));

    let mut app = serve()
        .env("KUMIKO_ADMIN_TOKEN", TOKEN)
        .env("KUMIKO_LINGER", "0s")
        .spawn();
    app.wait_ready(Duration::from_secs(30));
    let (status, _) = send(
        app.port,
        "POST",
        "/api/components",
        Some("wrong"),
        r#"{"name":"API"}"#,
    );
    assert_eq!(status, 401);
    app.sigterm();
    let _ = app.wait_exit(Duration::from_secs(10));
}
