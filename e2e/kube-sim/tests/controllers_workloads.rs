//! Deployments and Jobs against the in-process API server, with real `sim-pod` processes.

// Test helpers outside #[test] functions: a failed set-up is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod controllers_support;

use std::time::Duration;

use controllers_support::{SIM_POD_IMAGE, Sim, wait_for};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube_sim::controllers::ControllersConfig;
use serde_json::json;

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn deployment(replicas: i32, version: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{"name": "app", "image": SIM_POD_IMAGE,
                        "env": [{"name": "VERSION", "value": version},
                                {"name": "SIM_POD_READY_AFTER_MS", "value": "300"}],
                        "readinessProbe": {"httpGet": {"path": "/health/ready", "port": 3000},
                            "periodSeconds": 1}}]
                }
            }
        }
    }))
    .expect("deployment")
}

fn condition_reason(deployment: &Deployment, type_: &str) -> Option<(String, String)> {
    deployment
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

async fn rolled_out(api: &Api<Deployment>, replicas: i32) -> Option<Deployment> {
    let deployment = api.get("web").await.ok()?;
    let status = deployment.status.clone()?;
    let done = status.observed_generation == deployment.metadata.generation
        && status.replicas == Some(replicas)
        && status.updated_replicas == Some(replicas)
        && status.available_replicas == Some(replicas)
        && condition_reason(&deployment, "Progressing")
            == Some(("True".to_owned(), "NewReplicaSetAvailable".to_owned()));
    done.then_some(deployment)
}

#[tokio::test]
async fn deployment_rolling_update_honours_max_surge_and_max_unavailable() {
    let sim = Sim::start(ControllersConfig::default()).await;
    let deployments: Api<Deployment> = Api::namespaced(sim.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    deployments
        .create(&PostParams::default(), &deployment(3, "v1"))
        .await
        .expect("deployment created");
    let first = wait_for("the first rollout", Duration::from_secs(60), || {
        rolled_out(&deployments, 3)
    })
    .await;
    assert_eq!(
        condition_reason(&first, "Available"),
        Some(("True".to_owned(), "MinimumReplicasAvailable".to_owned()))
    );
    let first_pods = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("pods");
    let first_hash = first_pods.items[0]
        .metadata
        .labels
        .as_ref()
        .expect("labels")["pod-template-hash"]
        .clone();
    // Pods belong to the ReplicaSet `web-<hash>`, which belongs to the Deployment.
    let replica_sets: Api<ReplicaSet> = Api::namespaced(sim.client.clone(), "default");
    let first_rs_name = format!("web-{first_hash}");
    for pod in &first_pods.items {
        let owner = &pod.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("ReplicaSet", first_rs_name.as_str(), Some(true))
        );
    }
    let first_rs = replica_sets
        .get(&first_rs_name)
        .await
        .expect("first ReplicaSet");
    let rs_owner = &first_rs.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (
            rs_owner.kind.as_str(),
            rs_owner.name.as_str(),
            rs_owner.controller
        ),
        ("Deployment", "web", Some(true))
    );
    let annotations = first_rs.metadata.annotations.clone().expect("annotations");
    assert_eq!(annotations["deployment.kubernetes.io/revision"], "1");
    assert_eq!(
        annotations["deployment.kubernetes.io/desired-replicas"],
        "3"
    );
    assert_eq!(annotations["deployment.kubernetes.io/max-replicas"], "4");

    // Roll out v2 and watch every step: never more than 3 + maxSurge(1) live pods, never fewer
    // than 3 - maxUnavailable(0) ready ones.
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": SIM_POD_IMAGE,
             "env": [{"name": "VERSION", "value": "v2"}, {"name": "SIM_POD_READY_AFTER_MS", "value": "300"}],
             "readinessProbe": {"httpGet": {"path": "/health/ready", "port": 3000}, "periodSeconds": 1}}]}}}})))
        .await
        .expect("template changed");
    let mut most_live = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let listed = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .expect("pods");
        let live: Vec<&Pod> = listed
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let ready = live.iter().filter(|p| is_ready(p)).count();
        most_live = most_live.max(live.len());
        assert!(live.len() <= 4, "maxSurge 1: {} live pods", live.len());
        assert!(ready >= 3, "maxUnavailable 0: only {ready} ready pods");
        if rolled_out(&deployments, 3)
            .await
            .is_some_and(|d| d.metadata.generation == Some(2))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the v2 rollout did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(most_live >= 3);
    let after = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("pods");
    let live: Vec<&Pod> = after
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    assert_eq!(live.len(), 3);
    assert!(
        live.iter().all(
            |p| p.metadata.labels.as_ref().expect("labels")["pod-template-hash"] != first_hash
        )
    );

    // The old ReplicaSet is kept at 0 for `kubectl rollout undo`; the new one has revision 2,
    // and so has the Deployment.
    let all: Vec<ReplicaSet> = replica_sets
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("replica sets")
        .items;
    assert_eq!(all.len(), 2, "one ReplicaSet per template");
    let old = all
        .iter()
        .find(|rs| rs.metadata.name.as_deref() == Some(&first_rs_name));
    assert_eq!(old.and_then(|rs| rs.spec.as_ref()?.replicas), Some(0));
    let new = all
        .iter()
        .find(|rs| rs.metadata.name.as_deref() != Some(&first_rs_name))
        .expect("new ReplicaSet");
    assert_eq!(
        new.metadata.annotations.as_ref().expect("annotations")["deployment.kubernetes.io/revision"],
        "2"
    );
    let rolled = deployments.get("web").await.expect("deployment");
    assert_eq!(
        rolled.metadata.annotations.as_ref().expect("annotations")["deployment.kubernetes.io/revision"],
        "2"
    );
    let progressing = rolled
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Progressing"))
        .and_then(|c| c.message.clone());
    assert_eq!(
        progressing,
        Some(format!(
            "ReplicaSet \"{}\" has successfully progressed.",
            new.metadata.name.as_deref().unwrap_or_default()
        ))
    );

    // Scale down: the status follows and terminating pods are not counted.
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("scaled");
    wait_for("the scale-down", Duration::from_secs(30), || {
        rolled_out(&deployments, 1)
    })
    .await;

    // Deleting the Deployment deletes its ReplicaSets, and their pods, by garbage collection.
    deployments
        .delete("web", &DeleteParams::foreground())
        .await
        .expect("deleted");
    wait_for(
        "the ReplicaSets and pods to be collected",
        Duration::from_secs(60),
        || async {
            let sets = replica_sets.list(&ListParams::default()).await.ok()?;
            let left = pods.list(&ListParams::default()).await.ok()?;
            (sets.items.is_empty()
                && left.items.is_empty()
                && deployments.get_opt("web").await.ok()?.is_none())
            .then_some(())
        },
    )
    .await;
    sim.stop().await;
}

