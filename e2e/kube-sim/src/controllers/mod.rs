//! Simulated controllers: what a cluster's nodes and controllers would do, run as kube-rs clients of
//! the sim over loopback HTTP in the same process.
//!
//! - [`kubelet`]: runs the containers of pods as local processes where the image maps to a local
//!   binary, runs their probes for real, keeps pod status, writes their logs, and terminates them
//!   with SIGTERM then SIGKILL.
//! - [`deployment`]: Deployments through ReplicaSets: rolling updates with maxSurge and
//!   maxUnavailable, Recreate, scaling, pause, revisions and `revisionHistoryLimit`, the status
//!   and conditions Kubernetes reports.
//! - [`replicaset`]: ReplicaSets that own their pods: creation, deletion ranking, status.
//! - [`job`]: Jobs with backoffLimit, activeDeadlineSeconds, ttlSecondsAfterFinished and the
//!   terminal conditions of Kubernetes 1.31+.
//! - [`cnpg`]: CloudNativePG `Cluster`s backed by a real Postgres: the `-app`/`-superuser`
//!   Secrets, the `-rw`/`-ro`/`-r` Services, instance pods that publish the real Postgres port
//!   (so the Services have endpoints and portforward reaches Postgres), and a healthy status.
//! - [`service_proxy`]: a local TCP proxy per Service port at the Service's ClusterIP (a loopback
//!   address), as kube-proxy would provide, and the Services' names in [`dns`]'s hosts files,
//!   which the kubelet mounts on each container's `/etc/hosts`.
//! - [`ingress`]: a simulated ingress controller (the default IngressClass `kube-sim`): one loopback
//!   port that routes HTTP by `Host` header and path to the ready endpoints of the Service an
//!   Ingress names, published in each Ingress's `status.loadBalancer.ingress`.
//! - [`gateway`]: a simulated Gateway API implementation (the GatewayClass `kube-sim`, installed
//!   with the Gateway API by `--gateway-api`): GatewayClass, Gateway and HTTPRoute status
//!   (`Accepted`, `Programmed`, `ResolvedRefs`, attached routes) and one loopback listener per
//!   Gateway listener port routing by `Host` header and path to the backend Services' ready
//!   endpoints.
//! - [`admission`] and [`quota`]: LimitRange and ResourceQuota admission of pods, and quota status.
//! - [`volumes`]: PersistentVolumeClaims bound to a directory each, whose deletion deletes it.
//! - [`recorder`]: the Events of the kubelet and the scheduler, counted as client-go counts them.
//! - [`autoscaler`]: HorizontalPodAutoscalers on the resource metrics, which the kubelet samples
//!   from the pod processes ([`kubelet::usage`]) and the API serves as `metrics.k8s.io`
//!   ([`crate::pod_metrics`]).
//!
//! Every controller has an instant mode ([`ControllersConfig::instant`]) for benchmarks: pods run no
//! process and are Ready (or Succeeded, for run-to-completion pods) at once, and no delay applies.
//!
//! # Starting them
//!
//! In-process: [`Controllers::start_for`] with a [`crate::ServerHandle`] (registers the pod
//! admission hook and sends container output to the server's log store). The `kube-sim` binary
//! starts them unless `--no-controllers`, with these flags ([`ControllerArgs`]):
//! `--image NAME=PATH` (repeatable), `--stand-in-image PATTERN` (repeatable), `--state-dir DIR`,
//! `--postgres URL` or `--start-postgres`, `--instant`,
//! `--backoff-seconds S` (CrashLoopBackOff and Job back-off base, 10 by default), `--hosts-file
//! PATH` (a hosts file to keep the Services' fully-qualified names in, see [`dns`]).
//!
//! # What they publish
//!
//! - pods: `status.podIP` and `status.hostIP` `127.0.0.1`, `spec.nodeName` `kube-sim` (set at
//!   admission), annotations [`POD_PORT_ANNOTATION`] (`kube-sim.kumiko.so/port`, the first
//!   container's `PORT`) and `kube-sim.kumiko.so/port-CONTAINER` for each container;
//! - Ingresses (class unset or `kube-sim`): `status.loadBalancer.ingress[0]` `{ip: 127.0.0.1,
//!   ports: [{port: PORT, protocol: TCP}]}`, the simulated ingress's loopback port;
//! - Gateways (of the class `kube-sim`): `status.addresses[0]` `{type: IPAddress, value:
//!   127.0.0.1}` and the annotation `kube-sim.kumiko.so/listener-port-<spec port>` (the loopback
//!   port of that listener port);
//! - Services: `kube-sim.kumiko.so/proxy-port-PORT` ([`PROXY_PORT_ANNOTATION_PREFIX`]) per proxied
//!   port, and `status.loadBalancer.ingress[0].ip: 127.0.0.1` for `LoadBalancer` Services;
//! - CNPG Secrets as CloudNativePG 1.27 writes them (host `<cluster>-rw`, port 5432); CNPG
//!   instance pods
//!   `<cluster>-N` on node `kube-sim-cnpg` (no kubelet runs them) whose container port 5432 is the
//!   real Postgres port.
//!
//! # Known differences from Kubernetes
//!
//! - Volumes are not mounted into pod processes: mount paths cannot be honoured for local
//!   processes (a claim's volume holds data only for the CNPG simulation's Postgres); each pod gets a
//!   temporary directory as working directory, `HOME` and `TMPDIR` (which stands in for an
//!   `emptyDir` at `/tmp`). The environment holds only `PATH`, `LANG`, `HOME`, `TMPDIR`,
//!   `HOSTNAME` (the pod name), the spec's variables and `PORT`; no Service link variables.
//! - Every container port and probe port is the container's one loopback `PORT`.
//! - NetworkPolicy objects are stored and validated (`crate::network_policy`, after
//!   `ValidateNetworkPolicySpec`) but not enforced: every pod reaches every other, whatever the
//!   policies say (the operator's policies are checked against the pods' labels by its own tests,
//!   and on a real cluster by its CNI).
//! - The simulated gateway serves HTTP listeners only (no TLS), path matches only, no
//!   ReferenceGrant and no `allowedRoutes` namespace `Selector` (see [`gateway`]).
//! - Lifecycle hooks (`postStart`, `preStop`), gRPC and HTTPS probes, sidecar init containers,
//!   Job `completionMode: Indexed`, `podFailurePolicy` and `successPolicy`, and quota scopes are
//!   not implemented.
//! - Job pods carry no tracking finalizer: a Job pod deleted before it finished is not counted as
//!   failed.

