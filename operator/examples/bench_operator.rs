//! Benchmark of the reconciler (`make bench`): N apps on kube-sim, from nothing to all Ready.
//!
//! Starts kube-sim in-process and the real `kumiko-operator run` binary as a separate process
//! against it. The apps use an external database (the Postgres roles step has its own tests and
//! figures); this driver acts as instant Job and Deployment controllers (a Job completes and a
//! Deployment is available as soon as they appear, reacting to watch events). Prints: the time until every app is Ready,
//! operator writes per app, the operator's reads and writes per app to Ready and in one
//! steady-state resync of every app (goals: at most 2 reads per app to Ready, 0 reads and 0 writes
//! in the resync), its CPU per app from apply to Ready (goal 3 ms), and its peak RSS. The
//! operator runs as a ServiceAccount of its own (bound to `cluster-admin`), so its requests are
//! counted by the API server itself ([`kube_sim::Cluster::requests_of`]), not by the operator.
//!
//! With `--large-secrets N`, N Secrets of 512 KiB (Helm release Secrets are up to 1 MiB) are
//! created in namespaces of their own before the operator starts: the operator watches every
//! Secret in the cluster, and its peak RSS shows whether it holds their data (issue 12, defect 5:
//! the goal is < 64 MiB with 2,000 of them).
//!
//! Usage: `cargo run -p kumiko-operator --example bench_operator -- [APPS] [--large-secrets N]`
//! (default 100 apps, no large Secrets).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
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

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after_comm = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let ticks: f64 = after_comm
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|field| field.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// The instant Job controller: every Job the operator creates completes at once.
async fn complete_jobs(client: Client) {
    let jobs: Api<Job> = Api::all(client.clone());
    let mut events = watcher(jobs, watcher::Config::default())
        .applied_objects()
        .boxed();
    while let Some(Ok(job)) = events.next().await {
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
}

/// The instant Deployment controller: every generation of every Deployment is available at once.
async fn roll_out_deployments(client: Client) {
    let deployments: Api<Deployment> = Api::all(client.clone());
    let mut events = watcher(deployments, watcher::Config::default())
        .applied_objects()
        .boxed();
    while let Some(Ok(deployment)) = events.next().await {
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

/// Waits until `wanted` apps are `Ready=True`, watching them.
async fn all_ready(client: Client, wanted: usize) {
    let apps: Api<KumikoApp> = Api::all(client);
    let mut ready = std::collections::BTreeSet::new();
    let mut events = watcher(apps, watcher::Config::default())
        .applied_objects()
        .boxed();
    while let Some(event) = events.next().await {
        let Ok(app) = event else { continue };
        let is_ready = app.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        let key = (app.namespace().unwrap_or_default(), app.name_any());
        if is_ready {
            ready.insert(key);
        } else {
            ready.remove(&key);
        }
        if ready.len() == wanted {
            return;
        }
    }
}

/// How many creates the driver keeps in flight.
const CONCURRENT_CREATES: usize = 16;

/// The size of each `--large-secrets` Secret's data.
const LARGE_SECRET_BYTES: usize = 512 * 1024;

/// Large Secrets per namespace of their own.
const LARGE_SECRETS_PER_NAMESPACE: usize = 100;

/// `count` Secrets of [`LARGE_SECRET_BYTES`] shaped like Helm release Secrets, in namespaces
/// `other-<n>` that hold no app.
async fn create_large_secrets(client: &Client, count: usize) {
    let namespaces = count.div_ceil(LARGE_SECRETS_PER_NAMESPACE);
    for n in 0..namespaces {
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some(format!("other-{n}"));
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
    }
    futures::stream::iter(0..count)
        .for_each_concurrent(CONCURRENT_CREATES, |i| {
            let client = client.clone();
            async move {
                let release: Vec<u8> = (0..LARGE_SECRET_BYTES)
                    .map(|byte| (byte.wrapping_mul(31).wrapping_add(i) % 251) as u8)
                    .collect();
                let mut secret = Secret {
                    type_: Some("helm.sh/release.v1".to_owned()),
                    data: Some(BTreeMap::from([(
                        "release".to_owned(),
                        ByteString(release),
                    )])),
                    ..Secret::default()
                };
                secret.metadata.name = Some(format!("sh.helm.release.v1.release-{i}.v1"));
                let ns = format!("other-{}", i / LARGE_SECRETS_PER_NAMESPACE);
                Api::<Secret>::namespaced(client, &ns)
                    .create(&PostParams::default(), &secret)
                    .await
                    .unwrap();
            }
        })
        .await;
}

/// A namespace with the Secret that names the external database.
async fn create_environment(client: &Client, ns: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(ns.to_owned());
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
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
}

/// The app of one namespace: an API and a worker on the external database.
async fn create_app(client: &Client, ns: &str) {
    let app: KumikoApp = serde_json::from_value(json!({
        "apiVersion": "kumiko.so/v1alpha1", "kind": "KumikoApp",
        "metadata": {"name": "app"},
        "spec": {"image": "kumiko-app:1", "api": {"replicas": 1}, "worker": {"replicas": 1},
            "database": {"external": {"uriSecret": {"name": "db", "key": "uri"}}}}
    }))
    .unwrap();
    Api::<KumikoApp>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &app)
        .await
        .unwrap();
}

/// The operator's ServiceAccount, whose requests the server counts.
const OPERATOR_NAMESPACE: &str = "kumiko-system";
/// See [`OPERATOR_NAMESPACE`].
const OPERATOR_ACCOUNT: &str = "kumiko-operator";

/// The user the API server knows the operator as.
fn operator_user() -> String {
    format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}")
}

/// A kubeconfig for the operator: the ServiceAccount [`OPERATOR_ACCOUNT`], bound to
/// `cluster-admin`, so that the server tells its requests from the driver's.
async fn operator_kubeconfig(
    server: &kube_sim::ServerHandle,
    client: &Client,
    path: &std::path::Path,
) {
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(OPERATOR_NAMESPACE.to_owned());
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let mut account = k8s_openapi::api::core::v1::ServiceAccount::default();
    account.metadata.name = Some(OPERATOR_ACCOUNT.to_owned());
    let account = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(
        client.clone(),
        OPERATOR_NAMESPACE,
    )
    .create(&PostParams::default(), &account)
    .await
    .unwrap();
    let binding: k8s_openapi::api::rbac::v1::ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "bench-operator"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_ACCOUNT, "namespace": OPERATOR_NAMESPACE}]
    }))
    .unwrap();
    Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let token = server
        .cluster()
        .authenticator()
        .issue_service_account_token(
            OPERATOR_NAMESPACE,
            OPERATOR_ACCOUNT,
            account.metadata.uid.as_deref().unwrap(),
        );
    let credentials = kube_sim::server::Credentials {
        ca_pem: server.credentials().ca_pem.clone(),
        token,
    };
    std::fs::write(
        path,
        kube_sim::server::kubeconfig_yaml(server.url(), &credentials),
    )
    .unwrap();
}

