//! Support for process tests: spawn the real `kumiko-app` binary, talk raw HTTP/1.1 to it over
//! loopback, send it real signals, and read its JSON log lines from stdout.

#![allow(dead_code)]
// Test support: a failed setup step is a failed test, so panicking is the right report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A running `kumiko-app` process, killed on drop if still running.
pub struct App {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    status: Option<ExitStatus>,
}

/// Builds an `App`: command arguments and environment.
pub struct AppBuilder {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    inherit_nothing: bool,
    port: Option<u16>,
}

impl AppBuilder {
    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// Runs with no environment at all (not even PORT or KUMIKO_DATA_DIR): cwd is a temp dir.
    pub fn no_environment(mut self) -> Self {
        self.inherit_nothing = true;
        self
    }

    /// Spawns the process.
    pub fn spawn(self) -> App {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .current_dir(dir.path())
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let port = if self.inherit_nothing {
            self.port.unwrap_or(3000)
        } else {
            let port = self
                .port
                .unwrap_or_else(|| kumiko_testkit::free_port().expect("free port"));
            command
                .env("PORT", port.to_string())
                .env("KUMIKO_DATA_DIR", dir.path().join("data"));
            if self.program == kumiko_app() {
                command.env("KUMIKO_TEST_ROUTES", "1");
            }
            for (key, value) in &self.env {
                command.env(key, value);
            }
            port
        };
        let mut child = command.spawn().expect("spawn kumiko-app");
        let stdout = collect(child.stdout.take().expect("stdout"));
        let stderr = collect(child.stderr.take().expect("stderr"));
        App {
            child,
            port,
            dir,
            stdout,
            stderr,
            status: None,
        }
    }
}

fn collect(stream: impl Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            match line {
                Ok(line) => sink.lock().unwrap().push(line),
                Err(_) => break,
            }
        }
    });
    lines
}

/// The `kumiko-app` binary.
fn kumiko_app() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kumiko-app"))
}

/// An example app of this crate (`examples/<name>.rs`) running `args`. Cargo builds examples
/// beside the test binaries (`target/debug/examples`); when it is missing it is built here.
pub fn example(name: &str, args: &[&str]) -> AppBuilder {
    let test_binary = std::env::current_exe().expect("test binary path");
    let profile_dir = test_binary
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let program = profile_dir.join("examples").join(name);
    if !program.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args(["build", "-p", "kumiko-runtime", "--example", name])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building example {name} failed");
    }
    AppBuilder {
        program,
        args: args.iter().map(|arg| (*arg).to_owned()).collect(),
        env: Vec::new(),
        inherit_nothing: false,
        port: None,
    }
}

/// A binary of this package (`CARGO_BIN_EXE_<name>`) running `args`.
pub fn program(path: &str, args: &[&str]) -> AppBuilder {
    AppBuilder {
        program: PathBuf::from(path),
        args: args.iter().map(|arg| (*arg).to_owned()).collect(),
        env: Vec::new(),
        inherit_nothing: false,
        port: None,
    }
}

/// `kumiko-app worker`.
pub fn worker() -> AppBuilder {
    AppBuilder {
        program: kumiko_app(),
        args: vec!["worker".to_owned()],
        env: Vec::new(),
        inherit_nothing: false,
        port: None,
    }
}

/// `kumiko-app serve` with short shutdown durations (tests override them with `.env`).
pub fn serve() -> AppBuilder {
    AppBuilder {
        program: kumiko_app(),
        args: vec!["serve".to_owned()],
        env: Vec::new(),
        inherit_nothing: false,
        port: None,
    }
}

impl App {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal.
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("send signal");
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        self.signal(Signal::SIGTERM);
    }

    /// Waits until `/health/ready` answers 200, or panics with the logs after `timeout`.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(response) = get(self.port, "/health/ready")
                && response.status == 200
            {
                return;
            }
            if let Some(status) = self.try_exit() {
                panic!("exited with {status} before ready:\n{}", self.all_output());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("not ready within {timeout:?}:\n{}", self.all_output());
    }

    /// The exit status if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Waits for the exit, for at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                // Let the reader threads catch the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stdout lines so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Stdout then stderr, for failure messages.
    pub fn all_output(&self) -> String {
        let mut text = self.stdout().join("\n");
        text.push_str("\n--- stderr ---\n");
        text.push_str(&self.stderr.lock().unwrap().join("\n"));
        text
    }

    /// Stdout lines parsed as JSON (lines that are not JSON are skipped).
    pub fn json_logs(&self) -> Vec<serde_json::Value> {
        self.stdout()
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Waits until a stdout line satisfies `predicate`.
    pub fn wait_for_log(&self, timeout: Duration, predicate: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stdout().iter().any(|line| predicate(line)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// The data directory the app was given.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The working directory.
    pub fn cwd(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// A keep-alive HTTP/1.1 connection.
pub struct Connection {
    reader: BufReader<TcpStream>,
}

impl Connection {
    /// Connects to 127.0.0.1:port.
    pub fn open(port: u16) -> std::io::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            reader: BufReader::new(stream),
        })
    }

    /// Sends `GET path` and reads the response head (and body, when it has a length).
    pub fn get(&mut self, path: &str) -> std::io::Result<Response> {
        self.send(path)?;
        let mut response = self.read_head()?;
        if let Some(length) = response.header("content-length") {
            let length: usize = length.parse().unwrap_or(0);
            let mut body = vec![0; length];
            self.reader.read_exact(&mut body)?;
            response.body = String::from_utf8_lossy(&body).into_owned();
        }
        Ok(response)
    }

    /// Sends `GET path` without reading the answer.
    pub fn send(&mut self, path: &str) -> std::io::Result<()> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        self.reader.get_mut().write_all(request.as_bytes())
    }

    /// Reads a response's status line and headers.
    pub fn read_head(&mut self) -> std::io::Result<Response> {
        let mut status_line = String::new();
        if self.reader.read_line(&mut status_line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0);
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((key, value)) = line.split_once(':') {
                headers.push((key.trim().to_owned(), value.trim().to_owned()));
            }
        }
        Ok(Response {
            status,
            headers,
            body: String::new(),
        })
    }

    /// Reads one line of a streamed body.
    pub fn read_line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        Ok(line)
    }

    /// Whether the server has closed the connection (reads until EOF, within `timeout`).
    pub fn closed_by_server(&mut self, timeout: Duration) -> bool {
        let _ = self.reader.get_ref().set_read_timeout(Some(timeout));
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).is_ok()
    }
}

/// One request on a fresh connection.
pub fn get(port: u16, path: &str) -> std::io::Result<Response> {
    Connection::open(port)?.get(path)
}

/// Sends a request with a JSON body; returns (status, body).
pub fn send(port: u16, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    let body = rest
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
