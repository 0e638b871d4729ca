//! Plan: what one reconcile does, decided from the validated app, the observation and the previous
//! status by one pure function, [`plan`]. No I/O, no clock: the caller passes `now`.
//!
//! The ordered rollout (DESIGN §1), each step gated on the one before:
//!
//! 1. budget: the ServiceAccount, ResourceQuota and LimitRange, and the NetworkPolicies
//!    (`spec.networkPolicy`);
//! 2. database: the dedicated CNPG Cluster (cluster mode); `DatabaseReady` from what was observed;
//! 3. roles: the owner and runtime roles and their Secrets, once the database is ready; asked
//!    again only when a Secret is missing or was edited, a rotation is pending, or the generation
//!    or the previous `RolesReady` says the roles were not confirmed for this spec;
//! 4. migrate: one Job per migration hash (image, command, environment, retry annotation), created
//!    once the roles are ready; a failed Job holds the Deployments at the old image and stalls the
//!    app until the spec (or the retry annotation) changes;
//! 5. workloads: the Deployments, Service and PodDisruptionBudgets at the rollout image (the
//!    spec's once migrated, else the one running); a worker dropped from the spec is deleted;
//!    with autoscaling, a HorizontalPodAutoscaler per process type, the Deployment applied
//!    without `replicas` after handing the field over once ([`ReplicasHandover`]), and the
//!    autoscaler deleted when autoscaling is turned off;
//! 6. traffic: the Ingress or HTTPRoute of `spec.api.expose` (with the API's objects), a route of
//!    a kind the spec no longer asks for deleted, and the NetworkPolicies the spec no longer asks
//!    for deleted (they are applied with the budget, before any pod runs); `RouteAccepted` from the HTTPRoute's parent
//!    status (an Ingress reports no acceptance);
//! 7. monitoring: the PodMonitor of `spec.monitoring` (with the API's objects), only where the
//!    cluster serves PodMonitors (`MonitoringAvailable=False`, `PodMonitorCrdMissing`, where it
//!    does not; the app is Ready all the same), deleted when monitoring is turned off;
//!    `AutoscalerActive` from the HorizontalPodAutoscalers' `ScalingActive` condition;
//! 8. cleanup: all but the newest three migrate Jobs are deleted;
//! 9. status: the conditions, computed from the steps.
//!
//! `spec.paused` plans no write at all (status only). The roles step is the one step whose output
//! (the credentials) later builders need: a plan that asks for the roles ends there
//! ([`Plan::roles`]); the pipeline carries it out, records the credentials in the observation
//! ([`World::roles_ensured`]) and plans again. An empty plan ([`Plan::is_empty`]) means converged.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::Resource;
use kube::runtime::events::EventType;
use kumiko_crds::{KumikoApp, KumikoAppStatus, ProcessStatus, condition};

use super::credentials::{credentials_checksum, redact};
use super::observe::World;
use super::status::{self, Check, MIGRATION_FAILED, Progress, WAITING, compute_status};
use super::steps::{JobOutcome, Wanted, availability, job_outcome, jobs_to_delete, just_created};
use crate::desired::{self, Children, FINALIZER, NetworkPolicies};
use crate::gateway_api::{self, HTTPRoute};
use crate::observed::Observed;
use crate::validate::{Autoscaler, Database, ValidatedApp};

/// The steps of the rollout, in order: an action belongs to one, and a failure at one leaves the
/// conditions of it and of every later step as they were before the reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Adding the finalizer.
    Finalizer,
    /// ServiceAccount, ResourceQuota, LimitRange.
    Budget,
    /// The dedicated CNPG Cluster.
    Database,
    /// The Postgres roles and their Secrets.
    Roles,
    /// The migrate Job.
    Migrate,
    /// The Deployments, Service and PodDisruptionBudgets (and a dropped worker's deletion).
    Workloads,
    /// The Ingress or HTTPRoute (and its Certificate), and a route or NetworkPolicy no longer
    /// asked for deleted.
    Traffic,
    /// The PodMonitor, and one no longer asked for deleted.
    Monitoring,
    /// Old migrate Jobs.
    Cleanup,
}

/// An Event to record about the app, after the writes of its step succeeded.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedEvent {
    /// The step whose writes it reports.
    pub step: Step,
    /// Normal or Warning.
    pub type_: EventType,
    /// A CamelCase reason.
    pub reason: &'static str,
    /// What the operator did (CamelCase).
    pub action: &'static str,
    /// The message.
    pub note: String,
    /// The object it concerns besides the app (the migrate Job).
    pub related: Option<ObjectReference>,
}

/// Converge the app's Postgres roles, then write their Secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolesAction {
    /// Give the runtime role a new password (the rotation annotation changed).
    pub rotate_runtime: bool,
}

/// The field manager that holds a Deployment's `replicas` between the operator letting go of
/// the field and the HorizontalPodAutoscaler's first change of it (see [`ReplicasHandover`]).
pub const REPLICAS_HANDOVER_MANAGER: &str = "kumiko-operator-replicas-handover";

