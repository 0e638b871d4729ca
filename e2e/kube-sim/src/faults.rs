//! Fault injection for tests: latency, error answers (409, 500, 429, ...) and cut watches, per verb
//! and resource. Controlled from the library ([`Faults`]) and over HTTP: `POST /sim/faults` with a
//! [`FaultRule`] as JSON adds a rule (answer: `{"id": N}`), `GET /sim/faults` lists them,
//! `DELETE /sim/faults` removes all, `DELETE /sim/faults/{id}` one, and `POST /sim/faults/cut-watches`
//! ends every open watch at once.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::status::ApiError;

/// One fault rule. Empty matchers match everything.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultRule {
    /// Verb to match: get, list, watch, create, update, patch, delete, deletecollection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verb: Option<String>,
    /// Resource to match: `pods`, `deployments.apps`, `kumikoapps.kumiko.so`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Subresource to match, e.g. `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subresource: Option<String>,
    /// Namespace to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Delay before the request is handled.
    #[serde(default)]
    pub latency_ms: u64,
    /// Answer with this HTTP status instead of handling the request (409, 500, 429, 503, 504...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<u16>,
    /// For watches: end the stream this long after it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_watch_after_ms: Option<u64>,
    /// How many matching requests the rule affects; unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
}

/// What to do to one request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultAction {
    /// Delay first.
    pub latency: Duration,
    /// Then fail with this error.
    pub error: Option<ApiError>,
    /// For a watch: cut it after this long.
    pub cut_watch_after: Option<Duration>,
}

/// The active fault rules.
#[derive(Debug)]
pub struct Faults {
    rules: Mutex<Vec<(u64, FaultRule)>>,
    next_id: Mutex<u64>,
    cut: watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            rules: Mutex::new(Vec::new()),
            next_id: Mutex::new(0),
            cut: watch::channel(0).0,
        }
    }
}

impl Faults {
    /// Adds a rule; returns its id.
    pub fn add(&self, rule: FaultRule) -> u64 {
        let mut next = self.next_id.lock().unwrap_or_else(|p| p.into_inner());
        *next += 1;
        let id = *next;
        self.rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, rule));
        id
    }

    /// Removes one rule; whether it existed.
    pub fn remove(&self, id: u64) -> bool {
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        let before = rules.len();
        rules.retain(|(i, _)| *i != id);
        rules.len() != before
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The rules with their ids.
    pub fn list(&self) -> Vec<(u64, FaultRule)> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Ends every open watch now (clients see the stream close and re-watch).
    pub fn cut_watches(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    pub(crate) fn cut_signal(&self) -> watch::Receiver<u64> {
        self.cut.subscribe()
    }

    /// The action for a request, consuming one use of each matching rule.
    pub fn take(
        &self,
        verb: &str,
        group: &str,
        resource: &str,
        subresource: Option<&str>,
        namespace: Option<&str>,
    ) -> FaultAction {
        let qualified = if group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{group}")
        };
        let mut action = FaultAction::default();
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        for (_, rule) in rules.iter_mut() {
            let matches = rule.verb.as_deref().is_none_or(|v| v == verb)
                && rule
                    .resource
                    .as_deref()
                    .is_none_or(|r| r == qualified || r == resource)
                && rule
                    .subresource
                    .as_deref()
                    .is_none_or(|s| Some(s) == subresource)
                && rule
                    .namespace
                    .as_deref()
                    .is_none_or(|n| Some(n) == namespace)
                && rule.times != Some(0);
            if !matches {
                continue;
            }
            if let Some(t) = rule.times.as_mut() {
                *t -= 1;
            }
            action.latency += Duration::from_millis(rule.latency_ms);
            if action.error.is_none()
                && let Some(code) = rule.error
            {
                action.error = Some(injected_error(code, group, resource));
            }
            if let Some(ms) = rule.cut_watch_after_ms {
                action.cut_watch_after = Some(Duration::from_millis(ms));
            }
        }
        rules.retain(|(_, r)| r.times != Some(0));
        action
    }
}

fn injected_error(code: u16, group: &str, resource: &str) -> ApiError {
    match code {
        409 => ApiError::conflict(
            group,
            resource,
            "",
            "injected fault: the object has been modified; please apply your changes to the latest version and try again",
        ),
        429 => ApiError::too_many_requests("injected fault: too many requests"),
        500 => ApiError::internal("injected fault"),
        404 => ApiError::not_found(group, resource, ""),
        other => {
            let mut e = ApiError::internal(format!("injected fault ({other})"));
            e.code = other;
            e.reason = match other {
                503 => "ServiceUnavailable",
                504 => "Timeout",
                403 => "Forbidden",
                400 => "BadRequest",
                _ => "InternalError",
            }
            .into();
            e
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_with_times_expires() {
        let f = Faults::default();
        f.add(FaultRule {
            verb: Some("create".into()),
            resource: Some("deployments.apps".into()),
            error: Some(409),
            times: Some(1),
            ..Default::default()
        });
        assert_eq!(f.take("get", "apps", "deployments", None, None).error, None);
        assert_eq!(
            f.take("create", "apps", "deployments", None, None)
                .error
                .map(|e| e.code),
            Some(409)
        );
        assert_eq!(
            f.take("create", "apps", "deployments", None, None).error,
            None
        );
        assert!(f.list().is_empty());
    }

    #[test]
    fn latencies_add_up() {
        let f = Faults::default();
        f.add(FaultRule {
            latency_ms: 5,
            ..Default::default()
        });
        f.add(FaultRule {
            latency_ms: 7,
            resource: Some("pods".into()),
            ..Default::default()
        });
        assert_eq!(
            f.take("list", "", "pods", None, None).latency,
            Duration::from_millis(12)
        );
    }
}
