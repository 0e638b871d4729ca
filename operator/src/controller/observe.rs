//! Observe: what the cluster holds for one app, as one value, the only reads of a reconcile: the
//! database, the Secrets, the migrate Jobs, the Deployments, their HorizontalPodAutoscalers, the
//! API's Ingress or HTTPRoute, the PodMonitor (and whether the cluster serves PodMonitors),
//! whether the credential Secrets
//! drifted (from the watch-fed applied hashes), and a failed migration's log tail the first time
//! the failure is seen.
//!
//! Everything comes from the watch caches ([`super::caches`]) except two reads by name: a Secret
//! the app names (not the operator's) whose data is not held at the resourceVersion its metadata
//! watch has (so once per Secret and change), and the failed migration's log. [`world_from`] is the pure half: the
//! judgement of what the caches hold.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ListParams, LogParams};
use kube::runtime::reflector::ObjectRef;
use kumiko_crds::{KumikoAppStatus, names};

use super::Context;
use super::applied::Lookup;
use super::caches::{ClusterLookup, PodMonitorLookup, SecretLookup};
use super::plan::reported_failure;
use super::steps::{JobOutcome, job_outcome};
use crate::Error;
use crate::cnpg::{Cluster, superuser_secret};
use crate::gateway_api::HTTPRoute;
use crate::observed::OperatorNamespaces;
use crate::prometheus_operator::PodMonitor;
use crate::validate::{Database, ValidatedApp};

/// What the cluster holds for one app.
#[derive(Clone, Debug, Default)]
pub struct World {
    /// The dedicated CNPG Cluster (cluster mode).
    pub cluster: Option<Cluster>,
    /// Whether the database is reachable: the Cluster is Ready, or the shared/external Secret exists.
    pub database_ready: bool,
    /// Why the database is not ready, for the condition.
    pub database_message: String,
    /// The admin connection Secret's data (cluster and shared modes).
    pub admin_secret: Option<BTreeMap<String, String>>,
    /// `<app>-db-owner`'s data.
    pub owner_secret: Option<BTreeMap<String, String>>,
    /// `<app>-db-runtime`'s data.
    pub runtime_secret: Option<BTreeMap<String, String>>,
    /// The app's migrate Jobs, oldest first.
    pub jobs: Vec<Job>,
    /// The API Deployment.
    pub api: Option<Deployment>,
    /// The worker Deployment.
    pub worker: Option<Deployment>,
    /// The API's Ingress (`spec.api.expose.ingress`, or one left from an earlier spec).
    pub ingress: Option<Ingress>,
    /// The API's HTTPRoute (`spec.api.expose.gateway`, or one left from an earlier spec); `None`
    /// also where the Gateway API is not installed.
    pub http_route: Option<HTTPRoute>,
    /// The API's HorizontalPodAutoscaler.
    pub api_autoscaler: Option<HorizontalPodAutoscaler>,
    /// The worker's HorizontalPodAutoscaler.
    pub worker_autoscaler: Option<HorizontalPodAutoscaler>,
    /// The app's PodMonitor (`spec.monitoring`, or one left from an earlier spec).
    pub pod_monitor: Option<PodMonitor>,
    /// The cluster serves `monitoring.coreos.com/v1` PodMonitors (prometheus-operator's CRD is
    /// installed).
    pub pod_monitors_served: bool,
    /// A credential Secret was changed by someone else since the operator wrote it.
    pub secrets_drifted: bool,
    /// The names of the app's NetworkPolicies that exist (or may: before the NetworkPolicies'
    /// watch has listed, every name is in).
    pub network_policies: BTreeSet<String>,
    /// Where the operators that reach a dedicated database run (the operator's configuration).
    pub operators: OperatorNamespaces,
    /// The log tail of the spec's migrate Job when it failed and the previous status does not
    /// report it yet.
    pub migration_log: Option<String>,
    /// The roles step ran in this reconcile: `owner_secret` and `runtime_secret` hold what it
    /// returned (set by the pipeline, never by [`observe`]).
    pub roles_ensured: bool,
}

fn kube_error(action: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { action, source }
}

/// The decoded data of a Secret (`data`, then `stringData`).
pub fn secret_data(secret: &Secret) -> BTreeMap<String, String> {
    let mut data: BTreeMap<String, String> = secret
        .data
        .iter()
        .flatten()
        .map(|(key, value)| (key.clone(), String::from_utf8_lossy(&value.0).into_owned()))
        .collect();
    for (key, value) in secret.string_data.iter().flatten() {
        data.insert(key.clone(), value.clone());
    }
    data
}

