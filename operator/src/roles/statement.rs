//! Changing statements: what they are, how they are reported, and how they are executed safely.
//!
//! A statement is a fixed template (a `&'static str` written in this crate) plus arguments. The
//! server builds the SQL text with `format(template, VARIADIC args)`: `%I` quotes an identifier,
//! `%L` quotes a literal, `%s` inserts a number this crate produced. No value is ever
//! concatenated into SQL on the client side.

use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection as _};

use super::error::Error;

/// The kinds of changing statement, as reported in [`Change`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatementKind {
    /// `CREATE ROLE`.
    CreateRole,
    /// `ALTER ROLE` of an attribute (`LOGIN`, `NOSUPERUSER`, `CONNECTION LIMIT`, `VALID UNTIL`).
    AlterRole,
    /// `ALTER ROLE ... PASSWORD` (a SCRAM verifier, never the plain text).
    SetPassword,
    /// `ALTER ROLE ... SET` of a setting (`statement_timeout`, ...).
    SetRoleConfig,
    /// `ALTER ROLE ... IN DATABASE ... RESET`: a per-database override removed.
    ResetRoleConfig,
    /// `GRANT <role> TO <role>`.
    GrantMembership,
    /// `REVOKE <role> FROM <role>`.
    RevokeMembership,
    /// `CREATE DATABASE`.
    CreateDatabase,
    /// `ALTER DATABASE|SCHEMA ... OWNER TO`.
    AlterOwner,
    /// `COMMENT ON ROLE|DATABASE` (the ownership marker).
    Comment,
    /// `GRANT` of privileges on a database, schema, tables or sequences.
    Grant,
    /// `REVOKE` of privileges on a database or schema.
    Revoke,
    /// `ALTER DEFAULT PRIVILEGES`.
    AlterDefaultPrivileges,
    /// `pg_terminate_backend` of the app's sessions.
    TerminateSessions,
    /// `DROP DATABASE ... WITH (FORCE)`.
    DropDatabase,
    /// `REASSIGN OWNED BY`.
    ReassignOwned,
    /// `DROP OWNED BY`.
    DropOwned,
    /// `DROP ROLE`.
    DropRole,
}

impl StatementKind {
    /// The SQL command, for people.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateRole => "CREATE ROLE",
            Self::AlterRole => "ALTER ROLE",
            Self::SetPassword => "ALTER ROLE PASSWORD",
            Self::SetRoleConfig => "ALTER ROLE SET",
            Self::ResetRoleConfig => "ALTER ROLE IN DATABASE RESET",
            Self::GrantMembership => "GRANT ROLE",
            Self::RevokeMembership => "REVOKE ROLE",
            Self::CreateDatabase => "CREATE DATABASE",
            Self::AlterOwner => "ALTER OWNER",
            Self::Comment => "COMMENT",
            Self::Grant => "GRANT",
            Self::Revoke => "REVOKE",
            Self::AlterDefaultPrivileges => "ALTER DEFAULT PRIVILEGES",
            Self::TerminateSessions => "TERMINATE SESSIONS",
            Self::DropDatabase => "DROP DATABASE",
            Self::ReassignOwned => "REASSIGN OWNED",
            Self::DropOwned => "DROP OWNED",
            Self::DropRole => "DROP ROLE",
        }
    }
}

impl std::fmt::Display for StatementKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One changing statement that was executed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What kind of statement.
    pub kind: StatementKind,
    /// What it changed, e.g. `role "shop_runtime": CONNECTION LIMIT 20`. Never a secret.
    pub detail: String,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.detail)
    }
}

/// An argument of a statement template.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Arg {
    /// An identifier, for `%I`.
    Ident(String),
    /// A literal, for `%L`.
    Literal(String),
    /// A literal that must never be shown (a password verifier), for `%L`.
    Secret(String),
    /// An integer, for `%s`.
    Number(i64),
}

impl Arg {
    fn text(&self) -> String {
        match self {
            Arg::Ident(text) | Arg::Literal(text) | Arg::Secret(text) => text.clone(),
            Arg::Number(number) => number.to_string(),
        }
    }

    /// The placeholder this argument must fill.
    #[cfg(test)]
    pub(crate) fn placeholder(&self) -> &'static str {
        match self {
            Arg::Ident(_) => "%I",
            Arg::Literal(_) | Arg::Secret(_) => "%L",
            Arg::Number(_) => "%s",
        }
    }
}

