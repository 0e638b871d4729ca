//! How the operator reaches a Postgres server as an administrator.

use std::collections::BTreeMap;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use sqlx::ConnectOptions as _;
use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};

use super::error::Error;
use super::password::Password;

/// The default Postgres port.
pub const DEFAULT_PORT: u16 = 5432;
/// The database the admin connects to when the Secret names none (or CNPG's `*`).
pub const DEFAULT_ADMIN_DATABASE: &str = "postgres";
/// How long one connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// `application_name` of the operator's sessions (visible in `pg_stat_activity`).
pub const APPLICATION_NAME: &str = "kumiko-operator";

/// The read-write Service of a CloudNativePG cluster: `<cluster>-rw` in the cluster's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterService {
    /// The Service's name, `<cluster>-rw`.
    pub name: String,
    /// The cluster's namespace.
    pub namespace: String,
}

impl ClusterService {
    /// The `-rw` Service of CNPG cluster `cluster` in `namespace`.
    pub fn read_write(cluster: &str, namespace: &str) -> Self {
        Self {
            name: format!("{cluster}-rw"),
            namespace: namespace.to_owned(),
        }
    }
}

/// A host name every pod resolves, wherever it runs: a short Service name (one label: no dot,
/// not an address, not `localhost`) becomes `<host>.<namespace>.svc`; anything else is returned
/// as it is. A pod's resolver expands a short name only with its own namespace's search domain
/// (`<pod namespace>.svc.cluster.local`, see kubernetes.io "DNS for Services and Pods",
/// "Namespaces of Services"), so a Service of another namespace must be named with its
/// namespace; `<svc>.<ns>.svc` resolves through the `cluster.local` search domain without
/// assuming the cluster's domain.
pub fn qualify_host(host: &str, namespace: &str) -> String {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if host.contains('.') || host == "localhost" || bare.parse::<std::net::IpAddr>().is_ok() {
        host.to_owned()
    } else {
        format!("{host}.{namespace}.svc")
    }
}

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS only if the server insists.
    Allow,
    /// TLS when the server offers it (the libpq default).
    #[default]
    Prefer,
    /// TLS always, without verifying the certificate.
    Require,
    /// TLS, with the certificate verified against a CA.
    VerifyCa,
    /// TLS, with the certificate and the host name verified.
    VerifyFull,
}

impl SslMode {
    /// Parses libpq's spelling (`disable`, `allow`, `prefer`, `require`, `verify-ca`,
    /// `verify-full`).
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }

    /// libpq's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Allow => "allow",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// Whether TLS is mandatory in this mode.
    pub fn requires_tls(self) -> bool {
        matches!(self, Self::Require | Self::VerifyCa | Self::VerifyFull)
    }

    fn to_sqlx(self) -> PgSslMode {
        match self {
            Self::Disable => PgSslMode::Disable,
            Self::Allow => PgSslMode::Allow,
            Self::Prefer => PgSslMode::Prefer,
            Self::Require => PgSslMode::Require,
            Self::VerifyCa => PgSslMode::VerifyCa,
            Self::VerifyFull => PgSslMode::VerifyFull,
        }
    }
}

/// An administrator's connection to a Postgres server: a superuser (CNPG's `<cluster>-superuser`
/// Secret), or a role with `CREATEROLE` and `CREATEDB` on a shared server.
///
/// `Debug` shows every field but the password.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminConnection {
    host: String,
    port: u16,
    user: String,
    password: Password,
    dbname: String,
    sslmode: SslMode,
}

impl AdminConnection {
    /// A connection to `host:port` as `user`, to database `postgres`, with `sslmode=prefer`.
    pub fn new(host: &str, port: u16, user: &str, password: Password) -> Self {
        Self {
            host: host.to_owned(),
            port,
            user: user.to_owned(),
            password,
            dbname: DEFAULT_ADMIN_DATABASE.to_owned(),
            sslmode: SslMode::default(),
        }
    }

