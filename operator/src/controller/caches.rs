//! The watch caches a reconcile observes from: one reflector per kind the decisions read, each fed
//! by one watch that also wakes the reconcile of the app its object belongs to.
//!
//! - the API and worker Deployments, the migrate Jobs, the CNPG Clusters, the API's Ingress or
//!   HTTPRoute, the HorizontalPodAutoscalers (their `ScalingActive` condition), the PodMonitor
//!   and the operator's own credential Secrets (`<app>-db-owner`, `<app>-db-runtime`):
//!   watched by the operator's
//!   `app.kubernetes.io/managed-by` label, so objects of anyone else are never listed;
//! - every Secret in the cluster as metadata only (`PartialObjectMeta`): the Secrets an app names
//!   (CNPG's `<cluster>-superuser`, a shared cluster's admin Secret, an external database's URI
//!   Secret) are not the operator's, so they carry no label to select them by. The metadata says
//!   whether such a Secret exists and which `resourceVersion` it has; its data is read by name
//!   (one GET) the first time and again only when the `resourceVersion` changed, and kept in
//!   [`SecretData`] for exactly the Secrets apps read. The cluster's other Secrets (Helm
//!   releases, TLS keys, ...) cost the operator their names, never their data.
//!
//! Each watch event is, in this order: folded into the applied hashes (they need
//! `metadata.managedFields`, see [`super::applied`]), slimmed to what the decisions read
//! ([`slim_deployment`], [`slim_job`], [`slim_secret_metadata`]; `managedFields` always go),
//! written into the store, and only then sent as a trigger for the owning app's reconcile, so
//! the reconcile it wakes observes at least what woke it.
//!
//! A store that has not listed yet is never read as "absent": [`super::run`] waits until every
//! store has listed once (kube-runtime's `Store::wait_until_ready`, released by the first complete
//! list) before the first reconcile. The exceptions are the Cluster, HTTPRoute and PodMonitor
//! stores when the API server answers their list with 404 ([`WatchState::NotServed`]:
//! CloudNativePG, the Gateway API or prometheus-operator is not installed, as
//! kube-apiserver answers for a resource no API group serves): there is then none to find, and
//! applying one reports what to install (a PodMonitor is not applied at all: the status says
//! what to install). Its watch keeps retrying with back-off (kube-runtime's default: up to 30 s
//! apart) and lists once the CRD is installed; that first list after a 404 wakes every app, so
//! an app waiting for the kind is reconciled without waiting for its resync.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use futures::channel::mpsc::UnboundedSender;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec, Secret};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, PartialObjectMeta};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use kumiko_crds::{KumikoApp, names};
use serde::de::DeserializeOwned;

use super::applied::{self, AppliedHashes};
use crate::Error;
use crate::cnpg::Cluster;
use crate::desired::MANAGER;
use crate::gateway_api::HTTPRoute;
use crate::prometheus_operator::PodMonitor;

/// The app a trigger wakes.
pub type AppRef = ObjectRef<DeserializeGuard<KumikoApp>>;

/// The annotation `kubectl apply` keeps a whole copy of the object in: never read here.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The stores every reconcile reads from.
#[derive(Clone)]
pub struct Caches {
    /// The operator's Deployments, slimmed by [`slim_deployment`].
    pub deployments: Store<Deployment>,
    /// The operator's Jobs, slimmed by [`slim_job`].
    pub jobs: Store<Job>,
    /// The operator's CNPG Clusters (without managedFields).
    pub clusters: Store<Cluster>,
    /// The operator's own Secrets, with their data (without managedFields).
    pub credentials: Store<Secret>,
    /// The operator's Ingresses (without managedFields).
    pub ingresses: Store<Ingress>,
    /// The operator's Gateway API HTTPRoutes (without managedFields).
    pub http_routes: Store<HTTPRoute>,
    /// The operator's HorizontalPodAutoscalers, slimmed by [`slim_autoscaler`].
    pub autoscalers: Store<HorizontalPodAutoscaler>,
    /// The operator's prometheus-operator PodMonitors (without managedFields).
    pub pod_monitors: Store<PodMonitor>,
    /// Every Secret's name and resourceVersion ([`slim_secret_metadata`]).
    pub secrets: Store<PartialObjectMeta<Secret>>,
    /// The data of the Secrets apps name, by resourceVersion.
    pub secret_data: Arc<SecretData>,
    /// How each watch fared, in the order of the stores above.
    pub states: WatchStates,
}

