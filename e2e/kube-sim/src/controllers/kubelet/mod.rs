//! The simulated kubelet of the sim's single node.
//!
//! It watches every pod and gives each one a worker that:
//! - gives every container its own free loopback port, passed as `PORT` (overriding any `PORT`
//!   in the spec) and published on the pod: annotation `kube-sim.kumiko.so/port` (the first
//!   container's) and `kube-sim.kumiko.so/port-CONTAINER` (each container's); `status.podIP` is
//!   `127.0.0.1`;
//! - records the scheduler's `Scheduled` Event and the kubelet's container Events
//!   ([`container`] lists them);
//! - runs init containers one after the other, then the containers side by side
//!   ([`container`]); an image that is neither mapped nor a declared stand-in fails to pull
//!   (`ErrImagePull`, `ImagePullBackOff`); a container whose image maps to a binary (`--image`) runs it in a fresh
//!   temporary directory per pod (the working directory, `HOME` and `TMPDIR`); volumes are not
//!   mounted: a process cannot write at a pod's mount paths, so it should use `TMPDIR`;
//! - keeps `status` up to date ([`status`]);
//! - on graceful deletion (`deletionTimestamp` set) stops the containers with SIGTERM, then
//!   SIGKILL after the grace period (`deletionGracePeriodSeconds`, else the pod's
//!   `terminationGracePeriodSeconds`, else 30s), then deletes the pod with grace period 0, as
//!   the kubelet does; if the API removed the pod at once, the processes are stopped the same way.
//!
//! Pods bound to another node than `kube-sim` are left alone (the CNPG simulation runs its
//! instance pods itself).
//!
//! In instant mode no process runs: pods are Running and Ready at once (Succeeded at once when
//! their restartPolicy is Never or OnFailure), and deletion completes at once; images are not
//! checked and no Events are recorded (it exists for benchmarks).

pub mod container;
pub mod env;
pub mod probe;
pub mod status;
pub mod usage;

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::container::{
    ContainerContext, ContainerEvents, ImageSource, PodRuntime, RestartPolicy, run_container,
};
use self::status::{ContainerRuntime, RunState, pod_status};
use super::dns::HostsFiles;
use super::pods::now;
use super::recorder::{EventType, Involved, Recorder, Source};
use super::{
    CONTAINER_PORT_ANNOTATION_PREFIX, ControllersConfig, FIELD_MANAGER, POD_PORT_ANNOTATION,
    binary_for_image, is_stand_in,
};

/// The conditions the kubelet owns; others (readiness gates) are kept as they are.
const KUBELET_CONDITIONS: [&str; 5] = [
    "PodScheduled",
    "PodReadyToStartContainers",
    "Initialized",
    "ContainersReady",
    "Ready",
];

/// The default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE: Duration = Duration::from_secs(30);

#[derive(Clone)]
enum PodEvent {
    Present(Arc<Pod>),
    Gone,
}

enum Entry {
    Active {
        events: watch::Sender<PodEvent>,
        task: JoinHandle<()>,
    },
    /// The worker is done (the pod was deleted); later events of this UID are ignored.
    Done,
}

struct Inner {
    client: kube::Client,
    config: Arc<ControllersConfig>,
    /// The namespaces' hosts files, mounted on each container's `/etc/hosts`.
    hosts: Arc<HostsFiles>,
    workers: Mutex<HashMap<String, Entry>>,
    process_groups: Arc<Mutex<HashSet<i32>>>,
    /// Records the pods' Events.
    recorder: Recorder,
}

/// The simulated kubelet. Clones share the same state.
#[derive(Clone)]
pub struct Kubelet {
    inner: Arc<Inner>,
}

impl Kubelet {
    /// A kubelet for the API `client` talks to.
    pub fn new(
        client: kube::Client,
        config: Arc<ControllersConfig>,
        hosts: Arc<HostsFiles>,
        recorder: Recorder,
    ) -> Self {
        Kubelet {
            inner: Arc::new(Inner {
                client,
                config,
                hosts,
                workers: Mutex::new(HashMap::new()),
                process_groups: Arc::new(Mutex::new(HashSet::new())),
                recorder,
            }),
        }
    }