    /// Reads a CNPG-style Secret's data: `username` (or `user`), `password`, `host`, `port`,
    /// `dbname` and optionally `sslmode`; any of them may instead come from `uri`
    /// (`postgresql://user:password@host:port/dbname?sslmode=...`). Explicit keys win over
    /// the URI. A missing or `*` dbname means `postgres`; a missing port means 5432.
    ///
    /// CNPG writes the short Service name (`<cluster>-rw`) into `host`; an operator in another
    /// namespace must qualify it with [`AdminConnection::with_host`].
    pub fn from_secret_data(data: &BTreeMap<String, String>) -> Result<Self, Error> {
        Self::parse(data, None)
    }

    /// Reads the admin Secret of a CloudNativePG cluster whose read-write Service is
    /// `service.name` in namespace `service.namespace`: in any of the forms
    /// [`AdminConnection::from_secret_data`] reads (a verbatim copy of CNPG's
    /// `<cluster>-superuser` Secret, only a `uri`, or only `username`/`password`), with the host
    /// defaulting to the `-rw` Service when the Secret names none, and a short host qualified
    /// by [`qualify_host`] with the cluster's namespace. CNPG 1.27 writes `host: <cluster>-rw`,
    /// `port: 5432` and `dbname: *` into that Secret (`pkg/specs/secrets.go`, `CreateSecret`,
    /// called with `GetServiceReadWriteName()` and `"*"` in
    /// `internal/controller/cluster_create.go`); the short name resolves only inside the
    /// cluster's namespace, so the operator and the app's pods, elsewhere, dial
    /// `<cluster>-rw.<namespace>.svc`.
    pub fn from_cluster_secret(
        data: &BTreeMap<String, String>,
        service: &ClusterService,
    ) -> Result<Self, Error> {
        let mut admin = Self::parse(data, Some(&service.name))?;
        admin.host = qualify_host(&admin.host, &service.namespace);
        Ok(admin)
    }

    fn parse(data: &BTreeMap<String, String>, default_host: Option<&str>) -> Result<Self, Error> {
        let from_uri = match data.get("uri") {
            Some(uri) => UriParts::parse(uri)?,
            None => UriParts::default(),
        };
        let get = |key: &str| {
            data.get(key)
                .map(|value| value.trim())
                .filter(|v| !v.is_empty())
        };

        let user = get("username")
            .or_else(|| get("user"))
            .map(str::to_owned)
            .or(from_uri.user)
            .ok_or_else(|| missing("username"))?;
        let password_text = data
            .get("password")
            .filter(|value| !value.is_empty())
            .cloned()
            .or(from_uri.password)
            .ok_or_else(|| missing("password"))?;
        let password = Password::from_stored(&user, &password_text).map_err(|_| {
            Error::InvalidAdminSecret {
                key: "password",
                reason: "must be 1 to 1024 printable ASCII characters".to_owned(),
            }
        })?;
        let host = get("host")
            .map(str::to_owned)
            .or(from_uri.host)
            .or_else(|| default_host.map(str::to_owned))
            .ok_or_else(|| missing("host"))?;
        let port = match get("port") {
            Some(text) => text
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| Error::InvalidAdminSecret {
                    key: "port",
                    reason: format!("{text:?} is not a TCP port; set a number from 1 to 65535"),
                })?,
            None => from_uri.port.unwrap_or(DEFAULT_PORT),
        };
        let dbname = get("dbname")
            .map(str::to_owned)
            .or(from_uri.dbname)
            .filter(|name| name != "*")
            .unwrap_or_else(|| DEFAULT_ADMIN_DATABASE.to_owned());
        let sslmode = match get("sslmode") {
            Some(text) => SslMode::parse(text).ok_or_else(|| bad_sslmode("sslmode", text))?,
            None => from_uri.sslmode.unwrap_or_default(),
        };
        Ok(Self {
            host,
            port,
            user,
            password,
            dbname,
            sslmode,
        })
    }

    /// Reads a CNPG `<cluster>-superuser` Secret (dedicated-cluster mode), connecting to
    /// `rw_host` (the cluster's `-rw` Service, qualified for the operator's namespace, e.g.
    /// `shop-db-rw.prod.svc`) whatever host the Secret names; older CNPG versions write only
    /// `username` and `password` into that Secret, newer ones also the short host name.
    pub fn from_cnpg_superuser_secret(
        data: &BTreeMap<String, String>,
        rw_host: &str,
    ) -> Result<Self, Error> {
        let mut data = data.clone();
        data.insert("host".to_owned(), rw_host.to_owned());
        Self::from_secret_data(&data)
    }

    /// The same connection to another host (e.g. `<cluster>-rw.<namespace>.svc`).
    pub fn with_host(mut self, host: &str) -> Self {
        host.clone_into(&mut self.host);
        self
    }

    /// The same connection on another port.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The same connection to another database.
    pub fn with_dbname(mut self, dbname: &str) -> Self {
        dbname.clone_into(&mut self.dbname);
        self
    }

    /// The same connection with another `sslmode`.
    ///
    /// `require` and stricter need a TLS backend in sqlx (workspace feature `tls-rustls-*`);
    /// without one, connecting fails with a typed [`Error::Connect`].
    pub fn with_sslmode(mut self, sslmode: SslMode) -> Self {
        self.sslmode = sslmode;
        self
    }

    /// The server's host name or address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin role.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The admin role's password.
    pub fn password(&self) -> &Password {
        &self.password
    }

    /// The database the admin connects to for cluster-wide work.
    pub fn dbname(&self) -> &str {
        &self.dbname
    }

    /// The `sslmode`.
    pub fn sslmode(&self) -> SslMode {
        self.sslmode
    }

    /// Opens a session to the admin database.
    pub(crate) async fn connect(&self) -> Result<PgConnection, Error> {
        self.connect_to(&self.dbname).await
    }

    /// Opens a session, as the admin, to database `dbname`.
    pub(crate) async fn connect_to(&self, dbname: &str) -> Result<PgConnection, Error> {
        connect_as(self, &self.user, &self.password, dbname).await
    }

    fn target(&self, user: &str, dbname: &str) -> String {
        format!("{user}@{}:{}/{dbname}", self.host, self.port)
    }
}

