//! Deployments, without ReplicaSets: the controller owns the pods directly.
//!
//! Rules followed (Kubernetes documentation, "Deployments", and the Deployment API reference):
//! - pods carry the template's labels plus `pod-template-hash`, and an owner reference to the
//!   Deployment with `controller: true`, so garbage collection removes them with it;
//! - `RollingUpdate`: the new pods never make the total exceed `replicas + maxSurge` (rounded
//!   up from a percentage), and old pods go only while at least `replicas - maxUnavailable`
//!   (rounded down) pods stay available; unavailable old pods go first; when both are 0,
//!   maxUnavailable is 1 (the API forbids both 0; kube-sim stays live);
//! - `Recreate`: every old pod goes, and new pods come once none of them is left;
//! - a pod is available once Ready for `minReadySeconds`; terminating pods are left out of
//!   every count; pods that ended (Succeeded or Failed) are removed and replaced;
//! - `paused`: nothing rolls out; while no old pods exist, scaling still applies;
//! - status: `replicas`, `updatedReplicas`, `readyReplicas`, `availableReplicas`,
//!   `unavailableReplicas`, `observedGeneration`, and the conditions `Available`
//!   (`MinimumReplicasAvailable`/`MinimumReplicasUnavailable`), `Progressing`
//!   (`NewReplicaSetCreated`, `ReplicaSetUpdated`, `NewReplicaSetAvailable`,
//!   `ProgressDeadlineExceeded`, `DeploymentPaused`) and `ReplicaFailure` (`FailedCreate`, when
//!   the API refuses a pod, e.g. over quota). Messages name the ReplicaSet that Kubernetes would
//!   have created: `DEPLOYMENT-HASH`.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::error::{Error, Result, kube_error};
use super::names::{generate_name, pod_template_hash};
use super::pods::{
    available_in, controller_reference, controller_uid, is_available, is_finished, is_ready,
    is_terminating, now, object_key, to_std,
};
use super::{ControllersConfig, FIELD_MANAGER, selector_string};

/// The label that tells a Deployment's pods of different templates apart.
pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// How far an int-or-percent value goes for `total` replicas.
pub fn resolve_int_or_percent(
    value: Option<&IntOrString>,
    default: &str,
    total: i32,
    round_up: bool,
) -> std::result::Result<i32, String> {
    let value = value
        .cloned()
        .unwrap_or_else(|| IntOrString::String(default.to_owned()));
    match value {
        IntOrString::Int(number) => Ok(number),
        IntOrString::String(text) => {
            let percent: i64 = text
                .strip_suffix('%')
                .and_then(|number| number.parse().ok())
                .ok_or_else(|| format!("{text:?} is neither an integer nor a percentage"))?;
            let scaled = percent * i64::from(total);
            let result = if round_up {
                (scaled + 99).div_euclid(100)
            } else {
                scaled.div_euclid(100)
            };
            i32::try_from(result).map_err(|_| format!("{text:?} is out of range"))
        }
    }
}

/// What to change this round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// How many new pods to create.
    pub create: i32,
    /// Pods to delete, by name.
    pub delete: Vec<String>,
}

/// The pods of a Deployment, sorted out.
#[derive(Debug, Default)]
pub struct PodSets<'a> {
    /// Live pods of the current template.
    pub new: Vec<&'a Pod>,
    /// Live pods of other templates.
    pub old: Vec<&'a Pod>,
    /// Pods that ended (to remove).
    pub finished: Vec<&'a Pod>,
    /// Terminating pods of other templates (Recreate waits for them).
    pub old_terminating: usize,
}

/// Sorts a Deployment's pods into new, old and finished ones.
pub fn pod_sets<'a>(pods: &'a [Pod], hash: &str) -> PodSets<'a> {
    let mut sets = PodSets::default();
    for pod in pods {
        let is_new = pod.labels().get(TEMPLATE_HASH_LABEL).map(String::as_str) == Some(hash);
        if is_terminating(&pod.metadata) {
            if !is_new {
                sets.old_terminating += 1;
            }
        } else if is_finished(pod) {
            sets.finished.push(pod);
        } else if is_new {
            sets.new.push(pod);
        } else {
            sets.old.push(pod);
        }
    }
    sets
}

