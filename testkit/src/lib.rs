//! Throwaway servers for tests.
//!
//! Tests never depend on a server left running: each [`TempPostgres`] or [`TempRedis`] is started
//! from the installed binaries (`initdb`/`pg_ctl`, `redis-server`) on a free loopback port in a
//! temporary directory, and is stopped and removed when dropped. `make deps` installs the binaries.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root (as in CI containers) the
//! server runs as the `postgres` system user that Debian's package creates.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why a throwaway server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A binary the server needs is not installed.
    #[error("{binary} not found (searched PATH and {searched}); run `make deps`")]
    MissingBinary {
        /// The binary's name.
        binary: &'static str,
        /// Where it was looked for besides PATH.
        searched: String,
    },
    /// Creating or preparing the temporary directory failed.
    #[error("preparing the temporary directory")]
    TempDir(#[source] std::io::Error),
    /// A command of the server's tooling failed.
    #[error("`{command}` failed: {output}")]
    Command {
        /// The command line, without secrets.
        command: String,
        /// Its stderr and stdout, trimmed.
        output: String,
    },
    /// Spawning a process failed.
    #[error("spawning {binary}")]
    Spawn {
        /// The binary.
        binary: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The server did not accept connections in time.
    #[error("{what} did not accept connections on port {port} within {seconds}s")]
    NotReady {
        /// Which server.
        what: &'static str,
        /// Its port.
        port: u16,
        /// How long we waited.
        seconds: u64,
    },
}

/// Asks the kernel for a free loopback TCP port.
///
/// The port is free when this returns; a server bound to it shortly after gets it unless another
/// process races for the same port, which the callers tolerate by retrying start-up.
pub fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn is_root() -> bool {
    // The effective uid, read from /proc: no libc call, so no unsafe code.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .and_then(|line| line.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

fn find_binary(name: &'static str, extra_dirs: &[PathBuf]) -> Result<PathBuf, Error> {
    let path_dirs = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    for dir in extra_dirs.iter().chain(path_dirs.iter()) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(Error::MissingBinary {
        binary: name,
        searched: extra_dirs
            .iter()
            .map(|dir| dir.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The directories where Debian installs the PostgreSQL server binaries, newest first.
fn postgres_bin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path().join("bin"))
                .filter(|bin| bin.is_dir())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.reverse();
    dirs
}

fn wait_for_port(what: &'static str, port: u16, timeout: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Err(Error::NotReady {
        what,
        port,
        seconds: timeout.as_secs(),
    })
}

fn run(command: &mut Command, description: &str) -> Result<(), Error> {
    let output = command.output().map_err(|source| Error::Spawn {
        binary: description.to_owned(),
        source,
    })?;
    if output.status.success() {
        return Ok(());
    }
    Err(Error::Command {
        command: description.to_owned(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stderr).trim(),
            String::from_utf8_lossy(&output.stdout).trim()
        ),
    })
}

/// A PostgreSQL server of its own, for one test (or one test binary).
///
/// The superuser is `postgres` with password [`TempPostgres::SUPERUSER_PASSWORD`]; connections
/// over TCP use SCRAM password authentication, as a real deployment would, so tests of passwords
/// and rotation mean something.
pub struct TempPostgres {
    dir: ServerDir,
    port: u16,
    pg_ctl: PathBuf,
    as_postgres_user: bool,
}

/// Where a server keeps its data: a temporary directory removed with the server, or a directory
/// of the caller's that outlives it.
enum ServerDir {
    Temporary(tempfile::TempDir),
    Kept(PathBuf),
}

impl ServerDir {
    fn path(&self) -> &Path {
        match self {
            ServerDir::Temporary(dir) => dir.path(),
            ServerDir::Kept(path) => path,
        }
    }
}

impl TempPostgres {
    /// The superuser's password in every throwaway server. Test-only, never used elsewhere.
    pub const SUPERUSER_PASSWORD: &'static str = "kumiko-test-superuser";

    /// Runs `initdb`, then starts the server on a free port and waits until it accepts connections.
    pub fn start() -> Result<Self, Error> {
        let dir = tempfile::Builder::new()
            .prefix("kumiko-pg-")
            .tempdir()
            .map_err(Error::TempDir)?;
        Self::start_with(ServerDir::Temporary(dir))
    }

    /// A server whose files live in `dir` (created if missing) and stay there when it stops:
    /// `initdb` runs only when `dir` holds no cluster yet (`data/PG_VERSION`), so a server started
    /// again in the same directory finds the databases, roles and rows of the last one. The
    /// superuser's password is reset to [`TempPostgres::SUPERUSER_PASSWORD`] only by `initdb`.
    pub fn start_in(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(Error::TempDir)?;
        Self::start_with(ServerDir::Kept(dir.to_path_buf()))
    }

    fn start_with(dir: ServerDir) -> Result<Self, Error> {
        let bin_dirs = postgres_bin_dirs();
        let initdb = find_binary("initdb", &bin_dirs)?;
        let pg_ctl = find_binary("pg_ctl", &bin_dirs)?;
        let as_postgres_user = is_root();

        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, Self::SUPERUSER_PASSWORD).map_err(Error::TempDir)?;
        if as_postgres_user {
            chown_to_postgres(dir.path())?;
            chown_to_postgres(&pwfile)?;
        }

        let data = dir.path().join("data");
        if data.join("PG_VERSION").is_file() {
            return Self::start_server(dir, &pg_ctl, as_postgres_user);
        }
        let mut init = command_as(&initdb, as_postgres_user);
        init.arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"]);
        run(&mut init, "initdb")?;
        Self::start_server(dir, &pg_ctl, as_postgres_user)
    }

    /// Starts the server of `dir/data` on a free port (retrying a port lost to a race).
    fn start_server(dir: ServerDir, pg_ctl: &Path, as_postgres_user: bool) -> Result<Self, Error> {
        let data = dir.path().join("data");
        let mut last_error = None;
        for _attempt in 0..5 {
            let port = free_port().map_err(Error::TempDir)?;
            let options = format!(
                "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} \
                 -c max_connections=200 -c fsync=off -c synchronous_commit=off \
                 -c full_page_writes=off -c log_min_messages=warning",
                dir.path().display()
            );
            let mut start = command_as(pg_ctl, as_postgres_user);
            start
                .arg("-D")
                .arg(&data)
                .args(["-l"])
                .arg(dir.path().join("server.log"))
                .args(["-o", &options, "-w", "-t", "30", "start"]);
            match run(&mut start, "pg_ctl start") {
                Ok(()) => {
                    wait_for_port("postgres", port, Duration::from_secs(30))?;
                    return Ok(Self {
                        dir,
                        port,
                        pg_ctl: pg_ctl.to_path_buf(),
                        as_postgres_user,
                    });
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or(Error::NotReady {
            what: "postgres",
            port: 0,
            seconds: 30,
        }))
    }

    /// The TCP port the server listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A `postgres://` URL for the superuser, to database `database`.
    pub fn superuser_url(&self, database: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{database}",
            Self::SUPERUSER_PASSWORD,
            self.port
        )
    }

    /// A `postgres://` URL for `user` with `password` to `database` on this server.
    pub fn url_for(&self, user: &str, password: &str, database: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// The server's log file, for a test's failure message.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let mut stop = command_as(&self.pg_ctl, self.as_postgres_user);
        stop.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = stop.status();
    }
}

fn command_as(binary: &Path, as_postgres_user: bool) -> Command {
    if as_postgres_user {
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg(binary);
        command
    } else {
        Command::new(binary)
    }
}

fn chown_to_postgres(path: &Path) -> Result<(), Error> {
    let (uid, gid) = postgres_ids().ok_or_else(|| Error::Command {
        command: "look up the postgres user".to_owned(),
        output: "no `postgres` user in /etc/passwd: run `make deps` (installs postgresql)"
            .to_owned(),
    })?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(Error::TempDir)
}

fn postgres_ids() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|line| line.starts_with("postgres:"))?;
    let mut fields = line.split(':').skip(2);
    let uid = fields.next()?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    Some((uid, gid))
}

