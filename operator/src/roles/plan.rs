//! Deciding what to change: pure functions from observed state to statements.
//!
//! An empty plan means Postgres already matches; that is how a second run stays a no-op.

use super::error::Error;
use super::names::{Claim, ObjectNames, Ownership, ownership};
use super::observe::{
    ClusterState, DatabaseObjects, DatabaseState, PasswordCheck, RoleState, SchemaState,
};
use super::password::Password;
use super::settings::AppDatabase;
use super::statement::{Arg, Statement, StatementKind as Kind};

/// What provisioning wants, with the passwords resolved (kept or generated).
pub(crate) struct Desired<'a> {
    pub app: &'a AppDatabase,
    pub names: ObjectNames,
    pub owner_password: &'a Password,
    pub runtime_password: &'a Password,
}

/// `PUBLIC`'s pseudo-owner of the `public` schema since Postgres 15.
const DATABASE_OWNER_PSEUDO_ROLE: &str = "pg_database_owner";

const TABLE_PRIVILEGES: [&str; 4] = ["DELETE", "INSERT", "SELECT", "UPDATE"];
const SEQUENCE_PRIVILEGES: [&str; 2] = ["SELECT", "USAGE"];
const SCHEMA_PRIVILEGES: [&str; 1] = ["USAGE"];

fn ident(text: &str) -> Arg {
    Arg::Ident(text.to_owned())
}

fn role_object(role: &str) -> String {
    format!("role {role:?}")
}

fn database_object(database: &str) -> String {
    format!("database {database:?}")
}

/// Refuses to touch objects that belong to another app or to nobody.
///
/// The database counts as this app's when its comment says so, or when it carries no marker but
/// is owned by this app's (marked) owner role: `CREATE DATABASE` cannot share a transaction with
/// its `COMMENT`, so a crash between the two must not strand the app.
pub(crate) fn check_claims(
    claim: &Claim,
    names: &ObjectNames,
    state: &ClusterState,
) -> Result<(), Error> {
    let collision = |object: String, claimed_by: Option<String>| Error::Collision {
        object,
        claimed_by,
        expected_marker: claim.marker(),
    };
    let mut owner_is_ours = false;
    for (role, observed, is_owner) in [
        (&names.owner_role, &state.owner, true),
        (&names.runtime_role, &state.runtime, false),
    ] {
        if let Some(observed) = observed {
            match ownership(observed.comment.as_deref(), claim) {
                Ownership::Ours => owner_is_ours |= is_owner,
                Ownership::OtherApp(other) => {
                    return Err(collision(role_object(role), Some(other)));
                }
                Ownership::Nobody => return Err(collision(role_object(role), None)),
            }
        }
    }
    if let Some(database) = &state.database {
        match ownership(database.comment.as_deref(), claim) {
            Ownership::Ours => {}
            Ownership::OtherApp(other) => {
                return Err(collision(database_object(&names.database), Some(other)));
            }
            Ownership::Nobody => {
                if !(owner_is_ours && database.owner == names.owner_role) {
                    return Err(collision(database_object(&names.database), None));
                }
            }
        }
    }
    Ok(())
}

