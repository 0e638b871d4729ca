//! Reconcile: one pass of the pipeline for one KumikoApp, and the error policy.
//!
//! `observe -> validate -> build desired -> apply (in dependency order, each step gated on the one
//! before) -> status`. Writes go through [`apply`](super::apply) (skipped when nothing changed);
//! the status is patched only when it changed in something other than time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use kumiko_crds::duration::parse_duration;
use kumiko_crds::{DatabaseMode, KumikoApp, KumikoAppStatus, ReclaimPolicy, condition, names};

use super::Context;
use super::apply::{Applied, apply};
use super::credentials::{RolesRequest, credentials_checksum, redact};
use super::observe::{World, job_log_tail, observe};
use super::status::{
    self, Check, MIGRATION_FAILED, Progress, WAITING, compute_status, needs_write,
};
use super::steps::{JobOutcome, availability, job_outcome, jobs_to_delete, just_created};
use super::validate::validate;
use crate::Error;
use crate::cnpg::Cluster;
use crate::desired::{self, MANAGER, migration_hash};
use crate::observed::Observed;
use crate::roles::ClusterService;

/// The finalizer that applies the reclaim policy to the app's Postgres objects.
pub const FINALIZER: &str = "kumiko.so/reclaim";
/// The annotation whose change rotates the runtime role's password.
pub const ROTATE_CREDENTIALS_ANNOTATION: &str = "kumiko.so/rotate-credentials";
/// How often a Ready app is looked at again without any event.
pub const RESYNC: Duration = Duration::from_secs(300);
/// How often a progressing app is looked at again without any event.
pub const PROGRESS_RESYNC: Duration = Duration::from_secs(15);

/// Reconciles one KumikoApp (the controller's reconciler).
pub async fn reconcile(
    guard: Arc<DeserializeGuard<KumikoApp>>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let result = match &guard.0 {
        Ok(app) => reconcile_app(app, &context).await,
        Err(invalid) => {
            tracing::warn!(
                namespace = invalid.metadata.namespace.as_deref().unwrap_or(""),
                name = invalid.metadata.name.as_deref().unwrap_or(""),
                error = %invalid.error,
                "skipping a KumikoApp that does not match the API types"
            );
            Ok(Action::await_change())
        }
    };
    context.metrics.reconciled(
        started.elapsed().as_secs_f64(),
        result.as_ref().err().map(Error::category),
    );
    if result.is_ok() {
        context.reset_backoff(&key_of(&guard));
    }
    result
}

