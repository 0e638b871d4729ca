//! Reading the catalogs into plain values (the only I/O before planning).
//!
//! Every query here is a read: a run that finds nothing to change issues no changing statement.

use sqlx::postgres::PgConnection;

use super::admin::{AdminConnection, connect_as};
use super::error::{Error, sqlstate};
use super::names::ObjectNames;
use super::password::Password;

/// The administrator's own powers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AdminState {
    /// Superuser (CNPG's `postgres`): may do everything.
    pub is_superuser: bool,
    /// Whether `pg_authid` is readable, so passwords are compared with their stored verifiers
    /// instead of by a trial login.
    pub can_read_verifiers: bool,
}

/// Whether a role's password is the one the caller holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PasswordCheck {
    /// It is.
    Matches,
    /// It is not (or the role has no password, or an MD5 one).
    Differs,
    /// A trial login could not tell (e.g. `pg_hba.conf` rejects the role before authentication).
    Unknown,
}

/// A role as the catalogs describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoleState {
    pub comment: Option<String>,
    pub login: bool,
    pub superuser: bool,
    pub createdb: bool,
    pub createrole: bool,
    pub replication: bool,
    pub bypassrls: bool,
    pub connection_limit: i32,
    /// `VALID UNTIL` is set to a finite time.
    pub expires: bool,
    /// Cluster-wide settings (`ALTER ROLE ... SET`), as `name=value`.
    pub config: Vec<String>,
    /// Roles it is a direct member of.
    pub member_of: Vec<String>,
    /// Whether the admin is a member of it (needed to act as its owner without superuser).
    pub admin_is_member: bool,
    /// Whether its password is the caller's.
    pub password: PasswordCheck,
}

/// The app's database as `pg_database` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DatabaseState {
    pub owner: String,
    pub comment: Option<String>,
    /// Privileges `PUBLIC` holds on it.
    pub public_privileges: Vec<String>,
    /// Privileges granted directly to the runtime role.
    pub runtime_privileges: Vec<String>,
    /// The runtime role's settings for this database only, as `name=value`.
    pub runtime_settings: Vec<String>,
}

/// Everything cluster-wide that provisioning decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClusterState {
    pub admin: AdminState,
    pub owner: Option<RoleState>,
    pub runtime: Option<RoleState>,
    pub database: Option<DatabaseState>,
}

/// A schema in the app's database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SchemaState {
    pub name: String,
    pub owner: String,
    /// `PUBLIC` holds `CREATE` on it.
    pub public_create: bool,
    /// The runtime role holds `CREATE` on it directly.
    pub runtime_create: bool,
    /// The runtime role may use it.
    pub runtime_usage: bool,
    /// Some table, view or foreign table in it lacks one of the runtime role's DML privileges.
    pub tables_missing_grants: bool,
    /// Some sequence in it lacks `USAGE` or `SELECT` for the runtime role.
    pub sequences_missing_grants: bool,
}

/// The owner role's cluster-wide default privileges for the runtime role, per object type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DefaultPrivileges {
    pub tables: Vec<String>,
    pub sequences: Vec<String>,
    pub schemas: Vec<String>,
}

/// Everything inside the app's database that provisioning decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DatabaseObjects {
    pub schemas: Vec<SchemaState>,
    pub default_privileges: DefaultPrivileges,
}

fn inspect(what: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |source| Error::Inspect { what, source }
}

/// Reads the admin's powers, both roles and the database.
///
/// `passwords` are the owner's and the runtime role's passwords the caller will keep; they are
/// compared with the stored verifiers, or tried in a login when those are unreadable. Without
/// them, both roles' password checks are [`PasswordCheck::Unknown`].
pub(crate) async fn cluster_state(
    connection: &mut PgConnection,
    server: &AdminConnection,
    names: &ObjectNames,
    passwords: Option<(&Password, &Password)>,
) -> Result<ClusterState, Error> {
    let admin = admin_state(connection).await?;
    let (owner_password, runtime_password) = passwords.unzip();
    let owner = role_state(
        connection,
        server,
        &admin,
        &names.owner_role,
        owner_password,
        names,
    )
    .await?;
    let runtime = role_state(
        connection,
        server,
        &admin,
        &names.runtime_role,
        runtime_password,
        names,
    )
    .await?;
    let database = database_state(connection, names).await?;
    Ok(ClusterState {
        admin,
        owner,
        runtime,
        database,
    })
}

pub(crate) async fn admin_state(connection: &mut PgConnection) -> Result<AdminState, Error> {
    let (is_superuser, can_read_verifiers): (bool, bool) = sqlx::query_as(
        "SELECT r.rolsuper, has_table_privilege('pg_catalog.pg_authid', 'SELECT') \
         FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
    )
    .fetch_one(&mut *connection)
    .await
    .map_err(inspect("the admin role"))?;
    Ok(AdminState {
        is_superuser,
        can_read_verifiers,
    })
}

