//! Support for the data side's process tests: spawn `kumiko-app worker`, `serve` or `migrate`
//! with exactly the environment a test gives (nothing inherited), collect its output, and reach
//! the throwaway Postgres the test started.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kumiko_runtime::config::{DatabaseTarget, SecretUrl};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// A running `kumiko-app`, killed on drop if still running.
pub struct Proc {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    status: Option<ExitStatus>,
    /// The port it serves health on (`PORT`).
    pub port: u16,
    _dir: tempfile::TempDir,
}

/// Spawns `kumiko-app ARGS` with only `env` (plus a free `PORT` and a private working and data
/// directory).
pub fn spawn(args: &[&str], env: &[(&str, String)]) -> Proc {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = kumiko_testkit::free_port().expect("free port");
    let mut command = Command::new(env!("CARGO_BIN_EXE_kumiko-app"));
    command
        .args(args)
        .current_dir(dir.path())
        .env_clear()
        .env("PORT", port.to_string())
        .env("KUMIKO_DATA_DIR", dir.path().join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("spawn kumiko-app");
    let stdout = collect(child.stdout.take().expect("stdout"));
    let stderr = collect(child.stderr.take().expect("stderr"));
    Proc {
        child,
        stdout,
        stderr,
        status: None,
        port,
        _dir: dir,
    }
}

/// Runs `kumiko-app ARGS` to completion (at most `timeout`): exit code, stdout, stderr.
pub fn run(args: &[&str], env: &[(&str, String)], timeout: Duration) -> (i32, String, String) {
    let mut process = spawn(args, env);
    let status = process.wait_exit(timeout).unwrap_or_else(|| {
        panic!(
            "`{}` did not exit within {timeout:?}:\n{}",
            args.join(" "),
            process.output()
        )
    });
    (
        status.code().unwrap_or(-1),
        process.stdout().join("\n"),
        process.stderr().join("\n"),
    )
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

impl Proc {
    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Stdout lines so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Stderr lines so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Everything it printed, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "{}\n--- stderr ---\n{}",
            self.stdout().join("\n"),
            self.stderr().join("\n")
        )
    }

    /// Stdout lines that are JSON log records.
    pub fn json_logs(&self) -> Vec<serde_json::Value> {
        self.stdout()
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The first log record with this message.
    pub fn log(&self, message: &str) -> Option<serde_json::Value> {
        self.json_logs()
            .into_iter()
            .find(|record| record["message"] == message)
    }

    /// The exit status, if it has exited.
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
                std::thread::sleep(Duration::from_millis(100));
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until `/health/ready` answers 200; panics with the output otherwise.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some((200, _)) = http_get(self.port, "/health/ready") {
                return;
            }
            if let Some(status) = self.try_exit() {
                std::thread::sleep(Duration::from_millis(100));
                panic!("exited with {status} before ready:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("not ready within {timeout:?}:\n{}", self.output());
    }

    /// Waits until a log record with `message` appears.
    pub fn wait_for_log(&self, message: &str, timeout: Duration) -> Option<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(record) = self.log(message) {
                return Some(record);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILL: no shutdown, no release of anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("send SIGTERM");
        self.wait_exit(timeout)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            self.kill();
        }
    }
}

/// `GET path` over HTTP/1.1 with `Connection: close`: the status and the body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// A throwaway Postgres, its URL and the runtime's target for it.
pub struct Database {
    pub server: kumiko_testkit::TempPostgres,
    pub url: String,
}

impl Database {
    /// Starts a server; the app uses its `postgres` database as superuser.
    pub fn start() -> Self {
        let server = kumiko_testkit::TempPostgres::start().expect("postgres starts");
        let url = server.superuser_url("postgres");
        Self { server, url }
    }

    /// The runtime's target for it.
    pub fn target(&self) -> DatabaseTarget {
        DatabaseTarget::Postgres {
            url: SecretUrl::new(self.url.clone()),
        }
    }

    /// A new connection (for a test's own queries).
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.expect("connect")
    }
}

/// Runs `future` on a fresh single-threaded runtime (for the synchronous process tests).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}
