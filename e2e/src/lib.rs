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
//!   The image-update scenarios also need `KUMIKO_E2E_APP_IMAGE_V2` (a second tag of the same
//!   app) and the failed-migration scenario `KUMIKO_E2E_BROKEN_MIGRATION_IMAGE` (an image whose
//!   `migrate apply` fails). Checks that reach pods, Services or Postgres from the test process
//!   (loopback ports published by kube-sim) are kube-sim only.
//!
//! On kube-sim the `kumiko-app` binary is `<target>/debug/kumiko-app` (built once by the harness
//! when missing; `make e2e` builds it first), or `KUMIKO_E2E_APP_BINARY`. Every tag of
//! `kumiko-app` runs it; `kumiko-app:broken-migration` runs a script that fails `migrate` and
//! runs the binary otherwise.

pub mod app;
pub mod binaries;
pub mod cluster;
pub mod manifests;
pub mod postgres;
pub mod shared_postgres;
pub mod tunnel;
pub mod wait;

pub use app::TestApp;
pub use cluster::{ClusterOptions, TestCluster};
pub use shared_postgres::SharedPostgres;
pub use wait::eventually;