/// The operator's API requests so far, as the API server counted them: `(reads and writes by
/// verb, watches)`.
fn api_requests(server: &kube_sim::ServerHandle) -> (BTreeMap<&'static str, f64>, f64) {
    let counted = server.cluster().requests_of(&operator_user());
    let count = |verb: &str| counted.get(verb).copied().unwrap_or(0) as f64;
    let mut by_verb = BTreeMap::new();
    for verb in [
        "get",
        "list",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
    ] {
        by_verb.insert(verb, count(verb));
    }
    (by_verb, count("watch"))
}

/// Reads (get, list) and writes (the rest) between two [`api_requests`] readings.
fn reads_and_writes(
    before: &BTreeMap<&'static str, f64>,
    after: &BTreeMap<&'static str, f64>,
) -> (f64, f64) {
    let delta = |verb: &str| after.get(verb).unwrap_or(&0.0) - before.get(verb).unwrap_or(&0.0);
    let reads = delta("get") + delta("list");
    let writes = ["create", "update", "patch", "delete", "deletecollection"]
        .iter()
        .map(|verb| delta(verb))
        .sum();
    (reads, writes)
}

/// The allocator of the kube-sim binary, so that the simulated API server costs what it costs in
/// `make test` and the demo.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let large_secrets: usize = args
        .iter()
        .position(|arg| arg == "--large-secrets")
        .and_then(|at| args.get(at + 1)?.parse().ok())
        .unwrap_or(0);
    let apps_wanted: usize = args.first().and_then(|n| n.parse().ok()).unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let server = kube_sim::Server::start(kube_sim::Config {
        kubeconfig: Some(kubeconfig.clone()),
        preload_cnpg: false,
        ..kube_sim::Config::default()
    })
    .await
    .unwrap();
    let client = server.client().unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &KumikoApp::crd())
        .await
        .unwrap();
    crds.create(&PostParams::default(), &Cluster::crd())
        .await
        .unwrap();

    // Before the operator starts: its first list of Secrets holds them all.
    let secrets_started = Instant::now();
    create_large_secrets(&client, large_secrets).await;
    let secrets_created = secrets_started.elapsed();

    let operator_config = dir.path().join("operator-kubeconfig");
    operator_kubeconfig(&server, &client, &operator_config).await;
    let port = kumiko_testkit::free_port().unwrap();
    let mut operator = std::process::Command::new(operator_binary())
        .args([
            "run",
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--concurrency",
            "32",
        ])
        .env("KUBECONFIG", &operator_config)
        .env("RUST_LOG", "warn")
        .env("POD_NAME", "bench")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the kumiko-operator binary (build it first: cargo build -p kumiko-operator)");

    let instant_jobs = tokio::spawn(complete_jobs(client.clone()));
    let instant_deployments = tokio::spawn(roll_out_deployments(client.clone()));
    // The environment (namespaces and the external database's Secret) exists before the apps.
    futures::stream::iter(0..apps_wanted)
        .for_each_concurrent(CONCURRENT_CREATES, |i| {
            let client = client.clone();
            async move { create_environment(&client, &format!("bench-{i}")).await }
        })
        .await;
    let (requests_before, watches_before) = api_requests(&server);
    let cpu_before = cpu_seconds(&operator.id().to_string());

    // Timed: every app applied at once (CONCURRENT_CREATES in flight), until all are Ready.
    let started = Instant::now();
    futures::stream::iter(0..apps_wanted)
        .for_each_concurrent(CONCURRENT_CREATES, |i| {
            let client = client.clone();
            async move { create_app(&client, &format!("bench-{i}")).await }
        })
        .await;
    let created = started.elapsed();
    tokio::time::timeout(
        Duration::from_secs(600),
        all_ready(client.clone(), apps_wanted),
    )
    .await
    .expect("all apps Ready within 10 minutes");
    let all_ready = started.elapsed();
    let cpu_to_ready = cpu_seconds(&operator.id().to_string()) - cpu_before;
    let (requests_at_ready, _) = api_requests(&server);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes_to_ready = metric(port, "kumiko_operator_writes_total").await;
    let mut writes_by_kind = Vec::new();
    for kind in kumiko_operator::controller::metrics::WRITE_KINDS {
        let count = metric(
            port,
            &format!("kumiko_operator_writes_total{{kind=\"{kind}\"}}"),
        )
        .await;
        if count > 0.0 {
            writes_by_kind.push(format!("{kind} {:.1}", count / apps_wanted as f64));
        }
    }
    let (requests_ready, watches_ready) = api_requests(&server);
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
    let (requests_resynced, _) = api_requests(&server);
    let rss = peak_rss_kib(operator.id());
    let operator_cpu = cpu_seconds(&operator.id().to_string());
    let sim_cpu = cpu_seconds("self");
    let reconciles = metric(port, "kumiko_operator_reconcile_duration_seconds_count").await;
    let reconcile_seconds = metric(port, "kumiko_operator_reconcile_duration_seconds_sum").await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &operator.id().to_string()])
        .status();
    let _ = operator.wait();
    instant_jobs.abort();
    instant_deployments.abort();
    server.shutdown().await;

    println!("apps:                              {apps_wanted}");
    if large_secrets > 0 {
        println!(
            "other Secrets:                     {large_secrets} of {} KiB in other namespaces, \
             created before the operator started (in {:.1} s)",
            LARGE_SECRET_BYTES / 1024,
            secrets_created.as_secs_f64()
        );
    }
    println!(
        "apps created in:                   {:.2} s ({CONCURRENT_CREATES} creates in flight)",
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
    println!(
        "  by kind:                         {}",
        writes_by_kind.join(", ")
    );
    let (reads, writes) = reads_and_writes(&requests_before, &requests_ready);
    println!(
        "API requests per app to Ready:     {:.2} reads (get, list), {:.1} writes; {} watches in all \
         (counted by the API server; goal: at most 2 reads)",
        reads / apps_wanted as f64,
        writes / apps_wanted as f64,
        watches_ready - watches_before
    );
    let (reads_at_ready, _) = reads_and_writes(&requests_before, &requests_at_ready);
    println!(
        "operator CPU per app to Ready:     {:.2} ms (goal 3 ms; {:.2} reads per app by then)",
        1000.0 * cpu_to_ready / apps_wanted as f64,
        reads_at_ready / apps_wanted as f64
    );
    let (resync_reads, resync_api_writes) = reads_and_writes(&requests_ready, &requests_resynced);
    println!("writes in one steady-state resync: {resync_writes} (goal 0)");
    println!(
        "API requests in that resync:       {:.2} reads per app, {resync_api_writes} writes (Lease \
         renewals) (goal 0 reads)",
        resync_reads / apps_wanted as f64
    );
    println!(
        "reconciles:                        {reconciles} (mean {:.1} ms)",
        1000.0 * reconcile_seconds / reconciles.max(1.0)
    );
    println!(
        "CPU used:                          operator {operator_cpu:.1} s, kube-sim and driver {sim_cpu:.1} s"
    );
    println!(
        "operator peak RSS:                 {:.1} MiB (goals: < 64 MiB beside the large Secrets, \
         < 128 MiB at 10,000 apps)",
        rss as f64 / 1024.0
    );
}