    /// Watches pods until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let api: Api<Pod> = Api::all(self.inner.client.clone());
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut listed: Option<HashSet<String>> = None;
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => break,
                event = stream.next() => event,
            };
            match event {
                Some(Ok(watcher::Event::Apply(pod))) => self.observe(pod),
                Some(Ok(watcher::Event::InitApply(pod))) => {
                    if let (Some(seen), Some(uid)) = (listed.as_mut(), pod.metadata.uid.clone()) {
                        seen.insert(uid);
                    }
                    self.observe(pod);
                }
                Some(Ok(watcher::Event::Delete(pod))) => self.gone(pod.metadata.uid.as_deref()),
                Some(Ok(watcher::Event::Init)) => listed = Some(HashSet::new()),
                Some(Ok(watcher::Event::InitDone)) => {
                    // Pods that disappeared while the watch was re-established.
                    if let Some(seen) = listed.take() {
                        let vanished: Vec<String> = self
                            .lock_workers()
                            .keys()
                            .filter(|uid| !seen.contains(*uid))
                            .cloned()
                            .collect();
                        for uid in vanished {
                            self.gone(Some(&uid));
                        }
                    }
                }
                Some(Err(error)) => tracing::debug!(%error, "kubelet: pod watch error"),
                None => break,
            }
        }
    }

    fn lock_workers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn observe(&self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        // Pods bound to another node (the CNPG simulation's instances) are not this kubelet's.
        let node = pod.spec.as_ref().and_then(|spec| spec.node_name.as_deref());
        if node.is_some_and(|node| !node.is_empty() && node != env::NODE_NAME) {
            return;
        }
        let pod = Arc::new(pod);
        let mut workers = self.lock_workers();
        match workers.get(&uid) {
            Some(Entry::Active { events, .. }) => {
                let _ = events.send(PodEvent::Present(pod));
            }
            Some(Entry::Done) => {}
            None => {
                let (events, receiver) = watch::channel(PodEvent::Present(pod));
                let kubelet = self.clone();
                let worker_uid = uid.clone();
                let task = tokio::spawn(async move {
                    kubelet.run_pod(receiver).await;
                    if let Some(entry) = kubelet.lock_workers().get_mut(&worker_uid) {
                        *entry = Entry::Done;
                    }
                });
                workers.insert(uid, Entry::Active { events, task });
            }
        }
    }

    fn gone(&self, uid: Option<&str>) {
        let Some(uid) = uid else { return };
        let mut workers = self.lock_workers();
        match workers.remove(uid) {
            Some(Entry::Active { events, task }) => {
                let _ = events.send(PodEvent::Gone);
                // The worker finishes the termination and then finds no entry to mark.
                drop(task);
            }
            Some(Entry::Done) | None => {}
        }
    }

    /// Kills every pod process now (SIGKILL to each process group) and stops the workers.
    pub fn kill_all_now(&self) {
        let groups: Vec<i32> = self
            .inner
            .process_groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for group in groups {
            let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
        }
        for (_, entry) in self.lock_workers().drain() {
            if let Entry::Active { task, .. } = entry {
                task.abort();
            }
        }
    }

    /// Kills every pod process and waits for the workers to end.
    pub async fn kill_all(&self) {
        let tasks: Vec<JoinHandle<()>> = {
            let mut workers = self.lock_workers();
            workers
                .drain()
                .filter_map(|(_, entry)| match entry {
                    Entry::Active { task, .. } => Some(task),
                    Entry::Done => None,
                })
                .collect()
        };
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        self.kill_all_now();
    }

    async fn run_pod(&self, mut events: watch::Receiver<PodEvent>) {
        let PodEvent::Present(pod) = events.borrow_and_update().clone() else {
            return;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            // Never started here: nothing to stop.
            self.finish_deletion(&pod).await;
            return;
        }
        if self.inner.config.instant {
            self.run_instant_pod(pod, events).await;
            return;
        }
        let mut worker = PodWorker::start(self.clone(), pod).await;
        worker.run(&mut events).await;
    }

    async fn run_instant_pod(&self, pod: Arc<Pod>, mut events: watch::Receiver<PodEvent>) {
        let policy = RestartPolicy::of(&pod);
        let started_at = now();
        let runtime = |name: &str, image: &str| {
            let mut container = ContainerRuntime::new(name, image, format!("kube-sim://{name}"));
            if policy == RestartPolicy::Always {
                container.state = RunState::Running { started_at };
                container.ready = true;
                container.started = true;
            } else {
                container.state = RunState::Terminated {
                    exit_code: 0,
                    signal: None,
                    reason: "Completed".to_owned(),
                    message: None,
                    started_at: Some(started_at),
                    finished_at: started_at,
                };
                container.finished = true;
            }
            container
        };
        let spec = pod.spec.clone().unwrap_or_default();
        let init: Vec<ContainerRuntime> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| {
                let mut done = runtime(&c.name, c.image.as_deref().unwrap_or(""));
                done.state = RunState::Terminated {
                    exit_code: 0,
                    signal: None,
                    reason: "Completed".to_owned(),
                    message: None,
                    started_at: Some(started_at),
                    finished_at: started_at,
                };
                done.finished = true;
                done.ready = false;
                done
            })
            .collect();
        let main: Vec<ContainerRuntime> = spec
            .containers
            .iter()
            .map(|c| runtime(&c.name, c.image.as_deref().unwrap_or("")))
            .collect();
        let status = pod_status(&pod, &init, &main, started_at, started_at);
        self.write_status(&pod, &status).await;
        loop {
            if events.changed().await.is_err() {
                return;
            }
            let event = events.borrow_and_update().clone();
            match event {
                PodEvent::Present(current) if current.metadata.deletion_timestamp.is_some() => {
                    self.finish_deletion(&current).await;
                    return;
                }
                PodEvent::Present(_) => {}
                PodEvent::Gone => return,
            }
        }
    }

    async fn write_status(&self, pod: &Pod, status: &PodStatus) -> bool {
        let api: Api<Pod> = Api::namespaced(
            self.inner.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let name = pod.metadata.name.clone().unwrap_or_default();
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        match api
            .patch_status(&name, &params, &Patch::Merge(json!({ "status": status })))
            .await
        {
            Ok(_) => true,
            Err(error) => {
                tracing::debug!(%error, pod = %name, "kubelet: status update failed");
                false
            }
        }
    }

    /// The last step of graceful deletion: delete with grace period 0 (this UID only).
    async fn finish_deletion(&self, pod: &Pod) {
        let api: Api<Pod> = Api::namespaced(
            self.inner.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        if let Err(error) = api.delete(&name, &params).await {
            tracing::debug!(%error, pod = %name, "kubelet: final delete failed");
        }
    }
}

/// What `image` is on this node: mapped to a binary, a declared stand-in, or missing.
pub fn image_source(config: &ControllersConfig, image: &str) -> ImageSource {
    if let Some(binary) = binary_for_image(&config.images, image) {
        return ImageSource::Binary(PathBuf::from(binary));
    }
    if is_stand_in(&config.stand_in_images, image) {
        return ImageSource::StandIn;
    }
    ImageSource::Missing
}

/// A free loopback port (free when returned).
fn free_port() -> Option<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .ok()
}