/// What the caches (and the few reads by name) hold for one app, before any judgement.
#[derive(Clone, Debug, Default)]
pub struct Cached {
    /// The dedicated CNPG Cluster (cluster mode).
    pub cluster: Option<Cluster>,
    /// The data of the Secret the database mode names: CNPG's `<cluster>-superuser` (read only
    /// once the Cluster is Ready), the shared cluster's admin Secret, or the external URI Secret.
    pub database_secret: Option<BTreeMap<String, String>>,
    /// `<app>-db-owner`'s data.
    pub owner_secret: Option<BTreeMap<String, String>>,
    /// `<app>-db-runtime`'s data.
    pub runtime_secret: Option<BTreeMap<String, String>>,
    /// The app's migrate Jobs, in any order.
    pub jobs: Vec<Job>,
    /// The API Deployment.
    pub api: Option<Deployment>,
    /// The worker Deployment.
    pub worker: Option<Deployment>,
    /// The API's Ingress.
    pub ingress: Option<Ingress>,
    /// The API's HTTPRoute.
    pub http_route: Option<HTTPRoute>,
    /// The API's HorizontalPodAutoscaler.
    pub api_autoscaler: Option<HorizontalPodAutoscaler>,
    /// The worker's HorizontalPodAutoscaler.
    pub worker_autoscaler: Option<HorizontalPodAutoscaler>,
    /// The app's PodMonitor: `None` when the cluster does not serve PodMonitors, `Some(None)`
    /// when it does and there is none.
    pub pod_monitor: Option<Option<PodMonitor>>,
    /// A credential Secret was changed by someone else since the operator wrote it.
    pub secrets_drifted: bool,
    /// The names of the app's NetworkPolicies that exist or may.
    pub network_policies: BTreeSet<String>,
}

/// The observation of `app` from what the caches hold (pure): whether the database is
/// reachable and why not, the Secrets, and the migrate Jobs oldest first.
pub fn world_from(app: &ValidatedApp<'_>, cached: Cached) -> World {
    let Cached {
        cluster,
        database_secret,
        owner_secret,
        runtime_secret,
        mut jobs,
        api,
        worker,
        ingress,
        http_route,
        api_autoscaler,
        worker_autoscaler,
        pod_monitor,
        secrets_drifted,
        network_policies,
    } = cached;
    let (database_ready, admin_secret, waiting) = match &app.database {
        Database::Cluster { .. } => {
            let cluster_name = &app.names.database_cluster;
            if cluster.as_ref().is_some_and(Cluster::is_ready) {
                let ready = database_secret.is_some();
                let admin = superuser_secret(cluster_name);
                (
                    ready,
                    database_secret,
                    format!("waiting for CNPG to create the Secret {admin}"),
                )
            } else {
                (
                    false,
                    None,
                    format!("waiting for CNPG Cluster {cluster_name} to be Ready"),
                )
            }
        }
        Database::Shared { spec: shared } => (
            database_secret.is_some(),
            database_secret,
            format!(
                "waiting for the admin Secret {} of shared cluster {}",
                shared.admin_secret.name, shared.cluster_name
            ),
        ),
        Database::External { spec: external } => {
            let uri = &external.uri_secret;
            (
                database_secret.is_some_and(|data| data.contains_key(&uri.key)),
                None,
                format!(
                    "waiting for Secret {} with key {} (spec.database.external.uriSecret)",
                    uri.name, uri.key
                ),
            )
        }
    };
    jobs.sort_by(|a, b| {
        (
            a.metadata.creation_timestamp.as_ref().map(|t| t.0),
            a.metadata.name.as_deref(),
        )
            .cmp(&(
                b.metadata.creation_timestamp.as_ref().map(|t| t.0),
                b.metadata.name.as_deref(),
            ))
    });
    // An external database comes with its own credentials: the operator makes no role Secrets.
    let external = matches!(app.database, Database::External { .. });
    World {
        cluster,
        database_ready,
        database_message: if database_ready {
            "the database is reachable".to_owned()
        } else {
            waiting
        },
        admin_secret,
        owner_secret: owner_secret.filter(|_| !external),
        runtime_secret: runtime_secret.filter(|_| !external),
        jobs,
        api,
        worker,
        ingress,
        http_route,
        api_autoscaler,
        worker_autoscaler,
        pod_monitors_served: pod_monitor.is_some(),
        pod_monitor: pod_monitor.flatten(),
        secrets_drifted: secrets_drifted && !external,
        network_policies,
        operators: OperatorNamespaces::default(),
        migration_log: None,
        roles_ensured: false,
    }
}

