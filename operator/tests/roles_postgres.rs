//! `kumiko_operator::roles` against a real Postgres: each test starts its own throwaway server.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use std::collections::BTreeMap;
use std::time::Duration;

use kumiko_operator::roles::{
    self, AdminConnection, AppDatabase, ConnectionFacts, Error, Password, Provisioned,
    ReclaimPolicy, StatementKind, StoredPasswords,
};
use kumiko_testkit::TempPostgres;
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

fn start() -> (TempPostgres, AdminConnection) {
    let postgres = TempPostgres::start().expect("postgres starts");
    let admin = AdminConnection::new(
        "127.0.0.1",
        postgres.port(),
        "postgres",
        Password::from_stored("postgres", TempPostgres::SUPERUSER_PASSWORD).unwrap(),
    );
    (postgres, admin)
}

fn app(name: &str) -> AppDatabase {
    AppDatabase::new(name, &format!("prod/{name}")).unwrap()
}

async fn superuser(postgres: &TempPostgres, database: &str) -> PgConnection {
    PgConnection::connect(&postgres.superuser_url(database))
        .await
        .expect("superuser connects")
}

async fn connect(facts: &ConnectionFacts) -> Result<PgConnection, sqlx::Error> {
    PgConnection::connect(&facts.uri()).await
}

async fn connect_to(facts: &ConnectionFacts, database: &str) -> Result<PgConnection, sqlx::Error> {
    let uri = facts.uri();
    let path = uri.rfind('/').expect("uri has a path");
    PgConnection::connect(&format!("{}/{database}", &uri[..path])).await
}

fn code(error: &sqlx::Error) -> String {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned())
        .unwrap_or_else(|| format!("no SQLSTATE: {error}"))
}

async fn exec(connection: &mut PgConnection, sql: &'static str) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(sql).execute(connection).await.map(|_| ())
}

fn stored(provisioned: &Provisioned) -> StoredPasswords {
    StoredPasswords {
        owner: Some(provisioned.owner.password().clone()),
        runtime: Some(provisioned.runtime.password().clone()),
    }
}

/// The transaction ids that last wrote every catalog row the module may change: any changing
/// statement, even a repeated `GRANT`, rewrites its row and changes this.
async fn catalog_fingerprint(postgres: &TempPostgres, database: &str) -> String {
    let mut cluster = superuser(postgres, "postgres").await;
    let shared: String = sqlx::query_scalar(
        "SELECT coalesce(string_agg(x, ',' ORDER BY x), '') FROM ( \
           SELECT 'authid:' || rolname || ':' || xmin::text AS x FROM pg_authid \
           UNION ALL SELECT 'db:' || datname || ':' || xmin::text FROM pg_database \
           UNION ALL SELECT 'setting:' || setrole || ':' || setdatabase || ':' || xmin::text \
                     FROM pg_db_role_setting \
           UNION ALL SELECT 'comment:' || objoid || ':' || xmin::text FROM pg_shdescription \
           UNION ALL SELECT 'member:' || roleid || ':' || member || ':' || xmin::text \
                     FROM pg_auth_members) s",
    )
    .fetch_one(&mut cluster)
    .await
    .unwrap();
    let mut inside = superuser(postgres, database).await;
    let local: String = sqlx::query_scalar(
        "SELECT coalesce(string_agg(x, ',' ORDER BY x), '') FROM ( \
           SELECT 'ns:' || nspname || ':' || xmin::text AS x FROM pg_namespace \
           UNION ALL SELECT 'rel:' || oid || ':' || xmin::text FROM pg_class \
                     WHERE relnamespace NOT IN ('pg_catalog'::regnamespace, \
                                                'information_schema'::regnamespace) \
           UNION ALL SELECT 'defacl:' || oid || ':' || xmin::text FROM pg_default_acl) s",
    )
    .fetch_one(&mut inside)
    .await
    .unwrap();
    format!("{shared}\n{local}")
}

