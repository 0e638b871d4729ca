//! Provisioning and password rotation: observe, plan, apply, until nothing differs.

use std::collections::BTreeMap;

use sqlx::postgres::PgConnection;

use super::admin::AdminConnection;
use super::error::Error;
use super::facts::ConnectionFacts;
use super::names::ObjectNames;
use super::observe;
use super::password::Password;
use super::plan::{self, Desired};
use super::settings::{AppDatabase, StoredPasswords};
use super::statement::{Arg, Change, Statement, StatementKind, execute_all};

/// Observe-plan-apply passes before giving up. A fresh app needs three (roles and database,
/// then the database's grants, then a pass that finds nothing); a converged one needs one.
const MAX_PASSES: usize = 4;

/// Which passwords `ensure` generated (the caller must store them; the others were kept).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GeneratedPasswords {
    /// The owner role's password was generated.
    pub owner: bool,
    /// The runtime role's password was generated.
    pub runtime: bool,
}

/// The outcome of [`ensure`]: what changed, and how to connect.
///
/// `Debug` and `Display` never show a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    /// Every changing statement issued, in order. Empty when Postgres already matched.
    pub changes: Vec<Change>,
    /// How the migrate Job connects (owner role).
    pub owner: ConnectionFacts,
    /// How `serve` and `worker` connect (runtime role).
    pub runtime: ConnectionFacts,
    /// Which passwords are new.
    pub generated: GeneratedPasswords,
}

impl Provisioned {
    /// Whether nothing was changed.
    pub fn is_noop(&self) -> bool {
        self.changes.is_empty()
    }

    /// How many statements of each kind were issued.
    pub fn counts(&self) -> BTreeMap<StatementKind, usize> {
        count_kinds(&self.changes)
    }

    /// How many statements of `kind` were issued.
    pub fn count(&self, kind: StatementKind) -> usize {
        self.changes
            .iter()
            .filter(|change| change.kind == kind)
            .count()
    }
}

impl std::fmt::Display for Provisioned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} and {}: ", self.owner, self.runtime)?;
        write_counts(f, &self.changes)
    }
}

pub(crate) fn count_kinds(changes: &[Change]) -> BTreeMap<StatementKind, usize> {
    let mut counts = BTreeMap::new();
    for change in changes {
        *counts.entry(change.kind).or_insert(0) += 1;
    }
    counts
}

pub(crate) fn write_counts(
    f: &mut std::fmt::Formatter<'_>,
    changes: &[Change],
) -> std::fmt::Result {
    if changes.is_empty() {
        return f.write_str("no changes");
    }
    let parts: Vec<String> = count_kinds(changes)
        .into_iter()
        .map(|(kind, count)| format!("{kind} x{count}"))
        .collect();
    write!(f, "{} changes ({})", changes.len(), parts.join(", "))
}

/// Takes a session-level advisory lock for the app, so two reconciles of the same app never
/// interleave. It is released when the connection closes.
pub(crate) async fn lock_app(
    connection: &mut PgConnection,
    names: &ObjectNames,
) -> Result<(), Error> {
    sqlx::query("SELECT pg_advisory_lock(hashtext('kumiko.so/roles/' || $1))")
        .bind(&names.database)
        .execute(&mut *connection)
        .await
        .map_err(|source| Error::Inspect {
            what: "the app's advisory lock",
            source,
        })?;
    Ok(())
}

