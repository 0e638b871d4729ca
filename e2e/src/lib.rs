//! The end-to-end suite of the Kumiko operator: a harness that gives each test a cluster, and the
//! scenarios in `tests/`.
//!
//! The same tests run against two kinds of cluster, through one code path:
//!
//! - **kube-sim** (the default, `make test` / `make e2e`): the harness starts, in the test's
//!   process, kube-sim's API server with its simulated controllers (real `kumiko-app` processes,
//!   a throwaway Postgres per CNPG Cluster) and the operator (`run_with`).
//! - **an existing cluster** (`make e2e-kind`): when `KUMIKO_E2E_KUBECONFIG` is set, the harness
//!   starts nothing and uses that kubeconfig; the operator is expected to be installed already
//!   (Helm, namespace `KUMIKO_E2E_OPERATOR_NAMESPACE`, two replicas electing a leader on the
//!   Lease `kumiko-operator` there), and apps use `KUMIKO_E2E_APP_IMAGE`. The image-update
//!   scenarios also need `KUMIKO_E2E_APP_IMAGE_V2` (a second tag of the same app) and the
//!   failed-migration scenario `KUMIKO_E2E_BROKEN_MIGRATION_IMAGE` (an image running
//!   `kumiko-app-broken-migration`, `src/bin/`, whose `migrate` fails).
//!   `KUMIKO_E2E_TIMEOUT_SCALE` multiplies every wait (`make e2e-kind` sets 5: image pulls and
//!   CNPG start far slower than kube-sim).
//!
//! The test process reaches the cluster only through the Kubernetes API, on both:
//!
//! - HTTP to a pod or a Service through the API server's proxy subresources
//!   ([`TestCluster::pod_http_status`], [`TestCluster::service_get`]), with the upstream's own
//!   status code;
//! - Postgres with the URIs the Secrets publish ([`TestCluster::postgres`]): a host that is an
//!   address (kube-sim's loopback Postgres) is used as it is; a Service name (`<cluster>-rw`, as
//!   CNPG writes it on kind) goes through a local [`tunnel::ServiceTunnel`] over the
//!   `portforward` of a ready pod behind that Service (`tests/postgres_tunnel.rs` runs it on
//!   kube-sim too, against the CNPG simulation's instance pods);
//! - a superuser for looking into Postgres after an app is gone: a CNPG Cluster the harness
//!   creates with superuser access and apps use in the `shared` database mode
//!   ([`SharedPostgres`]);
//! - the operator's leader through its Lease ([`TestCluster::operator_leader`]); killing a
//!   replica aborts it in-process on kube-sim and deletes its pod (grace 0) elsewhere.
//!
//! Only API fault injection (`tests/api_faults.rs`) is kube-sim's alone.
//!
//! `make e2e-existing` (part of `make test`) runs the suite in the existing-cluster mode against a
//! standalone kube-sim (`scripts/e2e-existing.sh`): the operator installed as a Deployment of two
//! replicas in `kumiko-system`, images mapped to the local binaries, the same environment
//! `make e2e-kind` passes. What differs on kind is the cluster, not the suite's code.
//!
//! On kube-sim the `kumiko-app` binary is `<target>/debug/kumiko-app` (built once by the harness
//! when missing; `make e2e` builds it first), or `KUMIKO_E2E_APP_BINARY`. Every tag of
//! `kumiko-app` runs it; `kumiko-app:broken-migration` runs `kumiko-app-broken-migration` (this
//! crate's binary, which cargo builds with the tests) beside a link to it.

pub mod app;
pub mod binaries;
pub mod chart;
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
