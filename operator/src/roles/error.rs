//! The one error type of the roles module.

use super::statement::StatementKind;

/// Why provisioning, rotation or reclaim of an app's Postgres objects failed.
///
/// No variant carries a password, a password verifier or generated SQL text: errors name the
/// object, the statement kind and the cause, so they are safe to log, to put in an Event and to
/// show in a status condition.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The app name cannot be mapped to Postgres identifiers.
    #[error(
        "app name {name:?} is invalid: {reason}; the name must be a DNS-1035 label of at most \
         {max} characters (lowercase letters, digits and '-', starting with a letter and ending \
         with a letter or digit): rename the KumikoApp"
    )]
    InvalidAppName {
        /// The rejected name, shown escaped.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
        /// The maximum length.
        max: usize,
    },
    /// A database setting of the app is out of range.
    #[error("{field} is invalid: {reason}")]
    InvalidSetting {
        /// The setting, named as in the KumikoApp spec.
        field: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The admin connection Secret lacks a key or holds a value that cannot be used.
    #[error("admin connection secret: key `{key}` {reason}")]
    InvalidAdminSecret {
        /// The Secret key at fault.
        key: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A password handed in (read back from a Secret) cannot be used.
    #[error("the stored password of role {role:?} is unusable: {reason}")]
    InvalidPassword {
        /// The role the password belongs to.
        role: String,
        /// What is wrong with it (never the password itself).
        reason: &'static str,
    },
    /// Connecting to Postgres failed (network, TLS, authentication, server not ready).
    #[error("connecting to {target} failed")]
    Connect {
        /// `user@host:port/database`, without the password.
        target: String,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
    /// Connecting to Postgres did not finish in time.
    #[error("connecting to {target} timed out after {seconds}s")]
    ConnectTimeout {
        /// `user@host:port/database`, without the password.
        target: String,
        /// The time limit.
        seconds: u64,
    },
    /// A Postgres object that this app would use exists but belongs to another app or to nobody.
    #[error(
        "{object} already exists and {}: refusing to adopt it; rename the app, remove the object, \
         or, if it really is this app's, mark it with `COMMENT ON {} IS '{}'`",
        owner_phrase(claimed_by.as_deref()),
        comment_target(object),
        expected_marker
    )]
    Collision {
        /// The object, e.g. `role "shop_owner"`.
        object: String,
        /// The app that claims it (from its comment), or `None` when nobody does.
        claimed_by: Option<String>,
        /// The comment that would mark it as this app's.
        expected_marker: String,
    },
    /// An object that must already exist does not (e.g. rotating before provisioning).
    #[error("{object} does not exist yet: provision the app first")]
    NotProvisioned {
        /// The missing object.
        object: String,
    },
    /// Changes were applied but the catalogs still differ: something keeps reverting them.
    #[error("Postgres did not converge after {passes} passes; still differing: {remaining}")]
    NotConverged {
        /// How many observe-plan-apply passes ran.
        passes: usize,
        /// The changes still planned, `; `-separated.
        remaining: String,
    },
    /// Inspecting the catalogs failed.
    #[error("inspecting {what} failed")]
    Inspect {
        /// What was being read.
        what: &'static str,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
    /// A changing statement failed.
    #[error("{kind} on {object} failed")]
    Statement {
        /// The kind of statement.
        kind: StatementKind,
        /// The object it changes.
        object: String,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
}

fn owner_phrase(claimed_by: Option<&str>) -> String {
    match claimed_by {
        Some(app) => format!("belongs to app {app:?}"),
        None => "is not managed by kumiko".to_owned(),
    }
}

fn comment_target(object: &str) -> String {
    // `role "x"` -> `ROLE "x"`, `database "x"` -> `DATABASE "x"`.
    match object.split_once(' ') {
        Some((kind, name)) => format!("{} {name}", kind.to_uppercase()),
        None => object.to_owned(),
    }
}

impl Error {
    /// A short, fixed label for metrics (`reconcile_errors_total{category=...}`).
    pub fn category(&self) -> &'static str {
        match self {
            Error::InvalidAppName { .. } => "invalid_app_name",
            Error::InvalidSetting { .. } => "invalid_setting",
            Error::InvalidAdminSecret { .. } => "invalid_admin_secret",
            Error::InvalidPassword { .. } => "invalid_password",
            Error::Connect { .. } => "connect",
            Error::ConnectTimeout { .. } => "connect_timeout",
            Error::Collision { .. } => "collision",
            Error::NotProvisioned { .. } => "not_provisioned",
            Error::NotConverged { .. } => "not_converged",
            Error::Inspect { source, .. } | Error::Statement { source, .. } => {
                if sqlstate(source).is_some_and(|code| code == "42501") {
                    "privilege"
                } else {
                    "database"
                }
            }
        }
    }

    /// Whether retrying later (with backoff) can succeed without anyone changing the app's spec.
    ///
    /// Connection failures, lost connections, lock and resource contention are transient.
    /// Invalid names and settings, collisions, missing privileges and statements Postgres rejects
    /// as invalid are permanent: the reconciler marks the app `Stalled` and waits for a change.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::InvalidAppName { .. }
            | Error::InvalidSetting { .. }
            | Error::InvalidAdminSecret { .. }
            | Error::InvalidPassword { .. }
            | Error::Collision { .. } => false,
            Error::Connect { .. }
            | Error::ConnectTimeout { .. }
            | Error::NotProvisioned { .. }
            | Error::NotConverged { .. } => true,
            Error::Inspect { source, .. } | Error::Statement { source, .. } => {
                sqlx_error_is_transient(source)
            }
        }
    }
}

