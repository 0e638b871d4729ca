//! The operator's wiring, end to end against kube-sim's API server, a real Postgres, and
//! kube-sim's own Deployment, ReplicaSet, Job and kubelet controllers in instant mode (a Job's pod
//! succeeds and a Deployment's pods are Ready at once, through the controllers the e2e suite runs
//! on). Everything the operator does is real: watches, server-side apply, the status subresource,
//! the finalizer, Postgres roles, Events, leader election, its process and metrics.
//!
//! CNPG is the one part the test plays itself (the superuser Secret, pointing at the throwaway
//! Postgres, and a Ready Cluster): kube-sim's CNPG controller writes the Secrets CloudNativePG
//! writes, whose host `<cluster>-rw` only resolves where its hosts file is mounted, which the e2e
//! suite does (its private mount namespace) and a test process cannot.
//!
//! These are wiring tests only. The rollout's rules are table tests of `plan`
//! (`operator/src/controller/plan/tests.rs`), and the behaviours with real processes are the e2e
//! suite's (`e2e/tests/`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt};
use kumiko_crds::{KumikoApp, condition, names};
use kumiko_operator::cnpg::Cluster;
use kumiko_operator::controller::leader::LeaseTimings;
use kumiko_operator::controller::metrics::Metrics;
use kumiko_operator::controller::roles_backend::PostgresRoles;
use kumiko_operator::controller::run::{RunSettings, run_with};
use kumiko_testkit::TempPostgres;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

struct Operator {
    metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<Result<(), kumiko_operator::Error>>,
}

/// Starts one operator replica campaigning for the Lease as `identity`.
fn spawn_operator(client: &Client, identity: &str) -> Operator {
    let metrics = Arc::new(Metrics::new());
    let (stop, stop_rx) = watch::channel(false);
    let settings = RunSettings {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        lease_name: "kumiko-operator".to_owned(),
        lease_namespace: "default".to_owned(),
        cnpg_namespace: "cnpg-system".to_owned(),
        identity: identity.to_owned(),
        concurrency: 4,
        leader_election: true,
        lease_timings: LeaseTimings::default(),
    };
    let handle = tokio::spawn(run_with(
        client.clone(),
        settings,
        Arc::new(PostgresRoles),
        metrics.clone(),
        stop_rx,
    ));
    Operator {
        metrics,
        stop,
        handle,
    }
}

impl Operator {
    /// SIGTERM: a graceful stop, which must end without error.
    async fn stop(self) {
        self.stop.send(true).unwrap();
        let result = tokio::time::timeout(WAIT, self.handle)
            .await
            .unwrap()
            .unwrap();
        assert!(result.is_ok(), "{result:?}");
    }
}

struct Harness {
    server: kube_sim::ServerHandle,
    client: Client,
    postgres: TempPostgres,
    operator: Operator,
    /// Stops kube-sim's controllers.
    controllers: CancellationToken,
}

