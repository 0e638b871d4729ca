//! The status page's queries: components, incidents, the uptime figures and the summary.
//!
//! Every function takes the tier's [`Pool`] and runs the same SQL on SQLite and Postgres.

use super::model::{
    Component, ComponentStatus, Impact, Incident, NewComponent, NewIncident, StatusChange,
    StatusSummary, Uptime, overall_status, uptime_ratio, validate_component, validate_incident,
    validate_status,
};
use kumiko_runtime::db::Pool;
use kumiko_runtime::error::{Error, FieldError};
use kumiko_runtime::query::{epoch_ms, on_pool};

type ComponentRow = (i64, String, String, String, i64, i64);
type IncidentRow = (
    i64,
    Option<i64>,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
);

const COMPONENT_COLUMNS: &str = "id, name, description, status, created_at_ms, updated_at_ms";
const INCIDENT_COLUMNS: &str =
    "id, component_id, title, message, impact, state, started_at_ms, resolved_at_ms";

fn database(action: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |source| Error::Database { action, source }
}

fn component_from(row: ComponentRow) -> Component {
    let (id, name, description, status, created_at_ms, updated_at_ms) = row;
    Component {
        id,
        name,
        description,
        // The CHECK constraint admits only the four names; an unknown one reads as the worst.
        status: ComponentStatus::parse(&status).unwrap_or(ComponentStatus::MajorOutage),
        created_at_ms,
        updated_at_ms,
    }
}

fn incident_from(row: IncidentRow) -> Incident {
    let (id, component_id, title, message, impact, state, started_at_ms, resolved_at_ms) = row;
    Incident {
        id,
        component_id,
        title,
        message,
        impact: Impact::parse(&impact).unwrap_or(Impact::Critical),
        state,
        started_at_ms,
        resolved_at_ms,
    }
}

/// Every component, by name.
pub async fn list_components(pool: &Pool) -> Result<Vec<Component>, Error> {
    let sql = format!("SELECT {COMPONENT_COLUMNS} FROM components ORDER BY name");
    let rows = on_pool!(pool, |executor| sqlx::query_as::<_, ComponentRow>(
        sqlx::AssertSqlSafe(sql)
    )
    .fetch_all(executor)
    .await)
    .map_err(database("listing components"))?;
    Ok(rows.into_iter().map(component_from).collect())
}

/// One component.
pub async fn get_component(pool: &Pool, id: i64) -> Result<Component, Error> {
    let sql = format!("SELECT {COMPONENT_COLUMNS} FROM components WHERE id = $1");
    let row = on_pool!(pool, |executor| sqlx::query_as::<_, ComponentRow>(
        sqlx::AssertSqlSafe(sql)
    )
    .bind(id)
    .fetch_optional(executor)
    .await)
    .map_err(database("reading a component"))?;
    row.map(component_from).ok_or(Error::NotFound {
        what: "component",
        id,
    })
}

/// Creates a component (status `operational`). A name already taken is an [`Error::Invalid`].
pub async fn create_component(pool: &Pool, input: &NewComponent) -> Result<Component, Error> {
    let valid = validate_component(input).map_err(Error::Invalid)?;
    let now = epoch_ms();
    let sql = format!(
        "INSERT INTO components (name, description, status, created_at_ms, updated_at_ms) \
         VALUES ($1, $2, 'operational', $3, $3) RETURNING {COMPONENT_COLUMNS}"
    );
    let row = on_pool!(pool, |executor| sqlx::query_as::<_, ComponentRow>(
        sqlx::AssertSqlSafe(sql)
    )
    .bind(&valid.name)
    .bind(&valid.description)
    .bind(now)
    .fetch_one(executor)
    .await);
    match row {
        Ok(row) => Ok(component_from(row)),
        Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
            Err(Error::Invalid(vec![FieldError {
                field: "name",
                message: format!(
                    "a component named `{}` exists already; choose another name",
                    valid.name
                ),
            }]))
        }
        Err(source) => Err(database("creating a component")(source)),
    }
}

/// Sets a component's status.
pub async fn set_component_status(
    pool: &Pool,
    id: i64,
    change: &StatusChange,
) -> Result<Component, Error> {
    let status = validate_status(change).map_err(Error::Invalid)?;
    let sql = format!(
        "UPDATE components SET status = $1, updated_at_ms = $2 WHERE id = $3 \
         RETURNING {COMPONENT_COLUMNS}"
    );
    let row = on_pool!(pool, |executor| sqlx::query_as::<_, ComponentRow>(
        sqlx::AssertSqlSafe(sql)
    )
    .bind(status.as_str())
    .bind(epoch_ms())
    .bind(id)
    .fetch_optional(executor)
    .await)
    .map_err(database("setting a component's status"))?;
    row.map(component_from).ok_or(Error::NotFound {
        what: "component",
        id,
    })
}

