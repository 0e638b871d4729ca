//! A cluster for one test: kube-sim started in-process (the default), or an existing cluster named
//! by `KUMIKO_E2E_KUBECONFIG`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_sim::controllers::{
    Controllers, ControllersConfig, ImageMapping, POD_PORT_ANNOTATION,
    PROXY_PORT_ANNOTATION_PREFIX, PostgresSource,
};
use kumiko_operator::controller::metrics::Metrics;
use kumiko_operator::controller::roles_backend::PostgresRoles;
use kumiko_operator::controller::run::{RunSettings, init_logging, run_with};
use kumiko_testkit::TempPostgres;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::binaries;
use crate::wait::eventually;

/// The kubeconfig of an existing cluster to run against (nothing is started then).
pub const KUBECONFIG_ENV: &str = "KUMIKO_E2E_KUBECONFIG";
/// On an existing cluster: the image of the reference app.
pub const APP_IMAGE_ENV: &str = "KUMIKO_E2E_APP_IMAGE";
/// On an existing cluster: a second tag of the reference app, for image updates.
pub const APP_IMAGE_V2_ENV: &str = "KUMIKO_E2E_APP_IMAGE_V2";
/// On an existing cluster: the namespace the operator was installed in.
pub const OPERATOR_NAMESPACE_ENV: &str = "KUMIKO_E2E_OPERATOR_NAMESPACE";

/// The image every app uses on kube-sim (mapped to the local `kumiko-app` binary).
pub const SIM_APP_IMAGE: &str = "kumiko-app:dev";
/// A second tag of the same binary on kube-sim, for image updates.
pub const SIM_APP_IMAGE_V2: &str = "kumiko-app:v2";

/// On kube-sim: an image whose `migrate` command fails (a script that prints an error and exits
/// 1) and whose other commands run the app binary.
pub const SIM_BROKEN_MIGRATION_IMAGE: &str = "kumiko-app:broken-migration";
/// On an existing cluster: an image whose migration fails.
pub const BROKEN_MIGRATION_IMAGE_ENV: &str = "KUMIKO_E2E_BROKEN_MIGRATION_IMAGE";
/// The error line the broken-migration image prints (to find in the log tail).
pub const BROKEN_MIGRATION_ERROR: &str =
    "migration 20990101000000 failed: relation \"widgets\" already exists";

/// The field manager the suite writes with.
pub const FIELD_MANAGER: &str = "kumiko-e2e";

/// How long a cluster-wide step (CRD established, namespace created) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Choices for the cluster of one test.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterOptions {
    /// On kube-sim: every CNPG Cluster uses one Postgres that the harness owns and that outlives
    /// the Clusters (so a test can look into it after an app and its Cluster are deleted), instead
    /// of a throwaway Postgres per Cluster. Ignored on an existing cluster.
    pub shared_postgres: bool,
    /// On kube-sim: start no operator (the test starts its own with
    /// [`TestCluster::start_operator`]). Ignored on an existing cluster.
    pub no_operator: bool,
}

/// One operator replica the harness runs in-process.
struct OperatorReplica {
    identity: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), kumiko_operator::Error>>,
}

/// A cluster for one test, with the operator running against it.
pub struct TestCluster {
    client: Client,
    kubeconfig: PathBuf,
    app_image: String,
    app_image_v2: Option<String>,
    broken_migration_image: Option<String>,
    local: Option<LocalCluster>,
}

/// What the harness started for a kube-sim run (dropped in reverse order of start).
struct LocalCluster {
    operators: Vec<OperatorReplica>,
    controllers: Option<Controllers>,
    server: Option<kube_sim::ServerHandle>,
    postgres: Option<TempPostgres>,
    _dir: tempfile::TempDir,
}

impl TestCluster {
    /// The cluster this run targets: an existing one when `KUMIKO_E2E_KUBECONFIG` is set,
    /// otherwise a fresh kube-sim with its controllers and the operator.
    pub async fn start() -> Result<Self> {
        Self::start_with(ClusterOptions::default()).await
    }

    /// [`TestCluster::start`] with options.
    pub async fn start_with(options: ClusterOptions) -> Result<Self> {
        match std::env::var_os(KUBECONFIG_ENV) {
            Some(path) => Self::existing(PathBuf::from(path)).await,
            None => Self::local(options).await,
        }
    }

