//! One container of a pod: its process, its probes, its restarts and its termination.
//!
//! Rules followed (Kubernetes documentation, "Pod Lifecycle" and "Container restart policy"):
//! - `restartPolicy: Always` restarts a container whenever it exits, `OnFailure` when it exits
//!   with a non-zero code, `Never` never; init containers restart on failure unless the policy is
//!   `Never`;
//! - restarts back off exponentially: the first restart is immediate, then the delay starts at
//!   the back-off base (10s in Kubernetes) and doubles up to five minutes (`CrashLoopBackOff`);
//! - termination sends SIGTERM to the container's main process (a container's PID 1), waits
//!   the grace period, then sends SIGKILL (here to the whole process group);
//! - a failed startup or liveness probe kills the container the same way (the probe's own
//!   `terminationGracePeriodSeconds` applies when set) and the restart policy decides what follows.
//!
//! Images ("Images", "Image pull policy"; the kubelet's image manager): a container's image is
//! a local binary (`--image`), a declared stand-in (`--stand-in-image`), or does not exist. An
//! image that exists is "pulled" before each start: `Pulling` and `Pulled` ("Successfully
//! pulled image ...") when `imagePullPolicy` is `Always`, else `Pulled` ("Container image ...
//! already present on machine"). An image that does not exist fails to pull: the container
//! waits in `ErrImagePull` (Events `Pulling`, `Failed` "Failed to pull image ...", `Failed`
//! "Error: ErrImagePull"), then in `ImagePullBackOff` (Events `BackOff` "Back-off pulling image
//! ...", `Failed` "Error: ImagePullBackOff") for the back-off (the same base as
//! CrashLoopBackOff, doubling up to five minutes), then pulls again; it never runs, so its pod
//! is never Ready and never Succeeds. With `imagePullPolicy: Never` it waits in
//! `ErrImageNeverPull` instead.
//!
//! Events (recorded as the kubelet records them, `pkg/kubelet/events/event.go` for the
//! reasons): `Created` ("Created container: NAME") and `Started` ("Started container NAME") at
//! each start, `Killing` ("Stopping container NAME", or "Container NAME failed liveness probe,
//! will be restarted"), `Unhealthy` for every failed probe ("Readiness probe failed: OUTPUT"),
//! `BackOff` ("Back-off restarting failed container NAME in pod POD_NAMESPACE(UID)") while a
//! restart waits. Repeats are counted by the recorder ([`crate::controllers::recorder`]).

use std::collections::HashSet;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::Api;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{Notify, mpsc, watch};

use super::env::{EnvSources, process_arguments, referenced_objects, resolve_env};
use super::probe::{ProbeCounter, ProbeSpec, Verdict, probe_spec, run_probe};
use super::status::{ContainerRuntime, RunState};
use crate::controllers::PodLogSink;
use crate::controllers::error::is_not_found;
use crate::controllers::pods::now;
use crate::controllers::recorder::{EventType, Involved, Recorder, Source};

/// The most a restart is delayed (Kubernetes: five minutes).
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The pod's containers as the kubelet tracks them.
#[derive(Debug, Default, Clone)]
pub struct PodRuntime {
    /// Init containers, in order.
    pub init: Vec<ContainerRuntime>,
    /// Containers.
    pub main: Vec<ContainerRuntime>,
}

/// A container's restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Restart whenever it exits.
    Always,
    /// Restart when it fails.
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// The pod's policy (`Always` when unset).
    pub fn of(pod: &Pod) -> Self {
        match pod
            .spec
            .as_ref()
            .and_then(|spec| spec.restart_policy.as_deref())
        {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }
}

/// Whether a container that exited with `exit_code` runs again.
pub fn should_restart(policy: RestartPolicy, init_container: bool, exit_code: i32) -> bool {
    match (policy, init_container) {
        (RestartPolicy::Never, _) => false,
        (_, true) | (RestartPolicy::OnFailure, false) => exit_code != 0,
        (RestartPolicy::Always, false) => true,
    }
}

/// The delay before restart number `restarts_done + 1`.
pub fn restart_delay(base: Duration, restarts_done: i32) -> Duration {
    if restarts_done <= 0 {
        return Duration::ZERO;
    }
    let exponent = u32::try_from(restarts_done - 1).unwrap_or(0).min(16);
    base.saturating_mul(1_u32 << exponent).min(MAX_BACKOFF)
}