/// How the watch of one cached kind fared.
#[derive(Clone, Debug, PartialEq)]
pub enum WatchState {
    /// Not known yet: the watch has neither listed nor been answered with an error.
    Unknown,
    /// The watch has listed: its store can be read.
    Listed,
    /// The API server answered 404 to the list: the kind's CRD is not installed. The watch keeps
    /// retrying, with back-off, and lists once it is.
    NotServed,
    /// The API server refused the list or watch (403: the operator's RBAC lacks `list` or
    /// `watch`), with its answer. The watch keeps retrying.
    Refused(Box<kube::core::Status>),
}

/// The state of every cached kind's watch.
#[derive(Clone)]
pub struct WatchStates {
    deployments: tokio::sync::watch::Receiver<WatchState>,
    jobs: tokio::sync::watch::Receiver<WatchState>,
    clusters: tokio::sync::watch::Receiver<WatchState>,
    credentials: tokio::sync::watch::Receiver<WatchState>,
    ingresses: tokio::sync::watch::Receiver<WatchState>,
    http_routes: tokio::sync::watch::Receiver<WatchState>,
    autoscalers: tokio::sync::watch::Receiver<WatchState>,
    pod_monitors: tokio::sync::watch::Receiver<WatchState>,
    secrets: tokio::sync::watch::Receiver<WatchState>,
}

/// What the caches know of the app's CNPG Cluster.
#[derive(Clone, Debug, PartialEq)]
pub enum ClusterLookup {
    /// The Cluster watch has listed: the Cluster, or `None` when there is none.
    Known(Option<Arc<Cluster>>),
    /// The cluster does not serve Clusters (CloudNativePG is not installed): there is none.
    NotServed,
}

/// What the caches know of the app's PodMonitor.
#[derive(Clone, Debug, PartialEq)]
pub enum PodMonitorLookup {
    /// The PodMonitor watch has listed: the PodMonitor, or `None` when there is none.
    Known(Option<Arc<PodMonitor>>),
    /// The cluster does not serve PodMonitors (prometheus-operator's CRDs are not installed).
    NotServed,
}

/// `Ok` when a store has listed; else why it cannot be read: the API server's refusal (a
/// permanent error naming it, as a failed read would be), or not listed yet (transient).
fn readable(
    synced: bool,
    state: &tokio::sync::watch::Receiver<WatchState>,
    what: &'static str,
) -> Result<(), Error> {
    if synced {
        return Ok(());
    }
    match &*state.borrow() {
        WatchState::Refused(status) => Err(Error::Kube {
            action: format!("watching {what}"),
            source: kube::Error::Api(status.clone()),
        }),
        WatchState::Unknown | WatchState::Listed | WatchState::NotServed => {
            Err(Error::CacheNotSynced { what })
        }
    }
}

impl Caches {
    /// The Deployments' store, once it can be read.
    pub fn deployments(&self) -> Result<&Store<Deployment>, Error> {
        readable(
            is_synced(&self.deployments),
            &self.states.deployments,
            "the operator's Deployments",
        )
        .map(|()| &self.deployments)
    }

    /// The Jobs' store, once it can be read.
    pub fn jobs(&self) -> Result<&Store<Job>, Error> {
        readable(
            is_synced(&self.jobs),
            &self.states.jobs,
            "the operator's Jobs",
        )
        .map(|()| &self.jobs)
    }

    /// The operator's Secrets' store, once it can be read.
    pub fn credentials(&self) -> Result<&Store<Secret>, Error> {
        readable(
            is_synced(&self.credentials),
            &self.states.credentials,
            "the operator's Secrets",
        )
        .map(|()| &self.credentials)
    }

    /// The API's Ingress `namespace/name`, once the Ingresses' store can be read.
    pub fn ingress(&self, namespace: &str, name: &str) -> Result<Option<Ingress>, Error> {
        readable(
            is_synced(&self.ingresses),
            &self.states.ingresses,
            "the operator's Ingresses",
        )?;
        Ok(self
            .ingresses
            .get(&ObjectRef::new(name).within(namespace))
            .map(|ingress| Ingress::clone(&ingress)))
    }

    /// The API's HTTPRoute `namespace/name`; none where the Gateway API is not installed.
    pub fn http_route(&self, namespace: &str, name: &str) -> Result<Option<HTTPRoute>, Error> {
        let synced = is_synced(&self.http_routes);
        if !synced && *self.states.http_routes.borrow() == WatchState::NotServed {
            return Ok(None);
        }
        readable(
            synced,
            &self.states.http_routes,
            "the operator's HTTPRoutes",
        )?;
        Ok(self
            .http_routes
            .get(&ObjectRef::new(name).within(namespace))
            .map(|route| HTTPRoute::clone(&route)))
    }