    async fn existing(kubeconfig: PathBuf) -> Result<Self> {
        let app_image = std::env::var(APP_IMAGE_ENV).with_context(|| {
            format!("{KUBECONFIG_ENV} is set, so {APP_IMAGE_ENV} must name the app image loaded into the cluster")
        })?;
        let yaml = std::fs::read_to_string(&kubeconfig)
            .with_context(|| format!("reading {KUBECONFIG_ENV}={}", kubeconfig.display()))?;
        let config = kube::Config::from_custom_kubeconfig(
            Kubeconfig::from_yaml(&yaml).context("parsing the kubeconfig")?,
            &KubeConfigOptions::default(),
        )
        .await
        .context("loading the kubeconfig")?;
        let client = Client::try_from(config).context("building a client")?;
        let cluster = TestCluster {
            client,
            kubeconfig,
            app_image,
            app_image_v2: std::env::var(APP_IMAGE_V2_ENV).ok(),
            broken_migration_image: std::env::var(BROKEN_MIGRATION_IMAGE_ENV).ok(),
            local: None,
        };
        cluster.apply_crd().await?;
        Ok(cluster)
    }

    async fn local(options: ClusterOptions) -> Result<Self> {
        init_logging();
        let app_binary = binaries::kumiko_app()?;
        let shared_postgres = if options.shared_postgres {
            Some(
                tokio::task::spawn_blocking(TempPostgres::start)
                    .await
                    .context("starting Postgres")?
                    .context("starting Postgres")?,
            )
        } else {
            None
        };
        let postgres = match &shared_postgres {
            Some(server) => PostgresSource::Url(server.superuser_url("postgres")),
            None => PostgresSource::Throwaway,
        };
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let kubeconfig = dir.path().join("kubeconfig");
        let broken_migration = write_broken_migration_script(dir.path(), &app_binary)?;
        let server = kube_sim::Server::start(kube_sim::Config {
            kubeconfig: Some(kubeconfig.clone()),
            ..kube_sim::Config::default()
        })
        .await
        .context("starting kube-sim")?;
        let controllers = Controllers::start_for(
            &server,
            ControllersConfig {
                // The broken-migration tag runs its script; every other tag of `kumiko-app` the binary.
                images: vec![
                    ImageMapping {
                        image: SIM_BROKEN_MIGRATION_IMAGE.to_owned(),
                        binary: broken_migration,
                    },
                    ImageMapping {
                        image: "kumiko-app".to_owned(),
                        binary: app_binary,
                    },
                ],
                postgres,
                instant: false,
                backoff_base: Duration::from_secs(1),
                ..ControllersConfig::default()
            },
        )
        .await
        .context("starting kube-sim's controllers")?;
        let client = Client::try_from(kube::Config::new(
            server.url().parse().context("kube-sim's URL")?,
        ))
        .context("building a client for kube-sim")?;
        let mut cluster = TestCluster {
            client,
            kubeconfig,
            app_image: SIM_APP_IMAGE.to_owned(),
            app_image_v2: Some(SIM_APP_IMAGE_V2.to_owned()),
            broken_migration_image: Some(SIM_BROKEN_MIGRATION_IMAGE.to_owned()),
            local: Some(LocalCluster {
                operators: Vec::new(),
                controllers: Some(controllers),
                server: Some(server),
                postgres: shared_postgres,
                _dir: dir,
            }),
        };
        cluster.apply_crd().await?;
        if !options.no_operator {
            cluster.start_operator("kumiko-e2e", false)?;
        }
        Ok(cluster)
    }

