//! The status page's HTTP API (JSON), its SSE stream and a small HTML page.
//!
//! Reads are public. Writes need `Authorization: Bearer $KUMIKO_ADMIN_TOKEN`; without that
//! setting the write API is off (403), so a fresh install never exposes unauthenticated writes.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the status page (HTML) |
//! | `GET /api/status` | overall status, components, open incidents |
//! | `GET /api/components`, `POST /api/components` | list, create |
//! | `GET /api/components/{id}` | one component |
//! | `PUT /api/components/{id}/status` | set its status |
//! | `POST /api/components/{id}/recompute` | queue an uptime recompute for the worker (202) |
//! | `GET /api/incidents?open=true`, `POST /api/incidents` | list, open |
//! | `POST /api/incidents/{id}/resolve` | resolve |
//! | `GET /api/uptime` | the rolled-up uptime per component |
//! | `GET /api/events` | SSE: `hello`, then `component`/`incident` changes and `heartbeat`s; `server_shutdown` when draining starts |
//! | `GET /api/ping` | a bare route (the benchmark's baseline) |
//! | `GET /api/slow?ms=N` | sleeps N ms (only with `KUMIKO_TEST_ROUTES=1`) |

use std::convert::Infallible;
use std::time::Duration;

use crate::statuspage::{self, NewComponent, NewIncident, StatusChange};
use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use futures::{Stream, StreamExt};
use kumiko_runtime::Error;
use kumiko_runtime::db::Pool;
use kumiko_runtime::lifecycle::Lifecycle;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// The longest `/api/slow` sleeps (a request that "never returns" in tests).
const SLOW_MAX: Duration = Duration::from_secs(3600);

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The tier's pool.
    pub pool: Pool,
    /// The process lifecycle (shown in the SSE `hello`).
    pub lifecycle: Lifecycle,
    /// `KUMIKO_INSTANCE_ID`.
    pub instance: String,
    /// Cancelled at shutdown: SSE streams end.
    pub streams: CancellationToken,
    /// Interval between SSE heartbeats.
    pub events_interval: Duration,
    /// Changes, fanned out to every SSE client of this process.
    pub changes: broadcast::Sender<Change>,
    /// The bearer token for writes; `None` turns the write API off.
    pub admin_token: Option<String>,
}

/// A change published on the SSE stream.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Change {
    /// A component was created or changed.
    Component(statuspage::Component),
    /// An incident was opened or resolved.
    Incident(statuspage::Incident),
}

/// The app's routes.
pub fn routes(state: AppState, test_routes: bool) -> Router {
    let mut router = Router::new()
        .route("/", get(page))
        .route("/api/ping", get(ping))
        .route("/api/status", get(status))
        .route(
            "/api/components",
            get(list_components).post(create_component),
        )
        .route("/api/components/{id}", get(get_component))
        .route("/api/components/{id}/status", put(set_status))
        .route("/api/components/{id}/recompute", post(recompute))
        .route("/api/incidents", get(list_incidents).post(create_incident))
        .route("/api/incidents/{id}/resolve", post(resolve_incident))
        .route("/api/uptime", get(uptime))
        .route("/api/events", get(events));
    if test_routes {
        router = router.route("/api/slow", get(slow));
    }
    router.with_state(state)
}

/// An error as the API shows it.
struct ApiError(Error);

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        Self(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self.0 {
            Error::Invalid(fields) => (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({ "error": "invalid input", "fields": fields })),
            )
                .into_response(),
            Error::NotFound { what, id } => (
                StatusCode::NOT_FOUND,
                Json(serde_json::json!({ "error": format!("{what} {id} not found") })),
            )
                .into_response(),
            other => {
                tracing::error!(error = %kumiko_runtime::boot::ErrorChain(&other), "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(serde_json::json!({ "error": "internal error; see the server log" })),
                )
                    .into_response()
            }
        }
    }
}

fn refusal(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// Checks the bearer token of a write. Pure: the configured token and the request's headers.
fn authorize(
    admin_token: Option<&str>,
    headers: &HeaderMap,
) -> Result<(), (StatusCode, &'static str)> {
    let Some(expected) = admin_token else {
        return Err((
            StatusCode::FORBIDDEN,
            "the write API is off; set KUMIKO_ADMIN_TOKEN to turn it on",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err((
            StatusCode::UNAUTHORIZED,
            "send Authorization: Bearer <KUMIKO_ADMIN_TOKEN>",
        ))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn publish(state: &AppState, change: Change) {
    // No subscriber is fine: nobody is watching.
    let _ = state.changes.send(change);
}

async fn ping() -> &'static str {
    "pong"
}

async fn status(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(statuspage::status_summary(&state.pool).await?).into_response())
}

async fn list_components(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(statuspage::list_components(&state.pool).await?).into_response())
}

async fn get_component(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    Ok(Json(statuspage::get_component(&state.pool, id).await?).into_response())
}

async fn create_component(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(input): Json<NewComponent>,
) -> Result<Response, ApiError> {
    if let Err((status, message)) = authorize(state.admin_token.as_deref(), &headers) {
        return Ok(refusal(status, message));
    }
    let component = statuspage::create_component(&state.pool, &input).await?;
    publish(&state, Change::Component(component.clone()));
    Ok((StatusCode::CREATED, Json(component)).into_response())
}

async fn set_status(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Json(input): Json<StatusChange>,
) -> Result<Response, ApiError> {
    if let Err((status, message)) = authorize(state.admin_token.as_deref(), &headers) {
        return Ok(refusal(status, message));
    }
    let component = statuspage::set_component_status(&state.pool, id, &input).await?;
    publish(&state, Change::Component(component.clone()));
    Ok(Json(component).into_response())
}

async fn recompute(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    if let Err((status, message)) = authorize(state.admin_token.as_deref(), &headers) {
        return Ok(refusal(status, message));
    }
    let job = statuspage::request_recompute(&state.pool, id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "job_id": job, "component_id": id })),
    )
        .into_response())
}