/// The exit code the status reports: the code, or 128 + the signal for signalled processes.
pub fn exit_code_of(status: std::process::ExitStatus) -> (i32, Option<i32>) {
    match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(signal)) => (128 + signal, Some(signal)),
        (None, None) => (1, None),
    }
}

/// What a container's image is on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// It runs as this local binary (`--image`).
    Binary(PathBuf),
    /// A declared stand-in (`--stand-in-image`): no process runs.
    StandIn,
    /// It does not exist: pulling it fails.
    Missing,
}

/// Where a container's Events go: the recorder, as the kubelet, about the container.
#[derive(Clone, Debug)]
pub struct ContainerEvents {
    /// The recorder.
    pub recorder: Recorder,
    /// The kubelet.
    pub source: Source,
    /// The pod, with `fieldPath` naming the container.
    pub involved: Involved,
}

impl ContainerEvents {
    fn normal(&self, reason: &str, message: impl Into<String>) {
        self.recorder.record(
            &self.source,
            &self.involved,
            EventType::Normal,
            reason,
            message,
        );
    }

    fn warning(&self, reason: &str, message: impl Into<String>) {
        self.recorder.record(
            &self.source,
            &self.involved,
            EventType::Warning,
            reason,
            message,
        );
    }
}

/// The error a pull of an image that does not exist fails with (containerd's, through the CRI).
pub fn pull_error(image: &str) -> String {
    format!(
        "rpc error: code = NotFound desc = failed to pull and unpack image {image:?}: failed to \
         resolve reference {image:?}: {image}: not found"
    )
}

/// Everything a container runner needs.
#[derive(Clone)]
pub struct ContainerContext {
    /// The pod as it was when it started.
    pub pod: Arc<Pod>,
    /// The container's spec.
    pub spec: Container,
    /// Its index in `init` or `main`.
    pub index: usize,
    /// Whether it is an init container.
    pub init: bool,
    /// Its loopback port (`PORT`).
    pub port: u16,
    /// What its image is here.
    pub image: ImageSource,
    /// Where its Events go.
    pub events: ContainerEvents,
    /// The pod's temporary directory (working directory, `HOME`, `TMPDIR`).
    pub workdir: PathBuf,
    /// API client, to read Secrets and ConfigMaps.
    pub client: kube::Client,
    /// Where output goes.
    pub logs: Arc<dyn PodLogSink>,
    /// The pod's container states.
    pub runtime: Arc<Mutex<PodRuntime>>,
    /// Woken on every state change.
    pub changed: Arc<Notify>,
    /// `Some(grace)` once the pod terminates.
    pub stop: watch::Receiver<Option<Duration>>,
    /// The pod's restart policy.
    pub restart_policy: RestartPolicy,
    /// The first CrashLoopBackOff delay.
    pub backoff_base: Duration,
    /// The pod's `terminationGracePeriodSeconds`.
    pub pod_grace: Duration,
    /// Process groups alive, for a last SIGKILL when the sim stops.
    pub process_groups: Arc<Mutex<HashSet<i32>>>,
    /// The hosts file of the pod's namespace ([`crate::controllers::dns`]), mounted on the
    /// process's `/etc/hosts`; the error if it could not be written.
    pub hosts_file: Result<PathBuf, String>,
    /// The pod's ServiceAccount volume (`token`, `ca.crt`, `namespace`), mounted at
    /// [`SERVICE_ACCOUNT_MOUNT`] (`None`: not automounted).
    pub service_account_dir: Option<PathBuf>,
    /// The API server's host and port (`KUBERNETES_SERVICE_HOST`/`_PORT`).
    pub api_endpoint: Option<(String, u16)>,
}

/// Where the kubelet mounts a pod's ServiceAccount token, CA and namespace.
pub const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How one run of the container ended.
struct Exit {
    exit_code: i32,
    signal: Option<i32>,
    reason: String,
    message: Option<String>,
    started_at: Option<Timestamp>,
    /// Ended because the pod terminates.
    stopped: bool,
}

/// What the probes tell the runner.
enum ProbeEvent {
    Started,
    Ready(bool),
    /// One failed probe (an `Unhealthy` Event).
    Failed(String),
    Kill {
        /// The container status's message.
        message: String,
        /// The `Killing` Event's message.
        event: String,
        grace: Option<Duration>,
    },
}

