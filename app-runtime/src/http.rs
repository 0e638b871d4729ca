//! The API listener: our own accept loop over hyper-util, so shutdown can tell apart "stop
//! accepting" (close the listener), "drain" (wait for in-flight requests) and "close the
//! connections".
//!
//! Every request passes through [`track`]: it counts in-flight requests (until the handler has
//! produced its response) and, once the process is draining, marks HTTP/1 responses
//! `Connection: close` so keep-alive clients reconnect elsewhere (HTTP/2 has no such header; its
//! connections get a GOAWAY when the listener closes). Long-lived streams (SSE) count only until
//! their response starts, so they never hold up the drain; they end when the runtime cancels
//! them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderValue, StatusCode, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::health::Health;
use crate::lifecycle::{Lifecycle, State};

/// Counts requests whose handler has not answered yet.
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

/// Decrements the in-flight count when the request's handler is done (or dropped).
#[derive(Debug)]
pub struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl InFlight {
    /// Counts one request until the guard drops.
    pub fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.clone())
    }

    /// The number of requests in flight.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until no request is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[derive(Clone)]
struct Traffic {
    lifecycle: Lifecycle,
    in_flight: Arc<InFlight>,
}

/// Whether a response to a request of `version` must carry `Connection: close` in `state`.
/// Pure: only HTTP/1 while draining (or later).
pub fn wants_connection_close(state: State, version: Version) -> bool {
    state >= State::Draining
        && matches!(
            version,
            Version::HTTP_09 | Version::HTTP_10 | Version::HTTP_11
        )
}

async fn track(AxumState(traffic): AxumState<Traffic>, request: Request, next: Next) -> Response {
    let version = request.version();
    let guard = traffic.in_flight.enter();
    let mut response = next.run(request).await;
    drop(guard);
    if wants_connection_close(traffic.lifecycle.state(), version) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The runtime's routes: `GET /health` and `GET /health/ready`.
pub fn health_routes(health: Health) -> Router {
    // One shared handle: axum clones a handler per request, so the closures hold an `Arc` (one
    // reference count) rather than the registry's own handles, and answer without an async
    // block of their own.
    let health = Arc::new(health);
    let live = health.clone();
    Router::new()
        .route(
            kumiko_contract::LIVENESS_PATH,
            axum::routing::get(move || std::future::ready(live.liveness())),
        )
        .route(
            kumiko_contract::READINESS_PATH,
            axum::routing::get(move || std::future::ready(health.readiness())),
        )
}

#[derive(Clone, Default)]
pub struct LateRoutes(Arc<std::sync::OnceLock<Router>>);

impl std::fmt::Debug for LateRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LateRoutes")
            .field("installed", &self.0.get().is_some())
            .finish()
    }
}

impl LateRoutes {
    /// Installs the app's routes (once; a second call is ignored).
    pub fn install(&self, router: Router) {
        let _ = self.0.set(router);
    }
}

/// The router a process serves from the start of its boot: `/health`, `/health/ready` and
/// `/metrics`, then the app's routes once installed (503 `starting` before). With `track` the
/// HTTP metrics layer counts every request by route pattern and status.
pub fn boot_router(
    health: Health,
    routes: LateRoutes,
    metrics: crate::metrics::Metrics,
    lifecycle: Lifecycle,
    track: bool,
) -> Router {
    let scrape = metrics.clone();
    let scrape_health = health.clone();
    let mut router = health_routes(health).route(
        kumiko_contract::METRICS_PATH,
        axum::routing::get(move || {
            let metrics = scrape.clone();
            let health = scrape_health.clone();
            let lifecycle = lifecycle.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.render(&lifecycle, &health),
                )
            }
        }),
    );
    if track {
        router = router.layer(crate::metrics::HttpLayer::new(metrics));
    }
    router.fallback(move |request: axum::extract::Request| {
        let routes = routes.clone();
        async move {
            match routes.0.get() {
                Some(router) => {
                    use tower::ServiceExt as _;
                    match router.clone().oneshot(request).await {
                        Ok(response) => response,
                        Err(infallible) => match infallible {},
                    }
                }
                None => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::CONTENT_TYPE, "application/json")],
                    r#"{"error":"starting: the app's routes are served once the boot is done"}"#,
                )
                    .into_response(),
            }
        }
    })
}

