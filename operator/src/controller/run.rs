//! `kumiko-operator run`: the process around the controller.
//!
//! JSON logs (filtered by `RUST_LOG`), the HTTP endpoints, leader election, then the kube-runtime
//! Controller on KumikoApps (owning their Deployments, Jobs, Clusters and Secrets, watching the
//! Secrets they read), with bounded concurrency, until SIGTERM/SIGINT or the loss of the Lease.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{LimitRange, ResourceQuota, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, PartialObjectMeta};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Config, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{PredicateConfig, WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use kumiko_crds::{KumikoApp, names};
use tokio::sync::watch;

use super::Context;
use super::api_requests;
use super::applied::{self, AppliedHashes};
use super::credentials::RolesBackend;
use super::http::{self, Probes};
use super::leader::{self, LeaderConfig, LeaseTimings};
use super::metrics::Metrics;
use super::reconcile::{error_policy, reconcile};
use super::roles_backend::PostgresRoles;
use crate::Error;
use crate::cnpg::Cluster;
use crate::desired::MANAGER;
use crate::gateway_api::{Certificate, HTTPRoute};

/// Settings of `run`.
#[derive(Clone, Debug)]
pub struct RunSettings {
    /// Where `/metrics`, `/healthz` and `/readyz` listen.
    pub http_addr: SocketAddr,
    /// The Lease's name.
    pub lease_name: String,
    /// The Lease's namespace.
    pub lease_namespace: String,
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

/// Whether `secret` is one that `app` reads or owns.
fn app_reads_secret(app: &KumikoApp, secret: &str) -> bool {
    let name = app.name_any();
    let database = &app.spec.database;
    secret == format!("{}-superuser", names::database_cluster(&name))
        || secret == names::owner_secret(&name)
        || secret == names::runtime_secret(&name)
        || database
            .shared
            .as_ref()
            .is_some_and(|shared| shared.admin_secret.name == secret)
        || database
            .external
            .as_ref()
            .is_some_and(|external| external.uri_secret.name == secret)
}

fn apps_reading(
    store: &Store<DeserializeGuard<KumikoApp>>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<DeserializeGuard<KumikoApp>>> {
    let namespace = secret.namespace();
    let name = secret.name_any();
    store
        .state()
        .iter()
        .filter_map(|guard| guard.0.as_ref().ok())
        .filter(|app| app.namespace() == namespace && app_reads_secret(app, &name))
        .map(|app| ObjectRef::new(&app.name_any()).within(&app.namespace().unwrap_or_default()))
        .collect()
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
    let owned =
        watcher::Config::default().labels(&format!("{}={MANAGER}", names::MANAGED_BY_LABEL));
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
    let mapper_store = store.clone();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: MANAGER.to_owned(),
            instance: Some(settings.identity.clone()),
        },
    );
    let context = Arc::new(Context::new(
        client.clone(),
        metrics,
        recorder,
        store,
        roles,
    ));
    let (deleted_tx, deleted_children) = futures::channel::mpsc::unbounded();
    let applied_watches = watch_applied_children(&client, &context.applied, &deleted_tx);
    controller
        // A child deleted by someone else: reconcile its app now, not at the next resync.
        .reconcile_on(deleted_children)
        .owns(Api::<Deployment>::all(client.clone()), owned.clone())
        .owns(Api::<Job>::all(client.clone()), owned.clone())
        // By label, not owner: a retained Cluster has no owner reference (see `owning_app`).
        .watches(Api::<Cluster>::all(client.clone()), owned, |cluster| {
            applied::owning_app(&cluster)
        })
        // Metadata only: that a Secret changed is all a trigger needs (observe reads the few it
        // uses), and a full watch of every Secret in the cluster would hold all their data.
        .watches(
            Api::<PartialObjectMeta<Secret>>::all(client),
            watcher::Config::default(),
            move |secret| apps_reading(&mapper_store, &secret),
        )
        .graceful_shutdown_on(stopped(stop))
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "controller event");
            }
        })
        .await;
    for watch in applied_watches {
        watch.abort();
    }
    tracing::info!("controller stopped");
}

/// One metadata watch per kind the operator applies, feeding `hashes`.
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
        let selector = format!("{}={MANAGER}", names::MANAGED_BY_LABEL);
        tokio::spawn(applied::watch_kind::<K>(
            client.clone(),
            hashes.clone(),
            selector,
            deleted.clone(),
        ))
    }
    vec![
        spawn::<ServiceAccount>(client, hashes, deleted),
        spawn::<ResourceQuota>(client, hashes, deleted),
        spawn::<LimitRange>(client, hashes, deleted),
        spawn::<Cluster>(client, hashes, deleted),
        spawn::<Secret>(client, hashes, deleted),
        spawn::<Job>(client, hashes, deleted),
        spawn::<Deployment>(client, hashes, deleted),
        spawn::<Service>(client, hashes, deleted),
        spawn::<PodDisruptionBudget>(client, hashes, deleted),
        spawn::<HorizontalPodAutoscaler>(client, hashes, deleted),
        spawn::<Ingress>(client, hashes, deleted),
        spawn::<HTTPRoute>(client, hashes, deleted),
        spawn::<Certificate>(client, hashes, deleted),
    ]
}