type RoleRow = (
    Option<String>,
    bool,
    bool,
    bool,
    bool,
    bool,
    bool,
    i32,
    bool,
    Vec<String>,
    Vec<String>,
    bool,
);

/// Reads role `role`, or `None` when it does not exist; checks `password` if given.
pub(crate) async fn role_state(
    connection: &mut PgConnection,
    server: &AdminConnection,
    admin: &AdminState,
    role: &str,
    password: Option<&Password>,
    names: &ObjectNames,
) -> Result<Option<RoleState>, Error> {
    let row: Option<RoleRow> = sqlx::query_as(
        "SELECT shobj_description(r.oid, 'pg_authid'), r.rolcanlogin, r.rolsuper, \
                r.rolcreatedb, r.rolcreaterole, r.rolreplication, r.rolbypassrls, r.rolconnlimit, \
                (r.rolvaliduntil IS NOT NULL AND r.rolvaliduntil <> 'infinity'), \
                coalesce((SELECT s.setconfig FROM pg_catalog.pg_db_role_setting s \
                          WHERE s.setrole = r.oid AND s.setdatabase = 0), '{}'::text[]), \
                ARRAY(SELECT g.rolname::text FROM pg_catalog.pg_auth_members m \
                      JOIN pg_catalog.pg_roles g ON g.oid = m.roleid \
                      WHERE m.member = r.oid ORDER BY 1), \
                pg_has_role(current_user, r.oid, 'MEMBER') \
         FROM pg_catalog.pg_roles r WHERE r.rolname = $1",
    )
    .bind(role)
    .fetch_optional(&mut *connection)
    .await
    .map_err(inspect("a role"))?;
    let Some((
        comment,
        login,
        superuser,
        createdb,
        createrole,
        replication,
        bypassrls,
        connection_limit,
        expires,
        config,
        member_of,
        admin_is_member,
    )) = row
    else {
        return Ok(None);
    };
    let password = match password {
        None => PasswordCheck::Unknown,
        Some(password) => check_password(connection, server, admin, role, password, names).await?,
    };
    Ok(Some(RoleState {
        comment,
        login,
        superuser,
        createdb,
        createrole,
        replication,
        bypassrls,
        connection_limit,
        expires,
        config,
        member_of,
        admin_is_member,
        password,
    }))
}

async fn check_password(
    connection: &mut PgConnection,
    server: &AdminConnection,
    admin: &AdminState,
    role: &str,
    password: &Password,
    names: &ObjectNames,
) -> Result<PasswordCheck, Error> {
    if admin.can_read_verifiers {
        let stored: Option<String> =
            sqlx::query_scalar("SELECT rolpassword FROM pg_catalog.pg_authid WHERE rolname = $1")
                .bind(role)
                .fetch_one(&mut *connection)
                .await
                .map_err(inspect("a role's password verifier"))?;
        Ok(match stored {
            Some(verifier) if password.matches_verifier(&verifier) => PasswordCheck::Matches,
            _ => PasswordCheck::Differs,
        })
    } else {
        trial_login(server, role, password, &names.database).await
    }
}

/// Tells whether `password` is `role`'s by logging in. Postgres authenticates before it checks
/// the database, `CONNECT`, `LOGIN` or connection limits, so any refusal other than a failed
/// password proves the password right.
async fn trial_login(
    server: &AdminConnection,
    role: &str,
    password: &Password,
    database: &str,
) -> Result<PasswordCheck, Error> {
    match connect_as(server, role, password, database).await {
        Ok(_connection) => Ok(PasswordCheck::Matches),
        Err(Error::Connect { source, target }) => match sqlstate(&source).as_deref() {
            Some("28P01") => Ok(PasswordCheck::Differs),
            Some("28000") => Ok(PasswordCheck::Unknown),
            Some(_) => Ok(PasswordCheck::Matches),
            None => Err(Error::Connect { source, target }),
        },
        Err(other) => Err(other),
    }
}

type DatabaseRow = (
    String,
    Option<String>,
    Vec<String>,
    Vec<String>,
    Vec<String>,
);