/// The grace period of a pod that is being deleted.
fn grace_period(pod: &Pod) -> Duration {
    let seconds = pod.metadata.deletion_grace_period_seconds.or_else(|| {
        pod.spec
            .as_ref()
            .and_then(|spec| spec.termination_grace_period_seconds)
    });
    seconds.map_or(DEFAULT_GRACE, |seconds| {
        Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
    })
}

/// The pod's status as last written, with the conditions others own taken from the API.
fn status_basis(current: &Pod, written: Option<&PodStatus>) -> Pod {
    let mut basis = current.clone();
    let Some(written) = written else {
        return basis;
    };
    let mut status = written.clone();
    let mut conditions: Vec<_> = status
        .conditions
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| KUBELET_CONDITIONS.contains(&c.type_.as_str()))
        .collect();
    for condition in current
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
    {
        if !KUBELET_CONDITIONS.contains(&condition.type_.as_str()) {
            conditions.push(condition.clone());
        }
    }
    status.conditions = Some(conditions);
    basis.status = Some(status);
    basis
}

struct PodWorker {
    kubelet: Kubelet,
    current: Arc<Pod>,
    runtime: Arc<Mutex<PodRuntime>>,
    changed: Arc<Notify>,
    stop: watch::Sender<Option<Duration>>,
    start_time: jiff::Timestamp,
    written: Option<PodStatus>,
    _workdir: Option<tempfile::TempDir>,
    supervisor: Option<JoinHandle<()>>,
    /// Stops the containers' runners (and so their processes) when the worker goes away.
    supervisor_abort: tokio::task::AbortHandle,
}