/// Turns on statement logging of the given class and waits until new sessions see it.
async fn log_statements(postgres: &TempPostgres, class: &'static str) {
    let mut connection = superuser(postgres, "postgres").await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER SYSTEM SET log_statement = '{class}'"
    )))
    .execute(&mut connection)
    .await
    .unwrap();
    exec(&mut connection, "SELECT pg_reload_conf()")
        .await
        .unwrap();
    for _ in 0..200 {
        let mut fresh = superuser(postgres, "postgres").await;
        let current: String = sqlx::query_scalar("SHOW log_statement")
            .fetch_one(&mut fresh)
            .await
            .unwrap();
        if current == class {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("log_statement never became {class}");
}

fn server_log(postgres: &TempPostgres) -> String {
    std::fs::read_to_string(postgres.log_path()).expect("server log readable")
}

#[tokio::test]
async fn runtime_role_cannot_create_alter_or_drop_tables_or_create_schemas() {
    // Kept alive until the end of the test.
    let (_postgres, admin) = start();
    let provisioned = roles::ensure(&admin, &app("shop"), &StoredPasswords::default())
        .await
        .unwrap();
    let mut owner = connect(&provisioned.owner).await.unwrap();
    exec(
        &mut owner,
        "CREATE TABLE orders (id bigserial PRIMARY KEY, item text)",
    )
    .await
    .unwrap();

    let mut runtime = connect(&provisioned.runtime).await.unwrap();
    for sql in [
        "CREATE TABLE evil (id int)",
        "CREATE TABLE public.evil (id int)",
        "CREATE TEMPORARY TABLE evil (id int)",
        "ALTER TABLE orders ADD COLUMN evil text",
        "DROP TABLE orders",
        "TRUNCATE orders",
        "CREATE SCHEMA evil",
        "CREATE INDEX evil ON orders (item)",
        "CREATE VIEW evil AS SELECT 1",
    ] {
        let error = exec(&mut runtime, sql).await.expect_err(sql);
        assert_eq!(code(&error), "42501", "{sql}: {error}");
    }
    // The table is untouched and the owner still can alter it.
    exec(&mut owner, "ALTER TABLE orders ADD COLUMN note text")
        .await
        .unwrap();
}

#[tokio::test]
async fn runtime_role_reads_and_writes_tables_the_owner_creates_after_provisioning() {
    // Kept alive until the end of the test.
    let (_postgres, admin) = start();
    let provisioned = roles::ensure(&admin, &app("shop"), &StoredPasswords::default())
        .await
        .unwrap();
    // Created after provisioning, by the migrations (owner role), in public and a new schema.
    let mut owner = connect(&provisioned.owner).await.unwrap();
    exec(
        &mut owner,
        "CREATE TABLE orders (id bigserial PRIMARY KEY, item text NOT NULL); \
         CREATE SCHEMA billing; \
         CREATE TABLE billing.invoices (id serial PRIMARY KEY, total int)",
    )
    .await
    .unwrap();

    let mut runtime = connect(&provisioned.runtime).await.unwrap();
    exec(
        &mut runtime,
        "INSERT INTO orders (item) VALUES ('tea'), ('cake'); \
         UPDATE orders SET item = 'green tea' WHERE item = 'tea'; \
         DELETE FROM orders WHERE item = 'cake'; \
         INSERT INTO billing.invoices (total) VALUES (42)",
    )
    .await
    .unwrap();
    let items: Vec<String> = sqlx::query_scalar("SELECT item FROM orders")
        .fetch_all(&mut runtime)
        .await
        .unwrap();
    assert_eq!(items, ["green tea"]);
    let total: i32 = sqlx::query_scalar("SELECT total FROM billing.invoices")
        .fetch_one(&mut runtime)
        .await
        .unwrap();
    assert_eq!(total, 42);
    // And the settings from the spec apply to its sessions.
    let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&mut runtime)
        .await
        .unwrap();
    assert_eq!(timeout, "30s");
}

