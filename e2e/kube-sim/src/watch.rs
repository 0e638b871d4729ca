//! Watches: ADDED/MODIFIED/DELETED from a resourceVersion, BOOKMARK when asked for, 410 Gone
//! (an `ERROR` event with a `Status` of code 410, reason `Expired`, as kube-apiserver sends it)
//! when the version is older than the history kept, streaming lists (`sendInitialEvents`), and
//! selector semantics (an object leaving the selector is `DELETED`, entering it `ADDED`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::cluster::{Cluster, EventKind, ListOptions, WatchEvent, matches_selectors, render};
use crate::meta;
use crate::registry::ResourceType;
use crate::status::ApiError;

/// One event on the wire: `{"type": ..., "object": ...}`.
pub type WireEvent = Value;

/// Starts a watch; events arrive on the returned channel until the watch ends.
pub fn start(
    cl: &Arc<Cluster>,
    rt: &ResourceType,
    ns: Option<&str>,
    opts: &ListOptions,
    cut_after: Option<Duration>,
) -> Result<mpsc::Receiver<WireEvent>, ApiError> {
    let (tx, rx) = mpsc::channel::<WireEvent>(1024);
    let key = rt.store_key();
    let ns_filter = ns.map(str::to_string);
    let in_scope = {
        let ns_filter = ns_filter.clone();
        let opts = opts.clone();
        move |obj: &Value| {
            ns_filter
                .as_deref()
                .is_none_or(|n| meta::namespace(obj) == n)
                && matches_selectors(obj, &opts)
        }
    };
    let send_initial = opts.send_initial_events == Some(true);
    if send_initial
        && (!opts.allow_bookmarks || opts.resource_version_match.as_deref() != Some("NotOlderThan"))
    {
        let mut err = ApiError::bad_request(
            "sendInitialEvents is forbidden for watch unless both resourceVersionMatch=NotOlderThan and allowWatchBookmarks=true are set",
        );
        err.code = 422;
        err.reason = "Invalid".into();
        return Err(err);
    }
    let requested_rv = opts
        .resource_version
        .as_deref()
        .filter(|s| !s.is_empty() && *s != "0");
    let mut initial: Vec<WireEvent> = Vec::new();
    let rx_events: broadcast::Receiver<Arc<WatchEvent>>;
    let mut last_rv: u64;
    {
        let state = cl.lock();
        rx_events = cl.events.subscribe();
        last_rv = state.rv;
        match requested_rv {
            Some(rv) if !send_initial => {
                let n: u64 = rv.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version: {rv}"))
                })?;
                if n < state.compacted_rv {
                    let status = ApiError::expired(format!(
                        "too old resource version: {n} ({})",
                        state.compacted_rv + 1
                    ))
                    .to_status();
                    initial.push(json!({"type": "ERROR", "object": status}));
                    drop(state);
                    let _ = tx.try_send(initial.remove(0));
                    return Ok(rx);
                }
                for ev in state.history.iter().filter(|e| e.rv > n && e.key == key) {
                    if let Some(w) = wire(rt, ev, &in_scope) {
                        initial.push(w);
                    }
                }
            }
            _ => {
                // No version, "0", or a streaming list: the current state as ADDED events.
                if let Some(store) = state.store(&key) {
                    for obj in store.values().filter(|o| in_scope(o)) {
                        initial.push(json!({"type": "ADDED", "object": render(rt, obj)}));
                    }
                }
                if send_initial {
                    initial.push(bookmark(rt, state.rv, true));
                }
            }
        }
    }
    let bookmarks = opts.allow_bookmarks;
    let interval = cl.config.bookmark_interval;
    let timeout = opts
        .timeout_seconds
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let deadline = tokio::time::Instant::now() + cut_after.map_or(timeout, |c| c.min(timeout));
    let mut cut = cl.faults.cut_signal();
    let cl_weak = Arc::downgrade(cl);
    let rt = rt.clone();
    tokio::spawn(async move {
        let mut rx_events = rx_events;
        for ev in initial {
            if tx.send(ev).await.is_err() {
                return;
            }
        }
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tokio::select! {
                ev = rx_events.recv() => match ev {
                    Ok(ev) => {
                        if ev.key != key || ev.rv <= last_rv {
                            continue;
                        }
                        last_rv = ev.rv;
                        if let Some(w) = wire(&rt, &ev, &in_scope)
                            && tx.send(w).await.is_err()
                        {
                            return;
                        }
                    }
                    // A watcher too slow to keep up is closed; it resumes from its last version.
                    Err(_) => return,
                },
                _ = tick.tick(), if bookmarks => {
                    let rv = match cl_weak.upgrade() {
                        Some(cl) => cl.resource_version(),
                        None => return,
                    };
                    if tx.send(bookmark(&rt, rv.max(last_rv), false)).await.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return,
                _ = cut.changed() => return,
                _ = tx.closed() => return,
            }
        }
    });
    Ok(rx)
}

fn bookmark(rt: &ResourceType, rv: u64, initial_end: bool) -> WireEvent {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": meta}})
}

/// The wire form of a history event for this watch, if the watch sees it.
fn wire(
    rt: &ResourceType,
    ev: &WatchEvent,
    in_scope: &impl Fn(&Value) -> bool,
) -> Option<WireEvent> {
    let now = in_scope(&ev.object);
    let before = ev.old.as_deref().is_some_and(in_scope);
    let kind = match ev.kind {
        EventKind::Added if now => "ADDED",
        EventKind::Deleted if now || before => "DELETED",
        EventKind::Modified => match (before, now) {
            (true, true) => "MODIFIED",
            (false, true) => "ADDED",
            (true, false) => "DELETED",
            (false, false) => return None,
        },
        _ => return None,
    };
    Some(json!({"type": kind, "object": render(rt, &ev.object)}))
}