/// The SQLSTATE of a database error, if the error came from the server.
pub(crate) fn sqlstate(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(database) => database.code().map(|code| code.into_owned()),
        _ => None,
    }
}

fn sqlx_error_is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(_) => match sqlstate(error) {
            // Classes: 08 connection, 40 rollback (serialization, deadlock), 53 resources,
            // 55 object not in prerequisite state (lock not available, object in use),
            // 57 operator intervention (shutdown, cancel, statement timeout), 58 system error.
            Some(code) => ["08", "40", "53", "55", "57", "58"]
                .iter()
                .any(|class| code.starts_with(class)),
            None => true,
        },
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_input_is_permanent_and_connection_failures_are_transient() {
        let invalid = Error::InvalidAppName {
            name: "x;".to_owned(),
            reason: "bad",
            max: 40,
        };
        assert!(!invalid.is_transient());
        assert_eq!(invalid.category(), "invalid_app_name");

        let connect = Error::Connect {
            target: "u@h:5432/db".to_owned(),
            source: sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        };
        assert!(connect.is_transient());
        assert_eq!(connect.category(), "connect");

        let timeout = Error::ConnectTimeout {
            target: "u@h:5432/db".to_owned(),
            seconds: 10,
        };
        assert!(timeout.is_transient());
    }

    #[test]
    fn collision_message_says_who_owns_the_object_and_how_to_adopt_it() {
        let foreign = Error::Collision {
            object: "role \"shop_owner\"".to_owned(),
            claimed_by: Some("other/shop".to_owned()),
            expected_marker: "kumiko.so/app=prod/shop".to_owned(),
        };
        let text = foreign.to_string();
        assert!(text.contains("belongs to app \"other/shop\""), "{text}");
        assert!(
            text.contains("COMMENT ON ROLE \"shop_owner\" IS 'kumiko.so/app=prod/shop'"),
            "{text}"
        );
        assert!(!foreign.is_transient());

        let unmanaged = Error::Collision {
            object: "database \"shop\"".to_owned(),
            claimed_by: None,
            expected_marker: "kumiko.so/app=prod/shop".to_owned(),
        };
        assert!(unmanaged.to_string().contains("is not managed by kumiko"));
    }
}