impl Drop for PodWorker {
    fn drop(&mut self) {
        self.supervisor_abort.abort();
    }
}

/// The pod's ServiceAccount volume, as the kubelet projects it ("Configure Service Accounts for
/// Pods"): a directory holding a `token` for the pod's ServiceAccount (`spec.serviceAccountName`,
/// default `default`), the API server's `ca.crt` and the pod's `namespace`. None when the pod or
/// its ServiceAccount sets `automountServiceAccountToken: false`, or when the ServiceAccount does
/// not exist (a real API server refuses such a pod at admission; kube-sim runs it without).
async fn service_account_volume(
    client: &kube::Client,
    access: &crate::controllers::ApiAccess,
    pod: &Pod,
    workdir: &std::path::Path,
) -> Option<PathBuf> {
    let spec = pod.spec.as_ref()?;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = spec
        .service_account_name
        .as_deref()
        .filter(|name| !name.is_empty())
        .unwrap_or("default");
    let accounts: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
        kube::Api::namespaced(client.clone(), namespace);
    let account = accounts.get_opt(name).await.ok().flatten()?;
    let automount = spec
        .automount_service_account_token
        .or(account.automount_service_account_token)
        .unwrap_or(true);
    if !automount {
        return None;
    }
    let uid = account.metadata.uid.as_deref()?;
    let token = access
        .cluster
        .authenticator()
        .issue_service_account_token(namespace, name, uid);
    let dir = workdir.join("serviceaccount");
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("token"), token))
        .and_then(|()| std::fs::write(dir.join("ca.crt"), &access.ca_pem))
        .and_then(|()| std::fs::write(dir.join("namespace"), namespace));
    match written {
        Ok(()) => Some(dir),
        Err(error) => {
            tracing::warn!(%error, namespace, pod = ?pod.metadata.name, "writing the ServiceAccount volume");
            None
        }
    }
}

