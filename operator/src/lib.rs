//! The Kumiko operator: reconciles KumikoApps into quota, database, roles, migrations and rollouts.
//!
//! The reconcile pipeline is `observe -> validate -> build desired -> apply -> status`; each step is
//! its own module (DESIGN §3). Only `observe`, `apply` and the status write touch the network.

pub mod cli;
pub mod cnpg;
pub mod controller;
pub mod desired;
pub mod error;
pub mod observed;
pub mod quantity;
pub mod render;
pub mod roles;
pub mod validation;

pub use error::Error;