/// Hand a Deployment's `replicas` over to its HorizontalPodAutoscaler: before the operator applies
/// the Deployment without the field for the first time, another field manager takes it at its
/// live value, so the operator's apply does not remove it (Kubernetes would reset the Deployment
/// to one pod). Planned once, when autoscaling is turned on for a Deployment that exists and the
/// previous status does not say `autoscaled`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicasHandover {
    /// The Deployment.
    pub deployment: String,
    /// Its live `spec.replicas`.
    pub replicas: i32,
}

/// A child to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delete {
    /// A Deployment (a worker dropped from the spec).
    Deployment(String),
    /// A PodDisruptionBudget (a worker dropped from the spec).
    PodDisruptionBudget(String),
    /// An old migrate Job.
    Job(String),
    /// A HorizontalPodAutoscaler (autoscaling turned off, or its worker dropped).
    HorizontalPodAutoscaler(String),
    /// An Ingress the spec no longer asks for.
    Ingress(String),
    /// An HTTPRoute the spec no longer asks for.
    HttpRoute(String),
    /// A NetworkPolicy the spec no longer asks for (`networkPolicy.enabled: false`, `egress`
    /// removed, a dedicated database's policy of an app that has none).
    NetworkPolicy(String),
    /// A PodMonitor (monitoring turned off).
    PodMonitor(String),
}

impl Delete {
    /// The step the deletion belongs to.
    pub fn step(&self) -> Step {
        match self {
            Self::Deployment(_)
            | Self::PodDisruptionBudget(_)
            | Self::HorizontalPodAutoscaler(_) => Step::Workloads,
            Self::Ingress(_) | Self::HttpRoute(_) | Self::NetworkPolicy(_) => Step::Traffic,
            Self::PodMonitor(_) => Step::Monitoring,
            Self::Job(_) => Step::Cleanup,
        }
    }

    /// The name of the child to delete.
    pub fn name(&self) -> &str {
        match self {
            Self::Deployment(name)
            | Self::PodDisruptionBudget(name)
            | Self::Job(name)
            | Self::HorizontalPodAutoscaler(name)
            | Self::Ingress(name)
            | Self::HttpRoute(name)
            | Self::NetworkPolicy(name)
            | Self::PodMonitor(name) => name,
        }
    }
}

/// Everything one reconcile does, and the status it leads to.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The finalizer list to set (the current one plus the operator's), when it lacks it.
    pub add_finalizer: Option<Vec<String>>,
    /// The children to apply, in order (`None` when paused). Fields of later steps are `None`
    /// until their step is reached.
    pub apply: Option<Children>,
    /// Converge the roles (after the database, before the migrate Job); the plan ends there.
    pub roles: Option<RolesAction>,
    /// Deployments whose `replicas` go over to their autoscaler, before the workloads are
    /// applied.
    pub handovers: Vec<ReplicasHandover>,
    /// The children to delete, in order.
    pub deletes: Vec<Delete>,
    /// The Events to record.
    pub events: Vec<PlannedEvent>,
    /// The state of every step once the plan is carried out.
    pub progress: Progress,
    /// The facts the children were built from (what `render` takes as its observed state).
    pub facts: Observed,
    /// The status once the plan is carried out.
    pub status: KumikoAppStatus,
}

impl Plan {
    /// Whether the plan writes nothing but what the applied-hash skip finds unchanged: no
    /// finalizer, no roles, no deletion, no Event.
    pub fn is_empty(&self) -> bool {
        self.add_finalizer.is_none()
            && self.roles.is_none()
            && self.handovers.is_empty()
            && self.deletes.is_empty()
            && self.events.is_empty()
    }

    /// This plan less what `done`, carried out earlier in the same reconcile, did already: its
    /// finalizer patch and its Events (an Event planned twice in one reconcile is recorded once).
    pub fn after(mut self, done: &Plan) -> Plan {
        if done.add_finalizer.is_some() {
            self.add_finalizer = None;
        }
        self.events.retain(|event| !done.events.contains(event));
        self
    }

    /// The progress when carrying the plan out failed at `failed`: the steps before it as
    /// planned, it and every later one as the previous status left them (`baseline`).
    pub fn progress_until(&self, failed: Step, baseline: &Progress) -> Progress {
        let mut progress = self.progress.clone();
        if failed <= Step::Database {
            progress.database = baseline.database.clone();
        }
        if failed <= Step::Roles {
            progress.roles = baseline.roles.clone();
            progress
                .rotated_credentials_for
                .clone_from(&baseline.rotated_credentials_for);
        }
        if failed <= Step::Migrate {
            progress.migrated = baseline.migrated.clone();
            progress.migrated_image.clone_from(&baseline.migrated_image);
            progress.migration_job.clone_from(&baseline.migration_job);
            progress.stalled.clone_from(&baseline.stalled);
        }
        if failed <= Step::Workloads {
            progress.api = baseline.api.clone();
            progress.worker = baseline.worker.clone();
            progress.image.clone_from(&baseline.image);
            progress.api_replicas.clone_from(&baseline.api_replicas);
            progress
                .worker_replicas
                .clone_from(&baseline.worker_replicas);
        }
        if failed <= Step::Traffic {
            progress.route = baseline.route.clone();
        }
        if failed <= Step::Monitoring {
            // Not known to be in place: Unknown, as a step not yet observed is.
            progress.monitoring = progress
                .monitoring
                .as_ref()
                .map(|_| Check::unknown(WAITING, "not yet observed"));
        }
        progress
    }
}

