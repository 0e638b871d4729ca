//! What happens to an app's Postgres objects when the app is deleted.

use sqlx::postgres::PgConnection;

use super::admin::AdminConnection;
use super::error::Error;
use super::names::ObjectNames;
use super::observe::{self, ClusterState};
use super::plan;
use super::provision::{lock_app, write_counts};
use super::settings::{AppDatabase, ReclaimPolicy};
use super::statement::{Arg, Change, Statement, StatementKind as Kind, execute_all};

/// The outcome of [`reclaim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reclaimed {
    /// The policy that was applied.
    pub policy: ReclaimPolicy,
    /// Every changing statement issued, in order (none for `Retain`, none when already gone).
    pub changes: Vec<Change>,
    /// How many sessions of the app's roles or database were terminated.
    pub sessions_terminated: u64,
}

impl std::fmt::Display for Reclaimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?}: {} sessions terminated, ",
            self.policy, self.sessions_terminated
        )?;
        write_counts(f, &self.changes)
    }
}

/// Applies the app's reclaim policy.
///
/// `Retain` touches nothing (no connection is made): roles, database and data stay, and an app
/// created again under the same claim adopts them. `Delete` first checks that every object that
/// exists is this app's (it never drops another app's or an unmarked object), then disables
/// login for both roles, terminates their sessions and every session on the database, drops the
/// database `WITH (FORCE)`, and for each role runs `REASSIGN OWNED BY ... TO CURRENT_USER`,
/// `DROP OWNED BY` and `DROP ROLE`. It succeeds while clients are connected, and a second run
/// finds nothing and changes nothing. Needs Postgres 13 or later.
pub async fn reclaim(
    admin: &AdminConnection,
    app: &AppDatabase,
    policy: ReclaimPolicy,
) -> Result<Reclaimed, Error> {
    if policy == ReclaimPolicy::Retain {
        return Ok(Reclaimed {
            policy,
            changes: Vec::new(),
            sessions_terminated: 0,
        });
    }
    let names = app.object_names();
    let mut connection = admin.connect().await?;
    lock_app(&mut connection, &names).await?;
    let state = observe::cluster_state(&mut connection, admin, &names, None).await?;
    plan::check_claims(&app.claim, &names, &state)?;

    let mut changes = execute_all(&mut connection, &plan_lockout(&names, &state)).await?;
    let sessions_terminated = terminate_sessions(&mut connection, &names).await?;
    if sessions_terminated > 0 {
        changes.push(Change {
            kind: Kind::TerminateSessions,
            detail: format!("{sessions_terminated} sessions of app {}", app.name),
        });
    }
    changes.extend(execute_all(&mut connection, &plan_drop(&names, &state)).await?);
    for change in &changes {
        tracing::info!(app = %app.name, change = %change, "postgres reclaimed");
    }
    Ok(Reclaimed {
        policy,
        changes,
        sessions_terminated,
    })
}

fn existing_roles<'a>(
    names: &'a ObjectNames,
    state: &'a ClusterState,
) -> Vec<(&'a str, bool, bool)> {
    [
        (&names.runtime_role, &state.runtime),
        (&names.owner_role, &state.owner),
    ]
    .into_iter()
    .filter_map(|(name, role)| {
        role.as_ref()
            .map(|role| (name.as_str(), role.login, role.admin_is_member))
    })
    .collect()
}

/// No new sessions: `NOLOGIN` on both roles; a non-superuser admin joins them (needed to
/// reassign and drop what they own).
pub(crate) fn plan_lockout(names: &ObjectNames, state: &ClusterState) -> Vec<Statement> {
    let mut plan = Vec::new();
    for (role, login, admin_is_member) in existing_roles(names, state) {
        if !state.admin.is_superuser && !admin_is_member {
            plan.push(Statement::new(
                Kind::GrantMembership,
                format!("role {role:?} to the admin"),
                "GRANT %I TO CURRENT_USER",
                vec![Arg::Ident(role.to_owned())],
            ));
        }
        if login {
            plan.push(Statement::new(
                Kind::AlterRole,
                format!("role {role:?}: NOLOGIN"),
                "ALTER ROLE %I WITH NOLOGIN",
                vec![Arg::Ident(role.to_owned())],
            ));
        }
    }
    plan
}

