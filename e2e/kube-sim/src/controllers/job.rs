//! Jobs (`batch/v1`), NonIndexed.
//!
//! Rules followed (Kubernetes documentation, "Jobs", and the Job API reference, as of 1.31+):
//! - pods carry the template's labels plus `batch.kubernetes.io/controller-uid`,
//!   `batch.kubernetes.io/job-name`, `controller-uid` and `job-name`, and an owner reference to
//!   the Job with `controller: true`;
//! - up to `parallelism` (default 1) pods run while fewer than `completions` (default 1) pods
//!   succeeded; pods are replaced as soon as they fail or terminate;
//! - a failed pod counts against `backoffLimit` (default 6), and so does each container restart
//!   of `restartPolicy: OnFailure` pods; the Job fails once the count exceeds the limit
//!   (`BackoffLimitExceeded`); a replacement for a failed pod waits the pod-failure back-off
//!   (10s in Kubernetes, doubling per failure, at most 6 minutes);
//! - `activeDeadlineSeconds`, counted from `status.startTime`, fails the Job
//!   (`DeadlineExceeded`) and terminates its running pods;
//! - a failing Job gets `FailureTarget` first, then `Failed` once none of its pods runs any more;
//!   a succeeding one `SuccessCriteriaMet` (`CompletionsReached`), then `Complete` with
//!   `completionTime`; `suspend` terminates the pods and sets `Suspended`;
//! - `ttlSecondsAfterFinished` deletes the finished Job (foreground propagation) after that time.
//!
//! Pods are counted from the API at each reconciliation: a pod deleted by someone else before it
//! finished is not counted as failed (Kubernetes tracks them with finalizers; kube-sim does not).
//! `completionMode: Indexed`, `podFailurePolicy` and `successPolicy` are not implemented.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy,
};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::error::{Error, Result, kube_error};
use super::names::generate_name;
use super::pods::{
    controller_reference, controller_uid, is_ready, is_terminating, now, object_key, phase, to_std,
};
use super::{ControllersConfig, FIELD_MANAGER};

/// The longest pod-failure back-off (Kubernetes: `MaxJobPodFailureBackOff`, 10 minutes).
const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(600);

/// The labels of a Job's pods that name the Job.
pub fn job_pod_labels(job_name: &str, uid: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "batch.kubernetes.io/controller-uid".to_owned(),
            uid.to_owned(),
        ),
        (
            "batch.kubernetes.io/job-name".to_owned(),
            job_name.to_owned(),
        ),
        ("controller-uid".to_owned(), uid.to_owned()),
        ("job-name".to_owned(), job_name.to_owned()),
    ])
}

/// The Job's pods, counted.
#[derive(Debug, Default)]
pub struct JobPods<'a> {
    /// Running or pending pods, not terminating.
    pub active: Vec<&'a Pod>,
    /// Pods that succeeded.
    pub succeeded: i32,
    /// Pods that failed.
    pub failed: i32,
    /// Terminating pods that have not finished.
    pub terminating: i32,
    /// Ready active pods.
    pub ready: i32,
    /// Container restarts in active pods (they count as failures with OnFailure).
    pub restarts: i32,
    /// When the last pod failure happened.
    pub last_failure: Option<Timestamp>,
}

fn finished_at(pod: &Pod) -> Option<Timestamp> {
    pod.status
        .as_ref()?
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|status| {
            status
                .state
                .as_ref()?
                .terminated
                .as_ref()?
                .finished_at
                .as_ref()
                .map(|time| time.0)
        })
        .max()
}

/// Counts a Job's pods.
pub fn job_pods(pods: &[Pod]) -> JobPods<'_> {
    let mut counted = JobPods::default();
    for pod in pods {
        match phase(pod) {
            "Succeeded" => counted.succeeded += 1,
            "Failed" => {
                counted.failed += 1;
                let at = finished_at(pod)
                    .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0));
                counted.last_failure = counted.last_failure.max(at);
            }
            _ if is_terminating(&pod.metadata) => counted.terminating += 1,
            _ => {
                counted.active.push(pod);
                if is_ready(pod) {
                    counted.ready += 1;
                }
                counted.restarts += pod
                    .status
                    .as_ref()
                    .and_then(|status| status.container_statuses.as_ref())
                    .map_or(0, |statuses| statuses.iter().map(|s| s.restart_count).sum());
            }
        }
    }
    counted
}

