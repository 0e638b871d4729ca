//! A cluster for one test: kube-sim started in-process (the default), or an existing cluster named
//! by `KUMIKO_E2E_KUBECONFIG`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_sim::controllers::{Controllers, ControllersConfig, ImageMapping, PostgresSource};
use kumiko_operator::controller::leader::LeaseTimings;
use kumiko_operator::controller::metrics::Metrics;
use kumiko_operator::controller::roles_backend::PostgresRoles;
use kumiko_operator::controller::run::{RunSettings, init_logging, run_with};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::binaries;
use crate::postgres::{self, Reachable};
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

/// On kube-sim: an image whose `migrate` command fails and whose other commands run the app
/// (`kumiko-app-broken-migration`, the program the kind image runs too).
pub const SIM_BROKEN_MIGRATION_IMAGE: &str = "kumiko-app:broken-migration";
/// On an existing cluster: an image whose migration fails.
pub const BROKEN_MIGRATION_IMAGE_ENV: &str = "KUMIKO_E2E_BROKEN_MIGRATION_IMAGE";
/// Set to `1` by `scripts/private-hosts.sh` (nextest's wrapper of this suite): the test process
/// runs in a mount namespace of its own whose `/etc/hosts` is a private copy, so the in-process
/// kube-sim may write the Services' fully-qualified names into it.
pub const PRIVATE_ETC_HOSTS_ENV: &str = "KUMIKO_E2E_PRIVATE_ETC_HOSTS";

/// The hosts file the in-process kube-sim keeps the Services' names in, so that this process (the
/// harness and the in-process operator) resolves `<svc>.<ns>.svc` as a pod does: `/etc/hosts`,
/// only when [`PRIVATE_ETC_HOSTS_ENV`] says it is this process's own copy.
fn private_hosts_file() -> Result<PathBuf> {
    if std::env::var(PRIVATE_ETC_HOSTS_ENV).as_deref() != Ok("1") {
        bail!(
            "the e2e suite on the local cluster resolves Service names through a private /etc/hosts: \
             run it with `cargo nextest run -p kumiko-e2e` as root (the wrapper script \
             scripts/private-hosts.sh, configured in .config/nextest.toml, sets {PRIVATE_ETC_HOSTS_ENV}=1 \
             after mounting it), or set {KUBECONFIG_ENV} to test another cluster"
        );
    }
    Ok(PathBuf::from("/etc/hosts"))
}
/// The error line the broken-migration image prints (to find in the log tail); the same text as
/// in `src/bin/kumiko-app-broken-migration.rs`.
pub const BROKEN_MIGRATION_ERROR: &str =
    "migration 20990101000000 failed: relation \"widgets\" already exists";

/// The field manager the suite writes with.
pub const FIELD_MANAGER: &str = "kumiko-e2e";

/// How long a cluster-wide step (CRD established, namespace created) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The Lease the operator replicas elect a leader on (the chart's `leaseName`).
pub const OPERATOR_LEASE: &str = "kumiko-operator";
/// The namespace of the Lease on kube-sim (on an existing cluster: the operator's namespace).
const SIM_LEASE_NAMESPACE: &str = SIM_OPERATOR_NAMESPACE;
/// On kube-sim: the namespace the chart's ServiceAccount and leader-election Role live in.
pub const SIM_OPERATOR_NAMESPACE: &str = "kumiko-system";
/// The operator's ServiceAccount (the chart's default name for release `kumiko-operator`).
pub const OPERATOR_SERVICE_ACCOUNT: &str = "kumiko-operator";

/// Choices for the cluster of one test.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterOptions {
    /// On kube-sim: start no operator (the test starts its own with
    /// [`TestCluster::start_operator`]). Ignored on an existing cluster.
    pub no_operator: bool,
    /// On kube-sim: leave out the chart's ClusterRole rule that grants this resource (to see the
    /// operator report the 403). Ignored on an existing cluster.
    pub rbac_without: Option<&'static str>,
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
    /// The same client without kube-rs's retries of 503 and 429, for the proxy subresources,
    /// whose 503s are the upstream's answers.
    proxy_client: Client,
    kubeconfig: PathBuf,
    app_image: String,
    app_image_v2: Option<String>,
    broken_migration_image: Option<String>,
    local: Option<LocalCluster>,
}