#[tokio::test]
async fn connection_beyond_the_limit_is_refused() {
    let (postgres, admin) = start();
    let mut settings = app("shop");
    settings.connection_limit = 3;
    let provisioned = roles::ensure(&admin, &settings, &StoredPasswords::default())
        .await
        .unwrap();
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(connect(&provisioned.runtime).await.unwrap());
    }
    let refused = connect(&provisioned.runtime).await.expect_err("limit + 1");
    assert_eq!(code(&refused), "53300", "{refused}");

    // One closes, one more gets in.
    let closing = open.pop().unwrap();
    closing.close().await.unwrap();
    let mut admitted = None;
    for _ in 0..100 {
        match connect(&provisioned.runtime).await {
            Ok(connection) => {
                admitted = Some(connection);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(admitted.is_some(), "a slot frees up after a session closes");
    drop(postgres);
}

#[tokio::test]
async fn app_roles_cannot_connect_to_another_apps_database() {
    let (postgres, admin) = start();
    let a = roles::ensure(&admin, &app("alpha"), &StoredPasswords::default())
        .await
        .unwrap();
    let b = roles::ensure(&admin, &app("beta"), &StoredPasswords::default())
        .await
        .unwrap();
    for facts in [&a.owner, &a.runtime] {
        connect(facts).await.expect("own database");
        let error = connect_to(facts, "beta")
            .await
            .expect_err("other app's database");
        assert_eq!(code(&error), "42501", "{facts}: {error}");
    }
    for facts in [&b.owner, &b.runtime] {
        let error = connect_to(facts, "alpha")
            .await
            .expect_err("other app's database");
        assert_eq!(code(&error), "42501", "{facts}: {error}");
    }
    drop(postgres);
}

#[tokio::test]
async fn second_run_is_a_noop_with_no_changing_statements() {
    let (postgres, admin) = start();
    let settings = app("shop");
    let first = roles::ensure(&admin, &settings, &StoredPasswords::default())
        .await
        .unwrap();
    assert!(!first.is_noop());
    assert_eq!(first.count(StatementKind::CreateRole), 2);
    assert_eq!(first.count(StatementKind::CreateDatabase), 1);
    assert_eq!(
        first.generated,
        roles::GeneratedPasswords {
            owner: true,
            runtime: true
        }
    );
    // Objects the migrations made must not trigger changes either.
    let mut owner = connect(&first.owner).await.unwrap();
    exec(&mut owner, "CREATE TABLE t (id serial PRIMARY KEY)")
        .await
        .unwrap();
    drop(owner);

    log_statements(&postgres, "ddl").await;
    let before = catalog_fingerprint(&postgres, "shop").await;
    let log_offset = server_log(&postgres).len();

    let second = roles::ensure(&admin, &settings, &stored(&first))
        .await
        .unwrap();
    assert!(second.is_noop(), "{:?}", second.changes);
    assert!(second.counts().is_empty());
    assert_eq!(second.generated, roles::GeneratedPasswords::default());
    assert_eq!(second.runtime.password(), first.runtime.password());

    assert_eq!(
        catalog_fingerprint(&postgres, "shop").await,
        before,
        "no catalog row was rewritten"
    );
    let logged = server_log(&postgres)[log_offset..].to_owned();
    assert!(
        !logged.contains("statement:"),
        "the server logged a changing statement:\n{logged}"
    );

    // Control: the same observation does see a run that changes something.
    let mut connection = superuser(&postgres, "postgres").await;
    exec(
        &mut connection,
        "ALTER ROLE shop_runtime CONNECTION LIMIT 7",
    )
    .await
    .unwrap();
    let log_offset = server_log(&postgres).len();
    let before = catalog_fingerprint(&postgres, "shop").await;
    let third = roles::ensure(&admin, &settings, &stored(&first))
        .await
        .unwrap();
    assert_eq!(
        third.count(StatementKind::AlterRole),
        1,
        "{:?}",
        third.changes
    );
    assert_ne!(catalog_fingerprint(&postgres, "shop").await, before);
    assert!(server_log(&postgres)[log_offset..].contains("statement: ALTER ROLE shop_runtime"));
}

#[tokio::test]
async fn hand_made_drift_is_repaired() {
    let (postgres, admin) = start();
    let settings = app("shop");
    let first = roles::ensure(&admin, &settings, &StoredPasswords::default())
        .await
        .unwrap();
    let mut owner = connect(&first.owner).await.unwrap();
    exec(
        &mut owner,
        "CREATE TABLE t (id serial PRIMARY KEY); INSERT INTO t DEFAULT VALUES",
    )
    .await
    .unwrap();
    drop(owner);

    let mut cluster = superuser(&postgres, "postgres").await;
    exec(
        &mut cluster,
        "ALTER ROLE shop_runtime CONNECTION LIMIT 500; \
         ALTER ROLE shop_runtime CREATEDB; \
         ALTER ROLE shop_runtime RESET statement_timeout; \
         ALTER ROLE shop_runtime IN DATABASE shop SET idle_in_transaction_session_timeout = 0; \
         ALTER ROLE shop_runtime VALID UNTIL '2001-01-01'; \
         ALTER ROLE shop_owner NOLOGIN; \
         GRANT shop_owner TO shop_runtime; \
         GRANT CONNECT, TEMPORARY ON DATABASE shop TO PUBLIC; \
         GRANT CREATE ON DATABASE shop TO shop_runtime; \
         COMMENT ON DATABASE shop IS NULL",
    )
    .await
    .unwrap();
    let mut inside = superuser(&postgres, "shop").await;
    exec(
        &mut inside,
        "REVOKE SELECT ON t FROM shop_runtime; \
         REVOKE USAGE ON SEQUENCE t_id_seq FROM shop_runtime; \
         ALTER DEFAULT PRIVILEGES FOR ROLE shop_owner REVOKE INSERT ON TABLES FROM shop_runtime; \
         GRANT CREATE ON SCHEMA public TO shop_runtime; \
         GRANT CREATE ON SCHEMA public TO PUBLIC",
    )
    .await
    .unwrap();

    let repaired = roles::ensure(&admin, &settings, &stored(&first))
        .await
        .unwrap();
    let counts = repaired.counts();
    assert_eq!(
        counts.get(&StatementKind::AlterRole),
        Some(&4),
        "{counts:?}"
    );
    assert_eq!(
        counts.get(&StatementKind::SetRoleConfig),
        Some(&1),
        "{counts:?}"
    );
    assert_eq!(
        counts.get(&StatementKind::ResetRoleConfig),
        Some(&1),
        "{counts:?}"
    );
    assert_eq!(
        counts.get(&StatementKind::RevokeMembership),
        Some(&1),
        "{counts:?}"
    );
    assert_eq!(counts.get(&StatementKind::Comment), Some(&1), "{counts:?}");
    assert_eq!(counts.get(&StatementKind::AlterDefaultPrivileges), Some(&1));
    assert!(repaired.count(StatementKind::Grant) >= 2, "{counts:?}");
    assert!(repaired.count(StatementKind::Revoke) >= 3, "{counts:?}");
    assert_eq!(repaired.count(StatementKind::SetPassword), 0);

    let (limit, createdb, expires): (i32, bool, bool) = sqlx::query_as(
        "SELECT rolconnlimit, rolcreatedb, rolvaliduntil IS NOT NULL AND rolvaliduntil <> 'infinity' \
         FROM pg_roles WHERE rolname = 'shop_runtime'",
    )
    .fetch_one(&mut cluster)
    .await
    .unwrap();
    assert_eq!((limit, createdb, expires), (20, false, false));

    // The runtime role works as provisioned again: reads, writes, no CREATE anywhere.
    let mut runtime = connect(&first.runtime).await.unwrap();
    exec(&mut runtime, "INSERT INTO t DEFAULT VALUES")
        .await
        .unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&mut runtime)
        .await
        .unwrap();
    assert_eq!(rows, 2);
    let error = exec(&mut runtime, "CREATE TABLE evil (id int)")
        .await
        .unwrap_err();
    assert_eq!(code(&error), "42501");
    let error = exec(&mut runtime, "CREATE SCHEMA evil").await.unwrap_err();
    assert_eq!(code(&error), "42501");
    let timeout: String = sqlx::query_scalar("SHOW idle_in_transaction_session_timeout")
        .fetch_one(&mut runtime)
        .await
        .unwrap();
    assert_eq!(timeout, "1min");
    drop(runtime);
    connect(&first.owner).await.expect("owner may log in again");
    // Default privileges are back: a table made now is writable by the runtime role.
    let mut owner = connect(&first.owner).await.unwrap();
    exec(&mut owner, "CREATE TABLE later (x int)")
        .await
        .unwrap();
    let mut runtime = connect(&first.runtime).await.unwrap();
    exec(&mut runtime, "INSERT INTO later VALUES (1)")
        .await
        .unwrap();

    let again = roles::ensure(&admin, &settings, &stored(&first))
        .await
        .unwrap();
    assert!(again.is_noop(), "{:?}", again.changes);
}

#[tokio::test]
async fn after_rotation_the_old_password_fails_and_the_new_one_works() {
    let (postgres, admin) = start();
    let settings = app("shop");
    let first = roles::ensure(&admin, &settings, &StoredPasswords::default())
        .await
        .unwrap();
    let old = first.runtime.clone();
    let new = roles::rotate_runtime_password(&admin, &settings)
        .await
        .unwrap();
    assert_ne!(new.password(), old.password());
    assert_eq!(new.username(), "shop_runtime");
    assert_eq!(new.dbname(), "shop");

    let error = connect(&old).await.expect_err("old password");
    assert_eq!(code(&error), "28P01", "{error}");
    connect(&new).await.expect("new password");

    // With the new password stored, nothing changes.
    let stored_new = StoredPasswords {
        owner: Some(first.owner.password().clone()),
        runtime: Some(new.password().clone()),
    };
    let after = roles::ensure(&admin, &settings, &stored_new).await.unwrap();
    assert!(after.is_noop(), "{:?}", after.changes);

    // If the Secret write was lost, ensure puts the stored (old) password back.
    let lost = roles::ensure(&admin, &settings, &stored(&first))
        .await
        .unwrap();
    assert_eq!(lost.count(StatementKind::SetPassword), 1);
    assert!(!lost.generated.runtime);
    connect(&old).await.expect("stored password set back");
    drop(postgres);
}

#[tokio::test]
async fn delete_removes_everything_while_a_client_is_connected() {
    let (postgres, admin) = start();
    let settings = app("shop");
    let provisioned = roles::ensure(&admin, &settings, &StoredPasswords::default())
        .await
        .unwrap();
    let mut owner = connect(&provisioned.owner).await.unwrap();
    exec(
        &mut owner,
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1)",
    )
    .await
    .unwrap();
    let mut runtime = connect(&provisioned.runtime).await.unwrap();
    exec(&mut runtime, "BEGIN; SELECT * FROM t").await.unwrap();

    let reclaimed = roles::reclaim(&admin, &settings, ReclaimPolicy::Delete)
        .await
        .unwrap();
    assert!(reclaimed.sessions_terminated >= 2, "{reclaimed}");
    assert_eq!(reclaimed.policy, ReclaimPolicy::Delete);
    let kinds: Vec<StatementKind> = reclaimed.changes.iter().map(|c| c.kind).collect();
    assert!(kinds.contains(&StatementKind::DropDatabase), "{kinds:?}");
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == StatementKind::DropRole)
            .count(),
        2
    );

    let mut cluster = superuser(&postgres, "postgres").await;
    let (roles_left, databases_left): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM pg_roles WHERE rolname LIKE 'shop%'), \
                (SELECT count(*) FROM pg_database WHERE datname = 'shop')",
    )
    .fetch_one(&mut cluster)
    .await
    .unwrap();
    assert_eq!((roles_left, databases_left), (0, 0));
    assert!(
        exec(&mut runtime, "SELECT 1").await.is_err(),
        "session ended"
    );
    assert!(exec(&mut owner, "SELECT 1").await.is_err(), "session ended");
    assert!(connect(&provisioned.runtime).await.is_err());

    // Deleting again finds nothing and changes nothing.
    let again = roles::reclaim(&admin, &settings, ReclaimPolicy::Delete)
        .await
        .unwrap();
    assert!(again.changes.is_empty(), "{again}");
}

