//! The uptime roll-up: a cron job that samples every component's status and recomputes the
//! uptime figures, and a queued job that recomputes one component's figures on request.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use kumiko_runtime::db::Pool;
use kumiko_runtime::error::Error;
use kumiko_runtime::jobs::{CronContext, CronJob, JobRegistry, QueuedContext, enqueue};
use kumiko_runtime::query::{epoch_ms, on_pool};

/// The cron job's name (its key in `kumiko_cron_runs`).
pub const ROLLUP_JOB: &str = "uptime-rollup";
/// The queued job's kind.
pub const RECOMPUTE_KIND: &str = "uptime-recompute";
/// The setting for the roll-up interval (default [`DEFAULT_ROLLUP_INTERVAL`]).
pub const ROLLUP_INTERVAL_SETTING: &str = "KUMIKO_UPTIME_ROLLUP_INTERVAL";
/// The setting for the trailing window (default [`DEFAULT_WINDOW`]).
pub const WINDOW_SETTING: &str = "KUMIKO_UPTIME_WINDOW";
/// Roll up once a minute unless configured.
pub const DEFAULT_ROLLUP_INTERVAL: Duration = Duration::from_secs(60);
/// Uptime over the last 30 days unless configured.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);

/// The queued job's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecomputeRequest {
    /// The component to recompute.
    pub component_id: i64,
}

fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The app's jobs: the roll-up every `interval` over `window`, and the recompute handler.
pub fn job_registry(interval: Duration, window: Duration) -> JobRegistry {
    JobRegistry::new()
        .cron(CronJob::new(ROLLUP_JOB, interval, move |context| {
            rollup(context, window)
        }))
        .queued(RECOMPUTE_KIND, move |context| recompute(context, window))
}

/// What one roll-up did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollupOutcome {
    /// Samples written (one per component).
    pub samples: u64,
    /// Components whose figures were recomputed.
    pub components: u64,
}

async fn rollup(context: CronContext, window: Duration) -> Result<(), Error> {
    let outcome = roll_up(
        &context.pool,
        context.scheduled_for_ms,
        ms(window),
        &context.instance_id,
    )
    .await?;
    tracing::debug!(
        samples = outcome.samples,
        components = outcome.components,
        "uptime rolled up"
    );
    Ok(())
}

const SAMPLE_SQL: &str = "INSERT INTO component_samples (component_id, sampled_at_ms, status) \
     SELECT id, $1, status FROM components WHERE 1 = 1 \
     ON CONFLICT (component_id, sampled_at_ms) DO NOTHING";
const PRUNE_SQL: &str = "DELETE FROM component_samples WHERE sampled_at_ms < $1";
/// Recomputes the figures of every component (`$3` = NULL) or of one (`$3` = its id) over the
/// samples since `$1`. The `WHERE` clause also keeps SQLite's upsert parser unambiguous.
const RECOMPUTE_SQL: &str = "INSERT INTO component_uptime (component_id, window_ms, samples_total, samples_up, computed_at_ms) \
     SELECT c.id, $2, COUNT(s.component_id), \
            COALESCE(SUM(CASE WHEN s.status IN ('operational', 'degraded') THEN 1 ELSE 0 END), 0), $4 \
     FROM components c LEFT JOIN component_samples s ON s.component_id = c.id AND s.sampled_at_ms >= $1 \
     WHERE (CAST($3 AS BIGINT) IS NULL OR c.id = CAST($3 AS BIGINT)) \
     GROUP BY c.id \
     ON CONFLICT (component_id) DO UPDATE SET window_ms = excluded.window_ms, \
        samples_total = excluded.samples_total, samples_up = excluded.samples_up, \
        computed_at_ms = excluded.computed_at_ms";
const LOG_SQL: &str = "INSERT INTO uptime_rollups (scheduled_for_ms, instance_id, components, finished_at_ms) \
     VALUES ($1, $2, $3, $4)";

