//! One app's database settings, as plain values (the reconciler maps the KumikoApp spec onto them).

use std::time::Duration;

use super::error::Error;
use super::names::{AppName, Claim, ObjectNames};
use super::password::Password;

/// The runtime role's connection limit when the spec does not set one.
pub const DEFAULT_CONNECTION_LIMIT: i32 = 20;
/// The owner role's connection limit: migrations need one or two connections.
pub const DEFAULT_OWNER_CONNECTION_LIMIT: i32 = 5;
/// The runtime role's `statement_timeout` when the spec does not set one.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// The runtime role's `idle_in_transaction_session_timeout`.
pub const DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest connection limit accepted.
pub const MAX_CONNECTION_LIMIT: i32 = 10_000;

/// What one app needs from Postgres.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppDatabase {
    /// The app's name (KumikoApp `metadata.name`); the object names derive from it.
    pub name: AppName,
    /// The app's identity recorded on its objects (`<namespace>/<name>`).
    pub claim: Claim,
    /// `CONNECTION LIMIT` of the runtime role (`spec.database.role.connectionLimit`), 1 to 10000.
    pub connection_limit: i32,
    /// `CONNECTION LIMIT` of the owner role, 1 to 10000.
    pub owner_connection_limit: i32,
    /// `statement_timeout` of the runtime role (`spec.database.role.statementTimeout`); zero
    /// disables it. Whole milliseconds, at most `i32::MAX` of them (Postgres' limit).
    pub statement_timeout: Duration,
    /// `idle_in_transaction_session_timeout` of the runtime role; zero disables it.
    pub idle_in_transaction_session_timeout: Duration,
}

impl AppDatabase {
    /// Settings with the defaults, for app `name` claimed by `claim` (`<namespace>/<name>`).
    pub fn new(name: &str, claim: &str) -> Result<Self, Error> {
        Ok(Self {
            name: AppName::new(name)?,
            claim: Claim::new(claim)?,
            connection_limit: DEFAULT_CONNECTION_LIMIT,
            owner_connection_limit: DEFAULT_OWNER_CONNECTION_LIMIT,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            idle_in_transaction_session_timeout: DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT,
        })
    }

    /// The Postgres object names of this app.
    pub fn object_names(&self) -> ObjectNames {
        self.name.object_names()
    }

    /// Checks the numeric settings, naming the field and the accepted range on failure.
    pub fn validate(&self) -> Result<(), Error> {
        check_limit("spec.database.role.connectionLimit", self.connection_limit)?;
        check_limit("owner connection limit", self.owner_connection_limit)?;
        timeout_millis(
            "spec.database.role.statementTimeout",
            self.statement_timeout,
        )?;
        timeout_millis(
            "idle_in_transaction_session_timeout",
            self.idle_in_transaction_session_timeout,
        )?;
        Ok(())
    }

    /// The runtime role's settings as Postgres stores them in `pg_db_role_setting`.
    pub(crate) fn runtime_role_settings(&self) -> Result<Vec<(&'static str, String)>, Error> {
        Ok(vec![
            (
                "statement_timeout",
                timeout_millis(
                    "spec.database.role.statementTimeout",
                    self.statement_timeout,
                )?
                .to_string(),
            ),
            (
                "idle_in_transaction_session_timeout",
                timeout_millis(
                    "idle_in_transaction_session_timeout",
                    self.idle_in_transaction_session_timeout,
                )?
                .to_string(),
            ),
        ])
    }
}

fn check_limit(field: &'static str, limit: i32) -> Result<(), Error> {
    if (1..=MAX_CONNECTION_LIMIT).contains(&limit) {
        Ok(())
    } else {
        Err(Error::InvalidSetting {
            field,
            reason: format!("{limit} is outside 1..={MAX_CONNECTION_LIMIT}; set a value in range"),
        })
    }
}

fn timeout_millis(field: &'static str, timeout: Duration) -> Result<i32, Error> {
    if !timeout.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(Error::InvalidSetting {
            field,
            reason: format!(
                "{timeout:?} is not a whole number of milliseconds; use e.g. \"30s\" or \"1500ms\""
            ),
        });
    }
    i32::try_from(timeout.as_millis()).map_err(|_| Error::InvalidSetting {
        field,
        reason: format!(
            "{timeout:?} exceeds Postgres' maximum of {} ms (about 24 days); use a shorter duration",
            i32::MAX
        ),
    })
}

/// The passwords the caller already has (read back from its Secrets), if any.
///
/// A password given here is kept: `ensure` sets it on the role only when the role's stored
/// verifier does not match it. A missing one is generated, set, and returned in
/// [`Provisioned`](super::Provisioned) with its `generated` flag, for the caller to store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredPasswords {
    /// The owner role's password.
    pub owner: Option<Password>,
    /// The runtime role's password.
    pub runtime: Option<Password>,
}

/// What happens to an app's roles and database when the app is deleted
/// (`spec.database.reclaimPolicy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReclaimPolicy {
    /// Leave roles, database and data in place (the default).
    #[default]
    Retain,
    /// End the app's sessions and drop its database and both roles.
    Delete,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> AppDatabase {
        AppDatabase::new("shop", "prod/shop").unwrap()
    }

    #[test]
    fn defaults_are_valid() {
        let app = app();
        app.validate().unwrap();
        assert_eq!(app.connection_limit, 20);
        assert_eq!(
            app.runtime_role_settings().unwrap(),
            vec![
                ("statement_timeout", "30000".to_owned()),
                ("idle_in_transaction_session_timeout", "60000".to_owned()),
            ]
        );
    }

    #[test]
    fn out_of_range_settings_name_the_field() {
        for limit in [0, -1, MAX_CONNECTION_LIMIT + 1] {
            let mut app = app();
            app.connection_limit = limit;
            let error = app.validate().unwrap_err();
            assert!(
                error
                    .to_string()
                    .contains("spec.database.role.connectionLimit"),
                "{error}"
            );
            assert!(!error.is_transient());
        }
        let mut app = app();
        app.statement_timeout = Duration::from_secs(30 * 24 * 3600);
        assert!(
            app.validate()
                .unwrap_err()
                .to_string()
                .contains("spec.database.role.statementTimeout")
        );
        let mut app = self::app();
        app.statement_timeout = Duration::from_micros(1500);
        assert!(app.validate().is_err());
        app.statement_timeout = Duration::ZERO;
        assert!(app.validate().is_ok());
    }
}