/// Opens a session to `dbname` on the admin's server as `user` with `password`, bounded by
/// [`CONNECT_TIMEOUT`]. Statement logging in sqlx is off: statements may carry verifiers.
pub(crate) async fn connect_as(
    server: &AdminConnection,
    user: &str,
    password: &Password,
    dbname: &str,
) -> Result<PgConnection, Error> {
    let options = PgConnectOptions::new_without_pgpass()
        .host(&server.host)
        .port(server.port)
        .username(user)
        .password(password.expose())
        .database(dbname)
        .ssl_mode(server.sslmode.to_sqlx())
        .application_name(APPLICATION_NAME)
        .options([("lock_timeout", "10s"), ("statement_timeout", "60s")])
        .disable_statement_logging();
    let target = server.target(user, dbname);
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(source)) => Err(Error::Connect { target, source }),
        Err(_elapsed) => Err(Error::ConnectTimeout {
            target,
            seconds: CONNECT_TIMEOUT.as_secs(),
        }),
    }
}

impl std::fmt::Debug for AdminConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConnection")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password)
            .field("dbname", &self.dbname)
            .field("sslmode", &self.sslmode)
            .finish()
    }
}

fn missing(key: &'static str) -> Error {
    Error::InvalidAdminSecret {
        key,
        reason: "is missing (and `uri` does not provide it): add it to the Secret".to_owned(),
    }
}

fn bad_sslmode(key: &'static str, text: &str) -> Error {
    Error::InvalidAdminSecret {
        key,
        reason: format!(
            "has sslmode {text:?}; use disable, allow, prefer, require, verify-ca or verify-full"
        ),
    }
}

#[derive(Default)]
struct UriParts {
    user: Option<String>,
    password: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    dbname: Option<String>,
    sslmode: Option<SslMode>,
}

