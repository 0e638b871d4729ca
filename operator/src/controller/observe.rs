//! Observe: read what the cluster holds for one app into one value, the only reads of a reconcile
//! (besides the metadata reads of `apply`): the database, the Secrets, the migrate Jobs, the
//! Deployments, whether the credential Secrets drifted (from the watch-fed applied hashes), and a
//! failed migration's log tail the first time the failure is seen.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ListParams, LogParams};
use kumiko_crds::{KumikoAppStatus, names};

use super::Context;
use super::plan::reported_failure;
use super::steps::{JobOutcome, job_outcome};
use crate::Error;
use crate::cnpg::Cluster;
use crate::gateway_api::HTTPRoute;
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
    /// too where the Gateway API is not installed.
    pub http_route: Option<HTTPRoute>,
    /// A credential Secret was changed by someone else since the operator wrote it.
    pub secrets_drifted: bool,
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

async fn read_secret(
    secrets: &Api<Secret>,
    namespace: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>, Error> {
    Ok(secrets
        .get_opt(name)
        .await
        .map_err(kube_error(format!("reading Secret {namespace}/{name}")))?
        .map(|secret| secret_data(&secret)))
}

/// Reads everything one reconcile of `app` needs (`previous`: its status as stored).
pub async fn observe(
    context: &Context,
    app: &ValidatedApp<'_>,
    previous: Option<&KumikoAppStatus>,
) -> Result<World, Error> {
    let name = app.names.app.as_str();
    let namespace = app.names.namespace.as_str();
    let client = context.client.clone();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut world = World::default();

    match &app.database {
        Database::Cluster { .. } => {
            let cluster_name = &app.names.database_cluster;
            let clusters: Api<Cluster> = Api::namespaced(client.clone(), namespace);
            world.cluster = clusters
                .get_opt(cluster_name)
                .await
                .map_err(kube_error(format!(
                    "reading Cluster {namespace}/{cluster_name}"
                )))?;
            world.database_ready = world.cluster.as_ref().is_some_and(Cluster::is_ready);
            if world.database_ready {
                let admin = format!("{cluster_name}-superuser");
                world.admin_secret = read_secret(&secrets, namespace, &admin).await?;
                if world.admin_secret.is_none() {
                    world.database_ready = false;
                    world.database_message =
                        format!("waiting for CNPG to create the Secret {admin}");
                }
            } else {
                world.database_message =
                    format!("waiting for CNPG Cluster {cluster_name} to be Ready");
            }
        }
        Database::Shared { spec: shared } => {
            let admin = &shared.admin_secret.name;
            world.admin_secret = read_secret(&secrets, namespace, admin).await?;
            world.database_ready = world.admin_secret.is_some();
            world.database_message = format!(
                "waiting for the admin Secret {admin} of shared cluster {}",
                shared.cluster_name
            );
        }
        Database::External { spec: external } => {
            let uri = &external.uri_secret;
            let data = read_secret(&secrets, namespace, &uri.name).await?;
            world.database_ready = data.is_some_and(|data| data.contains_key(&uri.key));
            world.database_message = format!(
                "waiting for Secret {} with key {} (spec.database.external.uriSecret)",
                uri.name, uri.key
            );
        }
    }
    if world.database_ready {
        world.database_message = "the database is reachable".to_owned();
    }

    // The remaining reads are independent: issue them at once.
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), namespace);
    let http_routes: Api<HTTPRoute> = Api::namespaced(client, namespace);
    let selector = format!(
        "{}={name},{}=migrate",
        names::INSTANCE_LABEL,
        names::COMPONENT_LABEL
    );
    let list_params = ListParams::default().labels(&selector);
    let (api_name, worker_name) = (&app.names.api, &app.names.worker);
    let (owner_name, runtime_name) = (&app.names.owner_secret, &app.names.runtime_secret);
    // An external database comes with its own credentials: the operator makes no role Secrets.
    let external = matches!(app.database, Database::External { .. });
    let role_secrets = async {
        if external {
            return Ok((None, None));
        }
        futures::try_join!(
            read_secret(&secrets, namespace, owner_name),
            read_secret(&secrets, namespace, runtime_name),
        )
    };
    let ((owner_secret, runtime_secret), listed, api, worker, (ingress, http_route)) = futures::try_join!(
        role_secrets,
        async {
            jobs.list(&list_params).await.map_err(kube_error(format!(
                "listing the migrate Jobs in {namespace}"
            )))
        },
        async {
            deployments
                .get_opt(api_name)
                .await
                .map_err(kube_error(format!(
                    "reading Deployment {namespace}/{api_name}"
                )))
        },
        async {
            deployments
                .get_opt(worker_name)
                .await
                .map_err(kube_error(format!(
                    "reading Deployment {namespace}/{worker_name}"
                )))
        },
        read_routes(&ingresses, &http_routes, namespace, api_name),
    )?;
    world.ingress = ingress;
    world.http_route = http_route;
    world.owner_secret = owner_secret;
    world.runtime_secret = runtime_secret;
    world.api = api;
    world.worker = worker;
    let mut listed = listed.items;
    listed.sort_by(|a, b| {
        (
            a.metadata.creation_timestamp.as_ref().map(|t| t.0),
            a.metadata.name.clone(),
        )
            .cmp(&(
                b.metadata.creation_timestamp.as_ref().map(|t| t.0),
                b.metadata.name.clone(),
            ))
    });
    world.jobs = listed;
    // A credential Secret someone else edited is written again from the roles' facts.
    world.secrets_drifted = !external
        && [owner_name, runtime_name]
            .iter()
            .any(|secret| context.applied.drifted("Secret", namespace, secret));
    let job = &app.names.migrate_job;
    if let JobOutcome::Failed { .. } = job_outcome(&world.jobs, job)
        && reported_failure(previous, job).is_none()
    {
        world.migration_log = Some(job_log_tail(context, namespace, job).await);
    }
    Ok(world)
}

/// The API's Ingress and HTTPRoute named `name`. A cluster without the Gateway API answers 404
/// for HTTPRoutes, as for a missing one: then there is none.
async fn read_routes(
    ingresses: &Api<Ingress>,
    http_routes: &Api<HTTPRoute>,
    namespace: &str,
    name: &str,
) -> Result<(Option<Ingress>, Option<HTTPRoute>), Error> {
    futures::try_join!(
        async {
            ingresses
                .get_opt(name)
                .await
                .map_err(kube_error(format!("reading Ingress {namespace}/{name}")))
        },
        async {
            http_routes
                .get_opt(name)
                .await
                .map_err(kube_error(format!("reading HTTPRoute {namespace}/{name}")))
        },
    )
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