/// What happens after a failed reconcile: transient errors back off per object, exponentially.
pub fn error_policy(
    guard: Arc<DeserializeGuard<KumikoApp>>,
    error: &Error,
    context: Arc<Context>,
) -> Action {
    let key = key_of(&guard);
    let delay = context.next_backoff(&key);
    tracing::warn!(app = %key, error = %error, category = error.category(), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

fn key_of(guard: &DeserializeGuard<KumikoApp>) -> String {
    let metadata = match &guard.0 {
        Ok(app) => &app.metadata,
        Err(invalid) => &invalid.metadata,
    };
    format!(
        "{}/{}",
        metadata.namespace.as_deref().unwrap_or(""),
        metadata.name.as_deref().unwrap_or("")
    )
}

fn apps_api(context: &Context, namespace: &str) -> Api<KumikoApp> {
    Api::namespaced(context.client.clone(), namespace)
}

async fn reconcile_app(app: &KumikoApp, context: &Context) -> Result<Action, Error> {
    let name = app.name_any();
    let namespace = app.namespace().unwrap_or_else(|| "default".to_owned());
    if app.metadata.deletion_timestamp.is_some() {
        context
            .metrics
            .app_readiness(&format!("{namespace}/{name}"), None);
        return finalize(app, context).await;
    }
    let previous = app.status.clone();
    let mut progress = Progress::unknown(app.metadata.generation);
    progress.paused = app.spec.paused;
    carry_over(previous.as_ref(), &mut progress);

    let neighbours = context.apps.state();
    let neighbour_apps: Vec<&KumikoApp> = neighbours
        .iter()
        .filter_map(|guard| guard.0.as_ref().ok())
        .collect();
    if let Err(invalid) = validate(app, &neighbour_apps) {
        progress.stalled = Some((invalid.reason, invalid.message.clone()));
        if previous
            .as_ref()
            .and_then(|status| find_condition(status, condition::STALLED))
            .is_none_or(|stalled| stalled.status != "True" || stalled.message != invalid.message)
        {
            context
                .publish(
                    app,
                    EventType::Warning,
                    invalid.reason,
                    "Validate",
                    &invalid.message,
                )
                .await;
        }
        write_status(app, context, previous.as_ref(), &progress).await?;
        return Ok(Action::await_change());
    }

    if !app.spec.paused && !app.finalizers().iter().any(|f| f == FINALIZER) {
        let mut finalizers = app.finalizers().to_vec();
        finalizers.push(FINALIZER.to_owned());
        apps_api(context, &namespace)
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"finalizers": finalizers}})),
            )
            .await
            .map_err(|source| Error::Kube {
                action: format!("adding the finalizer to KumikoApp {namespace}/{name}"),
                source,
            })?;
        context.metrics.wrote("KumikoApp");
    }

    let outcome = match observe(context, app).await {
        Ok(world) => converge(app, context, &world, previous.as_ref(), &mut progress).await,
        Err(error) => Err(error),
    };
    let result = match outcome {
        Ok(()) => Ok(if progress.is_ready() {
            Action::requeue(RESYNC)
        } else if progress.stalled.is_some() {
            Action::await_change()
        } else {
            Action::requeue(PROGRESS_RESYNC)
        }),
        Err(error) if error.is_transient() => {
            progress.retrying = Some(error.chain());
            Err(error)
        }
        Err(error) => {
            let reason = match &error {
                Error::Stalled { reason, .. } => *reason,
                _ => "PermanentError",
            };
            progress.stalled = Some((reason, error.chain()));
            tracing::warn!(
                app = %format!("{namespace}/{name}"),
                reason,
                error = %error.chain(),
                category = error.category(),
                "reconcile stalled until the spec changes"
            );
            context
                .publish(app, EventType::Warning, reason, "Reconcile", &error.chain())
                .await;
            Ok(Action::await_change())
        }
    };
    let readiness = if progress.is_ready() {
        "True"
    } else if progress.stalled.is_some() {
        "False"
    } else {
        "Unknown"
    };
    context
        .metrics
        .app_readiness(&format!("{namespace}/{name}"), Some(readiness));
    write_status(app, context, previous.as_ref(), &progress).await?;
    result
}

/// Facts kept from the previous status until this reconcile learns better.
fn carry_over(previous: Option<&KumikoAppStatus>, progress: &mut Progress) {
    if let Some(previous) = previous {
        progress.migrated_image = previous.migrated_image.clone();
        progress.migration_job = previous.migration_job.clone();
        progress.rotated_credentials_for = previous.rotated_credentials_for.clone();
        progress.image = previous.image.clone();
    }
}

fn find_condition<'a>(
    status: &'a KumikoAppStatus,
    kind: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    status
        .conditions
        .iter()
        .find(|condition| condition.type_ == kind)
}

async fn write_status(
    app: &KumikoApp,
    context: &Context,
    previous: Option<&KumikoAppStatus>,
    progress: &Progress,
) -> Result<(), Error> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let computed = compute_status(previous, progress, &now);
    if !needs_write(previous, &computed) {
        return Ok(());
    }
    let name = app.name_any();
    let namespace = app.namespace().unwrap_or_default();
    apps_api(context, &namespace)
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status_patch(&computed)? })),
        )
        .await
        .map_err(|source| Error::Kube {
            action: format!("writing the status of KumikoApp {namespace}/{name}"),
            source,
        })?;
    context.metrics.wrote("KumikoAppStatus");
    Ok(())
}