/// Reads the app's database from `pg_database`, or `None` when it does not exist.
pub(crate) async fn database_state(
    connection: &mut PgConnection,
    names: &ObjectNames,
) -> Result<Option<DatabaseState>, Error> {
    let row: Option<DatabaseRow> = sqlx::query_as(
        "SELECT pg_get_userbyid(d.datdba)::text, shobj_description(d.oid, 'pg_database'), \
                ARRAY(SELECT a.privilege_type::text \
                      FROM aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a \
                      WHERE a.grantee = 0 ORDER BY 1), \
                ARRAY(SELECT a.privilege_type::text \
                      FROM aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a \
                      JOIN pg_catalog.pg_roles g ON g.oid = a.grantee \
                      WHERE g.rolname = $2 ORDER BY 1), \
                coalesce((SELECT s.setconfig FROM pg_catalog.pg_db_role_setting s \
                          JOIN pg_catalog.pg_roles g ON g.oid = s.setrole \
                          WHERE s.setdatabase = d.oid AND g.rolname = $2), '{}'::text[]) \
         FROM pg_catalog.pg_database d WHERE d.datname = $1",
    )
    .bind(&names.database)
    .bind(&names.runtime_role)
    .fetch_optional(&mut *connection)
    .await
    .map_err(inspect("the database"))?;
    Ok(row.map(
        |(owner, comment, public_privileges, runtime_privileges, runtime_settings)| DatabaseState {
            owner,
            comment,
            public_privileges,
            runtime_privileges,
            runtime_settings,
        },
    ))
}

type SchemaRow = (String, String, bool, bool, bool, bool, bool);

/// Reads the schemas, grants and default privileges inside the app's database (the connection
/// must be to that database; the runtime role must exist).
pub(crate) async fn database_objects(
    connection: &mut PgConnection,
    names: &ObjectNames,
) -> Result<DatabaseObjects, Error> {
    let rows: Vec<SchemaRow> = sqlx::query_as(
        "SELECT n.nspname::text, pg_get_userbyid(n.nspowner)::text, \
           EXISTS (SELECT 1 FROM aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a \
                   WHERE a.grantee = 0 AND a.privilege_type = 'CREATE'), \
           EXISTS (SELECT 1 FROM aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a \
                   JOIN pg_catalog.pg_roles g ON g.oid = a.grantee \
                   WHERE g.rolname = $1 AND a.privilege_type = 'CREATE'), \
           has_schema_privilege($1, n.oid, 'USAGE'), \
           EXISTS (SELECT 1 FROM pg_catalog.pg_class c \
                   WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'v', 'f', 'm') \
                     AND NOT (has_table_privilege($1, c.oid, 'SELECT') \
                              AND (c.relkind = 'm' \
                                   OR (has_table_privilege($1, c.oid, 'INSERT') \
                                       AND has_table_privilege($1, c.oid, 'UPDATE') \
                                       AND has_table_privilege($1, c.oid, 'DELETE'))))), \
           EXISTS (SELECT 1 FROM pg_catalog.pg_class c \
                   WHERE c.relnamespace = n.oid AND c.relkind = 'S' \
                     AND NOT (has_sequence_privilege($1, c.oid, 'USAGE') \
                              AND has_sequence_privilege($1, c.oid, 'SELECT'))) \
         FROM pg_catalog.pg_namespace n \
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
           AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%' \
         ORDER BY 1",
    )
    .bind(&names.runtime_role)
    .fetch_all(&mut *connection)
    .await
    .map_err(inspect("the schemas and their grants"))?;
    let schemas = rows
        .into_iter()
        .map(
            |(
                name,
                owner,
                public_create,
                runtime_create,
                runtime_usage,
                tables_missing_grants,
                sequences_missing_grants,
            )| SchemaState {
                name,
                owner,
                public_create,
                runtime_create,
                runtime_usage,
                tables_missing_grants,
                sequences_missing_grants,
            },
        )
        .collect();

    let acls: Vec<(String, Vec<String>)> = sqlx::query_as(
        "SELECT d.defaclobjtype::text, \
                ARRAY(SELECT a.privilege_type::text FROM aclexplode(d.defaclacl) a \
                      JOIN pg_catalog.pg_roles g ON g.oid = a.grantee \
                      WHERE g.rolname = $1 ORDER BY 1) \
         FROM pg_catalog.pg_default_acl d \
         JOIN pg_catalog.pg_roles o ON o.oid = d.defaclrole \
         WHERE o.rolname = $2 AND d.defaclnamespace = 0",
    )
    .bind(&names.runtime_role)
    .bind(&names.owner_role)
    .fetch_all(&mut *connection)
    .await
    .map_err(inspect("the default privileges"))?;
    let mut default_privileges = DefaultPrivileges::default();
    for (object_type, privileges) in acls {
        match object_type.as_str() {
            "r" => default_privileges.tables = privileges,
            "S" => default_privileges.sequences = privileges,
            "n" => default_privileges.schemas = privileges,
            _ => {}
        }
    }
    Ok(DatabaseObjects {
        schemas,
        default_privileges,
    })
}
