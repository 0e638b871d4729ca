//! ReplicaSets: keep `spec.replicas` pods of the template running.
//!
//! Rules followed (Kubernetes documentation, "ReplicaSet"; kube-controller-manager's
//! `pkg/controller/replicaset/replica_set.go` and `replica_set_utils.go`, and
//! `pkg/controller/controller_utils.go` for the deletion ranking):
//! - a ReplicaSet's pods are the pods of its namespace that match its selector and name it as
//!   their controller (`ownerReferences[].controller: true`, `blockOwnerDeletion: true`);
//!   pods are created with the template's labels and annotations, named
//!   `<replicaset>-<5 random characters>`, so garbage collection removes them with it;
//! - active pods are those neither terminating nor ended (Succeeded or Failed); the controller
//!   creates pods while fewer than `spec.replicas` are active and deletes the surplus;
//! - surplus pods go in the order of `getPodsToDelete`: unscheduled before scheduled, Pending
//!   before Unknown before Running, not Ready before Ready, Ready for less time before more,
//!   more restarts before fewer, newer before older;
//! - pods that ended are deleted and replaced (kube-sim's stand-in for the pod garbage collector,
//!   which on a real cluster removes them only past its threshold);
//! - status: `replicas` (active pods), `fullyLabeledReplicas` (active pods carrying every
//!   template label), `readyReplicas`, `availableReplicas` (Ready for `minReadySeconds`),
//!   `observedGeneration`, and the condition `ReplicaFailure` (`FailedCreate`, with the API's
//!   message, e.g. over quota), removed once creating pods works again.
//!
//! Not simulated: adopting orphan pods that match the selector, releasing pods that stop
//! matching it, and the slow-start batches of pod creation (every missing pod is created in one
//! round).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::error::{Error, Result, kube_error};
use super::names::generate_name;
use super::pods::{
    available_in, controller_reference, controller_uid, is_available, is_finished, is_ready,
    is_terminating, now, object_key, phase, ready_since, to_std,
};
use super::{ControllersConfig, FIELD_MANAGER, selector_string};

/// What to change this round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// How many pods to create.
    pub create: i32,
    /// Pods to delete, by name: the ended ones, then the surplus in deletion order.
    pub delete: Vec<String>,
}

/// The pods of a ReplicaSet, sorted out.
#[derive(Debug, Default)]
pub struct PodSets<'a> {
    /// Active pods: neither terminating nor ended.
    pub active: Vec<&'a Pod>,
    /// Pods that ended (to remove and replace).
    pub finished: Vec<&'a Pod>,
}

/// Sorts a ReplicaSet's pods into active and ended ones (terminating pods are in neither).
pub fn pod_sets(pods: &[Pod]) -> PodSets<'_> {
    let mut sets = PodSets::default();
    for pod in pods {
        if is_terminating(&pod.metadata) {
            continue;
        }
        if is_finished(pod) {
            sets.finished.push(pod);
        } else {
            sets.active.push(pod);
        }
    }
    sets
}

fn phase_rank(pod: &Pod) -> u8 {
    match phase(pod) {
        "Pending" => 0,
        "Running" => 2,
        // Unknown, and anything else a kubelet might report.
        _ => 1,
    }
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|status| status.container_statuses.as_ref())
        .map_or(0, |statuses| {
            statuses.iter().map(|status| status.restart_count).sum()
        })
}

/// Sorts pods so that the first ones are deleted first (the ranking of `getPodsToDelete`).
pub fn deletion_order(pods: &mut [&Pod]) {
    pods.sort_by_key(|pod| {
        let scheduled = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.node_name.as_ref())
            .is_some_and(|node| !node.is_empty());
        (
            scheduled,
            phase_rank(pod),
            is_ready(pod),
            std::cmp::Reverse(ready_since(pod).unwrap_or(Timestamp::UNIX_EPOCH)),
            std::cmp::Reverse(restarts(pod)),
            std::cmp::Reverse(
                pod.metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or(Timestamp::UNIX_EPOCH, |time| time.0),
            ),
        )
    });
}

fn count(items: usize) -> i32 {
    i32::try_from(items).unwrap_or(i32::MAX)
}

/// Decides how to bring the active pods to `replicas`.
pub fn plan(replicas: i32, sets: &PodSets<'_>) -> Plan {
    let mut plan = Plan {
        create: 0,
        delete: sets.finished.iter().map(|pod| pod.name_any()).collect(),
    };
    let active = count(sets.active.len());
    let replicas = replicas.max(0);
    if active < replicas {
        plan.create = replicas - active;
    } else if active > replicas {
        let mut surplus = sets.active.clone();
        deletion_order(&mut surplus);
        let extra = usize::try_from(active - replicas).unwrap_or(0);
        plan.delete
            .extend(surplus[..extra].iter().map(|pod| pod.name_any()));
    }
    plan
}