/// The cluster-wide statements: roles, their attributes, passwords and settings, memberships,
/// the database, its owner, marker and privileges.
pub(crate) fn plan_cluster(
    desired: &Desired<'_>,
    state: &ClusterState,
) -> Result<Vec<Statement>, Error> {
    check_claims(&desired.app.claim, &desired.names, state)?;
    let names = &desired.names;
    let mut plan = Vec::new();

    plan.extend(plan_role(
        &names.owner_role,
        state.owner.as_ref(),
        desired.app.owner_connection_limit,
        desired.owner_password,
        desired,
    ));
    plan.extend(plan_role(
        &names.runtime_role,
        state.runtime.as_ref(),
        desired.app.connection_limit,
        desired.runtime_password,
        desired,
    ));
    plan.extend(plan_runtime_settings(desired, state.runtime.as_ref())?);

    // Membership: the runtime role must not act as the owner; a non-superuser admin must.
    if let Some(runtime) = &state.runtime
        && runtime.member_of.contains(&names.owner_role)
    {
        plan.push(Statement::new(
            Kind::RevokeMembership,
            format!(
                "{} from {}",
                role_object(&names.owner_role),
                role_object(&names.runtime_role)
            ),
            "REVOKE %I FROM %I",
            vec![ident(&names.owner_role), ident(&names.runtime_role)],
        ));
    }
    let admin_is_member = state
        .owner
        .as_ref()
        .is_some_and(|owner| owner.admin_is_member);
    if !state.admin.is_superuser && !admin_is_member {
        plan.push(Statement::new(
            Kind::GrantMembership,
            format!("{} to the admin", role_object(&names.owner_role)),
            "GRANT %I TO CURRENT_USER",
            vec![ident(&names.owner_role)],
        ));
    }

    match &state.database {
        None => {
            plan.push(
                Statement::new(
                    Kind::CreateDatabase,
                    format!(
                        "{} owned by {}",
                        database_object(&names.database),
                        role_object(&names.owner_role)
                    ),
                    "CREATE DATABASE %I OWNER %I",
                    vec![ident(&names.database), ident(&names.owner_role)],
                )
                .outside_transaction(),
            );
            plan.push(comment_on_database(desired));
        }
        Some(database) => plan.extend(plan_database(desired, database, state.runtime.is_some())),
    }
    Ok(plan)
}

fn plan_role(
    role: &str,
    observed: Option<&RoleState>,
    connection_limit: i32,
    password: &Password,
    desired: &Desired<'_>,
) -> Vec<Statement> {
    let object = role_object(role);
    let Some(observed) = observed else {
        return vec![
            Statement::new(
                Kind::CreateRole,
                format!("{object}: LOGIN CONNECTION LIMIT {connection_limit}"),
                "CREATE ROLE %I WITH LOGIN CONNECTION LIMIT %s PASSWORD %L",
                vec![
                    ident(role),
                    Arg::Number(connection_limit.into()),
                    Arg::Secret(password.scram_verifier()),
                ],
            ),
            Statement::new(
                Kind::Comment,
                format!("{object}: {}", desired.app.claim.marker()),
                "COMMENT ON ROLE %I IS %L",
                vec![ident(role), Arg::Literal(desired.app.claim.marker())],
            ),
        ];
    };
    let mut plan = Vec::new();
    let mut attribute = |wrong: bool, name: &str, template: &'static str| {
        if wrong {
            plan.push(Statement::new(
                Kind::AlterRole,
                format!("{object}: {name}"),
                template,
                vec![ident(role)],
            ));
        }
    };
    attribute(!observed.login, "LOGIN", "ALTER ROLE %I WITH LOGIN");
    attribute(
        observed.superuser,
        "NOSUPERUSER",
        "ALTER ROLE %I WITH NOSUPERUSER",
    );
    attribute(
        observed.createdb,
        "NOCREATEDB",
        "ALTER ROLE %I WITH NOCREATEDB",
    );
    attribute(
        observed.createrole,
        "NOCREATEROLE",
        "ALTER ROLE %I WITH NOCREATEROLE",
    );
    attribute(
        observed.replication,
        "NOREPLICATION",
        "ALTER ROLE %I WITH NOREPLICATION",
    );
    attribute(
        observed.bypassrls,
        "NOBYPASSRLS",
        "ALTER ROLE %I WITH NOBYPASSRLS",
    );
    attribute(
        observed.expires,
        "VALID UNTIL 'infinity'",
        "ALTER ROLE %I VALID UNTIL 'infinity'",
    );
    if observed.connection_limit != connection_limit {
        plan.push(Statement::new(
            Kind::AlterRole,
            format!("{object}: CONNECTION LIMIT {connection_limit}"),
            "ALTER ROLE %I WITH CONNECTION LIMIT %s",
            vec![ident(role), Arg::Number(connection_limit.into())],
        ));
    }
    if observed.password == PasswordCheck::Differs {
        plan.push(Statement::new(
            Kind::SetPassword,
            object.clone(),
            "ALTER ROLE %I WITH PASSWORD %L",
            vec![ident(role), Arg::Secret(password.scram_verifier())],
        ));
    }
    if ownership(observed.comment.as_deref(), &desired.app.claim) != Ownership::Ours {
        plan.push(Statement::new(
            Kind::Comment,
            format!("{object}: {}", desired.app.claim.marker()),
            "COMMENT ON ROLE %I IS %L",
            vec![ident(role), Arg::Literal(desired.app.claim.marker())],
        ));
    }
    plan
}

