//! Per-app Postgres roles and databases (DESIGN §1 step 3), made with sqlx.
//!
//! This module knows nothing of Kubernetes. The reconciler maps a KumikoApp onto
//! [`AppDatabase`] and an [`AdminConnection`], reads back the passwords it keeps in Secrets into
//! [`StoredPasswords`], and calls:
//!
//! - [`ensure`]: make Postgres match the app (idempotent); returns [`Provisioned`] with every
//!   change made, the owner's and the runtime role's [`ConnectionFacts`] and which passwords
//!   were generated (to be written into Secrets with [`ConnectionFacts::secret_data`]);
//! - [`rotate_runtime_password`]: a new runtime password, returned as new facts;
//! - [`reclaim`]: on deletion, by [`ReclaimPolicy`] (`Retain` by default, or `Delete`).
//!
//! Errors are one [`Error`] enum with [`Error::category`] (for metrics) and
//! [`Error::is_transient`] (back off and retry, or mark the app `Stalled`).
//!
//! # What is provisioned
//!
//! - Database `<app>`, owned by the owner role, with `REVOKE ALL ON DATABASE ... FROM PUBLIC`
//!   (so no other app's role can connect), `CONNECT` for the runtime role only.
//! - Owner role `<app>_owner`: `LOGIN`, no other attribute, a small connection limit; owns the
//!   database and, through it, the `public` schema (Postgres 15+: `pg_database_owner`; on older
//!   servers `public` is handed to the owner). The migrate Job connects as this role.
//! - Runtime role `<app>_runtime` for `serve` and `worker`: `LOGIN`, `CONNECTION LIMIT` from the
//!   spec, `statement_timeout` and `idle_in_transaction_session_timeout` via `ALTER ROLE ... SET`
//!   (per-database overrides of those two are reset), never a member of the owner role, no
//!   `CREATE` on the database or on any schema (`REVOKE CREATE ON SCHEMA ... FROM PUBLIC` on
//!   every schema), `USAGE` on the app's schemas, `SELECT, INSERT, UPDATE, DELETE` on every
//!   table, view and foreign table in them, `USAGE, SELECT` on every sequence, and
//!   `ALTER DEFAULT PRIVILEGES FOR ROLE <app>_owner` granting the same on tables, sequences and
//!   schemas the owner creates later, in any schema. The app's schemas are those owned by the
//!   owner role (or by `pg_database_owner`).
//!
//! Every run reads the catalogs first and issues only the statements whose effect is missing, so
//! drift (a changed connection limit, a lost grant, a dropped setting, a superuser flag) is put
//! back and a converged app costs reads only. [`Provisioned::changes`] lists each changing
//! statement by [`StatementKind`].
//!
//! # Name mapping
//!
//! The app name (KumikoApp `metadata.name`) must be a DNS-1035 label of at most 40 characters
//! (`[a-z]([-a-z0-9]*[a-z0-9])?`); anything else is rejected with [`Error::InvalidAppName`]
//! before any SQL runs. From it:
//!
//! | object | name |
//! |---|---|
//! | database | `<app>` |
//! | owner role | `<app>_owner` |
//! | runtime role | `<app>_runtime` |
//!
//! App names cannot contain `_`, so two different apps never map to the same name, and no
//! derived name exceeds Postgres' 63-byte identifier limit (it would be truncated silently).
//! Names are still quoted in every statement: statements are fixed templates filled by the
//! server's `format()` with `%I` for identifiers and `%L` for literals; nothing is concatenated.
//!
//! # Collisions
//!
//! Each role and the database carry a comment `kumiko.so/app=<claim>`, where the claim is the
//! app's `<namespace>/<name>` ([`Claim`]). Before changing anything, `ensure`, `reclaim` and
//! `rotate_runtime_password` read the comments and refuse ([`Error::Collision`], permanent) to
//! touch an object that is marked for another claim, or not marked at all: a hand-made `shop`
//! database or two `shop` apps in different namespaces on one shared cluster are detected, never
//! silently shared. (A database without a marker that is owned by this app's marked owner role
//! is this app's: `CREATE DATABASE` and its `COMMENT` cannot share a transaction.) To hand an
//! existing object to an app on purpose, mark it: `COMMENT ON ROLE "shop_owner" IS
//! 'kumiko.so/app=prod/shop'`. Because the claim is the namespace and name, not the object's
//! UID, an app deleted with `Retain` and created again adopts its data.
//!
//! # Credentials
//!
//! Passwords are 44 random alphanumeric characters (about 262 bits) from a CSPRNG. They reach
//! Postgres only as SCRAM-SHA-256 verifiers computed here, never in plain text, so they cannot
//! appear in the server log or `pg_stat_statements`; sqlx's own statement logging is off for
//! these sessions. [`Password`], [`ConnectionFacts`], [`AdminConnection`], [`Provisioned`] and
//! every [`Error`] redact passwords in `Debug` and `Display`. Stored passwords are compared with
//! the role's verifier (`pg_authid`, readable by a superuser admin) or, for a non-superuser
//! admin, by a trial login.
//!
//! The facts' Secret keys are those of a CNPG `<cluster>-app` Secret (`username`, `user`,
//! `password`, `host`, `port`, `dbname`, `uri`, `jdbc-uri`, `pgpass`), so apps written for CNPG
//! work unchanged. The facts use the admin connection's host and port; when the app reaches the
//! server under another name use [`ConnectionFacts::with_endpoint`].
//!
//! # Connection modes
//!
//! - **Dedicated CNPG cluster** (one `Cluster` per app): the admin is the cluster's superuser,
//!   read from the `<cluster>-superuser` Secret with [`AdminConnection::from_cluster_secret`]
//!   (its `host` is the short `<cluster>-rw` Service name, qualified there as
//!   `<cluster>-rw.<namespace>.svc`). CNPG creates that Secret
//!   only with `enableSuperuserAccess: true`, so the rendered Cluster sets it. Trade-off: a
//!   superuser password now exists in the app's namespace, readable by anyone who may read
//!   Secrets there, and a network path to the server with it is a path to everything on that
//!   cluster (which holds only this app's data). The alternative, CNPG's own `bootstrap.initdb`
//!   owner plus declarative `managed.roles`, cannot express default privileges, per-role
//!   settings or the grants above, and would leave drift repair to two controllers. The
//!   operator never copies the superuser password elsewhere, and the app's Pods never see it.
//! - **Shared cluster**: the user names an admin Secret (same keys, or just `uri`) for a role
//!   with `CREATEROLE` and `CREATEDB` (or a superuser). A non-superuser admin grants itself
//!   membership in each app's owner role (needed to create the database for it, set its default
//!   privileges and reclaim it); passwords are then checked by a trial login. Apps share the
//!   server's `max_connections`: the per-role connection limit is what keeps one app from
//!   starving the others. Name collisions between namespaces are reported, not shared.
//! - **External database** (the user supplies a connection URL): nothing is provisioned and this
//!   module is not called; no roles, grants, limits or reclaim. The app's migrations and runtime
//!   both use the given URL, so the separation of owner and runtime roles is the user's job.
//!
//! TLS: `sslmode` is taken from the Secret (`prefer` by default). `require` and stricter need a
//! TLS backend compiled into sqlx (the workspace enables none yet); without one, connecting
//! fails with a transient [`Error::Connect`].

mod admin;
mod error;
mod facts;
mod names;
mod observe;
mod password;
mod plan;
mod provision;
mod reclaim;
mod settings;
mod statement;

pub use admin::{
    APPLICATION_NAME, AdminConnection, CONNECT_TIMEOUT, ClusterService, DEFAULT_ADMIN_DATABASE,
    DEFAULT_PORT, SslMode, qualify_host,
};
pub use error::Error;
pub use facts::ConnectionFacts;
pub use names::{AppName, Claim, MARKER_PREFIX, MAX_APP_NAME_LEN, ObjectNames};
pub use password::Password;
pub use provision::{GeneratedPasswords, Provisioned, ensure, rotate_runtime_password};
pub use reclaim::{Reclaimed, reclaim};
pub use settings::{
    AppDatabase, DEFAULT_CONNECTION_LIMIT, DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT,
    DEFAULT_OWNER_CONNECTION_LIMIT, DEFAULT_STATEMENT_TIMEOUT, MAX_CONNECTION_LIMIT, ReclaimPolicy,
    StoredPasswords,
};
pub use statement::{Change, StatementKind};