/// What a reconcile knows before it acts: every step Unknown, the facts of the previous status
/// carried over until this reconcile learns better.
pub fn baseline(app: &KumikoApp, previous: Option<&KumikoAppStatus>) -> Progress {
    let mut progress = Progress::unknown(app.metadata.generation);
    progress.paused = app.spec.paused;
    if let Some(previous) = previous {
        progress.migrated_image.clone_from(&previous.migrated_image);
        progress.migration_job.clone_from(&previous.migration_job);
        progress
            .rotated_credentials_for
            .clone_from(&previous.rotated_credentials_for);
        progress.image.clone_from(&previous.image);
        progress.api_replicas.clone_from(&previous.api);
        progress.worker_replicas.clone_from(&previous.worker);
    }
    progress
}

/// The condition `kind` of a status.
pub fn find_condition<'a>(status: &'a KumikoAppStatus, kind: &str) -> Option<&'a Condition> {
    status
        .conditions
        .iter()
        .find(|condition| condition.type_ == kind)
}

/// The message with which the previous status already reports the failure of Job `job`, if it
/// does: then its log is not read again and no second Event is recorded.
pub fn reported_failure<'a>(previous: Option<&'a KumikoAppStatus>, job: &str) -> Option<&'a str> {
    let previous = previous?;
    let migrated = find_condition(previous, condition::MIGRATED)?;
    (migrated.reason == MIGRATION_FAILED && previous.migration_job.as_deref() == Some(job))
        .then_some(migrated.message.as_str())
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