fn plan_runtime_settings(
    desired: &Desired<'_>,
    runtime: Option<&RoleState>,
) -> Result<Vec<Statement>, Error> {
    let role = &desired.names.runtime_role;
    let current: &[String] = runtime.map(|state| state.config.as_slice()).unwrap_or(&[]);
    let mut plan = Vec::new();
    for (name, value) in desired.app.runtime_role_settings()? {
        let wanted = format!("{name}={value}");
        if current.contains(&wanted) {
            continue;
        }
        let template = match name {
            "statement_timeout" => "ALTER ROLE %I SET statement_timeout = %L",
            _ => "ALTER ROLE %I SET idle_in_transaction_session_timeout = %L",
        };
        plan.push(Statement::new(
            Kind::SetRoleConfig,
            format!("{}: {name} = {value}", role_object(role)),
            template,
            vec![ident(role), Arg::Literal(value)],
        ));
    }
    Ok(plan)
}

fn comment_on_database(desired: &Desired<'_>) -> Statement {
    Statement::new(
        Kind::Comment,
        format!(
            "{}: {}",
            database_object(&desired.names.database),
            desired.app.claim.marker()
        ),
        "COMMENT ON DATABASE %I IS %L",
        vec![
            ident(&desired.names.database),
            Arg::Literal(desired.app.claim.marker()),
        ],
    )
}

fn plan_database(
    desired: &Desired<'_>,
    database: &DatabaseState,
    runtime_exists: bool,
) -> Vec<Statement> {
    let names = &desired.names;
    let object = database_object(&names.database);
    let mut plan = Vec::new();
    if database.owner != names.owner_role {
        plan.push(Statement::new(
            Kind::AlterOwner,
            format!("{object} to {}", role_object(&names.owner_role)),
            "ALTER DATABASE %I OWNER TO %I",
            vec![ident(&names.database), ident(&names.owner_role)],
        ));
    }
    if ownership(database.comment.as_deref(), &desired.app.claim) != Ownership::Ours {
        plan.push(comment_on_database(desired));
    }
    if !database.public_privileges.is_empty() {
        plan.push(Statement::new(
            Kind::Revoke,
            format!("ALL on {object} from PUBLIC"),
            "REVOKE ALL ON DATABASE %I FROM PUBLIC",
            vec![ident(&names.database)],
        ));
    }
    if !runtime_exists {
        // Created by this very plan; its grants follow on the next pass.
        return plan;
    }
    if !database.runtime_privileges.iter().any(|p| p == "CONNECT") {
        plan.push(Statement::new(
            Kind::Grant,
            format!(
                "CONNECT on {object} to {}",
                role_object(&names.runtime_role)
            ),
            "GRANT CONNECT ON DATABASE %I TO %I",
            vec![ident(&names.database), ident(&names.runtime_role)],
        ));
    }
    if database
        .runtime_privileges
        .iter()
        .any(|p| p == "CREATE" || p == "TEMPORARY")
    {
        plan.push(Statement::new(
            Kind::Revoke,
            format!(
                "CREATE, TEMPORARY on {object} from {}",
                role_object(&names.runtime_role)
            ),
            "REVOKE CREATE, TEMPORARY ON DATABASE %I FROM %I",
            vec![ident(&names.database), ident(&names.runtime_role)],
        ));
    }
    for (name, template) in [
        (
            "statement_timeout",
            "ALTER ROLE %I IN DATABASE %I RESET statement_timeout",
        ),
        (
            "idle_in_transaction_session_timeout",
            "ALTER ROLE %I IN DATABASE %I RESET idle_in_transaction_session_timeout",
        ),
    ] {
        let prefix = format!("{name}=");
        if database
            .runtime_settings
            .iter()
            .any(|setting| setting.starts_with(&prefix))
        {
            plan.push(Statement::new(
                Kind::ResetRoleConfig,
                format!("{} in {object}: {name}", role_object(&names.runtime_role)),
                template,
                vec![ident(&names.runtime_role), ident(&names.database)],
            ));
        }
    }
    plan
}