pub mod admission;
pub mod autoscaler;
pub mod cnpg;
pub mod deployment;
pub mod dns;
pub mod error;
pub mod gateway;
pub mod ingress;
pub mod job;
pub mod kubelet;
pub mod names;
pub mod pods;
pub mod quantity;
pub mod quota;
pub mod recorder;
pub mod replicaset;
pub mod service_proxy;
pub mod volumes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use error::{Error, Result};

/// The annotation on a pod that holds the loopback port of its first container (`PORT`).
pub const POD_PORT_ANNOTATION: &str = "kube-sim.kumiko.so/port";
/// Prefix of the per-container port annotations: `kube-sim.kumiko.so/port-CONTAINER`.
pub const CONTAINER_PORT_ANNOTATION_PREFIX: &str = "kube-sim.kumiko.so/port-";
/// Prefix of the Service annotations that publish the proxy of each Service port:
/// `kube-sim.kumiko.so/proxy-port-SERVICEPORT` = the loopback port of the proxy.
pub const PROXY_PORT_ANNOTATION_PREFIX: &str = "kube-sim.kumiko.so/proxy-port-";
/// The field manager the simulated controllers write with.
pub const FIELD_MANAGER: &str = "kube-sim-controllers";

/// Where the lines a container writes go: the API server's pod-log store.
pub trait PodLogSink: Send + Sync {
    /// Marks a container as started: its log exists from now on, possibly empty.
    fn start(&self, _namespace: &str, _pod: &str, _container: &str) {}
    /// Appends one chunk of output (normally one line, with its newline) of a container.
    fn append(&self, namespace: &str, pod: &str, container: &str, chunk: &[u8]);
    /// A container's process started (`Some`, how to exec beside it) or its process `pid`
    /// ended (`None`): what `pods/exec` needs.
    fn running(
        &self,
        _namespace: &str,
        _pod: &str,
        _container: &str,
        _pid: i32,
        _target: Option<crate::connect::exec::ExecTarget>,
    ) {
    }
}