/// Starts kube-sim's Deployment, ReplicaSet, Job and kubelet controllers in instant mode (not its
/// CNPG controller: see the module doc).
fn start_workload_controllers(server: &kube_sim::ServerHandle) -> CancellationToken {
    use kube_sim::controllers::{
        ControllersConfig, deployment, dns::HostsFiles, job, kubelet::Kubelet, recorder::Recorder,
        replicaset,
    };
    let client = kube_sim::controllers::client_for(server).unwrap();
    let config = Arc::new(ControllersConfig {
        instant: true,
        ..ControllersConfig::default()
    });
    let shutdown = CancellationToken::new();
    let hosts = Arc::new(HostsFiles::new(None).unwrap());
    let kubelet = Kubelet::new(client.clone(), config.clone(), hosts, Recorder::disabled());
    tokio::spawn(kubelet.run(shutdown.clone()));
    tokio::spawn(deployment::run(
        client.clone(),
        config.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(replicaset::run(
        client.clone(),
        config.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(job::run(client, config, shutdown.clone()));
    shutdown
}

async fn start() -> Harness {
    start_with(KumikoApp::crd()).await
}

/// Starts kube-sim with `app_crd` as the KumikoApp CRD, a Postgres, and one operator.
async fn start_with(app_crd: CustomResourceDefinition) -> Harness {
    kumiko_operator::controller::run::init_logging();
    let postgres = TempPostgres::start().unwrap();
    // kube-sim's shipped CNPG CRD declares `metadata: {type: object}` (as CNPG's does), and its
    // apply path then reports every metadata field as undeclared; the operator's own typed CRD of
    // the Cluster (the fields it writes and reads) stands in for it until that is fixed.
    let server = kube_sim::Server::start(kube_sim::Config {
        preload_cnpg: false,
        ..kube_sim::Config::default()
    })
    .await
    .unwrap();
    let client = server.client().unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &app_crd).await.unwrap();
    crds.create(&PostParams::default(), &Cluster::crd())
        .await
        .unwrap();
    let controllers = start_workload_controllers(&server);
    let operator = spawn_operator(&client, "operator-a");
    Harness {
        server,
        client,
        postgres,
        operator,
        controllers,
    }
}

async fn namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(name.to_owned());
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
}

fn app_manifest(name: &str, image: &str) -> KumikoApp {
    serde_json::from_value(json!({
        "apiVersion": "kumiko.so/v1alpha1",
        "kind": "KumikoApp",
        "metadata": {"name": name},
        "spec": {
            "image": image,
            "api": {"replicas": 1},
            "worker": {"replicas": 1},
            "database": {"cluster": {"instances": 1, "storage": {"size": "1Gi"}}}
        }
    }))
    .unwrap()
}

/// Polls `check` until it yields a value, or fails the test after [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn condition_of(app: &KumikoApp, kind: &str) -> Option<(String, String, String)> {
    app.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Plays CNPG: the superuser Secret for the throwaway Postgres, and a Ready Cluster.
async fn cnpg_makes_the_cluster_ready(harness: &Harness, ns: &str, app: &str) {
    let clusters: Api<Cluster> = Api::namespaced(harness.client.clone(), ns);
    let cluster_name = names::database_cluster(app);
    eventually("the CNPG Cluster", || async {
        clusters.get_opt(&cluster_name).await.unwrap()
    })
    .await;
    let secrets: Api<Secret> = Api::namespaced(harness.client.clone(), ns);
    let data: BTreeMap<String, ByteString> = [
        ("username", "postgres".to_owned()),
        ("password", TempPostgres::SUPERUSER_PASSWORD.to_owned()),
        ("host", "127.0.0.1".to_owned()),
        ("port", harness.postgres.port().to_string()),
        ("dbname", "*".to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), ByteString(value.into_bytes())))
    .collect();
    let mut secret = Secret {
        data: Some(data),
        type_: Some("kubernetes.io/basic-auth".to_owned()),
        ..Secret::default()
    };
    secret.metadata.name = Some(format!("{cluster_name}-superuser"));
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    clusters
        .patch_status(
            &cluster_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "phase": "Cluster in healthy state",
                "readyInstances": 1,
                "conditions": [{"type": "Ready", "status": "True", "reason": "ClusterIsReady",
                    "message": "ready", "lastTransitionTime": "2025-01-01T00:00:00Z"}]
            }})),
        )
        .await
        .unwrap();
}

async fn wait_for_condition(
    harness: &Harness,
    ns: &str,
    app: &str,
    kind: &str,
    status: &str,
) -> KumikoApp {
    let apps: Api<KumikoApp> = Api::namespaced(harness.client.clone(), ns);
    eventually(&format!("{kind}={status}"), || async {
        apps.get(app)
            .await
            .ok()
            .filter(|app| condition_of(app, kind).is_some_and(|(s, _, _)| s == status))
    })
    .await
}

async fn roles_in_postgres(postgres: &TempPostgres, app: &str) -> Vec<String> {
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect(&postgres.superuser_url("postgres"))
        .await
        .unwrap();
    let mut roles: Vec<String> =
        sqlx::query_scalar("SELECT rolname::text FROM pg_roles WHERE rolname LIKE $1")
            .bind(format!("{app}\\_%"))
            .fetch_all(&mut connection)
            .await
            .unwrap();
    roles.sort();
    roles
}

async fn stop(harness: Harness) {
    harness.operator.stop().await;
    harness.controllers.cancel();
}

