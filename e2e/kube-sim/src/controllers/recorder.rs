//! Events as client-go's event recorder writes them (`k8s.io/client-go/tools/record`), for the
//! simulated kubelet and scheduler.
//!
//! Rules followed (client-go `tools/record/events_cache.go`):
//! - an Event is a core/v1 `Event` named `<object name>.<hex nanoseconds>` in the object's
//!   namespace, with `involvedObject` (its `fieldPath` naming the container, e.g.
//!   `spec.containers{app}`), `source` and `reportingComponent`/`reportingInstance`, `count: 1`
//!   and `firstTimestamp` = `lastTimestamp`;
//! - the same Event again (same object, type, reason, message and source) is not written anew:
//!   the existing one gets `count + 1` and a new `lastTimestamp` (the `EventCorrelator`'s
//!   de-duplication);
//! - a spam filter per (source, object, reason, message) lets a burst of 25 through and then one
//!   every five minutes (`EventSourceObjectSpamFilter`: `defaultSpamBurst`, `defaultSpamQPS`);
//!   what it holds back is dropped.
//!
//! Writes go through the API as any client's do, from one task, in the order recorded.
//! The correlator remembers at most [`CACHE_SIZE`] Events (client-go: 4096, LRU), forgetting the
//! oldest.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::mpsc;

use super::FIELD_MANAGER;
use super::pods::now;

/// How many Events the correlator remembers.
pub const CACHE_SIZE: usize = 4096;
/// The spam filter's burst.
const SPAM_BURST: f64 = 25.0;
/// The spam filter's refill: one token per five minutes.
const SPAM_REFILL: Duration = Duration::from_secs(300);

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// `Normal`.
    Normal,
    /// `Warning`.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Who records: `kubelet` on node `kube-sim`, or `default-scheduler`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Source {
    /// `source.component` and `reportingComponent`.
    pub component: String,
    /// `source.host` (the node; empty for the scheduler) .
    pub host: String,
    /// `reportingInstance`.
    pub instance: String,
}

impl Source {
    /// The kubelet of `node`.
    pub fn kubelet(node: &str) -> Self {
        Source {
            component: "kubelet".to_owned(),
            host: node.to_owned(),
            instance: node.to_owned(),
        }
    }

    /// The scheduler.
    pub fn scheduler() -> Self {
        Source {
            component: "default-scheduler".to_owned(),
            host: String::new(),
            instance: "default-scheduler-kube-sim".to_owned(),
        }
    }
}

/// The object an Event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Involved {
    /// `Pod`.
    pub kind: String,
    /// `v1`.
    pub api_version: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// `spec.containers{NAME}` or empty.
    pub field_path: String,
}

impl Involved {
    /// A pod, or one of its containers (`container`: `spec.containers{NAME}` or
    /// `spec.initContainers{NAME}`).
    pub fn pod(pod: &Pod, field_path: Option<String>) -> Self {
        Involved {
            kind: "Pod".to_owned(),
            api_version: "v1".to_owned(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            field_path: field_path.unwrap_or_default(),
        }
    }
}

/// One Event to record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Record {
    /// Who.
    pub source: Source,
    /// About what.
    pub involved: Involved,
    /// `Normal` or `Warning`.
    pub type_: EventType,
    /// `Pulled`, `Unhealthy`, ...
    pub reason: String,
    /// The message.
    pub message: String,
}

/// What the correlator decides for a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Create a new Event with this name.
    Create {
        /// `<object>.<hex>`.
        name: String,
    },
    /// Bump the count of Event `name` to `count`.
    Bump {
        /// The existing Event.
        name: String,
        /// The new count.
        count: i32,
        /// When it was first seen (kept).
        first: String,
    },
    /// Held back by the spam filter.
    Drop,
}

struct Seen {
    name: String,
    count: i32,
    first: String,
    tokens: f64,
    refilled: Instant,
    used: u64,
}

