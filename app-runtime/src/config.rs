//! Process configuration: the contract's environment variables (DESIGN §4), parsed by pure
//! functions that collect every mistake instead of stopping at the first.
//!
//! [`Config::from_env`] never fails: a value that does not parse is replaced by its default and
//! reported in [`ParsedConfig::errors`], so boot validation (phase 6) can report configuration and
//! component errors together, in one list.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use kumiko_contract::{Process, env, migrations_mode};

/// A snapshot of the process environment, by variable name.
pub type Env = BTreeMap<String, String>;

/// Reads the process environment into an [`Env`] (variables that are not valid UTF-8 are kept
/// lossily, so a mistake in them is still reported rather than silently ignored).
pub fn env_from_process() -> Env {
    std::env::vars_os()
        .map(|(key, value)| {
            (
                key.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            )
        })
        .collect()
}

/// The kind of process, `KUMIKO_PROCESS` in the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessKind {
    /// `serve`: the API process.
    Api,
    /// `worker`: background jobs.
    Worker,
    /// `migrate apply` / `migrate status`: the pre-deploy migration step.
    Migrate,
}

impl ProcessKind {
    /// The value of `KUMIKO_PROCESS` for this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => Process::Api.name(),
            Self::Worker => Process::Worker.name(),
            Self::Migrate => Process::Migrate.name(),
        }
    }

    /// The command that runs this kind of process.
    pub fn command(self) -> &'static str {
        match self {
            Self::Api => Process::Api.command(),
            Self::Worker => Process::Worker.command(),
            Self::Migrate => Process::Migrate.command(),
        }
    }
}

impl fmt::Display for ProcessKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the boot gate (phase 9) does with pending migrations, `KUMIKO_MIGRATIONS_MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MigrationsMode {
    /// Refuse to boot on pending migrations (the default).
    Exit,
    /// Boot anyway and log a warning.
    Warn,
    /// Apply pending migrations, then boot.
    Apply,
}

impl MigrationsMode {
    /// The value as written in the environment.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exit => migrations_mode::EXIT,
            Self::Warn => migrations_mode::WARN,
            Self::Apply => migrations_mode::APPLY,
        }
    }
}

/// How log lines are written to stdout, `KUMIKO_LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (the default).
    Json,
    /// Human-readable text.
    Text,
}

/// A URL that may carry a password. `Debug` and `Display` hide the user information; the full
/// value is reachable only through [`SecretUrl::expose`], for the one call that connects.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its password, for connecting. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with user information replaced by `***`: safe to log.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({})", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Replaces the user information of a URL (`user:password@`) with `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return "***".to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}://***@{}", &url[..scheme_end], &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// Where the database is: the tier is chosen by `DATABASE_URL` (seed 002).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// No `DATABASE_URL` (or a `sqlite:` one): an embedded SQLite file.
    Sqlite {
        /// The database file.
        path: PathBuf,
    },
    /// A `postgres://` URL.
    Postgres {
        /// The connection URL (with credentials, hidden in Debug).
        url: SecretUrl,
    },
}

impl DatabaseTarget {
    /// A description safe to log: the SQLite path or the redacted URL.
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite { path } => format!("sqlite:{}", path.display()),
            Self::Postgres { url } => url.redacted(),
        }
    }
}

/// The process configuration: every variable of the contract in DESIGN §4.
#[derive(Debug, Clone)]
pub struct Config {
    /// `KUMIKO_PROCESS` (defaults to the kind of the command).
    pub process: ProcessKind,
    /// `PORT`, default 3000. `0` binds an ephemeral port (logged at boot).
    pub port: u16,
    /// `DATABASE_URL`, or SQLite under the data directory.
    pub database: DatabaseTarget,
    /// `REDIS_URL`; `None` makes the process its own leader.
    pub redis_url: Option<SecretUrl>,
    /// `KUMIKO_DATA_DIR`, default `./data`.
    pub data_dir: PathBuf,
    /// `KUMIKO_INSTANCE_ID`, default the host name.
    pub instance_id: String,
    /// `KUMIKO_STARTUP_TIMEOUT`, default 120 s: caps the whole boot.
    pub startup_timeout: Duration,
    /// `KUMIKO_SHUTDOWN_TIMEOUT`, default 40 s: the watchdog's hard cap on shutdown.
    pub shutdown_timeout: Duration,
    /// `KUMIKO_LINGER`, default 3 s: how long to keep serving after readiness turned 503.
    pub linger: Duration,
    /// `KUMIKO_DRAIN_TIMEOUT`, default 30 s: how long in-flight requests may take to finish.
    pub drain_timeout: Duration,
    /// `KUMIKO_MIGRATIONS_MODE`: default `exit` on Postgres, `apply` on the embedded SQLite tier.
    pub migrations_mode: MigrationsMode,
    /// `KUMIKO_LOG_FORMAT`, default `json`.
    pub log_format: LogFormat,
    /// `KUMIKO_DB_POOL_SIZE`, the pool's maximum connections (default 10 on Postgres, 4 on SQLite).
    pub db_pool_size: Option<u32>,
}