#[tokio::test]
async fn retain_keeps_roles_and_data() {
    let (postgres, admin) = start();
    let settings = app("shop");
    let provisioned = roles::ensure(&admin, &settings, &StoredPasswords::default())
        .await
        .unwrap();
    let mut owner = connect(&provisioned.owner).await.unwrap();
    exec(
        &mut owner,
        "CREATE TABLE t (note text); INSERT INTO t VALUES ('kept')",
    )
    .await
    .unwrap();
    drop(owner);
    let before = catalog_fingerprint(&postgres, "shop").await;

    let reclaimed = roles::reclaim(&admin, &settings, ReclaimPolicy::Retain)
        .await
        .unwrap();
    assert!(reclaimed.changes.is_empty());
    assert_eq!(reclaimed.sessions_terminated, 0);
    assert_eq!(catalog_fingerprint(&postgres, "shop").await, before);
    let mut runtime = connect(&provisioned.runtime).await.unwrap();
    let note: String = sqlx::query_scalar("SELECT note FROM t")
        .fetch_one(&mut runtime)
        .await
        .unwrap();
    assert_eq!(note, "kept");

    // The app created again (its Secrets gone) adopts the retained objects with new passwords.
    let adopted = roles::ensure(&admin, &settings, &StoredPasswords::default())
        .await
        .unwrap();
    assert_eq!(adopted.count(StatementKind::SetPassword), 2);
    assert_eq!(adopted.count(StatementKind::CreateRole), 0);
    assert_eq!(adopted.count(StatementKind::CreateDatabase), 0);
    let mut runtime = connect(&adopted.runtime).await.unwrap();
    let note: String = sqlx::query_scalar("SELECT note FROM t")
        .fetch_one(&mut runtime)
        .await
        .unwrap();
    assert_eq!(note, "kept");
}