fn job(name: &str, spec: serde_json::Value) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec
    }))
    .expect("job")
}

fn job_condition(job: &Job, type_: &str) -> Option<(String, String)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

#[tokio::test]
async fn job_backoff_limit_and_active_deadline_seconds() {
    let sim = Sim::start(ControllersConfig {
        backoff_base: Duration::from_millis(200),
        ..ControllersConfig::default()
    })
    .await;
    let jobs: Api<Job> = Api::namespaced(sim.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");

    // Every pod fails: backoffLimit 2 allows three pods, then the Job fails.
    jobs.create(
        &PostParams::default(),
        &job(
            "fails",
            json!({"backoffLimit": 2, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "m", "image": SIM_POD_IMAGE,
                "env": [{"name": "SIM_POD_EXIT_CODE", "value": "1"}]}]}}}),
        ),
    )
    .await
    .expect("job created");
    let failed = wait_for("the Job to fail", Duration::from_secs(60), || async {
        let job = jobs.get("fails").await.ok()?;
        job_condition(&job, "Failed").is_some().then_some(job)
    })
    .await;
    assert_eq!(
        job_condition(&failed, "Failed"),
        Some(("True".to_owned(), "BackoffLimitExceeded".to_owned()))
    );
    assert_eq!(
        job_condition(&failed, "FailureTarget"),
        Some(("True".to_owned(), "BackoffLimitExceeded".to_owned()))
    );
    let status = failed.status.clone().expect("status");
    assert_eq!(
        (status.failed, status.succeeded, status.active),
        (Some(3), Some(0), Some(0))
    );
    let job_pods = pods
        .list(&ListParams::default().labels("batch.kubernetes.io/job-name=fails"))
        .await
        .expect("pods");
    assert_eq!(
        job_pods.items.len(),
        3,
        "one pod per attempt, kept for their logs"
    );
    assert!(job_pods.items.iter().all(|p| {
        p.metadata
            .labels
            .as_ref()
            .expect("labels")
            .contains_key("controller-uid")
    }));

    // A pod that runs forever: activeDeadlineSeconds ends it.
    let created_at = std::time::Instant::now();
    jobs.create(
        &PostParams::default(),
        &job(
            "slow",
            json!({"activeDeadlineSeconds": 2, "template": {"spec": {"restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "m", "image": SIM_POD_IMAGE}]}}}),
        ),
    )
    .await
    .expect("job created");
    let deadline = wait_for("the deadline", Duration::from_secs(60), || async {
        let job = jobs.get("slow").await.ok()?;
        job_condition(&job, "Failed").is_some().then_some(job)
    })
    .await;
    assert_eq!(
        job_condition(&deadline, "Failed"),
        Some(("True".to_owned(), "DeadlineExceeded".to_owned()))
    );
    // status.startTime has whole seconds, as in Kubernetes: the deadline is 1 to 2s away.
    assert!(
        created_at.elapsed() >= Duration::from_millis(1000),
        "not before the deadline"
    );
    wait_for(
        "the deadline's pod to be gone",
        Duration::from_secs(30),
        || async {
            let listed = pods
                .list(&ListParams::default().labels("job-name=slow"))
                .await
                .ok()?;
            listed.items.is_empty().then_some(())
        },
    )
    .await;

    // A pod that succeeds: SuccessCriteriaMet, then Complete with a completion time.
    jobs.create(
        &PostParams::default(),
        &job(
            "works",
            json!({"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "m", "image": SIM_POD_IMAGE,
                "env": [{"name": "SIM_POD_EXIT_CODE", "value": "0"}]}]}}}),
        ),
    )
    .await
    .expect("job created");
    let complete = wait_for("the Job to complete", Duration::from_secs(60), || async {
        let job = jobs.get("works").await.ok()?;
        job_condition(&job, "Complete").is_some().then_some(job)
    })
    .await;
    assert_eq!(
        job_condition(&complete, "SuccessCriteriaMet"),
        Some(("True".to_owned(), "CompletionsReached".to_owned()))
    );
    let status = complete.status.expect("status");
    assert!(status.completion_time.is_some() && status.start_time.is_some());
    assert_eq!(status.succeeded, Some(1));
    sim.stop().await;
}

