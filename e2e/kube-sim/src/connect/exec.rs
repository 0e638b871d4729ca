//! `pods/NAME/exec?command=..&container=..&stdin=..&stdout=..&stderr=..&tty=..`: a command run in
//! a running container, its standard streams over one WebSocket, as kubectl 1.32 asks for it.
//!
//! The protocol is the kubelet's WebSocket remote-command protocol
//! (`pkg/kubelet/cri/streaming/remotecommand/websocket.go`, framed by
//! `staging/src/k8s.io/apiserver/pkg/util/wsstream/conn.go`; the channel numbers and subprotocol
//! names are `staging/src/k8s.io/apimachinery/pkg/util/remotecommand/constants.go`):
//!
//! - the subprotocol is the first of the client's `Sec-WebSocket-Protocol` list the server
//!   serves: `v5.channel.k8s.io` (the only one kubectl 1.32's WebSocket executor asks for,
//!   `client-go/tools/remotecommand/websocket.go`), `v4.channel.k8s.io` (kube-rs), or the
//!   unversioned `channel.k8s.io` (also when no protocol is asked for). The base64 variants are
//!   not served;
//! - every binary message starts with its channel byte: stdin 0 (client to server), stdout 1,
//!   stderr 2, the error channel 3 (server to client), terminal resize 4 (client to server, JSON
//!   `{"Width":W,"Height":H}` objects), and in v5 the close signal 255: the message `[255, n]`
//!   half-closes channel `n` (kubectl sends `[255, 0]` at the end of its stdin, and the command
//!   sees the end of its input);
//! - right after the upgrade the server sends an empty message on the lowest channel it writes
//!   (stdout, else stderr, else the error channel) to tell the client the streams are up;
//! - when the command has ended and its output is sent, the server writes a `metav1.Status` as
//!   JSON on the error channel (v4 and v5; `exec.go`'s `ServeExec`): `Success`, or `Failure` with
//!   reason `NonZeroExitCode` and a cause of type (JSON `reason`) `ExitCode` whose message is the
//!   exit code, which kubectl exits with; the unversioned protocol writes only a failure, as
//!   text. Then the server closes the WebSocket.
//!
//! The command runs as the container's own process runs ([`crate::controllers::kubelet`]): in
//! the process's mount namespace (`nsenter --mount`, so it sees the pod's `/etc/hosts` and
//! ServiceAccount volume), with the container's environment (the kubelet's base variables, `env`
//! and `envFrom` resolved as at its start) and working directory. The image's program is the
//! container's binary: a command named like the container's `command[0]`, or like the mapped
//! binary's file name, runs that binary, and those names are on the command's `PATH` (links in a
//! directory of the session), so a shell finds them too; every other command is looked up in
//! `PATH`, as the image's other programs would be. With `tty=true` the command runs as the leader of a new
//! session on a pseudo-terminal (`setsid --ctty`), sized by the resize channel, and stdout and
//! stderr are both the terminal (the kubelet refuses `tty` with `stderr`). A client that leaves
//! before the command ends ends it (SIGKILL to its process group).
//!
//! Refused like kube-apiserver and the kubelet refuse them: without a WebSocket upgrade (`400
//! Upgrade request required`; kubectl then falls back to SPDY, which kube-sim does not serve),
//! with an unsupported subprotocol, without a command, without any of stdin, stdout and stderr,
//! with `tty` and `stderr` (400), for a pod that does not exist (404), without `container` for a
//! pod of several containers, for a container the pod does not have, or one that is not running
//! (400).

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::portforward::header_has;
use super::{read_pod, status_response};
use crate::cluster::Cluster;
use crate::controllers::kubelet::container::exit_code_of;
use crate::status::ApiError;

/// The stdin channel.
pub const STDIN: u8 = 0;
/// The stdout channel.
pub const STDOUT: u8 = 1;
/// The stderr channel.
pub const STDERR: u8 = 2;
/// The error channel (the final `metav1.Status`).
pub const ERROR: u8 = 3;
/// The terminal resize channel.
pub const RESIZE: u8 = 4;
/// The close signal of `v5.channel.k8s.io`.
pub const CLOSE: u8 = 255;

/// A remote-command subprotocol served over WebSockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `v5.channel.k8s.io`: v4 and the close signal.
    V5,
    /// `v4.channel.k8s.io`: the exit code as a JSON Status on the error channel.
    V4,
    /// `channel.k8s.io`, or no subprotocol: errors as text, no exit code.
    Unversioned,
}

