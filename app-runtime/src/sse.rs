//! Server-sent events that tell clients about a shutdown.
//!
//! [`until_shutdown`] wraps an app's SSE event stream: when the process starts draining (the first
//! SIGTERM), the stream sends one `server_shutdown` event, with a `retry` hint and then ends, so a
//! browser's `EventSource` reconnects at once, through the load balancer, to an instance that is
//! still ready (seed 001 broadcasts `server_shutdown` the same way before its drain). A stream
//! opened while draining gets the event at once. The runtime's `streams` token (cancelled after
//! the drain) stays the backstop for any stream that did not end.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::Event;
use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::lifecycle::{Lifecycle, State};

/// The reconnection delay sent with `server_shutdown` (the `retry` field of the event).
pub const SHUTDOWN_RETRY: Duration = Duration::from_millis(500);

/// The `server_shutdown` event: `retry` set to `retry`, data `{"reason":"draining","retry_ms":N}`.
pub fn shutdown_event(retry: Duration) -> Event {
    let retry_ms = u64::try_from(retry.as_millis()).unwrap_or(u64::MAX);
    Event::default()
        .event("server_shutdown")
        .retry(retry)
        .data(format!(r#"{{"reason":"draining","retry_ms":{retry_ms}}}"#))
}

/// `events` until the process drains, then one `server_shutdown` event, then the end. Also ends
/// (without the event) when `streams` is cancelled.
pub fn until_shutdown<S>(
    events: S,
    lifecycle: Lifecycle,
    streams: CancellationToken,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static
where
    S: Stream<Item = Event> + Send + 'static,
{
    let draining = {
        let lifecycle = lifecycle.clone();
        async move { lifecycle.reached(State::Draining).await }
    };
    events
        .take_until(draining)
        .chain(futures::stream::once(async {
            shutdown_event(SHUTDOWN_RETRY)
        }))
        .map(Ok)
        .take_until(streams.cancelled_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn draining_sends_server_shutdown_then_ends_the_stream() {
        let lifecycle = Lifecycle::new();
        lifecycle.advance(State::Ready);
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel::<Event>();
        let stream = until_shutdown(
            tokio_stream::wrappers::UnboundedReceiverStream::new(receiver),
            lifecycle.clone(),
            CancellationToken::new(),
        );
        let mut stream = Box::pin(stream);
        sender
            .send(Event::default().event("hello").data("{}"))
            .unwrap();
        assert!(stream.next().await.is_some());
        lifecycle.advance(State::Draining);
        let last = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("the shutdown event comes at once");
        assert!(last.is_some(), "the server_shutdown event");
        let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("the stream ends");
        assert!(end.is_none());
    }
}
