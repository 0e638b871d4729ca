//! Pod status as the kubelet reports it, computed from what its containers are doing.
//!
//! Rules followed (Kubernetes documentation, "Pod Lifecycle"):
//! - phase `Pending` until every init container succeeded and a container ran; `Running` while a
//!   container runs or is restarting; `Succeeded` when every container terminated with exit code 0
//!   and none will restart; `Failed` when every container terminated, one failed, and none will
//!   restart;
//! - conditions `PodScheduled`, `PodReadyToStartContainers`, `Initialized`, `ContainersReady`
//!   and `Ready` (which also needs every readiness gate's condition to be True); a condition's
//!   `lastTransitionTime` changes only when its status does;
//! - `containerStatuses` with `ready`, `started`, `restartCount`, `state` and `lastState`;
//!   exit codes of signalled processes are 128 + the signal number.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::env::POD_IP;

/// What a container is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// Not running: being created, in back-off, or unable to start.
    Waiting {
        /// `ContainerCreating`, `CrashLoopBackOff`, `CreateContainerConfigError`, `PodInitializing`.
        reason: String,
        /// Details.
        message: Option<String>,
    },
    /// Running since `started_at`.
    Running {
        /// When the process started.
        started_at: Timestamp,
    },
    /// Ended.
    Terminated {
        /// The exit code (128 + signal for signalled processes).
        exit_code: i32,
        /// The signal that ended it, if one did.
        signal: Option<i32>,
        /// `Completed`, `Error`, `StartError`.
        reason: String,
        /// Details.
        message: Option<String>,
        /// When it started.
        started_at: Option<Timestamp>,
        /// When it ended.
        finished_at: Timestamp,
    },
}

/// One container's state as the kubelet tracks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRuntime {
    /// Container name.
    pub name: String,
    /// Image.
    pub image: String,
    /// Current state.
    pub state: RunState,
    /// The previous termination, after a restart.
    pub last_state: Option<RunState>,
    /// How often it was restarted.
    pub restart_count: i32,
    /// Whether the readiness probe passes.
    pub ready: bool,
    /// Whether the startup probe passed.
    pub started: bool,
    /// Whether it terminated and will not run again.
    pub finished: bool,
    /// The ID the pod status shows (`kube-sim://...`).
    pub container_id: String,
}

impl ContainerRuntime {
    /// A container that has not started yet.
    pub fn new(name: &str, image: &str, container_id: String) -> Self {
        ContainerRuntime {
            name: name.to_owned(),
            image: image.to_owned(),
            state: RunState::Waiting {
                reason: "ContainerCreating".to_owned(),
                message: None,
            },
            last_state: None,
            restart_count: 0,
            ready: false,
            started: false,
            finished: false,
            container_id,
        }
    }

    fn is_running(&self) -> bool {
        matches!(self.state, RunState::Running { .. })
    }

    fn succeeded(&self) -> bool {
        self.finished && matches!(self.state, RunState::Terminated { exit_code: 0, .. })
    }

    /// Whether it ran at least once (is running, terminated, or restarting).
    fn has_run(&self) -> bool {
        !matches!(self.state, RunState::Waiting { .. })
            || self.restart_count > 0
            || self.last_state.is_some()
    }
}

fn time(timestamp: Timestamp) -> Time {
    Time(timestamp)
}

fn api_state(state: &RunState, container_id: &str) -> ContainerState {
    match state {
        RunState::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..ContainerState::default()
        },
        RunState::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(time(*started_at)),
            }),
            ..ContainerState::default()
        },
        RunState::Terminated {
            exit_code,
            signal,
            reason,
            message,
            started_at,
            finished_at,
        } => ContainerState {
            terminated: Some(ContainerStateTerminated {
                container_id: Some(container_id.to_owned()),
                exit_code: *exit_code,
                signal: *signal,
                reason: Some(reason.clone()),
                message: message.clone(),
                started_at: started_at.map(time),
                finished_at: Some(time(*finished_at)),
            }),
            ..ContainerState::default()
        },
    }
}

/// The API form of a container's status.
pub fn container_status(runtime: &ContainerRuntime) -> ContainerStatus {
    let image_id = format!("kube-sim://{}", runtime.image);
    ContainerStatus {
        name: runtime.name.clone(),
        image: runtime.image.clone(),
        image_id,
        container_id: runtime.has_run().then(|| runtime.container_id.clone()),
        ready: runtime.ready && runtime.is_running(),
        started: Some(runtime.started && runtime.is_running()),
        restart_count: runtime.restart_count,
        state: Some(api_state(&runtime.state, &runtime.container_id)),
        last_state: Some(
            runtime
                .last_state
                .as_ref()
                .map(|state| api_state(state, &runtime.container_id))
                .unwrap_or_default(),
        ),
        ..ContainerStatus::default()
    }
}