/// The name of the migrate Job of `app` at `image`, once the operator has created it.
async fn migrate_job(harness: &Harness, ns: &str, app: &str, image: &str) -> String {
    let jobs: Api<Job> = Api::namespaced(harness.client.clone(), ns);
    let job = eventually("the migrate Job", || async {
        jobs.list(&ListParams::default().labels(&format!("{}={app}", names::INSTANCE_LABEL)))
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|job| {
                job.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("kumiko.so/image"))
                    == Some(&image.to_owned())
            })
    })
    .await;
    job.metadata.name.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimal_app_becomes_ready_and_a_resync_writes_nothing() {
    let harness = start().await;
    namespace(&harness.client, "shop").await;
    let apps: Api<KumikoApp> = Api::namespaced(harness.client.clone(), "shop");
    apps.create(
        &PostParams::default(),
        &app_manifest("shop", "kumiko-app:1"),
    )
    .await
    .unwrap();

    let first = wait_for_condition(&harness, "shop", "shop", condition::RECONCILING, "True").await;
    assert_ne!(condition_of(&first, condition::READY).unwrap().0, "True");

    cnpg_makes_the_cluster_ready(&harness, "shop", "shop").await;
    wait_for_condition(&harness, "shop", "shop", condition::ROLES_READY, "True").await;
    assert_eq!(
        roles_in_postgres(&harness.postgres, "shop").await,
        ["shop_owner", "shop_runtime"]
    );
    let secrets: Api<Secret> = Api::namespaced(harness.client.clone(), "shop");
    let runtime = secrets.get(&names::runtime_secret("shop")).await.unwrap();
    let host = &runtime.data.as_ref().unwrap()["host"].0;
    assert_eq!(
        host, b"127.0.0.1",
        "host comes from the database's own Secret"
    );

    // kube-sim's Job, Deployment, ReplicaSet and kubelet controllers take it from here.
    let job = migrate_job(&harness, "shop", "shop", "kumiko-app:1").await;
    let ready = wait_for_condition(&harness, "shop", "shop", condition::READY, "True").await;
    let status = ready.status.unwrap();
    assert_eq!(status.migrated_image.as_deref(), Some("kumiko-app:1"));
    assert_eq!(status.migration_job.as_deref(), Some(job.as_str()));
    assert_eq!(status.image.as_deref(), Some("kumiko-app:1"));
    assert_eq!(status.api.unwrap().summary, "1/1");
    assert_eq!(status.observed_generation, ready.metadata.generation);

    // Steady state: a resync of the unchanged app writes nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writes = harness.operator.metrics.writes_total();
    let reconciles = harness.operator.metrics.reconciles_total();
    apps.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"example.com/touch": "1"}}})),
    )
    .await
    .unwrap();
    eventually("a resync", || async {
        (harness.operator.metrics.reconciles_total() > reconciles).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        harness.operator.metrics.writes_total(),
        writes,
        "{}",
        harness.operator.metrics.encode()
    );

    stop(harness).await;
}