#[tokio::test]
async fn objects_of_another_app_or_of_nobody_are_never_adopted() {
    let (postgres, admin) = start();
    let prod = roles::ensure(&admin, &app("shop"), &StoredPasswords::default())
        .await
        .unwrap();
    let before = catalog_fingerprint(&postgres, "shop").await;

    // The same name from another namespace on the same (shared) server.
    let other = AppDatabase::new("shop", "staging/shop").unwrap();
    let error = roles::ensure(&admin, &other, &StoredPasswords::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Collision { claimed_by: Some(owner), .. } if owner == "prod/shop"),
        "{error}"
    );
    assert!(!error.is_transient());
    assert_eq!(error.category(), "collision");
    let error = roles::reclaim(&admin, &other, ReclaimPolicy::Delete)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Collision { .. }), "{error}");
    let error = roles::rotate_runtime_password(&admin, &other)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Collision { .. }), "{error}");
    assert_eq!(catalog_fingerprint(&postgres, "shop").await, before);
    connect(&prod.runtime).await.expect("prod untouched");

    // A database made by hand is nobody's.
    let mut cluster = superuser(&postgres, "postgres").await;
    exec(&mut cluster, "CREATE DATABASE legacy").await.unwrap();
    let error = roles::ensure(&admin, &app("legacy"), &StoredPasswords::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Collision { claimed_by: None, object, .. } if object.contains("legacy")),
        "{error}"
    );
    let roles_made: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'legacy%'")
            .fetch_one(&mut cluster)
            .await
            .unwrap();
    assert_eq!(
        roles_made, 0,
        "nothing is created before the collision check"
    );

    // Marking it by hand, as the error says, hands it over.
    exec(
        &mut cluster,
        "COMMENT ON DATABASE legacy IS 'kumiko.so/app=prod/legacy'",
    )
    .await
    .unwrap();
    let adopted = roles::ensure(&admin, &app("legacy"), &StoredPasswords::default())
        .await
        .unwrap();
    assert_eq!(adopted.count(StatementKind::AlterOwner), 1);
    connect(&adopted.runtime).await.unwrap();
}