/// Deletion order: not Ready first, then not available, then the newest.
fn deletion_order(pods: &mut [&Pod], min_ready: i32, now: Timestamp) {
    pods.sort_by_key(|pod| {
        (
            is_ready(pod),
            is_available(pod, min_ready, now),
            std::cmp::Reverse(
                pod.metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or(Timestamp::UNIX_EPOCH, |time| time.0),
            ),
        )
    });
}

fn names(pods: &[&Pod]) -> Vec<String> {
    pods.iter().map(|pod| pod.name_any()).collect()
}

/// The rollout parameters of a Deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollout {
    /// `spec.replicas`.
    pub desired: i32,
    /// Resolved maxSurge (0 for Recreate).
    pub max_surge: i32,
    /// Resolved maxUnavailable.
    pub max_unavailable: i32,
    /// Whether the strategy is Recreate.
    pub recreate: bool,
    /// `spec.minReadySeconds`.
    pub min_ready_seconds: i32,
    /// `spec.paused`.
    pub paused: bool,
}

/// The rollout parameters, or what is wrong with the spec.
pub fn rollout(deployment: &Deployment) -> std::result::Result<Rollout, Error> {
    let spec = deployment.spec.clone().unwrap_or_default();
    let desired = spec.replicas.unwrap_or(1).max(0);
    let strategy = spec.strategy.unwrap_or_default();
    let recreate = strategy.type_.as_deref() == Some("Recreate");
    let rolling = strategy.rolling_update.unwrap_or_default();
    let invalid = |field: &str, message: String| Error::InvalidObject {
        object: format!("Deployment {}", object_key(&deployment.metadata)),
        field: field.to_owned(),
        message,
    };
    let (max_surge, mut max_unavailable) = if recreate {
        (0, 0)
    } else {
        (
            resolve_int_or_percent(rolling.max_surge.as_ref(), "25%", desired, true)
                .map_err(|m| invalid("spec.strategy.rollingUpdate.maxSurge", m))?,
            resolve_int_or_percent(rolling.max_unavailable.as_ref(), "25%", desired, false)
                .map_err(|m| invalid("spec.strategy.rollingUpdate.maxUnavailable", m))?,
        )
    };
    if !recreate && max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    Ok(Rollout {
        desired,
        max_surge: max_surge.max(0),
        max_unavailable: max_unavailable.clamp(0, desired.max(0)),
        recreate,
        min_ready_seconds: spec.min_ready_seconds.unwrap_or(0),
        paused: spec.paused.unwrap_or(false),
    })
}

fn count(items: usize) -> i32 {
    i32::try_from(items).unwrap_or(i32::MAX)
}