/// A sink that drops every line (for tests that do not read logs).
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardLogs;

impl PodLogSink for DiscardLogs {
    fn append(&self, _namespace: &str, _pod: &str, _container: &str, _chunk: &[u8]) {}
}

/// The API server's pod-log store, as the kubelet's sink.
#[derive(Clone)]
pub struct ClusterLogs(pub Arc<crate::Cluster>);

impl PodLogSink for ClusterLogs {
    fn start(&self, namespace: &str, pod: &str, container: &str) {
        self.0.pod_logs().start(namespace, pod, container);
    }

    fn append(&self, namespace: &str, pod: &str, container: &str, chunk: &[u8]) {
        self.0.pod_logs().append(namespace, pod, container, chunk);
    }

    fn running(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        pid: i32,
        target: Option<crate::connect::exec::ExecTarget>,
    ) {
        let running = self.0.running_containers();
        match target {
            Some(target) => running.started(namespace, pod, container, target),
            None => running.stopped(namespace, pod, container, pid),
        }
    }
}

/// A client of an in-process sim, as its admin (over HTTPS, with the admin token).
pub fn client_for(server: &crate::ServerHandle) -> Result<kube::Client> {
    let invalid = |reason: String| Error::InvalidOption {
        option: "server URL",
        value: server.url().to_owned(),
        reason,
    };
    let mut config = server
        .client_config()
        .map_err(|error| invalid(error.to_string()))?;
    config.default_namespace = "default".to_owned();
    kube::Client::try_from(config).map_err(|source| Error::Kube {
        action: format!("building a client for {}", server.url()),
        source,
    })
}

/// Where CNPG Clusters get their Postgres from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PostgresSource {
    /// No Postgres: CNPG Clusters get their Secrets and Services but no database, and nothing is
    /// created (instant mode only; otherwise Clusters stay unhealthy with a message).
    #[default]
    None,
    /// An existing server, by its admin URL (`postgres://USER:PASSWORD@HOST:PORT/DB`), shared by
    /// every Cluster.
    Url(String),
    /// A throwaway server per Cluster, started with `kumiko-testkit`, removed when the Cluster is
    /// deleted or the sim stops.
    Throwaway,
}

/// One `--image NAME=PATH` mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageMapping {
    /// The image reference as pods name it (`kumiko-app:dev`), or a repository without tag or
    /// digest (`kumiko-app`), which then matches every tag and digest of it.
    pub image: String,
    /// The local binary that runs for it.
    pub binary: PathBuf,
}

impl std::str::FromStr for ImageMapping {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidOption {
            option: "--image",
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        let (image, binary) = value.split_once('=').ok_or_else(|| {
            invalid("expected NAME=PATH, e.g. kumiko-app:dev=target/debug/kumiko-app")
        })?;
        if image.trim().is_empty() {
            return Err(invalid("the image name before `=` is empty"));
        }
        if binary.trim().is_empty() {
            return Err(invalid("the binary path after `=` is empty"));
        }
        Ok(ImageMapping {
            image: image.trim().to_owned(),
            binary: PathBuf::from(binary.trim()),
        })
    }
}

/// The binary an image runs as, if it is mapped: an exact match first, then a mapping without
/// tag or digest that names the image's repository.
pub fn binary_for_image<'a>(mappings: &'a [ImageMapping], image: &str) -> Option<&'a Path> {
    if let Some(mapping) = mappings.iter().find(|mapping| mapping.image == image) {
        return Some(&mapping.binary);
    }
    let repository = image_repository(image);
    mappings
        .iter()
        .find(|mapping| mapping.image == repository)
        .map(|mapping| mapping.binary.as_path())
}