    /// The HorizontalPodAutoscaler `namespace/name`, once their store can be read.
    pub fn autoscaler(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<HorizontalPodAutoscaler>, Error> {
        readable(
            is_synced(&self.autoscalers),
            &self.states.autoscalers,
            "the operator's HorizontalPodAutoscalers",
        )?;
        Ok(self
            .autoscalers
            .get(&ObjectRef::new(name).within(namespace))
            .map(|autoscaler| HorizontalPodAutoscaler::clone(&autoscaler)))
    }

    /// The app's PodMonitor `namespace/name`, as far as the caches know it.
    pub fn pod_monitor(&self, namespace: &str, name: &str) -> Result<PodMonitorLookup, Error> {
        let synced = is_synced(&self.pod_monitors);
        if !synced && *self.states.pod_monitors.borrow() == WatchState::NotServed {
            return Ok(PodMonitorLookup::NotServed);
        }
        readable(
            synced,
            &self.states.pod_monitors,
            "the operator's PodMonitors",
        )?;
        Ok(PodMonitorLookup::Known(
            self.pod_monitors
                .get(&ObjectRef::new(name).within(namespace)),
        ))
    }

    /// Whether every Secret's metadata can be read (`Ok(false)`: not listed yet, read by name).
    pub fn secrets_listed(&self) -> Result<bool, Error> {
        match readable(is_synced(&self.secrets), &self.states.secrets, "Secrets") {
            Ok(()) => Ok(true),
            Err(Error::CacheNotSynced { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// The app's Cluster `namespace/name`, as far as the caches know it.
    pub fn cluster(&self, namespace: &str, name: &str) -> Result<ClusterLookup, Error> {
        let synced = is_synced(&self.clusters);
        if !synced && *self.states.clusters.borrow() == WatchState::NotServed {
            return Ok(ClusterLookup::NotServed);
        }
        readable(synced, &self.states.clusters, "CNPG Clusters")?;
        Ok(ClusterLookup::Known(
            self.clusters.get(&ObjectRef::new(name).within(namespace)),
        ))
    }

    /// Waits until every watch has listed once or been answered with an error (a kind not
    /// served, a refusal): a reconcile then reads a store, or reports why it cannot.
    pub async fn wait_until_ready(&self) {
        let answered = |state: &tokio::sync::watch::Receiver<WatchState>| {
            let mut state = state.clone();
            async move {
                // The borrow the wait returns is dropped at once: it must not be held across
                // the other waits.
                let _ = state
                    .wait_for(|state| *state != WatchState::Unknown)
                    .await
                    .map(|_| ());
            }
        };
        let states = &self.states;
        futures::join!(
            answered(&states.deployments),
            answered(&states.jobs),
            answered(&states.clusters),
            answered(&states.credentials),
            answered(&states.ingresses),
            answered(&states.http_routes),
            answered(&states.autoscalers),
            answered(&states.pod_monitors),
            answered(&states.secrets),
        );
    }
}

/// Whether `store` has completed its first list (without waiting).
pub fn is_synced<K>(store: &Store<K>) -> bool
where
    K: reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

/// The running reflectors behind [`Caches`]; dropping it stops nothing, [`Reflectors::abort`]
/// does.
pub struct Reflectors(Vec<tokio::task::JoinHandle<()>>);

impl Reflectors {
    /// Stops every reflector.
    pub fn abort(self) {
        for task in self.0 {
            task.abort();
        }
    }
}

/// Starts one reflector per cached kind on `client`, folding the operator's children into
/// `hashes` and sending the app each event concerns to `triggers` (`apps`: the KumikoApps, to
/// find which ones read a Secret).
pub fn start(
    client: &Client,
    hashes: &Arc<AppliedHashes>,
    apps: Store<DeserializeGuard<KumikoApp>>,
    triggers: &UnboundedSender<AppRef>,
) -> (Caches, Reflectors) {
    let owned = watcher::Config::default().labels(&managed_selector());
    let reading = apps.clone();
    let (deployments, deployments_writer) = reflector::store();
    let (jobs, jobs_writer) = reflector::store();
    let (clusters, clusters_writer) = reflector::store();
    let (credentials, credentials_writer) = reflector::store();
    let (ingresses, ingresses_writer) = reflector::store();
    let (http_routes, http_routes_writer) = reflector::store();
    let (autoscalers, autoscalers_writer) = reflector::store();
    let (pod_monitors, pod_monitors_writer) = reflector::store();
    let (secrets, secrets_writer) = reflector::store();
    let state = || tokio::sync::watch::channel(WatchState::Unknown);
    let (deployments_state, deployments_listed) = state();
    let (jobs_state, jobs_listed) = state();
    let (clusters_state, clusters_listed) = state();
    let (credentials_state, credentials_listed) = state();
    let (ingresses_state, ingresses_listed) = state();
    let (http_routes_state, http_routes_listed) = state();
    let (autoscalers_state, autoscalers_listed) = state();
    let (pod_monitors_state, pod_monitors_listed) = state();
    let (secrets_state, secrets_listed) = state();
    let tasks = vec![
        tokio::spawn(reflect(
            Api::<Deployment>::all(client.clone()),
            owned.clone(),
            deployments_writer,
            Some(hashes.clone()),
            slim_deployment,
            |object| applied::owning_app(object).into_iter().collect(),
            (triggers.clone(), deployments_state, apps.clone()),
        )),
        tokio::spawn(reflect(
            Api::<Job>::all(client.clone()),
            owned.clone(),
            jobs_writer,
            Some(hashes.clone()),
            slim_job,
            |object| applied::owning_app(object).into_iter().collect(),
            (triggers.clone(), jobs_state, apps.clone()),
        )),
        // By label, not owner: a retained Cluster has no owner reference (see `owning_app`).
        tokio::spawn(reflect(
            Api::<Cluster>::all(client.clone()),
            owned.clone(),
            clusters_writer,
            Some(hashes.clone()),
            strip_managed_fields,
            |object| applied::owning_app(object).into_iter().collect(),
            (triggers.clone(), clusters_state, apps.clone()),
        )),
        tokio::spawn(reflect(
            Api::<Ingress>::all(client.clone()),
            owned.clone(),
            ingresses_writer,
            Some(hashes.clone()),
            strip_managed_fields,
            |object| applied::owning_app(object).into_iter().collect(),
            (triggers.clone(), ingresses_state, apps.clone()),
        )),
        // A cluster without the Gateway API answers 404: the store stays empty (`NotServed`).
        tokio::spawn(reflect(
            Api::<HTTPRoute>::all(client.clone()),
            owned.clone(),
            http_routes_writer,
            Some(hashes.clone()),
            strip_managed_fields,
            |object| applied::owning_app(object).into_iter().collect(),
            (triggers.clone(), http_routes_state, apps.clone()),
        )),
        tokio::spawn(reflect(
            Api::<HorizontalPodAutoscaler>::all(client.clone()),
            owned.clone(),
            autoscalers_writer,
            Some(hashes.clone()),
            slim_autoscaler,
            |object| applied::owning_app(object).into_iter().collect(),
            (triggers.clone(), autoscalers_state, apps.clone()),
        )),
        // A cluster without prometheus-operator answers 404: the store stays empty
        // (`NotServed`); its first list once the CRD is installed wakes every app.
        tokio::spawn(reflect(
            Api::<PodMonitor>::all(client.clone()),
            owned.clone(),
            pod_monitors_writer,
            Some(hashes.clone()),
            strip_managed_fields,
            |object| applied::owning_app(object).into_iter().collect(),
            (triggers.clone(), pod_monitors_state, apps.clone()),
        )),
        tokio::spawn(reflect(
            Api::<Secret>::all(client.clone()),
            owned,
            credentials_writer,
            Some(hashes.clone()),
            strip_managed_fields,
            |object| applied::owning_app(object).into_iter().collect(),
            (triggers.clone(), credentials_state, apps.clone()),
        )),
        tokio::spawn(reflect(
            Api::<PartialObjectMeta<Secret>>::all(client.clone()),
            watcher::Config::default(),
            secrets_writer,
            None,
            slim_secret_metadata,
            move |secret| apps_reading(&reading, secret),
            (triggers.clone(), secrets_state, apps.clone()),
        )),
    ];
    let caches = Caches {
        deployments,
        jobs,
        clusters,
        credentials,
        ingresses,
        http_routes,
        autoscalers,
        pod_monitors,
        secrets,
        secret_data: Arc::new(SecretData::default()),
        states: WatchStates {
            deployments: deployments_listed,
            jobs: jobs_listed,
            clusters: clusters_listed,
            credentials: credentials_listed,
            ingresses: ingresses_listed,
            http_routes: http_routes_listed,
            autoscalers: autoscalers_listed,
            pod_monitors: pod_monitors_listed,
            secrets: secrets_listed,
        },
    };
    (caches, Reflectors(tasks))
}

/// The label selector of everything the operator creates.
pub fn managed_selector() -> String {
    format!("{}={MANAGER}", names::MANAGED_BY_LABEL)
}

/// One reflector: the watch of `api`, each event folded into `hashes` (when given), slimmed,
/// written by `writer`, then its app(s) sent to `triggers`; how the watch fares goes to `state`. Runs until the task is aborted (the watcher retries with back-off and
/// relists).
async fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    mut writer: Writer<K>,
    hashes: Option<Arc<AppliedHashes>>,
    slim: fn(&mut K),
    apps_of: impl Fn(&K) -> Vec<AppRef>,
    (triggers, state, every_app): (
        UnboundedSender<AppRef>,
        tokio::sync::watch::Sender<WatchState>,
        Store<DeserializeGuard<KumikoApp>>,
    ),
) where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let kind = K::kind(&()).into_owned();
    let mut events = watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                if let Some(answer) = answered(&error) {
                    state.send_replace(answer);
                }
                tracing::debug!(%kind, %error, "watch of a cached kind");
                continue;
            }
        };
        // The kind was not served and now is (its CRD was installed): every app may be waiting
        // for it, and none is woken by an object of it yet (woken once the store has it).
        let served_now = matches!(event, watcher::Event::InitDone)
            && state.send_replace(WatchState::Listed) == WatchState::NotServed;
        if let Some(hashes) = &hashes
            && hashes.observe(&kind, &event)
            && let watcher::Event::Apply(object) = &event
        {
            let app = applied::owning_app(object);
            tracing::info!(%kind, app = ?app, "a child drifted from what was applied");
        }
        let event = event.modify(slim);
        writer.apply_watcher_event(&event);
        match &event {
            watcher::Event::Apply(object)
            | watcher::Event::Delete(object)
            | watcher::Event::InitApply(object) => {
                for app in apps_of(object) {
                    // The controller is gone when the receiver is: nothing to tell.
                    let _ = triggers.unbounded_send(app);
                }
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
        if served_now {
            for app in all_apps(&every_app) {
                let _ = triggers.unbounded_send(app);
            }
        }
    }
}

/// Every app the store holds.
fn all_apps(apps: &Store<DeserializeGuard<KumikoApp>>) -> Vec<AppRef> {
    apps.state()
        .iter()
        .filter_map(|guard| guard.0.as_ref().ok())
        .filter_map(|app| {
            Some(
                ObjectRef::new(app.metadata.name.as_deref()?)
                    .within(app.metadata.namespace.as_deref()?),
            )
        })
        .collect()
}

/// What the API server's answer to a failed list or watch says of the kind: not served (404,
/// kube-apiserver's answer for a resource no API group serves) or refused (403); `None` for a
/// failure that says neither (a dropped connection, a server error: retried as it is).
fn answered(error: &watcher::Error) -> Option<WatchState> {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status)) => match status.code {
            404 => Some(WatchState::NotServed),
            403 => Some(WatchState::Refused(status.clone())),
            _ => None,
        },
        watcher::Error::InitialListFailed(_)
        | watcher::Error::WatchStartFailed(_)
        | watcher::Error::WatchError(_)
        | watcher::Error::WatchFailed(_)
        | watcher::Error::NoResourceVersion => None,
    }
}