    /// Applies `crds/kumikoapp.yaml` (server-side) and waits until it is Established.
    async fn apply_crd(&self) -> Result<()> {
        let path = binaries::workspace_root().join("crds/kumikoapp.yaml");
        let yaml = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}: run `make crds`", path.display()))?;
        let crd: CustomResourceDefinition =
            serde_saphyr::from_str(&yaml).with_context(|| format!("parsing {}", path.display()))?;
        let name = crd.metadata.name.clone().context("the CRD has no name")?;
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        crds.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("applying the CRD {name}"))?;
        eventually("the KumikoApp CRD to be Established", SETUP_TIMEOUT, || {
            let crds = crds.clone();
            let name = name.clone();
            async move {
                let crd = crds.get(&name).await?;
                let established = crd
                    .status
                    .and_then(|status| status.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                Ok(established.then_some(()))
            }
        })
        .await
    }

    /// A client of the cluster.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The kubeconfig file of the cluster (for `kubectl`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Whether this is the in-process kube-sim (where pods and Services are reachable on
    /// loopback ports and Postgres on 127.0.0.1).
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    /// The app image.
    pub fn app_image(&self) -> &str {
        &self.app_image
    }

    /// A second tag of the app image (same behaviour), for image updates.
    pub fn app_image_v2(&self) -> Result<&str> {
        self.app_image_v2.as_deref().with_context(|| {
            format!(
                "{APP_IMAGE_V2_ENV} must name a second tag of the app image loaded into the cluster"
            )
        })
    }

    /// An image whose migration fails with [`BROKEN_MIGRATION_ERROR`] in its log.
    pub fn broken_migration_image(&self) -> Result<&str> {
        self.broken_migration_image.as_deref().with_context(|| {
            format!("{BROKEN_MIGRATION_IMAGE_ENV} must name an image whose `migrate apply` fails")
        })
    }

    /// The kube-sim server, when running locally.
    pub fn sim(&self) -> Option<&kube_sim::ServerHandle> {
        self.local.as_ref().and_then(|local| local.server.as_ref())
    }

    /// On kube-sim: starts an operator replica in-process as `identity`, campaigning for the
    /// Lease `default/kumiko-operator` when `leader_election`. On an existing cluster the
    /// operator's Deployment replaces killed pods by itself, so this does nothing.
    pub fn start_operator(&mut self, identity: &str, leader_election: bool) -> Result<()> {
        let client = self.client.clone();
        let Some(local) = self.local.as_mut() else {
            return Ok(());
        };
        let settings = RunSettings {
            http_addr: "127.0.0.1:0".parse().context("the operator's address")?,
            lease_name: "kumiko-operator".to_owned(),
            lease_namespace: "default".to_owned(),
            identity: identity.to_owned(),
            concurrency: 4,
            leader_election,
        };
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run_with(
            client,
            settings,
            Arc::new(PostgresRoles),
            Arc::new(Metrics::new()),
            stop_rx,
        ));
        local.operators.push(OperatorReplica {
            identity: identity.to_owned(),
            stop,
            task,
        });
        Ok(())
    }

    /// Kills the operator as a crash would. On kube-sim: the replica `identity` (its task is
    /// aborted mid-flight: nothing is released, no status is written on the way out). On an
    /// existing cluster: every pod of `KUMIKO_E2E_OPERATOR_NAMESPACE`, with grace period 0.
    pub async fn kill_operator(&mut self, identity: &str) -> Result<()> {
        let Some(local) = self.local.as_mut() else {
            let namespace = std::env::var(OPERATOR_NAMESPACE_ENV).with_context(|| {
                format!("{OPERATOR_NAMESPACE_ENV} must name the operator's namespace")
            })?;
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
            pods.delete_collection(
                &kube::api::DeleteParams {
                    grace_period_seconds: Some(0),
                    ..kube::api::DeleteParams::default()
                },
                &kube::api::ListParams::default(),
            )
            .await
            .with_context(|| format!("deleting the operator's pods in {namespace}"))?;
            return Ok(());
        };
        let index = local
            .operators
            .iter()
            .position(|replica| replica.identity == identity)
            .with_context(|| format!("no operator replica {identity}"))?;
        let replica = local.operators.remove(index);
        replica.task.abort();
        let _ = replica.task.await;
        Ok(())
    }

    /// The superuser URL of the shared Postgres ([`ClusterOptions::shared_postgres`]), for
    /// `database`.
    pub fn postgres_superuser_url(&self, database: &str) -> Option<String> {
        let local = self.local.as_ref()?;
        Some(local.postgres.as_ref()?.superuser_url(database))
    }

    /// Creates a namespace named `<prefix>-<pid>-<n>` (unique within and across test processes)
    /// and returns its name.
    pub async fn namespace(&self, prefix: &str) -> Result<String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let mut namespace = Namespace::default();
        namespace.metadata.name = Some(name.clone());
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(name)
    }

    /// GETs `path` on a pod's first container port; returns the HTTP status code. On kube-sim
    /// through the pod's loopback port; elsewhere through the API server's pod proxy (`kubectl
    /// get --raw`, which only tells 2xx from the rest).
    pub async fn pod_http_status(&self, pod: &Pod, path: &str) -> Result<u16> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        if self.is_local() {
            let port = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(POD_PORT_ANNOTATION))
                .with_context(|| format!("pod {name} has no {POD_PORT_ANNOTATION} annotation"))?;
            let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
                .await
                .with_context(|| format!("GET {path} on pod {name}"))?;
            return Ok(response.status().as_u16());
        }
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let port = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.containers.first())
            .and_then(|c| c.ports.as_ref())
            .and_then(|ports| ports.first())
            .map(|p| p.container_port)
            .with_context(|| format!("pod {name} declares no container port"))?;
        let raw = format!("/api/v1/namespaces/{namespace}/pods/{name}:{port}/proxy{path}");
        let output = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["get", "--raw", &raw])
            .output()
            .await
            .context("running kubectl get --raw")?;
        Ok(if output.status.success() { 200 } else { 503 })
    }

    /// The base URL (`http://127.0.0.1:PORT`) of a Service port, through kube-sim's proxy.
    pub async fn service_url(&self, namespace: &str, service: &str, port: u16) -> Result<String> {
        if !self.is_local() {
            bail!("reaching Services from the test is only implemented on kube-sim");
        }
        let services: Api<Service> = Api::namespaced(self.client.clone(), namespace);
        let annotation = format!("{PROXY_PORT_ANNOTATION_PREFIX}{port}");
        eventually(
            &format!("the proxy of Service {namespace}/{service}:{port}"),
            SETUP_TIMEOUT,
            || {
                let services = services.clone();
                let annotation = annotation.clone();
                async move {
                    Ok(services.get_opt(service).await?.and_then(|svc| {
                        svc.metadata
                            .annotations
                            .and_then(|a| a.get(&annotation).cloned())
                    }))
                }
            },
        )
        .await
        .map(|port| format!("http://127.0.0.1:{port}"))
    }

    /// Stops what the harness started: the operator (gracefully), the controllers (pod processes,
    /// throwaway Postgres servers), then kube-sim. Dropping the cluster does the same, abruptly.
    pub async fn shutdown(mut self) -> Result<()> {
        let Some(mut local) = self.local.take() else {
            return Ok(());
        };
        for replica in std::mem::take(&mut local.operators) {
            let _ = replica.stop.send(true);
            let identity = replica.identity;
            match tokio::time::timeout(SETUP_TIMEOUT, replica.task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => bail!("operator {identity} stopped with an error: {error}"),
                Ok(Err(error)) => bail!("operator {identity}'s task failed: {error}"),
                Err(_) => bail!("operator {identity} did not stop within 30s"),
            }
        }
        // Bounded: a connection that never closes must not hold the test (dropping what is
        // left kills the pod processes and aborts the server).
        if let Some(controllers) = local.controllers.take() {
            let _ = tokio::time::timeout(SETUP_TIMEOUT, controllers.shutdown()).await;
        }
        if let Some(server) = local.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), server.shutdown()).await;
        }
        if let Some(postgres) = local.postgres.take() {
            let _ = tokio::task::spawn_blocking(move || drop(postgres)).await;
        }
        Ok(())
    }
}

/// Writes the program behind [`SIM_BROKEN_MIGRATION_IMAGE`]: `migrate ...` prints
/// [`BROKEN_MIGRATION_ERROR`] and exits 1; anything else runs `app_binary`.
fn write_broken_migration_script(dir: &Path, app_binary: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("kumiko-app-broken-migration");
    let script = format!(
        "#!/bin/sh\n\
         case \" $* \" in\n\
         *\" migrate \"*)\n\
         \techo 'kumiko: applying migrations' >&2\n\
         \techo '{BROKEN_MIGRATION_ERROR}' >&2\n\
         \texit 1 ;;\n\
         esac\n\
         exec '{}' \"$@\"\n",
        app_binary.display()
    );
    std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))?;
    Ok(path)
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for replica in self.operators.drain(..) {
            let _ = replica.stop.send(true);
            replica.task.abort();
        }
        // Controllers' own Drop kills pod processes and removes throwaway Postgres servers.
        drop(self.controllers.take());
        drop(self.server.take());
        drop(self.postgres.take());
    }
}