fn not_converged(plan: &[Statement]) -> Error {
    Error::NotConverged {
        passes: MAX_PASSES,
        remaining: plan
            .iter()
            .map(|statement| statement.change().to_string())
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// Makes Postgres match `app`: creates or repairs both roles, the database, its privileges and
/// the default privileges, and returns what it changed and how to connect.
///
/// Idempotent: each pass reads the catalogs and issues only the statements whose effect is
/// missing; a run against a converged server issues no changing statement at all, and
/// [`Provisioned::changes`] is empty.
///
/// Passwords in `stored` are kept (set again only when the role's verifier does not match them,
/// e.g. after a rotation whose Secret write was lost); missing ones are generated and flagged in
/// [`Provisioned::generated`].
pub async fn ensure(
    admin: &AdminConnection,
    app: &AppDatabase,
    stored: &StoredPasswords,
) -> Result<Provisioned, Error> {
    app.validate()?;
    let names = app.object_names();
    let (owner_password, owner_generated) = keep_or_generate(stored.owner.as_ref());
    let (runtime_password, runtime_generated) = keep_or_generate(stored.runtime.as_ref());
    let desired = Desired {
        app,
        names: names.clone(),
        owner_password: &owner_password,
        runtime_password: &runtime_password,
    };

    let mut connection = admin.connect().await?;
    lock_app(&mut connection, &names).await?;
    let mut changes = Vec::new();
    let mut converged = false;
    let mut last_plan = Vec::new();
    for _pass in 0..MAX_PASSES {
        let state = observe::cluster_state(
            &mut connection,
            admin,
            &names,
            Some((&owner_password, &runtime_password)),
        )
        .await?;
        last_plan = plan::plan_cluster(&desired, &state)?;
        if last_plan.is_empty() {
            converged = true;
            break;
        }
        changes.extend(execute_all(&mut connection, &last_plan).await?);
    }
    if !converged {
        return Err(not_converged(&last_plan));
    }

    let mut in_database = admin.connect_to(&names.database).await?;
    converged = false;
    for _pass in 0..MAX_PASSES {
        let objects = observe::database_objects(&mut in_database, &names).await?;
        last_plan = plan::plan_database_objects(&names, &objects);
        if last_plan.is_empty() {
            converged = true;
            break;
        }
        changes.extend(execute_all(&mut in_database, &last_plan).await?);
    }
    if !converged {
        return Err(not_converged(&last_plan));
    }
    for change in &changes {
        tracing::info!(app = %app.name, change = %change, "postgres changed");
    }

    Ok(Provisioned {
        changes,
        owner: facts(admin, &names, &names.owner_role, owner_password),
        runtime: facts(admin, &names, &names.runtime_role, runtime_password),
        generated: GeneratedPasswords {
            owner: owner_generated,
            runtime: runtime_generated,
        },
    })
}

/// Gives the runtime role a new random password and returns its new connection facts.
///
/// New logins need the new password at once; sessions already open stay open (the rollout that
/// follows the Secret update replaces them). The caller writes the facts into the runtime
/// Secret; if that write is lost, the next [`ensure`] with the old stored password sets the old
/// password back, so the Secret and the role never stay apart.
pub async fn rotate_runtime_password(
    admin: &AdminConnection,
    app: &AppDatabase,
) -> Result<ConnectionFacts, Error> {
    app.validate()?;
    let names = app.object_names();
    let mut connection = admin.connect().await?;
    lock_app(&mut connection, &names).await?;
    let state = observe::cluster_state(&mut connection, admin, &names, None).await?;
    plan::check_claims(&app.claim, &names, &state)?;
    if state.runtime.is_none() {
        return Err(Error::NotProvisioned {
            object: format!("role {:?}", names.runtime_role),
        });
    }
    let password = Password::generate();
    let statement = Statement::new(
        StatementKind::SetPassword,
        format!("role {:?}", names.runtime_role),
        "ALTER ROLE %I WITH PASSWORD %L",
        vec![
            Arg::Ident(names.runtime_role.clone()),
            Arg::Secret(password.scram_verifier()),
        ],
    );
    execute_all(&mut connection, &[statement]).await?;
    tracing::info!(app = %app.name, role = %names.runtime_role, "runtime password rotated");
    Ok(facts(admin, &names, &names.runtime_role, password))
}

fn keep_or_generate(stored: Option<&Password>) -> (Password, bool) {
    match stored {
        Some(password) => (password.clone(), false),
        None => (Password::generate(), true),
    }
}

fn facts(
    admin: &AdminConnection,
    names: &ObjectNames,
    role: &str,
    password: Password,
) -> ConnectionFacts {
    ConnectionFacts::new(
        admin.host(),
        admin.port(),
        &names.database,
        role,
        password,
        admin.sslmode(),
    )
}