/// Creates `app` in a new namespace and plays CNPG; kube-sim's controllers run its Job and
/// Deployments; returns it once `Ready=True`.
async fn drive_to_ready(harness: &Harness, app: KumikoApp) -> KumikoApp {
    let name = app.metadata.name.clone().unwrap();
    let ns = name.clone();
    namespace(&harness.client, &ns).await;
    let apps: Api<KumikoApp> = Api::namespaced(harness.client.clone(), &ns);
    apps.create(&PostParams::default(), &app).await.unwrap();
    cnpg_makes_the_cluster_ready(harness, &ns, &name).await;
    wait_for_condition(harness, &ns, &name, condition::READY, "True").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_api_faults_are_retried_until_the_app_converges() {
    let harness = start().await;
    let faults = harness.server.cluster().faults();
    let rule = |verb: &str, resource: &str, error: u16, times: u32| {
        serde_json::from_value::<kube_sim::faults::FaultRule>(json!({
            "verb": verb, "resource": resource, "error": error, "times": times
        }))
        .unwrap()
    };
    // Each fault can only meet the operator: it alone patches quotas, apps and (before they
    // exist, which the first two failures keep them from) Deployments, and alone reads Secrets.
    faults.add(rule("patch", "deployments.apps", 409, 2));
    faults.add(rule("patch", "resourcequotas", 500, 2));
    faults.add(rule("get", "secrets", 500, 3));
    faults.add(rule("patch", "kumikoapps.kumiko.so", 409, 1));
    faults.cut_watches();
    drive_to_ready(&harness, app_manifest("faulty", "kumiko-app:1")).await;
    faults.cut_watches();
    // Every fault fired: the app converged through them, not around them.
    let unfired: Vec<_> = faults
        .list()
        .into_iter()
        .filter(|(_, rule)| rule.times != Some(0))
        .collect();
    assert!(unfired.is_empty(), "faults that never fired: {unfired:?}");
    stop(harness).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_app_does_not_stall_the_others() {
    // A CRD without a schema lets an object through that the operator's types cannot read.
    let mut loose = KumikoApp::crd();
    for version in &mut loose.spec.versions {
        version.schema = Some(
            serde_json::from_value(json!({"openAPIV3Schema": {
                "type": "object", "x-kubernetes-preserve-unknown-fields": true
            }}))
            .unwrap(),
        );
    }
    let harness = start_with(loose).await;
    namespace(&harness.client, "bad").await;
    let bad: Api<kube::api::DynamicObject> = Api::namespaced_with(
        harness.client.clone(),
        "bad",
        &kube::api::ApiResource::erase::<KumikoApp>(&()),
    );
    let malformed: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "kumiko.so/v1alpha1", "kind": "KumikoApp",
        "metadata": {"name": "bad"},
        "spec": {"image": 42, "api": "many"}
    }))
    .unwrap();
    bad.create(&PostParams::default(), &malformed)
        .await
        .unwrap();
    drive_to_ready(&harness, app_manifest("good", "kumiko-app:1")).await;
    // The malformed app is left alone (no finalizer, no status) and said so in a Warning Event.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(harness.client.clone(), "bad");
    let event = eventually("a Warning Event about the unreadable app", || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|event| {
                event.reason.as_deref() == Some("UnreadableApp")
                    && event.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("bad")
            })
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let note = event.note.unwrap_or_default();
    assert!(note.contains("cannot read this KumikoApp"), "{note}");
    let stored = bad.get("bad").await.unwrap();
    assert!(stored.metadata.finalizers.is_none(), "{stored:?}");
    assert!(stored.data.get("status").is_none(), "{stored:?}");
    stop(harness).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_app_whose_spec_no_longer_validates_releases_it_with_an_event() {
    // A CRD without a schema stands in for an older CRD under which the app was stored.
    let mut loose = KumikoApp::crd();
    for version in &mut loose.spec.versions {
        version.schema = Some(
            serde_json::from_value(json!({"openAPIV3Schema": {
                "type": "object", "x-kubernetes-preserve-unknown-fields": true
            }}))
            .unwrap(),
        );
    }
    let harness = start_with(loose).await;
    namespace(&harness.client, "stale").await;
    let apps: Api<KumikoApp> = Api::namespaced(harness.client.clone(), "stale");
    let mut app = app_manifest("stale", "kumiko-app:1");
    app.spec.database.role.statement_timeout = "forever".to_owned();
    app.spec.database.reclaim_policy = kumiko_crds::ReclaimPolicy::Delete;
    app.metadata.finalizers = Some(vec!["kumiko.so/reclaim".to_owned()]);
    apps.create(&PostParams::default(), &app).await.unwrap();
    wait_for_condition(&harness, "stale", "stale", condition::STALLED, "True").await;
    apps.delete("stale", &Default::default()).await.unwrap();
    eventually("the app to be gone", || async {
        matches!(apps.get_opt("stale").await, Ok(None)).then_some(())
    })
    .await;
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(harness.client.clone(), "stale");
    let skipped = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|event| event.reason.as_deref() == Some("ReclaimSkipped"))
        .expect("a ReclaimSkipped Event");
    let note = skipped.note.unwrap_or_default();
    assert!(
        note.contains("spec.database.role.statementTimeout"),
        "{note}"
    );
    stop(harness).await;
}

/// One HTTP/1.0 GET on loopback: (status code, body).
async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())?;
    Some((code, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_process_serves_probes_and_metrics_logs_json_and_stops_on_sigterm() {
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
    let port = kumiko_testkit::free_port().unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_kumiko-operator"))
        .args(["run", "--http-addr", &format!("127.0.0.1:{port}")])
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", "default")
        .env("POD_NAME", "operator-process")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually("/readyz", || async {
        http_get(port, "/readyz")
            .await
            .filter(|(code, _)| *code == 200)
    })
    .await;
    assert_eq!(http_get(port, "/healthz").await.unwrap().0, 200);
    drive_namespace_app(&client).await;
    let metrics = eventually("a reconcile in /metrics", || async {
        http_get(port, "/metrics")
            .await
            .filter(|(_, body)| body.contains("kumiko_operator_reconciles_total{result=\"ok\"}"))
    })
    .await;
    for family in [
        "kumiko_operator_reconcile_duration_seconds",
        "kumiko_operator_apps",
        "kumiko_operator_writes_total",
        "kumiko_operator_leader 1",
    ] {
        assert!(
            metrics.1.contains(family),
            "{family} missing from\n{}",
            metrics.1
        );
    }

    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(output.status.success(), "exit status {:?}", output.status);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.lines().count() > 2, "{stdout}");
    for line in stdout.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client, "default");
    let lease = leases.get("kumiko-operator").await.unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity,
        None,
        "the Lease is released on SIGTERM"
    );
    server.shutdown().await;
}

