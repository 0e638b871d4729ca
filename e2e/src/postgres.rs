//! Looking into the app's Postgres with the credentials the operator published, from the test
//! process: straight to the Secret's host where it is an address the test can reach (kube-sim's
//! Postgres listens on loopback), otherwise through a [`ServiceTunnel`] to the Service the host
//! names (`<cluster>-rw`, `<cluster>-rw.<namespace>.svc`, ...), as on kind.

use std::net::IpAddr;

use anyhow::{Context, Result, bail};
use kube::Client;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::tunnel::ServiceTunnel;

/// A Postgres URI the test process can connect to, and the tunnel it needs (kept open while this
/// value lives).
pub struct Reachable {
    uri: String,
    tunnel: Option<ServiceTunnel>,
}

impl Reachable {
    /// The URI to connect with.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Whether the URI goes through a tunnel (the Secret's host is a Service name).
    pub fn tunnelled(&self) -> bool {
        self.tunnel.is_some()
    }
}

/// The Service a Postgres host names, in `namespace` unless the host says otherwise:
/// `svc`, `svc.ns`, `svc.ns.svc` or `svc.ns.svc.<cluster domain>`. `None` for an address or
/// `localhost`, which the test process reaches as they are.
pub fn service_of_host(host: &str, namespace: &str) -> Option<(String, String)> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare == "localhost" || bare.parse::<IpAddr>().is_ok() {
        return None;
    }
    let mut labels = bare.split('.');
    let service = labels.next().filter(|label| !label.is_empty())?;
    let in_namespace = labels.next().unwrap_or(namespace);
    Some((service.to_owned(), in_namespace.to_owned()))
}

/// `uri` made reachable from the test process: as it is when its host is an address, else
/// rewritten to a tunnel to the Service its host names (a short name is in `namespace`, the
/// namespace of the Secret it came from).
pub async fn reachable(client: &Client, namespace: &str, uri: &str) -> Result<Reachable> {
    let mut url = url::Url::parse(uri).map_err(|error| {
        anyhow::anyhow!("a Postgres URI that does not parse (password not shown): {error}")
    })?;
    let host = url
        .host_str()
        .context("the Postgres URI has no host")?
        .to_owned();
    let Some((service, service_namespace)) = service_of_host(&host, namespace) else {
        return Ok(Reachable {
            uri: uri.to_owned(),
            tunnel: None,
        });
    };
    let port = url.port().unwrap_or(5432);
    let tunnel = ServiceTunnel::open(client, &service_namespace, &service, port)
        .await
        .with_context(|| format!("tunnelling to Postgres at {host}:{port}"))?;
    if url.set_host(Some("127.0.0.1")).is_err() || url.set_port(Some(tunnel.local_port())).is_err()
    {
        bail!("cannot point the Postgres URI at the tunnel");
    }
    Ok(Reachable {
        uri: url.to_string(),
        tunnel: Some(tunnel),
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_direct_and_service_names_resolve_to_a_namespace() {
        assert_eq!(service_of_host("127.0.0.1", "app"), None);
        assert_eq!(service_of_host("localhost", "app"), None);
        assert_eq!(service_of_host("[::1]", "app"), None);
        let named =
            |service: &str, namespace: &str| Some((service.to_owned(), namespace.to_owned()));
        assert_eq!(
            service_of_host("app-db-rw", "app"),
            named("app-db-rw", "app")
        );
        assert_eq!(
            service_of_host("pg-rw.databases", "app"),
            named("pg-rw", "databases")
        );
        assert_eq!(
            service_of_host("pg-rw.databases.svc.cluster.local", "app"),
            named("pg-rw", "databases")
        );
    }
}
