//! `sim-pod`: a small, predictable process for the tests of kube-sim's kubelet, Deployments, Jobs
//! and Services. It serves HTTP on `PORT` on 127.0.0.1 and is steered by environment variables:
//!
//! - `SIM_POD_EXIT_CODE` with `SIM_POD_EXIT_AFTER_MS`: exit with that code after that long
//!   (without `SIM_POD_EXIT_AFTER_MS`: at once, before serving);
//! - `SIM_POD_READY_AFTER_MS`: `/health/ready` answers 503 until then, 200 after;
//! - `SIM_POD_IGNORE_SIGTERM=1`: SIGTERM is logged and ignored (only SIGKILL ends it);
//! - `SIM_POD_PRINT_ENV=A,B`: prints `A=value` lines at start.
//!
//! Endpoints: `/health` (200 while alive, 500 after `GET /fail-liveness`), `/health/ready`,
//! `GET /unready` and `GET /ready` switch readiness, `/` answers with `HOSTNAME` (the pod name).
//! Every request and SIGTERM is logged on stdout.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
}

struct State {
    started: Instant,
    ready_after: Duration,
    forced_unready: AtomicBool,
    liveness_failed: AtomicBool,
    name: String,
}

fn respond(state: &State, path: &str) -> (u16, String) {
    match path {
        "/health" => {
            if state.liveness_failed.load(Ordering::SeqCst) {
                (500, "dead".to_owned())
            } else {
                (200, "alive".to_owned())
            }
        }
        "/health/ready" => {
            let ready = state.started.elapsed() >= state.ready_after
                && !state.forced_unready.load(Ordering::SeqCst);
            if ready {
                (200, "ready".to_owned())
            } else {
                (503, "not ready".to_owned())
            }
        }
        "/unready" => {
            state.forced_unready.store(true, Ordering::SeqCst);
            (200, "now unready".to_owned())
        }
        "/ready" => {
            state.forced_unready.store(false, Ordering::SeqCst);
            (200, "now ready".to_owned())
        }
        "/fail-liveness" => {
            state.liveness_failed.store(true, Ordering::SeqCst);
            (200, "liveness fails from now".to_owned())
        }
        _ => (200, state.name.clone()),
    }
}

async fn handle(mut socket: tokio::net::TcpStream, state: Arc<State>) {
    let mut buffer = vec![0_u8; 4096];
    let mut read = 0;
    while !buffer[..read].windows(4).any(|w| w == b"\r\n\r\n") && read < buffer.len() {
        match socket.read(&mut buffer[read..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => read += n,
        }
    }
    let request = String::from_utf8_lossy(&buffer[..read]);
    let path = request
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .unwrap_or("/")
        .to_owned();
    let (code, body) = respond(&state, &path);
    println!("request {path} -> {code}");
    let reason = if code == 200 { "OK" } else { "Error" };
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = socket.write_all(response.as_bytes()).await;
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let exit_code = env_u64("SIM_POD_EXIT_CODE").map(|code| u8::try_from(code).unwrap_or(1));
    let exit_after = env_u64("SIM_POD_EXIT_AFTER_MS").map(Duration::from_millis);
    if let Ok(names) = std::env::var("SIM_POD_PRINT_ENV") {
        for name in names.split(',').filter(|name| !name.is_empty()) {
            println!("{name}={}", std::env::var(name).unwrap_or_default());
        }
    }
    println!("args={:?}", std::env::args().skip(1).collect::<Vec<_>>());
    if let (Some(code), None) = (exit_code, exit_after) {
        println!("exiting with {code}");
        return ExitCode::from(code);
    }
    let port = env_u64("PORT").unwrap_or(3000);
    let listener = match TcpListener::bind(("127.0.0.1", u16::try_from(port).unwrap_or(3000))).await
    {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("sim-pod: cannot listen on {port}: {error}");
            return ExitCode::from(2);
        }
    };
    println!("listening on {port}");
    let state = Arc::new(State {
        started: Instant::now(),
        ready_after: Duration::from_millis(env_u64("SIM_POD_READY_AFTER_MS").unwrap_or(0)),
        forced_unready: AtomicBool::new(false),
        liveness_failed: AtomicBool::new(false),
        name: std::env::var("HOSTNAME").unwrap_or_default(),
    });
    let ignore_sigterm = std::env::var("SIM_POD_IGNORE_SIGTERM").as_deref() == Ok("1");
    let Ok(mut sigterm) = signal(SignalKind::terminate()) else {
        eprintln!("sim-pod: cannot handle SIGTERM");
        return ExitCode::from(2);
    };
    let exit_timer = async {
        match (exit_after, exit_code) {
            (Some(after), Some(code)) => {
                tokio::time::sleep(after).await;
                code
            }
            _ => std::future::pending().await,
        }
    };
    tokio::pin!(exit_timer);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((socket, _)) = accepted {
                    tokio::spawn(handle(socket, state.clone()));
                }
            }
            _ = sigterm.recv() => {
                if ignore_sigterm {
                    println!("SIGTERM received, ignored");
                } else {
                    println!("SIGTERM received, exiting");
                    return ExitCode::SUCCESS;
                }
            }
            code = &mut exit_timer => {
                println!("exiting with {code}");
                return ExitCode::from(code);
            }
        }
    }
}