impl Protocol {
    /// The subprotocol's name (empty when the client asked for none).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::V5 => "v5.channel.k8s.io",
            Protocol::V4 => "v4.channel.k8s.io",
            Protocol::Unversioned => "channel.k8s.io",
        }
    }

    /// The first of the client's subprotocols that is served (Go's `x/net/websocket` handshake
    /// walks the client's list in order); `Ok(None)`: the client asked for none, so none is
    /// answered and the unversioned protocol is spoken.
    pub fn negotiate(offered: &[&str]) -> Result<Option<Protocol>, ApiError> {
        if offered.is_empty() {
            return Ok(None);
        }
        for name in offered {
            let protocol = match *name {
                "v5.channel.k8s.io" => Protocol::V5,
                "v4.channel.k8s.io" => Protocol::V4,
                "channel.k8s.io" => Protocol::Unversioned,
                _ => continue,
            };
            return Ok(Some(protocol));
        }
        Err(ApiError::bad_request(format!(
            "requested protocol(s) are not supported: {offered:?}; supports [v5.channel.k8s.io v4.channel.k8s.io channel.k8s.io]"
        )))
    }
}

/// The query parameters of an exec request (`core/v1` `PodExecOptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOptions {
    /// The command and its arguments (`command`, repeated).
    pub command: Vec<String>,
    /// The container (`container`).
    pub container: Option<String>,
    /// Whether the client sends stdin.
    pub stdin: bool,
    /// Whether the client wants stdout.
    pub stdout: bool,
    /// Whether the client wants stderr.
    pub stderr: bool,
    /// Whether the command runs on a terminal.
    pub tty: bool,
}

/// Go's `strconv.ParseBool`, as the API server decodes query booleans.
fn parse_bool(value: &str) -> Result<bool, ApiError> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        other => Err(ApiError::bad_request(format!(
            "strconv.ParseBool: parsing {other:?}: invalid syntax"
        ))),
    }
}

impl ExecOptions {
    /// Parses and validates the query (`ValidatePodExecOptions` and the kubelet's `NewOptions`).
    pub fn parse(query: &str) -> Result<ExecOptions, ApiError> {
        let mut options = ExecOptions::default();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "command" => options.command.push(value.into_owned()),
                "container" if !value.is_empty() => options.container = Some(value.into_owned()),
                "stdin" => options.stdin = parse_bool(&value)?,
                "stdout" => options.stdout = parse_bool(&value)?,
                "stderr" => options.stderr = parse_bool(&value)?,
                "tty" => options.tty = parse_bool(&value)?,
                _ => {}
            }
        }
        if options.command.is_empty() {
            return Err(ApiError::bad_request(
                "you must specify at least one command for the container",
            ));
        }
        if !options.stdin && !options.stdout && !options.stderr {
            return Err(ApiError::bad_request(
                "you must specify at least 1 of stdin, stdout, stderr",
            ));
        }
        if options.tty && options.stderr {
            return Err(ApiError::bad_request(
                "tty and stderr cannot both be true: a terminal has one output stream",
            ));
        }
        Ok(options)
    }
}

/// How to start another process like a running container's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecTarget {
    /// The container's process (in its own mount namespace).
    pub pid: i32,
    /// Its environment, in order (later entries win).
    pub env: Vec<(String, String)>,
    /// Its working directory.
    pub workdir: PathBuf,
    /// The binary its image maps to.
    pub binary: PathBuf,
    /// The container's `command[0]`, which names the image's program.
    pub command: Option<String>,
}

/// One container: namespace, pod, container name.
pub type ContainerKey = (String, String, String);

/// The running containers' processes by namespace, pod and container, as the simulated kubelet
/// reports them.
#[derive(Debug, Default)]
pub struct RunningContainers {
    running: Mutex<HashMap<ContainerKey, ExecTarget>>,
}