impl UriParts {
    fn parse(uri: &str) -> Result<Self, Error> {
        // The URI holds a password: errors never quote it.
        let invalid = |reason: &str| Error::InvalidAdminSecret {
            key: "uri",
            reason: format!("{reason}; expected postgresql://user:password@host:port/dbname"),
        };
        let parsed = url::Url::parse(uri).map_err(|_| invalid("is not a URL"))?;
        if !matches!(parsed.scheme(), "postgresql" | "postgres") {
            return Err(invalid("does not start with postgresql://"));
        }
        let decode = |text: &str| {
            percent_decode_str(text)
                .decode_utf8()
                .map(|decoded| decoded.into_owned())
                .map_err(|_| invalid("holds a percent-encoded value that is not UTF-8"))
        };
        let user = match parsed.username() {
            "" => None,
            user => Some(decode(user)?),
        };
        let password = match parsed.password() {
            None | Some("") => None,
            Some(password) => Some(decode(password)?),
        };
        let host = parsed
            .host_str()
            .filter(|host| !host.is_empty())
            .map(|host| {
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned()
            });
        let dbname = match parsed.path().trim_start_matches('/') {
            "" => None,
            name => Some(decode(name)?),
        };
        let mut sslmode = None;
        for (key, value) in parsed.query_pairs() {
            if key == "sslmode" {
                sslmode = Some(SslMode::parse(&value).ok_or_else(|| bad_sslmode("uri", &value))?);
            }
        }
        Ok(Self {
            user,
            password,
            host,
            port: parsed.port(),
            dbname,
            sslmode,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn reads_a_cnpg_superuser_secret() {
        let admin = AdminConnection::from_secret_data(&data(&[
            ("username", "postgres"),
            ("user", "postgres"),
            ("password", "s3cret-Pa55"),
            ("host", "shop-db-rw"),
            ("port", "5432"),
            ("dbname", "*"),
            (
                "uri",
                "postgresql://postgres:s3cret-Pa55@shop-db-rw.prod:5432/*",
            ),
        ]))
        .unwrap();
        assert_eq!(admin.user(), "postgres");
        assert_eq!(admin.password().expose(), "s3cret-Pa55");
        assert_eq!(admin.host(), "shop-db-rw");
        assert_eq!(admin.port(), 5432);
        assert_eq!(admin.dbname(), "postgres");
        assert_eq!(admin.sslmode(), SslMode::Prefer);
        let qualified = admin.with_host("shop-db-rw.prod.svc");
        assert_eq!(qualified.host(), "shop-db-rw.prod.svc");
    }

    #[test]
    fn cnpg_superuser_secret_connects_to_the_qualified_rw_service() {
        let basic_auth = data(&[("username", "postgres"), ("password", "pw")]);
        let admin = AdminConnection::from_cnpg_superuser_secret(&basic_auth, "shop-db-rw.prod.svc")
            .unwrap();
        assert_eq!(admin.host(), "shop-db-rw.prod.svc");
        assert_eq!(admin.port(), DEFAULT_PORT);
        assert_eq!(admin.dbname(), "postgres");
        let newer = data(&[
            ("username", "postgres"),
            ("password", "pw"),
            ("host", "shop-db-rw"),
            ("dbname", "*"),
        ]);
        let admin =
            AdminConnection::from_cnpg_superuser_secret(&newer, "shop-db-rw.prod.svc").unwrap();
        assert_eq!(admin.host(), "shop-db-rw.prod.svc");
    }

    #[test]
    fn reads_everything_from_a_uri_alone() {
        let admin = AdminConnection::from_secret_data(&data(&[(
            "uri",
            "postgres://admin%40corp:p%3Ass%2Fw@db.example.com:6543/ops?sslmode=require",
        )]))
        .unwrap();
        assert_eq!(admin.user(), "admin@corp");
        assert_eq!(admin.password().expose(), "p:ss/w");
        assert_eq!(admin.host(), "db.example.com");
        assert_eq!(admin.port(), 6543);
        assert_eq!(admin.dbname(), "ops");
        assert_eq!(admin.sslmode(), SslMode::Require);
    }

    #[test]
    fn missing_and_bad_keys_are_named() {
        let cases = [
            (data(&[("password", "p"), ("host", "h")]), "username"),
            (data(&[("username", "u"), ("host", "h")]), "password"),
            (data(&[("username", "u"), ("password", "p")]), "host"),
            (
                data(&[
                    ("username", "u"),
                    ("password", "p"),
                    ("host", "h"),
                    ("port", "x"),
                ]),
                "port",
            ),
            (
                data(&[
                    ("username", "u"),
                    ("password", "p"),
                    ("host", "h"),
                    ("sslmode", "on"),
                ]),
                "sslmode",
            ),
            (data(&[("uri", "mysql://u:p@h/db")]), "uri"),
        ];
        for (secret, key) in cases {
            let error = AdminConnection::from_secret_data(&secret).unwrap_err();
            assert!(
                matches!(error, Error::InvalidAdminSecret { key: k, .. } if k == key),
                "{error}"
            );
            assert!(!error.is_transient());
        }
    }

    #[test]
    fn debug_and_errors_never_show_the_admin_password() {
        let admin = AdminConnection::from_secret_data(&data(&[
            ("username", "postgres"),
            ("password", "TopSecretAdmin"),
            ("host", "h"),
        ]))
        .unwrap();
        let shown = format!("{admin:?}");
        assert!(!shown.contains("TopSecretAdmin"), "{shown}");
        assert!(shown.contains("postgres"));

        let bad_uri = data(&[("uri", "postgresql://u:TopSecretAdmin@h:notaport/db")]);
        let error = AdminConnection::from_secret_data(&bad_uri).unwrap_err();
        assert!(!format!("{error} {error:?}").contains("TopSecretAdmin"));
    }

    fn shared() -> ClusterService {
        ClusterService::read_write("shared", "databases")
    }

    /// CNPG 1.27's `<cluster>-superuser` Secret, copied verbatim (`pkg/specs/secrets.go`: short
    /// `host`, `dbname: *`, `uri` on `<host>.<namespace>:5432`).
    #[test]
    fn a_verbatim_cnpg_superuser_secret_dials_the_rw_service_qualified_with_the_cluster_namespace()
    {
        let admin = AdminConnection::from_cluster_secret(
            &data(&[
                ("username", "postgres"),
                ("user", "postgres"),
                ("password", "pw"),
                ("host", "shared-rw"),
                ("port", "5432"),
                ("dbname", "*"),
                (
                    "uri",
                    "postgresql://postgres:pw@shared-rw.databases:5432/%2A",
                ),
                ("pgpass", "shared-rw:5432:*:postgres:pw\n"),
            ]),
            &shared(),
        )
        .unwrap();
        assert_eq!(admin.host(), "shared-rw.databases.svc");
        assert_eq!(admin.port(), 5432);
        assert_eq!(admin.dbname(), DEFAULT_ADMIN_DATABASE);
    }

    #[test]
    fn an_admin_secret_without_a_host_dials_the_clusters_rw_service_on_5432() {
        let admin = AdminConnection::from_cluster_secret(
            &data(&[("username", "u"), ("password", "p")]),
            &shared(),
        )
        .unwrap();
        assert_eq!(admin.host(), "shared-rw.databases.svc");
        assert_eq!(admin.port(), DEFAULT_PORT);
        assert_eq!(admin.dbname(), DEFAULT_ADMIN_DATABASE);
    }

    #[test]
    fn an_admin_uri_alone_is_read_and_its_short_host_qualified() {
        let admin = AdminConnection::from_cluster_secret(
            &data(&[("uri", "postgresql://admin:p@shared-rw:6543/*")]),
            &shared(),
        )
        .unwrap();
        assert_eq!(admin.user(), "admin");
        assert_eq!(admin.host(), "shared-rw.databases.svc");
        assert_eq!(admin.port(), 6543);
        assert_eq!(admin.dbname(), DEFAULT_ADMIN_DATABASE);
        let elsewhere = AdminConnection::from_cluster_secret(
            &data(&[("uri", "postgresql://admin:p@db.example.com/ops")]),
            &shared(),
        )
        .unwrap();
        assert_eq!(elsewhere.host(), "db.example.com");
        assert_eq!(elsewhere.dbname(), "ops");
    }

    #[test]
    fn only_a_single_label_service_name_is_qualified() {
        assert_eq!(qualify_host("shop-db-rw", "shop"), "shop-db-rw.shop.svc");
        assert_eq!(
            qualify_host("shared-rw.databases", "shop"),
            "shared-rw.databases"
        );
        assert_eq!(
            qualify_host("shared-rw.databases.svc.cluster.local", "shop"),
            "shared-rw.databases.svc.cluster.local"
        );
        assert_eq!(qualify_host("db.example.com", "shop"), "db.example.com");
        assert_eq!(qualify_host("127.0.0.1", "shop"), "127.0.0.1");
        assert_eq!(qualify_host("::1", "shop"), "::1");
        assert_eq!(qualify_host("[::1]", "shop"), "[::1]");
        assert_eq!(qualify_host("localhost", "shop"), "localhost");
    }
}