/// What to do this round.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPlan {
    /// Pods to create.
    pub create: i32,
    /// Pods to delete, by name.
    pub delete: Vec<String>,
    /// The new status.
    pub status: JobStatus,
    /// When to look again.
    pub requeue: Option<Duration>,
    /// Whether the Job itself goes (ttlSecondsAfterFinished).
    pub delete_job: bool,
}

fn find<'a>(status: &'a JobStatus, type_: &str) -> Option<&'a JobCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|condition| condition.type_ == type_ && condition.status == "True")
}

fn upsert(
    status: &mut JobStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if let Some(existing) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if existing.status == value
            && existing.reason.as_deref() == Some(reason)
            && existing.message.as_deref() == Some(message)
        {
            return;
        }
        if existing.status != value {
            existing.status = value.to_owned();
            existing.last_transition_time = Some(Time(now));
        }
        existing.reason = Some(reason.to_owned());
        existing.message = Some(message.to_owned());
        existing.last_probe_time = Some(Time(now));
        return;
    }
    conditions.push(JobCondition {
        type_: type_.to_owned(),
        status: value.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
}

fn pod_failure_backoff(base: Duration, failures: i32) -> Duration {
    if failures <= 0 {
        return Duration::ZERO;
    }
    let exponent = u32::try_from(failures - 1).unwrap_or(0).min(20);
    base.saturating_mul(1_u32 << exponent)
        .min(MAX_FAILURE_BACKOFF)
}

fn until(now: Timestamp, at: Timestamp) -> Duration {
    if at <= now {
        Duration::ZERO
    } else {
        to_std(at.duration_since(now))
    }
}

fn add_seconds(at: Timestamp, seconds: i64) -> Timestamp {
    at.saturating_add(SignedDuration::from_secs(seconds))
        .unwrap_or(Timestamp::MAX)
}

/// Decides the next step of a Job from its pods (pure).
pub fn plan_job(job: &Job, pods: &JobPods<'_>, backoff_base: Duration, now: Timestamp) -> JobPlan {
    let spec = job.spec.clone().unwrap_or_default();
    let mut status = job.status.clone().unwrap_or_default();
    let mut plan = JobPlan {
        create: 0,
        delete: Vec::new(),
        status: JobStatus::default(),
        requeue: None,
        delete_job: false,
    };
    let active_names: Vec<String> = pods.active.iter().map(|pod| pod.name_any()).collect();
    status.succeeded = Some(pods.succeeded);
    status.failed = Some(pods.failed);
    status.ready = Some(pods.ready);
    status.terminating = Some(pods.terminating);

    let finished_at = find(&status, "Complete")
        .or_else(|| find(&status, "Failed"))
        .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0));
    if let Some(finished_at) = finished_at {
        // Finished: only the pods of a failed Job are cleaned up, and the TTL applies.
        if find(&status, "Failed").is_some() {
            plan.delete = active_names;
        }
        status.active = Some(0);
        if let Some(ttl) = spec.ttl_seconds_after_finished {
            let expires = add_seconds(finished_at, i64::from(ttl));
            if now >= expires {
                plan.delete_job = true;
            } else {
                plan.requeue = Some(until(now, expires));
            }
        }
        plan.status = status;
        return plan;
    }

    // On the way to a terminal condition: wait for the pods to be gone, then add it.
    let failure_target = find(&status, "FailureTarget").cloned();
    let success_target = find(&status, "SuccessCriteriaMet").cloned();
    if let Some(target) = failure_target.or(success_target) {
        plan.delete = active_names.clone();
        status.active = Some(count(active_names.len()));
        if active_names.is_empty() && pods.terminating == 0 {
            let reason = target.reason.clone().unwrap_or_default();
            let message = target.message.clone().unwrap_or_default();
            if target.type_ == "FailureTarget" {
                upsert(&mut status, "Failed", "True", &reason, &message, now);
            } else {
                upsert(&mut status, "Complete", "True", &reason, &message, now);
                status.completion_time = Some(Time(now));
            }
            status.active = Some(0);
            if let Some(ttl) = spec.ttl_seconds_after_finished {
                plan.requeue = Some(Duration::from_secs(u64::try_from(ttl).unwrap_or(0)));
            }
        }
        plan.status = status;
        return plan;
    }

    if spec.suspend == Some(true) {
        plan.delete = active_names;
        status.active = Some(0);
        upsert(
            &mut status,
            "Suspended",
            "True",
            "JobSuspended",
            "Job suspended",
            now,
        );
        plan.status = status;
        return plan;
    }
    if status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Suspended" && c.status == "True")
    {
        upsert(
            &mut status,
            "Suspended",
            "False",
            "JobResumed",
            "Job resumed",
            now,
        );
        status.start_time = None;
    }
    let start = status.start_time.as_ref().map_or(now, |t| t.0);
    status.start_time = Some(Time(start));

    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    let failures = pods.failed + if on_failure { pods.restarts } else { 0 };
    let completions = spec.completions;
    let parallelism = spec.parallelism.unwrap_or(1).max(0);

    let deadline = spec
        .active_deadline_seconds
        .map(|seconds| add_seconds(start, seconds));
    let failure = if failures > backoff_limit {
        Some((
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ))
    } else if deadline.is_some_and(|deadline| now >= deadline) {
        Some((
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
        ))
    } else {
        None
    };
    let succeeded = match completions {
        Some(completions) => pods.succeeded >= completions,
        None => pods.succeeded > 0,
    };
    if let Some((reason, message)) = failure {
        upsert(&mut status, "FailureTarget", "True", reason, message, now);
        plan.delete = active_names.clone();
        status.active = Some(count(active_names.len()));
        plan.requeue = Some(Duration::from_millis(200));
        plan.status = status;
        return plan;
    }
    if succeeded {
        upsert(
            &mut status,
            "SuccessCriteriaMet",
            "True",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
            now,
        );
        plan.delete = active_names.clone();
        status.active = Some(count(active_names.len()));
        plan.requeue = Some(Duration::from_millis(200));
        plan.status = status;
        return plan;
    }

    let wanted = match completions {
        Some(completions) => parallelism.min(completions - pods.succeeded),
        None => parallelism,
    }
    .max(0);
    let missing = wanted - count(pods.active.len());
    status.active = Some(count(pods.active.len()));
    if missing > 0 {
        let ready_at = pods.last_failure.map(|at| {
            at.saturating_add(
                SignedDuration::try_from(pod_failure_backoff(backoff_base, pods.failed))
                    .unwrap_or(SignedDuration::MAX),
            )
            .unwrap_or(Timestamp::MAX)
        });
        match ready_at {
            Some(at) if at > now => plan.requeue = Some(until(now, at)),
            _ => plan.create = missing,
        }
    }
    if let Some(deadline) = deadline {
        let wait = until(now, deadline);
        plan.requeue = Some(plan.requeue.map_or(wait, |requeue| requeue.min(wait)));
    }
    plan.status = status;
    plan
}