impl PodWorker {
    async fn start(kubelet: Kubelet, pod: Arc<Pod>) -> Self {
        let spec = pod.spec.clone().unwrap_or_default();
        let config = kubelet.inner.config.clone();
        let ports: Vec<u16> = spec
            .containers
            .iter()
            .map(|_| free_port().unwrap_or(0))
            .collect();
        let workdir = tempfile::Builder::new()
            .prefix("kube-sim-pod-")
            .tempdir()
            .ok();
        let workdir_path = workdir
            .as_ref()
            .map_or_else(std::env::temp_dir, |dir| dir.path().to_path_buf());

        // Publish the ports before anything runs, so Services can route once pods are Ready.
        let mut annotations = serde_json::Map::new();
        if let Some(first) = ports.first() {
            annotations.insert(POD_PORT_ANNOTATION.to_owned(), json!(first.to_string()));
        }
        for (container, port) in spec.containers.iter().zip(&ports) {
            annotations.insert(
                format!("{CONTAINER_PORT_ANNOTATION_PREFIX}{}", container.name),
                json!(port.to_string()),
            );
        }
        let api: Api<Pod> = Api::namespaced(
            kubelet.inner.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        if let Err(error) = api
            .patch(
                &name,
                &params,
                &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
            )
            .await
        {
            tracing::debug!(%error, pod = %name, "kubelet: annotating ports failed");
        }

        let container_id = |name: &str| {
            format!(
                "kube-sim://{}-{name}",
                pod.metadata.uid.as_deref().unwrap_or("")
            )
        };
        let runtime = Arc::new(Mutex::new(PodRuntime {
            init: spec
                .init_containers
                .iter()
                .flatten()
                .map(|c| {
                    ContainerRuntime::new(
                        &c.name,
                        c.image.as_deref().unwrap_or(""),
                        container_id(&c.name),
                    )
                })
                .collect(),
            main: spec
                .containers
                .iter()
                .map(|c| {
                    ContainerRuntime::new(
                        &c.name,
                        c.image.as_deref().unwrap_or(""),
                        container_id(&c.name),
                    )
                })
                .collect(),
        }));
        if !spec.init_containers.as_ref().is_none_or(Vec::is_empty) {
            let mut runtime = runtime.lock().unwrap_or_else(|p| p.into_inner());
            for container in &mut runtime.main {
                container.state = RunState::Waiting {
                    reason: "PodInitializing".to_owned(),
                    message: None,
                };
            }
        }
        let changed = Arc::new(Notify::new());
        let (stop, stop_receiver) = watch::channel(None);
        let restart_policy = RestartPolicy::of(&pod);
        let pod_grace = spec
            .termination_grace_period_seconds
            .map_or(DEFAULT_GRACE, |s| {
                Duration::from_secs(u64::try_from(s).unwrap_or(0))
            });
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let service_account_dir = match &config.api_access {
            Some(access) => {
                service_account_volume(&kubelet.inner.client, access, &pod, &workdir_path).await
            }
            None => None,
        };
        let api_endpoint = config
            .api_access
            .as_ref()
            .map(|access| (access.host.clone(), access.port));
        let hosts_file = kubelet
            .inner
            .hosts
            .for_namespace(namespace)
            .map_err(|error| error.to_string());
        let context = |container: &k8s_openapi::api::core::v1::Container,
                       index: usize,
                       init: bool,
                       port: u16| ContainerContext {
            pod: pod.clone(),
            spec: container.clone(),
            index,
            init,
            port,
            image: image_source(&config, container.image.as_deref().unwrap_or("")),
            events: ContainerEvents {
                recorder: kubelet.inner.recorder.clone(),
                source: Source::kubelet(env::NODE_NAME),
                involved: Involved::pod(
                    &pod,
                    Some(format!(
                        "spec.{}{{{}}}",
                        if init { "initContainers" } else { "containers" },
                        container.name
                    )),
                ),
            },
            workdir: workdir_path.clone(),
            client: kubelet.inner.client.clone(),
            logs: config.log_sink.clone(),
            runtime: runtime.clone(),
            changed: changed.clone(),
            stop: stop_receiver.clone(),
            restart_policy,
            backoff_base: config.backoff_base,
            pod_grace,
            process_groups: kubelet.inner.process_groups.clone(),
            hosts_file: hosts_file.clone(),
            service_account_dir: service_account_dir.clone(),
            api_endpoint: api_endpoint.clone(),
        };
        let first_port = ports.first().copied().unwrap_or(0);
        // The scheduler's Event for the binding admission made (kube-sim's pods are bound to
        // this node when they are created).
        kubelet.inner.recorder.record(
            &Source::scheduler(),
            &Involved::pod(&pod, None),
            EventType::Normal,
            "Scheduled",
            format!(
                "Successfully assigned {namespace}/{name} to {}",
                env::NODE_NAME
            ),
        );
        let init_contexts: Vec<ContainerContext> = spec
            .init_containers
            .iter()
            .flatten()
            .enumerate()
            .map(|(index, c)| context(c, index, true, first_port))
            .collect();
        let main_contexts: Vec<ContainerContext> = spec
            .containers
            .iter()
            .zip(&ports)
            .enumerate()
            .map(|(index, (c, port))| context(c, index, false, *port))
            .collect();
        let supervisor = tokio::spawn(async move {
            for init in init_contexts {
                if !run_container(init).await {
                    return;
                }
            }
            futures::future::join_all(main_contexts.into_iter().map(run_container)).await;
        });
        let supervisor_abort = supervisor.abort_handle();
        PodWorker {
            kubelet,
            current: pod,
            runtime,
            changed,
            stop,
            start_time: now(),
            written: None,
            _workdir: workdir,
            supervisor: Some(supervisor),
            supervisor_abort,
        }
    }

    async fn sync_status(&mut self) {
        let (init, main) = {
            let runtime = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
            (runtime.init.clone(), runtime.main.clone())
        };
        let basis = status_basis(&self.current, self.written.as_ref());
        let status = pod_status(&basis, &init, &main, self.start_time, now());
        if self.written.as_ref() == Some(&status) {
            return;
        }
        if self.kubelet.write_status(&self.current, &status).await {
            self.written = Some(status);
        }
    }

    async fn run(&mut self, events: &mut watch::Receiver<PodEvent>) {
        let mut gone = false;
        let mut terminating = false;
        let mut supervisor = self.supervisor.take();
        self.sync_status().await;
        loop {
            if supervisor.is_none() && terminating {
                break;
            }
            tokio::select! {
                () = self.changed.notified() => self.sync_status().await,
                _ = async {
                    match supervisor.as_mut() {
                        Some(handle) => handle.await.is_ok(),
                        None => std::future::pending::<bool>().await,
                    }
                } => {
                    supervisor = None;
                    self.sync_status().await;
                }
                changed = events.changed(), if !gone => {
                    let event = if changed.is_err() {
                        PodEvent::Gone
                    } else {
                        events.borrow_and_update().clone()
                    };
                    match event {
                        PodEvent::Present(pod) => {
                            self.current = pod;
                            if self.current.metadata.deletion_timestamp.is_some() && !terminating {
                                terminating = true;
                                let _ = self.stop.send(Some(grace_period(&self.current)));
                            }
                        }
                        PodEvent::Gone => {
                            gone = true;
                            if !terminating {
                                terminating = true;
                                let spec_grace = self
                                    .current
                                    .spec
                                    .as_ref()
                                    .and_then(|s| s.termination_grace_period_seconds)
                                    .map_or(DEFAULT_GRACE, |s| {
                                        Duration::from_secs(u64::try_from(s).unwrap_or(0))
                                    });
                                let _ = self.stop.send(Some(spec_grace));
                            }
                        }
                    }
                }
            }
        }
        if !gone {
            self.sync_status().await;
            self.kubelet.finish_deletion(&self.current).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn grace_period_prefers_the_deletion_grace_then_the_spec_then_30s() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [], "terminationGracePeriodSeconds": 5}
        }))
        .expect("pod");
        assert_eq!(grace_period(&pod), Duration::from_secs(5));
        pod.metadata.deletion_grace_period_seconds = Some(2);
        assert_eq!(grace_period(&pod), Duration::from_secs(2));
        pod.metadata.deletion_grace_period_seconds = None;
        pod.spec
            .as_mut()
            .expect("spec")
            .termination_grace_period_seconds = None;
        assert_eq!(grace_period(&pod), DEFAULT_GRACE);
    }

    #[test]
    fn status_basis_keeps_foreign_conditions_from_the_api() {
        let current: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "status": {"conditions": [
                {"type": "Ready", "status": "False"},
                {"type": "example.com/gate", "status": "True"}]}
        }))
        .expect("pod");
        let written: PodStatus = serde_json::from_value(json!({
            "conditions": [{"type": "Ready", "status": "True"}]
        }))
        .expect("status");
        let basis = status_basis(&current, Some(&written));
        let conditions = basis
            .status
            .expect("status")
            .conditions
            .expect("conditions");
        let types: Vec<(&str, &str)> = conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(types, vec![("Ready", "True"), ("example.com/gate", "True")]);
    }
}