#[tokio::test]
async fn passwords_never_show_in_debug_or_display_of_results_or_errors() {
    let (postgres, admin) = start();
    let settings = app("shop");
    log_statements(&postgres, "all").await;
    let provisioned = roles::ensure(&admin, &settings, &StoredPasswords::default())
        .await
        .unwrap();
    let rotated = roles::rotate_runtime_password(&admin, &settings)
        .await
        .unwrap();
    let secrets = [
        provisioned.owner.password().expose().to_owned(),
        provisioned.runtime.password().expose().to_owned(),
        rotated.password().expose().to_owned(),
        TempPostgres::SUPERUSER_PASSWORD.to_owned(),
    ];

    let mut shown = vec![
        format!("{provisioned:?}"),
        format!("{provisioned}"),
        format!("{:?}", provisioned.changes),
        format!("{rotated:?}"),
        format!("{rotated}"),
        format!("{admin:?}"),
        format!("{:?}", stored(&provisioned)),
    ];
    // Errors: wrong admin password, unreachable server, a collision, a failed statement.
    let wrong = AdminConnection::new(
        "127.0.0.1",
        postgres.port(),
        "postgres",
        Password::from_stored("postgres", provisioned.runtime.password().expose()).unwrap(),
    );
    let unreachable = admin
        .clone()
        .with_port(kumiko_testkit::free_port().unwrap());
    let as_runtime = AdminConnection::new(
        "127.0.0.1",
        postgres.port(),
        "shop_runtime",
        rotated.password().clone(),
    )
    .with_dbname("shop");
    let other = AppDatabase::new("shop", "staging/shop").unwrap();
    let errors = [
        roles::ensure(&wrong, &settings, &stored(&provisioned))
            .await
            .unwrap_err(),
        roles::ensure(&unreachable, &settings, &stored(&provisioned))
            .await
            .unwrap_err(),
        roles::ensure(&admin, &other, &stored(&provisioned))
            .await
            .unwrap_err(),
        roles::rotate_runtime_password(&as_runtime, &app("other"))
            .await
            .unwrap_err(),
        roles::ensure(&as_runtime, &app("newapp"), &StoredPasswords::default())
            .await
            .unwrap_err(),
    ];
    assert!(matches!(errors[0], Error::Connect { .. }), "{}", errors[0]);
    assert!(matches!(errors[1], Error::Connect { .. }), "{}", errors[1]);
    assert!(errors[1].is_transient());
    for error in &errors {
        shown.push(format!("{error:?}"));
        shown.push(format!("{error}"));
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            shown.push(format!("{cause:?} {cause}"));
            source = cause.source();
        }
    }
    for text in &shown {
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "password shown in: {text}");
        }
    }
    // Nor does any password reach the server, even with every statement logged.
    let log = server_log(&postgres);
    assert!(log.contains("SCRAM-SHA-256$"), "statements were logged");
    for secret in &secrets[..3] {
        assert!(!log.contains(secret.as_str()), "password in the server log");
    }
}