/// The status as a merge patch: every optional field the computed status leaves out is sent as
/// `null`, so a fact that no longer holds (a removed worker) leaves the stored status too.
/// A status that does not serialize is an error, never a `{"status": null}` that would wipe it.
fn status_patch(status: &KumikoAppStatus) -> Result<serde_json::Value, Error> {
    let mut value = serde_json::to_value(status).map_err(|source| Error::Serialize {
        what: "the KumikoApp status".to_owned(),
        source,
    })?;
    if let Some(map) = value.as_object_mut() {
        for key in [
            "observedGeneration",
            "image",
            "migratedImage",
            "migrationJob",
            "api",
            "worker",
            "rotatedCredentialsFor",
        ] {
            map.entry(key).or_insert(serde_json::Value::Null);
        }
    }
    Ok(value)
}

/// The `-rw` Service of the app's CloudNativePG cluster: `<app>-db-rw` in the app's namespace
/// (dedicated mode), `<clusterName>-rw` in `clusterNamespace`, default the app's, in shared mode.
/// External databases have no roles step; their entry is never used.
fn database_service(app: &KumikoApp) -> ClusterService {
    let namespace = app.namespace().unwrap_or_default();
    match app.spec.database.mode() {
        Some(DatabaseMode::Shared) => match &app.spec.database.shared {
            Some(shared) => ClusterService::read_write(
                &shared.cluster_name,
                shared.cluster_namespace.as_deref().unwrap_or(&namespace),
            ),
            None => {
                ClusterService::read_write(&names::database_cluster(&app.name_any()), &namespace)
            }
        },
        Some(DatabaseMode::Cluster | DatabaseMode::External) | None => {
            ClusterService::read_write(&names::database_cluster(&app.name_any()), &namespace)
        }
    }
}

/// The roles step's inputs, from the spec and what is stored.
fn roles_request(
    app: &KumikoApp,
    world: &World,
    admin_secret: BTreeMap<String, String>,
    rotate_runtime: bool,
) -> Result<RolesRequest, Error> {
    let role = &app.spec.database.role;
    let statement_timeout =
        parse_duration(&role.statement_timeout).map_err(|error| Error::Stalled {
            reason: "InvalidSpec",
            message: format!("spec.database.role.statementTimeout: {error}"),
        })?;
    let password = |data: &Option<BTreeMap<String, String>>| {
        data.as_ref().and_then(|data| data.get("password").cloned())
    };
    Ok(RolesRequest {
        app: app.name_any(),
        namespace: app.namespace().unwrap_or_default(),
        admin_secret,
        database_service: database_service(app),
        connection_limit: role.connection_limit,
        statement_timeout,
        owner_password: password(&world.owner_secret),
        runtime_password: password(&world.runtime_secret),
        rotate_runtime,
        delete_on_reclaim: app.spec.database.reclaim_policy == ReclaimPolicy::Delete,
    })
}

/// One of the two credential Secrets, owned by the app.
fn credential_secret(app: &KumikoApp, name: String, data: &BTreeMap<String, String>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: app.namespace(),
            labels: Some(BTreeMap::from([
                (names::NAME_LABEL.to_owned(), "kumiko-app".to_owned()),
                (names::INSTANCE_LABEL.to_owned(), app.name_any()),
                (names::COMPONENT_LABEL.to_owned(), "database".to_owned()),
                (names::MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned()),
            ])),
            owner_references: app.controller_owner_ref(&()).map(|owner| vec![owner]),
            ..ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(key, value)| (key.clone(), ByteString(value.clone().into_bytes())))
                .collect(),
        ),
        type_: Some("kubernetes.io/basic-auth".to_owned()),
        ..Secret::default()
    }
}