/// Plans one reconcile of `app` (see the module docs for the rules); `now` stamps the conditions
/// whose status flips.
pub fn plan(
    app: &ValidatedApp<'_>,
    world: &World,
    previous: Option<&KumikoAppStatus>,
    now: &Time,
) -> Plan {
    let names = &app.names;
    let paused = app.spec.paused;
    let image = app.spec.image.as_str();
    let mut progress = baseline(app.app, previous);
    let mut events = Vec::new();
    let mut deletes = Vec::new();
    let event = |step, type_, reason, action, note: String, related| PlannedEvent {
        step,
        type_,
        reason,
        action,
        note,
        related,
    };

    let finalizers = app.app.metadata.finalizers.as_deref().unwrap_or_default();
    let add_finalizer = (!paused && !finalizers.iter().any(|f| f == FINALIZER))
        .then(|| desired::finalizer::with_finalizer(finalizers));

    // 1. The budget, then 2. the database.
    let mut facts = Observed {
        database_ready: world.database_ready,
        app_uid: app.app.metadata.uid.clone(),
        running_image: running_image(world.api.as_ref()),
        operators: world.operators.clone(),
        ..Observed::default()
    };
    if !paused
        && matches!(app.database, Database::Cluster { .. })
        && adopts_retained_cluster(app, world, previous)
    {
        events.push(event(
            Step::Database,
            EventType::Normal,
            "AdoptedDatabase",
            "Adopt",
            format!(
                "adopted the CNPG Cluster {} retained from an earlier KumikoApp {}, with its \
                 roles and data",
                names.database_cluster, names.app
            ),
            None,
        ));
    }
    progress.database = if world.database_ready {
        Check::done("Reachable", world.database_message.clone())
    } else {
        Check::not_yet(WAITING, world.database_message.clone())
    };

    // 3. The roles and their Secrets.
    let rotate_value = app.rotate_credentials.map(str::to_owned);
    let rotate_pending = rotate_value.is_some() && rotate_value != progress.rotated_credentials_for;
    let mut credentials = world
        .owner_secret
        .as_ref()
        .zip(world.runtime_secret.as_ref());
    let roles_ready = match &app.database {
        Database::External { .. } => {
            progress.roles = Check::done(
                "External",
                "an external database: the app connects with spec.database.external.uriSecret",
            );
            credentials = None;
            world.database_ready
        }
        Database::Cluster { .. } | Database::Shared { .. } if !world.database_ready => {
            progress.roles = Check::unknown(WAITING, "waiting for DatabaseReady");
            false
        }
        Database::Cluster { .. } | Database::Shared { .. } => {
            let previously_ready = previous
                .and_then(|status| find_condition(status, condition::ROLES_READY))
                .is_some_and(|roles| roles.status == "True");
            let generation_seen = previous.and_then(|status| status.observed_generation)
                == app.app.metadata.generation;
            let needed = credentials.is_none()
                || rotate_pending
                || !previously_ready
                || !generation_seen
                || world.secrets_drifted;
            if needed && !paused && !world.roles_ensured {
                if rotate_pending {
                    events.push(event(
                        Step::Roles,
                        EventType::Normal,
                        "CredentialsRotated",
                        "RotateCredentials",
                        "the runtime role has a new password; the pods roll".to_owned(),
                        None,
                    ));
                }
                // The later steps' children are planned once the roles are known.
                let children = Children {
                    migrate_job: None,
                    api: None,
                    worker: None,
                    route: None,
                    pod_monitor: None,
                    ..desired::children(app, &facts)
                };
                return Plan {
                    add_finalizer,
                    apply: Some(children),
                    roles: Some(RolesAction {
                        rotate_runtime: rotate_pending,
                    }),
                    handovers: Vec::new(),
                    deletes,
                    events,
                    status: compute_status(previous, &progress, now),
                    progress,
                    facts,
                };
            }
            if world.roles_ensured && rotate_pending {
                progress.rotated_credentials_for = rotate_value;
            }
            progress.roles = match credentials {
                Some(_) => Check::done("Provisioned", "owner and runtime roles are in place"),
                None => Check::not_yet(WAITING, "the roles are not provisioned yet"),
            };
            credentials.is_some()
        }
    };
    facts.roles_ready = roles_ready;
    facts.credentials_checksum =
        credentials.map(|(owner, runtime)| credentials_checksum(owner, runtime));

    // 4. The migrate Job for the spec's image.
    let job_name = names.migrate_job.as_str();
    let outcome = job_outcome(&world.jobs, job_name);
    facts.migrated_image = match outcome {
        JobOutcome::Succeeded => Some(image.to_owned()),
        JobOutcome::Absent | JobOutcome::Running | JobOutcome::Failed { .. } => progress
            .migrated_image
            .clone()
            .filter(|migrated| migrated != image),
    };
    // Every child, built once from the complete facts; what the steps below take of it is applied.
    let Children {
        service_account,
        resource_quota,
        limit_range,
        network_policies,
        database_cluster,
        migrate_job: built_job,
        api: built_api,
        worker: built_worker,
        route,
        pod_monitor: built_pod_monitor,
    } = desired::children(app, &facts);
    let mut migrate_job = None;
    let rollout_image = desired::rollout_image(app, &facts);
    let job_reference = || Some(reference::<Job>(&names.namespace, job_name));
    match &outcome {
        JobOutcome::Succeeded => {
            progress.migrated_image = Some(image.to_owned());
            progress.migration_job = Some(job_name.to_owned());
            progress.migrated = Check::done(
                "Succeeded",
                format!("Job {job_name} migrated the database to {image}"),
            );
        }
        JobOutcome::Running => {
            progress.migration_job = Some(job_name.to_owned());
            progress.migrated = migrating(job_name, image);
        }
        JobOutcome::Failed { message } => {
            progress.migration_job = Some(job_name.to_owned());
            let text = match reported_failure(previous, job_name) {
                Some(text) => text.to_owned(),
                None => {
                    let secrets: Vec<&str> = world
                        .owner_secret
                        .iter()
                        .chain(world.runtime_secret.iter())
                        .filter_map(|data| data.get("password"))
                        .map(String::as_str)
                        .collect();
                    let text = status::bounded(
                        &format!(
                            "Job {job_name} failed to migrate to {image} ({message}); the \
                             Deployments keep the old image; fix the image or set the \
                             annotation kumiko.so/retry-migration to try again. Log tail:\n{}",
                            redact(world.migration_log.as_deref().unwrap_or(""), &secrets)
                        ),
                        status::MAX_MESSAGE,
                    );
                    events.push(event(
                        Step::Migrate,
                        EventType::Warning,
                        MIGRATION_FAILED,
                        "Migrate",
                        text.clone(),
                        job_reference(),
                    ));
                    text
                }
            };
            progress.migrated = Check::not_yet(MIGRATION_FAILED, text.clone());
            progress.stalled = Some((MIGRATION_FAILED, text));
        }
        JobOutcome::Absent => match built_job {
            Some(job) if !paused => {
                migrate_job = Some(job);
                progress.migration_job = Some(job_name.to_owned());
                // Said as the running Job is, so that the next look at it writes no status.
                progress.migrated = migrating(job_name, image);
                events.push(event(
                    Step::Migrate,
                    EventType::Normal,
                    "MigrationStarted",
                    "Migrate",
                    format!("Job {job_name} for {image}"),
                    job_reference(),
                ));
            }
            Some(_) | None => {
                progress.migrated = Check::unknown(WAITING, "waiting for RolesReady");
            }
        },
    }

    // 5. The Deployments, Service and PodDisruptionBudgets (applied with the other children
    // below), and a worker dropped from the spec deleted.
    if !paused && app.spec.worker.is_none() && world.worker.is_some() {
        deletes.push(Delete::Deployment(names.worker.clone()));
        deletes.push(Delete::PodDisruptionBudget(names.worker.clone()));
    }
    let was_autoscaled = |process: fn(&KumikoAppStatus) -> Option<&ProcessStatus>| {
        previous
            .and_then(process)
            .is_some_and(|status| status.autoscaled)
    };
    let api_autoscaling = Autoscaling::plan(
        app.api_autoscaler.is_some(),
        was_autoscaled(|status| status.api.as_ref()),
        paused,
        world.api.as_ref(),
        built_api.is_some(),
    );
    let worker_autoscaling = Autoscaling::plan(
        app.worker_autoscaler.is_some(),
        was_autoscaled(|status| status.worker.as_ref()),
        paused,
        world.worker.as_ref(),
        built_worker.is_some(),
    );
    let mut handovers = Vec::new();
    for (autoscaling, name) in [
        (&api_autoscaling, &names.api),
        (&worker_autoscaling, &names.worker),
    ] {
        if let Some(replicas) = autoscaling.handover {
            handovers.push(ReplicasHandover {
                deployment: name.clone(),
                replicas,
            });
            events.push(event(
                Step::Workloads,
                EventType::Normal,
                "AutoscalingEnabled",
                "HandOverReplicas",
                format!(
                    "the HorizontalPodAutoscaler {name} sets the replicas of Deployment {name} \
                     from now on (from {replicas})"
                ),
                None,
            ));
        }
        if autoscaling.delete {
            deletes.push(Delete::HorizontalPodAutoscaler(name.clone()));
        }
    }
    progress.image = rollout_image;
    // A Deployment created just now is judged as the next reconcile will find it (rolling out,
    // nothing ready), so that one writes no status of its own.
    let created = |observed: &Option<Deployment>, desired: Option<&Deployment>| {
        desired
            .filter(|_| observed.is_none() && !paused)
            .map(just_created)
    };
    let created_api = created(&world.api, built_api.as_ref().map(|api| &api.deployment));
    let created_worker = created(
        &world.worker,
        built_worker.as_ref().map(|worker| &worker.deployment),
    );
    let api_deployment = world.api.as_ref().or(created_api.as_ref());
    let (api_check, api_counts) = availability(
        api_deployment,
        image,
        wanted(app.spec.api.replicas, app.api_autoscaler.as_ref()),
    );
    progress.api = api_check;
    progress.api_replicas =
        api_counts.map(|counts| api_autoscaling.describe(counts, &names.app, "api"));
    match &app.spec.worker {
        Some(worker) => {
            let worker_deployment = world.worker.as_ref().or(created_worker.as_ref());
            let (check, counts) = availability(
                worker_deployment,
                image,
                wanted(worker.replicas, app.worker_autoscaler.as_ref()),
            );
            progress.worker = check;
            progress.worker_replicas =
                counts.map(|counts| worker_autoscaling.describe(counts, &names.app, "worker"));
        }
        None => {
            progress.worker = Check::done("NotConfigured", "the app has no worker");
            progress.worker_replicas = None;
        }
    }

    // 6. The route: a kind the spec no longer asks for deleted; acceptance from the HTTPRoute.
    let expose = app.spec.api.expose.as_ref();
    let wants_ingress = expose.is_some_and(|expose| expose.gateway.is_none());
    let wants_http_route = expose.is_some_and(|expose| expose.gateway.is_some());
    if !paused && !wants_ingress && world.ingress.is_some() {
        deletes.push(Delete::Ingress(names.api.clone()));
    }
    if !paused && !wants_http_route && world.http_route.is_some() {
        deletes.push(Delete::HttpRoute(names.api.clone()));
    }
    progress.urls = expose.map(desired::route::urls).unwrap_or_default();
    progress.route = route_acceptance(app, world.http_route.as_ref());

    // 7. The PodMonitor, where the cluster serves PodMonitors; the autoscalers' activity.
    let monitoring = app
        .spec
        .monitoring
        .as_ref()
        .filter(|monitoring| monitoring.enabled);
    if !paused && monitoring.is_none() && world.pod_monitor.is_some() {
        deletes.push(Delete::PodMonitor(names.app.clone()));
    }
    progress.monitoring = monitoring.map(|_| {
        monitoring_availability(
            &names.app,
            world.pod_monitors_served,
            built_pod_monitor.is_some(),
        )
    });
    let pod_monitor = built_pod_monitor.filter(|_| world.pod_monitors_served);
    progress.autoscaler = autoscaler_activity([
        (
            app.api_autoscaler.is_some(),
            names.api.as_str(),
            world.api_autoscaler.as_ref(),
        ),
        (
            app.worker_autoscaler.is_some(),
            names.worker.as_str(),
            world.worker_autoscaler.as_ref(),
        ),
    ]);

    // 8. Old migrate Jobs: keep the newest three.
    if !paused {
        deletes.extend(
            jobs_to_delete(&world.jobs, job_name)
                .into_iter()
                .map(|old| Delete::Job(old.to_owned())),
        );
    }

    // The NetworkPolicies the spec no longer asks for.
    if !paused {
        deletes.extend(
            policies_to_delete(app, network_policies.as_ref(), &world.network_policies)
                .into_iter()
                .map(Delete::NetworkPolicy),
        );
    }

    let children = Children {
        service_account,
        resource_quota,
        limit_range,
        network_policies,
        database_cluster,
        migrate_job,
        api: built_api,
        worker: built_worker,
        route,
        pod_monitor,
    };
    Plan {
        add_finalizer,
        apply: (!paused).then_some(children),
        roles: None,
        handovers,
        deletes,
        events,
        status: compute_status(previous, &progress, now),
        progress,
        facts,
    }
}