#[tokio::test]
async fn connection_failures_are_transient_typed_errors() {
    let (postgres, admin) = start();
    let closed = admin
        .clone()
        .with_port(kumiko_testkit::free_port().unwrap());
    let error = roles::ensure(&closed, &app("shop"), &StoredPasswords::default())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Connect { .. }), "{error}");
    assert!(error.is_transient());
    assert_eq!(error.category(), "connect");
    assert!(std::error::Error::source(&error).is_some());
    let error = roles::reclaim(&closed, &app("shop"), ReclaimPolicy::Delete)
        .await
        .unwrap_err();
    assert!(error.is_transient());
    drop(postgres);
}

#[tokio::test]
async fn secret_data_connects_like_a_cnpg_app_secret() {
    let (postgres, admin) = start();
    let provisioned = roles::ensure(&admin, &app("shop"), &StoredPasswords::default())
        .await
        .unwrap();
    let data: BTreeMap<String, String> = provisioned.runtime.secret_data();
    assert_eq!(data["username"], "shop_runtime");
    assert_eq!(data["dbname"], "shop");
    assert_eq!(data["port"], postgres.port().to_string());
    assert_eq!(
        data["pgpass"],
        format!(
            "127.0.0.1:{}:shop:shop_runtime:{}\n",
            postgres.port(),
            data["password"]
        )
    );
    let mut connection = PgConnection::connect(&data["uri"]).await.unwrap();
    let user: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(user, "shop_runtime");
    // The same keys also work as an admin Secret (the module reads what it writes).
    let reread = AdminConnection::from_secret_data(&provisioned.owner.secret_data()).unwrap();
    assert_eq!(reread.user(), "shop_owner");
    assert_eq!(reread.dbname(), "shop");
    assert_eq!(reread.password(), provisioned.owner.password());
}