/// Whether `image` is a declared stand-in (`--stand-in-image`): a pattern naming the image
/// exactly, its repository without tag or digest (matching every tag), or ending in `*` (a prefix).
pub fn is_stand_in(patterns: &[String], image: &str) -> bool {
    let repository = image_repository(image);
    patterns
        .iter()
        .any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => image.starts_with(prefix),
            None => pattern == image || pattern == repository,
        })
}

/// The image reference without its tag and digest (`host:5000/app:1@sha256:..` → `host:5000/app`).
fn image_repository(image: &str) -> &str {
    let without_digest = image.split_once('@').map_or(image, |(name, _)| name);
    let last_slash = without_digest.rfind('/').map_or(0, |index| index + 1);
    match without_digest[last_slash..].rfind(':') {
        Some(colon) => &without_digest[..last_slash + colon],
        None => without_digest,
    }
}

/// The controllers' flags of the `kube-sim` binary.
#[derive(Debug, Clone, clap::Args)]
pub struct ControllerArgs {
    /// Run pods whose image is NAME as the local binary PATH (repeatable), e.g.
    /// `kumiko-app:dev=target/debug/kumiko-app`. A NAME without tag matches every tag.
    #[arg(long = "image", value_name = "NAME=PATH")]
    pub images: Vec<ImageMapping>,
    /// Run pods whose image matches PATTERN as stand-ins (repeatable): no process, Running at
    /// once, Ready after the readiness probe's initial delay, run-to-completion containers exit 0.
    /// PATTERN is an image (`nginx:1.27`), a repository matching every tag (`nginx`), or a prefix
    /// ending in `*`. An image neither mapped nor a stand-in fails to pull (`ImagePullBackOff`),
    /// as an image that does not exist does on a real cluster.
    #[arg(long = "stand-in-image", value_name = "PATTERN")]
    pub stand_in_images: Vec<String>,
    /// The directory kube-sim keeps volumes in (`volumes/<claim uid>`); by default a temporary
    /// directory removed when it stops.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The admin URL of an existing Postgres that CNPG Clusters use
    /// (`postgres://postgres:PASSWORD@127.0.0.1:5432/postgres`).
    #[arg(long, value_name = "URL", conflicts_with = "start_postgres")]
    pub postgres: Option<String>,
    /// Start a throwaway Postgres for each CNPG Cluster (needs the Postgres binaries; `make deps`).
    #[arg(long)]
    pub start_postgres: bool,
    /// Instant mode, for benchmarks: no processes, no probes, no delays; pods are Ready at once.
    #[arg(long)]
    pub instant: bool,
    /// The first delay of CrashLoopBackOff and of a Job's pod-failure back-off, in seconds
    /// (Kubernetes: 10, doubling up to 300).
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub backoff_seconds: f64,
    /// Serve the API only, without any simulated controller.
    #[arg(long)]
    pub no_controllers: bool,
    /// How often the kubelet samples each container's CPU and memory for the resource metrics
    /// API (`metrics.k8s.io`), in seconds: metrics-server's `--metric-resolution` (15 by default).
    #[arg(long, value_name = "SECONDS", default_value_t = 15.0)]
    pub metric_resolution: f64,
    /// How often the HorizontalPodAutoscaler controller looks at every autoscaler, in seconds:
    /// kube-controller-manager's `--horizontal-pod-autoscaler-sync-period` (15 by default).
    #[arg(long, value_name = "SECONDS", default_value_t = 15.0)]
    pub horizontal_pod_autoscaler_sync_period: f64,
    /// A hosts file to keep every Service's fully-qualified names in (`<svc>.<ns>.svc`, ...),
    /// for a program run outside the pods in a mount namespace where this file is bind-mounted
    /// on `/etc/hosts` (the demo's operator); its own lines are kept. Never the machine's
    /// `/etc/hosts`.
    #[arg(long, value_name = "PATH")]
    pub hosts_file: Option<PathBuf>,
}