/// The steps, in order, each gated on the one before; writes nothing when paused.
async fn converge(
    app: &KumikoApp,
    context: &Context,
    world: &World,
    previous: Option<&KumikoAppStatus>,
    progress: &mut Progress,
) -> Result<(), Error> {
    let name = app.name_any();
    let namespace = app.namespace().unwrap_or_default();
    let paused = app.spec.paused;
    let spec_image = app.spec.image.clone();
    let mode = app.spec.database.mode();

    // 1. The budget, then 2. the database.
    let mut observed = Observed {
        database_ready: world.database_ready,
        app_uid: app.metadata.uid.clone(),
        running_image: running_image(world.api.as_ref()),
        ..Observed::default()
    };
    let first = desired::desired(app, &observed);
    if !paused {
        futures::try_join!(
            apply(context, app, &first.service_account),
            apply(context, app, &first.resource_quota),
            apply(context, app, &first.limit_range),
        )?;
        if let Some(cluster) = &first.database_cluster {
            apply(context, app, cluster)
                .await
                .map_err(cnpg_not_served)?;
            if adopts_retained_cluster(app, world.cluster.as_ref(), previous) {
                let cluster_name = cluster.name_any();
                context
                    .publish(
                        app,
                        EventType::Normal,
                        "AdoptedDatabase",
                        "Adopt",
                        &format!(
                            "adopted the CNPG Cluster {cluster_name} retained from an earlier \
                             KumikoApp {name}, with its roles and data"
                        ),
                    )
                    .await;
            }
        }
    }
    progress.database = if world.database_ready {
        Check::done("Reachable", world.database_message.clone())
    } else {
        Check::not_yet(WAITING, world.database_message.clone())
    };

    // 3. The roles and their Secrets.
    let rotate_value = app
        .annotations()
        .get(ROTATE_CREDENTIALS_ANNOTATION)
        .cloned();
    let rotate_pending = rotate_value.is_some() && rotate_value != progress.rotated_credentials_for;
    let mut credentials = match (&world.owner_secret, &world.runtime_secret) {
        (Some(owner), Some(runtime)) => Some((owner.clone(), runtime.clone())),
        _ => None,
    };
    let roles_ready = if mode == Some(DatabaseMode::External) {
        progress.roles = Check::done(
            "External",
            "an external database: the app connects with spec.database.external.uriSecret",
        );
        credentials = None;
        world.database_ready
    } else if !world.database_ready {
        progress.roles = Check::unknown(WAITING, "waiting for DatabaseReady");
        false
    } else {
        let previously_ready = previous
            .and_then(|status| find_condition(status, condition::ROLES_READY))
            .is_some_and(|roles| roles.status == "True");
        let generation_seen =
            previous.and_then(|status| status.observed_generation) == app.metadata.generation;
        // A credential Secret someone else edited is written again from the roles' facts (a
        // changed password is kept and set on the role, so the two never disagree).
        let secrets_drifted = [names::owner_secret(&name), names::runtime_secret(&name)]
            .iter()
            .any(|secret| context.applied.drifted("Secret", &namespace, secret));
        let needed = credentials.is_none()
            || rotate_pending
            || !previously_ready
            || !generation_seen
            || secrets_drifted;
        if needed && !paused {
            let admin = world.admin_secret.clone().unwrap_or_default();
            let request = roles_request(app, world, admin, rotate_pending)?;
            let outcome = context.roles.ensure(&request).await?;
            apply(
                context,
                app,
                &credential_secret(app, names::owner_secret(&name), &outcome.owner),
            )
            .await?;
            apply(
                context,
                app,
                &credential_secret(app, names::runtime_secret(&name), &outcome.runtime),
            )
            .await?;
            if rotate_pending {
                progress.rotated_credentials_for = rotate_value.clone();
                context
                    .publish(
                        app,
                        EventType::Normal,
                        "CredentialsRotated",
                        "RotateCredentials",
                        "the runtime role has a new password; the pods roll",
                    )
                    .await;
            }
            credentials = Some((outcome.owner, outcome.runtime));
        }
        match &credentials {
            Some(_) => {
                progress.roles = Check::done("Provisioned", "owner and runtime roles are in place")
            }
            None => progress.roles = Check::not_yet(WAITING, "the roles are not provisioned yet"),
        }
        credentials.is_some()
    };
    observed.roles_ready = roles_ready;
    observed.credentials_checksum = credentials
        .as_ref()
        .map(|(owner, runtime)| credentials_checksum(owner, runtime));

    // 4. The migrate Job for the spec's image.
    let job_name = names::migrate_job(&name, &migration_hash(app));
    let outcome = job_outcome(&world.jobs, &job_name);
    observed.migrated_image = match outcome {
        JobOutcome::Succeeded => Some(spec_image.clone()),
        _ => progress
            .migrated_image
            .clone()
            .filter(|image| *image != spec_image),
    };
    let built = desired::desired(app, &observed);
    match &outcome {
        JobOutcome::Succeeded => {
            progress.migrated_image = Some(spec_image.clone());
            progress.migration_job = Some(job_name.clone());
            progress.migrated = Check::done(
                "Succeeded",
                format!("Job {job_name} migrated the database to {spec_image}"),
            );
        }
        JobOutcome::Running => {
            progress.migration_job = Some(job_name.clone());
            progress.migrated = migrating(&job_name, &spec_image);
        }
        JobOutcome::Failed { message } => {
            progress.migration_job = Some(job_name.clone());
            let already_reported = previous
                .and_then(|status| find_condition(status, condition::MIGRATED))
                .filter(|migrated| {
                    migrated.reason == MIGRATION_FAILED
                        && previous.and_then(|s| s.migration_job.as_deref())
                            == Some(job_name.as_str())
                })
                .map(|migrated| migrated.message.clone());
            let text = match already_reported {
                Some(text) => text,
                None => {
                    let tail = job_log_tail(context, &namespace, &job_name).await;
                    let secrets: Vec<&str> = credentials
                        .iter()
                        .flat_map(|(owner, runtime)| {
                            [owner.get("password"), runtime.get("password")]
                        })
                        .flatten()
                        .map(String::as_str)
                        .collect();
                    let text = status::bounded(
                        &format!(
                            "Job {job_name} failed to migrate to {spec_image} ({message}); the \
                             Deployments keep the old image; fix the image or set the \
                             annotation kumiko.so/retry-migration to try again. Log tail:\n{}",
                            redact(&tail, &secrets)
                        ),
                        status::MAX_MESSAGE,
                    );
                    context
                        .publish_related(
                            app,
                            reference::<Job>(&namespace, &job_name),
                            EventType::Warning,
                            MIGRATION_FAILED,
                            "Migrate",
                            &text,
                        )
                        .await;
                    text
                }
            };
            progress.migrated = Check::not_yet(MIGRATION_FAILED, text.clone());
            progress.stalled = Some((MIGRATION_FAILED, text));
        }
        JobOutcome::Absent => match &built.migrate_job {
            Some(job) if !paused => {
                apply(context, app, job).await?;
                progress.migration_job = Some(job_name.clone());
                // Said as the running Job is, so that the next look at it writes no status.
                progress.migrated = migrating(&job_name, &spec_image);
                context
                    .publish_related(
                        app,
                        reference::<Job>(&namespace, &job_name),
                        EventType::Normal,
                        "MigrationStarted",
                        "Migrate",
                        &format!("Job {job_name} for {spec_image}"),
                    )
                    .await;
            }
            _ => {
                progress.migrated = Check::unknown(WAITING, "waiting for RolesReady");
            }
        },
    }

    // 5. The Deployments, Service and PodDisruptionBudgets.
    if !paused {
        // The API's objects and the worker's are independent of each other: applied at once.
        let api = async {
            if let Some(api) = &built.api {
                futures::try_join!(
                    apply(context, app, &api.deployment),
                    async {
                        match &api.service {
                            Some(service) => apply(context, app, service).await,
                            None => Ok(Applied::Unchanged),
                        }
                    },
                    apply(context, app, &api.pod_disruption_budget),
                )?;
            }
            Ok::<(), Error>(())
        };
        let worker = async {
            if let Some(worker) = &built.worker {
                futures::try_join!(
                    apply(context, app, &worker.deployment),
                    apply(context, app, &worker.pod_disruption_budget),
                )?;
            }
            Ok::<(), Error>(())
        };
        futures::try_join!(api, worker)?;
    }
    if !paused && app.spec.worker.is_none() && world.worker.is_some() {
        remove_worker(context, &namespace, &name).await?;
    }
    progress.image = built.rollout_image.clone();
    // A Deployment created just now is judged as the next reconcile will find it (rolling out,
    // nothing ready), so that one writes no status of its own.
    let created = |observed: &Option<Deployment>, desired: Option<&Deployment>| {
        desired
            .filter(|_| observed.is_none() && !paused)
            .map(just_created)
    };
    let created_api = created(&world.api, built.api.as_ref().map(|api| &api.deployment));
    let created_worker = created(
        &world.worker,
        built.worker.as_ref().map(|worker| &worker.deployment),
    );
    let (api_check, api_counts) = availability(
        world.api.as_ref().or(created_api.as_ref()),
        &spec_image,
        app.spec.api.replicas,
    );
    progress.api = api_check;
    progress.api_replicas = api_counts;
    match &app.spec.worker {
        Some(worker) => {
            let (check, counts) = availability(
                world.worker.as_ref().or(created_worker.as_ref()),
                &spec_image,
                worker.replicas,
            );
            progress.worker = check;
            progress.worker_replicas = counts;
        }
        None => {
            progress.worker = Check::done("NotConfigured", "the app has no worker");
            progress.worker_replicas = None;
        }
    }

    // Old migrate Jobs: keep the newest three.
    if !paused {
        let jobs: Api<Job> = Api::namespaced(context.client.clone(), &namespace);
        for old in jobs_to_delete(&world.jobs, &job_name) {
            match jobs.delete(old, &DeleteParams::background()).await {
                Ok(_) => context.metrics.wrote("Job"),
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(source) => {
                    return Err(Error::Kube {
                        action: format!("deleting the old migrate Job {namespace}/{old}"),
                        source,
                    });
                }
            }
        }
    }
    Ok(())
}

