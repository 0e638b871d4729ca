//! The database pool, one type over both tiers (seed 002): an embedded SQLite file when there is
//! no `DATABASE_URL`, Postgres for a `postgres://` URL. Code above the pool matches on
//! [`Pool`] only where the SQL differs.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::config::DatabaseTarget;
use crate::error::Error;

/// Which database a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The embedded SQLite file.
    Sqlite,
    /// A Postgres server.
    Postgres,
}

/// A connection pool over SQLite or Postgres. Cloning is cheap (the pools are shared).
#[derive(Debug, Clone)]
pub enum Pool {
    /// The embedded tier.
    Sqlite(SqlitePool),
    /// The Postgres tier.
    Postgres(PgPool),
}

/// Pool sizing and timeouts.
#[derive(Debug, Clone, Copy)]
pub struct PoolOptions {
    /// Maximum connections; `None` uses 10 for Postgres, 4 for SQLite.
    pub max_connections: Option<u32>,
    /// How long a caller waits for a connection (and how long connecting may take).
    pub acquire_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_connections: None,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Whether a connect error may go away by itself.
fn is_transient(error: &sqlx::Error) -> bool {
    !matches!(error, sqlx::Error::Configuration(_))
}

impl Pool {
    /// Connects (one connection is opened to prove the database is there).
    pub async fn connect(target: &DatabaseTarget, options: PoolOptions) -> Result<Pool, Error> {
        match target {
            DatabaseTarget::Sqlite { path } => {
                let connect = sqlite_options(path)?;
                SqlitePoolOptions::new()
                    .max_connections(options.max_connections.unwrap_or(4))
                    .acquire_timeout(options.acquire_timeout)
                    .connect_with(connect)
                    .await
                    .map(Pool::Sqlite)
                    .map_err(|source| Error::Connect {
                        target: target.describe(),
                        transient: false,
                        source,
                    })
            }
            DatabaseTarget::Postgres { url } => {
                let connect =
                    PgConnectOptions::from_str(url.expose()).map_err(|source| Error::Connect {
                        target: target.describe(),
                        transient: false,
                        source,
                    })?;
                // One plain connection first: it fails fast (the pool itself would retry
                // internally until its acquire timeout), so the boot's backoff stays in charge.
                let probe = tokio::time::timeout(
                    options.acquire_timeout,
                    PgConnection::connect_with(&connect),
                )
                .await
                .map_err(|_| Error::Connect {
                    target: target.describe(),
                    transient: true,
                    source: sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "no connection within {} ms",
                            options.acquire_timeout.as_millis()
                        ),
                    )),
                })?
                .map_err(|source| Error::Connect {
                    target: target.describe(),
                    transient: is_transient(&source),
                    source,
                })?;
                let _ = probe.close().await;
                Ok(Pool::Postgres(
                    PgPoolOptions::new()
                        .max_connections(options.max_connections.unwrap_or(10))
                        .acquire_timeout(options.acquire_timeout)
                        .connect_lazy_with(connect),
                ))
            }
        }
    }

    /// Which backend this pool talks to.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Sqlite(_) => Backend::Sqlite,
            Self::Postgres(_) => Backend::Postgres,
        }
    }

    /// One round trip (`SELECT 1`): the readiness check's probe.
    pub async fn ping(&self) -> Result<(), Error> {
        match self {
            Self::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
            Self::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
        }
        .map_err(Error::Query)
    }

    /// Closes the pool: waits for checked-out connections to come back, then closes them.
    pub async fn close(&self) {
        match self {
            Self::Sqlite(pool) => pool.close().await,
            Self::Postgres(pool) => pool.close().await,
        }
    }
}

/// SQLite options for the embedded tier: the file (and its directory) created if missing, WAL
/// journal so readers do not block the writer, a busy timeout instead of instant lock errors.
pub fn sqlite_options(path: &Path) -> Result<SqliteConnectOptions, Error> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    Ok(SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretUrl;

    #[tokio::test]
    async fn sqlite_tier_creates_its_file_and_answers_a_ping() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("kumiko.db");
        let pool = Pool::connect(
            &DatabaseTarget::Sqlite { path: path.clone() },
            PoolOptions::default(),
        )
        .await
        .unwrap();
        assert_eq!(pool.backend(), Backend::Sqlite);
        pool.ping().await.unwrap();
        pool.close().await;
        assert!(path.exists());
    }

    #[tokio::test]
    async fn postgres_tier_answers_a_ping() {
        let postgres = kumiko_testkit::TempPostgres::start().unwrap();
        let target = DatabaseTarget::Postgres {
            url: SecretUrl::new(postgres.superuser_url("postgres")),
        };
        let pool = Pool::connect(&target, PoolOptions::default())
            .await
            .unwrap();
        assert_eq!(pool.backend(), Backend::Postgres);
        pool.ping().await.unwrap();
        pool.close().await;
    }

    #[tokio::test]
    async fn unreachable_postgres_is_a_transient_error_without_the_password() {
        let port = kumiko_testkit::free_port().unwrap();
        let target = DatabaseTarget::Postgres {
            url: SecretUrl::new(format!("postgres://app:s3cret@127.0.0.1:{port}/app")),
        };
        let options = PoolOptions {
            acquire_timeout: Duration::from_secs(1),
            ..PoolOptions::default()
        };
        let error = Pool::connect(&target, options).await.unwrap_err();
        assert!(error.is_transient(), "{error:?}");
        assert!(!error.to_string().contains("s3cret"));
    }
}