/// The pod's phase from its containers' states.
pub fn pod_phase(init: &[ContainerRuntime], main: &[ContainerRuntime]) -> &'static str {
    if init.iter().any(|c| c.finished && !c.succeeded()) {
        return "Failed";
    }
    if !init.iter().all(ContainerRuntime::succeeded) {
        return "Pending";
    }
    if !main.is_empty() && main.iter().all(|c| c.finished) {
        return if main.iter().all(ContainerRuntime::succeeded) {
            "Succeeded"
        } else {
            "Failed"
        };
    }
    if main.iter().any(|c| c.is_running() || c.has_run()) {
        return "Running";
    }
    "Pending"
}

fn condition(
    previous: Option<&PodStatus>,
    type_: &str,
    status: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: Timestamp,
) -> PodCondition {
    let status_text = if status { "True" } else { "False" };
    let earlier = previous
        .and_then(|previous| previous.conditions.as_ref())
        .and_then(|conditions| conditions.iter().find(|c| c.type_ == type_));
    let transition = match earlier {
        Some(earlier) if earlier.status == status_text => earlier
            .last_transition_time
            .clone()
            .unwrap_or_else(|| time(now)),
        _ => time(now),
    };
    PodCondition {
        type_: type_.to_owned(),
        status: status_text.to_owned(),
        reason: reason.map(str::to_owned),
        message,
        last_transition_time: Some(transition),
        last_probe_time: None,
        observed_generation: None,
    }
}