/// A 404 from applying a Cluster: the object cannot be missing (an apply creates it), so the API
/// itself is: CloudNativePG is not installed (or not its `postgresql.cnpg.io/v1` version).
fn cnpg_not_served(error: Error) -> Error {
    match error {
        Error::Kube {
            source: kube::Error::Api(status),
            ..
        } if status.code == 404 => Error::ApiNotServed {
            api: "postgresql.cnpg.io/v1 Cluster",
            fix: "install CloudNativePG 1.27 (infra/cnpg), or use spec.database.shared or \
                  spec.database.external",
            source: kube::Error::Api(status),
        },
        other => other,
    }
}

/// Whether this is the first look of `app` at a dedicated Cluster that was there before the app
/// was created: one retained (`reclaimPolicy: Retain`) from an earlier KumikoApp of the same name.
fn adopts_retained_cluster(
    app: &KumikoApp,
    cluster: Option<&Cluster>,
    previous: Option<&KumikoAppStatus>,
) -> bool {
    let first_look = previous
        .and_then(|status| find_condition(status, condition::DATABASE_READY))
        .is_none();
    let created = |meta: &ObjectMeta| meta.creation_timestamp.as_ref().map(|time| time.0);
    let predates_app = match (
        cluster.and_then(|c| created(&c.metadata)),
        created(&app.metadata),
    ) {
        (Some(cluster), Some(app)) => cluster < app,
        _ => false,
    };
    first_look && predates_app
}

