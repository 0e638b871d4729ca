//! Execute: carries out a [`Plan`], step by step in the rollout's order, and reports what it did.
//!
//! The only writes of a reconcile besides the status: the finalizer patch, server-side apply of the
//! children (through [`apply`], which skips an unchanged child and puts back a drifted one), the
//! roles and their Secrets, the deletions, and the Events (best effort, each after the writes of
//! its step succeeded). Nothing here decides anything: the plan says what, this says how.

use std::collections::BTreeMap;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kumiko_crds::KumikoApp;
use serde::de::DeserializeOwned;

use super::Context;
use super::apply::{Applied, apply};
use super::credentials::{RolesOutcome, RolesRequest};
use super::observe::World;
use super::plan::{
    Delete, Plan, PlannedEvent, REPLICAS_HANDOVER_MANAGER, ReplicasHandover, Step, delete_kind,
};
use super::status;
use crate::Error;
use crate::desired::credentials::credential_secret;
use crate::desired::{Children, NetworkPolicies, ProcessObjects, Route, finalizer};
use crate::gateway_api::HTTPRoute;
use crate::prometheus_operator::PodMonitor;
use crate::validate::ValidatedApp;

/// The reason of the Event about a KumikoApp that does not match the API types.
pub const UNREADABLE: &str = "UnreadableApp";

/// What carrying out a plan did.
#[derive(Default)]
pub struct Report {
    /// Children written (applied because new, changed or drifted).
    pub written: usize,
    /// Children found unchanged (nothing written).
    pub unchanged: usize,
    /// Children deleted (or already gone).
    pub deleted: usize,
    /// Events recorded.
    pub events: usize,
    /// What the roles step returned, when the plan asked for it.
    pub credentials: Option<RolesOutcome>,
}

/// Carrying out a plan failed at `step`; the steps before it were carried out.
#[derive(Debug)]
pub struct Failure {
    /// The step that failed.
    pub step: Step,
    /// Why.
    pub error: Error,
}

/// Carries out `plan` for `app`; `world` is the observation it was planned from (the roles step
/// reads the admin Secret and the stored passwords from it).
pub async fn execute(
    context: &Context,
    app: &ValidatedApp<'_>,
    world: &World,
    plan: &Plan,
) -> Result<Report, Failure> {
    let at = |step| move |error| Failure { step, error };
    let mut report = Report::default();
    let Plan {
        add_finalizer,
        apply: children,
        roles,
        handovers,
        deletes,
        events,
        progress: _,
        facts: _,
        status: _,
    } = plan;

    if let Some(finalizers) = add_finalizer {
        let names = &app.names;
        patch_app(
            context,
            (&names.namespace, &names.app),
            finalizers,
            "adding the finalizer to",
        )
        .await
        .map_err(at(Step::Finalizer))?;
    }
    if let Some(children) = children {
        let Children {
            service_account,
            resource_quota,
            limit_range,
            network_policies,
            database_cluster,
            migrate_job,
            api,
            worker,
            route,
            pod_monitor,
        } = children;
        let budget = futures::try_join!(
            apply(context, app.app, service_account),
            apply(context, app.app, resource_quota),
            apply(context, app.app, limit_range),
            apply_network_policies(context, app.app, network_policies.as_ref()),
        )
        .map_err(at(Step::Budget))?;
        report.count([budget.0, budget.1, budget.2]);
        report.count(budget.3);
        publish(context, app.app, events, Step::Budget, &mut report).await;

        if let Some(cluster) = database_cluster {
            let applied = apply(context, app.app, cluster)
                .await
                .map_err(cnpg_not_served)
                .map_err(at(Step::Database))?;
            report.count([applied]);
        }
        publish(context, app.app, events, Step::Database, &mut report).await;

        if let Some(action) = roles {
            let request =
                roles_request(app, world, action.rotate_runtime).map_err(at(Step::Roles))?;
            let outcome = context
                .roles
                .ensure(&request)
                .await
                .map_err(at(Step::Roles))?;
            let names = &app.names;
            let owner = credential_secret(app, &names.owner_secret, &outcome.owner);
            let runtime = credential_secret(app, &names.runtime_secret, &outcome.runtime);
            let secrets = futures::try_join!(
                apply(context, app.app, &owner),
                apply(context, app.app, &runtime),
            )
            .map_err(at(Step::Roles))?;
            report.count([secrets.0, secrets.1]);
            publish(context, app.app, events, Step::Roles, &mut report).await;
            report.credentials = Some(outcome);
            // The plan ends at the roles: the pipeline plans the rest with the credentials.
            return Ok(report);
        }

        if let Some(job) = migrate_job {
            let applied = apply(context, app.app, job)
                .await
                .map_err(at(Step::Migrate))?;
            report.count([applied]);
        }
        publish(context, app.app, events, Step::Migrate, &mut report).await;

        // The API's objects and the worker's are independent of each other: applied at once.
        let applied = futures::try_join!(
            apply_process(context, app.app, api.as_ref(), handovers),
            apply_process(context, app.app, worker.as_ref(), handovers),
        )
        .map_err(at(Step::Workloads))?;
        report.count(applied.0.into_iter().chain(applied.1));
        publish_deletes(context, app, events, deletes, Step::Workloads, &mut report).await?;

        let applied = apply_route(context, app.app, route.as_ref())
            .await
            .map_err(at(Step::Traffic))?;
        report.count(applied);
        publish_deletes(context, app, events, deletes, Step::Traffic, &mut report).await?;

        if let Some(pod_monitor) = pod_monitor {
            let applied = apply(context, app.app, pod_monitor)
                .await
                .map_err(|error| not_served(error, PROMETHEUS_OPERATOR))
                .map_err(at(Step::Monitoring))?;
            report.count([applied]);
        }
    } else {
        for step in [Step::Budget, Step::Database, Step::Roles, Step::Migrate] {
            publish(context, app.app, events, step, &mut report).await;
        }
        for step in [Step::Workloads, Step::Traffic] {
            publish_deletes(context, app, events, deletes, step, &mut report).await?;
        }
    }
    for step in [Step::Monitoring, Step::Cleanup] {
        publish_deletes(context, app, events, deletes, step, &mut report).await?;
    }
    Ok(report)
}

