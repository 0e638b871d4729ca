//! What an app needs to connect as one of its roles, and its CNPG-compatible Secret form.

use std::collections::BTreeMap;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::admin::SslMode;
use super::password::Password;

/// Characters left as they are in URI user info, path segments and query values: RFC 3986's
/// unreserved set. Everything else is percent-encoded.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How a process connects to the app's database as one role.
///
/// `Debug` and `Display` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionFacts {
    host: String,
    port: u16,
    dbname: String,
    username: String,
    password: Password,
    sslmode: SslMode,
}

impl ConnectionFacts {
    /// Facts for `username` with `password` on `host:port`, database `dbname`.
    pub fn new(
        host: &str,
        port: u16,
        dbname: &str,
        username: &str,
        password: Password,
        sslmode: SslMode,
    ) -> Self {
        Self {
            host: host.to_owned(),
            port,
            dbname: dbname.to_owned(),
            username: username.to_owned(),
            password,
            sslmode,
        }
    }

    /// The same facts with another host and port, e.g. the `-rw` Service as seen from the app's
    /// namespace when the operator reached the server under another name.
    pub fn with_endpoint(mut self, host: &str, port: u16) -> Self {
        host.clone_into(&mut self.host);
        self.port = port;
        self
    }

    /// The server's host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The database.
    pub fn dbname(&self) -> &str {
        &self.dbname
    }

    /// The role.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The role's password.
    pub fn password(&self) -> &Password {
        &self.password
    }

    /// The `sslmode` the app should use (the admin connection's).
    pub fn sslmode(&self) -> SslMode {
        self.sslmode
    }

    /// `postgresql://user:password@host:port/dbname`, with each part percent-encoded, and
    /// `?sslmode=` only when TLS is mandatory. This is the app's `DATABASE_URL`.
    pub fn uri(&self) -> String {
        let mut uri = format!(
            "postgresql://{}:{}@{}:{}/{}",
            encode(&self.username),
            encode(self.password.expose()),
            uri_host(&self.host),
            self.port,
            encode(&self.dbname)
        );
        if self.sslmode.requires_tls() {
            uri.push_str("?sslmode=");
            uri.push_str(self.sslmode.as_str());
        }
        uri
    }

    /// `jdbc:postgresql://host:port/dbname?password=...&user=...`, as CNPG writes it.
    pub fn jdbc_uri(&self) -> String {
        let mut uri = format!(
            "jdbc:postgresql://{}:{}/{}?password={}&user={}",
            uri_host(&self.host),
            self.port,
            encode(&self.dbname),
            encode(self.password.expose()),
            encode(&self.username)
        );
        if self.sslmode.requires_tls() {
            uri.push_str("&sslmode=");
            uri.push_str(self.sslmode.as_str());
        }
        uri
    }

    /// One `.pgpass` line: `host:port:dbname:username:password`, with `\` and `:` escaped.
    pub fn pgpass(&self) -> String {
        format!(
            "{}:{}:{}:{}:{}\n",
            pgpass_field(&self.host),
            self.port,
            pgpass_field(&self.dbname),
            pgpass_field(&self.username),
            pgpass_field(self.password.expose())
        )
    }

    /// The Secret data, with the keys of a CNPG `<cluster>-app` Secret: `username`, `user`,
    /// `password`, `host`, `port`, `dbname`, `uri`, `jdbc-uri`, `pgpass`.
    pub fn secret_data(&self) -> BTreeMap<String, String> {
        [
            ("username", self.username.clone()),
            ("user", self.username.clone()),
            ("password", self.password.expose().to_owned()),
            ("host", self.host.clone()),
            ("port", self.port.to_string()),
            ("dbname", self.dbname.clone()),
            ("uri", self.uri()),
            ("jdbc-uri", self.jdbc_uri()),
            ("pgpass", self.pgpass()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
    }
}

impl std::fmt::Debug for ConnectionFacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionFacts")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("sslmode", &self.sslmode)
            .finish()
    }
}

impl std::fmt::Display for ConnectionFacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}@{}:{}/{}",
            self.username, self.host, self.port, self.dbname
        )
    }
}

fn encode(text: &str) -> String {
    utf8_percent_encode(text, URI_COMPONENT).to_string()
}

fn uri_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

fn pgpass_field(text: &str) -> String {
    text.replace('\\', "\\\\").replace(':', "\\:")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(password: &str) -> ConnectionFacts {
        ConnectionFacts::new(
            "shop-db-rw.prod.svc",
            5432,
            "shop",
            "shop_runtime",
            Password::from_stored("shop_runtime", password).unwrap(),
            SslMode::Prefer,
        )
    }

    #[test]
    fn secret_data_has_the_cnpg_app_secret_keys() {
        let data = facts("abc123").secret_data();
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "dbname", "host", "jdbc-uri", "password", "pgpass", "port", "uri", "user",
                "username"
            ]
        );
        assert_eq!(data["username"], "shop_runtime");
        assert_eq!(data["user"], "shop_runtime");
        assert_eq!(data["port"], "5432");
        assert_eq!(
            data["uri"],
            "postgresql://shop_runtime:abc123@shop-db-rw.prod.svc:5432/shop"
        );
        assert_eq!(
            data["jdbc-uri"],
            "jdbc:postgresql://shop-db-rw.prod.svc:5432/shop?password=abc123&user=shop_runtime"
        );
        assert_eq!(
            data["pgpass"],
            "shop-db-rw.prod.svc:5432:shop:shop_runtime:abc123\n"
        );
    }

    #[test]
    fn special_characters_are_encoded_per_format() {
        let facts = facts("p@ss:w/rd\\?&");
        assert_eq!(
            facts.uri(),
            "postgresql://shop_runtime:p%40ss%3Aw%2Frd%5C%3F%26@shop-db-rw.prod.svc:5432/shop"
        );
        assert!(
            facts
                .jdbc_uri()
                .contains("password=p%40ss%3Aw%2Frd%5C%3F%26&user=")
        );
        assert_eq!(
            facts.pgpass(),
            "shop-db-rw.prod.svc:5432:shop:shop_runtime:p@ss\\:w/rd\\\\?&\n"
        );
        let parsed = url::Url::parse(&facts.uri()).unwrap();
        assert_eq!(
            percent_encoding::percent_decode_str(parsed.password().unwrap())
                .decode_utf8()
                .unwrap(),
            "p@ss:w/rd\\?&"
        );
    }

    #[test]
    fn tls_modes_reach_the_uris_and_ipv6_hosts_are_bracketed() {
        let facts = ConnectionFacts::new(
            "::1",
            5433,
            "shop",
            "shop_owner",
            Password::from_stored("shop_owner", "x").unwrap(),
            SslMode::VerifyFull,
        );
        assert_eq!(
            facts.uri(),
            "postgresql://shop_owner:x@[::1]:5433/shop?sslmode=verify-full"
        );
        assert!(facts.jdbc_uri().ends_with("&sslmode=verify-full"));
    }

    #[test]
    fn debug_and_display_never_show_the_password() {
        let facts = facts("VerySecretValue1");
        for shown in [format!("{facts:?}"), format!("{facts}")] {
            assert!(!shown.contains("VerySecretValue1"), "{shown}");
        }
        assert_eq!(
            facts.to_string(),
            "shop_runtime@shop-db-rw.prod.svc:5432/shop"
        );
    }
}
