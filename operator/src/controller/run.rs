//! `kumiko-operator run`: the process around the controller.
//!
//! JSON logs (filtered by `RUST_LOG`), the HTTP endpoints, leader election, then the kube-runtime
//! Controller on KumikoApps, with bounded concurrency, until SIGTERM/SIGINT or the loss of the
//! Lease. The children's watches are the caches' ([`super::caches`]: Deployments, Jobs, Clusters,
//! the operator's Secrets, every Secret's metadata) and the applied hashes' of the other kinds
//! ([`super::applied`]); each wakes the app its object belongs to through `reconcile_on`, and the
//! first reconcile waits until the caches have listed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::core::v1::{LimitRange, ResourceQuota, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Config, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{PredicateConfig, WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use kumiko_crds::KumikoApp;
use tokio::sync::watch;

use super::Context;
use super::api_requests;
use super::applied::{self, AppliedHashes};
use super::caches;
use super::credentials::RolesBackend;
use super::http::{self, Probes};
use super::leader::{self, LeaderConfig, LeaseTimings};
use super::metrics::Metrics;
use super::reconcile::{error_policy, reconcile};
use super::roles_backend::PostgresRoles;
use crate::Error;
use crate::desired::MANAGER;
use crate::gateway_api::Certificate;
use crate::observed::OperatorNamespaces;

/// Settings of `run`.
#[derive(Clone, Debug)]
pub struct RunSettings {
    /// Where `/metrics`, `/healthz` and `/readyz` listen.
    pub http_addr: SocketAddr,
    /// The Lease's name.
    pub lease_name: String,
    /// The Lease's namespace: the operator's own (`POD_NAMESPACE`), which a dedicated database's
    /// NetworkPolicy lets connect.
    pub lease_namespace: String,
    /// The namespace of CloudNativePG's operator, which a dedicated database's NetworkPolicy lets
    /// reach the instances.
    pub cnpg_namespace: String,
    /// This replica's identity.
    pub identity: String,
    /// The most apps reconciled at once.
    pub concurrency: u16,
    /// Campaign for the Lease (off only for a single replica in tests).
    pub leader_election: bool,
    /// The Lease's duration, renew deadline and retry period.
    pub lease_timings: LeaseTimings,
}

/// Sets up JSON logs filtered by `RUST_LOG` (default `info`). Safe to call twice.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .try_init();
}

/// A future that completes on SIGTERM or SIGINT.
async fn termination() {
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs the operator process until a signal (Ok) or the loss of the Lease (Err).
pub async fn run(settings: RunSettings) -> Result<(), Error> {
    init_logging();
    let metrics = Arc::new(Metrics::new());
    let config = kube::Config::infer()
        .await
        .map_err(|source| Error::Connect(kube::Error::InferConfig(source)))?;
    let client = api_requests::counted_client(config, metrics.clone())?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        termination().await;
        tracing::info!("signal received: shutting down");
        let _ = stop_tx.send(true);
    });
    run_with(client, settings, Arc::new(PostgresRoles), metrics, stop_rx).await
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Runs the operator on `client` until `stop` turns true (or the Lease is lost), recording into
/// `metrics`.
pub async fn run_with(
    client: Client,
    settings: RunSettings,
    roles: Arc<dyn RolesBackend>,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) -> Result<(), Error> {
    let ready = Arc::new(AtomicBool::new(false));
    let probes = Probes {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let lease = LeaderConfig {
        namespace: settings.lease_namespace.clone(),
        name: settings.lease_name.clone(),
        identity: settings.identity.clone(),
        timings: settings.lease_timings.checked()?,
    };
    let (bound, server) = http::serve(settings.http_addr, probes, stopped(stop.clone())).await?;
    let server = tokio::spawn(server);
    // The address bound, not the one asked for: `127.0.0.1:0` becomes a real port.
    tracing::info!(addr = %bound, "serving /metrics, /healthz, /readyz");

    ready.store(true, Ordering::SeqCst);
    let mut acquired = tokio::time::Instant::now();
    if settings.leader_election {
        tracing::info!(lease = %lease.name, identity = %lease.identity, "waiting for the lease");
        tokio::select! {
            started = leader::acquire(&client, &lease) => acquired = started,
            () = stopped(stop.clone()) => {
                let _ = server.await;
                return Ok(());
            }
        }
        tracing::info!(identity = %lease.identity, "leading");
        metrics.set_leader(true);
    }

    // Losing the Lease drops the controller future here, and with it every reconcile in flight:
    // kube-runtime runs each in a task behind a `CancelableJoinHandle`, which aborts it when dropped
    // (kube-runtime 5, `controller/mod.rs` `Controller::run`, `utils/mod.rs`).
    let result = tokio::select! {
        () = controller(client.clone(), &settings, metrics.clone(), roles, stop.clone()) => Ok(()),
        lost = async {
            if settings.leader_election {
                leader::hold(&client, &lease, acquired).await
            } else {
                std::future::pending().await
            }
        } => {
            tracing::error!(identity = %lease.identity, reason = %lost, "stopped leading");
            Err(Error::Leader(format!(
                "lost Lease {}/{} ({lost}): stopping so that exactly one replica reconciles",
                lease.namespace, lease.name
            )))
        }
    };
    metrics.set_leader(false);
    if settings.leader_election && result.is_ok() {
        leader::release(&client, &lease).await;
    }
    ready.store(false, Ordering::SeqCst);
    server.abort();
    result
}

/// A hash of what a reconcile acts on besides children: the spec (through `generation`),
/// annotations (retry, rotation), labels, finalizers and deletion. Status is left out. An object
/// that does not deserialize hashes by resourceVersion, so every change of it is seen.
fn app_inputs(app: &DeserializeGuard<KumikoApp>) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let meta = app.meta();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    match &app.0 {
        Ok(_) => (
            meta.generation,
            &meta.annotations,
            &meta.labels,
            &meta.finalizers,
            meta.deletion_timestamp.as_ref().map(|t| t.0.to_string()),
        )
            .hash(&mut hasher),
        Err(_) => meta.resource_version.hash(&mut hasher),
    }
    Some(hasher.finish())
}