impl ControllerArgs {
    /// The configuration these flags describe, with relative binary paths made absolute against
    /// the current directory.
    pub fn to_config(&self, log_sink: Arc<dyn PodLogSink>) -> Result<ControllersConfig> {
        if !(self.backoff_seconds.is_finite() && self.backoff_seconds >= 0.0) {
            return Err(Error::InvalidOption {
                option: "--backoff-seconds",
                value: self.backoff_seconds.to_string(),
                reason: "must be a number of seconds, 0 or more".to_owned(),
            });
        }
        for (option, seconds) in [
            ("--metric-resolution", self.metric_resolution),
            (
                "--horizontal-pod-autoscaler-sync-period",
                self.horizontal_pod_autoscaler_sync_period,
            ),
        ] {
            if !(seconds.is_finite() && seconds >= 0.1) {
                return Err(Error::InvalidOption {
                    option,
                    value: seconds.to_string(),
                    reason: "must be a number of seconds, 0.1 or more".to_owned(),
                });
            }
        }
        let cwd = std::env::current_dir().map_err(|source| Error::Io {
            action: "reading the current directory".to_owned(),
            source,
        })?;
        let images = self
            .images
            .iter()
            .map(|mapping| ImageMapping {
                image: mapping.image.clone(),
                binary: cwd.join(&mapping.binary),
            })
            .collect();
        let hosts_file = self.hosts_file.as_ref().map(|path| cwd.join(path));
        if let Some(path) = &hosts_file
            && std::fs::canonicalize(path).ok().as_deref() == Some(Path::new("/etc/hosts"))
        {
            return Err(Error::InvalidOption {
                option: "--hosts-file",
                value: path.display().to_string(),
                reason:
                    "is the machine's /etc/hosts: give a copy, and bind-mount it on /etc/hosts \
                         in the mount namespace of the program that needs the names"
                        .to_owned(),
            });
        }
        let postgres = match (&self.postgres, self.start_postgres) {
            (Some(url), _) => PostgresSource::Url(url.clone()),
            (None, true) => PostgresSource::Throwaway,
            (None, false) => PostgresSource::None,
        };
        Ok(ControllersConfig {
            images,
            stand_in_images: self.stand_in_images.clone(),
            state_dir: self.state_dir.as_ref().map(|dir| cwd.join(dir)),
            postgres,
            instant: self.instant,
            backoff_base: Duration::from_secs_f64(self.backoff_seconds),
            metric_resolution: Duration::from_secs_f64(self.metric_resolution),
            autoscaler_sync_period: Duration::from_secs_f64(
                self.horizontal_pod_autoscaler_sync_period,
            ),
            log_sink,
            process_hosts_file: hosts_file,
            api_access: None,
        })
    }
}

/// What the simulated controllers need to know.
#[derive(Clone)]
pub struct ControllersConfig {
    /// Images that run as local binaries.
    pub images: Vec<ImageMapping>,
    /// Patterns of images that run as stand-ins ([`is_stand_in`]); any other unmapped image fails
    /// to pull.
    pub stand_in_images: Vec<String>,
    /// Where volumes live ([`volumes::Volumes`]); `None`: a temporary directory.
    pub state_dir: Option<PathBuf>,
    /// Where CNPG Clusters get their Postgres.
    pub postgres: PostgresSource,
    /// Instant mode (benchmarks).
    pub instant: bool,
    /// The first delay of CrashLoopBackOff and of a Job's pod-failure back-off (10s in Kubernetes).
    pub backoff_base: Duration,
    /// How often containers' CPU and memory are sampled for `metrics.k8s.io` (15s, as
    /// metrics-server's default resolution).
    pub metric_resolution: Duration,
    /// How often the HorizontalPodAutoscaler controller runs (15s in Kubernetes).
    pub autoscaler_sync_period: Duration,
    /// Where container output goes.
    pub log_sink: Arc<dyn PodLogSink>,
    /// The hosts file of this process, to receive every Service's fully-qualified names
    /// ([`dns`]): only ever `/etc/hosts` of a private mount namespace (the e2e harness's), never
    /// the machine's.
    pub process_hosts_file: Option<PathBuf>,
    /// How pods reach the API server, and who issues their ServiceAccount tokens (set by
    /// [`Controllers::start_for`]; without it pods get no token and no `KUBERNETES_SERVICE_*`).
    pub api_access: Option<ApiAccess>,
}

