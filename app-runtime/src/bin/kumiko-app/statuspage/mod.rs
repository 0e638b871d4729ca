//! The reference app's domain: a public status page with components, incidents and an uptime
//! roll-up. The API (`kumiko-app serve`) calls these queries; the worker (`kumiko-app worker`)
//! runs [`job_registry`].
//!
//! - [`model`]: the types and the pure rules (validation, overall status, uptime ratio).
//! - [`store`]: the queries, the same SQL on SQLite and Postgres.
//! - [`uptime`]: the roll-up cron job and the per-component recompute job.
//!
//! Errors: bad input is [`kumiko_runtime::Error::Invalid`] (every field problem listed, for a 400), a
//! missing object is [`kumiko_runtime::Error::NotFound`] (404), anything else is a database error (500).

pub mod model;
pub mod store;
pub mod uptime;

#[cfg(test)]
pub use model::ComponentStatus;
pub use model::{
    Component, Incident, NewComponent, NewIncident, StatusChange, StatusSummary, Uptime,
};
pub use store::{
    create_component, create_incident, get_component, list_components, list_incidents, list_uptime,
    resolve_incident, set_component_status, status_summary,
};
#[cfg(test)]
pub use uptime::job_registry;
pub use uptime::request_recompute;

#[cfg(test)]
mod tests;