/// Drops `metadata.managedFields` (the applied hashes have read them already) and the
/// `kubectl apply` copy of the object.
pub fn strip_managed_fields<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// A Deployment as the decisions read it: its metadata (generation, annotations), its status,
/// and of its spec only the replicas and the first container's image
/// ([`super::steps::availability`], [`super::plan::running_image`]).
pub fn slim_deployment(deployment: &mut Deployment) {
    strip_managed_fields(deployment);
    if let Some(spec) = deployment.spec.as_mut() {
        let image = spec
            .template
            .spec
            .as_ref()
            .and_then(|pod| pod.containers.first())
            .map(|container| Container {
                name: container.name.clone(),
                image: container.image.clone(),
                ..Container::default()
            });
        spec.template = PodTemplateSpec {
            metadata: None,
            spec: image.map(|container| PodSpec {
                containers: vec![container],
                ..PodSpec::default()
            }),
        };
        spec.selector = LabelSelector::default();
    }
}

/// A HorizontalPodAutoscaler as the decisions read it: its metadata and status (the
/// `ScalingActive` condition, [`super::plan::autoscaler_activity`]); nothing reads its spec.
pub fn slim_autoscaler(autoscaler: &mut HorizontalPodAutoscaler) {
    strip_managed_fields(autoscaler);
    autoscaler.spec = None;
}

