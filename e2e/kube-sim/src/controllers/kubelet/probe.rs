//! Container probes, run for real against the container's loopback port.
//!
//! Rules followed (Kubernetes documentation, "Configure Liveness, Readiness and Startup Probes"
//! and the Probe API reference):
//! - defaults: `periodSeconds` 10, `timeoutSeconds` 1, `successThreshold` 1,
//!   `failureThreshold` 3, `initialDelaySeconds` 0; the first probe runs after the initial delay,
//!   counted from the container's start;
//! - an HTTP probe succeeds with a status code from 200 to 399; a TCP probe when the connection
//!   opens; an exec probe when the command exits 0;
//! - liveness and readiness probes start once the startup probe has succeeded;
//! - `failureThreshold` consecutive failures of a startup or liveness probe kill the container;
//!   readiness turns false after `failureThreshold` consecutive failures and true after
//!   `successThreshold` consecutive successes.
//!
//! Every probe port (named or numeric) is the container's own loopback port: processes listen on
//! `PORT`. gRPC probes are not supported and always fail, with a log line saying so.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    /// `GET path` on the loopback port, with extra headers.
    Http {
        /// The loopback port.
        port: u16,
        /// The request path.
        path: String,
        /// Extra request headers.
        headers: Vec<(String, String)>,
    },
    /// A TCP connection to the loopback port.
    Tcp {
        /// The loopback port.
        port: u16,
    },
    /// A command run on the host with the container's environment.
    Exec {
        /// The command and its arguments.
        command: Vec<String>,
    },
    /// A probe kube-sim cannot run (gRPC, HTTPS, an unknown named port).
    Unsupported {
        /// Why.
        reason: String,
    },
}

/// A probe with its defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    /// What to check.
    pub action: ProbeAction,
    /// Delay before the first probe, from the container's start.
    pub initial_delay: Duration,
    /// Interval between probes.
    pub period: Duration,
    /// Per-probe timeout.
    pub timeout: Duration,
    /// Consecutive successes needed.
    pub success_threshold: u32,
    /// Consecutive failures tolerated.
    pub failure_threshold: u32,
    /// The probe's own termination grace period, if set.
    pub termination_grace: Option<Duration>,
}

fn seconds(value: Option<i32>, default: i32, minimum: i32) -> Duration {
    let value = value.unwrap_or(default).max(minimum);
    Duration::from_secs(u64::try_from(value).unwrap_or(0))
}

fn count(value: Option<i32>, default: i32) -> u32 {
    u32::try_from(value.unwrap_or(default).max(1)).unwrap_or(1)
}

/// The loopback port a probe port refers to: a number, or the name of one of the container's
/// ports, always served at the container's `PORT`.
fn probe_port(
    container: &Container,
    port: &IntOrString,
    loopback_port: u16,
) -> Result<u16, String> {
    match port {
        IntOrString::Int(_) => Ok(loopback_port),
        IntOrString::String(name) => {
            if let Ok(_number) = name.parse::<u16>() {
                return Ok(loopback_port);
            }
            let declared = container
                .ports
                .iter()
                .flatten()
                .any(|port| port.name.as_deref() == Some(name.as_str()));
            if declared {
                Ok(loopback_port)
            } else {
                Err(format!(
                    "port {name:?} is not a named port of container {:?}",
                    container.name
                ))
            }
        }
    }
}