/// One configuration mistake: the variable, what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    /// The environment variable.
    pub variable: String,
    /// What is wrong, and the fix.
    pub problem: String,
}

impl ConfigError {
    /// A new error for `variable`.
    pub fn new(variable: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            variable: variable.into(),
            problem: problem.into(),
        }
    }
}

/// The result of parsing the environment: a usable configuration (defaults where a value was
/// wrong) and every mistake found.
#[derive(Debug, Clone)]
pub struct ParsedConfig {
    /// The configuration, with defaults in place of the values in `errors`.
    pub config: Config,
    /// Every mistake, in variable order.
    pub errors: Vec<ConfigError>,
}

/// Default `PORT`.
pub const DEFAULT_PORT: u16 = kumiko_contract::DEFAULT_PORT;
/// Default `KUMIKO_STARTUP_TIMEOUT`.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = kumiko_contract::DEFAULT_STARTUP_TIMEOUT;
/// Default `KUMIKO_SHUTDOWN_TIMEOUT`.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = kumiko_contract::DEFAULT_SHUTDOWN_TIMEOUT;
/// Default `KUMIKO_LINGER`.
pub const DEFAULT_LINGER: Duration = kumiko_contract::DEFAULT_LINGER;
/// Default `KUMIKO_DRAIN_TIMEOUT`.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = kumiko_contract::DEFAULT_DRAIN_TIMEOUT;
/// The SQLite file's name inside the data directory.
pub const SQLITE_FILE_NAME: &str = "kumiko.db";

/// Every `KUMIKO_*` variable the runtime itself reads. Components declare theirs as
/// [`crate::component::Setting`]s; boot validation rejects any other `KUMIKO_*` variable as a typo.
pub const RUNTIME_SETTINGS: &[&str] = &[
    env::PROCESS,
    "KUMIKO_DATA_DIR",
    env::INSTANCE_ID,
    env::STARTUP_TIMEOUT,
    env::SHUTDOWN_TIMEOUT,
    env::LINGER,
    env::DRAIN_TIMEOUT,
    env::MIGRATIONS_MODE,
    "KUMIKO_LOG_FORMAT",
    "KUMIKO_DB_POOL_SIZE",
];

