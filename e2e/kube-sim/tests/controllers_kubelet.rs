//! The simulated kubelet against the in-process API server, with real processes (`sim-pod`),
//! real probes and real signals.

// Test helpers outside #[test] functions: a failed set-up is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod controllers_support;

use std::time::{Duration, Instant};

use controllers_support::{SIM_POD_IMAGE, Sim, wait_for};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, DeleteParams, LogParams, PostParams};
use kube_sim::controllers::{ControllersConfig, POD_PORT_ANNOTATION};
use serde_json::json;

fn pod(name: &str, spec: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": spec
    }))
    .expect("pod")
}

fn condition(pod: &Pod, type_: &str) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

async fn http_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    Some(response)
}

fn port_of(pod: &Pod) -> u16 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_PORT_ANNOTATION))
        .and_then(|p| p.parse().ok())
        .expect("port annotation")
}

#[tokio::test]
async fn kubelet_resolves_env_runs_the_process_and_readiness_probe_makes_it_ready() {
    let sim = Sim::start(ControllersConfig::default()).await;
    let secrets: Api<Secret> = Api::namespaced(sim.client.clone(), "default");
    let config_maps: Api<ConfigMap> = Api::namespaced(sim.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "db"}, "stringData": {"password": "pw-1"}}),
            )
            .expect("secret"),
        )
        .await
        .expect("secret created");
    config_maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "settings"}, "data": {"LEVEL": "debug"}}),
            )
            .expect("config map"),
        )
        .await
        .expect("config map created");
    let spec = json!({"containers": [{
        "name": "app", "image": SIM_POD_IMAGE,
        "command": ["/app/sim-pod", "serve"], "args": ["--name=$(POD_NAME)"],
        "ports": [{"name": "http", "containerPort": 3000}],
        "env": [
            {"name": "PORT", "value": "3000"},
            {"name": "SIM_POD_READY_AFTER_MS", "value": "1500"},
            {"name": "SIM_POD_PRINT_ENV", "value": "DB_PASSWORD,LEVEL,POD_NAME,POD_NAMESPACE,PORT"},
            {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
            {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "LEVEL"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
        ],
        "readinessProbe": {"httpGet": {"path": "/health/ready", "port": "http"}, "periodSeconds": 1}
    }]});
    pods.create(&PostParams::default(), &pod("web", spec))
        .await
        .expect("pod created");

    // Running but not Ready while /health/ready answers 503.
    let running = wait_for("the pod to run", Duration::from_secs(20), || async {
        let pod = pods.get("web").await.ok()?;
        let status = pod.status.as_ref()?;
        (status.phase.as_deref() == Some("Running")).then_some(pod)
    })
    .await;
    assert_eq!(condition(&running, "PodScheduled").as_deref(), Some("True"));
    let ready = wait_for(
        "the readiness probe to pass",
        Duration::from_secs(20),
        || async {
            let pod = pods.get("web").await.ok()?;
            (condition(&pod, "Ready").as_deref() == Some("True")).then_some(pod)
        },
    )
    .await;
    let status = ready.status.clone().expect("status");
    assert_eq!(status.pod_ip.as_deref(), Some("127.0.0.1"));
    let container = &status.container_statuses.expect("container statuses")[0];
    assert!(container.ready && container.started == Some(true));
    assert!(
        container
            .state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .is_some()
    );
    assert_eq!(
        ready.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some("kube-sim")
    );

    let port = port_of(&ready);
    let answer = http_get(port, "/")
        .await
        .expect("the process serves on its port");
    assert!(
        answer.ends_with("web"),
        "HOSTNAME is the pod name: {answer}"
    );

    let logs = pods.logs("web", &LogParams::default()).await.expect("logs");
    assert!(logs.contains("DB_PASSWORD=pw-1"), "{logs}");
    assert!(logs.contains("LEVEL=debug"), "{logs}");
    assert!(logs.contains("POD_NAME=web"), "{logs}");
    assert!(logs.contains("POD_NAMESPACE=default"), "{logs}");
    assert!(
        logs.contains(&format!("PORT={port}")),
        "PORT is the pod's own port: {logs}"
    );
    assert!(logs.contains(r#"args=["serve", "--name=web"]"#), "{logs}");
    assert!(logs.contains("request /health/ready -> 503"), "{logs}");
    sim.stop().await;
}

#[tokio::test]
async fn kubelet_sends_sigterm_then_sigkill_after_the_grace_period() {
    let sim = Sim::start(ControllersConfig::default()).await;
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    let spec = json!({
        "terminationGracePeriodSeconds": 2,
        "containers": [{"name": "app", "image": SIM_POD_IMAGE,
            "env": [{"name": "SIM_POD_IGNORE_SIGTERM", "value": "1"}]}]
    });
    pods.create(&PostParams::default(), &pod("stubborn", spec))
        .await
        .expect("pod created");
    let ready = wait_for("the pod to be ready", Duration::from_secs(20), || async {
        let pod = pods.get("stubborn").await.ok()?;
        (condition(&pod, "Ready").as_deref() == Some("True")).then_some(pod)
    })
    .await;
    let port = port_of(&ready);
    assert!(http_get(port, "/health").await.is_some());

    let deleted_at = Instant::now();
    pods.delete("stubborn", &DeleteParams::default())
        .await
        .expect("delete accepted");
    // Graceful deletion: the pod stays, terminating, while the process ignores SIGTERM.
    let terminating = pods.get("stubborn").await.expect("still there");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    wait_for(
        "SIGTERM to reach the process",
        Duration::from_secs(10),
        || async {
            let logs = sim
                .server
                .cluster()
                .pod_logs()
                .read("default", "stubborn", "app")?;
            String::from_utf8_lossy(&logs)
                .contains("SIGTERM received, ignored")
                .then_some(())
        },
    )
    .await;
    assert!(
        http_get(port, "/health").await.is_some(),
        "alive after SIGTERM"
    );
    wait_for("the pod to be removed", Duration::from_secs(20), || async {
        pods.get_opt("stubborn").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(
        deleted_at.elapsed() >= Duration::from_millis(1900),
        "the kubelet waited for the grace period before SIGKILL"
    );
    assert!(
        http_get(port, "/health").await.is_none(),
        "SIGKILL ended the process"
    );
    sim.stop().await;
}

#[tokio::test]
async fn liveness_failure_restarts_the_container_and_exit_codes_are_reported() {
    let sim = Sim::start(ControllersConfig::default()).await;
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    let spec = json!({
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "app", "image": SIM_POD_IMAGE,
            // The first probe waits a second: with `failureThreshold: 1` a probe that beats the
            // process to its port would kill it, on a real cluster as here.
            "livenessProbe": {"httpGet": {"path": "/health", "port": 3000},
                "initialDelaySeconds": 1, "periodSeconds": 1, "failureThreshold": 1,
                "timeoutSeconds": 5}}]
    });
    pods.create(&PostParams::default(), &pod("flaky", spec))
        .await
        .expect("pod created");
    let ready = wait_for("the pod to be ready", Duration::from_secs(20), || async {
        let pod = pods.get("flaky").await.ok()?;
        (condition(&pod, "Ready").as_deref() == Some("True")).then_some(pod)
    })
    .await;
    http_get(port_of(&ready), "/fail-liveness")
        .await
        .expect("liveness switched off");
    // The restart waits out the CrashLoopBackOff base (10 s): allow for a loaded machine.
    let restarted = wait_for(
        "a restart after the liveness failure",
        Duration::from_secs(60),
        || async {
            let pod = pods.get("flaky").await.ok()?;
            let container = pod
                .status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .first()?
                .clone();
            (container.restart_count >= 1 && container.ready).then_some(container)
        },
    )
    .await;
    let last = restarted
        .last_state
        .and_then(|s| s.terminated)
        .expect("the last state is the terminated run");
    assert_eq!(last.exit_code, 0, "sim-pod exits 0 on SIGTERM");
    assert!(
        last.message
            .unwrap_or_default()
            .contains("Liveness probe failed"),
        "the termination names the probe"
    );
    let events = pod_events(&sim, "flaky").await;
    assert!(
        events.iter().any(|(t, r, m, _)| t == "Warning"
            && r == "Unhealthy"
            && m.starts_with("Liveness probe failed: ")),
        "{events:?}"
    );
    assert!(
        events.iter().any(|(t, r, m, _)| t == "Normal"
            && r == "Killing"
            && m == "Container app failed liveness probe, will be restarted"),
        "{events:?}"
    );

    let failing = json!({"restartPolicy": "Never", "containers": [{"name": "app", "image": SIM_POD_IMAGE,
        "env": [{"name": "SIM_POD_EXIT_CODE", "value": "3"}]}]});
    pods.create(&PostParams::default(), &pod("fails", failing))
        .await
        .expect("pod created");
    let failed = wait_for("the pod to fail", Duration::from_secs(20), || async {
        let pod = pods.get("fails").await.ok()?;
        (pod.status.as_ref()?.phase.as_deref() == Some("Failed")).then_some(pod)
    })
    .await;
    let terminated = failed
        .status
        .expect("status")
        .container_statuses
        .expect("statuses")[0]
        .state
        .clone()
        .and_then(|s| s.terminated)
        .expect("terminated");
    assert_eq!(
        (terminated.exit_code, terminated.reason.as_deref()),
        (3, Some("Error"))
    );
    sim.stop().await;
}

#[tokio::test]
async fn missing_secret_holds_the_container_until_it_exists() {
    let sim = Sim::start(ControllersConfig::default()).await;
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    let spec = json!({"containers": [{"name": "app", "image": SIM_POD_IMAGE,
        "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "later", "key": "x"}}}]}]});
    pods.create(&PostParams::default(), &pod("waits", spec))
        .await
        .expect("pod created");
    let waiting = wait_for(
        "CreateContainerConfigError",
        Duration::from_secs(20),
        || async {
            let pod = pods.get("waits").await.ok()?;
            let waiting = pod
                .status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .first()?
                .state
                .clone()?
                .waiting?;
            (waiting.reason.as_deref() == Some("CreateContainerConfigError")).then_some(waiting)
        },
    )
    .await;
    assert_eq!(
        waiting.message.as_deref(),
        Some("secret \"later\" not found")
    );
    let secrets: Api<Secret> = Api::namespaced(sim.client.clone(), "default");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "later"}, "stringData": {"x": "1"}}),
            )
            .expect("secret"),
        )
        .await
        .expect("secret created");
    wait_for(
        "the container to start",
        Duration::from_secs(20),
        || async {
            let pod = pods.get("waits").await.ok()?;
            (condition(&pod, "Ready").as_deref() == Some("True")).then_some(())
        },
    )
    .await;
    sim.stop().await;
}

#[tokio::test]
async fn a_stand_in_image_is_ready_after_its_probe_initial_delay() {
    let sim = Sim::start(ControllersConfig {
        stand_in_images: vec!["nginx".to_owned()],
        ..ControllersConfig::default()
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    let spec = json!({"containers": [{"name": "app", "image": "nginx:1.27",
        "readinessProbe": {"httpGet": {"path": "/", "port": 80}, "initialDelaySeconds": 1}}]});
    let created_at = Instant::now();
    pods.create(&PostParams::default(), &pod("stand-in", spec))
        .await
        .expect("pod created");
    wait_for(
        "the stand-in pod to be ready",
        Duration::from_secs(20),
        || async {
            let pod = pods.get("stand-in").await.ok()?;
            (condition(&pod, "Ready").as_deref() == Some("True")).then_some(())
        },
    )
    .await;
    assert!(
        created_at.elapsed() >= Duration::from_millis(900),
        "not before the initial delay"
    );
    sim.stop().await;
}

/// The reasons and messages of the Events about pod `name`, oldest first.
async fn pod_events(sim: &Sim, name: &str) -> Vec<(String, String, String, i32)> {
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(sim.client.clone(), "default");
    let mut listed = events
        .list(&kube::api::ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .expect("events listed")
        .items;
    listed.sort_by_key(|event| event.metadata.creation_timestamp.clone().map(|t| t.0));
    listed
        .into_iter()
        .map(|event| {
            (
                event.type_.unwrap_or_default(),
                event.reason.unwrap_or_default(),
                event.message.unwrap_or_default(),
                event.count.unwrap_or_default(),
            )
        })
        .collect()
}

/// "Images" and the kubelet's image manager: an image that does not exist fails to pull
/// (`ErrImagePull`), then backs off (`ImagePullBackOff`) and is pulled again; the container never
/// runs and the pod is never Ready. The Events are those a kubelet records.
#[tokio::test]
async fn an_image_that_does_not_exist_fails_to_pull_and_backs_off() {
    let sim = Sim::start(ControllersConfig {
        backoff_base: Duration::from_secs(1),
        ..ControllersConfig::default()
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    let spec = json!({"containers": [{"name": "app", "image": "registry.example/nothing:1"}]});
    pods.create(&PostParams::default(), &pod("missing", spec))
        .await
        .expect("pod created");
    // ErrImagePull, then ImagePullBackOff, then a second pull (Pulling counted twice).
    let mut reasons = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pod = pods.get("missing").await.expect("the pod");
        assert_ne!(condition(&pod, "Ready").as_deref(), Some("True"));
        let status = pod.status.clone().expect("status");
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        if let Some(reason) = status
            .container_statuses
            .and_then(|statuses| statuses.first()?.state.clone()?.waiting?.reason)
        {
            reasons.insert(reason);
        }
        let repeated = pod_events(&sim, "missing")
            .await
            .iter()
            .any(|(_, reason, _, count)| reason == "Pulling" && *count >= 2);
        if reasons.len() == 2 && repeated {
            break;
        }
        assert!(Instant::now() < deadline, "only {reasons:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        reasons.into_iter().collect::<Vec<_>>(),
        ["ErrImagePull", "ImagePullBackOff"]
    );
    let events = pod_events(&sim, "missing").await;
    let has = |type_: &str, reason: &str, message: &str| {
        events
            .iter()
            .any(|(t, r, m, _)| t == type_ && r == reason && m == message)
    };
    assert!(
        has(
            "Normal",
            "Scheduled",
            "Successfully assigned default/missing to kube-sim"
        ),
        "{events:?}"
    );
    assert!(
        has(
            "Normal",
            "Pulling",
            "Pulling image \"registry.example/nothing:1\""
        ),
        "{events:?}"
    );
    assert!(
        events.iter().any(|(t, r, m, _)| t == "Warning"
            && r == "Failed"
            && m.starts_with("Failed to pull image \"registry.example/nothing:1\": ")),
        "{events:?}"
    );
    assert!(
        has("Warning", "Failed", "Error: ErrImagePull"),
        "{events:?}"
    );
    assert!(
        has(
            "Normal",
            "BackOff",
            "Back-off pulling image \"registry.example/nothing:1\""
        ),
        "{events:?}"
    );
    assert!(
        has("Warning", "Failed", "Error: ImagePullBackOff"),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|(_, r, _, _)| r == "Started"),
        "it never starts"
    );
    sim.stop().await;
}

/// The kubelet's Events of a container's life ("Created container: app", "Started container
/// app"), one `Unhealthy` per failed probe with the probe's output, counted rather than written
/// anew (client-go's EventCorrelator), and `Killing` when the pod is deleted.
#[tokio::test]
async fn a_container_s_life_and_its_failing_probe_are_recorded_as_events() {
    let sim = Sim::start(ControllersConfig::default()).await;
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    let spec = json!({"containers": [{"name": "app", "image": SIM_POD_IMAGE,
        "env": [{"name": "SIM_POD_READY_AFTER_MS", "value": "600000"}],
        "readinessProbe": {"httpGet": {"path": "/health/ready", "port": 8080}, "periodSeconds": 1}}]});
    pods.create(&PostParams::default(), &pod("unready", spec))
        .await
        .expect("pod created");
    let unhealthy = wait_for(
        "the failing readiness probe to be counted",
        Duration::from_secs(30),
        || async {
            pod_events(&sim, "unready")
                .await
                .into_iter()
                .find(|(_, reason, message, count)| {
                    reason == "Unhealthy" && message.contains("statuscode: 503") && *count >= 3
                })
        },
    )
    .await;
    assert_eq!(unhealthy.0, "Warning");
    assert_eq!(
        unhealthy.2,
        "Readiness probe failed: HTTP probe failed with statuscode: 503"
    );
    let events = pod_events(&sim, "unready").await;
    assert_eq!(
        events
            .iter()
            .filter(|(_, reason, message, _)| reason == "Unhealthy" && *message == unhealthy.2)
            .count(),
        1,
        "one Event, counted: {events:?}"
    );
    for (reason, message) in [
        (
            "Pulled",
            format!("Container image \"{SIM_POD_IMAGE}\" already present on machine"),
        ),
        ("Created", "Created container: app".to_owned()),
        ("Started", "Started container app".to_owned()),
    ] {
        assert!(
            events
                .iter()
                .any(|(_, r, m, _)| r == reason && *m == message),
            "{reason}: {events:?}"
        );
    }
    pods.delete("unready", &DeleteParams::default())
        .await
        .expect("deleted");
    wait_for("the Killing Event", Duration::from_secs(30), || async {
        pod_events(&sim, "unready")
            .await
            .into_iter()
            .find(|(_, reason, message, _)| {
                reason == "Killing" && message == "Stopping container app"
            })
    })
    .await;
    sim.stop().await;
}

/// A container that keeps failing is restarted with back-off, and the kubelet records `BackOff`
/// ("Back-off restarting failed container NAME in pod NAME_NAMESPACE(UID)") while it waits.
#[tokio::test]
async fn a_crash_looping_container_records_back_off() {
    let sim = Sim::start(ControllersConfig {
        backoff_base: Duration::from_secs(1),
        ..ControllersConfig::default()
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    let spec = json!({"containers": [{"name": "app", "image": SIM_POD_IMAGE,
        "env": [{"name": "SIM_POD_EXIT_CODE", "value": "1"}]}]});
    let created = pods
        .create(&PostParams::default(), &pod("crash", spec))
        .await
        .expect("pod created");
    let uid = created.metadata.uid.expect("uid");
    let back_off = wait_for("the BackOff Event", Duration::from_secs(60), || async {
        pod_events(&sim, "crash")
            .await
            .into_iter()
            .find(|(_, reason, _, _)| reason == "BackOff")
    })
    .await;
    assert_eq!(back_off.0, "Warning");
    assert_eq!(
        back_off.2,
        format!("Back-off restarting failed container app in pod crash_default({uid})")
    );
    sim.stop().await;
}
