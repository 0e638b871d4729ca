//! The contract between the Kumiko operator and a Kumiko app (DESIGN §4), written once.
//!
//! Both sides implement it: the operator renders pods that set these variables, run these commands
//! and probe these paths (`kumiko-operator`), the API rejects apps that set the variables
//! themselves (`kumiko-crds`), and the runtime reads them and serves the paths (`kumiko-runtime`).
//! A change here is a change on both sides at once.

use std::time::Duration;

pub mod duration;

/// The environment variables the operator sets on every Kumiko container.
pub mod env {
    /// The port the process listens on (API traffic and health); default [`super::DEFAULT_PORT`].
    pub const PORT: &str = "PORT";
    /// The Postgres URL: the runtime role for `serve` and `worker`, the owner role for `migrate`.
    pub const DATABASE_URL: &str = "DATABASE_URL";
    /// Optional: Redis for leader election and shared state.
    pub const REDIS_URL: &str = "REDIS_URL";
    /// Which process runs: [`super::Process::name`].
    pub const PROCESS: &str = "KUMIKO_PROCESS";
    /// The pod's name.
    pub const INSTANCE_ID: &str = "KUMIKO_INSTANCE_ID";
    /// The longest boot, a [`crate::duration`]; default [`super::DEFAULT_STARTUP_TIMEOUT`].
    pub const STARTUP_TIMEOUT: &str = "KUMIKO_STARTUP_TIMEOUT";
    /// The hard cap on a graceful shutdown; default [`super::DEFAULT_SHUTDOWN_TIMEOUT`].
    pub const SHUTDOWN_TIMEOUT: &str = "KUMIKO_SHUTDOWN_TIMEOUT";
    /// How long a draining process keeps serving; default [`super::DEFAULT_LINGER`].
    pub const LINGER: &str = "KUMIKO_LINGER";
    /// How long in-flight requests may take after the listener closes; default
    /// [`super::DEFAULT_DRAIN_TIMEOUT`].
    pub const DRAIN_TIMEOUT: &str = "KUMIKO_DRAIN_TIMEOUT";
    /// What the boot gate does with pending migrations: [`super::migrations_mode`].
    pub const MIGRATIONS_MODE: &str = "KUMIKO_MIGRATIONS_MODE";

    /// Every variable the operator sets itself, so an app's own `env` may not.
    pub const OPERATOR_SET: &[&str] = &[
        PORT,
        DATABASE_URL,
        REDIS_URL,
        PROCESS,
        INSTANCE_ID,
        STARTUP_TIMEOUT,
        SHUTDOWN_TIMEOUT,
        LINGER,
        DRAIN_TIMEOUT,
        MIGRATIONS_MODE,
    ];
}

/// The values of [`env::MIGRATIONS_MODE`].
pub mod migrations_mode {
    /// Refuse to boot on pending migrations (the default of `serve` and `worker`).
    pub const EXIT: &str = "exit";
    /// Boot, and report the pending migrations.
    pub const WARN: &str = "warn";
    /// Apply pending migrations at boot.
    pub const APPLY: &str = "apply";
}

/// The port a process listens on when [`env::PORT`] is not set.
pub const DEFAULT_PORT: u16 = 3000;
/// [`env::STARTUP_TIMEOUT`] when not set (seed 003).
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
/// [`env::SHUTDOWN_TIMEOUT`] when not set (seed 003).
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(40);
/// [`env::LINGER`] when not set (seed 003).
pub const DEFAULT_LINGER: Duration = Duration::from_secs(3);
/// [`env::DRAIN_TIMEOUT`] when not set (seed 003).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Liveness: 200 while the process is alive, never touching a dependency.
pub const LIVENESS_PATH: &str = "/health";
/// Readiness: 200 only when ready with every dependency healthy, 503 otherwise.
pub const READINESS_PATH: &str = "/health/ready";
/// Metrics: the Prometheus text format, served by the API and the worker on their HTTP port
/// (the port Prometheus scrapes through the operator's PodMonitor).
pub const METRICS_PATH: &str = "/metrics";

/// A Kumiko process type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Process {
    /// The API: `serve`.
    Api,
    /// Background and cron jobs: `worker`.
    Worker,
    /// The pre-deploy migration: `migrate apply`.
    Migrate,
}

impl Process {
    /// Its [`env::PROCESS`] value (and the operator's component label).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Worker => "worker",
            Self::Migrate => "migrate",
        }
    }

    /// The app's subcommand that runs it.
    pub const fn command(self) -> &'static str {
        match self {
            Self::Api => "serve",
            Self::Worker => "worker",
            Self::Migrate => "migrate",
        }
    }

    /// The container arguments the operator gives it unless the spec overrides them.
    pub const fn args(self) -> &'static [&'static str] {
        match self {
            Self::Api => &["serve"],
            Self::Worker => &["worker"],
            Self::Migrate => &["migrate", "apply"],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_process_runs_its_own_command_first() {
        for process in [Process::Api, Process::Worker, Process::Migrate] {
            assert_eq!(process.args().first(), Some(&process.command()));
        }
    }

    #[test]
    fn the_default_durations_are_written_as_the_contract_writes_durations() {
        let written: Vec<String> = [
            DEFAULT_STARTUP_TIMEOUT,
            DEFAULT_SHUTDOWN_TIMEOUT,
            DEFAULT_LINGER,
            DEFAULT_DRAIN_TIMEOUT,
        ]
        .into_iter()
        .map(duration::format_duration)
        .collect();
        assert_eq!(written, ["120s", "40s", "3s", "30s"]);
        for text in &written {
            assert!(duration::parse_duration(text).is_ok(), "{text}");
        }
    }
}