/// Reads everything one reconcile of `app` needs (`previous`: its status as stored), from the
/// watch caches ([`super::caches`]). The only API reads: a Secret the app names whose data is not
/// held at its current resourceVersion, and a failed migration's log the first time the failure
/// is seen.
pub async fn observe(
    context: &Context,
    app: &ValidatedApp<'_>,
    previous: Option<&KumikoAppStatus>,
) -> Result<World, Error> {
    let caches = &context.caches;
    let name = app.names.app.as_str();
    let namespace = app.names.namespace.as_str();
    let mut cached = Cached::default();

    let database_secret = match &app.database {
        Database::Cluster { .. } => {
            cached.cluster = cluster(context, namespace, &app.names.database_cluster)?;
            // CNPG makes the superuser Secret for a Cluster: looked for once it is Ready.
            cached
                .cluster
                .as_ref()
                .filter(|cluster| cluster.is_ready())
                .map(|_| superuser_secret(&app.names.database_cluster))
        }
        Database::Shared { spec: shared } => Some(shared.admin_secret.name.clone()),
        Database::External { spec: external } => Some(external.uri_secret.name.clone()),
    };
    if let Some(secret) = database_secret {
        cached.database_secret = named_secret(context, namespace, &secret).await?;
    }
    if !matches!(app.database, Database::External { .. }) {
        let credentials = caches.credentials()?;
        let owned = |secret: &str| {
            credentials
                .get(&ObjectRef::new(secret).within(namespace))
                .map(|secret| secret_data(&secret))
        };
        let (owner, runtime) = (&app.names.owner_secret, &app.names.runtime_secret);
        cached.owner_secret = owned(owner);
        cached.runtime_secret = owned(runtime);
        // A credential Secret someone else edited is written again from the roles' facts.
        cached.secrets_drifted = [owner, runtime]
            .iter()
            .any(|secret| context.applied.drifted("Secret", namespace, secret));
    }
    cached.jobs = caches
        .jobs()?
        .state_filter(|job| is_migrate_job_of(job, namespace, name))
        .iter()
        .map(|job| Job::clone(job))
        .collect();
    let deployments = caches.deployments()?;
    let deployment = |deployment: &str| {
        deployments
            .get(&ObjectRef::new(deployment).within(namespace))
            .map(|deployment| Deployment::clone(&deployment))
    };
    cached.api = deployment(&app.names.api);
    cached.worker = deployment(&app.names.worker);
    cached.ingress = caches.ingress(namespace, &app.names.api)?;
    cached.http_route = caches.http_route(namespace, &app.names.api)?;
    cached.network_policies = app
        .names
        .network_policies
        .all()
        .into_iter()
        .filter(|policy| {
            !matches!(
                context.applied.lookup("NetworkPolicy", namespace, policy),
                Lookup::Absent
            )
        })
        .map(str::to_owned)
        .collect();
    cached.api_autoscaler = caches.autoscaler(namespace, &app.names.api)?;
    cached.worker_autoscaler = caches.autoscaler(namespace, &app.names.worker)?;
    cached.pod_monitor = match caches.pod_monitor(namespace, &app.names.app)? {
        PodMonitorLookup::Known(monitor) => {
            Some(monitor.map(|monitor| PodMonitor::clone(&monitor)))
        }
        PodMonitorLookup::NotServed => None,
    };

    let mut world = world_from(app, cached);
    world.operators = context.operators.clone();
    let job = &app.names.migrate_job;
    if let JobOutcome::Failed { .. } = job_outcome(&world.jobs, job)
        && reported_failure(previous, job).is_none()
    {
        world.migration_log = Some(job_log_tail(context, namespace, job).await);
    }
    Ok(world)
}

/// Whether `job` is one of app `name`'s migrate Jobs in `namespace` (by its labels).
fn is_migrate_job_of(job: &Job, namespace: &str, name: &str) -> bool {
    let meta = &job.metadata;
    let label = |key: &str| {
        meta.labels
            .as_ref()
            .and_then(|labels| labels.get(key))
            .map(String::as_str)
    };
    meta.namespace.as_deref() == Some(namespace)
        && label(names::INSTANCE_LABEL) == Some(name)
        && label(names::COMPONENT_LABEL) == Some("migrate")
}