/// Creates one app for the process test (its first reconcile is what the test waits for).
async fn drive_namespace_app(client: &Client) {
    namespace(client, "proc").await;
    let apps: Api<KumikoApp> = Api::namespaced(client.clone(), "proc");
    apps.create(
        &PostParams::default(),
        &app_manifest("proc", "kumiko-app:1"),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_child_is_restored_at_once_not_at_the_next_resync() {
    let harness = start().await;
    drive_to_ready(&harness, app_manifest("drift", "kumiko-app:1")).await;
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(harness.client.clone(), "drift");
    let before = services.get(&names::api("drift")).await.unwrap();
    services
        .delete(&names::api("drift"), &kube::api::DeleteParams::default())
        .await
        .unwrap();
    // A Ready app is requeued only after RESYNC (minutes): within WAIT, only the deletion's
    // watch event can have brought the Service back.
    let restored = eventually("the API Service restored", || async {
        services
            .get_opt(&names::api("drift"))
            .await
            .unwrap()
            .filter(|service| service.metadata.uid != before.metadata.uid)
    })
    .await;
    assert_eq!(
        restored.spec.unwrap().selector,
        before.spec.unwrap().selector
    );
    stop(harness).await;
}

/// One request the operator sent: method, path and query, and its `Accept` header.
type Recorded = (String, String, String);

/// Defect 5 of issue 12: the operator learns that a Secret it reads changed from a cluster-wide
/// watch, which must carry metadata only — a full watch would hold every Secret's data in the
/// cluster (Helm release Secrets up to 1 MiB each). Metadata-only list and watch are asked for
/// with `Accept: application/json;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1` (the API
/// server's `meta.k8s.io/v1` PartialObjectMetadata, as client-go's `metadata` client uses it);
/// kube-sim answers those with metadata only, as the API server does. The one whole-object watch
/// of Secrets is selected by the operator's `managed-by` label: its own credential Secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cluster_wide_secret_list_and_watch_asks_for_metadata_only() {
    use tower::util::MapRequestLayer;
    kumiko_operator::controller::run::init_logging();
    let server = kube_sim::Server::start(kube_sim::Config {
        preload_cnpg: false,
        ..kube_sim::Config::default()
    })
    .await
    .unwrap();
    let config = server.client_config().unwrap();
    let client = Client::try_from(config.clone()).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &KumikoApp::crd())
        .await
        .unwrap();
    crds.create(&PostParams::default(), &Cluster::crd())
        .await
        .unwrap();
    let requests: Arc<std::sync::Mutex<Vec<Recorded>>> = Arc::default();
    let record = requests.clone();
    let recording = MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
        let accept = request
            .headers()
            .get(http::header::ACCEPT)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let target = request
            .uri()
            .path_and_query()
            .map(ToString::to_string)
            .unwrap_or_default();
        record
            .lock()
            .unwrap()
            .push((request.method().to_string(), target, accept));
        request
    });
    let operator_client = kube::client::ClientBuilder::try_from(config)
        .unwrap()
        .with_layer(&recording)
        .build();
    let (stop_tx, stop_rx) = watch::channel(false);
    let settings = RunSettings {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        lease_name: "kumiko-operator".to_owned(),
        lease_namespace: "default".to_owned(),
        cnpg_namespace: "cnpg-system".to_owned(),
        identity: "operator-a".to_owned(),
        concurrency: 4,
        leader_election: false,
        lease_timings: LeaseTimings::default(),
    };
    let operator = tokio::spawn(run_with(
        operator_client,
        settings,
        Arc::new(PostgresRoles),
        Arc::new(Metrics::new()),
        stop_rx,
    ));
    let is_all_secrets = |target: &str| target.split('?').next() == Some("/api/v1/secrets");
    let is_own_secrets = |target: &str| {
        target.contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dkumiko-operator")
    };
    eventually("a cluster-wide watch of Secrets", || async {
        requests
            .lock()
            .unwrap()
            .iter()
            .any(|(_, target, _)| {
                is_all_secrets(target) && !is_own_secrets(target) && target.contains("watch=true")
            })
            .then_some(())
    })
    .await;
    let full: Vec<Recorded> = requests
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, target, accept)| {
            is_all_secrets(target)
                && !is_own_secrets(target)
                && !accept.contains("as=PartialObjectMetadata")
        })
        .cloned()
        .collect();
    assert!(
        full.is_empty(),
        "cluster-wide Secret requests for whole objects: {full:?}"
    );
    stop_tx.send(true).unwrap();
    let result = tokio::time::timeout(WAIT, operator).await.unwrap().unwrap();
    assert!(result.is_ok(), "{result:?}");
    server.shutdown().await;
}