/// A bound listener, not yet serving.
#[derive(Debug)]
pub struct Listener {
    listener: TcpListener,
    address: SocketAddr,
}

impl Listener {
    /// Binds `0.0.0.0:port` (port 0: an ephemeral port, see [`Listener::address`]).
    pub async fn bind(port: u16) -> Result<Self, Error> {
        let wanted = SocketAddr::from(([0, 0, 0, 0], port));
        let listener = TcpListener::bind(wanted)
            .await
            .map_err(|source| Error::Bind {
                address: wanted.to_string(),
                source,
            })?;
        let address = listener.local_addr().map_err(|source| Error::Bind {
            address: wanted.to_string(),
            source,
        })?;
        Ok(Self { listener, address })
    }

    /// The address actually bound.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Starts serving `router` (with the traffic layer) until [`Server::close_listener`].
    pub fn serve(self, router: Router, lifecycle: Lifecycle) -> Server {
        let in_flight = Arc::new(InFlight::default());
        let router = router.layer(axum::middleware::from_fn_with_state(
            Traffic {
                lifecycle,
                in_flight: in_flight.clone(),
            },
            track,
        ));
        let stop_accepting = CancellationToken::new();
        let abort_connections = CancellationToken::new();
        let accept = tokio::spawn(accept_loop(
            self.listener,
            router,
            stop_accepting.clone(),
            abort_connections.clone(),
        ));
        Server {
            address: self.address,
            in_flight,
            stop_accepting,
            abort_connections,
            accept: Some(accept),
            closing: None,
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    stop_accepting: CancellationToken,
    abort_connections: CancellationToken,
) -> GracefulShutdown {
    let graceful = GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop_accepting.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, _peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait a moment instead of spinning.
                tracing::warn!(error = %error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let abort = abort_connections.clone();
        tokio::spawn(async move {
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            let connection = watcher.watch(connection);
            tokio::select! {
                _ = connection => {}
                () = abort.cancelled() => {}
            }
        });
    }
    drop(listener);
    graceful
}

/// A serving listener and its connections.
#[derive(Debug)]
pub struct Server {
    address: SocketAddr,
    in_flight: Arc<InFlight>,
    stop_accepting: CancellationToken,
    abort_connections: CancellationToken,
    accept: Option<tokio::task::JoinHandle<GracefulShutdown>>,
    closing: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// The address served.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.count()
    }

    /// Closes the listener (no new connections) and asks every open connection to close once its
    /// current response is done (HTTP/1 idle connections close now; HTTP/2 gets a GOAWAY).
    pub async fn close_listener(&mut self) {
        self.stop_accepting.cancel();
        if let Some(accept) = self.accept.take()
            && let Ok(graceful) = accept.await
        {
            self.closing = Some(tokio::spawn(graceful.shutdown()));
        }
    }

    /// Waits until no request is in flight, for at most `timeout`; returns how many were still
    /// in flight when it gave up (0 when drained).
    pub async fn drain(&self, timeout: Duration) -> usize {
        match tokio::time::timeout(timeout, self.in_flight.wait_idle()).await {
            Ok(()) => 0,
            Err(_) => self.in_flight.count(),
        }
    }

    /// Waits for the connections to close, for at most `timeout`, then drops those left.
    /// Returns whether every connection closed by itself.
    pub async fn close_connections(&mut self, timeout: Duration) -> bool {
        let closed = match self.closing.take() {
            Some(closing) => tokio::time::timeout(timeout, closing).await.is_ok(),
            None => true,
        };
        self.abort_connections.cancel();
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_close_only_on_http1_while_draining() {
        assert!(!wants_connection_close(State::Ready, Version::HTTP_11));
        assert!(wants_connection_close(State::Draining, Version::HTTP_11));
        assert!(wants_connection_close(State::Draining, Version::HTTP_10));
        assert!(!wants_connection_close(State::Draining, Version::HTTP_2));
        assert!(wants_connection_close(State::Stopped, Version::HTTP_11));
    }

    #[tokio::test]
    async fn in_flight_counts_until_the_guard_drops() {
        let in_flight = Arc::new(InFlight::default());
        let guard = in_flight.enter();
        assert_eq!(in_flight.count(), 1);
        let waiter = {
            let in_flight = in_flight.clone();
            tokio::spawn(async move { in_flight.wait_idle().await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished());
        drop(guard);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