/// What the kubelet gives a pod to reach the API server as its ServiceAccount: the address
/// (`KUBERNETES_SERVICE_HOST`/`_PORT`), the CA (`ca.crt`) and the token issuer.
#[derive(Clone)]
pub struct ApiAccess {
    /// The in-process server, whose authenticator issues ServiceAccount tokens.
    pub cluster: Arc<crate::Cluster>,
    /// The API server's host (an address its serving certificate names).
    pub host: String,
    /// The API server's port.
    pub port: u16,
    /// The CA certificate, PEM.
    pub ca_pem: String,
}

impl std::fmt::Debug for ControllersConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let postgres = match &self.postgres {
            PostgresSource::None => "none",
            PostgresSource::Url(_) => "url (redacted)",
            PostgresSource::Throwaway => "throwaway",
        };
        formatter
            .debug_struct("ControllersConfig")
            .field("images", &self.images)
            .field("stand_in_images", &self.stand_in_images)
            .field("state_dir", &self.state_dir)
            .field("postgres", &postgres)
            .field("instant", &self.instant)
            .field("backoff_base", &self.backoff_base)
            .finish_non_exhaustive()
    }
}

impl Default for ControllersConfig {
    fn default() -> Self {
        ControllersConfig {
            images: Vec::new(),
            stand_in_images: Vec::new(),
            state_dir: None,
            postgres: PostgresSource::None,
            instant: false,
            backoff_base: Duration::from_secs(10),
            metric_resolution: Duration::from_secs(15),
            autoscaler_sync_period: Duration::from_secs(15),
            log_sink: Arc::new(DiscardLogs),
            process_hosts_file: None,
            api_access: None,
        }
    }
}

/// The running controllers. Dropping it stops them and kills every pod process.
pub struct Controllers {
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    kubelet: kubelet::Kubelet,
    cnpg: cnpg::CnpgController,
    volumes: Arc<volumes::Volumes>,
}