/// The ReplicaSet's status from its active pods.
pub fn replica_set_status(
    replica_set: &ReplicaSet,
    sets: &PodSets<'_>,
    create_failure: Option<String>,
    now: Timestamp,
) -> ReplicaSetStatus {
    let spec = replica_set.spec.clone().unwrap_or_default();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let template_labels = spec
        .template
        .and_then(|template| template.metadata)
        .and_then(|meta| meta.labels)
        .unwrap_or_default();
    let fully_labeled = sets
        .active
        .iter()
        .filter(|pod| {
            let labels = pod.labels();
            template_labels
                .iter()
                .all(|(key, value)| labels.get(key) == Some(value))
        })
        .count();
    let previous = replica_set.status.as_ref();
    let previous_failure = previous
        .and_then(|status| status.conditions.as_ref())
        .and_then(|conditions| {
            conditions
                .iter()
                .find(|condition| condition.type_ == "ReplicaFailure")
        });
    let conditions: Vec<ReplicaSetCondition> = create_failure
        .map(|message| {
            let unchanged = previous_failure
                .is_some_and(|p| p.status == "True" && p.message.as_deref() == Some(&message));
            if unchanged {
                previous_failure.cloned().unwrap_or_default()
            } else {
                ReplicaSetCondition {
                    type_: "ReplicaFailure".to_owned(),
                    status: "True".to_owned(),
                    reason: Some("FailedCreate".to_owned()),
                    message: Some(message),
                    last_transition_time: Some(Time(now)),
                }
            }
        })
        .into_iter()
        .collect();
    ReplicaSetStatus {
        replicas: count(sets.active.len()),
        fully_labeled_replicas: Some(count(fully_labeled)),
        ready_replicas: Some(count(sets.active.iter().filter(|p| is_ready(p)).count())),
        available_replicas: Some(count(
            sets.active
                .iter()
                .filter(|pod| is_available(pod, min_ready, now))
                .count(),
        )),
        observed_generation: replica_set.metadata.generation,
        conditions: (!conditions.is_empty()).then_some(conditions),
        terminating_replicas: None,
    }
}

/// A new pod of the ReplicaSet's template.
fn new_pod(replica_set: &ReplicaSet) -> Result<Pod> {
    let template = replica_set
        .spec
        .as_ref()
        .and_then(|spec| spec.template.clone())
        .unwrap_or_default();
    let template_meta = template.metadata.unwrap_or_default();
    let owner =
        controller_reference("apps/v1", "ReplicaSet", &replica_set.metadata).ok_or_else(|| {
            Error::InvalidObject {
                object: format!("ReplicaSet {}", object_key(&replica_set.metadata)),
                field: "metadata.uid".to_owned(),
                message: "the ReplicaSet has no name or uid yet".to_owned(),
            }
        })?;
    let prefix = format!("{}-", replica_set.name_any());
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(generate_name(&prefix)),
            generate_name: Some(prefix),
            namespace: replica_set.metadata.namespace.clone(),
            labels: template_meta.labels,
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

async fn reconcile(replica_set: Arc<ReplicaSet>, context: Arc<Context>) -> Result<Action> {
    if is_terminating(&replica_set.metadata) {
        return Ok(Action::await_change());
    }
    let namespace = replica_set
        .namespace()
        .unwrap_or_else(|| "default".to_owned());
    let uid = replica_set.uid().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let match_labels = replica_set
        .spec
        .as_ref()
        .and_then(|spec| spec.selector.match_labels.clone())
        .unwrap_or_default();
    let pods: Vec<Pod> = pods_api
        .list(&ListParams::default().labels(&selector_string(&match_labels)))
        .await
        .map_err(kube_error(format!(
            "listing the pods of ReplicaSet {namespace}/{}",
            replica_set.name_any()
        )))?
        .items
        .into_iter()
        .filter(|pod| controller_uid(&pod.metadata) == Some(uid.as_str()))
        .collect();
    let mut min_ready = replica_set
        .spec
        .as_ref()
        .and_then(|spec| spec.min_ready_seconds)
        .unwrap_or(0);
    if context.config.instant {
        min_ready = 0;
    }
    let mut effective = (*replica_set).clone();
    if let Some(spec) = effective.spec.as_mut() {
        spec.min_ready_seconds = Some(min_ready);
    }
    let now = now();
    let sets = pod_sets(&pods);
    let replicas = replica_set
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1);
    let plan = plan(replicas, &sets);

    let mut create_failure = None;
    for _ in 0..plan.create {
        let pod = new_pod(&replica_set)?;
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
            tracing::debug!(%error, pod = %name, "replicaset: deleting a pod failed");
        }
    }

    let status = replica_set_status(&effective, &sets, create_failure, now);
    if replica_set.status.as_ref() != Some(&status) {
        let api: Api<ReplicaSet> = Api::namespaced(context.client.clone(), &namespace);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        let mut body = serde_json::to_value(&status).map_err(|source| Error::Json {
            action: "serialising a ReplicaSet status".to_owned(),
            source,
        })?;
        // A merge patch removes the conditions only when told to with null.
        if status.conditions.is_none()
            && let Some(object) = body.as_object_mut()
        {
            object.insert("conditions".to_owned(), serde_json::Value::Null);
        }
        api.patch_status(
            &replica_set.name_any(),
            &params,
            &Patch::Merge(json!({ "status": body })),
        )
        .await
        .map_err(kube_error(format!(
            "updating the status of ReplicaSet {namespace}/{}",
            replica_set.name_any()
        )))?;
    }

    // A refused pod is tried again soon (kube-controller-manager requeues the ReplicaSet with
    // back-off); otherwise come back when a Ready pod becomes available.
    if status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "ReplicaFailure")
    {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let next_available = sets
        .active
        .iter()
        .filter_map(|pod| available_in(pod, min_ready, now))
        .filter(|wait| !wait.is_zero())
        .min();
    let requeue = next_available.map_or(Duration::from_secs(30), |wait| {
        to_std(wait) + Duration::from_millis(50)
    });
    Ok(Action::requeue(requeue))
}