/// The app's dedicated Cluster, from the cache. Absent when the cluster does not serve Clusters
/// (applying one then says what to install); the API server's refusal of the watch, or a
/// transient error while it has not listed.
fn cluster(context: &Context, namespace: &str, name: &str) -> Result<Option<Cluster>, Error> {
    match context.caches.cluster(namespace, name)? {
        ClusterLookup::Known(cluster) => Ok(cluster.map(|cluster| Cluster::clone(&cluster))),
        ClusterLookup::NotServed => Ok(None),
    }
}

/// The data of Secret `namespace/name`, one the app names (not the operator's): from
/// [`super::caches::SecretData`] when it holds the version the metadata watch has, else read.
async fn named_secret(
    context: &Context,
    namespace: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>, Error> {
    let caches = &context.caches;
    let watched = caches
        .secrets_listed()?
        .then(|| caches.secrets.get(&ObjectRef::new(name).within(namespace)));
    let lookup = caches.secret_data.lookup(
        namespace,
        name,
        watched
            .as_ref()
            .map(|meta| meta.as_ref().map(|meta| &meta.metadata)),
    );
    match lookup {
        SecretLookup::Absent => return Ok(None),
        SecretLookup::Data(data) => return Ok(Some(data)),
        SecretLookup::Read => {}
    }
    let secret = Api::<Secret>::namespaced(context.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(kube_error(format!("reading Secret {namespace}/{name}")))?;
    caches.secret_data.read(namespace, name, secret.as_ref());
    Ok(secret.as_ref().map(secret_data))
}

/// How many log lines of a failed migration go into the condition.
pub const LOG_TAIL_LINES: i64 = 20;
/// At most this many bytes of log are read.
pub const LOG_TAIL_BYTES: i64 = 4096;

/// The last lines of the log of the newest pod of `job` (empty when none is readable).
pub async fn job_log_tail(context: &Context, namespace: &str, job: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), namespace);
    let Ok(list) = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
    else {
        return String::new();
    };
    let Some(pod) = list
        .items
        .iter()
        .max_by_key(|pod| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
    else {
        return String::new();
    };
    let params = LogParams {
        tail_lines: Some(LOG_TAIL_LINES),
        limit_bytes: Some(LOG_TAIL_BYTES),
        ..LogParams::default()
    };
    let name = pod.metadata.name.clone().unwrap_or_default();
    pods.logs(&name, &params).await.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cnpg::{ClusterSpec, ClusterStatus, ClusterStorage};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kumiko_crds::KumikoApp;

    fn app(database: serde_json::Value) -> KumikoApp {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kumiko.so/v1alpha1", "kind": "KumikoApp",
            "metadata": {"name": "shop", "namespace": "shop"},
            "spec": {"image": "app:1", "api": {}, "database": database}
        }))
        .unwrap()
    }

    fn data(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
        )
    }

    fn cluster(ready: bool) -> Cluster {
        let mut cluster = Cluster::new(
            "shop-db",
            ClusterSpec {
                instances: 1,
                image_name: None,
                enable_superuser_access: Some(true),
                storage: ClusterStorage {
                    size: Quantity("1Gi".to_owned()),
                    storage_class: None,
                },
                resources: None,
                backup: None,
            },
        );
        cluster.status = Some(ClusterStatus {
            phase: Some(if ready {
                crate::cnpg::HEALTHY_PHASE.to_owned()
            } else {
                "Setting up primary".to_owned()
            }),
            ..ClusterStatus::default()
        });
        cluster
    }

    #[test]
    fn a_dedicated_database_is_ready_once_the_cluster_is_and_its_superuser_secret_exists() {
        let app = app(serde_json::json!({"cluster": {"storage": {"size": "1Gi"}}}));
        let app = ValidatedApp::new(&app).unwrap();
        let waiting = world_from(
            &app,
            Cached {
                cluster: Some(cluster(false)),
                ..Cached::default()
            },
        );
        assert!(!waiting.database_ready);
        assert_eq!(
            waiting.database_message,
            "waiting for CNPG Cluster shop-db to be Ready"
        );
        let no_secret = world_from(
            &app,
            Cached {
                cluster: Some(cluster(true)),
                ..Cached::default()
            },
        );
        assert!(!no_secret.database_ready);
        assert_eq!(
            no_secret.database_message,
            "waiting for CNPG to create the Secret shop-db-superuser"
        );
        let ready = world_from(
            &app,
            Cached {
                cluster: Some(cluster(true)),
                database_secret: data(&[("password", "p")]),
                owner_secret: data(&[("password", "o")]),
                ..Cached::default()
            },
        );
        assert!(ready.database_ready);
        assert_eq!(ready.database_message, "the database is reachable");
        assert_eq!(ready.admin_secret, data(&[("password", "p")]));
        assert_eq!(ready.owner_secret, data(&[("password", "o")]));
    }

    #[test]
    fn an_external_database_needs_its_uri_key_and_has_no_role_secrets() {
        let app = app(serde_json::json!({"external": {"uriSecret": {"name": "db", "key": "uri"}}}));
        let app = ValidatedApp::new(&app).unwrap();
        let wrong_key = world_from(
            &app,
            Cached {
                database_secret: data(&[("url", "postgres://")]),
                ..Cached::default()
            },
        );
        assert!(!wrong_key.database_ready);
        assert_eq!(
            wrong_key.database_message,
            "waiting for Secret db with key uri (spec.database.external.uriSecret)"
        );
        let ready = world_from(
            &app,
            Cached {
                database_secret: data(&[("uri", "postgres://")]),
                owner_secret: data(&[("password", "o")]),
                secrets_drifted: true,
                ..Cached::default()
            },
        );
        assert!(ready.database_ready);
        assert_eq!(ready.admin_secret, None, "the URI is not an admin Secret");
        assert_eq!(ready.owner_secret, None);
        assert!(!ready.secrets_drifted);
    }

    #[test]
    fn a_shared_database_is_ready_when_its_admin_secret_exists() {
        let app = app(serde_json::json!({"shared": {
            "clusterName": "main", "clusterNamespace": "db",
            "adminSecret": {"name": "main-admin"}
        }}));
        let app = ValidatedApp::new(&app).unwrap();
        let waiting = world_from(&app, Cached::default());
        assert!(!waiting.database_ready);
        assert_eq!(
            waiting.database_message,
            "waiting for the admin Secret main-admin of shared cluster main"
        );
        let ready = world_from(
            &app,
            Cached {
                database_secret: data(&[("password", "p")]),
                ..Cached::default()
            },
        );
        assert!(ready.database_ready);
        assert_eq!(ready.admin_secret, data(&[("password", "p")]));
    }

    #[test]
    fn migrate_jobs_are_ordered_oldest_first_whatever_order_the_cache_gives() {
        let app = app(serde_json::json!({"external": {"uriSecret": {"name": "db", "key": "uri"}}}));
        let app = ValidatedApp::new(&app).unwrap();
        let job = |name: &str, second: i64| {
            let mut job = Job::default();
            job.metadata.name = Some(name.to_owned());
            job.metadata.creation_timestamp = Some(Time(
                k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + second).unwrap(),
            ));
            job
        };
        let world = world_from(
            &app,
            Cached {
                jobs: vec![job("c", 3), job("a", 1), job("b2", 2), job("b1", 2)],
                ..Cached::default()
            },
        );
        let names: Vec<_> = world
            .jobs
            .iter()
            .map(|job| job.metadata.name.as_deref().unwrap())
            .collect();
        assert_eq!(names, ["a", "b1", "b2", "c"]);
    }

    #[test]
    fn only_the_apps_own_migrate_jobs_are_observed() {
        let job = |namespace: &str, instance: &str, component: &str| {
            let mut job = Job::default();
            job.metadata.namespace = Some(namespace.to_owned());
            job.metadata.labels = Some(BTreeMap::from([
                (names::INSTANCE_LABEL.to_owned(), instance.to_owned()),
                (names::COMPONENT_LABEL.to_owned(), component.to_owned()),
            ]));
            job
        };
        assert!(is_migrate_job_of(
            &job("shop", "shop", "migrate"),
            "shop",
            "shop"
        ));
        assert!(!is_migrate_job_of(
            &job("other", "shop", "migrate"),
            "shop",
            "shop"
        ));
        assert!(!is_migrate_job_of(
            &job("shop", "blog", "migrate"),
            "shop",
            "shop"
        ));
        assert!(!is_migrate_job_of(
            &job("shop", "shop", "api"),
            "shop",
            "shop"
        ));
    }
}