/// Decides the next step of the rollout (the same arithmetic as the Deployment controller's
/// `reconcileNewReplicaSet` and `reconcileOldReplicaSets`, on pods instead of ReplicaSets).
pub fn plan(rollout: &Rollout, sets: &PodSets<'_>, now: Timestamp) -> Plan {
    let min_ready = rollout.min_ready_seconds;
    let mut plan = Plan {
        create: 0,
        delete: names(&sets.finished),
    };
    let desired = rollout.desired;
    let new_count = count(sets.new.len());
    let old_count = count(sets.old.len());

    let scale_new = |plan: &mut Plan, limit: i32| {
        if new_count > desired {
            let mut extra = sets.new.clone();
            deletion_order(&mut extra, min_ready, now);
            let surplus = usize::try_from(new_count - desired).unwrap_or(0);
            plan.delete.extend(names(&extra[..surplus]));
        } else {
            plan.create = (desired - new_count).min(limit).max(0);
        }
    };

    if rollout.paused {
        if sets.old.is_empty() {
            scale_new(&mut plan, i32::MAX);
        }
        return plan;
    }

    if rollout.recreate {
        if !sets.old.is_empty() {
            plan.delete.extend(names(&sets.old));
        } else if sets.old_terminating == 0 {
            scale_new(&mut plan, i32::MAX);
        }
        return plan;
    }

    // Scale up (or down) the new pods within the surge.
    let max_total = desired + rollout.max_surge;
    scale_new(&mut plan, max_total - (new_count + old_count));
    if sets.old.is_empty() {
        return plan;
    }

    // Scale down old pods while availability allows.
    let new_after = new_count + plan.create;
    let all_after = new_after + old_count;
    let new_available = count(
        sets.new
            .iter()
            .filter(|pod| is_available(pod, min_ready, now))
            .count(),
    );
    let new_unavailable = new_after - new_available;
    let min_available = desired - rollout.max_unavailable;
    let max_scaled_down = all_after - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return plan;
    }
    let (mut unhealthy, mut healthy): (Vec<&Pod>, Vec<&Pod>) = sets
        .old
        .iter()
        .partition(|pod| !is_available(pod, min_ready, now));
    deletion_order(&mut unhealthy, min_ready, now);
    let cleanup = usize::try_from(max_scaled_down)
        .unwrap_or(0)
        .min(unhealthy.len());
    plan.delete.extend(names(&unhealthy[..cleanup]));

    let old_available = count(healthy.len());
    let available = new_available + old_available;
    if available > min_available {
        let scale_down = usize::try_from(available - min_available)
            .unwrap_or(0)
            .min(healthy.len());
        deletion_order(&mut healthy, min_ready, now);
        plan.delete.extend(names(&healthy[..scale_down]));
    }
    plan
}

/// What the status counts come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Live pods.
    pub replicas: i32,
    /// Live pods of the current template.
    pub updated: i32,
    /// Ready live pods.
    pub ready: i32,
    /// Available live pods.
    pub available: i32,
}

/// Counts the live pods.
pub fn counts(sets: &PodSets<'_>, min_ready: i32, now: Timestamp) -> Counts {
    let live = || sets.new.iter().chain(sets.old.iter());
    Counts {
        replicas: count(sets.new.len() + sets.old.len()),
        updated: count(sets.new.len()),
        ready: count(live().filter(|pod| is_ready(pod)).count()),
        available: count(
            live()
                .filter(|pod| is_available(pod, min_ready, now))
                .count(),
        ),
    }
}

fn find_condition<'a>(
    status: Option<&'a DeploymentStatus>,
    type_: &str,
) -> Option<&'a DeploymentCondition> {
    status?
        .conditions
        .as_ref()?
        .iter()
        .find(|condition| condition.type_ == type_)
}

fn set_condition(
    previous: Option<&DeploymentCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    let same_status = previous.is_some_and(|p| p.status == status);
    let same_reason = previous.is_some_and(|p| {
        p.status == status
            && p.reason.as_deref() == Some(reason)
            && p.message.as_deref() == Some(&message)
    });
    DeploymentCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message),
        last_transition_time: if same_status {
            previous.and_then(|p| p.last_transition_time.clone())
        } else {
            Some(Time(now))
        },
        last_update_time: if same_reason {
            previous.and_then(|p| p.last_update_time.clone())
        } else {
            Some(Time(now))
        },
    }
}

/// The inputs of the status besides the pods.
#[derive(Debug, Clone)]
pub struct StatusInput<'a> {
    /// The Deployment's name.
    pub name: &'a str,
    /// The current template hash.
    pub hash: &'a str,
    /// Whether this round changes pods.
    pub progressed: bool,
    /// Whether this round creates the first pods of a new template.
    pub created_new_set: bool,
    /// A pod creation the API refused, with its message.
    pub create_failure: Option<String>,
    /// `spec.progressDeadlineSeconds` (600 by default).
    pub progress_deadline_seconds: i32,
}