impl RunningContainers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ContainerKey, ExecTarget>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A container's process started (replacing an earlier run's).
    pub fn started(&self, namespace: &str, pod: &str, container: &str, target: ExecTarget) {
        self.lock()
            .insert((namespace.into(), pod.into(), container.into()), target);
    }

    /// A container's process `pid` ended.
    pub fn stopped(&self, namespace: &str, pod: &str, container: &str, pid: i32) {
        let mut running = self.lock();
        let key = (namespace.into(), pod.into(), container.into());
        if running.get(&key).is_some_and(|target| target.pid == pid) {
            running.remove(&key);
        }
    }

    /// Every running container's process (the leader of its process group).
    pub fn processes(&self) -> Vec<(ContainerKey, i32)> {
        self.lock()
            .iter()
            .map(|(key, target)| (key.clone(), target.pid))
            .collect()
    }

    /// The process of a running container.
    pub fn get(&self, namespace: &str, pod: &str, container: &str) -> Option<ExecTarget> {
        self.lock()
            .get(&(namespace.into(), pod.into(), container.into()))
            .cloned()
    }
}

/// The argument vector to execute: the image's program for a command named like the container's
/// `command[0]` or like the mapped binary's file name; any other command as it is.
pub fn resolve_command(command: &[String], target: &ExecTarget) -> Vec<OsString> {
    let mut argv: Vec<OsString> = command.iter().map(OsString::from).collect();
    let Some(first) = command.first() else {
        return argv;
    };
    let file_name = |path: &Path| path.file_name().map(|name| name.to_os_string());
    let names_the_program = target.command.as_deref() == Some(first.as_str())
        || (!first.contains('/')
            && (file_name(&target.binary) == Some(OsString::from(first))
                || target.command.as_deref().map(Path::new).and_then(file_name)
                    == Some(OsString::from(first))));
    if names_the_program && let Some(program) = argv.first_mut() {
        *program = target.binary.clone().into_os_string();
    }
    argv
}

/// The names the image's program goes by: the mapped binary's file name and the container's
/// `command[0]`'s.
pub fn program_names(target: &ExecTarget) -> Vec<OsString> {
    let mut names: Vec<OsString> = [
        target.binary.file_name().map(OsString::from),
        target
            .command
            .as_deref()
            .map(Path::new)
            .and_then(Path::file_name)
            .map(OsString::from),
    ]
    .into_iter()
    .flatten()
    .collect();
    names.dedup();
    names
}

/// A directory holding the image's program under each of its [`program_names`] (symbolic
/// links to the binary), and `target` with that directory first on its `PATH`: in an image the
/// program is on `PATH`, so a shell in the container finds it (`sh -c 'kumiko-app ...'`).
fn with_program_on_path(target: &ExecTarget) -> std::io::Result<(tempfile::TempDir, ExecTarget)> {
    let directory = tempfile::Builder::new()
        .prefix("kube-sim-exec-")
        .tempdir()?;
    for name in program_names(target) {
        std::os::unix::fs::symlink(&target.binary, directory.path().join(name))?;
    }
    let mut target = target.clone();
    let path = target
        .env
        .iter()
        .rev()
        .find(|(key, _)| key == "PATH")
        .map(|(_, value)| value.clone())
        .unwrap_or_default();
    target.env.push((
        "PATH".to_owned(),
        format!("{}:{path}", directory.path().display()),
    ));
    Ok((directory, target))
}

/// The `nsenter(1)` arguments that run `argv` in `target`'s mount namespace and working
/// directory.
pub fn nsenter_arguments(target: &ExecTarget, argv: Vec<OsString>) -> Vec<OsString> {
    let mut arguments: Vec<OsString> = vec![
        "--target".into(),
        target.pid.to_string().into(),
        "--mount".into(),
    ];
    let mut wd = OsString::from("--wd=");
    wd.push(&target.workdir);
    arguments.push(wd);
    arguments.push("--".into());
    arguments.extend(argv);
    arguments
}

/// The Status written on the error channel when the command ended with `exit_code`.
pub fn exit_status(exit_code: i32, command: &[String]) -> Value {
    if exit_code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: command '{}' exited with {exit_code}",
            command.join(" ")
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": exit_code.to_string()}]},
    })
}

/// The terminal sizes in the resize channel's bytes so far (JSON objects one after the other);
/// the bytes of an incomplete last object stay in `buffer`.
pub fn terminal_sizes(buffer: &mut Vec<u8>) -> Vec<(u16, u16)> {
    #[derive(serde::Deserialize)]
    struct Size {
        #[serde(rename = "Width")]
        width: u16,
        #[serde(rename = "Height")]
        height: u16,
    }
    let mut sizes = Vec::new();
    let mut consumed = 0;
    let mut stream = serde_json::Deserializer::from_slice(buffer).into_iter::<Size>();
    while let Some(Ok(size)) = stream.next() {
        sizes.push((size.width, size.height));
        consumed = stream.byte_offset();
    }
    buffer.drain(..consumed);
    sizes
}

