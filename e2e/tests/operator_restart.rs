//! The operator killed mid-rollout: a new replica resumes where it stopped, and the migration
//! runs exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kumiko_e2e::app::job_has_condition;
use kumiko_e2e::{TestApp, TestCluster, eventually, manifests};
use serde_json::json;

fn image_of_job(job: &Job) -> Option<String> {
    job.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .image
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_killed_mid_rollout_resumes_and_migrates_once() {
    let mut cluster = TestCluster::start().await.unwrap();
    let namespace = cluster.namespace("restart").await.unwrap();
    let v2 = cluster.app_image_v2().unwrap().to_owned();
    let app = TestApp::apply(
        cluster.client(),
        &manifests::minimal_app("restart", &namespace, cluster.app_image()),
    )
    .await
    .unwrap();
    app.wait_ready().await.unwrap();

    app.patch_spec(json!({"image": v2})).await.unwrap();
    // Kill the operator as soon as it has started the v2 migration.
    eventually("the v2 migrate Job", Duration::from_secs(60), || {
        let app = app.clone();
        let v2 = v2.clone();
        async move {
            let jobs = app.migrate_jobs().await?;
            Ok(jobs
                .iter()
                .any(|job| image_of_job(job).as_deref() == Some(v2.as_str()))
                .then_some(()))
        }
    })
    .await
    .unwrap();
    cluster.kill_operator("kumiko-e2e").await.unwrap();
    // The migration goes on without the operator; nothing rolls out meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;

    cluster.start_operator("kumiko-e2e-2", false).unwrap();
    eventually("the app Ready on v2", Duration::from_secs(90), || {
        let app = app.clone();
        let v2 = v2.clone();
        async move {
            let current = app.get().await?;
            let pods = app.pods("api").await?;
            let on_v2 = !pods.is_empty()
                && pods.iter().all(|pod| {
                    pod.spec
                        .as_ref()
                        .and_then(|spec| spec.containers.first())
                        .and_then(|c| c.image.as_deref())
                        == Some(v2.as_str())
                });
            Ok((manifests::is_ready(&current) && on_v2).then_some(()))
        }
    })
    .await
    .unwrap();

    let v2_jobs: Vec<Job> = app
        .migrate_jobs()
        .await
        .unwrap()
        .into_iter()
        .filter(|job| image_of_job(job).as_deref() == Some(v2.as_str()))
        .collect();
    assert_eq!(v2_jobs.len(), 1, "one migrate Job for v2");
    let job = &v2_jobs[0];
    assert!(job_has_condition(job, "Complete"));
    let status = job.status.as_ref().unwrap();
    assert_eq!(status.succeeded, Some(1));
    assert_eq!(status.failed.unwrap_or(0), 0);
    let pods = app
        .job_pods(job.metadata.name.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(pods.len(), 1, "the migration ran in one pod, once");

    cluster.shutdown().await.unwrap();
}