/// One roll-up at tick `scheduled_for_ms`, in one transaction: a sample of every component's
/// status, old samples pruned, every component's figures recomputed over `window_ms`, and a row
/// in `uptime_rollups` recording the run.
pub async fn roll_up(
    pool: &Pool,
    scheduled_for_ms: i64,
    window_ms: i64,
    instance_id: &str,
) -> Result<RollupOutcome, Error> {
    let since = scheduled_for_ms.saturating_sub(window_ms);
    let outcome: Result<RollupOutcome, sqlx::Error> = on_pool!(pool, |executor| async {
        let mut transaction = executor.begin().await?;
        let samples = sqlx::query(SAMPLE_SQL)
            .bind(scheduled_for_ms)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
        sqlx::query(PRUNE_SQL)
            .bind(since)
            .execute(&mut *transaction)
            .await?;
        let components = sqlx::query(RECOMPUTE_SQL)
            .bind(since)
            .bind(window_ms)
            .bind(None::<i64>)
            .bind(epoch_ms())
            .execute(&mut *transaction)
            .await?
            .rows_affected();
        sqlx::query(LOG_SQL)
            .bind(scheduled_for_ms)
            .bind(instance_id)
            .bind(i64::try_from(components).unwrap_or(i64::MAX))
            .bind(epoch_ms())
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(RollupOutcome {
            samples,
            components,
        })
    }
    .await);
    outcome.map_err(|source| Error::Database {
        action: "rolling up the uptime",
        source,
    })
}

async fn recompute(context: QueuedContext, window: Duration) -> Result<(), Error> {
    let request: RecomputeRequest =
        serde_json::from_value(context.payload).map_err(|source| Error::JobPayload {
            kind: context.kind.clone(),
            source,
        })?;
    recompute_component(&context.pool, request.component_id, ms(window), epoch_ms()).await
}

/// Recomputes one component's figures over the `window_ms` before `now_ms`. A component that no
/// longer exists is not an error (it was deleted after the request).
pub async fn recompute_component(
    pool: &Pool,
    component_id: i64,
    window_ms: i64,
    now_ms: i64,
) -> Result<(), Error> {
    let since = now_ms.saturating_sub(window_ms);
    on_pool!(pool, |executor| sqlx::query(RECOMPUTE_SQL)
        .bind(since)
        .bind(window_ms)
        .bind(Some(component_id))
        .bind(epoch_ms())
        .execute(executor)
        .await
        .map(drop))
    .map_err(|source| Error::Database {
        action: "recomputing a component's uptime",
        source,
    })
}

/// Queues a recompute of `component_id`'s uptime for any worker; returns the job id. An unknown
/// component is [`Error::NotFound`].
pub async fn request_recompute(pool: &Pool, component_id: i64) -> Result<i64, Error> {
    super::store::get_component(pool, component_id).await?;
    let payload = serde_json::to_value(RecomputeRequest { component_id }).map_err(|source| {
        Error::JobPayload {
            kind: RECOMPUTE_KIND.to_owned(),
            source,
        }
    })?;
    enqueue(pool, RECOMPUTE_KIND, &payload, 3).await
}

/// Checks `KUMIKO_UPTIME_ROLLUP_INTERVAL` (for boot validation): a duration of at least 100 ms
/// (tests tick every second; production every minute).
pub fn validate_interval(value: &str) -> Result<(), String> {
    let duration = kumiko_runtime::config::parse_duration(value)?;
    if duration < Duration::from_millis(100) {
        return Err(format!(
            "`{value}` is too short; use at least 100ms (default {}s)",
            DEFAULT_ROLLUP_INTERVAL.as_secs()
        ));
    }
    Ok(())
}

/// Checks `KUMIKO_UPTIME_WINDOW` (for boot validation): a duration of at least one minute.
pub fn validate_window(value: &str) -> Result<(), String> {
    let duration = kumiko_runtime::config::parse_duration(value)?;
    if duration < Duration::from_secs(60) {
        return Err(format!(
            "`{value}` is too short; use at least 1m (default 720h = 30 days)"
        ));
    }
    Ok(())
}