impl ContainerContext {
    fn namespace(&self) -> String {
        self.pod.metadata.namespace.clone().unwrap_or_default()
    }

    fn pod_name(&self) -> String {
        self.pod.metadata.name.clone().unwrap_or_default()
    }

    fn update(&self, change: impl FnOnce(&mut ContainerRuntime)) {
        {
            let mut runtime = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
            let list = if self.init {
                &mut runtime.init
            } else {
                &mut runtime.main
            };
            if let Some(container) = list.get_mut(self.index) {
                change(container);
            }
        }
        self.changed.notify_one();
    }

    fn current(&self) -> Option<ContainerRuntime> {
        let runtime = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        let list = if self.init {
            &runtime.init
        } else {
            &runtime.main
        };
        list.get(self.index).cloned()
    }

    fn probes(&self) -> (Option<ProbeSpec>, Option<ProbeSpec>, Option<ProbeSpec>) {
        if self.init {
            return (None, None, None);
        }
        let spec = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
            probe
                .as_ref()
                .map(|probe| probe_spec(&self.spec, probe, self.port))
        };
        (
            spec(&self.spec.startup_probe),
            spec(&self.spec.readiness_probe),
            spec(&self.spec.liveness_probe),
        )
    }
}

fn stop_requested(stop: &watch::Receiver<Option<Duration>>) -> Option<Duration> {
    *stop.borrow()
}

/// Waits until the pod terminates; returns its grace period.
async fn stopped(stop: &mut watch::Receiver<Option<Duration>>) -> Duration {
    loop {
        if let Some(grace) = stop_requested(stop) {
            return grace;
        }
        if stop.changed().await.is_err() {
            return Duration::ZERO;
        }
    }
}

/// Runs the container until it will not run again. Returns whether it succeeded (exit code 0).
pub async fn run_container(context: ContainerContext) -> bool {
    let mut stop = context.stop.clone();
    loop {
        if stop_requested(&stop).is_some() {
            context.update(|container| {
                if !matches!(container.state, RunState::Terminated { .. }) {
                    container.state = RunState::Terminated {
                        exit_code: 0,
                        signal: None,
                        reason: "Completed".to_owned(),
                        message: None,
                        started_at: None,
                        finished_at: now(),
                    };
                }
                container.finished = true;
                container.ready = false;
            });
            return false;
        }
        if !pull(&context, &mut stop).await {
            continue;
        }
        let Some(env) = resolve_with_retry(&context, &mut stop).await else {
            continue;
        };
        let exit = match context.image.clone() {
            ImageSource::Binary(binary) => run_process(&context, &binary, &env, &mut stop).await,
            ImageSource::StandIn => run_unmapped(&context, &mut stop).await,
            // `pull` never lets a missing image through.
            ImageSource::Missing => continue,
        };
        let restart =
            !exit.stopped && should_restart(context.restart_policy, context.init, exit.exit_code);
        let succeeded = exit.exit_code == 0;
        let terminated = RunState::Terminated {
            exit_code: exit.exit_code,
            signal: exit.signal,
            reason: exit.reason,
            message: exit.message,
            started_at: exit.started_at,
            finished_at: now(),
        };
        context.update(|container| {
            container.state = terminated.clone();
            container.ready = false;
            container.started = false;
            container.finished = !restart;
        });
        if !restart {
            return succeeded && !exit.stopped;
        }
        let restarts_done = context.current().map_or(0, |c| c.restart_count);
        let delay = restart_delay(context.backoff_base, restarts_done);
        if !delay.is_zero() {
            let message = format!(
                "back-off {}s restarting failed container={} pod={}_{}",
                delay.as_secs(),
                context.spec.name,
                context.pod_name(),
                context.namespace()
            );
            context.update(|container| {
                container.last_state = Some(terminated.clone());
                container.state = RunState::Waiting {
                    reason: "CrashLoopBackOff".to_owned(),
                    message: Some(message),
                };
            });
            context.events.warning(
                "BackOff",
                format!(
                    "Back-off restarting failed container {} in pod {}_{}({})",
                    context.spec.name,
                    context.pod_name(),
                    context.namespace(),
                    context.pod.metadata.uid.as_deref().unwrap_or("")
                ),
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _grace = stopped(&mut stop) => {
                    context.update(|container| {
                        container.state = terminated.clone();
                        container.finished = true;
                    });
                    return false;
                }
            }
        }
        context.update(|container| {
            container.last_state = Some(terminated.clone());
            container.restart_count += 1;
        });
    }
}

