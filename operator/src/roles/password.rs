//! Passwords: generation, redaction, and the SCRAM-SHA-256 verifiers Postgres stores.
//!
//! A password is sent to Postgres only as a SCRAM-SHA-256 verifier computed here (as `psql`'s
//! `\password` does), so the plain text never appears in a statement, the server log,
//! `pg_stat_statements` or `pg_stat_activity`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{KeyInit as _, Mac as _};
use rand::RngExt as _;
use sha2::{Digest as _, Sha256};

use super::error::Error;

/// Characters of a generated password: `[A-Za-z0-9]`, safe in URIs, pgpass, JDBC and shells.
const GENERATED_LEN: usize = 44;

/// Iterations of PBKDF2 in the verifiers we compute; Postgres' default (`scram_iterations`).
const SCRAM_ITERATIONS: u32 = 4096;

/// Longest password accepted from a Secret.
const MAX_LEN: usize = 1024;

type HmacSha256 = hmac::Hmac<Sha256>;

/// A password. Its `Debug` and `Display` print `<redacted>`; only [`Password::expose`] reveals it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// A new random password: 44 characters drawn uniformly from 62, about 262 bits of entropy,
    /// from the thread-local CSPRNG (ChaCha, seeded by the operating system).
    pub fn generate() -> Self {
        let text: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(GENERATED_LEN)
            .map(char::from)
            .collect();
        Self(text)
    }

    /// Accepts a password read back from a Secret, for role `role` (named in errors).
    ///
    /// It must be 1 to 1024 printable ASCII characters: that is what this module generates, and
    /// for such passwords SASLprep is the identity, so the verifier computed here is the one a
    /// client computes.
    pub fn from_stored(role: &str, text: &str) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidPassword {
            role: role.to_owned(),
            reason,
        };
        if text.is_empty() {
            return Err(invalid("it is empty"));
        }
        if text.len() > MAX_LEN {
            return Err(invalid("it is longer than 1024 bytes"));
        }
        if !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(invalid("it contains characters other than printable ASCII"));
        }
        Ok(Self(text.to_owned()))
    }

    /// The password in plain text, for writing it into a Secret or a connection.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A new SCRAM-SHA-256 verifier for this password, with a fresh random salt.
    pub(crate) fn scram_verifier(&self) -> String {
        let mut salt = [0u8; 16];
        rand::fill(&mut salt);
        scram_verifier_with(&self.0, &salt, SCRAM_ITERATIONS)
    }

    /// Whether `stored` (a `pg_authid.rolpassword` value) is a verifier of this password.
    ///
    /// Only SCRAM-SHA-256 verifiers are checked; an MD5 hash, a plain-text password or a missing
    /// one counts as "does not match", so the caller replaces it with a SCRAM verifier.
    pub(crate) fn matches_verifier(&self, stored: &str) -> bool {
        let Some(parsed) = ParsedVerifier::parse(stored) else {
            return false;
        };
        let salted = salted_password(&self.0, &parsed.salt, parsed.iterations);
        let (stored_key, server_key) = keys(&salted);
        constant_time_eq(&stored_key, &parsed.stored_key)
            && constant_time_eq(&server_key, &parsed.server_key)
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl std::fmt::Display for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (RFC 5802, RFC 7677).
fn scram_verifier_with(password: &str, salt: &[u8], iterations: u32) -> String {
    let salted = salted_password(password, salt, iterations);
    let (stored_key, server_key) = keys(&salted);
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        BASE64.encode(salt),
        BASE64.encode(stored_key),
        BASE64.encode(server_key)
    )
}

struct ParsedVerifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl ParsedVerifier {
    fn parse(stored: &str) -> Option<Self> {
        let rest = stored.strip_prefix("SCRAM-SHA-256$")?;
        let (iterations_and_salt, keys) = rest.split_once('$')?;
        let (iterations, salt) = iterations_and_salt.split_once(':')?;
        let (stored_key, server_key) = keys.split_once(':')?;
        let iterations: u32 = iterations.parse().ok()?;
        if iterations == 0 {
            return None;
        }
        Some(Self {
            iterations,
            salt: BASE64.decode(salt).ok()?,
            stored_key: BASE64.decode(stored_key).ok()?,
            server_key: BASE64.decode(server_key).ok()?,
        })
    }
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail; the fallback keeps it panic-free.
    match HmacSha256::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(message);
            mac.finalize().into_bytes().into()
        }
        Err(_) => [0u8; 32],
    }
}