/// Carries out the deletions of `step`, then records its Events.
async fn publish_deletes(
    context: &Context,
    app: &ValidatedApp<'_>,
    events: &[PlannedEvent],
    deletes: &[Delete],
    step: Step,
    report: &mut Report,
) -> Result<(), Failure> {
    for delete in deletes.iter().filter(|delete| delete.step() == step) {
        remove(context, &app.names.namespace, delete)
            .await
            .map_err(|error| Failure { step, error })?;
        report.deleted += 1;
    }
    publish(context, app.app, events, step, report).await;
    Ok(())
}

/// Applies the NetworkPolicies, taken apart without `..` (see [`Children`]).
async fn apply_network_policies(
    context: &Context,
    app: &KumikoApp,
    policies: Option<&NetworkPolicies>,
) -> Result<Vec<Applied>, Error> {
    let Some(NetworkPolicies {
        api,
        no_ingress,
        database,
        egress,
    }) = policies
    else {
        return Ok(Vec::new());
    };
    futures::future::try_join_all(
        [
            Some(api),
            Some(no_ingress),
            database.as_ref(),
            egress.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|policy| apply(context, app, policy)),
    )
    .await
}

/// Applies the route of `spec.api.expose`, taken apart without `..` (see [`Children`]).
async fn apply_route(
    context: &Context,
    app: &KumikoApp,
    route: Option<&Route>,
) -> Result<Vec<Applied>, Error> {
    match route {
        None => Ok(Vec::new()),
        Some(Route::Ingress(ingress)) => Ok(vec![apply(context, app, ingress.as_ref()).await?]),
        Some(Route::Gateway { route, certificate }) => {
            let mut applied = Vec::new();
            if let Some(certificate) = certificate {
                applied.push(
                    apply(context, app, certificate.as_ref())
                        .await
                        .map_err(|error| not_served(error, CERT_MANAGER))?,
                );
            }
            applied.push(
                apply(context, app, route.as_ref())
                    .await
                    .map_err(|error| not_served(error, GATEWAY_API))?,
            );
            Ok(applied)
        }
    }
}

/// What to do when the Gateway API is not served.
const GATEWAY_API: (&str, &str) = (
    "gateway.networking.k8s.io/v1 HTTPRoute",
    "install the Gateway API CRDs and a Gateway controller, or use spec.api.expose.ingress",
);
/// What to do when cert-manager is not served.
const CERT_MANAGER: (&str, &str) = (
    "cert-manager.io/v1 Certificate",
    "install cert-manager, or set spec.api.expose.tls.secretName without an issuer",
);

