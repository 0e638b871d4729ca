//! The crate's error type.
//!
//! Every fallible library call returns [`Error`]; the boot's own outcome ("which phase stopped
//! and why") is [`crate::boot::BootError`], which carries these errors' text as its cause.
//! Modules add their variants here, each with `#[source]` on the wrapped cause and a message that
//! names what failed and the fix. No variant may carry a secret (URLs are redacted first).

/// Errors of the Kumiko runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be reached or refused the connection. `transient` says whether a
    /// retry may help (network errors, a server still starting) or not (a malformed setting).
    #[error("connecting to {target} failed")]
    Connect {
        /// The target, safe to log (no password).
        target: String,
        /// Whether a retry may help.
        transient: bool,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
    /// The SQLite data directory could not be created.
    #[error(
        "creating the data directory {path} failed; set KUMIKO_DATA_DIR to a writable directory"
    )]
    DataDir {
        /// The directory.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A query failed.
    #[error("database query failed")]
    Query(#[source] sqlx::Error),
    /// The API listener could not be bound.
    #[error("binding the API listener on {address} failed; set PORT to a free port")]
    Bind {
        /// The address.
        address: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The signal handlers could not be installed.
    #[error("installing the SIGTERM/SIGINT handlers failed")]
    Signals(#[source] std::io::Error),
    /// The log subscriber could not be installed.
    #[error("installing the log subscriber failed: {0}")]
    Telemetry(String),
    /// The platform does not fit the runtime.
    #[error("runtime check failed: {0}")]
    RuntimeCheck(String),
    /// A database query of the data side (migrations, jobs, the status page) failed.
    #[error("database: {action}")]
    Database {
        /// What was being done.
        action: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// sqlx's migration driver failed outside a migration's own SQL.
    #[error("migrations: {action}")]
    Migrate {
        /// What was being done.
        action: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A migration's SQL failed; its transaction was rolled back and the lock released.
    #[error(
        "migration {version} ({description}) failed and was rolled back; fix the migration or the \
         data, then run `kumiko-app migrate apply` again"
    )]
    MigrationFailed {
        /// The failed version.
        version: i64,
        /// Its description.
        description: String,
        /// The driver's error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// The schema does not match the binary; the process must not boot.
    #[error(transparent)]
    SchemaDrift(#[from] crate::migrations::SchemaDriftError),
    /// A Redis command failed.
    #[error("redis: {action}")]
    Redis {
        /// What was being done.
        action: &'static str,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// A Redis command did not answer in time.
    #[error("redis: {action} timed out after {timeout_ms} ms")]
    RedisTimeout {
        /// What was being done.
        action: &'static str,
        /// The bound.
        timeout_ms: u64,
    },
    /// A job's handler failed.
    #[error("job {job}: {message}")]
    Job {
        /// The job's name or kind.
        job: String,
        /// What went wrong, without secrets.
        message: String,
    },
    /// A cron job's schedule (expression or time zone) is not valid.
    #[error("cron schedule `{expression}`: {problem}")]
    InvalidSchedule {
        /// The expression as written.
        expression: String,
        /// What is wrong.
        problem: String,
    },
    /// A job payload could not be encoded or decoded.
    #[error("job {kind}: the payload is not valid JSON for this kind")]
    JobPayload {
        /// The job kind.
        kind: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// Something was registered after boot validation (phase 6) froze the registries (the
    /// runtime's own readiness checks: after they started, phase 16): a bug, never silently kept.
    #[error(
        "{what} `{name}` was registered after boot validation; register it on the App builder \
         (or during boot) instead"
    )]
    LateRegistration {
        /// What kind of thing (a readiness check, a shutdown hook).
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// A component's task failed.
    #[error("component {component}: {message}")]
    Component {
        /// The component's name.
        component: String,
        /// What went wrong, without secrets.
        message: String,
    },
    /// Input to an app's API was invalid; every problem is listed.
    #[error("invalid input: {}", format_field_errors(.0))]
    Invalid(Vec<FieldError>),
    /// An object of an app does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// The kind of object.
        what: &'static str,
        /// Its id.
        id: i64,
    },
}

impl Error {
    /// Whether a retry may help.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { transient, .. } => *transient,
            Self::Query(_) => true,
            Self::DataDir { .. }
            | Self::Bind { .. }
            | Self::Signals(_)
            | Self::Telemetry(_)
            | Self::RuntimeCheck(_) => false,
            Self::Database { .. } | Self::Redis { .. } | Self::RedisTimeout { .. } => true,
            Self::Migrate { .. }
            | Self::MigrationFailed { .. }
            | Self::SchemaDrift(_)
            | Self::Job { .. }
            | Self::JobPayload { .. }
            | Self::Invalid(_)
            | Self::NotFound { .. }
            | Self::LateRegistration { .. }
            | Self::InvalidSchedule { .. }
            | Self::Component { .. } => false,
        }
    }
}

impl From<Error> for crate::boot::PhaseError {
    fn from(error: Error) -> Self {
        if error.is_transient() {
            Self::transient(error)
        } else {
            Self::permanent(error)
        }
    }
}

/// One invalid input field, with the fix.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// The field's name.
    pub field: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

fn format_field_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|error| format!("{}: {}", error.field, error.message))
        .collect::<Vec<_>>()
        .join("; ")
}