impl std::fmt::Debug for Arg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Arg::Ident(text) => write!(f, "Ident({text:?})"),
            Arg::Literal(text) => write!(f, "Literal({text:?})"),
            Arg::Secret(_) => f.write_str("Secret(<redacted>)"),
            Arg::Number(number) => write!(f, "Number({number})"),
        }
    }
}

/// A changing statement before it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Statement {
    /// What kind of statement.
    pub kind: StatementKind,
    /// What it changes, for the report and for errors.
    pub detail: String,
    /// The `format()` template: a literal of this crate, never built from input.
    pub template: &'static str,
    /// The values for the template's placeholders, in order.
    pub args: Vec<Arg>,
    /// Whether it may run inside a transaction block (`CREATE DATABASE` may not).
    pub transactional: bool,
}

impl Statement {
    /// A statement that may run in a transaction.
    pub(crate) fn new(
        kind: StatementKind,
        detail: String,
        template: &'static str,
        args: Vec<Arg>,
    ) -> Self {
        Self {
            kind,
            detail,
            template,
            args,
            transactional: true,
        }
    }

    /// The same statement, to run outside any transaction block.
    pub(crate) fn outside_transaction(mut self) -> Self {
        self.transactional = false;
        self
    }

    /// The report entry for this statement.
    pub(crate) fn change(&self) -> Change {
        Change {
            kind: self.kind,
            detail: self.detail.clone(),
        }
    }

    /// The placeholders of the template, in order (`%%` is a literal percent sign).
    #[cfg(test)]
    pub(crate) fn placeholders(&self) -> Vec<&'static str> {
        let mut found = Vec::new();
        let mut rest = self.template;
        while let Some(index) = rest.find('%') {
            let after = &rest[index + 1..];
            match after.chars().next() {
                Some('I') => found.push("%I"),
                Some('L') => found.push("%L"),
                Some('s') => found.push("%s"),
                Some('%') => {}
                _ => found.push("%?"),
            }
            rest = after.get(1..).unwrap_or("");
        }
        found
    }
}

/// Runs `statements` in order; consecutive transactional ones share one transaction.
/// Returns what was changed.
pub(crate) async fn execute_all(
    connection: &mut PgConnection,
    statements: &[Statement],
) -> Result<Vec<Change>, Error> {
    let mut changes = Vec::with_capacity(statements.len());
    let mut index = 0;
    while let Some(first) = statements.get(index) {
        if !first.transactional {
            execute_one(connection, first).await?;
            changes.push(first.change());
            index += 1;
            continue;
        }
        let batch: Vec<&Statement> = statements[index..]
            .iter()
            .take_while(|statement| statement.transactional)
            .collect();
        let mut transaction = connection
            .begin()
            .await
            .map_err(|source| Error::Statement {
                kind: first.kind,
                object: first.detail.clone(),
                source,
            })?;
        for statement in &batch {
            execute_one(&mut transaction, statement).await?;
        }
        transaction
            .commit()
            .await
            .map_err(|source| Error::Statement {
                kind: first.kind,
                object: first.detail.clone(),
                source,
            })?;
        changes.extend(batch.iter().map(|statement| statement.change()));
        index += batch.len();
    }
    Ok(changes)
}