fn names(containers: &[&ContainerRuntime]) -> String {
    containers
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The QoS class from the pod's resources.
fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = &pod.spec else {
        return "BestEffort";
    };
    let containers: Vec<_> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let has_any = containers.iter().any(|c| {
        c.resources.as_ref().is_some_and(|r| {
            r.requests.as_ref().is_some_and(|m| !m.is_empty())
                || r.limits.as_ref().is_some_and(|m| !m.is_empty())
        })
    });
    if !has_any {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        let Some(resources) = &c.resources else {
            return false;
        };
        ["cpu", "memory"].iter().all(|name| {
            let limit = resources.limits.as_ref().and_then(|m| m.get(*name));
            let request = resources
                .requests
                .as_ref()
                .and_then(|m| m.get(*name))
                .or(limit);
            limit.is_some() && limit == request
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The whole pod status.
pub fn pod_status(
    pod: &Pod,
    init: &[ContainerRuntime],
    main: &[ContainerRuntime],
    start_time: Timestamp,
    now: Timestamp,
) -> PodStatus {
    let previous = pod.status.as_ref();
    let phase = pod_phase(init, main);
    let initialized = init.iter().all(ContainerRuntime::succeeded);
    let unready: Vec<&ContainerRuntime> = main
        .iter()
        .filter(|c| !(c.ready && c.is_running()))
        .collect();
    let containers_ready = unready.is_empty();
    let completed = matches!(phase, "Succeeded" | "Failed");

    let gates: Vec<String> = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.readiness_gates.as_ref())
        .map(|gates| gates.iter().map(|g| g.condition_type.clone()).collect())
        .unwrap_or_default();
    let unmet_gates: Vec<&String> = gates
        .iter()
        .filter(|gate| {
            !previous
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| &c.type_ == *gate && c.status == "True"))
        })
        .collect();

    let mut conditions = vec![
        condition(
            previous,
            "PodReadyToStartContainers",
            !completed,
            None,
            None,
            now,
        ),
        condition(
            previous,
            "Initialized",
            initialized,
            (!initialized).then_some("ContainersNotInitialized"),
            (!initialized).then(|| {
                let incomplete: Vec<&ContainerRuntime> =
                    init.iter().filter(|c| !c.succeeded()).collect();
                format!(
                    "containers with incomplete status: [{}]",
                    names(&incomplete)
                )
            }),
            now,
        ),
    ];
    let (ready_reason, ready_message) = if completed {
        (Some("PodCompleted"), None)
    } else if !containers_ready {
        (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                names(&unready)
            )),
        )
    } else if !unmet_gates.is_empty() {
        (
            Some("ReadinessGatesNotReady"),
            Some(format!(
                "corresponding condition of pod readiness gate \"{}\" does not exist.",
                unmet_gates[0]
            )),
        )
    } else {
        (None, None)
    };
    let containers_ready_now = containers_ready && !completed;
    let ready_now = containers_ready_now && unmet_gates.is_empty();
    conditions.push(condition(
        previous,
        "ContainersReady",
        containers_ready_now,
        if containers_ready_now {
            None
        } else if completed {
            Some("PodCompleted")
        } else {
            Some("ContainersNotReady")
        },
        if containers_ready_now || completed {
            None
        } else {
            ready_message.clone()
        },
        now,
    ));
    conditions.push(condition(
        previous,
        "Ready",
        ready_now,
        if ready_now { None } else { ready_reason },
        if ready_now { None } else { ready_message },
        now,
    ));
    conditions.push(condition(previous, "PodScheduled", true, None, None, now));
    // Conditions others own (readiness gates) are kept as they are.
    for other in previous
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
    {
        if !conditions.iter().any(|c| c.type_ == other.type_) {
            conditions.push(other.clone());
        }
    }

    PodStatus {
        phase: Some(phase.to_owned()),
        conditions: Some(conditions),
        container_statuses: Some(main.iter().map(container_status).collect()),
        init_container_statuses: (!init.is_empty())
            .then(|| init.iter().map(container_status).collect()),
        host_ip: Some(POD_IP.to_owned()),
        host_ips: Some(vec![HostIP {
            ip: POD_IP.to_owned(),
        }]),
        pod_ip: Some(POD_IP.to_owned()),
        pod_ips: Some(vec![PodIP {
            ip: POD_IP.to_owned(),
        }]),
        start_time: Some(time(start_time)),
        qos_class: Some(qos_class(pod).to_owned()),
        ..PodStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("time")
    }

    fn running(name: &str, ready: bool) -> ContainerRuntime {
        ContainerRuntime {
            state: RunState::Running {
                started_at: at("2025-01-01T00:00:00Z"),
            },
            ready,
            started: true,
            ..ContainerRuntime::new(name, "img", format!("kube-sim://{name}"))
        }
    }

    fn terminated(name: &str, exit_code: i32) -> ContainerRuntime {
        ContainerRuntime {
            state: RunState::Terminated {
                exit_code,
                signal: None,
                reason: if exit_code == 0 { "Completed" } else { "Error" }.to_owned(),
                message: None,
                started_at: None,
                finished_at: at("2025-01-01T00:01:00Z"),
            },
            finished: true,
            ..ContainerRuntime::new(name, "img", format!("kube-sim://{name}"))
        }
    }

    fn pod() -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "app", "image": "img"}]}}))
        .expect("pod")
    }

    #[test]
    fn phase_follows_the_containers() {
        let creating = ContainerRuntime::new("app", "img", String::new());
        assert_eq!(pod_phase(&[], std::slice::from_ref(&creating)), "Pending");
        assert_eq!(pod_phase(&[], &[running("app", false)]), "Running");
        assert_eq!(pod_phase(&[], &[terminated("app", 0)]), "Succeeded");
        assert_eq!(
            pod_phase(&[], &[terminated("a", 0), terminated("b", 2)]),
            "Failed"
        );
        assert_eq!(
            pod_phase(
                std::slice::from_ref(&creating),
                std::slice::from_ref(&creating)
            ),
            "Pending"
        );
        assert_eq!(pod_phase(&[terminated("init", 1)], &[creating]), "Failed");
    }

    #[test]
    fn ready_needs_every_container_ready_and_keeps_transition_time() {
        let mut pod = pod();
        let now = at("2025-01-01T00:00:05Z");
        let status = pod_status(&pod, &[], &[running("app", false)], now, now);
        let ready = |status: &PodStatus| {
            status
                .conditions
                .as_ref()
                .expect("conditions")
                .iter()
                .find(|c| c.type_ == "Ready")
                .cloned()
                .expect("ready")
        };
        assert_eq!(ready(&status).status, "False");
        assert_eq!(
            ready(&status).message.as_deref(),
            Some("containers with unready status: [app]")
        );
        pod.status = Some(status);
        let later = at("2025-01-01T00:00:09Z");
        let status = pod_status(&pod, &[], &[running("app", true)], now, later);
        assert_eq!(ready(&status).status, "True");
        assert_eq!(ready(&status).last_transition_time, Some(Time(later)));
        pod.status = Some(status);
        let status = pod_status(
            &pod,
            &[],
            &[running("app", true)],
            now,
            at("2025-01-01T00:01:00Z"),
        );
        assert_eq!(
            ready(&status).last_transition_time,
            Some(Time(later)),
            "unchanged status keeps its transition time"
        );
    }

    #[test]
    fn container_status_reports_exit_code_and_restarts() {
        let mut container = terminated("app", 137);
        container.restart_count = 2;
        let status = container_status(&container);
        assert_eq!(status.restart_count, 2);
        assert!(!status.ready);
        assert_eq!(
            status.state.and_then(|s| s.terminated).map(|t| t.exit_code),
            Some(137)
        );
    }
}