/// What deleting the app does before its finalizer is released.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reclaim {
    /// Nothing: `reclaimPolicy: Retain` (or the operator's finalizer is not on the app).
    Retain,
    /// Nothing: an external database, where the operator created nothing.
    External,
    /// Nothing: the database (its admin Secret) is gone, and the roles with it.
    DatabaseGone,
    /// Drop the app's roles and database, then record a `Reclaimed` Event.
    Drop,
}

/// What deleting `app` reclaims; `admin_secret_present`: whether the database's admin Secret
/// was observed (asked only for [`needs_database`]).
pub fn reclaim(app: &ValidatedApp<'_>, admin_secret_present: bool) -> Reclaim {
    match (
        &app.database,
        app.deletes_on_reclaim(),
        admin_secret_present,
    ) {
        (_, false, _) => Reclaim::Retain,
        (Database::External { .. }, true, _) => Reclaim::External,
        (Database::Cluster { .. } | Database::Shared { .. }, true, false) => Reclaim::DatabaseGone,
        (Database::Cluster { .. } | Database::Shared { .. }, true, true) => Reclaim::Drop,
    }
}

/// Whether deciding [`reclaim`] needs a look at the database.
pub fn needs_database(app: &ValidatedApp<'_>) -> bool {
    app.deletes_on_reclaim() && !matches!(app.database, Database::External { .. })
}