impl Controllers {
    /// Starts every controller against the API server `client` talks to.
    pub async fn start(client: kube::Client, config: ControllersConfig) -> Result<Self> {
        let shutdown = CancellationToken::new();
        let hosts = Arc::new(dns::HostsFiles::new(config.process_hosts_file.clone())?);
        let volumes = Arc::new(volumes::Volumes::new(config.state_dir.as_deref())?);
        let config = Arc::new(config);
        let mut tasks = Vec::new();
        let recorder = if config.instant {
            recorder::Recorder::disabled()
        } else {
            let (recorder, task) = recorder::Recorder::start(client.clone());
            tasks.push(task);
            recorder
        };
        let kubelet = kubelet::Kubelet::new(
            client.clone(),
            config.clone(),
            hosts.clone(),
            recorder.clone(),
        );
        let cnpg = cnpg::CnpgController::new(
            client.clone(),
            config.clone(),
            volumes.clone(),
            recorder.clone(),
        )
        .await?;
        tasks.extend([
            tokio::spawn(kubelet.clone().run(shutdown.clone())),
            tokio::spawn(deployment::run(
                client.clone(),
                config.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(replicaset::run(
                client.clone(),
                config.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(job::run(client.clone(), config.clone(), shutdown.clone())),
            tokio::spawn(cnpg.clone().run(shutdown.clone())),
            tokio::spawn(service_proxy::run(client.clone(), hosts, shutdown.clone())),
            tokio::spawn(ingress::run(client.clone(), shutdown.clone())),
            tokio::spawn(gateway::run(client.clone(), shutdown.clone())),
            tokio::spawn(volumes::run(
                client.clone(),
                config.clone(),
                volumes.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(quota::run(client.clone(), config.clone(), shutdown.clone())),
            tokio::spawn(autoscaler::run(
                client,
                config.clone(),
                recorder.clone(),
                shutdown.clone(),
            )),
        ]);
        if let (Some(access), false) = (&config.api_access, config.instant) {
            tasks.push(tokio::spawn(kubelet::usage::run_sampler(
                access.cluster.clone(),
                config.metric_resolution,
                shutdown.clone(),
            )));
        }
        Ok(Controllers {
            shutdown,
            tasks,
            kubelet,
            cnpg,
            volumes,
        })
    }

    /// Starts every controller against an in-process server: registers pod admission (LimitRange,
    /// ResourceQuota, binding to the node) and sends container output to the server's log store.
    pub async fn start_for(
        server: &crate::ServerHandle,
        mut config: ControllersConfig,
    ) -> Result<Self> {
        server
            .cluster()
            .admission()
            .register(Arc::new(quota::PodAdmission { bind_to_node: true }));
        server
            .cluster()
            .admission()
            .register(Arc::new(volumes::ClaimAdmission));
        config.log_sink = Arc::new(ClusterLogs(server.cluster().clone()));
        config.api_access = Some(ApiAccess {
            cluster: server.cluster().clone(),
            host: server.addr().ip().to_string(),
            port: server.addr().port(),
            ca_pem: server.credentials().ca_pem.clone(),
        });
        let client = client_for(server)?;
        Self::start(client, config).await
    }

    /// Stops every controller: pod processes get SIGKILL, throwaway Postgres servers are removed.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    async fn stop(&mut self) {
        self.shutdown.cancel();
        self.kubelet.kill_all().await;
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
        self.cnpg.stop_all().await;
        let volumes = self.volumes.clone();
        let _ = tokio::task::spawn_blocking(move || volumes.detach_all_now()).await;
    }
}

impl Drop for Controllers {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.kubelet.kill_all_now();
        for task in &self.tasks {
            task.abort();
        }
        self.cnpg.stop_all_now();
        self.volumes.detach_all_now();
    }
}

/// Labels as a label-selector string (`a=b,c=d`), for list calls.
pub(crate) fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mappings() -> Vec<ImageMapping> {
        vec![
            "kumiko-app:dev=target/debug/kumiko-app"
                .parse()
                .expect("mapping"),
            "sim-pod=/bin/sim-pod".parse().expect("mapping"),
        ]
    }

    #[test]
    fn image_mapping_needs_name_and_path() {
        let error = "kumiko-app".parse::<ImageMapping>().expect_err("no =");
        assert!(error.to_string().contains("NAME=PATH"), "{error}");
        assert!("=x".parse::<ImageMapping>().is_err());
        assert!("x=".parse::<ImageMapping>().is_err());
    }

    #[test]
    fn exact_image_matches_and_untagged_mapping_matches_every_tag() {
        let mappings = mappings();
        assert_eq!(
            binary_for_image(&mappings, "kumiko-app:dev"),
            Some(Path::new("target/debug/kumiko-app"))
        );
        assert_eq!(binary_for_image(&mappings, "kumiko-app:other"), None);
        assert_eq!(
            binary_for_image(&mappings, "sim-pod:1.2"),
            Some(Path::new("/bin/sim-pod"))
        );
        assert_eq!(
            binary_for_image(&mappings, "sim-pod@sha256:abcd"),
            Some(Path::new("/bin/sim-pod"))
        );
        assert_eq!(binary_for_image(&mappings, "registry:5000/sim-pod:1"), None);
    }

    #[test]
    fn repository_keeps_registry_port() {
        assert_eq!(
            image_repository("host:5000/app:1@sha256:00"),
            "host:5000/app"
        );
        assert_eq!(image_repository("host:5000/app"), "host:5000/app");
        assert_eq!(image_repository("app"), "app");
    }
}