/// A Job as the decisions read it: its metadata (name, creation time, the migrated image's
/// annotation) and its status ([`super::steps::job_outcome`]); nothing reads its spec.
pub fn slim_job(job: &mut Job) {
    strip_managed_fields(job);
    job.spec = None;
}

/// A Secret's metadata as the caches read it: which Secret, and its resourceVersion. Labels,
/// annotations (a `kubectl apply` copy holds the whole Secret) and managedFields go.
pub fn slim_secret_metadata(secret: &mut PartialObjectMeta<Secret>) {
    let meta = std::mem::take(&mut secret.metadata);
    secret.metadata = ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        resource_version: meta.resource_version,
        ..ObjectMeta::default()
    };
}

/// Whether `secret` (in the app's namespace) is one that `app` reads or owns.
fn app_reads_secret(app: &KumikoApp, secret: &str) -> bool {
    let name = app.metadata.name.as_deref().unwrap_or_default();
    let database = &app.spec.database;
    names::owner_secret(name) == secret
        || names::runtime_secret(name) == secret
        || crate::cnpg::superuser_secret(&names::database_cluster(name)) == secret
        || database
            .shared
            .as_ref()
            .is_some_and(|shared| shared.admin_secret.name == secret)
        || database
            .external
            .as_ref()
            .is_some_and(|external| external.uri_secret.name == secret)
}

