//! The one error type of the simulated controllers.

/// Why a simulated controller could not do its work.
///
/// Messages never carry secret values: passwords stay out of every variant.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the (simulated) Kubernetes API failed.
    #[error("{action}")]
    Kube {
        /// What the controller was doing, e.g. `creating pod default/web-abc`.
        action: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// A statement against the real Postgres behind a CNPG Cluster failed.
    #[error("{action}")]
    Postgres {
        /// What the controller was doing, without secrets.
        action: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// A throwaway Postgres could not be started.
    #[error("starting a throwaway Postgres for {cluster}")]
    TempPostgres {
        /// The CNPG Cluster (`namespace/name`) it was for.
        cluster: String,
        /// The cause.
        #[source]
        source: kumiko_testkit::Error,
    },
    /// A local I/O operation (a process, a socket, a temporary directory) failed.
    #[error("{action}")]
    Io {
        /// What the controller was doing.
        action: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A command-line or configuration value is invalid.
    #[error("invalid {option} {value:?}: {reason}")]
    InvalidOption {
        /// The option, e.g. `--image`.
        option: &'static str,
        /// The value given (never a password: URLs are shown without it).
        value: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// An object the controller works on has a field it cannot use.
    #[error("{object}: {field}: {message}")]
    InvalidObject {
        /// `kind namespace/name`.
        object: String,
        /// The field path, e.g. `spec.strategy.rollingUpdate.maxSurge`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// (De)serialising an object failed.
    #[error("{action}")]
    Json {
        /// What the controller was doing.
        action: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// The result type of the simulated controllers.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Builds a closure that wraps a [`kube::Error`] with what the controller was doing.
pub(crate) fn kube_error(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Kube { action, source }
}

/// Whether a client error is the API's 404 Not Found.
pub(crate) fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}
