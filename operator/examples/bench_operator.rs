//! Benchmark of the reconciler (`make bench`): N apps on kube-sim, from nothing to all Ready.
//!
//! Starts kube-sim in-process and the real `kumiko-operator run` binary as a separate process
//! against it. The apps use an external database (the Postgres roles step has its own tests and
//! figures); this driver acts as instant Job and Deployment controllers (a Job completes and a
//! Deployment is available as soon as they appear). Prints: the time until every app is Ready,
//! operator writes per app, writes during one steady-state resync of every app (goal 0), and the
//! operator's peak RSS.
//!
//! Usage: `cargo run -p kumiko-operator --example bench_operator -- [APPS]` (default 100).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt, ResourceExt};
use kumiko_crds::KumikoApp;
use kumiko_operator::cnpg::Cluster;
use serde_json::json;

fn operator_binary() -> std::path::PathBuf {
    if let Ok(path) = std::env::var("KUMIKO_OPERATOR_BIN") {
        return path.into();
    }
    // target/<profile>/examples/bench_operator -> target/<profile>/kumiko-operator
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("kumiko-operator")
}

async fn metric(port: u16, name: &str) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return 0.0;
    };
    let _ = stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await;
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text).await;
    text.lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// One pass of the instant controllers: finished Jobs, available Deployments.
async fn play_controllers(client: &Client) {
    let jobs: Api<Job> = Api::all(client.clone());
    for job in jobs.list(&ListParams::default()).await.unwrap().items {
        if job.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) > 0 {
            continue;
        }
        let now = "2025-01-01T00:00:00Z";
        let api: Api<Job> = Api::namespaced(client.clone(), &job.namespace().unwrap());
        let _ = api
            .patch_status(
                &job.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"startTime": now, "completionTime": now, "succeeded": 1,
                    "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]}})),
            )
            .await;
    }
    let deployments: Api<Deployment> = Api::all(client.clone());
    for deployment in deployments
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
    {
        let generation = deployment.metadata.generation;
        if deployment
            .status
            .as_ref()
            .and_then(|s| s.observed_generation)
            == generation
        {
            continue;
        }
        let replicas = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1);
        let api: Api<Deployment> =
            Api::namespaced(client.clone(), &deployment.namespace().unwrap());
        let _ = api
            .patch_status(
                &deployment.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"observedGeneration": generation, "replicas": replicas,
                    "readyReplicas": replicas, "updatedReplicas": replicas, "availableReplicas": replicas}})),
            )
            .await;
    }
}

async fn ready_count(client: &Client) -> usize {
    let apps: Api<KumikoApp> = Api::all(client.clone());
    apps.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|app| {
            app.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .count()
}

#[tokio::main]
async fn main() {
    let apps_wanted: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let server = kube_sim::Server::start(kube_sim::Config {
        kubeconfig: Some(kubeconfig.clone()),
        preload_cnpg: false,
        ..kube_sim::Config::default()
    })
    .await
    .unwrap();
    let client = Client::try_from(kube::Config::new(server.url().parse().unwrap())).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &KumikoApp::crd())
        .await
        .unwrap();
    crds.create(&PostParams::default(), &Cluster::crd())
        .await
        .unwrap();

    let port = kumiko_testkit::free_port().unwrap();
    let mut operator = std::process::Command::new(operator_binary())
        .args([
            "run",
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--concurrency",
            "32",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "warn")
        .env("POD_NAME", "bench")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the kumiko-operator binary (build it first: cargo build -p kumiko-operator)");

    let started = Instant::now();
    for i in 0..apps_wanted {
        let ns = format!("bench-{i}");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some(ns.clone());
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let mut secret = Secret {
            data: Some(BTreeMap::from([(
                "uri".to_owned(),
                ByteString(b"postgresql://app:pw@db.example:5432/app".to_vec()),
            )])),
            ..Secret::default()
        };
        secret.metadata.name = Some("db".to_owned());
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        let app: KumikoApp = serde_json::from_value(json!({
            "apiVersion": "kumiko.so/v1alpha1", "kind": "KumikoApp",
            "metadata": {"name": "app"},
            "spec": {"image": "kumiko-app:1", "api": {"replicas": 1}, "worker": {"replicas": 1},
                "database": {"external": {"uriSecret": {"name": "db", "key": "uri"}}}}
        }))
        .unwrap();
        Api::<KumikoApp>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &app)
            .await
            .unwrap();
    }
    let created = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        play_controllers(&client).await;
        if ready_count(&client).await == apps_wanted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all apps became Ready in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_ready = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes_to_ready = metric(port, "kumiko_operator_writes_total").await;
    let reconciles_before = metric(port, "kumiko_operator_reconciles_total").await;

    // A steady-state resync of every app: touch each (no spec change) and count the writes.
    for i in 0..apps_wanted {
        Api::<KumikoApp>::namespaced(client.clone(), &format!("bench-{i}"))
            .patch(
                "app",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"bench/resync": "1"}}})),
            )
            .await
            .unwrap();
    }
    let resync_deadline = Instant::now() + Duration::from_secs(300);
    while metric(port, "kumiko_operator_reconciles_total").await
        < reconciles_before + apps_wanted as f64
        && Instant::now() < resync_deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let resync_writes = metric(port, "kumiko_operator_writes_total").await - writes_to_ready;
    let rss = peak_rss_kib(operator.id());
    let reconciles = metric(port, "kumiko_operator_reconcile_duration_seconds_count").await;
    let reconcile_seconds = metric(port, "kumiko_operator_reconcile_duration_seconds_sum").await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &operator.id().to_string()])
        .status();
    let _ = operator.wait();
    server.shutdown().await;

    println!("apps:                              {apps_wanted}");
    println!(
        "created in:                        {:.2} s",
        created.as_secs_f64()
    );
    println!(
        "all Ready after:                   {:.2} s (goal for 1000: < 20 s)",
        all_ready.as_secs_f64()
    );
    println!(
        "operator writes per app to Ready:  {:.1}",
        writes_to_ready / apps_wanted as f64
    );
    println!("writes in one steady-state resync: {resync_writes} (goal 0)");
    println!(
        "reconciles:                        {reconciles} (mean {:.1} ms)",
        1000.0 * reconcile_seconds / reconciles.max(1.0)
    );
    println!(
        "operator peak RSS:                 {:.1} MiB (goal < 64 MiB)",
        rss as f64 / 1024.0
    );
}