struct Plan {
    accept: String,
    protocol: Option<Protocol>,
    options: ExecOptions,
    target: ExecTarget,
}

fn plan(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    request: &Request,
) -> Result<Plan, ApiError> {
    let options = ExecOptions::parse(request.uri().query().unwrap_or(""))?;
    let pod = read_pod(cluster, namespace, name)?;
    let containers: Vec<String> = pod
        .spec
        .iter()
        .flat_map(|spec| spec.containers.iter())
        .map(|container| container.name.clone())
        .collect();
    let container = match (&options.container, containers.as_slice()) {
        (Some(container), _) => {
            if !containers.contains(container) {
                return Err(ApiError::bad_request(format!(
                    "container {container} is not valid for pod {name}"
                )));
            }
            container.clone()
        }
        (None, [only]) => only.clone(),
        (None, _) => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )));
        }
    };
    let target = cluster
        .running_containers()
        .get(namespace, name, &container)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "unable to upgrade connection: container not found (\"{container}\"): kube-sim runs no process for it (not running, or a stand-in image)"
            ))
        })?;
    // The API server resolves the pod and container first; the kubelet upgrades.
    let headers = request.headers();
    if !(header_has(headers, &header::UPGRADE, "websocket")
        && header_has(headers, &header::CONNECTION, "upgrade"))
    {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .collect();
    let protocol = Protocol::negotiate(&offered)?;
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| ApiError::bad_request("missing Sec-WebSocket-Key"))?;
    Ok(Plan {
        accept: derive_accept_key(key.as_bytes()),
        protocol,
        options,
        target,
    })
}

/// Serves the request: answers `101 Switching Protocols` and runs the command in a task, or
/// answers the refusal.
pub fn serve(cluster: &Cluster, namespace: &str, pod: &str, mut request: Request) -> Response {
    let plan = match plan(cluster, namespace, pod, &request) {
        Ok(plan) => plan,
        Err(error) => return status_response(&error),
    };
    let upgrade = hyper::upgrade::on(&mut request);
    let Plan {
        accept,
        protocol,
        options,
        target,
    } = plan;
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let socket =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                session(
                    socket,
                    protocol.unwrap_or(Protocol::Unversioned),
                    options,
                    target,
                )
                .await;
            }
            Err(error) => tracing::debug!(%error, "exec: upgrade failed"),
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Some(protocol) = protocol {
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(protocol.name()),
        );
    }
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// A message on `channel`.
fn frame(channel: u8, payload: &[u8]) -> Message {
    let mut bytes = Vec::with_capacity(payload.len() + 1);
    bytes.push(channel);
    bytes.extend_from_slice(payload);
    Message::binary(bytes)
}

/// A Close frame with status 1000: gorilla/websocket (kubectl's client) reads it as the end of
/// every stream, and any other close (even one without a status) as an error.
fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

/// What the command's side tells the session.
enum Event {
    /// Output on a channel.
    Output(u8, Vec<u8>),
    /// An output stream ended.
    OutputEnded,
    /// The process ended with this exit code.
    Exited(i32),
}

/// Where the client's stdin and terminal sizes go.
enum Input {
    /// A pipe to the process's stdin.
    Pipe(Option<tokio::process::ChildStdin>),
    /// The terminal's master side (written by a thread), for stdin and resizes.
    Terminal {
        writer: Option<std::sync::mpsc::Sender<Vec<u8>>>,
        master: std::fs::File,
    },
}

/// A started command.
struct Started {
    input: Input,
    events: mpsc::Receiver<Event>,
    /// Output streams still open.
    outputs: usize,
    /// The process group to kill when the client leaves.
    group: Option<i32>,
}

fn base_command(target: &ExecTarget, argv: Vec<OsString>) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("nsenter");
    command
        .args(nsenter_arguments(target, argv))
        .env_clear()
        .envs(
            target
                .env
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_str())),
        )
        .kill_on_drop(true);
    command
}

fn forward<R>(mut reader: R, channel: u8, events: mpsc::Sender<Event>)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut buffer = vec![0_u8; 32 * 1024];
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => {
                    if events
                        .send(Event::Output(channel, buffer[..read].to_vec()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = events.send(Event::OutputEnded).await;
    });
}

