//! An image update: the new migrate Job runs first, then the API rolls out; the old pods drain
//! and exit 0; no request through the Service fails meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::ListParams;
use kube::runtime::watcher;
use kumiko_crds::names;
use kumiko_e2e::app::{job_has_condition, pod_is_ready};
use kumiko_e2e::{TestApp, TestCluster, eventually, manifests};
use serde_json::json;
use tokio::sync::Mutex;

/// What the request loop saw.
#[derive(Debug, Default)]
struct Traffic {
    succeeded: u64,
    failures: Vec<String>,
}

/// Sends `GET /api/status` to the Service through the API server's Service proxy, about 20 a
/// second, until `stop`, counting failures (any status but 2xx, or no answer within 10 s).
async fn send_requests(
    cluster: Arc<TestCluster>,
    namespace: String,
    service: String,
    port: u16,
    stop: Arc<AtomicBool>,
) -> Traffic {
    let mut traffic = Traffic::default();
    while !stop.load(Ordering::Relaxed) {
        let request = cluster.service_get(&namespace, &service, port, "/api/status");
        match tokio::time::timeout(Duration::from_secs(10), request).await {
            Ok(Ok((status, _))) if (200..300).contains(&status) => traffic.succeeded += 1,
            Ok(Ok((status, body))) => traffic.failures.push(format!("HTTP {status}: {body}")),
            Ok(Err(error)) => traffic.failures.push(format!("{error:#}")),
            Err(_) => traffic.failures.push("no answer within 10s".to_owned()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    traffic
}

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

fn image_of_pod(pod: &Pod) -> Option<String> {
    pod.spec.as_ref()?.containers.first()?.image.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn image_update_migrates_then_rolls_out_without_failed_requests() {
    let cluster = Arc::new(TestCluster::start().await.unwrap());
    let namespace = cluster.namespace("update").await.unwrap();
    let v1 = cluster.app_image().to_owned();
    let v2 = cluster.app_image_v2().unwrap().to_owned();
    let mut manifest = manifests::minimal_app("update", &namespace, &v1);
    manifest["spec"]["api"]["replicas"] = json!(2);
    let app = TestApp::apply(cluster.client(), &manifest).await.unwrap();
    app.wait_ready().await.unwrap();
    eventually("two ready API pods", Duration::from_secs(60), || {
        let app = app.clone();
        async move {
            let pods = app.pods("api").await?;
            Ok((pods.iter().filter(|pod| pod_is_ready(pod)).count() == 2).then_some(()))
        }
    })
    .await
    .unwrap();
    let old_api_pods: BTreeSet<String> = app
        .pods("api")
        .await
        .unwrap()
        .iter()
        .filter_map(|pod| pod.metadata.uid.clone())
        .collect();
    assert_eq!(app.migrate_jobs().await.unwrap().len(), 1);

    // Every state each API pod went through, by uid (the last one before it was removed holds
    // its exit code).
    let last_seen: Arc<Mutex<BTreeMap<String, Pod>>> = Arc::default();
    let pods = app.api::<Pod>();
    let selector = format!(
        "{}={},{}=api",
        names::INSTANCE_LABEL,
        app.name,
        names::COMPONENT_LABEL
    );
    let recorder = {
        let last_seen = last_seen.clone();
        tokio::spawn(async move {
            let mut events = watcher(pods, watcher::Config::default().labels(&selector)).boxed();
            while let Some(event) = events.next().await {
                if let Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) = event
                    && let Some(uid) = pod.metadata.uid.clone()
                {
                    last_seen.lock().await.insert(uid, pod);
                }
            }
        })
    };

    // Requests flow through the API Service while the image changes.
    let service = app
        .api::<Service>()
        .get(&names::api(&app.name))
        .await
        .unwrap();
    let port = u16::try_from(service.spec.unwrap().ports.unwrap()[0].port).unwrap();
    let (status, body) = cluster
        .service_get(&namespace, &names::api(&app.name), port, "/api/status")
        .await
        .unwrap();
    assert_eq!(status, 200, "the Service answers before the update: {body}");
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = tokio::spawn(send_requests(
        cluster.clone(),
        namespace.clone(),
        names::api(&app.name),
        port,
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;

    app.patch_spec(json!({"image": v2})).await.unwrap();

    // Watch the order: whenever the API Deployment already runs v2, the v2 migrate Job must
    // already be Complete (read after the Deployment, so a Complete seen later cannot hide an
    // early rollout).
    let jobs = app.api::<Job>();
    eventually(
        "the rollout to v2 to finish",
        Duration::from_secs(120),
        || {
            let app = app.clone();
            let jobs = jobs.clone();
            let v2 = v2.clone();
            let old_api_pods = old_api_pods.clone();
            async move {
                let deployment = app.api_deployment().await?;
                let deployment_image = deployment
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.template.spec.as_ref())
                    .and_then(|spec| spec.containers.first())
                    .and_then(|c| c.image.clone());
                if deployment_image.as_deref() == Some(v2.as_str()) {
                    let migrated =
                        jobs.list(&ListParams::default())
                            .await?
                            .items
                            .iter()
                            .any(|job| {
                                image_of_job(job).as_deref() == Some(v2.as_str())
                                    && job_has_condition(job, "Complete")
                            });
                    assert!(
                        migrated,
                        "the API Deployment moved to {v2} before its migrate Job completed"
                    );
                }
                let pods = app.pods("api").await?;
                let done = pods.len() == 2
                    && pods.iter().all(|pod| {
                        pod_is_ready(pod)
                            && image_of_pod(pod).as_deref() == Some(v2.as_str())
                            && !old_api_pods.contains(pod.metadata.uid.as_deref().unwrap_or(""))
                    });
                let ready = manifests::is_ready(&app.get().await?);
                Ok((done && ready).then_some(()))
            }
        },
    )
    .await
    .unwrap();
    // Let the last requests reach the new pods.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let traffic = traffic.await.unwrap();
    assert!(
        traffic.failures.is_empty(),
        "{} of {} requests failed during the rollout: {:?}",
        traffic.failures.len(),
        traffic.succeeded as usize + traffic.failures.len(),
        traffic.failures
    );
    assert!(
        traffic.succeeded >= 20,
        "too few requests to tell: {traffic:?}"
    );

    // A second migrate Job ran, for v2, and it completed before the first v2 pod was created.
    let jobs = app.migrate_jobs().await.unwrap();
    assert_eq!(jobs.len(), 2, "one migrate Job per image");
    let v2_job = jobs
        .iter()
        .find(|job| image_of_job(job).as_deref() == Some(v2.as_str()))
        .expect("a migrate Job for v2");
    assert!(job_has_condition(v2_job, "Complete"));
    let migrated_at = v2_job
        .status
        .as_ref()
        .and_then(|s| s.completion_time.clone())
        .expect("completionTime")
        .0;
    for pod in app.pods("api").await.unwrap() {
        let created = pod.metadata.creation_timestamp.clone().unwrap().0;
        assert!(
            created >= migrated_at,
            "API pod {:?} created at {created} before the migration completed at {migrated_at}",
            pod.metadata.name
        );
    }

    // The old pods drained and exited 0 (SIGTERM, not SIGKILL).
    eventually(
        "the old pods' final states",
        Duration::from_secs(30),
        || {
            let last_seen = last_seen.clone();
            let old_api_pods = old_api_pods.clone();
            async move {
                let seen = last_seen.lock().await;
                let exits: Option<Vec<i32>> = old_api_pods
                    .iter()
                    .map(|uid| {
                        seen.get(uid)?
                            .status
                            .as_ref()?
                            .container_statuses
                            .as_ref()?
                            .first()?
                            .state
                            .as_ref()?
                            .terminated
                            .as_ref()
                            .map(|t| t.exit_code)
                    })
                    .collect();
                Ok(exits)
            }
        },
    )
    .await
    .map(|exits| assert!(exits.iter().all(|code| *code == 0), "exit codes {exits:?}"))
    .unwrap();
    recorder.abort();

    // Each migration has an Event of its own, naming its image (`kubectl get events` shows which
    // image is migrating, not the first one's note folded into a series).
    let events: kube::Api<k8s_openapi::api::events::v1::Event> = app.api();
    let started: Vec<String> = events
        .list(&kube::api::ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|event| event.reason.as_deref() == Some("MigrationStarted"))
        .filter_map(|event| event.note)
        .collect();
    assert_eq!(
        started.len(),
        2,
        "one MigrationStarted Event per migration: {started:?}"
    );
    for image in [&v1, &v2] {
        assert!(
            started
                .iter()
                .any(|note| note.ends_with(&format!("for {image}"))),
            "a MigrationStarted Event for {image}: {started:?}"
        );
    }

    Arc::into_inner(cluster)
        .expect("the request loop has ended")
        .shutdown()
        .await
        .unwrap();
}