/// The probe with defaults applied and its port mapped to the container's loopback port.
pub fn probe_spec(container: &Container, probe: &Probe, loopback_port: u16) -> ProbeSpec {
    let action = if let Some(http) = &probe.http_get {
        match probe_port(container, &http.port, loopback_port) {
            Ok(port)
                if http
                    .scheme
                    .as_deref()
                    .unwrap_or("HTTP")
                    .eq_ignore_ascii_case("HTTP") =>
            {
                ProbeAction::Http {
                    port,
                    path: http.path.clone().unwrap_or_else(|| "/".to_owned()),
                    headers: http
                        .http_headers
                        .iter()
                        .flatten()
                        .map(|header| (header.name.clone(), header.value.clone()))
                        .collect(),
                }
            }
            Ok(_) => ProbeAction::Unsupported {
                reason: "HTTPS probes are not supported by kube-sim".to_owned(),
            },
            Err(reason) => ProbeAction::Unsupported { reason },
        }
    } else if let Some(tcp) = &probe.tcp_socket {
        match probe_port(container, &tcp.port, loopback_port) {
            Ok(port) => ProbeAction::Tcp { port },
            Err(reason) => ProbeAction::Unsupported { reason },
        }
    } else if let Some(exec) = &probe.exec {
        ProbeAction::Exec {
            command: exec.command.clone().unwrap_or_default(),
        }
    } else {
        ProbeAction::Unsupported {
            reason: "gRPC probes are not supported by kube-sim".to_owned(),
        }
    };
    ProbeSpec {
        action,
        initial_delay: seconds(probe.initial_delay_seconds, 0, 0),
        period: seconds(probe.period_seconds, 10, 1),
        timeout: seconds(probe.timeout_seconds, 1, 1),
        success_threshold: count(probe.success_threshold, 1),
        failure_threshold: count(probe.failure_threshold, 3),
        termination_grace: probe
            .termination_grace_period_seconds
            .map(|value| Duration::from_secs(u64::try_from(value).unwrap_or(0))),
    }
}

/// Consecutive results of one probe, and the decision they lead to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeCounter {
    successes: u32,
    failures: u32,
}

/// What a probe's latest result means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The success threshold was just reached (or is held).
    Passing,
    /// The failure threshold was just reached (or is held).
    Failing,
    /// Neither threshold is reached: keep the previous state.
    Undecided,
}

impl ProbeCounter {
    /// Records one result and says whether a threshold is reached.
    pub fn record(&mut self, success: bool, spec: &ProbeSpec) -> Verdict {
        if success {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            if self.successes >= spec.success_threshold {
                return Verdict::Passing;
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.failures >= spec.failure_threshold {
                return Verdict::Failing;
            }
        }
        Verdict::Undecided
    }
}

/// Runs the probe once. `Err` carries the failure's description (for the log).
pub async fn run_probe(spec: &ProbeSpec, env: &[(String, String)]) -> Result<(), String> {
    match tokio::time::timeout(spec.timeout, run_action(&spec.action, env)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(format!("timed out after {:?}", spec.timeout)),
    }
}

async fn run_action(action: &ProbeAction, env: &[(String, String)]) -> Result<(), String> {
    match action {
        ProbeAction::Http {
            port,
            path,
            headers,
        } => {
            let code = http_get(*port, path, headers).await?;
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("HTTP probe failed with statuscode: {code}"))
            }
        }
        ProbeAction::Tcp { port } => tokio::net::TcpStream::connect(("127.0.0.1", *port))
            .await
            .map(|_| ())
            .map_err(|error| format!("dial tcp 127.0.0.1:{port}: {error}")),
        ProbeAction::Exec { command } => {
            let Some((program, arguments)) = command.split_first() else {
                return Err("exec probe without a command".to_owned());
            };
            let status = tokio::process::Command::new(program)
                .args(arguments)
                .env_clear()
                .envs(env.iter().map(|(key, value)| (key, value)))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .map_err(|error| format!("exec {program}: {error}"))?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("command {program} exited with {status}"))
            }
        }
        ProbeAction::Unsupported { reason } => Err(reason.clone()),
    }
}