/// The Deployment's status.
pub fn deployment_status(
    deployment: &Deployment,
    rollout: &Rollout,
    counts: Counts,
    input: &StatusInput<'_>,
    now: Timestamp,
) -> DeploymentStatus {
    let previous = deployment.status.as_ref();
    let replica_set = format!("{}-{}", input.name, input.hash);
    let min_available = rollout.desired - rollout.max_unavailable;
    let available_condition = if counts.available >= min_available {
        set_condition(
            find_condition(previous, "Available"),
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".to_owned(),
            now,
        )
    } else {
        set_condition(
            find_condition(previous, "Available"),
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".to_owned(),
            now,
        )
    };
    let complete = counts.updated == rollout.desired
        && counts.replicas == rollout.desired
        && counts.available == rollout.desired;
    let previous_progressing = find_condition(previous, "Progressing");
    let progressing = if rollout.paused {
        set_condition(
            previous_progressing,
            "Progressing",
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".to_owned(),
            now,
        )
    } else if complete {
        set_condition(
            previous_progressing,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{replica_set}\" has successfully progressed."),
            now,
        )
    } else if input.created_new_set {
        set_condition(
            previous_progressing,
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            format!("Created new replica set \"{replica_set}\""),
            now,
        )
    } else if input.progressed
        || previous_progressing
            .is_none_or(|p| p.reason.as_deref() == Some("NewReplicaSetAvailable"))
    {
        // Touch lastUpdateTime on progress, as the controller does.
        let mut condition = set_condition(
            previous_progressing,
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{replica_set}\" is progressing."),
            now,
        );
        condition.last_update_time = Some(Time(now));
        condition
    } else {
        let previous = previous_progressing.cloned();
        let last_update = previous
            .as_ref()
            .and_then(|p| p.last_update_time.as_ref())
            .map_or(now, |time| time.0);
        let deadline = last_update
            .saturating_add(SignedDuration::from_secs(i64::from(
                input.progress_deadline_seconds,
            )))
            .unwrap_or(Timestamp::MAX);
        if now >= deadline {
            set_condition(
                previous_progressing,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{replica_set}\" has timed out progressing."),
                now,
            )
        } else {
            previous.unwrap_or_else(|| {
                set_condition(
                    None,
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{replica_set}\" is progressing."),
                    now,
                )
            })
        }
    };
    let mut conditions = vec![available_condition, progressing];
    if let Some(message) = &input.create_failure {
        conditions.push(set_condition(
            find_condition(previous, "ReplicaFailure"),
            "ReplicaFailure",
            "True",
            "FailedCreate",
            message.clone(),
            now,
        ));
    }
    DeploymentStatus {
        observed_generation: deployment.metadata.generation,
        replicas: Some(counts.replicas),
        updated_replicas: Some(counts.updated),
        ready_replicas: Some(counts.ready),
        available_replicas: Some(counts.available),
        unavailable_replicas: Some((counts.replicas - counts.available).max(0)),
        conditions: Some(conditions),
        collision_count: previous.and_then(|p| p.collision_count),
        terminating_replicas: None,
    }
}

/// A new pod of the Deployment's current template.
fn new_pod(deployment: &Deployment, hash: &str) -> Result<Pod> {
    let template = deployment
        .spec
        .as_ref()
        .map(|spec| spec.template.clone())
        .unwrap_or_default();
    let template_meta = template.metadata.unwrap_or_default();
    let name = deployment.name_any();
    let mut labels = template_meta.labels.unwrap_or_default();
    labels.insert(TEMPLATE_HASH_LABEL.to_owned(), hash.to_owned());
    let owner =
        controller_reference("apps/v1", "Deployment", &deployment.metadata).ok_or_else(|| {
            Error::InvalidObject {
                object: format!("Deployment {}", object_key(&deployment.metadata)),
                field: "metadata.uid".to_owned(),
                message: "the Deployment has no name or uid yet".to_owned(),
            }
        })?;
    let prefix = format!("{name}-{hash}-");
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(generate_name(&prefix)),
            generate_name: Some(prefix),
            namespace: deployment.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: template_meta.annotations,
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    })
}

struct Context {
    client: kube::Client,
    config: Arc<ControllersConfig>,
}