impl Config {
    /// Parses the environment for a process of kind `kind`. Pure: reads only `env`.
    pub fn from_env(kind: ProcessKind, env: &Env) -> ParsedConfig {
        let mut errors = Vec::new();
        let get = |name: &str| {
            env.get(name)
                .map(|value| value.trim())
                .filter(|v| !v.is_empty())
        };

        let process = match get(env::PROCESS) {
            None => kind,
            Some(value) => match parse_process(value) {
                Ok(parsed) if parsed == kind => parsed,
                Ok(parsed) => {
                    errors.push(ConfigError::new(
                        env::PROCESS,
                        format!(
                            "`{parsed}` does not match the command `{}`, which runs a `{kind}` \
                             process; set KUMIKO_PROCESS={kind} or run `{}`",
                            kind.command(),
                            parsed.command()
                        ),
                    ));
                    kind
                }
                Err(problem) => {
                    errors.push(ConfigError::new(env::PROCESS, problem));
                    kind
                }
            },
        };

        let port = match get(env::PORT) {
            None => DEFAULT_PORT,
            Some(value) => value.parse::<u16>().unwrap_or_else(|_| {
                errors.push(ConfigError::new(
                    env::PORT,
                    format!(
                        "`{value}` is not a TCP port; use a number from 0 to 65535 (default 3000)"
                    ),
                ));
                DEFAULT_PORT
            }),
        };

        let data_dir =
            get("KUMIKO_DATA_DIR").map_or_else(|| PathBuf::from("./data"), PathBuf::from);

        let database = match get(env::DATABASE_URL) {
            None => DatabaseTarget::Sqlite {
                path: data_dir.join(SQLITE_FILE_NAME),
            },
            Some(value) => parse_database_url(value, &data_dir).unwrap_or_else(|problem| {
                errors.push(ConfigError::new(env::DATABASE_URL, problem));
                DatabaseTarget::Sqlite {
                    path: data_dir.join(SQLITE_FILE_NAME),
                }
            }),
        };

        let redis_url = match get(env::REDIS_URL) {
            None => None,
            Some(value) => match parse_redis_url(value) {
                Ok(url) => Some(url),
                Err(problem) => {
                    errors.push(ConfigError::new(env::REDIS_URL, problem));
                    None
                }
            },
        };

        let instance_id = get(env::INSTANCE_ID)
            .map(str::to_owned)
            .or_else(|| get("HOSTNAME").map(str::to_owned))
            .unwrap_or_else(|| format!("kumiko-{}", std::process::id()));

        let mut duration = |name: &str, default: Duration| match get(name) {
            None => default,
            Some(value) => parse_duration(value).unwrap_or_else(|problem| {
                errors.push(ConfigError::new(name, problem));
                default
            }),
        };
        let startup_timeout = duration(env::STARTUP_TIMEOUT, DEFAULT_STARTUP_TIMEOUT);
        let shutdown_timeout = duration(env::SHUTDOWN_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT);
        let linger = duration(env::LINGER, DEFAULT_LINGER);
        let drain_timeout = duration(env::DRAIN_TIMEOUT, DEFAULT_DRAIN_TIMEOUT);

        if startup_timeout.is_zero() {
            errors.push(ConfigError::new(
                env::STARTUP_TIMEOUT,
                "must be longer than zero; use e.g. 120s",
            ));
        }
        if shutdown_timeout.is_zero() {
            errors.push(ConfigError::new(
                env::SHUTDOWN_TIMEOUT,
                "must be longer than zero; use e.g. 40s",
            ));
        }

        // The embedded tier has no pre-deploy step and one process owns the file: it applies its
        // own migrations unless told otherwise (seed 002's zero-install run). Postgres: `exit`.
        let default_mode = match database {
            DatabaseTarget::Sqlite { .. } => MigrationsMode::Apply,
            DatabaseTarget::Postgres { .. } => MigrationsMode::Exit,
        };
        let migrations_mode = match get(env::MIGRATIONS_MODE) {
            None => default_mode,
            Some(value) => parse_migrations_mode(value).unwrap_or_else(|problem| {
                errors.push(ConfigError::new(env::MIGRATIONS_MODE, problem));
                default_mode
            }),
        };

        let log_format = match get("KUMIKO_LOG_FORMAT") {
            None => LogFormat::Json,
            Some(value) => match value.to_ascii_lowercase().as_str() {
                "json" => LogFormat::Json,
                "text" => LogFormat::Text,
                _ => {
                    errors.push(ConfigError::new(
                        "KUMIKO_LOG_FORMAT",
                        format!("`{value}` is not a log format; use `json` (default) or `text`"),
                    ));
                    LogFormat::Json
                }
            },
        };

        let db_pool_size = match get("KUMIKO_DB_POOL_SIZE") {
            None => None,
            Some(value) => match value.parse::<u32>() {
                Ok(size) if size > 0 => Some(size),
                _ => {
                    errors.push(ConfigError::new(
                        "KUMIKO_DB_POOL_SIZE",
                        format!("`{value}` is not a pool size; use a whole number of at least 1"),
                    ));
                    None
                }
            },
        };

        ParsedConfig {
            config: Config {
                process,
                port,
                database,
                redis_url,
                data_dir,
                instance_id,
                startup_timeout,
                shutdown_timeout,
                linger,
                drain_timeout,
                migrations_mode,
                log_format,
                db_pool_size,
            },
            errors,
        }
    }
}