#[derive(Debug, serde::Deserialize)]
struct IncidentQuery {
    #[serde(default)]
    open: bool,
}

async fn list_incidents(
    State(state): State<AppState>,
    Query(query): Query<IncidentQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(statuspage::list_incidents(&state.pool, query.open).await?).into_response())
}

async fn create_incident(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(input): Json<NewIncident>,
) -> Result<Response, ApiError> {
    if let Err((status, message)) = authorize(state.admin_token.as_deref(), &headers) {
        return Ok(refusal(status, message));
    }
    let incident = statuspage::create_incident(&state.pool, &input).await?;
    publish(&state, Change::Incident(incident.clone()));
    Ok((StatusCode::CREATED, Json(incident)).into_response())
}

async fn resolve_incident(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    if let Err((status, message)) = authorize(state.admin_token.as_deref(), &headers) {
        return Ok(refusal(status, message));
    }
    let incident = statuspage::resolve_incident(&state.pool, id).await?;
    publish(&state, Change::Incident(incident.clone()));
    Ok(Json(incident).into_response())
}

async fn uptime(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(statuspage::list_uptime(&state.pool).await?).into_response())
}

#[derive(Debug, serde::Deserialize)]
struct SlowQuery {
    ms: Option<u64>,
}

async fn slow(Query(query): Query<SlowQuery>) -> Response {
    let Some(ms) = query.ms else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "ms: missing; use /api/slow?ms=NUMBER (milliseconds)",
        );
    };
    let duration = Duration::from_millis(ms).min(SLOW_MAX);
    tokio::time::sleep(duration).await;
    format!("slept {} ms", duration.as_millis()).into_response()
}

async fn events(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let hello = Event::default().event("hello").data(
        serde_json::json!({
            "instance": state.instance,
            "state": state.lifecycle.state(),
        })
        .to_string(),
    );
    let interval = state.events_interval;
    let heartbeats = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval_at(
        tokio::time::Instant::now() + interval,
        interval,
    ))
    .map(|_| Event::default().event("heartbeat").data("{}"));
    let changes = tokio_stream::wrappers::BroadcastStream::new(state.changes.subscribe())
        // A client too slow to keep up misses changes rather than holding memory.
        .filter_map(|change| async move { change.ok() })
        .map(|change| {
            let name = match change {
                Change::Component(_) => "component",
                Change::Incident(_) => "incident",
            };
            Event::default()
                .event(name)
                .data(serde_json::to_string(&change).unwrap_or_default())
        });
    let events = futures::stream::once(async move { hello })
        .chain(futures::stream::select(heartbeats, changes));
    // At the first SIGTERM: `server_shutdown` with a retry hint, then the end of the stream.
    let stream = kumiko_runtime::sse::until_shutdown(events, state.lifecycle, state.streams);
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn page(State(state): State<AppState>) -> Result<Response, ApiError> {
    let summary = statuspage::status_summary(&state.pool).await?;
    let uptime = statuspage::list_uptime(&state.pool).await?;
    Ok(Html(render_page(&summary, &uptime)).into_response())
}

/// Renders the status page. Pure; every text from the database is escaped.
fn render_page(summary: &statuspage::StatusSummary, uptime: &[statuspage::Uptime]) -> String {
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Status</title></head><body>",
    );
    html.push_str(&format!(
        "<h1>Status: {}</h1><h2>Components</h2><ul>",
        escape(summary.overall.as_str())
    ));
    for component in &summary.components {
        let ratio = uptime
            .iter()
            .find(|u| u.component_id == component.id)
            .and_then(|u| u.ratio)
            .map(|ratio| format!("{:.3}%", ratio * 100.0))
            .unwrap_or_else(|| "no data yet".to_owned());
        html.push_str(&format!(
            "<li><strong>{}</strong>: {} (uptime {})</li>",
            escape(&component.name),
            escape(component.status.as_str()),
            escape(&ratio)
        ));
    }
    html.push_str("</ul><h2>Open incidents</h2><ul>");
    if summary.open_incidents.is_empty() {
        html.push_str("<li>none</li>");
    }
    for incident in &summary.open_incidents {
        html.push_str(&format!(
            "<li><strong>{}</strong> ({}, {}): {}</li>",
            escape(&incident.title),
            escape(incident.impact.as_str()),
            escape(&incident.state),
            escape(&incident.message)
        ));
    }
    html.push_str("</ul></body></html>");
    html
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_off_without_a_token_and_need_the_right_one_with_it() {
        let mut headers = HeaderMap::new();
        let off = authorize(None, &headers).unwrap_err();
        assert_eq!(off.0, StatusCode::FORBIDDEN);
        assert_eq!(
            authorize(Some("s3cret"), &headers).unwrap_err().0,
            StatusCode::UNAUTHORIZED
        );
        headers.insert(header::AUTHORIZATION, "Bearer wrong".parse().unwrap());
        assert!(authorize(Some("s3cret"), &headers).is_err());
        headers.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authorize(Some("s3cret"), &headers).is_ok());
    }

    #[test]
    fn the_page_escapes_what_users_wrote() {
        assert_eq!(escape("<script>&\"'"), "&lt;script&gt;&amp;&quot;&#39;");
    }
}