/// The drops, in dependency order: the database (owned by the owner role), then each role's
/// remaining objects and privileges elsewhere, then the roles.
pub(crate) fn plan_drop(names: &ObjectNames, state: &ClusterState) -> Vec<Statement> {
    let mut plan = Vec::new();
    if state.database.is_some() {
        plan.push(
            Statement::new(
                Kind::DropDatabase,
                format!("database {:?}", names.database),
                "DROP DATABASE IF EXISTS %I WITH (FORCE)",
                vec![Arg::Ident(names.database.clone())],
            )
            .outside_transaction(),
        );
    }
    for (role, _login, _member) in existing_roles(names, state) {
        let arg = || vec![Arg::Ident(role.to_owned())];
        let object = format!("role {role:?}");
        plan.push(Statement::new(
            Kind::ReassignOwned,
            format!("{object} to the admin"),
            "REASSIGN OWNED BY %I TO CURRENT_USER",
            arg(),
        ));
        plan.push(Statement::new(
            Kind::DropOwned,
            object.clone(),
            "DROP OWNED BY %I",
            arg(),
        ));
        plan.push(Statement::new(
            Kind::DropRole,
            object,
            "DROP ROLE %I",
            arg(),
        ));
    }
    plan
}

async fn terminate_sessions(
    connection: &mut PgConnection,
    names: &ObjectNames,
) -> Result<u64, Error> {
    let roles = vec![names.owner_role.clone(), names.runtime_role.clone()];
    let terminated: i64 = sqlx::query_scalar(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) \
         FROM pg_catalog.pg_stat_activity \
         WHERE (usename = ANY($1) OR datname = $2) AND pid <> pg_backend_pid()",
    )
    .bind(&roles)
    .bind(&names.database)
    .fetch_one(&mut *connection)
    .await
    .map_err(|source| Error::Statement {
        kind: Kind::TerminateSessions,
        object: format!("sessions of database {:?}", names.database),
        source,
    })?;
    Ok(u64::try_from(terminated).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::super::observe::{AdminState, DatabaseState, PasswordCheck, RoleState};
    use super::*;

    fn role(login: bool) -> RoleState {
        RoleState {
            comment: Some("kumiko.so/app=prod/shop".to_owned()),
            login,
            superuser: false,
            createdb: false,
            createrole: false,
            replication: false,
            bypassrls: false,
            connection_limit: 20,
            expires: false,
            config: vec![],
            member_of: vec![],
            admin_is_member: false,
            password: PasswordCheck::Unknown,
        }
    }

    #[test]
    fn delete_locks_out_then_drops_database_before_roles() {
        let names = AppDatabase::new("shop", "prod/shop")
            .unwrap()
            .object_names();
        let state = ClusterState {
            admin: AdminState {
                is_superuser: true,
                can_read_verifiers: true,
            },
            owner: Some(role(true)),
            runtime: Some(role(true)),
            database: Some(DatabaseState {
                owner: "shop_owner".to_owned(),
                comment: None,
                public_privileges: vec![],
                runtime_privileges: vec![],
                runtime_settings: vec![],
            }),
        };
        let lockout: Vec<Kind> = plan_lockout(&names, &state)
            .iter()
            .map(|s| s.kind)
            .collect();
        assert_eq!(lockout, [Kind::AlterRole, Kind::AlterRole]);
        let drop: Vec<Kind> = plan_drop(&names, &state).iter().map(|s| s.kind).collect();
        assert_eq!(
            drop,
            [
                Kind::DropDatabase,
                Kind::ReassignOwned,
                Kind::DropOwned,
                Kind::DropRole,
                Kind::ReassignOwned,
                Kind::DropOwned,
                Kind::DropRole,
            ]
        );
    }

    #[test]
    fn nothing_left_plans_nothing() {
        let names = AppDatabase::new("shop", "prod/shop")
            .unwrap()
            .object_names();
        let state = ClusterState {
            admin: AdminState {
                is_superuser: true,
                can_read_verifiers: true,
            },
            owner: None,
            runtime: None,
            database: None,
        };
        assert!(plan_lockout(&names, &state).is_empty());
        assert!(plan_drop(&names, &state).is_empty());
    }
}