/// `Migrated` while the Job for `image` runs (from its creation on).
fn migrating(job_name: &str, image: &str) -> Check {
    Check::not_yet(
        "Running",
        format!("Job {job_name} is migrating the database to {image}"),
    )
}

/// Deletes the worker Deployment and its PodDisruptionBudget after the spec dropped the worker.
async fn remove_worker(context: &Context, namespace: &str, name: &str) -> Result<(), Error> {
    let worker = names::worker(name);
    let deployments: Api<Deployment> = Api::namespaced(context.client.clone(), namespace);
    let budgets: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        Api::namespaced(context.client.clone(), namespace);
    for result in [
        deployments
            .delete(&worker, &DeleteParams::background())
            .await
            .map(|_| "Deployment"),
        budgets
            .delete(&worker, &DeleteParams::background())
            .await
            .map(|_| "PodDisruptionBudget"),
    ] {
        match result {
            Ok(kind) => context.metrics.wrote(kind),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(Error::Kube {
                    action: format!("removing the worker {namespace}/{worker}"),
                    source,
                });
            }
        }
    }
    Ok(())
}

fn running_image(deployment: Option<&Deployment>) -> Option<String> {
    deployment
        .and_then(|deployment| deployment.spec.as_ref())
        .and_then(|spec| spec.template.spec.as_ref())
        .and_then(|pod| pod.containers.first())
        .and_then(|container| container.image.clone())
}

