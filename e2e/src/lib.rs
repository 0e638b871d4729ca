//! The end-to-end suite of the Kumiko operator: a harness that gives each test a cluster, and the
//! scenarios in `tests/`.
//!
//! The same tests run against two kinds of cluster:
//!
//! - **kube-sim** (the default, `make test` / `make e2e`): the harness starts, in the test's
//!   process, kube-sim's API server with its simulated controllers (real `kumiko-app` processes,
//!   a throwaway Postgres per CNPG Cluster) and the operator (`run_with`).
//! - **an existing cluster** (`make e2e-kind`): when `KUMIKO_E2E_KUBECONFIG` is set, the harness
//!   starts nothing and uses that kubeconfig; the operator is expected to be installed already
//!   (Helm, namespace `KUMIKO_E2E_OPERATOR_NAMESPACE`), and apps use `KUMIKO_E2E_APP_IMAGE`.

pub mod app;
pub mod binaries;
pub mod cluster;
pub mod manifests;
pub mod postgres;
pub mod wait;

pub use app::TestApp;
pub use cluster::{ClusterOptions, TestCluster};
pub use wait::eventually;
