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
        let mut transaction = connection.begin().await.map_err(|source| Error::Statement {
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