async fn reconcile(deployment: Arc<Deployment>, context: Arc<Context>) -> Result<Action> {
    if is_terminating(&deployment.metadata) {
        return Ok(Action::await_change());
    }
    let namespace = deployment
        .namespace()
        .unwrap_or_else(|| "default".to_owned());
    let uid = deployment.uid().unwrap_or_default();
    let mut rollout = rollout(&deployment)?;
    if context.config.instant {
        rollout.min_ready_seconds = 0;
    }
    let template = deployment
        .spec
        .as_ref()
        .map(|spec| serde_json::to_value(&spec.template))
        .transpose()
        .map_err(|source| Error::Json {
            action: "serialising a pod template".to_owned(),
            source,
        })?
        .unwrap_or_default();
    let hash = pod_template_hash(&template);

    let pods_api: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let match_labels = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.selector.match_labels.clone())
        .unwrap_or_default();
    let pods: Vec<Pod> = pods_api
        .list(&ListParams::default().labels(&selector_string(&match_labels)))
        .await
        .map_err(kube_error(format!(
            "listing the pods of Deployment {namespace}/{}",
            deployment.name_any()
        )))?
        .items
        .into_iter()
        .filter(|pod| controller_uid(&pod.metadata) == Some(uid.as_str()))
        .collect();
    let now = now();
    let sets = pod_sets(&pods, &hash);
    let plan = plan(&rollout, &sets, now);

    let mut create_failure = None;
    for _ in 0..plan.create {
        let pod = new_pod(&deployment, &hash)?;
        if let Err(error) = pods_api.create(&PostParams::default(), &pod).await {
            create_failure = Some(match &error {
                kube::Error::Api(status) => status.message.clone(),
                other => other.to_string(),
            });
            break;
        }
    }
    for name in &plan.delete {
        let uid = pods
            .iter()
            .find(|pod| &pod.name_any() == name)
            .and_then(|pod| pod.uid());
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid,
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        if let Err(error) = pods_api.delete(name, &params).await {
            tracing::debug!(%error, pod = %name, "deployment: deleting a pod failed");
        }
    }

    let counts = counts(&sets, rollout.min_ready_seconds, now);
    let previous = deployment.status.clone().unwrap_or_default();
    // Progress as the controller sees it: pods changed, or more pods updated, ready or available.
    let progressed = plan.create > 0
        || !plan.delete.is_empty()
        || counts.updated > previous.updated_replicas.unwrap_or(0)
        || counts.ready > previous.ready_replicas.unwrap_or(0)
        || counts.available > previous.available_replicas.unwrap_or(0);
    let input = StatusInput {
        name: &deployment.name_any(),
        hash: &hash,
        progressed,
        created_new_set: sets.new.is_empty() && plan.create > 0,
        create_failure,
        progress_deadline_seconds: deployment
            .spec
            .as_ref()
            .and_then(|spec| spec.progress_deadline_seconds)
            .unwrap_or(600),
    };
    let status = deployment_status(&deployment, &rollout, counts, &input, now);
    if deployment.status.as_ref() != Some(&status) {
        let api: Api<Deployment> = Api::namespaced(context.client.clone(), &namespace);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        api.patch_status(
            &deployment.name_any(),
            &params,
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .map_err(kube_error(format!(
            "updating the status of Deployment {namespace}/{}",
            deployment.name_any()
        )))?;
    }

    // Come back when a Ready pod becomes available, or when the progress deadline passes.
    let next_available = sets
        .new
        .iter()
        .chain(sets.old.iter())
        .filter_map(|pod| available_in(pod, rollout.min_ready_seconds, now))
        .filter(|wait| !wait.is_zero())
        .min();
    let requeue = next_available.map_or(Duration::from_secs(30), |wait| {
        to_std(wait) + Duration::from_millis(50)
    });
    Ok(Action::requeue(requeue))
}

fn error_policy(_deployment: Arc<Deployment>, error: &Error, _context: Arc<Context>) -> Action {
    tracing::debug!(%error, "deployment controller");
    Action::requeue(Duration::from_millis(500))
}

