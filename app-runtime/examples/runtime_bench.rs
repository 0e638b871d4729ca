//! Benchmark helper for `scripts/bench/runtime.sh` (`make bench`).
//!
//! `runtime_bench APP ready-time RUNS`: time from spawn to the first 200 on `/health/ready`, on
//! SQLite (fresh and existing data directory) and on a throwaway local Postgres (kumiko-testkit).
//! `runtime_bench APP flip RUNS`: time from SIGTERM to the first 503 on `/health/ready`.
//! Results are printed as `name value` lines (milliseconds), which the script formats.
//!
//! All traffic is on 127.0.0.1; every process it starts is stopped before it returns.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() {
    if let Err(error) = run() {
        eprintln!("runtime_bench: {error}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: runtime_bench APP (ready-time|flip) RUNS";
    let app = PathBuf::from(args.get(1).ok_or(usage)?);
    let runs: usize = args.get(3).ok_or(usage)?.parse()?;
    match args.get(2).map(String::as_str) {
        Some("ready-time") => ready_time(&app, runs),
        Some("flip") => flip(&app, runs),
        _ => Err(usage.into()),
    }
}

/// One GET over a fresh connection; returns the status code.
fn status_of(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_nodelay(true).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

struct Spawned {
    child: Child,
    port: u16,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn spawn(app: &Path, data_dir: &Path, env: &[(&str, &str)]) -> Result<Spawned> {
    let port = kumiko_testkit::free_port()?;
    let mut command = Command::new(app);
    command
        .arg("serve")
        .env_clear()
        .env("PORT", port.to_string())
        .env("KUMIKO_DATA_DIR", data_dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    Ok(Spawned {
        child: command.spawn()?,
        port,
    })
}

/// Spawns and returns the time to the first 200 on `/health/ready`.
fn time_to_ready(app: &Path, data_dir: &Path, env: &[(&str, &str)]) -> Result<(Spawned, f64)> {
    let started = Instant::now();
    let mut spawned = spawn(app, data_dir, env)?;
    while started.elapsed() < Duration::from_secs(30) {
        if status_of(spawned.port, "/health/ready") == Some(200) {
            let millis = started.elapsed().as_secs_f64() * 1000.0;
            return Ok((spawned, millis));
        }
        if let Ok(Some(status)) = spawned.child.try_wait() {
            return Err(format!("the app exited with {status} before ready").into());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Err("the app was not ready within 30 s".into())
}

fn stop(mut spawned: Spawned) -> Result<()> {
    kill(
        Pid::from_raw(i32::try_from(spawned.child.id())?),
        Signal::SIGTERM,
    )?;
    spawned.child.wait()?;
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(name: &str, mut samples: Vec<f64>) {
    samples.sort_by(f64::total_cmp);
    println!("{name}_p50 {:.2}", percentile(&samples, 50.0));
    println!("{name}_p99 {:.2}", percentile(&samples, 99.0));
    println!("{name}_max {:.2}", percentile(&samples, 100.0));
}

fn ready_time(app: &Path, runs: usize) -> Result<()> {
    let quick = [("KUMIKO_LINGER", "0s")];

    // SQLite, a fresh data directory each run (the boot applies the migrations).
    let mut fresh = Vec::new();
    for _ in 0..runs {
        let dir = tempfile::tempdir()?;
        let (spawned, millis) = time_to_ready(app, dir.path(), &quick)?;
        fresh.push(millis);
        stop(spawned)?;
    }
    report("ready_sqlite_fresh_ms", fresh);

    // SQLite, an existing data directory (the usual restart).
    let dir = tempfile::tempdir()?;
    let (spawned, _) = time_to_ready(app, dir.path(), &quick)?;
    stop(spawned)?;
    let mut warm = Vec::new();
    for _ in 0..runs {
        let (spawned, millis) = time_to_ready(app, dir.path(), &quick)?;
        warm.push(millis);
        stop(spawned)?;
    }
    report("ready_sqlite_ms", warm);

    // Postgres on this machine: migrate once, then boots against an up-to-date schema.
    let postgres = kumiko_testkit::TempPostgres::start()?;
    let url = postgres.superuser_url("postgres");
    let migrated = Command::new(app)
        .args(["migrate", "apply"])
        .env_clear()
        .env("DATABASE_URL", &url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    let postgres_env = if migrated.success() {
        vec![("KUMIKO_LINGER", "0s"), ("DATABASE_URL", url.as_str())]
    } else {
        // `migrate apply` is another part's work; until it exists, the boot gate applies.
        vec![
            ("KUMIKO_LINGER", "0s"),
            ("DATABASE_URL", url.as_str()),
            ("KUMIKO_MIGRATIONS_MODE", "apply"),
        ]
    };
    let scratch = tempfile::tempdir()?;
    let mut samples = Vec::new();
    for _ in 0..runs {
        let (spawned, millis) = time_to_ready(app, scratch.path(), &postgres_env)?;
        samples.push(millis);
        stop(spawned)?;
    }
    report("ready_postgres_ms", samples);
    drop(postgres);
    Ok(())
}

fn flip(app: &Path, runs: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let env = [("KUMIKO_LINGER", "300ms")];
    let mut samples = Vec::new();
    for _ in 0..runs {
        let (spawned, _) = time_to_ready(app, dir.path(), &env)?;
        let pid = Pid::from_raw(i32::try_from(spawned.child.id())?);
        let sent = Instant::now();
        kill(pid, Signal::SIGTERM)?;
        let mut flipped = None;
        while sent.elapsed() < Duration::from_secs(5) {
            if status_of(spawned.port, "/health/ready") == Some(503) {
                flipped = Some(sent.elapsed().as_secs_f64() * 1000.0);
                break;
            }
        }
        samples.push(flipped.ok_or("readiness did not turn 503 within 5 s")?);
        let mut spawned = spawned;
        spawned.child.wait()?;
    }
    report("flip_ms", samples);
    Ok(())
}
