//! Reconcile: one pass of the pipeline for one KumikoApp, and the error policy.
//!
//! `validate -> observe -> plan -> execute -> status`: [`validate`] (pure) turns the app into a
//! [`ValidatedApp`], [`observe`] reads the cluster, [`plan()`] (pure) decides every write, Event and
//! condition, [`execute`] carries the plan out, and the status is patched only when it changed in
//! something other than time. A plan that asks for the roles ends there; the observation then
//! records the credentials and the rest is planned and carried out (see [`super::plan`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kumiko_crds::{KumikoApp, KumikoAppStatus, condition};

use super::Context;
use super::execute::{Failure, Report, execute, patch_app, roles_request};
use super::observe::observe;
use super::plan::{self, Reclaim, find_condition, plan};
use super::status::{Progress, compute_status, needs_write};
use crate::Error;
use crate::desired::{FINALIZER, finalizer};
use crate::validate::{Invalid, ValidatedApp, validate};

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
            context
                .publish_unreadable(&invalid.metadata, &invalid.error.to_string())
                .await;
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

async fn reconcile_app(app: &KumikoApp, context: &Context) -> Result<Action, Error> {
    if app.metadata.deletion_timestamp.is_some() {
        context.metrics.app_readiness(&key(app), None);
        return finalize(app, context).await;
    }
    let previous = app.status.as_ref();
    let neighbours = context.apps.state();
    let neighbour_apps: Vec<&KumikoApp> = neighbours
        .iter()
        .filter_map(|guard| guard.0.as_ref().ok())
        .collect();
    let validated = match validate(app, &neighbour_apps) {
        Ok(validated) => validated,
        Err(invalid) => return stall_invalid(app, context, invalid).await,
    };
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let (mut progress, outcome) = converge(&validated, context, &now).await;
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
            let reason = error.stall_reason();
            progress.stalled = Some((reason, error.chain()));
            tracing::warn!(
                app = %validated.names.key(),
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
    context.metrics.app_readiness(&key(app), Some(readiness));
    write_status(app, context, &compute_status(previous, &progress, &now)).await?;
    result
}

/// Observe, plan and execute (twice when the first plan ends at the roles); the progress to
/// report and whether it all succeeded.
async fn converge(
    app: &ValidatedApp<'_>,
    context: &Context,
    now: &Time,
) -> (Progress, Result<(), Error>) {
    let previous = app.app.status.as_ref();
    let baseline = plan::baseline(app.app, previous);
    let mut world = match observe(context, app, previous).await {
        Ok(world) => world,
        Err(error) => return (baseline, Err(error)),
    };
    let mut planned = plan(app, &world, previous, now);
    let mut executed = execute(context, app, &world, &planned).await;
    log_report(app, &executed);
    if let Ok(report) = &mut executed
        && let Some(credentials) = report.credentials.take()
    {
        world.owner_secret = Some(credentials.owner);
        world.runtime_secret = Some(credentials.runtime);
        world.roles_ensured = true;
        planned = plan(app, &world, previous, now).after(&planned);
        executed = execute(context, app, &world, &planned).await;
        log_report(app, &executed);
    }
    match executed {
        Ok(_) => (planned.progress, Ok(())),
        Err(Failure { step, error }) => (planned.progress_until(step, &baseline), Err(error)),
    }
}

fn log_report(app: &ValidatedApp<'_>, executed: &Result<Report, Failure>) {
    if let Ok(report) = executed {
        tracing::debug!(
            app = %app.names.key(),
            written = report.written,
            unchanged = report.unchanged,
            deleted = report.deleted,
            events = report.events,
            roles = report.credentials.is_some(),
            "carried out the plan"
        );
    }
}

/// The app breaks a rule the schema cannot express: `Stalled=True` (and a Warning Event when the
/// reason is new) until its spec or its namespace changes.
async fn stall_invalid(
    app: &KumikoApp,
    context: &Context,
    invalid: Invalid,
) -> Result<Action, Error> {
    let previous = app.status.as_ref();
    let mut progress = plan::baseline(app, previous);
    progress.stalled = Some((invalid.reason, invalid.message.clone()));
    if previous
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
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    write_status(app, context, &compute_status(previous, &progress, &now)).await?;
    Ok(Action::await_change())
}

fn key(app: &KumikoApp) -> String {
    format!(
        "{}/{}",
        app.metadata.namespace.as_deref().unwrap_or("default"),
        app.metadata.name.as_deref().unwrap_or("")
    )
}

/// Writes `computed` unless the stored status already says it.
async fn write_status(
    app: &KumikoApp,
    context: &Context,
    computed: &KumikoAppStatus,
) -> Result<(), Error> {
    if !needs_write(app.status.as_ref(), computed) {
        return Ok(());
    }
    let name = app.metadata.name.as_deref().unwrap_or("");
    let namespace = app.metadata.namespace.as_deref().unwrap_or("");
    Api::<KumikoApp>::namespaced(context.client.clone(), namespace)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status_patch(computed)? })),
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

/// The app is being deleted: apply the reclaim policy, then release the finalizer.
///
/// An app whose spec no longer validates (stored under an older CRD) is not reclaimed: its
/// finalizer is released with a Warning Event saying what was left, rather than blocking the
/// deletion until someone edits an object that is going away.
async fn finalize(app: &KumikoApp, context: &Context) -> Result<Action, Error> {
    let finalizers = app.metadata.finalizers.as_deref().unwrap_or_default();
    if !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let namespace = app.metadata.namespace.as_deref().unwrap_or("default");
    let name = app.metadata.name.as_deref().unwrap_or("");
    match ValidatedApp::new(app) {
        Ok(validated) => reclaim(app, &validated, context).await?,
        Err(invalid) => {
            tracing::warn!(app = %key(app), reason = invalid.reason, error = %invalid.message, "not reclaiming an invalid app");
            context
                .publish(
                    app,
                    EventType::Warning,
                    "ReclaimSkipped",
                    "Reclaim",
                    &format!(
                        "the app's roles and database are left as they are: its spec is invalid \
                         ({})",
                        invalid.message
                    ),
                )
                .await;
        }
    }
    patch_app(
        context,
        (namespace, name),
        &finalizer::without_finalizer(finalizers),
        "removing the finalizer of",
    )
    .await?;
    Ok(Action::await_change())
}

/// Applies the reclaim policy of a valid app being deleted.
async fn reclaim(
    app: &KumikoApp,
    validated: &ValidatedApp<'_>,
    context: &Context,
) -> Result<(), Error> {
    let world = if plan::needs_database(validated) {
        Some(observe(context, validated, app.status.as_ref()).await?)
    } else {
        None
    };
    let admin_secret = world
        .as_ref()
        .is_some_and(|world| world.admin_secret.is_some());
    match (plan::reclaim(validated, admin_secret), &world) {
        (Reclaim::Drop, Some(world)) => {
            context
                .roles
                .reclaim(&roles_request(validated, world, false)?)
                .await?;
            context
                .publish(
                    app,
                    EventType::Normal,
                    "Reclaimed",
                    "Reclaim",
                    "dropped the app's roles and database (reclaimPolicy: Delete)",
                )
                .await;
        }
        (Reclaim::DatabaseGone, _) | (Reclaim::Drop, None) => {
            tracing::warn!(app = %validated.names.key(), "the database is gone: nothing to reclaim");
        }
        (Reclaim::Retain | Reclaim::External, _) => {}
    }
    Ok(())
}