/// What the harness started for a kube-sim run (dropped in reverse order of start).
struct LocalCluster {
    /// The operator's client: the chart's ServiceAccount, under the chart's RBAC.
    operator_client: Client,
    /// Whether the chart's RBAC was applied whole (its use is then worth recording).
    whole_rbac: bool,
    operators: Vec<OperatorReplica>,
    controllers: Option<Controllers>,
    server: Option<kube_sim::ServerHandle>,
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
        let client = Client::try_from(config.clone()).context("building a client")?;
        let proxy_client = without_retries(config)?;
        let cluster = TestCluster {
            client,
            proxy_client,
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
        let process_hosts_file = private_hosts_file()?;
        let app_binary = binaries::kumiko_app()?;
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let kubeconfig = dir.path().join("kubeconfig");
        let broken_migration = binaries::broken_migration_beside(dir.path(), &app_binary)?;
        let server = kube_sim::Server::start(kube_sim::Config {
            kubeconfig: Some(kubeconfig.clone()),
            // The Gateway API and the GatewayClass `kube-sim` of its simulated gateway
            // (e2e/tests/gateway.rs).
            preload_gateway_api: true,
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
                postgres: PostgresSource::Throwaway,
                instant: false,
                backoff_base: Duration::from_secs(1),
                // Resource metrics and autoscaler syncs every 5 s instead of Kubernetes' 15 s, so
                // the autoscaling scenario takes a minute rather than three.
                metric_resolution: Duration::from_secs(5),
                autoscaler_sync_period: Duration::from_secs(5),
                process_hosts_file: Some(process_hosts_file),
                ..ControllersConfig::default()
            },
        )
        .await
        .context("starting kube-sim's controllers")?;
        let config = server
            .client_config()
            .context("a client configuration for kube-sim")?;
        let client = Client::try_from(config.clone()).context("building a client for kube-sim")?;
        let operator_client =
            operator_identity(&client, &server, config.clone(), options.rbac_without).await?;
        let proxy_client = without_retries(config)?;
        let mut cluster = TestCluster {
            client,
            proxy_client,
            kubeconfig,
            app_image: SIM_APP_IMAGE.to_owned(),
            app_image_v2: Some(SIM_APP_IMAGE_V2.to_owned()),
            broken_migration_image: Some(SIM_BROKEN_MIGRATION_IMAGE.to_owned()),
            local: Some(LocalCluster {
                operator_client,
                whole_rbac: options.rbac_without.is_none(),
                operators: Vec::new(),
                controllers: Some(controllers),
                server: Some(server),
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

    /// Whether this is the in-process kube-sim (started by the harness).
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
    /// Lease [`TestCluster::operator_lease`] when `leader_election`. On an existing cluster the
    /// operator's Deployment replaces killed pods by itself, so this does nothing.
    pub fn start_operator(&mut self, identity: &str, leader_election: bool) -> Result<()> {
        let Some(local) = self.local.as_mut() else {
            return Ok(());
        };
        let client = local.operator_client.clone();
        let settings = RunSettings {
            http_addr: "127.0.0.1:0".parse().context("the operator's address")?,
            lease_name: OPERATOR_LEASE.to_owned(),
            lease_namespace: SIM_LEASE_NAMESPACE.to_owned(),
            cnpg_namespace: "cnpg-system".to_owned(),
            identity: identity.to_owned(),
            concurrency: 4,
            leader_election,
            lease_timings: LeaseTimings::default(),
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
            let namespace = operator_namespace()?;
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

    /// The Lease the operator replicas elect their leader on: `default/kumiko-operator` on
    /// kube-sim, `<KUMIKO_E2E_OPERATOR_NAMESPACE>/kumiko-operator` (the chart's `leaseName`, in
    /// the release namespace) on an existing cluster.
    pub fn operator_lease(&self) -> Result<Api<Lease>> {
        let namespace = if self.is_local() {
            SIM_LEASE_NAMESPACE.to_owned()
        } else {
            operator_namespace()?
        };
        Ok(Api::namespaced(self.client.clone(), &namespace))
    }

    /// The identity holding the operator's Lease now, if any (a released Lease has none).
    pub async fn operator_leader(&self) -> Result<Option<String>> {
        Ok(self
            .operator_lease()?
            .get_opt(OPERATOR_LEASE)
            .await
            .context("reading the operator's Lease")?
            .and_then(|lease| lease.spec)
            .and_then(|spec| spec.holder_identity)
            .filter(|holder| !holder.is_empty()))
    }

    /// Kills one operator replica as a crash would: on kube-sim the replica `identity` (see
    /// [`TestCluster::kill_operator`]); on an existing cluster the pod named `identity` (the
    /// chart's replicas hold the Lease under their pod names), deleted with grace period 0.
    pub async fn kill_operator_replica(&mut self, identity: &str) -> Result<()> {
        if self.is_local() {
            return self.kill_operator(identity).await;
        }
        let namespace = operator_namespace()?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        pods.delete(
            identity,
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            },
        )
        .await
        .with_context(|| format!("deleting the operator pod {namespace}/{identity}"))?;
        Ok(())
    }

    /// A Postgres URI from a Secret of `namespace`, made reachable from the test process: as it
    /// is when its host is an address (kube-sim), else through a tunnel over the API server's
    /// portforward to a ready pod of the Service the host names (`<cluster>-rw`, as on kind).
    pub async fn postgres(&self, namespace: &str, uri: &str) -> Result<Reachable> {
        postgres::reachable(&self.client, namespace, uri).await
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

    /// GETs `path` on a pod's first container port through the API server's pod proxy
    /// (`pods/NAME:PORT/proxy/PATH`); returns the pod's HTTP status code.
    pub async fn pod_http_status(&self, pod: &Pod, path: &str) -> Result<u16> {
        let name = pod.metadata.name.clone().unwrap_or_default();
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
        let (status, _) = self.proxy_get(&raw).await?;
        Ok(status)
    }

    /// GETs `path` on port `port` of Service `namespace/service` through the API server's Service
    /// proxy (`services/NAME:PORT/proxy/PATH`, to a ready endpoint); returns the status code and
    /// the body as the endpoint answered them (a 503 with a Status when no endpoint is ready).
    pub async fn service_get(
        &self,
        namespace: &str,
        service: &str,
        port: u16,
        path: &str,
    ) -> Result<(u16, String)> {
        self.proxy_get(&format!(
            "/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy{path}"
        ))
        .await
    }

    /// GETs an API path; returns the status code and the body, whatever the status.
    async fn proxy_get(&self, path: &str) -> Result<(u16, String)> {
        let request = hyper::Request::get(path)
            .body(kube::client::Body::from(Vec::new()))
            .with_context(|| format!("building GET {path}"))?;
        self.proxy_send(request, &format!("GET {path}")).await
    }

    /// Sends `request` to the API server; returns the status code and the body, whatever the
    /// status.
    async fn proxy_send(
        &self,
        request: hyper::Request<kube::client::Body>,
        what: &str,
    ) -> Result<(u16, String)> {
        let response = self
            .proxy_client
            .send(request)
            .await
            .with_context(|| what.to_owned())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect_bytes()
            .await
            .with_context(|| format!("reading the body of {what}"))?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// Stops what the harness started: the operator (gracefully), the controllers (pod processes,
    /// throwaway Postgres servers), then kube-sim. Dropping the cluster does the same, abruptly.
    pub async fn shutdown(mut self) -> Result<()> {
        let Some(mut local) = self.local.take() else {
            return Ok(());
        };
        if local.whole_rbac
            && let Some(server) = &local.server
        {
            record_rbac_use(server)?;
        }
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
        Ok(())
    }
}

/// The operator's namespace on an existing cluster (`KUMIKO_E2E_OPERATOR_NAMESPACE`).
fn operator_namespace() -> Result<String> {
    std::env::var(OPERATOR_NAMESPACE_ENV)
        .with_context(|| format!("{OPERATOR_NAMESPACE_ENV} must name the operator's namespace"))
}

/// A client that returns 503 and 429 answers as they are (kube-rs retries them by default, up
/// to 15 times with a growing back-off).
fn without_retries(mut config: kube::Config) -> Result<Client> {
    config.default_retry = false;
    Client::try_from(config).context("building a client without retries")
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
    }
}

/// Where the harness writes what the operator's ServiceAccount was allowed and refused, one JSON
/// file per test (`scripts/checks/rbac-use.sh` compares their union with the chart's rules).
pub const RBAC_USE_DIR_ENV: &str = "KUMIKO_RBAC_USE_DIR";

/// Writes the operator's authorization decisions into [`RBAC_USE_DIR_ENV`], if it is set.
fn record_rbac_use(server: &kube_sim::ServerHandle) -> Result<()> {
    let Some(dir) = std::env::var_os(RBAC_USE_DIR_ENV) else {
        return Ok(());
    };
    let operator =
        format!("system:serviceaccount:{SIM_OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}");
    let decisions: Vec<_> = server
        .cluster()
        .authorization_log()
        .into_iter()
        .filter(|decided| decided.user == operator)
        .collect();
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join(format!(
        "{}-{}.json",
        std::process::id(),
        std::thread::current()
            .name()
            .unwrap_or("test")
            .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    ));
    std::fs::write(&file, serde_json::to_vec_pretty(&decisions)?)
        .with_context(|| format!("writing {}", file.display()))
}

/// Gives the operator the chart's identity on kube-sim: the release namespace, the chart's
/// ServiceAccount, roles and bindings (less the rule for `without`, if given), and a client that
/// authenticates with a token of that ServiceAccount.
async fn operator_identity(
    admin: &Client,
    server: &kube_sim::ServerHandle,
    mut config: kube::Config,
    without: Option<&str>,
) -> Result<Client> {
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(SIM_OPERATOR_NAMESPACE.to_owned());
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .with_context(|| format!("creating namespace {SIM_OPERATOR_NAMESPACE}"))?;
    let mut objects = crate::chart::identity_manifests(SIM_OPERATOR_NAMESPACE)?;
    if let Some(resource) = without {
        crate::chart::without_rule(&mut objects, resource);
    }
    crate::chart::apply(admin, SIM_OPERATOR_NAMESPACE, &objects).await?;
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(admin.clone(), SIM_OPERATOR_NAMESPACE);
    let uid = accounts
        .get(OPERATOR_SERVICE_ACCOUNT)
        .await
        .with_context(|| format!("reading the chart's ServiceAccount {OPERATOR_SERVICE_ACCOUNT}"))?
        .metadata
        .uid
        .context("the ServiceAccount has no uid")?;
    let token = server
        .cluster()
        .authenticator()
        .issue_service_account_token(SIM_OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, &uid);
    config.headers = vec![(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the ServiceAccount token")?,
    )];
    Client::try_from(config).context("building the operator's client")
}