fn lacks_any(held: &[String], wanted: &[&str]) -> bool {
    wanted
        .iter()
        .any(|privilege| !held.iter().any(|p| p == privilege))
}

/// Whether the owner role's migrations create objects in `schema`.
fn is_app_schema(schema: &SchemaState, names: &ObjectNames) -> bool {
    schema.owner == names.owner_role || schema.owner == DATABASE_OWNER_PSEUDO_ROLE
}

/// The statements inside the app's database: schema ownership, no `CREATE` for anyone but the
/// owner, DML grants on everything that exists, and default privileges for what comes later.
pub(crate) fn plan_database_objects(
    names: &ObjectNames,
    objects: &DatabaseObjects,
) -> Vec<Statement> {
    let runtime = &names.runtime_role;
    let owner = &names.owner_role;
    let mut plan = Vec::new();
    for schema in &objects.schemas {
        let object = format!("schema {:?}", schema.name);
        let owned_by_runtime = schema.owner == *runtime;
        if owned_by_runtime || (schema.name == "public" && !is_app_schema(schema, names)) {
            plan.push(Statement::new(
                Kind::AlterOwner,
                format!("{object} to {}", role_object(owner)),
                "ALTER SCHEMA %I OWNER TO %I",
                vec![ident(&schema.name), ident(owner)],
            ));
        }
        if schema.public_create {
            plan.push(Statement::new(
                Kind::Revoke,
                format!("CREATE on {object} from PUBLIC"),
                "REVOKE CREATE ON SCHEMA %I FROM PUBLIC",
                vec![ident(&schema.name)],
            ));
        }
        if schema.runtime_create || owned_by_runtime {
            plan.push(Statement::new(
                Kind::Revoke,
                format!("CREATE on {object} from {}", role_object(runtime)),
                "REVOKE CREATE ON SCHEMA %I FROM %I",
                vec![ident(&schema.name), ident(runtime)],
            ));
        }
        if !(is_app_schema(schema, names) || owned_by_runtime) {
            continue;
        }
        if !schema.runtime_usage {
            plan.push(Statement::new(
                Kind::Grant,
                format!("USAGE on {object} to {}", role_object(runtime)),
                "GRANT USAGE ON SCHEMA %I TO %I",
                vec![ident(&schema.name), ident(runtime)],
            ));
        }
        if schema.tables_missing_grants {
            plan.push(Statement::new(
                Kind::Grant,
                format!(
                    "SELECT, INSERT, UPDATE, DELETE on all tables in {object} to {}",
                    role_object(runtime)
                ),
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I",
                vec![ident(&schema.name), ident(runtime)],
            ));
        }
        if schema.sequences_missing_grants {
            plan.push(Statement::new(
                Kind::Grant,
                format!(
                    "USAGE, SELECT on all sequences in {object} to {}",
                    role_object(runtime)
                ),
                "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO %I",
                vec![ident(&schema.name), ident(runtime)],
            ));
        }
    }

    let defaults = &objects.default_privileges;
    for (held, wanted, what, template) in [
        (
            &defaults.tables,
            &TABLE_PRIVILEGES[..],
            "SELECT, INSERT, UPDATE, DELETE on tables",
            "ALTER DEFAULT PRIVILEGES FOR ROLE %I GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %I",
        ),
        (
            &defaults.sequences,
            &SEQUENCE_PRIVILEGES[..],
            "USAGE, SELECT on sequences",
            "ALTER DEFAULT PRIVILEGES FOR ROLE %I GRANT USAGE, SELECT ON SEQUENCES TO %I",
        ),
        (
            &defaults.schemas,
            &SCHEMA_PRIVILEGES[..],
            "USAGE on schemas",
            "ALTER DEFAULT PRIVILEGES FOR ROLE %I GRANT USAGE ON SCHEMAS TO %I",
        ),
    ] {
        if lacks_any(held, wanted) {
            plan.push(Statement::new(
                Kind::AlterDefaultPrivileges,
                format!(
                    "for {}: {what} to {}",
                    role_object(owner),
                    role_object(runtime)
                ),
                template,
                vec![ident(owner), ident(runtime)],
            ));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::super::observe::{AdminState, DefaultPrivileges};
    use super::*;

    fn app() -> AppDatabase {
        AppDatabase::new("shop", "prod/shop").unwrap()
    }

    fn converged_role(app: &AppDatabase, limit: i32, config: Vec<String>) -> RoleState {
        RoleState {
            comment: Some(app.claim.marker()),
            login: true,
            superuser: false,
            createdb: false,
            createrole: false,
            replication: false,
            bypassrls: false,
            connection_limit: limit,
            expires: false,
            config,
            member_of: vec![],
            admin_is_member: true,
            password: PasswordCheck::Matches,
        }
    }

    fn converged(app: &AppDatabase) -> ClusterState {
        ClusterState {
            admin: AdminState {
                is_superuser: true,
                can_read_verifiers: true,
            },
            owner: Some(converged_role(app, app.owner_connection_limit, vec![])),
            runtime: Some(converged_role(
                app,
                app.connection_limit,
                vec![
                    "statement_timeout=30000".to_owned(),
                    "idle_in_transaction_session_timeout=60000".to_owned(),
                ],
            )),
            database: Some(DatabaseState {
                owner: "shop_owner".to_owned(),
                comment: Some(app.claim.marker()),
                public_privileges: vec![],
                runtime_privileges: vec!["CONNECT".to_owned()],
                runtime_settings: vec![],
            }),
        }
    }

    fn kinds(plan: &[Statement]) -> Vec<Kind> {
        plan.iter().map(|statement| statement.kind).collect()
    }

    fn with_desired<T>(app: &AppDatabase, f: impl FnOnce(&Desired<'_>) -> T) -> T {
        let owner = Password::generate();
        let runtime = Password::generate();
        f(&Desired {
            app,
            names: app.object_names(),
            owner_password: &owner,
            runtime_password: &runtime,
        })
    }

    fn assert_placeholders_match(plan: &[Statement]) {
        for statement in plan {
            let expected: Vec<&str> = statement.args.iter().map(|arg| arg.placeholder()).collect();
            assert_eq!(statement.placeholders(), expected, "{statement:?}");
        }
    }

    #[test]
    fn converged_state_plans_nothing() {
        let app = app();
        let plan = with_desired(&app, |d| plan_cluster(d, &converged(&app))).unwrap();
        assert!(plan.is_empty(), "{plan:?}");
    }

    #[test]
    fn empty_cluster_plans_roles_then_database() {
        let app = app();
        let mut state = converged(&app);
        state.owner = None;
        state.runtime = None;
        state.database = None;
        let plan = with_desired(&app, |d| plan_cluster(d, &state)).unwrap();
        assert_eq!(
            kinds(&plan),
            [
                Kind::CreateRole,
                Kind::Comment,
                Kind::CreateRole,
                Kind::Comment,
                Kind::SetRoleConfig,
                Kind::SetRoleConfig,
                Kind::CreateDatabase,
                Kind::Comment,
            ]
        );
        assert!(!plan[6].transactional);
        assert_placeholders_match(&plan);
    }

    #[test]
    fn drift_is_planned_back() {
        let app = app();
        let mut state = converged(&app);
        let runtime = state.runtime.as_mut().unwrap();
        runtime.connection_limit = 500;
        runtime.superuser = true;
        runtime.password = PasswordCheck::Differs;
        runtime.config = vec!["statement_timeout=0".to_owned()];
        runtime.member_of = vec!["shop_owner".to_owned()];
        let database = state.database.as_mut().unwrap();
        database.public_privileges = vec!["CONNECT".to_owned()];
        database.runtime_privileges = vec!["CREATE".to_owned()];
        database.runtime_settings = vec!["statement_timeout=0".to_owned()];
        let plan = with_desired(&app, |d| plan_cluster(d, &state)).unwrap();
        assert_eq!(
            kinds(&plan),
            [
                Kind::AlterRole,
                Kind::AlterRole,
                Kind::SetPassword,
                Kind::SetRoleConfig,
                Kind::SetRoleConfig,
                Kind::RevokeMembership,
                Kind::Revoke,
                Kind::Grant,
                Kind::Revoke,
                Kind::ResetRoleConfig,
            ]
        );
        assert_placeholders_match(&plan);
    }

    #[test]
    fn objects_of_another_app_or_of_nobody_are_not_adopted() {
        let app = app();
        let mut foreign = converged(&app);
        foreign.runtime.as_mut().unwrap().comment = Some("kumiko.so/app=dev/shop".to_owned());
        let error = with_desired(&app, |d| plan_cluster(d, &foreign)).unwrap_err();
        assert!(
            matches!(&error, Error::Collision { claimed_by: Some(other), .. } if other == "dev/shop"),
            "{error}"
        );

        let mut unmarked = converged(&app);
        unmarked.owner.as_mut().unwrap().comment = None;
        assert!(matches!(
            with_desired(&app, |d| plan_cluster(d, &unmarked)),
            Err(Error::Collision {
                claimed_by: None,
                ..
            })
        ));

        let mut handmade_database = converged(&app);
        handmade_database.owner = None;
        handmade_database.runtime = None;
        let database = handmade_database.database.as_mut().unwrap();
        database.comment = None;
        database.owner = "postgres".to_owned();
        assert!(matches!(
            with_desired(&app, |d| plan_cluster(d, &handmade_database)),
            Err(Error::Collision {
                claimed_by: None,
                ..
            })
        ));
    }

    #[test]
    fn database_of_our_owner_without_marker_is_adopted() {
        let app = app();
        let mut state = converged(&app);
        state.database.as_mut().unwrap().comment = None;
        let plan = with_desired(&app, |d| plan_cluster(d, &state)).unwrap();
        assert_eq!(kinds(&plan), [Kind::Comment]);
    }

    #[test]
    fn non_superuser_admin_joins_the_owner_role() {
        let app = app();
        let mut state = converged(&app);
        state.admin.is_superuser = false;
        state.owner.as_mut().unwrap().admin_is_member = false;
        let plan = with_desired(&app, |d| plan_cluster(d, &state)).unwrap();
        assert_eq!(kinds(&plan), [Kind::GrantMembership]);
    }

    fn schema(name: &str, owner: &str) -> SchemaState {
        SchemaState {
            name: name.to_owned(),
            owner: owner.to_owned(),
            public_create: false,
            runtime_create: false,
            runtime_usage: true,
            tables_missing_grants: false,
            sequences_missing_grants: false,
        }
    }

    fn full_defaults() -> DefaultPrivileges {
        DefaultPrivileges {
            tables: TABLE_PRIVILEGES.iter().map(|p| (*p).to_owned()).collect(),
            sequences: SEQUENCE_PRIVILEGES
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
            schemas: vec!["USAGE".to_owned()],
        }
    }

    #[test]
    fn converged_database_objects_plan_nothing() {
        let names = app().object_names();
        let objects = DatabaseObjects {
            schemas: vec![
                schema("public", "pg_database_owner"),
                schema("jobs", "shop_owner"),
            ],
            default_privileges: full_defaults(),
        };
        assert!(plan_database_objects(&names, &objects).is_empty());
    }

    #[test]
    fn database_objects_drift_is_planned_back() {
        let names = app().object_names();
        let mut public = schema("public", "postgres");
        public.public_create = true;
        let mut jobs = schema("jobs", "shop_owner");
        jobs.runtime_usage = false;
        jobs.tables_missing_grants = true;
        jobs.sequences_missing_grants = true;
        let mut foreign = schema("ext", "postgres");
        foreign.runtime_create = true;
        foreign.tables_missing_grants = true;
        let objects = DatabaseObjects {
            schemas: vec![public, jobs, foreign],
            default_privileges: DefaultPrivileges::default(),
        };
        let plan = plan_database_objects(&names, &objects);
        assert_eq!(
            kinds(&plan),
            [
                Kind::AlterOwner,
                Kind::Revoke,
                Kind::Grant,
                Kind::Grant,
                Kind::Grant,
                Kind::Revoke,
                Kind::AlterDefaultPrivileges,
                Kind::AlterDefaultPrivileges,
                Kind::AlterDefaultPrivileges,
            ]
        );
        assert_placeholders_match(&plan);
    }
}