/// The app is being deleted: apply the reclaim policy, then release the finalizer.
async fn finalize(app: &KumikoApp, context: &Context) -> Result<Action, Error> {
    if !app.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let name = app.name_any();
    let namespace = app.namespace().unwrap_or_default();
    let delete = app.spec.database.reclaim_policy == ReclaimPolicy::Delete;
    if delete && app.spec.database.mode() != Some(DatabaseMode::External) {
        let world = observe(context, app).await?;
        if let Some(admin) = world.admin_secret.clone() {
            let request = roles_request(app, &world, admin, false)?;
            context.roles.reclaim(&request).await?;
            context
                .publish(
                    app,
                    EventType::Normal,
                    "Reclaimed",
                    "Reclaim",
                    "dropped the app's roles and database (reclaimPolicy: Delete)",
                )
                .await;
        } else {
            tracing::warn!(app = %format!("{namespace}/{name}"), "the database is gone: nothing to reclaim");
        }
    }
    let finalizers: Vec<String> = app
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    apps_api(context, &namespace)
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"finalizers": finalizers}})),
        )
        .await
        .map_err(|source| Error::Kube {
            action: format!("removing the finalizer of KumikoApp {namespace}/{name}"),
            source,
        })?;
    context.metrics.wrote("KumikoApp");
    Ok(Action::await_change())
}

impl Context {
    /// Publishes an Event about `app` (best effort: a failure is logged, never fatal).
    pub async fn publish(
        &self,
        app: &KumikoApp,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        self.publish_event(app, None, type_, reason, action, note)
            .await;
    }

    /// Publishes an Event about `app` that concerns `related` as well (the migrate Job, a child
    /// put back). The recorder folds repeats of one reason about one object into a series that
    /// keeps the first note; the related object keeps the Events of different objects apart.
    pub async fn publish_related(
        &self,
        app: &KumikoApp,
        related: ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        self.publish_event(app, Some(related), type_, reason, action, note)
            .await;
    }

    async fn publish_event(
        &self,
        app: &KumikoApp,
        related: Option<ObjectReference>,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(status::bounded(note, 1000)),
            action: action.to_owned(),
            secondary: related,
        };
        match self.recorder.publish(&event, &app.object_ref(&())).await {
            Ok(()) => self.metrics.wrote("Event"),
            Err(error) => tracing::warn!(%error, reason, "publishing an Event failed"),
        }
    }
}

/// A reference to the `K` named `name` in `namespace`, for an Event's related object.
pub fn reference<K: Resource<DynamicType = ()>>(namespace: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        ..ObjectReference::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(database: &str) -> KumikoApp {
        serde_saphyr::from_str(&format!(
            "apiVersion: kumiko.so/v1alpha1\nkind: KumikoApp\nmetadata: {{name: billing, namespace: billing}}\nspec:\n  image: ghcr.io/acme/billing:1.0.0\n  database: {database}\n"
        ))
        .expect("test manifest parses")
    }

    #[test]
    fn a_shared_cluster_is_found_in_its_cluster_namespace() {
        let shared = app(
            "{shared: {clusterName: shared-pg, clusterNamespace: databases, adminSecret: {name: admin}}}",
        );
        assert_eq!(
            database_service(&shared),
            ClusterService::read_write("shared-pg", "databases")
        );
    }

    #[test]
    fn a_shared_cluster_without_a_namespace_is_in_the_apps() {
        let shared = app("{shared: {clusterName: shared-pg, adminSecret: {name: admin}}}");
        assert_eq!(
            database_service(&shared),
            ClusterService::read_write("shared-pg", "billing")
        );
    }

    #[test]
    fn a_dedicated_cluster_is_the_apps_own_in_its_namespace() {
        let dedicated = app("{cluster: {storage: {size: 1Gi}}}");
        assert_eq!(
            database_service(&dedicated),
            ClusterService::read_write(&names::database_cluster("billing"), "billing")
        );
    }
}