fn error_policy(_replica_set: Arc<ReplicaSet>, error: &Error, _context: Arc<Context>) -> Action {
    tracing::debug!(%error, "replicaset controller");
    Action::requeue(Duration::from_millis(500))
}

/// Runs the ReplicaSet controller until `shutdown`.
pub async fn run(
    client: kube::Client,
    config: Arc<ControllersConfig>,
    shutdown: CancellationToken,
) {
    let replica_sets: Api<ReplicaSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let stream = Controller::new(replica_sets, watcher::Config::default())
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

    fn pod(name: &str, phase: &str, ready: bool, created: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": "web", "pod-template-hash": "h"},
                "creationTimestamp": created},
            "spec": {"nodeName": "kube-sim", "containers": []},
            "status": {"phase": phase, "conditions": [{"type": "Ready",
                "status": if ready { "True" } else { "False" },
                "lastTransitionTime": "2025-01-01T00:00:00Z"}]}
        }))
        .expect("pod")
    }

    fn replica_set(replicas: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web-h", "namespace": "default", "uid": "rs-1", "generation": 3},
            "spec": {"replicas": replicas, "minReadySeconds": 0,
                "selector": {"matchLabels": {"app": "web", "pod-template-hash": "h"}},
                "template": {"metadata": {"labels": {"app": "web", "pod-template-hash": "h"}},
                    "spec": {"containers": [{"name": "app", "image": "a:1"}]}}}
        }))
        .expect("replica set")
    }

    fn at() -> Timestamp {
        "2025-01-01T01:00:00Z".parse().expect("time")
    }

    #[test]
    fn missing_pods_are_created_and_ended_ones_replaced() {
        let pods = [
            pod("a", "Running", true, "2025-01-01T00:00:00Z"),
            pod("done", "Failed", false, "2025-01-01T00:00:00Z"),
        ];
        let step = plan(3, &pod_sets(&pods));
        assert_eq!(
            step,
            Plan {
                create: 2,
                delete: vec!["done".to_owned()]
            }
        );
    }

    #[test]
    fn terminating_pods_are_not_counted() {
        let mut leaving = pod("leaving", "Running", true, "2025-01-01T00:00:00Z");
        leaving.metadata.deletion_timestamp = Some(Time(at()));
        let pods = [leaving, pod("a", "Running", true, "2025-01-01T00:00:00Z")];
        assert_eq!(plan(2, &pod_sets(&pods)).create, 1);
    }

    #[test]
    fn surplus_goes_pending_first_then_unready_then_newest() {
        let pods = [
            pod("old-ready", "Running", true, "2025-01-01T00:00:00Z"),
            pod("new-ready", "Running", true, "2025-01-01T00:10:00Z"),
            pod("unready", "Running", false, "2025-01-01T00:00:00Z"),
            pod("pending", "Pending", false, "2025-01-01T00:00:00Z"),
        ];
        assert_eq!(
            plan(1, &pod_sets(&pods)).delete,
            vec![
                "pending".to_owned(),
                "unready".to_owned(),
                "new-ready".to_owned()
            ]
        );
    }

    #[test]
    fn status_counts_active_ready_and_available_pods_and_reports_failed_creates() {
        let pods = [
            pod("a", "Running", true, "2025-01-01T00:00:00Z"),
            pod("b", "Running", false, "2025-01-01T00:00:00Z"),
        ];
        let status = replica_set_status(
            &replica_set(3),
            &pod_sets(&pods),
            Some("exceeded quota".to_owned()),
            at(),
        );
        assert_eq!(status.replicas, 2);
        assert_eq!(status.fully_labeled_replicas, Some(2));
        assert_eq!(status.ready_replicas, Some(1));
        assert_eq!(status.available_replicas, Some(1));
        assert_eq!(status.observed_generation, Some(3));
        let failure = &status.conditions.expect("conditions")[0];
        assert_eq!(
            (
                failure.type_.as_str(),
                failure.reason.as_deref(),
                failure.message.as_deref()
            ),
            (
                "ReplicaFailure",
                Some("FailedCreate"),
                Some("exceeded quota")
            )
        );
        let healthy = replica_set_status(&replica_set(2), &pod_sets(&pods), None, at());
        assert_eq!(healthy.conditions, None);
    }
}