async fn controller(
    client: Client,
    settings: &RunSettings,
    metrics: Arc<Metrics>,
    roles: Arc<dyn RolesBackend>,
    stop: watch::Receiver<bool>,
) {
    let apps: Api<DeserializeGuard<KumikoApp>> = Api::all(client.clone());
    let (app_store, app_writer) = reflector::store();
    // The operator's own status writes change nothing it acts on: only what `app_inputs` hashes
    // triggers a reconcile (children's events and requeues do the rest).
    let app_changes = watcher(apps, watcher::Config::default())
        .default_backoff()
        // Nothing reads managedFields: the store keeps apps without them.
        .modify(|app| app.managed_fields_mut().clear())
        .reflect(app_writer)
        .applied_objects()
        .predicate_filter(app_inputs, PredicateConfig::default());
    let controller = Controller::for_stream(app_changes, app_store).with_config(
        Config::default()
            .concurrency(settings.concurrency)
            // A burst of child events (apply, status, rollout) becomes one reconcile.
            .debounce(Duration::from_millis(200)),
    );
    let store = controller.store();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: MANAGER.to_owned(),
            instance: Some(settings.identity.clone()),
        },
    );
    // Every child event wakes its app: the caches' watches (Deployments, Jobs, Clusters, Secrets)
    // after updating their store, the other applied kinds' on deletion or drift.
    let (trigger_tx, triggers) = futures::channel::mpsc::unbounded();
    let applied = Arc::new(AppliedHashes::default());
    let (caches, reflectors) = caches::start(&client, &applied, store.clone(), &trigger_tx);
    let applied_watches = watch_applied_children(&client, &applied, &trigger_tx);
    let mut context = Context::new(
        client.clone(),
        metrics,
        recorder,
        store,
        roles,
        (applied, caches.clone()),
    );
    context.operators = OperatorNamespaces {
        kumiko: settings.lease_namespace.clone(),
        cnpg: settings.cnpg_namespace.clone(),
    };
    let context = Arc::new(context);
    // No reconcile decides from a cache that has not listed yet.
    let ready = tokio::select! {
        () = caches.wait_until_ready() => true,
        () = stopped(stop.clone()) => false,
    };
    if ready {
        tracing::info!("watch caches listed: reconciling");
        controller
            .reconcile_on(triggers)
            .graceful_shutdown_on(stopped(stop))
            .run(reconcile, error_policy, context)
            .for_each(|result| async move {
                if let Err(error) = result {
                    tracing::debug!(%error, "controller event");
                }
            })
            .await;
    }
    for watch in applied_watches {
        watch.abort();
    }
    reflectors.abort();
    tracing::info!("controller stopped");
}

/// One metadata watch per kind the operator applies and does not cache, feeding `hashes`.
fn watch_applied_children(
    client: &Client,
    hashes: &Arc<AppliedHashes>,
    deleted: &UnboundedSender<ObjectRef<DeserializeGuard<KumikoApp>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    fn spawn<K>(
        client: &Client,
        hashes: &Arc<AppliedHashes>,
        deleted: &UnboundedSender<ObjectRef<DeserializeGuard<KumikoApp>>>,
    ) -> tokio::task::JoinHandle<()>
    where
        K: Resource<DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        let selector = caches::managed_selector();
        tokio::spawn(applied::watch_kind::<K>(
            client.clone(),
            hashes.clone(),
            selector,
            deleted.clone(),
        ))
    }
    // Deployments, Jobs, Clusters, Secrets, Ingresses, HTTPRoutes, HorizontalPodAutoscalers and
    // PodMonitors are folded in by the caches' watches.
    vec![
        spawn::<ServiceAccount>(client, hashes, deleted),
        spawn::<ResourceQuota>(client, hashes, deleted),
        spawn::<LimitRange>(client, hashes, deleted),
        spawn::<Service>(client, hashes, deleted),
        spawn::<PodDisruptionBudget>(client, hashes, deleted),
        spawn::<Certificate>(client, hashes, deleted),
        spawn::<NetworkPolicy>(client, hashes, deleted),
    ]
}