/// `Hi()` of RFC 5802: PBKDF2 with HMAC-SHA-256, one 32-byte block.
fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut first = Vec::with_capacity(salt.len() + 4);
    first.extend_from_slice(salt);
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut block = hmac(password.as_bytes(), &first);
    let mut result = block;
    for _ in 1..iterations {
        block = hmac(password.as_bytes(), &block);
        for (out, byte) in result.iter_mut().zip(block.iter()) {
            *out ^= byte;
        }
    }
    result
}

/// `(StoredKey, ServerKey)` from a salted password.
fn keys(salted: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    let client_key = hmac(salted, b"Client Key");
    let stored_key: [u8; 32] = Sha256::digest(client_key).into();
    let server_key = hmac(salted, b"Server Key");
    (stored_key, server_key)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_are_long_alphanumeric_and_distinct() {
        let a = Password::generate();
        let b = Password::generate();
        assert_eq!(a.expose().len(), GENERATED_LEN);
        assert!(a.expose().bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        // 44 symbols from an alphabet of 62: at least 256 bits.
        assert!((GENERATED_LEN as f64) * 62f64.log2() >= 256.0);
    }

    #[test]
    fn debug_and_display_redact_the_password() {
        let password = Password::generate();
        for shown in [format!("{password:?}"), format!("{password}")] {
            assert!(!shown.contains(password.expose()), "{shown}");
            assert!(shown.contains("redacted"));
        }
    }

    #[test]
    fn verifier_matches_its_password_only() {
        let password = Password::generate();
        let verifier = password.scram_verifier();
        assert!(verifier.starts_with("SCRAM-SHA-256$4096:"));
        assert!(!verifier.contains(password.expose()));
        assert!(password.matches_verifier(&verifier));
        assert!(!Password::generate().matches_verifier(&verifier));
        assert!(!password.matches_verifier("md5abcdef"));
        assert!(!password.matches_verifier("SCRAM-SHA-256$0:AAAA$AAAA:AAAA"));
        assert!(!password.matches_verifier(""));
    }

    #[test]
    fn verifier_follows_rfc_7677_test_vector() {
        // RFC 7677 section 3: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==,
        // 4096 iterations; the server signature check implies this ServerKey and StoredKey.
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = salted_password("pencil", &salt, 4096);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
            r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
            c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let client_signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(client_signature.iter())
            .map(|(k, s)| k ^ s)
            .collect();
        assert_eq!(
            BASE64.encode(proof),
            "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        let server_key = hmac(&salted, b"Server Key");
        let server_signature = hmac(&server_key, auth_message.as_bytes());
        assert_eq!(
            BASE64.encode(server_signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    /// Our verifier check agrees with the verifier Postgres computes itself, and Postgres
    /// accepts a login against the verifier computed here.
    #[tokio::test]
    async fn scram_verifiers_agree_with_postgres() {
        use kumiko_testkit::TempPostgres;
        use sqlx::Connection as _;

        let postgres = TempPostgres::start().unwrap();
        let mut connection = sqlx::PgConnection::connect(&postgres.superuser_url("postgres"))
            .await
            .unwrap();
        sqlx::raw_sql("CREATE ROLE by_server LOGIN PASSWORD 'correct horse battery staple'")
            .execute(&mut connection)
            .await
            .unwrap();
        let stored: String =
            sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = 'by_server'")
                .fetch_one(&mut connection)
                .await
                .unwrap();
        let right = Password::from_stored("by_server", "correct horse battery staple").unwrap();
        let wrong = Password::from_stored("by_server", "correct horse battery stapler").unwrap();
        assert!(right.matches_verifier(&stored));
        assert!(!wrong.matches_verifier(&stored));

        let ours = Password::generate();
        let sql: String =
            sqlx::query_scalar("SELECT format('CREATE ROLE by_us LOGIN PASSWORD %L', $1::text)")
                .bind(ours.scram_verifier())
                .fetch_one(&mut connection)
                .await
                .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut connection)
            .await
            .unwrap();
        sqlx::PgConnection::connect(&postgres.url_for("by_us", ours.expose(), "postgres"))
            .await
            .expect("login with the password whose verifier we computed");
        let refused =
            sqlx::PgConnection::connect(&postgres.url_for("by_us", "wrong", "postgres")).await;
        assert!(refused.is_err());
    }

    #[test]
    fn stored_passwords_must_be_printable_ascii() {
        assert!(Password::from_stored("r", "abc DEF-123_!").is_ok());
        for bad in ["", "tab\there", "nul\0", "ünïcode", &"a".repeat(1025)] {
            let error = Password::from_stored("shop_runtime", bad).expect_err(bad);
            assert!(error.to_string().contains("shop_runtime"));
            if !bad.is_empty() {
                assert!(!error.to_string().contains(bad));
            }
        }
    }
}