/// Incidents, newest first; only unresolved ones when `open_only`.
pub async fn list_incidents(pool: &Pool, open_only: bool) -> Result<Vec<Incident>, Error> {
    let filter = if open_only {
        "WHERE resolved_at_ms IS NULL"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {INCIDENT_COLUMNS} FROM incidents {filter} ORDER BY started_at_ms DESC, id DESC"
    );
    let rows = on_pool!(pool, |executor| sqlx::query_as::<_, IncidentRow>(
        sqlx::AssertSqlSafe(sql)
    )
    .fetch_all(executor)
    .await)
    .map_err(database("listing incidents"))?;
    Ok(rows.into_iter().map(incident_from).collect())
}

/// Opens an incident (state `investigating`). An unknown `component_id` is an [`Error::Invalid`].
pub async fn create_incident(pool: &Pool, input: &NewIncident) -> Result<Incident, Error> {
    let valid = validate_incident(input).map_err(Error::Invalid)?;
    let sql = format!(
        "INSERT INTO incidents (component_id, title, message, impact, state, started_at_ms) \
         VALUES ($1, $2, $3, $4, 'investigating', $5) RETURNING {INCIDENT_COLUMNS}"
    );
    let row = on_pool!(pool, |executor| sqlx::query_as::<_, IncidentRow>(
        sqlx::AssertSqlSafe(sql)
    )
    .bind(valid.component_id)
    .bind(&valid.title)
    .bind(&valid.message)
    .bind(valid.impact.as_str())
    .bind(epoch_ms())
    .fetch_one(executor)
    .await);
    match row {
        Ok(row) => Ok(incident_from(row)),
        Err(sqlx::Error::Database(error)) if error.is_foreign_key_violation() => {
            Err(Error::Invalid(vec![FieldError {
                field: "component_id",
                message: format!(
                    "no component has id {}; use the id of an existing component",
                    valid.component_id.unwrap_or_default()
                ),
            }]))
        }
        Err(source) => Err(database("opening an incident")(source)),
    }
}

/// Resolves an incident (idempotent: a resolved incident keeps its first resolution time).
pub async fn resolve_incident(pool: &Pool, id: i64) -> Result<Incident, Error> {
    let sql = format!(
        "UPDATE incidents SET state = 'resolved', resolved_at_ms = COALESCE(resolved_at_ms, $1) \
         WHERE id = $2 RETURNING {INCIDENT_COLUMNS}"
    );
    let row = on_pool!(pool, |executor| sqlx::query_as::<_, IncidentRow>(
        sqlx::AssertSqlSafe(sql)
    )
    .bind(epoch_ms())
    .bind(id)
    .fetch_optional(executor)
    .await)
    .map_err(database("resolving an incident"))?;
    row.map(incident_from).ok_or(Error::NotFound {
        what: "incident",
        id,
    })
}

/// The rolled-up uptime of every component (components never rolled up have no entry).
pub async fn list_uptime(pool: &Pool) -> Result<Vec<Uptime>, Error> {
    type Row = (i64, String, i64, i64, i64, i64);
    const SQL: &str = "SELECT u.component_id, c.name, u.window_ms, u.samples_total, u.samples_up, u.computed_at_ms \
                       FROM component_uptime u JOIN components c ON c.id = u.component_id ORDER BY c.name";
    let rows = on_pool!(pool, |executor| sqlx::query_as::<_, Row>(SQL)
        .fetch_all(executor)
        .await)
    .map_err(database("reading the uptime"))?;
    Ok(rows
        .into_iter()
        .map(
            |(
                component_id,
                component_name,
                window_ms,
                samples_total,
                samples_up,
                computed_at_ms,
            )| {
                Uptime {
                    component_id,
                    component_name,
                    window_ms,
                    samples_total,
                    samples_up,
                    ratio: uptime_ratio(samples_up, samples_total),
                    computed_at_ms,
                }
            },
        )
        .collect())
}

/// The page at a glance: the overall status, every component, the open incidents.
pub async fn status_summary(pool: &Pool) -> Result<StatusSummary, Error> {
    let components = list_components(pool).await?;
    let open_incidents = list_incidents(pool, true).await?;
    Ok(StatusSummary {
        overall: overall_status(components.iter().map(|component| component.status)),
        components,
        open_incidents,
    })
}