/// Whether this is the first look of `app` at a dedicated Cluster that was there before the app
/// was created: one retained (`reclaimPolicy: Retain`) from an earlier KumikoApp of the same name.
fn adopts_retained_cluster(
    app: &ValidatedApp<'_>,
    world: &World,
    previous: Option<&KumikoAppStatus>,
) -> bool {
    let first_look = previous
        .and_then(|status| find_condition(status, condition::DATABASE_READY))
        .is_none();
    let created = |meta: &ObjectMeta| meta.creation_timestamp.as_ref().map(|time| time.0);
    let predates_app = match (
        world.cluster.as_ref().and_then(|c| created(&c.metadata)),
        created(&app.app.metadata),
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

/// The image a Deployment runs.
pub fn running_image(deployment: Option<&Deployment>) -> Option<String> {
    deployment
        .and_then(|deployment| deployment.spec.as_ref())
        .and_then(|spec| spec.template.spec.as_ref())
        .and_then(|pod| pod.containers.first())
        .and_then(|container| container.image.clone())
}

/// Who sets one process type's replicas, decided from the spec, the previous status and the
/// observed Deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Autoscaling {
    /// A HorizontalPodAutoscaler sets the replicas once this plan is carried out.
    autoscaled: bool,
    /// Hand the live replicas over before the first apply without them.
    handover: Option<i32>,
    /// Delete the HorizontalPodAutoscaler: autoscaling was turned off.
    delete: bool,
}

impl Autoscaling {
    /// `requested`: the spec asks for autoscaling; `was_autoscaled`: the previous status says a
    /// HorizontalPodAutoscaler set the replicas; `live`: the Deployment as observed; `applied`:
    /// this plan applies the Deployment.
    fn plan(
        requested: bool,
        was_autoscaled: bool,
        paused: bool,
        live: Option<&Deployment>,
        applied: bool,
    ) -> Self {
        if paused {
            return Self {
                autoscaled: was_autoscaled,
                handover: None,
                delete: false,
            };
        }
        let delete = !requested && was_autoscaled;
        if !applied {
            return Self {
                autoscaled: was_autoscaled && !delete,
                handover: None,
                delete,
            };
        }
        let handover = (requested && !was_autoscaled)
            .then(|| live.map(live_replicas))
            .flatten();
        Self {
            autoscaled: requested,
            handover,
            delete,
        }
    }

    /// `counts` with the selector and whether an autoscaler sets the replicas.
    fn describe(&self, mut counts: ProcessStatus, app: &str, component: &str) -> ProcessStatus {
        counts.selector = Some(desired::selector_string(app, component));
        counts.autoscaled = self.autoscaled;
        counts
    }
}

/// A Deployment's `spec.replicas` (1, Kubernetes' default, when unset).
fn live_replicas(deployment: &Deployment) -> i32 {
    deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1)
}