/// Pulls the container's image (see the module doc). Returns whether it is there; `false` when
/// the pod terminates first.
async fn pull(context: &ContainerContext, stop: &mut watch::Receiver<Option<Duration>>) -> bool {
    let image = context.spec.image.clone().unwrap_or_default();
    let policy = context
        .spec
        .image_pull_policy
        .clone()
        .unwrap_or_else(|| "IfNotPresent".to_owned());
    let events = &context.events;
    match &context.image {
        ImageSource::Binary(_) | ImageSource::StandIn => {
            if policy == "Always" {
                events.normal("Pulling", format!("Pulling image {image:?}"));
                let size = match &context.image {
                    ImageSource::Binary(binary) => {
                        std::fs::metadata(binary).map_or(0, |meta| meta.len())
                    }
                    ImageSource::StandIn | ImageSource::Missing => 0,
                };
                events.normal(
                    "Pulled",
                    format!(
                        "Successfully pulled image {image:?} in 0s (0s including waiting). Image size: {size} bytes."
                    ),
                );
            } else {
                events.normal(
                    "Pulled",
                    format!("Container image {image:?} already present on machine"),
                );
            }
            true
        }
        ImageSource::Missing if policy == "Never" => {
            let message =
                format!("Container image {image:?} is not present with pull policy of Never");
            events.warning("ErrImageNeverPull", message.clone());
            context.update(|container| {
                container.state = RunState::Waiting {
                    reason: "ErrImageNeverPull".to_owned(),
                    message: Some(message),
                };
            });
            let _grace = stopped(stop).await;
            false
        }
        ImageSource::Missing => {
            let error = pull_error(&image);
            let mut failures: i32 = 0;
            loop {
                events.normal("Pulling", format!("Pulling image {image:?}"));
                events.warning("Failed", format!("Failed to pull image {image:?}: {error}"));
                events.warning("Failed", "Error: ErrImagePull");
                context.update(|container| {
                    container.state = RunState::Waiting {
                        reason: "ErrImagePull".to_owned(),
                        message: Some(error.clone()),
                    };
                });
                failures = failures.saturating_add(1);
                let delay =
                    restart_delay(context.backoff_base, failures).max(Duration::from_secs(1));
                // The next sync of the pod finds the pull backing off.
                let in_error = delay.min(Duration::from_secs(1));
                tokio::select! {
                    () = tokio::time::sleep(in_error) => {}
                    _grace = stopped(stop) => return false,
                }
                let message = format!("Back-off pulling image {image:?}");
                events.normal("BackOff", message.clone());
                events.warning("Failed", "Error: ImagePullBackOff");
                context.update(|container| {
                    container.state = RunState::Waiting {
                        reason: "ImagePullBackOff".to_owned(),
                        message: Some(message),
                    };
                });
                tokio::select! {
                    () = tokio::time::sleep(delay.saturating_sub(in_error)) => {}
                    _grace = stopped(stop) => return false,
                }
            }
        }
    }
}

async fn fetch_sources(context: &ContainerContext) -> Result<EnvSources, kube::Error> {
    let namespace = context.namespace();
    let (secret_names, config_map_names) = referenced_objects(&context.spec);
    let secrets: Api<Secret> = Api::namespaced(context.client.clone(), &namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(context.client.clone(), &namespace);
    let mut sources = EnvSources::default();
    for name in secret_names {
        let secret = match secrets.get(&name).await {
            Ok(secret) => Some(secret),
            Err(error) if is_not_found(&error) => None,
            Err(error) => return Err(error),
        };
        sources.secrets.insert(name, secret);
    }
    for name in config_map_names {
        let config_map = match config_maps.get(&name).await {
            Ok(config_map) => Some(config_map),
            Err(error) if is_not_found(&error) => None,
            Err(error) => return Err(error),
        };
        sources.config_maps.insert(name, config_map);
    }
    Ok(sources)
}

/// The container's environment, retried every second while a reference cannot be resolved
/// (`CreateContainerConfigError`). `None` when the pod terminates meanwhile.
async fn resolve_with_retry(
    context: &ContainerContext,
    stop: &mut watch::Receiver<Option<Duration>>,
) -> Option<Vec<(String, String)>> {
    loop {
        let message = match fetch_sources(context).await {
            Ok(sources) => match resolve_env(&context.pod, &context.spec, &sources) {
                Ok(mut env) => {
                    env.retain(|(name, _)| name != "PORT");
                    env.push(("PORT".to_owned(), context.port.to_string()));
                    return Some(env);
                }
                Err(message) => message,
            },
            Err(error) => format!("reading the container's Secrets and ConfigMaps: {error}"),
        };
        context.update(|container| {
            container.state = RunState::Waiting {
                reason: "CreateContainerConfigError".to_owned(),
                message: Some(message),
            };
        });
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _grace = stopped(stop) => return None,
        }
    }
}