/// The apps in `secret`'s namespace that read or own it.
fn apps_reading(
    apps: &Store<DeserializeGuard<KumikoApp>>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<AppRef> {
    let (Some(namespace), Some(name)) = (
        secret.metadata.namespace.as_deref(),
        secret.metadata.name.as_deref(),
    ) else {
        return Vec::new();
    };
    apps.state()
        .iter()
        .filter_map(|guard| guard.0.as_ref().ok())
        .filter(|app| app.metadata.namespace.as_deref() == Some(namespace))
        .filter(|app| app_reads_secret(app, name))
        .filter_map(|app| Some(ObjectRef::new(app.metadata.name.as_deref()?).within(namespace)))
        .collect()
}

/// The decoded data of the Secrets apps name (not the operator's own), each with the
/// resourceVersion it was read at.
#[derive(Debug, Default)]
pub struct SecretData {
    entries: Mutex<HashMap<(String, String), CachedSecret>>,
}

/// One Secret's data as read.
#[derive(Clone, Debug)]
struct CachedSecret {
    resource_version: Option<String>,
    data: BTreeMap<String, String>,
}

/// What [`SecretData::lookup`] knows, given the Secret's metadata from the watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretLookup {
    /// The metadata watch has not listed yet, or the data read is older: read the Secret.
    Read,
    /// The Secret does not exist.
    Absent,
    /// The data, current with the watch.
    Data(BTreeMap<String, String>),
}

