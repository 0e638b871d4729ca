//! The smallest app, end to end with real processes: roles in Postgres, the migrate Job, the
//! API and worker pods answering `/health/ready`, `Ready=True`, and `kubectl wait`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use kumiko_crds::names;
use kumiko_e2e::app::{job_has_condition, pod_is_ready};
use kumiko_e2e::{TestApp, TestCluster, manifests, postgres};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimal_app_becomes_ready_with_real_processes() {
    let cluster = TestCluster::start().await.unwrap();
    let namespace = cluster.namespace("minimal").await.unwrap();
    let app = TestApp::apply(
        cluster.client(),
        &manifests::minimal_app("status", &namespace, cluster.app_image()),
    )
    .await
    .unwrap();

    app.wait_ready().await.unwrap();

    // The roles exist in Postgres with the published passwords.
    let owner_uri = app.owner_uri().await.unwrap();
    let runtime_uri = app.runtime_uri().await.unwrap();
    let owner = app
        .secret_value(&names::owner_secret(&app.name), "username")
        .await
        .unwrap();
    let runtime = app
        .secret_value(&names::runtime_secret(&app.name), "username")
        .await
        .unwrap();
    assert_ne!(owner, runtime, "owner and runtime must be distinct roles");
    let owner_uri = cluster.postgres(&namespace, &owner_uri).await.unwrap();
    let runtime_uri = cluster.postgres(&namespace, &runtime_uri).await.unwrap();
    assert_eq!(
        postgres::current_user(owner_uri.uri()).await.unwrap(),
        owner
    );
    assert_eq!(
        postgres::current_user(runtime_uri.uri()).await.unwrap(),
        runtime
    );
    assert!(
        postgres::role_exists(owner_uri.uri(), &runtime)
            .await
            .unwrap()
    );

    // The migrate Job completed, and its pod really ran `kumiko-app migrate apply`.
    let jobs = app.migrate_jobs().await.unwrap();
    assert_eq!(jobs.len(), 1, "one migrate Job for one image");
    let job = &jobs[0];
    assert!(job_has_condition(job, "Complete"), "{:?}", job.status);
    let job_name = job.metadata.name.clone().unwrap();
    let job_pods = app.job_pods(&job_name).await.unwrap();
    assert!(
        !job_pods.is_empty(),
        "the Job's pod is kept after it succeeded"
    );
    let pod = &job_pods[0];
    let container = &pod.spec.as_ref().unwrap().containers[0];
    let mut command = container.command.clone().unwrap_or_default();
    command.extend(container.args.clone().unwrap_or_default());
    assert!(
        command.ends_with(&["migrate".to_owned(), "apply".to_owned()]),
        "{command:?}"
    );
    let exit_code = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|statuses| statuses[0].state.as_ref())
        .and_then(|state| state.terminated.as_ref())
        .map(|terminated| terminated.exit_code);
    assert_eq!(exit_code, Some(0), "the migrate container exited 0");
    let log = app
        .pod_log(pod.metadata.name.as_deref().unwrap())
        .await
        .unwrap();
    assert!(log.contains("applying migrations"), "migrate log: {log}");
    assert!(log.contains("migrations applied"), "migrate log: {log}");

    // API and worker pods answer /health/ready.
    for component in ["api", "worker"] {
        let pods = app.pods(component).await.unwrap();
        let ready: Vec<_> = pods.iter().filter(|pod| pod_is_ready(pod)).collect();
        assert_eq!(ready.len(), 1, "one ready {component} pod: {pods:?}");
        let status = cluster
            .pod_http_status(ready[0], "/health/ready")
            .await
            .unwrap();
        assert_eq!(status, 200, "{component} /health/ready");
    }

    // kubectl agrees.
    let kubectl = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args([
            "wait",
            "--for=condition=Ready",
            &format!("kumikoapp/{}", app.name),
            "-n",
            &namespace,
            "--timeout=60s",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        kubectl.status.success(),
        "kubectl wait: {}{}",
        String::from_utf8_lossy(&kubectl.stdout),
        String::from_utf8_lossy(&kubectl.stderr)
    );

    cluster.shutdown().await.unwrap();
}