fn base_environment(context: &ContainerContext) -> Vec<(String, String)> {
    let workdir = context.workdir.display().to_string();
    let mut env = vec![
        (
            "PATH".to_owned(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_owned()),
        ),
        ("HOME".to_owned(), workdir.clone()),
        ("TMPDIR".to_owned(), workdir),
        ("HOSTNAME".to_owned(), context.pod_name()),
    ];
    if let Ok(lang) = std::env::var("LANG") {
        env.push(("LANG".to_owned(), lang));
    }
    // The kubelet gives every container the `kubernetes` Service's address ("Accessing the
    // Kubernetes API from a Pod"); in-cluster clients (kube-rs, client-go) read it.
    if let Some((host, port)) = &context.api_endpoint {
        env.extend([
            ("KUBERNETES_SERVICE_HOST".to_owned(), host.clone()),
            ("KUBERNETES_SERVICE_PORT".to_owned(), port.to_string()),
            ("KUBERNETES_SERVICE_PORT_HTTPS".to_owned(), port.to_string()),
            ("KUBERNETES_PORT".to_owned(), format!("tcp://{host}:{port}")),
        ]);
    }
    env
}

/// `unshare(1)`, which runs the container's process in a mount namespace of its own.
const UNSHARE: &str = "unshare";

/// The arguments of `unshare(1)` before the container's own: a new mount namespace whose
/// changes stay private, in which `sh` bind-mounts `hosts_file` on `/etc/hosts` (and the
/// ServiceAccount volume on [`SERVICE_ACCOUNT_MOUNT`], when there is one) and then execs
/// `binary` (the same process id throughout: `unshare` without `--fork` and `exec` replace
/// themselves, so signals reach the container's process). On Kubernetes the kubelet mounts a
/// hosts file it manages on every container's `/etc/hosts` the same way ("Adding entries to Pod
/// /etc/hosts with HostAliases"), and resolves Service names through the pod's DNS search path
/// ([`crate::controllers::dns`]). Needs root (CAP_SYS_ADMIN), as kube-sim's pods always have.
pub fn private_hosts_arguments(
    hosts_file: &std::path::Path,
    service_account_dir: Option<&std::path::Path>,
    binary: &std::path::Path,
) -> Vec<std::ffi::OsString> {
    // $0: the hosts file; $1: the ServiceAccount volume or `-`. The volume is bound on
    // /var/run/secrets/kubernetes.io/serviceaccount over a private tmpfs on /run (/var/run is
    // /run), so the path exists for this pod only and nothing is created on the machine.
    let script = concat!(
        "mount --bind \"$0\" /etc/hosts && ",
        "if [ \"$1\" != - ]; then ",
        "mount -t tmpfs -o size=1m,mode=755 kube-sim-run /run && ",
        "mkdir -p /run/secrets/kubernetes.io/serviceaccount && ",
        "mount --bind \"$1\" /run/secrets/kubernetes.io/serviceaccount; fi && ",
        "shift && exec \"$@\""
    );
    [
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        script,
    ]
    .into_iter()
    .map(std::ffi::OsString::from)
    .chain([
        hosts_file.as_os_str().to_owned(),
        service_account_dir.map_or_else(|| "-".into(), |dir| dir.as_os_str().to_owned()),
        binary.as_os_str().to_owned(),
    ])
    .collect()
}

fn start_error(message: String) -> Exit {
    Exit {
        exit_code: 128,
        signal: None,
        reason: "StartError".to_owned(),
        message: Some(message),
        started_at: None,
        stopped: false,
    }
}