/// A `redis-server` of its own, for one test.
///
/// It runs without persistence, on a free loopback port, and is killed when dropped.
pub struct TempRedis {
    _dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl TempRedis {
    /// Starts `redis-server` and waits until it accepts connections.
    pub fn start() -> Result<Self, Error> {
        let binary = find_binary("redis-server", &[])?;
        let dir = tempfile::Builder::new()
            .prefix("kumiko-redis-")
            .tempdir()
            .map_err(Error::TempDir)?;
        let port = free_port().map_err(Error::TempDir)?;
        let child = Command::new(&binary)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| Error::Spawn {
                binary: binary.display().to_string(),
                source,
            })?;
        let redis = Self {
            _dir: dir,
            port,
            child,
        };
        wait_for_port("redis", port, Duration::from_secs(10))?;
        Ok(redis)
    }

    /// The TCP port the server listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A `redis://` URL for this server.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for TempRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_starts_on_a_free_port_and_is_removed_on_drop() {
        let postgres = TempPostgres::start().expect("postgres starts");
        let port = postgres.port();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        let data_dir = postgres.dir.path().to_path_buf();
        drop(postgres);
        assert!(!data_dir.exists(), "the temporary directory is removed");
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }

    /// A server started in a directory of the caller's leaves it behind, and a server started
    /// again there runs on the same cluster (no second `initdb`).
    #[test]
    fn postgres_in_a_kept_directory_leaves_its_data_for_the_next_server() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = TempPostgres::start_in(dir.path()).expect("postgres starts");
        let port = first.port();
        drop(first);
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
        let version = dir.path().join("data/PG_VERSION");
        assert!(version.is_file(), "the data directory stays");
        let created = std::fs::metadata(&version)
            .and_then(|meta| meta.modified())
            .expect("mtime");
        let second = TempPostgres::start_in(dir.path()).expect("postgres starts again");
        assert!(std::net::TcpStream::connect(("127.0.0.1", second.port())).is_ok());
        assert_eq!(
            std::fs::metadata(&version)
                .and_then(|meta| meta.modified())
                .expect("mtime"),
            created,
            "no second initdb"
        );
    }

    #[test]
    fn redis_starts_and_stops() {
        let redis = TempRedis::start().expect("redis starts");
        let port = redis.port();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        drop(redis);
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