/// A minimal HTTP/1.1 GET: the status code of the response.
async fn http_get(port: u16, path: &str, headers: &[(String, String)]) -> Result<u16, String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|error| format!("Get \"http://127.0.0.1:{port}{path}\": {error}"))?;
    let has_host = headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"));
    let mut request = format!("GET {path} HTTP/1.1\r\n");
    if !has_host {
        request.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    request.push_str("User-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|error| format!("writing the probe request: {error}"))?;
    let mut response = Vec::new();
    let mut buffer = [0_u8; 512];
    // The status line is all we need.
    while !response.windows(2).any(|pair| pair == b"\r\n") {
        let read = stream
            .read(&mut buffer)
            .await
            .map_err(|error| format!("reading the probe response: {error}"))?;
        if read == 0 {
            break;
        }
        response.extend_from_slice(&buffer[..read]);
        if response.len() > 8192 {
            break;
        }
    }
    parse_status_code(&response).ok_or_else(|| "malformed HTTP response".to_owned())
}

fn parse_status_code(response: &[u8]) -> Option<u16> {
    let line_end = response.windows(2).position(|pair| pair == b"\r\n")?;
    let line = std::str::from_utf8(&response[..line_end]).ok()?;
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(probe: serde_json::Value) -> (Container, Probe) {
        let container: Container = serde_json::from_value(json!({
            "name": "app", "image": "x", "ports": [{"name": "http", "containerPort": 3000}]
        }))
        .expect("container");
        let probe: Probe = serde_json::from_value(probe).expect("probe");
        (container, probe)
    }

    #[test]
    fn defaults_apply_and_named_port_maps_to_the_loopback_port() {
        let (container, probe) = container(json!({"httpGet": {"path": "/health", "port": "http"}}));
        let spec = probe_spec(&container, &probe, 41000);
        assert_eq!(
            spec.action,
            ProbeAction::Http {
                port: 41000,
                path: "/health".to_owned(),
                headers: vec![]
            }
        );
        assert_eq!(spec.period, Duration::from_secs(10));
        assert_eq!(spec.timeout, Duration::from_secs(1));
        assert_eq!((spec.success_threshold, spec.failure_threshold), (1, 3));
    }

    #[test]
    fn unknown_named_port_makes_the_probe_fail() {
        let (container, probe) = container(json!({"httpGet": {"path": "/", "port": "metrics"}}));
        assert!(matches!(
            probe_spec(&container, &probe, 1).action,
            ProbeAction::Unsupported { reason } if reason.contains("\"metrics\"")
        ));
    }

    #[test]
    fn thresholds_need_consecutive_results() {
        let (container, probe) = container(json!({"tcpSocket": {"port": 3000},
            "successThreshold": 2, "failureThreshold": 2}));
        let spec = probe_spec(&container, &probe, 1);
        let mut counter = ProbeCounter::default();
        assert_eq!(counter.record(true, &spec), Verdict::Undecided);
        assert_eq!(counter.record(false, &spec), Verdict::Undecided);
        assert_eq!(counter.record(true, &spec), Verdict::Undecided);
        assert_eq!(counter.record(true, &spec), Verdict::Passing);
        assert_eq!(counter.record(false, &spec), Verdict::Undecided);
        assert_eq!(counter.record(false, &spec), Verdict::Failing);
    }

    #[test]
    fn status_line_is_parsed() {
        assert_eq!(
            parse_status_code(b"HTTP/1.1 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status_code(b"garbage\r\n"), None);
    }

    #[tokio::test]
    async fn http_probe_reads_the_real_status_code() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            for code in ["200 OK", "503 Service Unavailable"] {
                let (mut socket, _) = listener.accept().await.expect("accept");
                let mut buffer = [0_u8; 1024];
                let _ = socket.read(&mut buffer).await;
                let response = format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n");
                socket.write_all(response.as_bytes()).await.expect("write");
            }
        });
        let (container, probe) = container(json!({"httpGet": {"path": "/health", "port": 3000}}));
        let spec = probe_spec(&container, &probe, port);
        assert_eq!(run_probe(&spec, &[]).await, Ok(()));
        let error = run_probe(&spec, &[]).await.expect_err("503 fails");
        assert!(error.contains("503"), "{error}");
        server.await.expect("server");
    }
}