/// Runs the Deployment controller until `shutdown`.
pub async fn run(
    client: kube::Client,
    config: Arc<ControllersConfig>,
    shutdown: CancellationToken,
) {
    let deployments: Api<Deployment> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let stream = Controller::new(deployments, watcher::Config::default())
        .owns(pods, watcher::Config::default())
        .run(
            reconcile,
            error_policy,
            Arc::new(Context { client, config }),
        )
        .for_each(|_| async {});
    tokio::select! {
        () = stream => {}
        () = shutdown.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(
        replicas: i32,
        surge: serde_json::Value,
        unavailable: serde_json::Value,
    ) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "d-1", "generation": 2},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "app", "image": "a:2"}]}}}
        }))
        .expect("deployment")
    }

    fn pod(name: &str, hash: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": "web", "pod-template-hash": hash},
                "creationTimestamp": "2025-01-01T00:00:00Z"},
            "status": {"phase": "Running", "conditions": [{"type": "Ready",
                "status": if ready { "True" } else { "False" },
                "lastTransitionTime": "2025-01-01T00:00:00Z"}]}
        }))
        .expect("pod")
    }

    fn at() -> Timestamp {
        "2025-01-01T01:00:00Z".parse().expect("time")
    }

    #[test]
    fn percentages_round_surge_up_and_unavailable_down() {
        let quarter = IntOrString::String("25%".to_owned());
        assert_eq!(resolve_int_or_percent(Some(&quarter), "", 3, true), Ok(1));
        assert_eq!(resolve_int_or_percent(Some(&quarter), "", 3, false), Ok(0));
        assert_eq!(resolve_int_or_percent(None, "25%", 4, false), Ok(1));
        assert!(
            resolve_int_or_percent(Some(&IntOrString::String("x".into())), "", 3, true).is_err()
        );
    }

    #[test]
    fn rolling_update_with_max_unavailable_zero_surges_before_removing_old_pods() {
        let deployment = deployment(3, json!(1), json!(0));
        let rollout = rollout(&deployment).expect("rollout");
        let old = [
            pod("o1", "old", true),
            pod("o2", "old", true),
            pod("o3", "old", true),
        ];
        let sets = pod_sets(&old, "new");
        // First step: one surge pod, no old pod goes (availability would drop below 3).
        assert_eq!(
            plan(&rollout, &sets, at()),
            Plan {
                create: 1,
                delete: vec![]
            }
        );

        // The surge pod is not Ready yet: nothing more happens.
        let mut pods = old.to_vec();
        pods.push(pod("n1", "new", false));
        let sets = pod_sets(&pods, "new");
        assert_eq!(plan(&rollout, &sets, at()), Plan::default());

        // Once it is available, one old pod goes; no new pod beyond the surge.
        let mut pods = old.to_vec();
        pods.push(pod("n1", "new", true));
        let sets = pod_sets(&pods, "new");
        let step = plan(&rollout, &sets, at());
        assert_eq!(step.create, 0);
        assert_eq!(step.delete.len(), 1);
    }

    #[test]
    fn rolling_update_with_max_surge_zero_removes_before_creating() {
        let deployment = deployment(2, json!(0), json!(1));
        let rollout = rollout(&deployment).expect("rollout");
        let old = [pod("o1", "old", true), pod("o2", "old", true)];
        let sets = pod_sets(&old, "new");
        let step = plan(&rollout, &sets, at());
        assert_eq!(step.create, 0, "no room above 2 pods");
        assert_eq!(step.delete.len(), 1, "one pod may be unavailable");
    }

    #[test]
    fn unready_old_pods_go_first() {
        let deployment = deployment(2, json!(0), json!(1));
        let rollout = rollout(&deployment).expect("rollout");
        let old = [pod("ready", "old", true), pod("unready", "old", false)];
        let sets = pod_sets(&old, "new");
        let step = plan(&rollout, &sets, at());
        assert_eq!(step.delete, vec!["unready".to_owned()]);
    }

    #[test]
    fn scaling_down_removes_unready_pods_first() {
        let deployment = deployment(1, json!(1), json!(0));
        let rollout = rollout(&deployment).expect("rollout");
        let pods = [pod("a", "new", true), pod("b", "new", false)];
        let sets = pod_sets(&pods, "new");
        assert_eq!(plan(&rollout, &sets, at()).delete, vec!["b".to_owned()]);
    }

    #[test]
    fn recreate_waits_for_old_pods_to_be_gone() {
        let mut deployment = deployment(2, json!(1), json!(0));
        deployment.spec.as_mut().expect("spec").strategy =
            Some(serde_json::from_value(json!({"type": "Recreate"})).expect("strategy"));
        let rollout = rollout(&deployment).expect("rollout");
        let old = [pod("o1", "old", true)];
        let step = plan(&rollout, &pod_sets(&old, "new"), at());
        assert_eq!(
            step,
            Plan {
                create: 0,
                delete: vec!["o1".to_owned()]
            }
        );
        let mut terminating = pod("o1", "old", true);
        terminating.metadata.deletion_timestamp = Some(Time(at()));
        let step = plan(
            &rollout,
            &pod_sets(std::slice::from_ref(&terminating), "new"),
            at(),
        );
        assert_eq!(step, Plan::default());
        assert_eq!(plan(&rollout, &pod_sets(&[], "new"), at()).create, 2);
    }

    #[test]
    fn paused_deployment_does_not_roll_out() {
        let mut deployment = deployment(2, json!(1), json!(0));
        deployment.spec.as_mut().expect("spec").paused = Some(true);
        let rollout = rollout(&deployment).expect("rollout");
        let old = [pod("o1", "old", true)];
        assert_eq!(
            plan(&rollout, &pod_sets(&old, "new"), at()),
            Plan::default()
        );
    }

    #[test]
    fn complete_rollout_reports_new_replica_set_available() {
        let deployment = deployment(2, json!(1), json!(0));
        let rollout = rollout(&deployment).expect("rollout");
        let pods = [pod("a", "h", true), pod("b", "h", true)];
        let sets = pod_sets(&pods, "h");
        let counts = counts(&sets, 0, at());
        let input = StatusInput {
            name: "web",
            hash: "h",
            progressed: false,
            created_new_set: false,
            create_failure: None,
            progress_deadline_seconds: 600,
        };
        let status = deployment_status(&deployment, &rollout, counts, &input, at());
        assert_eq!(status.observed_generation, Some(2));
        assert_eq!(
            (
                status.replicas,
                status.updated_replicas,
                status.ready_replicas,
                status.available_replicas,
                status.unavailable_replicas
            ),
            (Some(2), Some(2), Some(2), Some(2), Some(0))
        );
        let conditions = status.conditions.expect("conditions");
        let reasons: Vec<(&str, &str, Option<&str>)> = conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_deref()))
            .collect();
        assert_eq!(
            reasons,
            vec![
                ("Available", "True", Some("MinimumReplicasAvailable")),
                ("Progressing", "True", Some("NewReplicaSetAvailable")),
            ]
        );
        assert_eq!(
            conditions[1].message.as_deref(),
            Some("ReplicaSet \"web-h\" has successfully progressed.")
        );
    }

    #[test]
    fn stalled_rollout_exceeds_its_progress_deadline() {
        let mut deployment = deployment(1, json!(1), json!(0));
        deployment.status = Some(
            serde_json::from_value(json!({"conditions": [{"type": "Progressing", "status": "True",
                "reason": "ReplicaSetUpdated", "message": "ReplicaSet \"web-h\" is progressing.",
                "lastUpdateTime": "2025-01-01T00:00:00Z", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}))
            .expect("status"),
        );
        let rollout = rollout(&deployment).expect("rollout");
        let pods = [pod("a", "h", false)];
        let sets = pod_sets(&pods, "h");
        let input = StatusInput {
            name: "web",
            hash: "h",
            progressed: false,
            created_new_set: false,
            create_failure: None,
            progress_deadline_seconds: 600,
        };
        let status = deployment_status(&deployment, &rollout, counts(&sets, 0, at()), &input, at());
        let progressing = status.conditions.expect("conditions")[1].clone();
        assert_eq!(progressing.status, "False");
        assert_eq!(
            progressing.reason.as_deref(),
            Some("ProgressDeadlineExceeded")
        );
    }
}