fn parse_process(value: &str) -> Result<ProcessKind, String> {
    match value.to_ascii_lowercase().as_str() {
        "api" => Ok(ProcessKind::Api),
        "worker" => Ok(ProcessKind::Worker),
        "migrate" => Ok(ProcessKind::Migrate),
        _ => Err(format!(
            "`{value}` is not a process kind; use `api`, `worker` or `migrate`"
        )),
    }
}

/// Parses `KUMIKO_MIGRATIONS_MODE`.
pub fn parse_migrations_mode(value: &str) -> Result<MigrationsMode, String> {
    match value.to_ascii_lowercase().as_str() {
        migrations_mode::EXIT => Ok(MigrationsMode::Exit),
        migrations_mode::WARN => Ok(MigrationsMode::Warn),
        migrations_mode::APPLY => Ok(MigrationsMode::Apply),
        _ => Err(format!(
            "`{value}` is not a migrations mode; use `exit` (default), `warn` or `apply`"
        )),
    }
}

/// Parses `DATABASE_URL`. The value itself never appears in an error: it may hold a password.
pub fn parse_database_url(
    value: &str,
    data_dir: &std::path::Path,
) -> Result<DatabaseTarget, String> {
    let scheme = value
        .split_once("://")
        .map(|(scheme, _)| scheme)
        .or_else(|| value.split_once(':').map(|(scheme, _)| scheme));
    match scheme.map(str::to_ascii_lowercase).as_deref() {
        Some("postgres" | "postgresql") => {
            sqlx::postgres::PgConnectOptions::from_str(value).map_err(|_| {
                "is not a valid postgres:// URL (the value is not shown: it may hold a \
                 password); use postgres://USER:PASSWORD@HOST:PORT/DATABASE"
                    .to_owned()
            })?;
            Ok(DatabaseTarget::Postgres {
                url: SecretUrl::new(value),
            })
        }
        Some("sqlite") => {
            let path = value
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() || path == ":memory:" {
                return Ok(DatabaseTarget::Sqlite {
                    path: data_dir.join(SQLITE_FILE_NAME),
                });
            }
            Ok(DatabaseTarget::Sqlite {
                path: PathBuf::from(path),
            })
        }
        Some(other) => Err(format!(
            "the scheme `{other}` is not supported; use a postgres:// URL, or leave DATABASE_URL \
             unset for the embedded SQLite database under KUMIKO_DATA_DIR"
        )),
        None => Err(
            "is not a URL; use postgres://USER:PASSWORD@HOST:PORT/DATABASE, or leave it unset for \
             the embedded SQLite database"
                .to_owned(),
        ),
    }
}

