//! The Kumiko app runtime: the process lifecycle every Kumiko process shares.
//!
//! - [`lifecycle`]: `starting → ready → draining → stopped`, monotonic and observable.
//! - [`boot`]: the sixteen boot phases with timeouts and failure policies.
//! - [`config`]: the contract's environment variables, every mistake reported.
//! - [`component`]: component registration and boot validation (all errors at once).
//! - [`db`]: the pool over the embedded SQLite tier or Postgres.
//! - [`health`]: `/health` and `/health/ready` with background checks.
//! - [`http`]: the listener with drain and `Connection: close` during shutdown.
//! - [`shutdown`]: LIFO shutdown hooks for background components.
//! - [`runtime`]: [`runtime::run`], which drives boot, serving and shutdown.
//! - [`app`]: [`app::App`], the one builder an app describes itself with (routes, components,
//!   jobs, migrations, settings); [`cli`]: the commands every app gets.
//! - [`jobs`], [`leader`], [`migrations`]: cron and queued jobs, leader election, the runtime's
//!   and the app's migrations with the boot gate.
//!
//! `README.md` beside `Cargo.toml` is the guide to building an app on it.

pub mod app;
pub mod boot;
pub mod cli;
pub mod component;
pub mod config;
pub mod db;
pub mod error;
pub mod health;
pub mod http;
pub mod jobs;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod migrations;
pub mod query;
pub mod runtime;
pub mod shutdown;
pub mod sse;
pub mod telemetry;

pub use error::Error;

/// The code in `README.md` (the guide), compiled as doctests so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