/// What to do when prometheus-operator is not served (the plan applies a PodMonitor only where
/// its watch listed; a 404 here means the CRD went away since).
const PROMETHEUS_OPERATOR: (&str, &str) = (
    "monitoring.coreos.com/v1 PodMonitor",
    "install the prometheus-operator CRDs, or remove spec.monitoring",
);

/// A 404 on applying a kind of an optional API: the API is not installed.
fn not_served(error: Error, (api, fix): (&'static str, &'static str)) -> Error {
    match error {
        Error::Kube {
            source: kube::Error::Api(status),
            ..
        } if status.code == 404 => Error::ApiNotServed {
            api,
            fix,
            source: kube::Error::Api(status),
        },
        other => other,
    }
}

impl Report {
    fn count(&mut self, outcomes: impl IntoIterator<Item = Applied>) {
        for outcome in outcomes {
            match outcome {
                Applied::Unchanged => self.unchanged += 1,
                Applied::Written | Applied::DriftCorrected { .. } => self.written += 1,
            }
        }
    }
}

/// Applies the objects of one process type, taken apart without `..` (see [`Children`]).
async fn apply_process(
    context: &Context,
    app: &KumikoApp,
    objects: Option<&ProcessObjects>,
    handovers: &[ReplicasHandover],
) -> Result<Vec<Applied>, Error> {
    let Some(ProcessObjects {
        deployment,
        service,
        pod_disruption_budget,
        horizontal_pod_autoscaler,
    }) = objects
    else {
        return Ok(Vec::new());
    };
    if let Some(handover) = handovers
        .iter()
        .find(|handover| Some(&handover.deployment) == deployment.metadata.name.as_ref())
    {
        hand_over_replicas(context, &app_namespace(app), handover).await?;
    }
    let (deployment, service, budget, autoscaler) = futures::try_join!(
        apply(context, app, deployment),
        async {
            match service {
                Some(service) => apply(context, app, service).await,
                None => Ok(Applied::Unchanged),
            }
        },
        apply(context, app, pod_disruption_budget),
        async {
            match horizontal_pod_autoscaler {
                Some(autoscaler) => apply(context, app, autoscaler).await,
                None => Ok(Applied::Unchanged),
            }
        },
    )?;
    Ok(vec![deployment, service, budget, autoscaler])
}

fn app_namespace(app: &KumikoApp) -> String {
    app.metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned())
}

/// Hands the `replicas` of a Deployment over to its HorizontalPodAutoscaler before the operator
/// stops applying the field: a server-side apply of `replicas` alone, at its live value, by the
/// [`REPLICAS_HANDOVER_MANAGER`]. The field then has an owner besides the operator, so the
/// operator's next apply, which leaves it out, does not remove it (and the Deployment does not
/// fall back to one pod); the autoscaler's first change takes it from that manager. This is the
/// procedure of the Kubernetes documentation ("Server-Side Apply", transferring ownership).
/// Not forced: a conflict means the autoscaler changed the field already, so it owns it.
async fn hand_over_replicas(
    context: &Context,
    namespace: &str,
    handover: &ReplicasHandover,
) -> Result<(), Error> {
    let body = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": handover.deployment, "namespace": namespace},
        "spec": {"replicas": handover.replicas},
    });
    let api: Api<Deployment> = Api::namespaced(context.client.clone(), namespace);
    match api
        .patch(
            &handover.deployment,
            &PatchParams::apply(REPLICAS_HANDOVER_MANAGER),
            &Patch::Apply(&body),
        )
        .await
    {
        Ok(_) => {
            context.metrics.wrote("Deployment");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => Err(Error::Kube {
            action: format!(
                "handing the replicas of Deployment {namespace}/{} over to its autoscaler",
                handover.deployment
            ),
            source,
        }),
    }
}

/// The roles step's inputs, from the validated app and what the observation holds.
pub fn roles_request(
    app: &ValidatedApp<'_>,
    world: &World,
    rotate_runtime: bool,
) -> Result<RolesRequest, Error> {
    let Some(database_service) = app.roles_cluster() else {
        return Err(Error::Stalled {
            reason: "InvalidSpec",
            message: "an external database has no Postgres roles for the operator to manage"
                .to_owned(),
        });
    };
    let password = |data: &Option<BTreeMap<String, String>>| {
        data.as_ref().and_then(|data| data.get("password").cloned())
    };
    Ok(RolesRequest {
        app: app.names.app.clone(),
        namespace: app.names.namespace.clone(),
        admin_secret: world.admin_secret.clone().unwrap_or_default(),
        database_service,
        connection_limit: app.spec.database.role.connection_limit,
        statement_timeout: app.statement_timeout,
        owner_password: password(&world.owner_secret),
        runtime_password: password(&world.runtime_secret),
        rotate_runtime,
        delete_on_reclaim: app.deletes_on_reclaim(),
    })
}

