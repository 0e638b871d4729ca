//! kube-sim: a local Kubernetes API (see DESIGN §6).

pub mod controllers;