fn wait_for(mut child: tokio::process::Child, events: mpsc::Sender<Event>) {
    tokio::spawn(async move {
        let code = match child.wait().await {
            Ok(status) => exit_code_of(status).0,
            Err(_) => 1,
        };
        let _ = events.send(Event::Exited(code)).await;
    });
}

/// Starts the command on pipes.
fn start_piped(options: &ExecOptions, target: &ExecTarget) -> std::io::Result<Started> {
    let argv = resolve_command(&options.command, target);
    let mut command = base_command(target, argv);
    let piped = |wanted: bool| {
        if wanted {
            Stdio::piped()
        } else {
            Stdio::null()
        }
    };
    command
        .process_group(0)
        .stdin(piped(options.stdin))
        .stdout(piped(options.stdout))
        .stderr(piped(options.stderr));
    let mut child = command.spawn()?;
    let (sender, events) = mpsc::channel(64);
    let mut outputs = 0;
    if let Some(stdout) = child.stdout.take() {
        forward(stdout, STDOUT, sender.clone());
        outputs += 1;
    }
    if let Some(stderr) = child.stderr.take() {
        forward(stderr, STDERR, sender.clone());
        outputs += 1;
    }
    let stdin = child.stdin.take();
    let group = child.id().and_then(|id| i32::try_from(id).ok());
    wait_for(child, sender);
    Ok(Started {
        input: Input::Pipe(stdin),
        events,
        outputs,
        group,
    })
}

