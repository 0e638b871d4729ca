//! The operator's HTTP endpoints: `/metrics`, `/healthz` (alive), `/readyz` (watching, as leader
//! or as a follower ready to take over).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::metrics::Metrics;
use crate::Error;

/// What the endpoints read.
#[derive(Clone)]
pub struct Probes {
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Set once the process can do its work (connected; leading or standing by).
    pub ready: Arc<AtomicBool>,
}

async fn metrics(State(probes): State<Probes>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        probes.metrics.encode(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(probes): State<Probes>) -> impl IntoResponse {
    if probes.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

/// The router.
pub fn router(probes: Probes) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(probes)
}

/// Binds `addr` (fails at once if it cannot), and returns the address bound (with port 0, the
/// one the system chose) and the server, which serves until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    probes: Probes,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl Future<Output = Result<(), Error>>), Error> {
    let bind_error = |source| Error::Http {
        addr: addr.to_string(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    Ok((bound, async move {
        axum::serve(listener, router(probes))
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| Error::Http {
                addr: bound.to_string(),
                source,
            })
    }))
}