/// What a process type's rollout is judged against: the spec's replicas, or, when an autoscaler
/// sets them, its `minReplicas` available with every pod at the current template.
fn wanted(spec_replicas: i32, autoscaler: Option<&Autoscaler>) -> Wanted {
    match autoscaler {
        Some(autoscaler) => Wanted::AtLeast(autoscaler.min_replicas),
        None => Wanted::Exactly(spec_replicas),
    }
}

/// The kinds of children a [`Delete`] names, for the executor and metrics.
pub fn delete_kind(delete: &Delete) -> &'static str {
    match delete {
        Delete::Deployment(_) => "Deployment",
        Delete::PodDisruptionBudget(_) => "PodDisruptionBudget",
        Delete::Job(_) => "Job",
        Delete::HorizontalPodAutoscaler(_) => "HorizontalPodAutoscaler",
        Delete::Ingress(_) => "Ingress",
        Delete::HttpRoute(_) => "HTTPRoute",
        Delete::NetworkPolicy(_) => "NetworkPolicy",
        Delete::PodMonitor(_) => "PodMonitor",
    }
}

/// The app's NetworkPolicies that exist (`present`, by name) but are not among those `built`, in
/// apply order.
pub fn policies_to_delete(
    app: &ValidatedApp<'_>,
    built: Option<&NetworkPolicies>,
    present: &BTreeSet<String>,
) -> Vec<String> {
    let wanted: BTreeSet<String> = built
        .iter()
        .flat_map(|policies| policies.iter())
        .filter_map(|policy| policy.metadata.name.clone())
        .collect();
    app.names
        .network_policies
        .all()
        .into_iter()
        .filter(|name| present.contains(*name) && !wanted.contains(*name))
        .map(str::to_owned)
        .collect()
}

/// The reason of `MonitoringAvailable` where the cluster does not serve PodMonitors.
pub const POD_MONITOR_CRD_MISSING: &str = "PodMonitorCrdMissing";

/// `MonitoringAvailable` of an app whose spec enables monitoring: the PodMonitor `name` is
/// applied (`built`: the API's objects exist, so is the PodMonitor) where the cluster `served`
/// PodMonitors; False, naming what to install, where it does not (the app runs all the same).
pub fn monitoring_availability(name: &str, served: bool, built: bool) -> Check {
    match (served, built) {
        (false, _) => Check::not_yet(
            POD_MONITOR_CRD_MISSING,
            "the cluster does not serve monitoring.coreos.com/v1 PodMonitor: install the \
             prometheus-operator CRDs (for example with kube-prometheus-stack) to have the app's \
             /metrics scraped; the app runs without it",
        ),
        (true, false) => Check::unknown(WAITING, "waiting for the API's Deployment"),
        (true, true) => Check::done(
            "PodMonitorApplied",
            format!(
                "PodMonitor {name} has Prometheus scrape {} on the {} port of the API and worker \
                 pods",
                kumiko_contract::METRICS_PATH,
                desired::pod_monitor::PORT
            ),
        ),
    }
}

/// The `ScalingActive` condition type of an `autoscaling/v2` HorizontalPodAutoscaler: whether it
/// computes replica counts from its metrics (kube-controller-manager,
/// `pkg/controller/podautoscaler/horizontal.go`).
pub const SCALING_ACTIVE: &str = "ScalingActive";

/// The reason of `AutoscalerActive` False for an autoscaler reason this operator does not know.
pub const SCALING_INACTIVE: &str = "ScalingInactive";

/// The reasons with which kube-controller-manager sets `ScalingActive` False
/// (`horizontal.go`: `ScalingDisabled` for a target at 0 replicas, `InvalidSelector`,
/// `InvalidMetricSourceType`, and `FailedGet<Kind>Metric` from
/// `getUnableComputeReplicaCountCondition` when a metric cannot be read), as `&'static str`;
/// any other reason is [`SCALING_INACTIVE`], with the autoscaler's reason in the message.
fn scaling_inactive_reason(reason: &str) -> &'static str {
    const KNOWN: [&str; 8] = [
        "ScalingDisabled",
        "InvalidSelector",
        "InvalidMetricSourceType",
        "FailedGetResourceMetric",
        "FailedGetContainerResourceMetric",
        "FailedGetPodsMetric",
        "FailedGetObjectMetric",
        "FailedGetExternalMetric",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == reason)
        .unwrap_or(SCALING_INACTIVE)
}