/// Sets the finalizers of KumikoApp `namespace/name` to `finalizers` (a merge patch).
pub async fn patch_app(
    context: &Context,
    (namespace, name): (&str, &str),
    finalizers: &[String],
    doing: &str,
) -> Result<(), Error> {
    Api::<KumikoApp>::namespaced(context.client.clone(), namespace)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(finalizer::patch(finalizers)),
        )
        .await
        .map_err(|source| Error::Kube {
            action: format!("{doing} KumikoApp {namespace}/{name}"),
            source,
        })?;
    context.metrics.wrote("KumikoApp");
    Ok(())
}

/// Deletes one child (in the background; already gone is fine).
async fn remove(context: &Context, namespace: &str, delete: &Delete) -> Result<(), Error> {
    match delete {
        Delete::Deployment(name) => delete_one::<Deployment>(context, namespace, name).await,
        Delete::PodDisruptionBudget(name) => {
            delete_one::<PodDisruptionBudget>(context, namespace, name).await
        }
        Delete::Job(name) => delete_one::<Job>(context, namespace, name).await,
        Delete::HorizontalPodAutoscaler(name) => {
            delete_one::<HorizontalPodAutoscaler>(context, namespace, name).await
        }
        Delete::Ingress(name) => delete_one::<Ingress>(context, namespace, name).await,
        Delete::HttpRoute(name) => delete_one::<HTTPRoute>(context, namespace, name).await,
        Delete::NetworkPolicy(name) => delete_one::<NetworkPolicy>(context, namespace, name).await,
        Delete::PodMonitor(name) => delete_one::<PodMonitor>(context, namespace, name).await,
    }
    .map_err(|source| Error::Kube {
        action: format!(
            "deleting {} {namespace}/{}",
            delete_kind(delete),
            delete.name()
        ),
        source,
    })
    .map(|deleted| {
        if deleted {
            context.metrics.wrote(delete_kind(delete));
        }
    })
}

/// Deletes `K` `namespace/name`; `false` when it was already gone.
async fn delete_one<K>(context: &Context, namespace: &str, name: &str) -> Result<bool, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(context.client.clone(), namespace);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(error) => Err(error),
    }
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

/// Records the planned Events of `step`.
async fn publish(
    context: &Context,
    app: &KumikoApp,
    events: &[PlannedEvent],
    step: Step,
    report: &mut Report,
) {
    for event in events.iter().filter(|event| event.step == step) {
        let PlannedEvent {
            step: _,
            type_,
            reason,
            action,
            note,
            related,
        } = event;
        context
            .publish_event(app, related.clone(), *type_, reason, action, note)
            .await;
        report.events += 1;
    }
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

    /// Publishes a Warning Event about a KumikoApp the operator cannot read (it does not match the
    /// API types: stored under a CRD without this schema); the operator leaves it alone.
    pub async fn publish_unreadable(&self, metadata: &ObjectMeta, error: &str) {
        let regarding = ObjectReference {
            api_version: Some(KumikoApp::api_version(&()).into_owned()),
            kind: Some(KumikoApp::kind(&()).into_owned()),
            name: metadata.name.clone(),
            namespace: metadata.namespace.clone(),
            uid: metadata.uid.clone(),
            resource_version: metadata.resource_version.clone(),
            ..ObjectReference::default()
        };
        let event = Event {
            type_: EventType::Warning,
            reason: UNREADABLE.to_owned(),
            note: Some(status::bounded(
                &format!(
                    "the operator cannot read this KumikoApp and leaves it alone: {error}; fix \
                     it to match the KumikoApp schema (kubectl explain kumikoapp.spec) or delete it"
                ),
                1000,
            )),
            action: "Read".to_owned(),
            secondary: None,
        };
        match self.recorder.publish(&event, &regarding).await {
            Ok(()) => self.metrics.wrote("Event"),
            Err(error) => tracing::warn!(%error, "publishing an Event failed"),
        }
    }

    /// Publishes an Event about `app` that concerns `related` as well (the migrate Job, a child
    /// put back). The recorder folds repeats of one reason about one object into a series that
    /// keeps the first note; the related object keeps the Events of different objects apart.
    pub async fn publish_event(
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