/// Starts the command on a new pseudo-terminal, as the leader of a new session whose
/// controlling terminal it is.
fn start_on_terminal(options: &ExecOptions, target: &ExecTarget) -> std::io::Result<Started> {
    use rustix::pty::{OpenptFlags, grantpt, ioctl_tiocgptpeer, openpt, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let terminal = ioctl_tiocgptpeer(
        &master,
        OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC,
    )?;
    let argv = resolve_command(&options.command, target);
    let mut setsid_argv: Vec<OsString> = vec!["nsenter".into()];
    setsid_argv.extend(nsenter_arguments(target, argv));
    let mut command = tokio::process::Command::new("setsid");
    command
        .arg("--ctty")
        .args(setsid_argv)
        .env_clear()
        .envs(
            target
                .env
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_str())),
        )
        .kill_on_drop(true)
        .stdin(Stdio::from(terminal.try_clone()?))
        .stdout(Stdio::from(terminal.try_clone()?))
        .stderr(Stdio::from(terminal));
    let child = command.spawn()?;
    // The terminal's copies in this process go with the command, so reading the master side
    // ends (EIO) once every process holding the terminal has ended.
    drop(command);
    let group = child.id().and_then(|id| i32::try_from(id).ok());
    let master = std::fs::File::from(master);
    let (sender, events) = mpsc::channel(64);
    let mut reader = master.try_clone()?;
    let output = sender.clone();
    std::thread::spawn(move || {
        let mut buffer = vec![0_u8; 32 * 1024];
        loop {
            match reader.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => {
                    if output
                        .blocking_send(Event::Output(STDOUT, buffer[..read].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = output.blocking_send(Event::OutputEnded);
    });
    let (writer, written) = std::sync::mpsc::channel::<Vec<u8>>();
    let mut input = master.try_clone()?;
    std::thread::spawn(move || {
        while let Ok(bytes) = written.recv() {
            if input.write_all(&bytes).is_err() {
                break;
            }
        }
    });
    wait_for(child, sender);
    Ok(Started {
        input: Input::Terminal {
            writer: options.stdin.then_some(writer),
            master,
        },
        events,
        outputs: 1,
        group,
    })
}

/// Runs one exec session until the command has ended and its output is sent, or the client has
/// left.
async fn session<S>(
    socket: WebSocketStream<S>,
    protocol: Protocol,
    options: ExecOptions,
    target: ExecTarget,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut incoming) = socket.split();
    let first = if options.stdout {
        STDOUT
    } else if options.stderr {
        STDERR
    } else {
        ERROR
    };
    if sink.send(frame(first, &[])).await.is_err() {
        return;
    }
    // The image's program by its names on `PATH`, for the session's lifetime.
    let (programs, target) = match with_program_on_path(&target) {
        Ok((programs, target)) => (Some(programs), target),
        Err(error) => {
            tracing::debug!(%error, "exec: the image's program is not on PATH");
            (None, target)
        }
    };
    let started = if options.tty {
        start_on_terminal(&options, &target)
    } else {
        start_piped(&options, &target)
    };
    let Started {
        mut input,
        mut events,
        mut outputs,
        group,
    } = match started {
        Ok(started) => started,
        Err(error) => {
            let message = format!("error executing command in container: {error}");
            let status = ApiError::internal(message.clone()).to_status();
            let payload = match protocol {
                Protocol::V5 | Protocol::V4 => status.to_string(),
                Protocol::Unversioned => message,
            };
            let _ = sink.send(frame(ERROR, payload.as_bytes())).await;
            let _ = sink.send(normal_close()).await;
            return;
        }
    };
    let mut resize = Vec::new();
    let mut exit_code = None;
    let mut client_left = false;
    while exit_code.is_none() || outputs > 0 {
        tokio::select! {
            message = incoming.next(), if !client_left => match message {
                Some(Ok(Message::Binary(bytes))) if !bytes.is_empty() => {
                    let payload = &bytes[1..];
                    match (bytes[0], &mut input) {
                        (STDIN, Input::Pipe(stdin)) => {
                            if let Some(pipe) = stdin
                                && pipe.write_all(payload).await.is_err()
                            {
                                *stdin = None;
                            }
                        }
                        (STDIN, Input::Terminal { writer, .. }) => {
                            if let Some(sender) = writer
                                && sender.send(payload.to_vec()).is_err()
                            {
                                *writer = None;
                            }
                        }
                        (RESIZE, Input::Terminal { master, .. }) => {
                            resize.extend_from_slice(payload);
                            for (width, height) in terminal_sizes(&mut resize) {
                                let size = rustix::termios::Winsize {
                                    ws_row: height,
                                    ws_col: width,
                                    ws_xpixel: 0,
                                    ws_ypixel: 0,
                                };
                                let _ = rustix::termios::tcsetwinsize(&*master, size);
                            }
                        }
                        (CLOSE, input) if protocol == Protocol::V5 && payload.first() == Some(&STDIN) => {
                            match input {
                                Input::Pipe(stdin) => *stdin = None,
                                // The end of input on a terminal is its EOF character (^D).
                                Input::Terminal { writer, .. } => {
                                    if let Some(sender) = writer {
                                        let _ = sender.send(vec![0x04]);
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    client_left = true;
                    if let Some(group) = group {
                        let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
                    }
                }
                Some(Ok(_)) => {}
            },
            event = events.recv() => match event {
                Some(Event::Output(channel, bytes)) => {
                    if !client_left && sink.send(frame(channel, &bytes)).await.is_err() {
                        client_left = true;
                    }
                }
                Some(Event::OutputEnded) => outputs = outputs.saturating_sub(1),
                Some(Event::Exited(code)) => exit_code = Some(code),
                None => break,
            },
        }
    }
    drop(programs);
    if client_left {
        return;
    }
    let code = exit_code.unwrap_or(1);
    let payload = match protocol {
        Protocol::V5 | Protocol::V4 => exit_status(code, &options.command).to_string(),
        Protocol::Unversioned if code == 0 => String::new(),
        Protocol::Unversioned => format!("command terminated with non-zero exit code: {code}"),
    };
    if !payload.is_empty() {
        let _ = sink.send(frame(ERROR, payload.as_bytes())).await;
    }
    let _ = sink.send(normal_close()).await;
    let _ = sink.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> ExecTarget {
        ExecTarget {
            pid: 42,
            env: vec![("PATH".to_owned(), "/usr/bin:/bin".to_owned())],
            workdir: PathBuf::from("/tmp/pod-1"),
            binary: PathBuf::from("/repo/target/debug/kumiko-app"),
            command: Some("/usr/local/bin/app".to_owned()),
        }
    }

    #[test]
    fn the_first_offered_subprotocol_that_is_served_wins() {
        assert_eq!(
            Protocol::negotiate(&["v5.channel.k8s.io"]).ok(),
            Some(Some(Protocol::V5))
        );
        assert_eq!(
            Protocol::negotiate(&["v4.channel.k8s.io", "v5.channel.k8s.io"]).ok(),
            Some(Some(Protocol::V4))
        );
        assert_eq!(
            Protocol::negotiate(&["base64.channel.k8s.io", "channel.k8s.io"]).ok(),
            Some(Some(Protocol::Unversioned))
        );
        assert_eq!(Protocol::negotiate(&[]).ok(), Some(None));
        assert!(Protocol::negotiate(&["SPDY/3.1", "v6.channel.k8s.io"]).is_err());
    }

    #[test]
    fn exec_options_need_a_command_a_stream_and_no_stderr_on_a_terminal() {
        let options = ExecOptions::parse(
            "command=sh&command=-c&command=echo+hi&stdout=true&stderr=1&container=app",
        )
        .expect("valid");
        assert_eq!(options.command, ["sh", "-c", "echo hi"]);
        assert_eq!(options.container.as_deref(), Some("app"));
        assert!(options.stdout && options.stderr && !options.stdin && !options.tty);
        for bad in [
            "stdout=true",
            "command=ls",
            "command=ls&stdout=true&stderr=true&tty=true",
            "command=ls&stdout=maybe",
        ] {
            assert!(ExecOptions::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_images_program_is_the_mapped_binary_and_other_commands_stay() {
        let run = |command: &[&str]| {
            resolve_command(
                &command.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
                &target(),
            )
        };
        let binary = OsString::from("/repo/target/debug/kumiko-app");
        assert_eq!(run(&["kumiko-app", "migrate", "status"])[0], binary);
        assert_eq!(run(&["kumiko-app", "migrate", "status"])[2], "status");
        assert_eq!(run(&["/usr/local/bin/app"])[0], binary);
        assert_eq!(run(&["app"])[0], binary);
        assert_eq!(run(&["sh", "-c", "pwd"])[0], "sh");
        assert_eq!(run(&["/bin/kumiko-app"])[0], "/bin/kumiko-app");
    }

    #[test]
    fn the_images_program_is_on_path_under_its_names() {
        let mut target = target();
        target.binary = std::env::current_exe().expect("test binary");
        target.command = Some("/usr/local/bin/app".to_owned());
        let (directory, on_path) = with_program_on_path(&target).expect("links");
        let path = &on_path.env.last().expect("PATH").1;
        assert!(
            path.starts_with(&directory.path().display().to_string()),
            "{path}"
        );
        assert!(path.ends_with(":/usr/bin:/bin"), "{path}");
        for name in program_names(&target) {
            let link = directory.path().join(name);
            assert_eq!(std::fs::read_link(&link).ok(), Some(target.binary.clone()));
        }
        assert!(directory.path().join("app").exists());
    }

    #[test]
    fn nsenter_enters_the_mount_namespace_and_working_directory() {
        let arguments = nsenter_arguments(&target(), vec!["pwd".into()]);
        assert_eq!(
            arguments,
            ["--target", "42", "--mount", "--wd=/tmp/pod-1", "--", "pwd"]
                .map(OsString::from)
                .to_vec()
        );
    }

    #[test]
    fn the_exit_code_is_a_non_zero_exit_code_status_cause() {
        assert_eq!(
            exit_status(0, &["true".to_owned()]),
            json!({"metadata": {}, "status": "Success"})
        );
        let failed = exit_status(3, &["false".to_owned()]);
        assert_eq!(failed["status"], "Failure");
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(
            failed["details"]["causes"],
            json!([{"reason": "ExitCode", "message": "3"}])
        );
    }

    #[test]
    fn terminal_sizes_are_json_objects_one_after_the_other() {
        let mut buffer = br#"{"Width":80,"Height":24}{"Width":120,"Height":40}{"Wid"#.to_vec();
        assert_eq!(terminal_sizes(&mut buffer), [(80, 24), (120, 40)]);
        assert_eq!(buffer, br#"{"Wid"#);
        buffer.extend_from_slice(br#"th":10,"Height":5}"#);
        assert_eq!(terminal_sizes(&mut buffer), [(10, 5)]);
        assert!(buffer.is_empty());
    }

    #[test]
    fn a_container_run_is_forgotten_only_by_its_own_process() {
        let running = RunningContainers::default();
        running.started("shop", "web-1", "app", target());
        running.stopped("shop", "web-1", "app", 7);
        assert!(running.get("shop", "web-1", "app").is_some());
        running.stopped("shop", "web-1", "app", 42);
        assert!(running.get("shop", "web-1", "app").is_none());
    }
}
