//! The Kumiko operator: reconciles KumikoApps into quota, database, roles, migrations and rollouts.
//!
//! The reconcile pipeline is `validate -> observe -> plan -> execute -> status`; each step is its own
//! module (DESIGN §3): [`validate`], [`controller::observe`], [`controller::plan`] (building the
//! children with [`desired`]), [`controller::execute`], [`controller::status`]. Only `observe`,
//! `execute` and the status write touch the network.

pub mod cli;
pub mod cnpg;
pub mod controller;
pub mod desired;
pub mod error;
pub mod gateway_api;
pub mod observed;
pub mod prometheus_operator;
pub mod quantity;
pub mod render;
pub mod roles;
pub mod validate;
pub mod validation;

pub use error::Error;