fn forward_output(
    context: &ContainerContext,
    stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) {
    let logs = context.logs.clone();
    let namespace = context.namespace();
    let pod = context.pod_name();
    let container = context.spec.name.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => logs.append(&namespace, &pod, &container, &line),
            }
        }
    });
}

async fn run_process(
    context: &ContainerContext,
    binary: &std::path::Path,
    env: &[(String, String)],
    stop: &mut watch::Receiver<Option<Duration>>,
) -> Exit {
    if !binary.is_file() {
        let exit = start_error(format!(
            "kube-sim: the binary {} that image {} maps to does not exist (build it, or fix --image)",
            binary.display(),
            context.spec.image.as_deref().unwrap_or("")
        ));
        context.events.warning(
            "Failed",
            format!("Error: {}", exit.message.clone().unwrap_or_default()),
        );
        return exit;
    }
    let hosts_file = match &context.hosts_file {
        Ok(path) => path,
        Err(error) => return start_error(format!("kube-sim: no hosts file for the pod: {error}")),
    };
    let mut command = tokio::process::Command::new(UNSHARE);
    command
        .args(private_hosts_arguments(
            hosts_file,
            context.service_account_dir.as_deref(),
            binary,
        ))
        .args(process_arguments(&context.spec, env))
        .env_clear()
        .envs(base_environment(context))
        .envs(
            env.iter()
                .map(|(key, value)| (key.as_str(), value.as_str())),
        )
        .current_dir(&context.workdir)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    context.events.normal(
        "Created",
        format!("Created container: {}", context.spec.name),
    );
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            let exit = start_error(format!(
                "kube-sim: cannot run {}: {error}",
                binary.display()
            ));
            context.events.warning(
                "Failed",
                format!("Error: {}", exit.message.clone().unwrap_or_default()),
            );
            return exit;
        }
    };
    context.events.normal(
        "Started",
        format!("Started container {}", context.spec.name),
    );
    let started_at = now();
    let started_instant = Instant::now();
    let pid = child.id().and_then(|id| i32::try_from(id).ok());
    if let Some(pid) = pid {
        context
            .process_groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pid);
        context.logs.running(
            &context.namespace(),
            &context.pod_name(),
            &context.spec.name,
            pid,
            Some(crate::connect::exec::ExecTarget {
                pid,
                env: base_environment(context)
                    .into_iter()
                    .chain(env.iter().cloned())
                    .collect(),
                workdir: context.workdir.clone(),
                binary: binary.to_path_buf(),
                command: context
                    .spec
                    .command
                    .as_ref()
                    .and_then(|command| command.first().cloned()),
            }),
        );
    }
    context.logs.start(
        &context.namespace(),
        &context.pod_name(),
        &context.spec.name,
    );
    if let Some(stdout) = child.stdout.take() {
        forward_output(context, stdout);
    }
    if let Some(stderr) = child.stderr.take() {
        forward_output(context, stderr);
    }

    let (startup, readiness, liveness) = context.probes();
    let starts_started = startup.is_none();
    let starts_ready = starts_started && readiness.is_none();
    context.update(|container| {
        container.state = RunState::Running { started_at };
        container.started = starts_started;
        container.ready = starts_ready;
    });
    let (probe_tx, mut probe_rx) = mpsc::channel(16);
    let probe_task = tokio::spawn(run_probes(
        context.spec.name.clone(),
        started_instant,
        startup,
        readiness,
        liveness,
        env.to_vec(),
        probe_tx,
    ));

    let mut kill: Option<(String, Duration)> = None;
    let mut stopped_by_pod = false;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.ok(),
            event = probe_rx.recv() => match event {
                Some(ProbeEvent::Started) => context.update(|c| {
                    c.started = true;
                    if context.spec.readiness_probe.is_none() {
                        c.ready = true;
                    }
                }),
                Some(ProbeEvent::Ready(ready)) => {
                    if context.current().is_some_and(|c| c.ready != ready) {
                        context.update(|c| c.ready = ready);
                    }
                }
                Some(ProbeEvent::Failed(message)) => context.events.warning("Unhealthy", message),
                Some(ProbeEvent::Kill { message, event, grace }) => {
                    let grace = grace.unwrap_or(context.pod_grace);
                    context.events.normal("Killing", event);
                    kill = Some((message, grace));
                    break terminate(&mut child, pid, grace).await;
                }
                None => {
                    // The probes are done (none configured): only the process and the pod matter.
                    tokio::select! {
                        status = child.wait() => break status.ok(),
                        grace = stopped(stop) => {
                            stopped_by_pod = true;
                            context.events.normal("Killing", format!("Stopping container {}", context.spec.name));
                            break terminate(&mut child, pid, grace).await;
                        }
                    }
                }
            },
            grace = stopped(stop) => {
                stopped_by_pod = true;
                context.events.normal("Killing", format!("Stopping container {}", context.spec.name));
                break terminate(&mut child, pid, grace).await;
            }
        }
    };
    probe_task.abort();
    if let Some(pid) = pid {
        context.logs.running(
            &context.namespace(),
            &context.pod_name(),
            &context.spec.name,
            pid,
            None,
        );
        // Whatever the process left behind in its group goes too.
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        context
            .process_groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid);
    }
    let (exit_code, signal) = status.map_or((137, Some(9)), exit_code_of);
    let reason = if exit_code == 0 { "Completed" } else { "Error" };
    Exit {
        exit_code,
        signal,
        reason: reason.to_owned(),
        message: kill.map(|(message, _)| message),
        started_at: Some(started_at),
        stopped: stopped_by_pod,
    }
}