impl SecretData {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), CachedSecret>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What is known of Secret `namespace/name`: `watched` is its metadata as the watch has it
    /// (`None`: the watch has not listed yet; `Some(None)`: listed, and absent).
    pub fn lookup(
        &self,
        namespace: &str,
        name: &str,
        watched: Option<Option<&ObjectMeta>>,
    ) -> SecretLookup {
        let key = (namespace.to_owned(), name.to_owned());
        let mut entries = self.entries();
        match watched {
            None => SecretLookup::Read,
            Some(None) => {
                entries.remove(&key);
                SecretLookup::Absent
            }
            Some(Some(meta)) => match entries.get(&key) {
                Some(cached)
                    if cached.resource_version.is_some()
                        && cached.resource_version == meta.resource_version =>
                {
                    SecretLookup::Data(cached.data.clone())
                }
                Some(_) | None => SecretLookup::Read,
            },
        }
    }

    /// Keeps what a read of `namespace/name` returned (`None`: it does not exist).
    pub fn read(&self, namespace: &str, name: &str, secret: Option<&Secret>) {
        let key = (namespace.to_owned(), name.to_owned());
        let mut entries = self.entries();
        match secret {
            Some(secret) => {
                entries.insert(
                    key,
                    CachedSecret {
                        resource_version: secret.metadata.resource_version.clone(),
                        data: super::observe::secret_data(secret),
                    },
                );
            }
            None => {
                entries.remove(&key);
            }
        }
    }

    /// How many Secrets' data is held.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// Whether no Secret's data is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use k8s_openapi::api::batch::v1::{JobSpec, JobStatus};
    use k8s_openapi::api::core::v1::EnvVar;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    fn managed() -> Option<Vec<ManagedFieldsEntry>> {
        Some(vec![ManagedFieldsEntry {
            manager: Some("kumiko-operator".to_owned()),
            ..ManagedFieldsEntry::default()
        }])
    }

    #[test]
    fn a_cached_deployment_keeps_what_availability_reads_and_nothing_else() {
        let mut deployment = Deployment::default();
        deployment.metadata.name = Some("shop-api".to_owned());
        deployment.metadata.generation = Some(3);
        deployment.metadata.managed_fields = managed();
        let container = |name: &str| Container {
            name: name.to_owned(),
            image: Some(format!("{name}:1")),
            env: Some(vec![EnvVar {
                name: "A".to_owned(),
                value: Some("a".repeat(1000)),
                value_from: None,
            }]),
            ..Container::default()
        };
        deployment.spec = Some(DeploymentSpec {
            replicas: Some(2),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta::default()),
                spec: Some(PodSpec {
                    containers: vec![container("app"), container("sidecar")],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        });
        deployment.status = Some(DeploymentStatus {
            available_replicas: Some(2),
            ..DeploymentStatus::default()
        });
        let before = deployment.clone();
        slim_deployment(&mut deployment);

        assert_eq!(deployment.metadata.managed_fields, None);
        assert_eq!(deployment.status, before.status);
        assert_eq!(deployment.metadata.generation, Some(3));
        let spec = deployment.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(2));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.containers.len(), 1);
        assert_eq!(pod.containers[0].image.as_deref(), Some("app:1"));
        assert_eq!(pod.containers[0].env, None);
        // What the decisions read is the same before and after.
        assert_eq!(
            super::super::plan::running_image(Some(&deployment)),
            super::super::plan::running_image(Some(&before))
        );
        assert_eq!(
            super::super::steps::availability(
                Some(&deployment),
                "app:1",
                super::super::steps::Wanted::Exactly(2),
            ),
            super::super::steps::availability(
                Some(&before),
                "app:1",
                super::super::steps::Wanted::Exactly(2),
            )
        );
    }

    #[test]
    fn a_cached_job_keeps_its_metadata_and_status_and_drops_its_spec() {
        let mut job = Job::default();
        job.metadata.name = Some("shop-migrate-abc".to_owned());
        job.metadata.managed_fields = managed();
        job.metadata.annotations = Some(BTreeMap::from([
            ("kumiko.so/image".to_owned(), "app:1".to_owned()),
            (LAST_APPLIED.to_owned(), "{...}".to_owned()),
        ]));
        job.spec = Some(JobSpec::default());
        job.status = Some(JobStatus {
            succeeded: Some(1),
            ..JobStatus::default()
        });
        slim_job(&mut job);
        assert_eq!(job.spec, None);
        assert_eq!(job.metadata.managed_fields, None);
        assert_eq!(super::super::steps::job_image(&job), Some("app:1"));
        assert_eq!(
            job.metadata.annotations.as_ref().unwrap().get(LAST_APPLIED),
            None
        );
        assert_eq!(
            super::super::steps::job_outcome(std::slice::from_ref(&job), "shop-migrate-abc"),
            super::super::steps::JobOutcome::Succeeded
        );
    }

    #[test]
    fn a_secrets_metadata_keeps_only_its_name_namespace_and_version() {
        let mut secret = PartialObjectMeta::<Secret> {
            types: None,
            metadata: ObjectMeta {
                name: Some("release".to_owned()),
                namespace: Some("other".to_owned()),
                resource_version: Some("7".to_owned()),
                labels: Some(BTreeMap::from([("owner".to_owned(), "helm".to_owned())])),
                annotations: Some(BTreeMap::from([(
                    LAST_APPLIED.to_owned(),
                    "x".repeat(1000),
                )])),
                managed_fields: managed(),
                ..ObjectMeta::default()
            },
            _phantom: std::marker::PhantomData,
        };
        slim_secret_metadata(&mut secret);
        assert_eq!(
            secret.metadata,
            ObjectMeta {
                name: Some("release".to_owned()),
                namespace: Some("other".to_owned()),
                resource_version: Some("7".to_owned()),
                ..ObjectMeta::default()
            }
        );
    }

    fn secret(version: &str, uri: &str) -> Secret {
        let mut secret = Secret {
            data: Some(BTreeMap::from([(
                "uri".to_owned(),
                ByteString(uri.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        };
        secret.metadata.name = Some("db".to_owned());
        secret.metadata.namespace = Some("shop".to_owned());
        secret.metadata.resource_version = Some(version.to_owned());
        secret
    }

    #[test]
    fn a_secrets_data_is_read_once_and_again_only_when_its_version_changes() {
        let data = SecretData::default();
        let v1 = secret("1", "postgres://one");
        // Before the metadata watch has listed: read, whatever is held.
        assert_eq!(data.lookup("shop", "db", None), SecretLookup::Read);
        assert_eq!(
            data.lookup("shop", "db", Some(Some(&v1.metadata))),
            SecretLookup::Read
        );
        data.read("shop", "db", Some(&v1));
        assert_eq!(
            data.lookup("shop", "db", Some(Some(&v1.metadata))),
            SecretLookup::Data(BTreeMap::from([(
                "uri".to_owned(),
                "postgres://one".to_owned()
            )]))
        );
        assert_eq!(data.lookup("shop", "db", None), SecretLookup::Read);
        // Changed: the watch has a newer version than the data held.
        let v2 = secret("2", "postgres://two");
        assert_eq!(
            data.lookup("shop", "db", Some(Some(&v2.metadata))),
            SecretLookup::Read
        );
        data.read("shop", "db", Some(&v2));
        assert!(matches!(
            data.lookup("shop", "db", Some(Some(&v2.metadata))),
            SecretLookup::Data(found) if found["uri"] == "postgres://two"
        ));
        // Deleted: absent, and its data is no longer held.
        assert_eq!(data.lookup("shop", "db", Some(None)), SecretLookup::Absent);
        assert!(data.is_empty());
    }

    fn status(code: u16) -> Box<kube::core::Status> {
        Box::new(kube::core::Status {
            code,
            message: "jobs.batch is forbidden".to_owned(),
            ..kube::core::Status::default()
        })
    }

    #[test]
    fn a_list_answered_404_is_not_served_and_403_is_a_refusal_the_reconcile_reports() {
        let list = |code| watcher::Error::InitialListFailed(kube::Error::Api(status(code)));
        assert_eq!(answered(&list(404)), Some(WatchState::NotServed));
        assert_eq!(answered(&list(403)), Some(WatchState::Refused(status(403))));
        assert_eq!(answered(&list(500)), None);
        let (refused, state) = tokio::sync::watch::channel(WatchState::Unknown);
        assert!(matches!(
            readable(false, &state, "the operator's Jobs"),
            Err(Error::CacheNotSynced { .. })
        ));
        refused.send_replace(WatchState::Refused(status(403)));
        let error = readable(false, &state, "the operator's Jobs").unwrap_err();
        assert!(
            !error.is_transient(),
            "a refusal waits for the RBAC to change"
        );
        assert!(
            error.chain().contains("jobs.batch is forbidden"),
            "{}",
            error.chain()
        );
        assert!(readable(true, &state, "the operator's Jobs").is_ok());
    }

    #[test]
    fn a_secret_names_the_apps_of_its_namespace_that_read_it() {
        let app = |namespace: &str, name: &str, external: Option<&str>| {
            let database = match external {
                Some(secret) => {
                    serde_json::json!({"external": {"uriSecret": {"name": secret, "key": "uri"}}})
                }
                None => serde_json::json!({"cluster": {"storage": {"size": "1Gi"}}}),
            };
            let app: KumikoApp = serde_json::from_value(serde_json::json!({
                "apiVersion": "kumiko.so/v1alpha1", "kind": "KumikoApp",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"image": "app:1", "api": {}, "database": database}
            }))
            .unwrap();
            DeserializeGuard(Ok(app))
        };
        let (store, mut writer) = reflector::store();
        for object in [
            app("shop", "shop", Some("db")),
            app("shop", "blog", None),
            app("other", "shop", Some("db")),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(object));
        }
        let meta = |namespace: &str, name: &str| PartialObjectMeta::<Secret> {
            types: None,
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..ObjectMeta::default()
            },
            _phantom: std::marker::PhantomData,
        };
        assert_eq!(
            apps_reading(&store, &meta("shop", "db")),
            vec![ObjectRef::new("shop").within("shop")]
        );
        assert_eq!(
            apps_reading(&store, &meta("shop", "blog-db-superuser")),
            vec![ObjectRef::new("blog").within("shop")]
        );
        assert_eq!(
            apps_reading(&store, &meta("shop", "shop-db-owner")),
            vec![ObjectRef::new("shop").within("shop")]
        );
        assert!(apps_reading(&store, &meta("shop", "unrelated")).is_empty());
    }
}
