//! kube-sim: a local Kubernetes API server for tests where no cluster runs (see DESIGN §6 and
//! this crate's README). It serves the Kubernetes REST API over loopback HTTP to kube-rs clients
//! and `kubectl`, keeping objects in memory with the semantics of kube-apiserver: resourceVersions,
//! watches, server-side apply, the status subresource, finalizers, garbage collection, and CRD
//! schema and CEL validation.
//!
//! Start it in-process with [`Server::start`], or run the `kube-sim` binary.

pub mod admission;
pub mod api;
pub mod authn;
pub mod authz;
pub mod builtin;
pub mod cluster;
pub mod cluster_ips;
pub mod connect;
pub mod controllers;
pub mod crd;
pub mod discovery;
pub mod events;
pub mod faults;
pub mod gc;
pub mod logs;
pub mod managed;
pub mod meta;
pub mod names;
pub mod network_policy;
pub mod patch;
pub mod pod_metrics;
pub mod protobuf;
pub mod rbac;
pub mod registry;
pub mod scale;
pub mod selectors;
pub mod server;
pub mod shape;
pub mod status;
pub mod strategy;
pub mod table;
pub mod tls;
pub mod watch;
pub mod write;

pub use cluster::{Cluster, ClusterConfig};
pub use server::{Config, Server, ServerHandle, SimError};
