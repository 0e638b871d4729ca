//! Looking into the app's Postgres with the credentials the operator published.

use anyhow::{Context, Result};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// Connects with `uri` (a role's Secret `uri`) and returns `current_user`: proves the role exists
/// and its password is the published one.
pub async fn current_user(uri: &str) -> Result<String> {
    let mut connection = connect(uri).await?;
    let user: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut connection)
        .await
        .context("SELECT current_user")?;
    connection.close().await.ok();
    Ok(user)
}

/// Whether a role named `role` exists, asked over a connection made with `uri`.
pub async fn role_exists(uri: &str, role: &str) -> Result<bool> {
    let mut connection = connect(uri).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(role)
            .fetch_one(&mut connection)
            .await
            .context("querying pg_roles")?;
    connection.close().await.ok();
    Ok(exists)
}

/// Whether a database named `database` exists, asked over a connection made with `uri`.
pub async fn database_exists(uri: &str, database: &str) -> Result<bool> {
    let mut connection = connect(uri).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(database)
            .fetch_one(&mut connection)
            .await
            .context("querying pg_database")?;
    connection.close().await.ok();
    Ok(exists)
}

/// A connection with `uri`; the error names no password.
pub async fn connect(uri: &str) -> Result<PgConnection> {
    PgConnection::connect(uri)
        .await
        .map_err(|error| anyhow::anyhow!("connecting to Postgres: {error}"))
}