/// Parses `REDIS_URL`: `redis://` or `rediss://` with a host.
pub fn parse_redis_url(value: &str) -> Result<SecretUrl, String> {
    let Some((scheme, rest)) = value.split_once("://") else {
        return Err(
            "is not a URL; use redis://HOST:PORT, or leave it unset to run as \
                    the only leader"
                .to_owned(),
        );
    };
    if !matches!(scheme.to_ascii_lowercase().as_str(), "redis" | "rediss") {
        return Err(format!(
            "the scheme `{scheme}` is not supported; use redis:// or rediss://"
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() {
        return Err("has no host; use redis://HOST:PORT".to_owned());
    }
    Ok(SecretUrl::new(value))
}

/// Parses a duration such as `300ms`, `3s`, `1.5s`, `2m` or `1h`; a bare number is seconds.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let fix = "use a number with a unit, e.g. 300ms, 3s, 2m or 1h";
    let value = value.trim();
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{value}` is not a duration; {fix}"))?;
    let seconds_per_unit = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 0.001,
        "m" | "min" | "mins" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("`{value}` has an unknown unit; {fix}")),
    };
    let seconds = number * seconds_per_unit;
    if !seconds.is_finite() || !(0.0..=86_400.0 * 365.0).contains(&seconds) {
        return Err(format!("`{value}` is out of range; {fix}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Formats a duration the way the environment writes it (`300ms`, `3s`, `1.5s`).
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else if millis < 1000 {
        format!("{millis}ms")
    } else {
        format!("{:.3}s", duration.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn empty_environment_gives_the_contract_defaults_on_sqlite() {
        let parsed = Config::from_env(ProcessKind::Api, &env(&[]));
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let config = parsed.config;
        assert_eq!(config.port, 3000);
        assert_eq!(config.process, ProcessKind::Api);
        assert_eq!(config.startup_timeout, Duration::from_secs(120));
        assert_eq!(config.shutdown_timeout, Duration::from_secs(40));
        assert_eq!(config.linger, Duration::from_secs(3));
        assert_eq!(config.drain_timeout, Duration::from_secs(30));
        assert_eq!(
            config.migrations_mode,
            MigrationsMode::Apply,
            "the embedded tier migrates itself"
        );
        assert_eq!(
            config.database,
            DatabaseTarget::Sqlite {
                path: PathBuf::from("./data/kumiko.db")
            }
        );
        assert!(config.redis_url.is_none());
    }

    #[test]
    fn every_mistake_is_reported_not_only_the_first() {
        let parsed = Config::from_env(
            ProcessKind::Api,
            &env(&[
                ("PORT", "eighty"),
                ("KUMIKO_LINGER", "soon"),
                ("KUMIKO_MIGRATIONS_MODE", "maybe"),
                ("DATABASE_URL", "mysql://u:p@h/db"),
            ]),
        );
        let variables: Vec<_> = parsed.errors.iter().map(|e| e.variable.as_str()).collect();
        assert_eq!(
            variables,
            [
                "PORT",
                "DATABASE_URL",
                "KUMIKO_LINGER",
                "KUMIKO_MIGRATIONS_MODE"
            ]
        );
        assert_eq!(
            parsed.config.port, 3000,
            "a wrong value falls back to its default"
        );
    }

    #[test]
    fn postgres_url_selects_postgres_and_hides_the_password() {
        let parsed = Config::from_env(
            ProcessKind::Worker,
            &env(&[("DATABASE_URL", "postgres://app:s3cret@db:5432/app")]),
        );
        assert!(parsed.errors.is_empty());
        assert_eq!(parsed.config.migrations_mode, MigrationsMode::Exit);
        let DatabaseTarget::Postgres { url } = &parsed.config.database else {
            panic!("expected postgres, got {:?}", parsed.config.database);
        };
        assert_eq!(url.expose(), "postgres://app:s3cret@db:5432/app");
        assert!(!format!("{:?}", parsed.config).contains("s3cret"));
        assert_eq!(url.to_string(), "postgres://***@db:5432/app");
    }

    #[test]
    fn invalid_database_url_error_never_shows_the_value() {
        let parsed = Config::from_env(
            ProcessKind::Api,
            &env(&[("DATABASE_URL", "postgres://app:s3cret@db:notaport/app")]),
        );
        assert_eq!(parsed.errors.len(), 1);
        assert!(!parsed.errors[0].to_string().contains("s3cret"));
    }

    #[test]
    fn process_kind_must_match_the_command() {
        let parsed = Config::from_env(ProcessKind::Api, &env(&[("KUMIKO_PROCESS", "worker")]));
        assert_eq!(parsed.errors.len(), 1);
        assert!(parsed.errors[0].problem.contains("serve"));
        let parsed = Config::from_env(ProcessKind::Api, &env(&[("KUMIKO_PROCESS", "api")]));
        assert!(parsed.errors.is_empty());
    }

    #[test]
    fn durations_parse_with_units_and_bare_seconds() {
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("40"), Ok(Duration::from_secs(40)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3 days").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(format_duration(Duration::from_millis(300)), "300ms");
        assert_eq!(format_duration(Duration::from_secs(40)), "40s");
    }

    #[test]
    fn redis_url_needs_a_redis_scheme_and_host() {
        assert!(parse_redis_url("redis://127.0.0.1:6379").is_ok());
        assert!(parse_redis_url("rediss://:pw@cache:6380/0").is_ok());
        assert!(parse_redis_url("http://cache").is_err());
        assert!(parse_redis_url("redis://").is_err());
        assert!(parse_redis_url("cache:6379").is_err());
    }

    #[test]
    fn redaction_removes_user_information_only() {
        assert_eq!(redact_url("redis://:pw@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        assert_eq!(redact_url("garbage"), "***");
    }
}