fn count(items: usize) -> i32 {
    i32::try_from(items).unwrap_or(i32::MAX)
}

fn new_pod(job: &Job) -> Result<Pod> {
    let spec = job.spec.clone().unwrap_or_default();
    let template_meta = spec.template.metadata.unwrap_or_default();
    let name = job.name_any();
    let uid = job.uid().unwrap_or_default();
    let mut labels = template_meta.labels.unwrap_or_default();
    labels.extend(job_pod_labels(&name, &uid));
    let owner = controller_reference("batch/v1", "Job", &job.metadata).ok_or_else(|| {
        Error::InvalidObject {
            object: format!("Job {}", object_key(&job.metadata)),
            field: "metadata.uid".to_owned(),
            message: "the Job has no name or uid yet".to_owned(),
        }
    })?;
    let prefix = format!("{name}-");
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(generate_name(&prefix)),
            generate_name: Some(prefix),
            namespace: job.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: template_meta.annotations,
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: spec.template.spec,
        status: None,
    })
}

struct Context {
    client: kube::Client,
    config: Arc<ControllersConfig>,
}

async fn reconcile(job: Arc<Job>, context: Arc<Context>) -> Result<Action> {
    if is_terminating(&job.metadata) {
        return Ok(Action::await_change());
    }
    let namespace = job.namespace().unwrap_or_else(|| "default".to_owned());
    let uid = job.uid().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let pods: Vec<Pod> = pods_api
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/controller-uid={uid}")))
        .await
        .map_err(kube_error(format!(
            "listing the pods of Job {namespace}/{}",
            job.name_any()
        )))?
        .items
        .into_iter()
        .filter(|pod| controller_uid(&pod.metadata) == Some(uid.as_str()))
        .collect();
    let counted = job_pods(&pods);
    let backoff = if context.config.instant {
        Duration::ZERO
    } else {
        context.config.backoff_base
    };
    let plan = plan_job(&job, &counted, backoff, now());

    let api: Api<Job> = Api::namespaced(context.client.clone(), &namespace);
    if plan.delete_job {
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            preconditions: Some(Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        if let Err(error) = api.delete(&job.name_any(), &params).await {
            tracing::debug!(%error, job = %job.name_any(), "job: TTL deletion failed");
        }
        return Ok(Action::await_change());
    }
    for _ in 0..plan.create {
        let pod = new_pod(&job)?;
        if let Err(error) = pods_api.create(&PostParams::default(), &pod).await {
            tracing::debug!(%error, job = %job.name_any(), "job: creating a pod failed");
            break;
        }
    }
    for name in &plan.delete {
        if let Err(error) = pods_api.delete(name, &DeleteParams::default()).await {
            tracing::debug!(%error, pod = %name, "job: deleting a pod failed");
        }
    }
    if job.status.as_ref() != Some(&plan.status) {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        api.patch_status(
            &job.name_any(),
            &params,
            &Patch::Merge(json!({ "status": plan.status })),
        )
        .await
        .map_err(kube_error(format!(
            "updating the status of Job {namespace}/{}",
            job.name_any()
        )))?;
    }
    Ok(match plan.requeue {
        Some(wait) => Action::requeue(wait + Duration::from_millis(20)),
        None => Action::requeue(Duration::from_secs(60)),
    })
}

fn error_policy(_job: Arc<Job>, error: &Error, _context: Arc<Context>) -> Action {
    tracing::debug!(%error, "job controller");
    Action::requeue(Duration::from_millis(500))
}

/// Runs the Job controller until `shutdown`.
pub async fn run(
    client: kube::Client,
    config: Arc<ControllersConfig>,
    shutdown: CancellationToken,
) {
    let jobs: Api<Job> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let stream = Controller::new(jobs, watcher::Config::default())
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

    fn job(spec: serde_json::Value) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "migrate", "namespace": "default", "uid": "j-1"},
            "spec": spec
        }))
        .expect("job")
    }

    fn pod(name: &str, phase: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "creationTimestamp": "2025-01-01T00:00:00Z"},
            "status": {"phase": phase}
        }))
        .expect("pod")
    }

    fn at(text: &str) -> Timestamp {
        text.parse().expect("time")
    }

    fn conditions(status: &JobStatus) -> Vec<(String, String, String)> {
        status
            .conditions
            .iter()
            .flatten()
            .map(|c| {
                (
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    fn template() -> serde_json::Value {
        json!({"spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": "x"}]}})
    }

    #[test]
    fn job_starts_one_pod_and_records_its_start_time() {
        let job = job(json!({"template": template()}));
        let plan = plan_job(
            &job,
            &job_pods(&[]),
            Duration::ZERO,
            at("2025-01-01T00:00:00Z"),
        );
        assert_eq!(plan.create, 1);
        assert_eq!(
            plan.status.start_time,
            Some(Time(at("2025-01-01T00:00:00Z")))
        );
    }

    #[test]
    fn failed_pod_is_replaced_after_the_back_off() {
        let job = job(json!({"backoffLimit": 2, "template": template()}));
        let pods = [pod("a", "Failed")];
        let plan = plan_job(
            &job,
            &job_pods(&pods),
            Duration::from_secs(10),
            at("2025-01-01T00:00:05Z"),
        );
        assert_eq!(plan.create, 0);
        assert_eq!(plan.requeue, Some(Duration::from_secs(5)));
        let plan = plan_job(
            &job,
            &job_pods(&pods),
            Duration::from_secs(10),
            at("2025-01-01T00:00:10Z"),
        );
        assert_eq!(plan.create, 1);
    }

    #[test]
    fn backoff_limit_exceeded_sets_failure_target_then_failed() {
        let mut job = job(json!({"backoffLimit": 1, "template": template()}));
        let pods = [pod("a", "Failed"), pod("b", "Failed")];
        let now = at("2025-01-01T00:01:00Z");
        let plan = plan_job(&job, &job_pods(&pods), Duration::ZERO, now);
        assert_eq!(plan.create, 0);
        assert_eq!(
            conditions(&plan.status),
            vec![(
                "FailureTarget".into(),
                "True".into(),
                "BackoffLimitExceeded".into()
            )]
        );
        job.status = Some(plan.status);
        let plan = plan_job(&job, &job_pods(&pods), Duration::ZERO, now);
        assert_eq!(
            conditions(&plan.status),
            vec![
                (
                    "FailureTarget".into(),
                    "True".into(),
                    "BackoffLimitExceeded".into()
                ),
                (
                    "Failed".into(),
                    "True".into(),
                    "BackoffLimitExceeded".into()
                )
            ]
        );
        assert_eq!(plan.status.failed, Some(2));
        assert_eq!(plan.status.completion_time, None);
    }

    #[test]
    fn active_deadline_kills_running_pods_and_fails_the_job() {
        let mut job = job(json!({"activeDeadlineSeconds": 5, "template": template()}));
        job.status = Some(
            serde_json::from_value(json!({"startTime": "2025-01-01T00:00:00Z"})).expect("status"),
        );
        let pods = [pod("a", "Running")];
        let early = plan_job(
            &job,
            &job_pods(&pods),
            Duration::ZERO,
            at("2025-01-01T00:00:02Z"),
        );
        assert!(early.delete.is_empty());
        assert_eq!(early.requeue, Some(Duration::from_secs(3)));
        let late = plan_job(
            &job,
            &job_pods(&pods),
            Duration::ZERO,
            at("2025-01-01T00:00:05Z"),
        );
        assert_eq!(late.delete, vec!["a".to_owned()]);
        assert_eq!(
            conditions(&late.status),
            vec![(
                "FailureTarget".into(),
                "True".into(),
                "DeadlineExceeded".into()
            )]
        );
    }

    #[test]
    fn success_sets_success_criteria_met_then_complete_with_completion_time() {
        let mut job = job(json!({"template": template()}));
        let pods = [pod("a", "Succeeded")];
        let now = at("2025-01-01T00:00:30Z");
        let plan = plan_job(&job, &job_pods(&pods), Duration::ZERO, now);
        job.status = Some(plan.status);
        let plan = plan_job(&job, &job_pods(&pods), Duration::ZERO, now);
        assert_eq!(
            conditions(&plan.status),
            vec![
                (
                    "SuccessCriteriaMet".into(),
                    "True".into(),
                    "CompletionsReached".into()
                ),
                (
                    "Complete".into(),
                    "True".into(),
                    "CompletionsReached".into()
                )
            ]
        );
        assert_eq!(plan.status.completion_time, Some(Time(now)));
        assert_eq!(plan.status.succeeded, Some(1));
    }

    #[test]
    fn finished_job_is_deleted_after_its_ttl() {
        let mut job = job(json!({"ttlSecondsAfterFinished": 10, "template": template()}));
        job.status = Some(
            serde_json::from_value(json!({"conditions": [{"type": "Complete", "status": "True",
            "lastTransitionTime": "2025-01-01T00:00:00Z"}]}))
            .expect("status"),
        );
        let plan = plan_job(
            &job,
            &job_pods(&[]),
            Duration::ZERO,
            at("2025-01-01T00:00:04Z"),
        );
        assert!(!plan.delete_job);
        assert_eq!(plan.requeue, Some(Duration::from_secs(6)));
        let plan = plan_job(
            &job,
            &job_pods(&[]),
            Duration::ZERO,
            at("2025-01-01T00:00:10Z"),
        );
        assert!(plan.delete_job);
    }

    #[test]
    fn on_failure_restarts_count_against_the_backoff_limit() {
        let job = job(
            json!({"backoffLimit": 1, "template": {"spec": {"restartPolicy": "OnFailure",
            "containers": [{"name": "m", "image": "x"}]}}}),
        );
        let running: Pod = serde_json::from_value(json!({"metadata": {"name": "a"},
            "status": {"phase": "Running", "containerStatuses": [{"name": "m", "image": "x",
                "imageID": "", "ready": false, "restartCount": 2}]}}))
        .expect("pod");
        let plan = plan_job(
            &job,
            &job_pods(std::slice::from_ref(&running)),
            Duration::ZERO,
            at("2025-01-01T00:00:00Z"),
        );
        assert_eq!(
            conditions(&plan.status),
            vec![(
                "FailureTarget".into(),
                "True".into(),
                "BackoffLimitExceeded".into()
            )]
        );
    }
}