#[tokio::test]
async fn non_superuser_admin_provisions_checks_and_reclaims() {
    let (postgres, superuser_admin) = start();
    let mut cluster = superuser(&postgres, "postgres").await;
    exec(
        &mut cluster,
        "CREATE ROLE platform_admin LOGIN CREATEROLE CREATEDB PASSWORD 'platform-admin-pw'",
    )
    .await
    .unwrap();
    let admin = AdminConnection::from_secret_data(&BTreeMap::from([(
        "uri".to_owned(),
        format!(
            "postgresql://platform_admin:platform-admin-pw@127.0.0.1:{}/postgres",
            postgres.port()
        ),
    )]))
    .unwrap();
    let settings = app("shop");
    let first = roles::ensure(&admin, &settings, &StoredPasswords::default())
        .await
        .unwrap();
    assert_eq!(first.count(StatementKind::GrantMembership), 1);
    let mut owner = connect(&first.owner).await.unwrap();
    exec(&mut owner, "CREATE TABLE t (id int)").await.unwrap();
    let mut runtime = connect(&first.runtime).await.unwrap();
    exec(&mut runtime, "INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    drop(runtime);

    // Without pg_authid, passwords are checked by a trial login: still a no-op.
    let second = roles::ensure(&admin, &settings, &stored(&first))
        .await
        .unwrap();
    assert!(second.is_noop(), "{:?}", second.changes);
    // A wrong stored password is detected and set.
    let mut changed = stored(&first);
    changed.runtime = Some(Password::generate());
    let third = roles::ensure(&admin, &settings, &changed).await.unwrap();
    assert_eq!(third.count(StatementKind::SetPassword), 1);
    connect(&third.runtime).await.unwrap();

    let reclaimed = roles::reclaim(&admin, &settings, ReclaimPolicy::Delete)
        .await
        .unwrap();
    assert_eq!(
        reclaimed
            .changes
            .iter()
            .filter(|c| c.kind == StatementKind::DropRole)
            .count(),
        2
    );
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM pg_roles WHERE rolname LIKE 'shop%') \
              + (SELECT count(*) FROM pg_database WHERE datname = 'shop')",
    )
    .fetch_one(&mut cluster)
    .await
    .unwrap();
    assert_eq!(left, 0);
    drop(superuser_admin);
}
