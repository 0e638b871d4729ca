//! The operator's error type: one enum, a `#[source]` on every wrapped cause, and a static category
//! for metrics.

use std::path::PathBuf;

/// Everything that can go wrong in the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing YAML failed.
    #[error("serializing YAML")]
    SerializeYaml(#[source] serde_saphyr::SerializeError),
    /// Serializing an object to JSON failed (a bug: the types always serialize).
    #[error("serializing {what}")]
    Serialize {
        /// What was being serialized.
        what: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// Writing to standard output failed.
    #[error("writing to standard output")]
    Stdout(#[source] std::io::Error),
    /// Reading an input file failed.
    #[error("reading {path}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An input manifest is not valid YAML, or not of the expected shape.
    #[error("{path}: {message}")]
    InvalidManifest {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A KumikoApp breaks a rule of its API; each line names the field and the fix.
    #[error("{path}: the KumikoApp is invalid:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    InvalidApp {
        /// The file.
        path: PathBuf,
        /// Every problem found, not only the first.
        problems: Vec<String>,
    },
    /// A call to the Kubernetes API failed.
    #[error("{action}")]
    Kube {
        /// What the operator was doing, naming the object.
        action: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// An API the app needs is not served by the cluster (its CRD is not installed); retried, so
    /// the app converges once it is installed.
    #[error("the cluster does not serve {api}: {fix}")]
    ApiNotServed {
        /// The group, version and kind.
        api: &'static str,
        /// How to fix it.
        fix: &'static str,
        /// The API server's answer.
        #[source]
        source: kube::Error,
    },
    /// A watch cache a decision reads has not listed yet (transient: retried).
    #[error("{what} has not listed yet")]
    CacheNotSynced {
        /// The watch.
        what: &'static str,
    },
    /// A KumikoApp cannot be reconciled until its spec (or its namespace) changes.
    #[error("{message}")]
    Stalled {
        /// The condition reason (`DuplicateApp`, `InvalidSpec`, ...).
        reason: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The app's Postgres roles could not be converged or reclaimed.
    #[error("{action} for KumikoApp {app}")]
    Roles {
        /// What the operator was doing.
        action: &'static str,
        /// `namespace/name` of the app.
        app: String,
        /// The cause (never carries a password).
        #[source]
        source: crate::roles::Error,
    },
    /// Serving HTTP (metrics, health) failed.
    #[error("serving HTTP on {addr}")]
    Http {
        /// The listen address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Connecting to the cluster failed (kubeconfig or in-cluster configuration).
    #[error("connecting to the Kubernetes API")]
    Connect(#[source] kube::Error),
    /// The async runtime could not start.
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
    /// Leader election failed in a way that cannot be retried.
    #[error("leader election: {0}")]
    Leader(String),
}

impl Error {
    /// A short, static name of the kind of error, for metrics labels.
    pub fn category(&self) -> &'static str {
        match self {
            Self::SerializeYaml(_) | Self::Serialize { .. } => "serialize",
            Self::Stdout(_) | Self::ReadFile { .. } => "io",
            Self::InvalidManifest { .. } | Self::InvalidApp { .. } => "invalid_input",
            Self::Kube { .. } | Self::Connect(_) => "kube_api",
            Self::ApiNotServed { .. } => "api_not_served",
            Self::CacheNotSynced { .. } => "cache_not_synced",
            Self::Stalled { .. } => "stalled",
            Self::Roles { source, .. } => source.category(),
            Self::Http { .. } | Self::Runtime(_) => "http",
            Self::Leader(_) => "leader",
        }
    }

    /// The message and every cause, joined: what a status condition or an Event shows.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }

    /// The condition reason of a permanent error: the `Stalled` reason it carries, else
    /// `PermanentError`.
    pub fn stall_reason(&self) -> &'static str {
        match self {
            Self::Stalled { reason, .. } => reason,
            Self::SerializeYaml(_)
            | Self::Serialize { .. }
            | Self::Stdout(_)
            | Self::ReadFile { .. }
            | Self::InvalidManifest { .. }
            | Self::InvalidApp { .. }
            | Self::Kube { .. }
            | Self::ApiNotServed { .. }
            | Self::CacheNotSynced { .. }
            | Self::Roles { .. }
            | Self::Http { .. }
            | Self::Connect(_)
            | Self::Runtime(_)
            | Self::Leader(_) => "PermanentError",
        }
    }

    /// Whether retrying later may succeed (transient) or the object must change first (permanent).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Kube { source, .. } => !matches!(
                source,
                kube::Error::Api(status) if status.code == 400 || status.code == 422 || status.code == 403
            ),
            Self::Roles { source, .. } => source.is_transient(),
            Self::Stalled { .. }
            | Self::InvalidManifest { .. }
            | Self::InvalidApp { .. }
            | Self::Serialize { .. }
            | Self::SerializeYaml(_) => false,
            Self::ApiNotServed { .. }
            | Self::CacheNotSynced { .. }
            | Self::Stdout(_)
            | Self::ReadFile { .. }
            | Self::Http { .. }
            | Self::Connect(_)
            | Self::Runtime(_)
            | Self::Leader(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stalled_error_keeps_its_reason_and_other_permanent_errors_say_so() {
        let stalled = Error::Stalled {
            reason: "InvalidSpec",
            message: "spec.lifecycle.linger: bad".to_owned(),
        };
        assert_eq!(stalled.stall_reason(), "InvalidSpec");
        assert!(!stalled.is_transient());
        assert_eq!(stalled.category(), "stalled");
        let leader = Error::Leader("lost".to_owned());
        assert_eq!(leader.stall_reason(), "PermanentError");
    }

    #[test]
    fn refused_requests_are_permanent_and_others_transient() {
        let api = |code: u16| Error::Kube {
            action: "applying".to_owned(),
            source: kube::Error::Api(Box::new(
                kube::core::Status::failure("refused", "Invalid").with_code(code),
            )),
        };
        for code in [400, 403, 422] {
            assert!(!api(code).is_transient(), "{code}");
        }
        for code in [409, 429, 500, 503] {
            assert!(api(code).is_transient(), "{code}");
        }
    }
}