/// The de-duplication and spam filtering of client-go's `EventCorrelator`, without I/O.
#[derive(Default)]
pub struct Correlator {
    seen: HashMap<Record, Seen>,
    clock: u64,
}

impl Correlator {
    /// Decides what to write for `record` at `at` (`name_suffix`: a unique hex suffix for a new
    /// Event's name, `timestamp`: the time as written).
    pub fn observe(
        &mut self,
        record: &Record,
        at: Instant,
        name_suffix: &str,
        timestamp: &str,
    ) -> Decision {
        self.clock += 1;
        let clock = self.clock;
        if let Some(seen) = self.seen.get_mut(record) {
            let refill = at.saturating_duration_since(seen.refilled).as_secs_f64()
                / SPAM_REFILL.as_secs_f64();
            if refill > 0.0 {
                seen.tokens = (seen.tokens + refill).min(SPAM_BURST);
                seen.refilled = at;
            }
            seen.used = clock;
            if seen.tokens < 1.0 {
                return Decision::Drop;
            }
            seen.tokens -= 1.0;
            seen.count += 1;
            return Decision::Bump {
                name: seen.name.clone(),
                count: seen.count,
                first: seen.first.clone(),
            };
        }
        if self.seen.len() >= CACHE_SIZE
            && let Some(oldest) = self
                .seen
                .iter()
                .min_by_key(|(_, seen)| seen.used)
                .map(|(key, _)| key.clone())
        {
            self.seen.remove(&oldest);
        }
        let name = format!("{}.{name_suffix}", record.involved.name);
        self.seen.insert(
            record.clone(),
            Seen {
                name: name.clone(),
                count: 1,
                first: timestamp.to_owned(),
                tokens: SPAM_BURST - 1.0,
                refilled: at,
                used: clock,
            },
        );
        Decision::Create { name }
    }

    /// Forgets an Event whose write failed, so the next one creates it again.
    pub fn forget(&mut self, record: &Record) {
        self.seen.remove(record);
    }
}

/// The Event object for `record`.
pub fn event_object(record: &Record, name: &str, count: i32, first: &str, last: &str) -> Event {
    let involved = &record.involved;
    let mut reference = json!({
        "kind": involved.kind,
        "apiVersion": involved.api_version,
        "namespace": involved.namespace,
        "name": involved.name,
        "uid": involved.uid,
    });
    if !involved.field_path.is_empty() {
        reference["fieldPath"] = json!(involved.field_path);
    }
    let mut source = json!({"component": record.source.component});
    if !record.source.host.is_empty() {
        source["host"] = json!(record.source.host);
    }
    let value = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": involved.namespace},
        "involvedObject": reference,
        "reason": record.reason,
        "message": record.message,
        "type": record.type_.as_str(),
        "source": source,
        "firstTimestamp": first,
        "lastTimestamp": last,
        "count": count,
        "reportingComponent": record.source.component,
        "reportingInstance": record.source.instance,
    });
    serde_json::from_value(value).unwrap_or_default()
}

