//! Credentials: the bridge between the reconciler and the Postgres roles module.
//!
//! The reconciler hands the admin connection Secret of the app's database (CNPG's
//! `<cluster>-superuser`, or the shared cluster's admin Secret) and the passwords it already stored,
//! and gets back the data of the two app Secrets, `<app>-db-owner` and `<app>-db-runtime` (CNPG's
//! keys: `host`, `port`, `dbname`, `user`, `password`, `uri`, ...). Host and port come from the
//! admin Secret (CNPG's `-rw` Service when it names no host), a short Service name qualified with
//! the database cluster's namespace, so the operator and every pod of the app resolve it.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

use crate::Error;
use crate::roles::ClusterService;

/// What converging one app's roles needs. `Debug` is not derived: it holds passwords.
pub struct RolesRequest {
    /// The app's name.
    pub app: String,
    /// The app's namespace.
    pub namespace: String,
    /// The admin connection Secret's data (decoded).
    pub admin_secret: BTreeMap<String, String>,
    /// The database cluster's `-rw` Service: the host when the admin Secret names none, and the
    /// namespace a short host is qualified with.
    pub database_service: ClusterService,
    /// `spec.database.role.connectionLimit`.
    pub connection_limit: i32,
    /// `spec.database.role.statementTimeout`.
    pub statement_timeout: Duration,
    /// The owner password stored in `<app>-db-owner`, if any.
    pub owner_password: Option<String>,
    /// The runtime password stored in `<app>-db-runtime`, if any.
    pub runtime_password: Option<String>,
    /// Generate a new runtime password (the `kumiko.so/rotate-credentials` annotation changed).
    pub rotate_runtime: bool,
    /// Drop the roles and the database on reclaim (`reclaimPolicy: Delete`).
    pub delete_on_reclaim: bool,
}

/// The data of the two app Secrets after convergence.
pub struct RolesOutcome {
    /// `<app>-db-owner`.
    pub owner: BTreeMap<String, String>,
    /// `<app>-db-runtime`.
    pub runtime: BTreeMap<String, String>,
}

/// Converges and reclaims an app's Postgres roles.
pub trait RolesBackend: Send + Sync {
    /// Creates or repairs the roles and the database; returns the Secrets' data.
    fn ensure<'a>(
        &'a self,
        request: &'a RolesRequest,
    ) -> BoxFuture<'a, Result<RolesOutcome, Error>>;
    /// Applies the reclaim policy when the app is deleted.
    fn reclaim<'a>(&'a self, request: &'a RolesRequest) -> BoxFuture<'a, Result<(), Error>>;
}

/// A checksum of the credentials the pods use: its change rolls the Deployments.
pub fn credentials_checksum(
    owner: &BTreeMap<String, String>,
    runtime: &BTreeMap<String, String>,
) -> String {
    let mut digest = Sha256::new();
    for data in [owner, runtime] {
        for (key, value) in data {
            digest.update(key.as_bytes());
            digest.update([0]);
            digest.update(value.as_bytes());
            digest.update([0]);
        }
    }
    hex::encode(digest.finalize())[..16].to_owned()
}

/// Removes every known secret value and every line that looks like it carries a credential from a
/// log excerpt.
pub fn redact(log: &str, secrets: &[&str]) -> String {
    log.lines()
        .map(|line| {
            let lower = line.to_ascii_lowercase();
            if lower.contains("password")
                || lower.contains("postgres://")
                || lower.contains("postgresql://")
                || lower.contains("secret")
            {
                return "[line withheld: it may contain a credential]".to_owned();
            }
            let mut line = line.to_owned();
            for secret in secrets.iter().filter(|secret| secret.len() >= 4) {
                line = line.replace(secret, "[redacted]");
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_password_changes_the_checksum() {
        let owner = BTreeMap::from([("password".to_owned(), "a".to_owned())]);
        let runtime = BTreeMap::from([("password".to_owned(), "b".to_owned())]);
        let rotated = BTreeMap::from([("password".to_owned(), "c".to_owned())]);
        assert_ne!(
            credentials_checksum(&owner, &runtime),
            credentials_checksum(&owner, &rotated)
        );
        assert_eq!(
            credentials_checksum(&owner, &runtime),
            credentials_checksum(&owner.clone(), &runtime.clone())
        );
    }

    #[test]
    fn redaction_withholds_urls_and_known_passwords() {
        let log = "applying 0002_users\nconnecting to postgres://shop:hunter22@db/shop\nerror near hunter22x\nrelation exists";
        let redacted = redact(log, &["hunter22"]);
        assert!(!redacted.contains("hunter22"), "{redacted}");
        assert!(redacted.contains("applying 0002_users"));
        assert!(redacted.contains("relation exists"));
    }
}