#[tokio::test]
async fn instant_mode_readies_deployments_and_completes_jobs_without_processes() {
    let sim = Sim::start(ControllersConfig {
        instant: true,
        ..ControllersConfig::default()
    })
    .await;
    let deployments: Api<Deployment> = Api::namespaced(sim.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    let jobs: Api<Job> = Api::namespaced(sim.client.clone(), "default");
    // A readiness probe that would take 60s: instant mode skips it.
    let mut slow = deployment(2, "v1");
    slow.spec
        .as_mut()
        .expect("spec")
        .template
        .spec
        .as_mut()
        .expect("pod spec")
        .containers[0]
        .readiness_probe
        .as_mut()
        .expect("probe")
        .initial_delay_seconds = Some(60);
    deployments
        .create(&PostParams::default(), &slow)
        .await
        .expect("deployment created");
    wait_for("the instant rollout", Duration::from_secs(20), || {
        rolled_out(&deployments, 2)
    })
    .await;
    let listed = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("pods");
    assert!(
        listed.items.iter().all(|pod| pod
            .metadata
            .annotations
            .as_ref()
            .is_none_or(|a| !a.contains_key("kube-sim.kumiko.so/port"))),
        "no process, no port"
    );

    jobs.create(
        &PostParams::default(),
        &job(
            "instant",
            json!({"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "m", "image": SIM_POD_IMAGE}]}}}),
        ),
    )
    .await
    .expect("job created");
    wait_for("the instant Job", Duration::from_secs(20), || async {
        let job = jobs.get("instant").await.ok()?;
        job_condition(&job, "Complete").is_some().then_some(())
    })
    .await;
    sim.stop().await;
}

/// A Job and a Deployment of an image that does not exist: their pods wait in
/// `ErrImagePull`/`ImagePullBackOff` and never run, so the Job stays active without completing
/// and the Deployment has no available replica ("Images": a failed pull is retried with back-off,
/// not skipped).
#[tokio::test]
async fn workloads_of_an_image_that_does_not_exist_never_complete_nor_become_available() {
    let sim = Sim::start(ControllersConfig {
        backoff_base: Duration::from_secs(1),
        ..ControllersConfig::default()
    })
    .await;
    let jobs: Api<Job> = Api::namespaced(sim.client.clone(), "default");
    let deployments: Api<Deployment> = Api::namespaced(sim.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    jobs.create(
        &PostParams::default(),
        &job(
            "migrate",
            json!({"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "m", "image": "registry.example/absent:1"}]}}}),
        ),
    )
    .await
    .expect("job created");
    let mut web = deployment(1, "1");
    web.spec
        .as_mut()
        .expect("spec")
        .template
        .spec
        .as_mut()
        .expect("pod spec")
        .containers[0]
        .image = Some("registry.example/absent:1".to_owned());
    deployments
        .create(&PostParams::default(), &web)
        .await
        .expect("deployment created");
    // Both pods have been through a whole pull and back-off, twice.
    wait_for(
        "both pods to be pulled again after backing off",
        Duration::from_secs(60),
        || async {
            let events: Api<k8s_openapi::api::core::v1::Event> =
                Api::namespaced(sim.client.clone(), "default");
            let pulled_twice = events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("Pulling") && e.count >= Some(2))
                .count();
            (pulled_twice >= 2).then_some(())
        },
    )
    .await;
    for pod in pods.list(&ListParams::default()).await.expect("pods").items {
        let status = pod.status.clone().expect("status");
        assert_eq!(status.phase.as_deref(), Some("Pending"), "{pod:?}");
        assert!(!is_ready(&pod));
    }
    let job = jobs.get("migrate").await.expect("job");
    let status = job.status.expect("status");
    assert_eq!(
        (status.succeeded.unwrap_or(0), status.failed.unwrap_or(0)),
        (0, 0)
    );
    assert_eq!(status.active, Some(1));
    assert!(status.completion_time.is_none());
    let web = deployments.get("web").await.expect("deployment");
    assert_eq!(
        web.status.expect("status").available_replicas.unwrap_or(0),
        0
    );
    sim.stop().await;
}