/// Records Events through the API, from one task. Clones share it.
#[derive(Clone)]
pub struct Recorder {
    sender: Option<mpsc::UnboundedSender<Record>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Recorder {
    /// A recorder that writes nothing (instant mode, unit tests).
    pub fn disabled() -> Self {
        Recorder { sender: None }
    }

    /// A recorder writing through `client`; its task ends when every clone is dropped.
    pub fn start(client: kube::Client) -> (Self, tokio::task::JoinHandle<()>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let task = tokio::spawn(write_events(client, receiver));
        (
            Recorder {
                sender: Some(sender),
            },
            task,
        )
    }

    /// Records one Event (non-blocking).
    pub fn record(
        &self,
        source: &Source,
        involved: &Involved,
        type_: EventType,
        reason: &str,
        message: impl Into<String>,
    ) {
        if let Some(sender) = &self.sender {
            let _ = sender.send(Record {
                source: source.clone(),
                involved: involved.clone(),
                type_,
                reason: reason.to_owned(),
                message: message.into(),
            });
        }
    }
}

fn timestamp_text() -> String {
    let now = now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

async fn write_events(client: kube::Client, mut receiver: mpsc::UnboundedReceiver<Record>) {
    let mut correlator = Correlator::default();
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    while let Some(record) = receiver.recv().await {
        let stamp = timestamp_text();
        let suffix = format!("{:x}", now().as_nanosecond());
        let events: Api<Event> = Api::namespaced(client.clone(), &record.involved.namespace);
        let written = match correlator.observe(&record, Instant::now(), &suffix, &stamp) {
            Decision::Create { name } => events
                .create(
                    &PostParams::default(),
                    &event_object(&record, &name, 1, &stamp, &stamp),
                )
                .await
                .map(drop),
            Decision::Bump { name, count, .. } => events
                .patch(
                    &name,
                    &params,
                    &Patch::Merge(json!({"count": count, "lastTimestamp": stamp})),
                )
                .await
                .map(drop),
            Decision::Drop => Ok(()),
        };
        if let Err(error) = written {
            tracing::debug!(%error, reason = %record.reason, "recording an Event");
            correlator.forget(&record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(message: &str) -> Record {
        Record {
            source: Source::kubelet("kube-sim"),
            involved: Involved {
                kind: "Pod".to_owned(),
                api_version: "v1".to_owned(),
                namespace: "default".to_owned(),
                name: "web".to_owned(),
                uid: "u".to_owned(),
                field_path: "spec.containers{app}".to_owned(),
            },
            type_: EventType::Warning,
            reason: "Unhealthy".to_owned(),
            message: message.to_owned(),
        }
    }

    /// client-go's EventCorrelator: the same Event again bumps the count of the first one.
    #[test]
    fn a_repeated_event_is_counted_not_written_anew() {
        let mut correlator = Correlator::default();
        let start = Instant::now();
        let first = correlator.observe(&record("Readiness probe failed"), start, "a1", "t1");
        assert_eq!(
            first,
            Decision::Create {
                name: "web.a1".to_owned()
            }
        );
        let again = correlator.observe(&record("Readiness probe failed"), start, "a2", "t2");
        assert_eq!(
            again,
            Decision::Bump {
                name: "web.a1".to_owned(),
                count: 2,
                first: "t1".to_owned()
            }
        );
        let other = correlator.observe(&record("Liveness probe failed"), start, "a3", "t3");
        assert_eq!(
            other,
            Decision::Create {
                name: "web.a3".to_owned()
            }
        );
    }

    /// The spam filter: a burst of 25, then one per five minutes.
    #[test]
    fn a_burst_of_25_then_one_every_five_minutes() {
        let mut correlator = Correlator::default();
        let start = Instant::now();
        let written = (0..40)
            .filter(|_| correlator.observe(&record("x"), start, "a", "t") != Decision::Drop)
            .count();
        assert_eq!(written, 25);
        let later = start + SPAM_REFILL;
        assert_ne!(
            correlator.observe(&record("x"), later, "a", "t"),
            Decision::Drop
        );
        assert_eq!(
            correlator.observe(&record("x"), later, "a", "t"),
            Decision::Drop
        );
    }

    #[test]
    fn the_event_names_its_container_and_source() {
        let event = event_object(
            &record("m"),
            "web.a1",
            3,
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:05Z",
        );
        let value = serde_json::to_value(&event).expect("json");
        assert_eq!(value["involvedObject"]["fieldPath"], "spec.containers{app}");
        assert_eq!(value["source"]["component"], "kubelet");
        assert_eq!(value["source"]["host"], "kube-sim");
        assert_eq!(value["count"], 3);
        assert_eq!(value["type"], "Warning");
    }
}
