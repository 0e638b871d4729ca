//! The controller: `kumiko-operator run`.
//!
//! One reconcile is one pass of the pipeline (DESIGN §3), each step its own module:
//! [`crate::validate`] (pure) -> [`observe`] (reads the watch [`caches`]) -> [`plan`] (pure; builds the children with
//! [`crate::desired`]) -> [`execute`] (I/O, applying through [`apply`]) -> [`status`] (pure, one
//! write). [`reconcile`] strings them together; [`run`] is the process (watches, leader election,
//! HTTP, signals).

pub mod api_requests;
pub mod applied;
pub mod apply;
pub mod caches;
pub mod credentials;
pub mod execute;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod plan;
pub mod reconcile;
pub mod roles_backend;
pub mod run;
pub mod status;
pub mod steps;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use kube::Client;
use kube::core::DeserializeGuard;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use kumiko_crds::KumikoApp;

use applied::AppliedHashes;
use caches::Caches;
use credentials::RolesBackend;
use metrics::Metrics;

use crate::observed::OperatorNamespaces;

/// The smallest delay before retrying a transient failure.
pub const MIN_BACKOFF: Duration = Duration::from_millis(500);
/// The largest delay before retrying a transient failure.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The one Event recorder.
    pub recorder: Recorder,
    /// Every KumikoApp the controller sees (for the one-app-per-namespace rule).
    pub apps: Store<DeserializeGuard<KumikoApp>>,
    /// The Postgres roles.
    pub roles: Arc<dyn RolesBackend>,
    /// The applied hashes of the children, as their watches last saw them.
    pub applied: Arc<AppliedHashes>,
    /// The watch caches observe reads from.
    pub caches: Caches,
    /// Where the Kumiko operator and CloudNativePG's operator run (a dedicated database's
    /// NetworkPolicy lets both in); `run` sets them from its arguments.
    pub operators: OperatorNamespaces,
    attempts: Mutex<HashMap<String, usize>>,
}

impl Context {
    /// A context over `client`; `applied` and `caches` are fed by the watches of [`run`].
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        recorder: Recorder,
        apps: Store<DeserializeGuard<KumikoApp>>,
        roles: Arc<dyn RolesBackend>,
        (applied, caches): (Arc<AppliedHashes>, Caches),
    ) -> Self {
        Self {
            client,
            metrics,
            recorder,
            apps,
            roles,
            applied,
            caches,
            operators: OperatorNamespaces::default(),
            attempts: Mutex::new(HashMap::new()),
        }
    }

    /// The delay before the next retry of `key`, growing exponentially with each failure in a row.
    pub fn next_backoff(&self, key: &str) -> Duration {
        let attempt = match self.attempts.lock() {
            Ok(mut attempts) => {
                let attempt = attempts.entry(key.to_owned()).or_insert(0);
                *attempt += 1;
                *attempt
            }
            Err(_) => 1,
        };
        backoff_delay(attempt)
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn reset_backoff(&self, key: &str) {
        if let Ok(mut attempts) = self.attempts.lock() {
            attempts.remove(key);
        }
    }
}

/// The delay before retry number `attempt` (1-based): exponential from [`MIN_BACKOFF`], capped at
/// [`MAX_BACKOFF`], with jitter.
pub fn backoff_delay(attempt: usize) -> Duration {
    ExponentialBuilder::default()
        .with_min_delay(MIN_BACKOFF)
        .with_max_delay(MAX_BACKOFF)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempt.saturating_sub(1))
        .unwrap_or(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_each_failure_and_is_capped() {
        let first = backoff_delay(1);
        let fifth = backoff_delay(5);
        assert!(first >= MIN_BACKOFF && first < MIN_BACKOFF * 3, "{first:?}");
        assert!(fifth >= MIN_BACKOFF * 16, "{fifth:?}");
        assert!(backoff_delay(100) <= MAX_BACKOFF * 2);
    }
}