/// `AutoscalerActive` from each process type's (`requested`: the spec asks for autoscaling,
/// the autoscaler's name, the observed autoscaler): `None` when no process type autoscales; else
/// False with the autoscaler's reason and message when one's `ScalingActive` is False, Unknown
/// while one has not reported it yet, True when every one computes replica counts. Informative:
/// it does not hold `Ready` back (the pods serve at their current count).
pub fn autoscaler_activity<'a>(
    processes: [(bool, &'a str, Option<&'a HorizontalPodAutoscaler>); 2],
) -> Option<Check> {
    let mut waiting = None;
    let mut active = Vec::new();
    for (requested, name, observed) in processes {
        if !requested {
            continue;
        }
        let scaling_active = observed
            .and_then(|autoscaler| autoscaler.status.as_ref())
            .and_then(|status| status.conditions.as_ref())
            .and_then(|conditions| {
                conditions
                    .iter()
                    .find(|condition| condition.type_ == SCALING_ACTIVE)
            });
        match scaling_active.map(|condition| condition.status.as_str()) {
            Some("True") => active.push(name),
            Some("False") => {
                let condition = scaling_active?;
                let reason = condition.reason.as_deref().unwrap_or_default();
                let known = scaling_inactive_reason(reason);
                let message = condition.message.as_deref().unwrap_or_default();
                return Some(Check::not_yet(
                    known,
                    if known == SCALING_INACTIVE {
                        format!(
                            "HorizontalPodAutoscaler {name} reports ScalingActive False ({reason}): {message}"
                        )
                    } else {
                        format!("HorizontalPodAutoscaler {name}: {message}")
                    },
                ));
            }
            Some(_) | None => {
                waiting.get_or_insert_with(|| {
                    Check::unknown(
                        WAITING,
                        format!(
                            "waiting for HorizontalPodAutoscaler {name} to report ScalingActive"
                        ),
                    )
                });
            }
        }
    }
    if let Some(waiting) = waiting {
        return Some(waiting);
    }
    (!active.is_empty()).then(|| {
        Check::done(
            "ScalingActive",
            format!(
                "HorizontalPodAutoscaler {} computes replica counts from its metrics",
                active.join(" and ")
            ),
        )
    })
}

/// The reason of a route its Gateway has not accepted yet, or refused.
pub const ROUTE_NOT_ACCEPTED: &str = "RouteNotAccepted";

/// `RouteAccepted`: whether the route of `app` carries traffic as far as it reports it. An app
/// not exposed, or exposed through an Ingress (whose API has no acceptance condition), is done;
/// an HTTPRoute is accepted when the entry of its Gateway in `status.parents` has `Accepted` and
/// `ResolvedRefs` True for the route's current generation (Gateway API `RouteConditionType`).
pub fn route_acceptance(app: &ValidatedApp<'_>, observed: Option<&HTTPRoute>) -> Check {
    let names = &app.names;
    let Some(expose) = app.spec.api.expose.as_ref() else {
        return Check::done("NotExposed", "spec.api.expose is not set");
    };
    let Some(gateway) = expose.gateway.as_ref() else {
        return Check::done(
            "Ingress",
            format!(
                "Ingress {} routes the API; an Ingress reports no acceptance",
                names.api
            ),
        );
    };
    let gateway_namespace = gateway.namespace.as_deref().unwrap_or(&names.namespace);
    let gateway_name = format!("{gateway_namespace}/{}", gateway.name);
    let waiting = || {
        Check::not_yet(
            ROUTE_NOT_ACCEPTED,
            format!(
                "waiting for Gateway {gateway_name} to accept HTTPRoute {}",
                names.api
            ),
        )
    };
    let Some(route) = observed else {
        return waiting();
    };
    let generation = route.metadata.generation;
    let Some(parent) = route.status.iter().flat_map(|s| &s.parents).find(|parent| {
        let reference = &parent.parent_ref;
        reference.name == gateway.name
            && reference.namespace.as_deref().unwrap_or(&names.namespace) == gateway_namespace
            && reference.section_name == gateway.section_name
    }) else {
        return waiting();
    };
    let current = |kind: &str| {
        parent.conditions.iter().find(|condition| {
            condition.type_ == kind
                && (generation.is_none() || condition.observed_generation >= generation)
        })
    };
    let (accepted, resolved) = (
        current(gateway_api::ACCEPTED),
        current(gateway_api::RESOLVED_REFS),
    );
    if let Some(refused) = [accepted, resolved]
        .into_iter()
        .flatten()
        .find(|condition| condition.status == "False")
    {
        return Check::not_yet(
            ROUTE_NOT_ACCEPTED,
            format!(
                "Gateway {gateway_name} reports {} False on HTTPRoute {} ({}): {}",
                refused.type_, names.api, refused.reason, refused.message
            ),
        );
    }
    match (accepted, resolved) {
        (Some(a), Some(r)) if a.status == "True" && r.status == "True" => Check::done(
            "Accepted",
            format!(
                "Gateway {gateway_name} accepted HTTPRoute {} and resolved its references",
                names.api
            ),
        ),
        _ => waiting(),
    }
}

#[cfg(test)]
mod tests;