/// SIGTERM to the main process, SIGKILL to its group after `grace`.
async fn terminate(
    child: &mut tokio::process::Child,
    pid: Option<i32>,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    if let Some(pid) = pid {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    if let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
        return status.ok();
    }
    if let Some(pid) = pid {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = child.start_kill();
    child.wait().await.ok()
}

async fn wait_until(start: Instant, delay: Duration) {
    let deadline = start + delay;
    tokio::time::sleep_until(deadline.into()).await;
}

/// Startup first; then readiness and liveness side by side. Every failed probe is reported
/// (`Unhealthy`), and a failing startup or liveness probe kills the container.
async fn run_probes(
    container: String,
    start: Instant,
    startup: Option<ProbeSpec>,
    readiness: Option<ProbeSpec>,
    liveness: Option<ProbeSpec>,
    env: Vec<(String, String)>,
    events: mpsc::Sender<ProbeEvent>,
) {
    if startup.is_none() && readiness.is_none() && liveness.is_none() {
        return;
    }
    if let Some(spec) = startup {
        wait_until(start, spec.initial_delay).await;
        let mut counter = ProbeCounter::default();
        loop {
            let result = run_probe(&spec, &env).await;
            let failure = result.as_ref().err().cloned();
            if let Some(failure) = &failure {
                let _ = events
                    .send(ProbeEvent::Failed(format!(
                        "Startup probe failed: {failure}"
                    )))
                    .await;
            }
            match counter.record(result.is_ok(), &spec) {
                Verdict::Passing => {
                    let _ = events.send(ProbeEvent::Started).await;
                    break;
                }
                Verdict::Failing => {
                    let _ = events
                        .send(ProbeEvent::Kill {
                            message: format!(
                                "Startup probe failed: {}",
                                failure.unwrap_or_default()
                            ),
                            event: format!(
                                "Container {container} failed startup probe, will be restarted"
                            ),
                            grace: spec.termination_grace,
                        })
                        .await;
                    return;
                }
                Verdict::Undecided => {}
            }
            tokio::time::sleep(spec.period).await;
        }
    }
    let readiness_loop = {
        let events = events.clone();
        let env = env.clone();
        async move {
            let Some(spec) = readiness else {
                return;
            };
            wait_until(start, spec.initial_delay).await;
            let mut counter = ProbeCounter::default();
            loop {
                let result = run_probe(&spec, &env).await;
                if let Err(failure) = &result
                    && events
                        .send(ProbeEvent::Failed(format!(
                            "Readiness probe failed: {failure}"
                        )))
                        .await
                        .is_err()
                {
                    return;
                }
                match counter.record(result.is_ok(), &spec) {
                    Verdict::Passing => {
                        if events.send(ProbeEvent::Ready(true)).await.is_err() {
                            return;
                        }
                    }
                    Verdict::Failing => {
                        if events.send(ProbeEvent::Ready(false)).await.is_err() {
                            return;
                        }
                    }
                    Verdict::Undecided => {}
                }
                tokio::time::sleep(spec.period).await;
            }
        }
    };
    let liveness_loop = async move {
        let Some(spec) = liveness else {
            return;
        };
        wait_until(start, spec.initial_delay).await;
        let mut counter = ProbeCounter::default();
        loop {
            let result = run_probe(&spec, &env).await;
            let failure = result.as_ref().err().cloned();
            if let Some(failure) = &failure {
                let _ = events
                    .send(ProbeEvent::Failed(format!(
                        "Liveness probe failed: {failure}"
                    )))
                    .await;
            }
            if counter.record(result.is_ok(), &spec) == Verdict::Failing {
                let _ = events
                    .send(ProbeEvent::Kill {
                        message: format!("Liveness probe failed: {}", failure.unwrap_or_default()),
                        event: format!(
                            "Container {container} failed liveness probe, will be restarted"
                        ),
                        grace: spec.termination_grace,
                    })
                    .await;
                return;
            }
            tokio::time::sleep(spec.period).await;
        }
    };
    tokio::join!(readiness_loop, liveness_loop);
    // Keep the channel open so the runner does not mistake the end of probing for anything.
    std::future::pending::<()>().await;
}

/// A container whose image is a declared stand-in: Running at once, started after the startup
/// probe's initial delay, Ready after the readiness probe's initial delay (both from its start;
/// no probe, no delay). Run-to-completion containers (init containers, pods with restartPolicy
/// Never or OnFailure) exit 0 at once. Its log exists and stays empty.
async fn run_unmapped(
    context: &ContainerContext,
    stop: &mut watch::Receiver<Option<Duration>>,
) -> Exit {
    let started_at = now();
    let start = Instant::now();
    let completed = |stopped| Exit {
        exit_code: 0,
        signal: None,
        reason: "Completed".to_owned(),
        message: None,
        started_at: Some(started_at),
        stopped,
    };
    context.events.normal(
        "Created",
        format!("Created container: {}", context.spec.name),
    );
    context.logs.start(
        &context.namespace(),
        &context.pod_name(),
        &context.spec.name,
    );
    context.events.normal(
        "Started",
        format!("Started container {}", context.spec.name),
    );
    context.update(|container| {
        container.state = RunState::Running { started_at };
    });
    if context.init || context.restart_policy != RestartPolicy::Always {
        return completed(false);
    }
    let (startup, readiness, _liveness) = context.probes();
    let started_after = startup.map_or(Duration::ZERO, |spec| spec.initial_delay);
    let ready_after = readiness
        .map_or(Duration::ZERO, |spec| spec.initial_delay)
        .max(started_after);
    let lifecycle = async {
        wait_until(start, started_after).await;
        context.update(|container| container.started = true);
        wait_until(start, ready_after).await;
        context.update(|container| container.ready = true);
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = lifecycle => completed(false),
        _grace = stopped(stop) => {
            context.events.normal("Killing", format!("Stopping container {}", context.spec.name));
            completed(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policy_decides_restarts() {
        assert!(should_restart(RestartPolicy::Always, false, 0));
        assert!(!should_restart(RestartPolicy::OnFailure, false, 0));
        assert!(should_restart(RestartPolicy::OnFailure, false, 1));
        assert!(!should_restart(RestartPolicy::Never, false, 1));
        assert!(!should_restart(RestartPolicy::Always, true, 0));
        assert!(should_restart(RestartPolicy::Always, true, 2));
        assert!(!should_restart(RestartPolicy::Never, true, 2));
    }

    #[test]
    fn crash_loop_back_off_doubles_up_to_five_minutes() {
        let base = Duration::from_secs(10);
        assert_eq!(restart_delay(base, 0), Duration::ZERO);
        assert_eq!(restart_delay(base, 1), Duration::from_secs(10));
        assert_eq!(restart_delay(base, 2), Duration::from_secs(20));
        assert_eq!(restart_delay(base, 3), Duration::from_secs(40));
        assert_eq!(restart_delay(base, 10), Duration::from_secs(300));
    }

    #[test]
    fn signalled_exit_is_128_plus_signal() {
        let killed = std::process::ExitStatus::from_raw(9);
        assert_eq!(exit_code_of(killed), (137, Some(9)));
        let exited = std::process::ExitStatus::from_raw(3 << 8);
        assert_eq!(exit_code_of(exited), (3, None));
    }
}