/// Has the server build the statement with `format()`, then runs the result.
pub(crate) async fn execute_one(
    connection: &mut PgConnection,
    statement: &Statement,
) -> Result<(), Error> {
    let failed = |source| Error::Statement {
        kind: statement.kind,
        object: statement.detail.clone(),
        source,
    };
    let args: Vec<String> = statement.args.iter().map(Arg::text).collect();
    tracing::debug!(kind = %statement.kind, detail = %statement.detail, "executing");
    let sql: String = sqlx::query_scalar("SELECT format($1, VARIADIC $2::text[])")
        .bind(statement.template)
        .bind(&args)
        .fetch_one(&mut *connection)
        .await
        .map_err(failed)?;
    // The text came from the server's format() of a crate-owned template with %I/%L quoting.
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(&mut *connection)
        .await
        .map_err(failed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_in_debug() {
        let statement = Statement::new(
            StatementKind::SetPassword,
            "role \"x\"".to_owned(),
            "ALTER ROLE %I PASSWORD %L",
            vec![
                Arg::Ident("x".to_owned()),
                Arg::Secret("SCRAM-SHA-256$4096:c2FsdA==$a:b".to_owned()),
            ],
        );
        let shown = format!("{statement:?}");
        assert!(!shown.contains("SCRAM"), "{shown}");
        assert_eq!(statement.placeholders(), ["%I", "%L"]);
    }

    /// Hostile identifiers and literals reach Postgres only quoted: each becomes exactly one
    /// object with exactly that name, and nothing they contain is executed.
    #[tokio::test]
    async fn hostile_identifiers_and_literals_are_quoted_by_the_server() {
        use kumiko_testkit::TempPostgres;
        use sqlx::Connection as _;

        let postgres = TempPostgres::start().unwrap();
        let mut connection = PgConnection::connect(&postgres.superuser_url("postgres"))
            .await
            .unwrap();
        sqlx::raw_sql("CREATE ROLE canary")
            .execute(&mut connection)
            .await
            .unwrap();
        let hostile = [
            "x\"; DROP ROLE canary; --",
            "x'; DROP ROLE canary; --",
            "$$; DROP ROLE canary; $$",
            "x; DROP ROLE canary",
            "Ünïcødé ロール \u{202e}",
            "back\\slash",
            "%I %L %s",
        ];
        for name in hostile {
            let create = Statement::new(
                StatementKind::CreateRole,
                String::new(),
                "CREATE ROLE %I WITH LOGIN CONNECTION LIMIT %s",
                vec![Arg::Ident(name.to_owned()), Arg::Number(3)],
            );
            execute_one(&mut connection, &create).await.unwrap();
            let comment = Statement::new(
                StatementKind::Comment,
                String::new(),
                "COMMENT ON ROLE %I IS %L",
                vec![Arg::Ident(name.to_owned()), Arg::Literal(name.to_owned())],
            );
            execute_one(&mut connection, &comment).await.unwrap();
            let (limit, comment): (i32, Option<String>) = sqlx::query_as(
                "SELECT rolconnlimit, shobj_description(oid, 'pg_authid') \
                 FROM pg_roles WHERE rolname = $1",
            )
            .bind(name)
            .fetch_one(&mut connection)
            .await
            .unwrap();
            assert_eq!((limit, comment.as_deref()), (3, Some(name)));
        }
        let canary: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = 'canary'")
                .fetch_one(&mut connection)
                .await
                .unwrap();
        assert_eq!(canary, 1, "no injected statement ran");

        // An identifier beyond 63 bytes would be truncated by Postgres: that is why app names
        // are capped at 40 characters before they get here.
        let long = "a".repeat(70);
        let create = Statement::new(
            StatementKind::CreateRole,
            String::new(),
            "CREATE ROLE %I",
            vec![Arg::Ident(long.clone())],
        );
        execute_one(&mut connection, &create).await.unwrap();
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
                .bind(&long[..63])
                .fetch_one(&mut connection)
                .await
                .unwrap();
        assert!(exists);
    }

    #[tokio::test]
    async fn transactional_batches_roll_back_together() {
        use kumiko_testkit::TempPostgres;
        use sqlx::Connection as _;

        let postgres = TempPostgres::start().unwrap();
        let mut connection = PgConnection::connect(&postgres.superuser_url("postgres"))
            .await
            .unwrap();
        let plan = [
            Statement::new(
                StatementKind::CreateRole,
                "role \"first\"".to_owned(),
                "CREATE ROLE %I",
                vec![Arg::Ident("first".to_owned())],
            ),
            Statement::new(
                StatementKind::Comment,
                "role \"missing\"".to_owned(),
                "COMMENT ON ROLE %I IS %L",
                vec![
                    Arg::Ident("missing".to_owned()),
                    Arg::Literal("x".to_owned()),
                ],
            ),
        ];
        let error = execute_all(&mut connection, &plan).await.unwrap_err();
        assert!(
            matches!(
                &error,
                Error::Statement {
                    kind: StatementKind::Comment,
                    ..
                }
            ),
            "{error}"
        );
        assert!(!error.is_transient(), "undefined object is permanent");
        let first: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = 'first'")
                .fetch_one(&mut connection)
                .await
                .unwrap();
        assert_eq!(
            first, 0,
            "the role and its comment are created together or not at all"
        );
    }

    #[test]
    fn placeholders_skip_escaped_percent_signs() {
        let statement = Statement::new(
            StatementKind::Grant,
            String::new(),
            "SELECT '100%%' || %L || %I %s %x",
            vec![],
        );
        assert_eq!(statement.placeholders(), ["%L", "%I", "%s", "%?"]);
    }
}
