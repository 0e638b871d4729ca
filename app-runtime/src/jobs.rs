//! The jobs worker: cron jobs on the leader only, queued (manual) jobs on any worker.
//!
//! **Cron.** Each cron job has a [`Schedule`]: a fixed interval, its ticks aligned to the Unix
//! epoch ([`next_tick_after`]), or a cron expression in a time zone ([`Schedule::cron`], e.g.
//! `0 9 * * Mon-Fri` in `Europe/Berlin`: 09:00 local time, across daylight-saving changes, by
//! jiff's time zone rules). Either way every process computes the same `scheduled_for` for a
//! tick. Before
//! running a tick the scheduler checks leadership ([`LeaderHandle::is_leader`]), then claims the
//! tick by inserting `(job, scheduled_for)` into `kumiko_cron_runs`, whose primary key makes the insert
//! succeed for exactly one process. Two leaders during a partition (or a forced split-brain) both
//! try; one inserts and runs, the other skips. A run that fails is recorded, not retried. A run
//! cut off by a shutdown (it got its cancellation signal and did not finish within its grace) is
//! recorded `interrupted`, as is one left `running` by an instance that died
//! ([`recover_orphans`]): the leader claims it again ([`resume_interrupted`], a conditional update
//! that exactly one process wins) and runs it. A run is recorded `succeeded` only by the process
//! that holds the claim, so each scheduled time has at most one completed run. Ticks missed while
//! no process was leader are not caught up.
//!
//! **Queue.** `jobs` rows are claimed one at a time by any worker: Postgres uses
//! `FOR UPDATE SKIP LOCKED` so workers never wait on each other's rows; SQLite runs the claim as
//! one `UPDATE ... RETURNING` statement, which its single-writer lock makes atomic. A failed job is
//! retried with exponential backoff up to its `max_attempts`; a job whose worker died is claimed
//! again once its lock is older than the job timeout (or recovered at the next worker's boot).
//!
//! **Shutdown.** [`JobsWorker::stop`] is given what is left of `KUMIKO_SHUTDOWN_TIMEOUT` when it
//! runs; a running job (queued or cron) gets its cancellation signal and a grace of at most three
//! quarters of that ([`cancel_grace`]), so the rest of the shutdown still fits in the budget. A
//! queued job that does not finish is queued again without counting the attempt; a cron tick is
//! recorded `interrupted` and run again by the leader.
//!
//! **Heartbeat.** The queue loop beats at every poll and while a job runs; the readiness check
//! `jobs-worker` ([`JobsWorker::health_check`]) turns unhealthy when the last beat is older than
//! [`WorkerConfig::heartbeat_max_age`].

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::db::Pool;
use crate::error::Error;
use crate::health::{Check, Heartbeat};
use crate::leader::LeaderHandle;
use crate::query::{epoch_ms, on_pool};

/// What a cron handler gets for one tick.
#[derive(Debug, Clone)]
pub struct CronContext {
    /// The database.
    pub pool: Pool,
    /// The job's name.
    pub job: &'static str,
    /// The tick, in milliseconds since the epoch (the same on every process).
    pub scheduled_for_ms: i64,
    /// This process (`KUMIKO_INSTANCE_ID`).
    pub instance_id: String,
    /// Cancelled when the worker shuts down: finish (or give up) within the grace; a tick that
    /// does not finish is recorded `interrupted` and run again by the leader, not lost.
    pub cancel: CancellationToken,
}

/// What a queued-job handler gets.
#[derive(Debug, Clone)]
pub struct QueuedContext {
    /// The database.
    pub pool: Pool,
    /// The job's id.
    pub id: i64,
    /// The job's kind.
    pub kind: String,
    /// Its JSON payload.
    pub payload: serde_json::Value,
    /// This attempt, counting from 1.
    pub attempt: i32,
    /// This process.
    pub instance_id: String,
    /// Cancelled when the worker shuts down: finish (or give up) within
    /// [`WorkerConfig::cancel_grace`]; a job that does not finish is queued again, not lost.
    pub cancel: CancellationToken,
}

type CronHandler = Arc<dyn Fn(CronContext) -> BoxFuture<'static, Result<(), Error>> + Send + Sync>;
type QueuedHandler =
    Arc<dyn Fn(QueuedContext) -> BoxFuture<'static, Result<(), Error>> + Send + Sync>;

/// When a cron job runs.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// Every interval, ticks aligned to the Unix epoch.
    Every(Duration),
    /// A cron expression evaluated in a time zone.
    Cron {
        /// The expression as written.
        expression: String,
        /// The parsed expression.
        schedule: Box<jiff_cron::Schedule>,
        /// The time zone it is read in.
        time_zone: jiff::tz::TimeZone,
    },
}

impl Schedule {
    /// Parses a cron expression read in `time_zone` (an IANA name such as `Europe/Berlin`, or
    /// `UTC`). Five fields are standard cron (minute hour day-of-month month day-of-week, at
    /// second 0); six or seven put seconds first and a year last. Prefer day names (`Mon-Fri`)
    /// to numbers in the day-of-week field.
    pub fn cron(expression: &str, time_zone: &str) -> Result<Self, Error> {
        let fields = expression.split_whitespace().count();
        let full = if fields == 5 {
            format!("0 {}", expression.trim())
        } else {
            expression.trim().to_owned()
        };
        let schedule =
            full.parse::<jiff_cron::Schedule>()
                .map_err(|error| Error::InvalidSchedule {
                    expression: expression.to_owned(),
                    problem: error.to_string(),
                })?;
        let time_zone =
            jiff::tz::TimeZone::get(time_zone).map_err(|error| Error::InvalidSchedule {
                expression: expression.to_owned(),
                problem: format!("time zone `{time_zone}`: {error}"),
            })?;
        Ok(Self::Cron {
            expression: expression.to_owned(),
            schedule: Box::new(schedule),
            time_zone,
        })
    }

    /// The first tick strictly after `now_ms` (ms since the epoch), the same on every process;
    /// `None` when the schedule has no further tick.
    pub fn next_after_ms(&self, now_ms: i64) -> Option<i64> {
        match self {
            Self::Every(interval) => Some(next_tick_after(now_ms, ms(*interval))),
            Self::Cron {
                schedule,
                time_zone,
                ..
            } => {
                let now = jiff::Timestamp::from_millisecond(now_ms)
                    .ok()?
                    .to_zoned(time_zone.clone());
                schedule
                    .after(now)
                    .next()
                    .map(|next| next.timestamp().as_millisecond())
                    .filter(|next| *next > now_ms)
            }
        }
    }

    /// The schedule as logged.
    pub fn describe(&self) -> String {
        match self {
            Self::Every(interval) => format!("every {}", crate::config::format_duration(*interval)),
            Self::Cron {
                expression,
                time_zone,
                ..
            } => format!(
                "`{expression}` in {}",
                time_zone.iana_name().unwrap_or("a fixed-offset zone")
            ),
        }
    }
}

/// A job run on a schedule by the leader, once per tick across every process.
#[derive(Clone)]
pub struct CronJob {
    name: &'static str,
    schedule: Schedule,
    handler: CronHandler,
}

impl fmt::Debug for CronJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CronJob")
            .field("name", &self.name)
            .field("schedule", &self.schedule.describe())
            .finish_non_exhaustive()
    }
}

impl CronJob {
    /// A cron job named `name`, run every `interval` (at least 1 ms).
    pub fn new<F, Fut>(name: &'static str, interval: Duration, handler: F) -> Self
    where
        F: Fn(CronContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        Self::scheduled(
            name,
            Schedule::Every(interval.max(Duration::from_millis(1))),
            handler,
        )
    }

    /// A cron job named `name` on `schedule` (for example [`Schedule::cron`]).
    pub fn scheduled<F, Fut>(name: &'static str, schedule: Schedule, handler: F) -> Self
    where
        F: Fn(CronContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        Self {
            name,
            schedule,
            handler: Arc::new(move |context| Box::pin(handler(context))),
        }
    }

    /// The job's name (the key in `kumiko_cron_runs`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// When it runs.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }
}

/// The cron jobs and queued-job handlers a worker runs.
#[derive(Clone, Default)]
pub struct JobRegistry {
    cron: Vec<CronJob>,
    queued: BTreeMap<String, QueuedHandler>,
    errors: Vec<String>,
}

impl fmt::Debug for JobRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobRegistry")
            .field("cron", &self.cron)
            .field("queued", &self.queued.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl JobRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a cron job. A second job of the same name is kept as an error (it would share the
    /// first one's claims in `kumiko_cron_runs`).
    pub fn cron(mut self, job: CronJob) -> Self {
        if self.cron.iter().any(|known| known.name == job.name) {
            self.errors.push(format!(
                "cron job {}: is registered twice; give each cron job its own name",
                job.name
            ));
        } else {
            self.cron.push(job);
        }
        self
    }

    /// Adds a cron job on a cron expression read in `time_zone` (see [`Schedule::cron`]). A bad
    /// expression or time zone is kept as an error that boot validation (phase 6) reports with
    /// every other error, naming the job, in every process type.
    pub fn cron_at<F, Fut>(
        mut self,
        name: &'static str,
        expression: &str,
        time_zone: &str,
        handler: F,
    ) -> Self
    where
        F: Fn(CronContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        match Schedule::cron(expression, time_zone) {
            Ok(schedule) => self.cron(CronJob::scheduled(name, schedule, handler)),
            Err(error) => {
                self.errors.push(format!("cron job {name}: {error}"));
                self
            }
        }
    }

    /// The registration mistakes (bad schedules, a name registered twice), each naming its job
    /// as `cron job <name>: <problem>` or `queued job <kind>: <problem>`.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    /// Adds the handler for queued jobs of `kind` (a second handler for the same kind is kept as
    /// an error).
    pub fn queued<F, Fut>(mut self, kind: &str, handler: F) -> Self
    where
        F: Fn(QueuedContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        if self.queued.contains_key(kind) {
            self.errors.push(format!(
                "queued job {kind}: has two handlers; register one handler per kind"
            ));
            return self;
        }
        self.queued.insert(
            kind.to_owned(),
            Arc::new(move |context| Box::pin(handler(context))),
        );
        self
    }

    /// The cron jobs.
    pub fn cron_jobs(&self) -> &[CronJob] {
        &self.cron
    }

    /// The queued-job kinds with a handler.
    pub fn queued_kinds(&self) -> Vec<&str> {
        self.queued.keys().map(String::as_str).collect()
    }
}

/// The worker's timing.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This process (`KUMIKO_INSTANCE_ID`), recorded on claims.
    pub instance_id: String,
    /// How often an idle worker looks for queued jobs.
    pub poll_interval: Duration,
    /// The bound on one job run (cron tick or queued job); a queued job locked longer than this
    /// is taken to be abandoned and claimed again.
    pub job_timeout: Duration,
    /// The longest grace a job running at shutdown gets after its cancellation signal (it gets
    /// less when less is left of the shutdown budget: [`cancel_grace`]).
    pub cancel_grace: Duration,
    /// Where job runs are counted (`kumiko_jobs_total`, `kumiko_job_duration_seconds`).
    pub metrics: Option<crate::metrics::Metrics>,
}

impl WorkerConfig {
    /// Defaults: poll every second, jobs bounded at 60 s.
    pub fn new(instance_id: impl Into<String>) -> Self {
        Self {
            instance_id: instance_id.into(),
            poll_interval: Duration::from_secs(1),
            job_timeout: Duration::from_secs(60),
            cancel_grace: Duration::from_secs(10),
            metrics: None,
        }
    }

    /// How long after its last beat in `kumiko_workers` a worker counts as gone (its running work
    /// is recovered by the leader, or at the next worker's boot): twice the heartbeat's bound.
    pub fn presumed_gone_after(&self) -> Duration {
        self.heartbeat_max_age() * 2
    }

    /// The heartbeat's bound: three polls, and at least two seconds.
    pub fn heartbeat_max_age(&self) -> Duration {
        (self.poll_interval * 3).max(Duration::from_secs(2))
    }
}

/// The grace a job running at shutdown gets after its cancellation signal, when the worker's stop
/// may take `budget` (what is left of `KUMIKO_SHUTDOWN_TIMEOUT` at that moment): three quarters of
/// it, the last quarter kept for recording the outcome and the shutdown steps after the worker,
/// and never more than `cap`.
pub fn cancel_grace(budget: Duration, cap: Duration) -> Duration {
    (budget * 3 / 4).min(cap)
}

/// The first tick strictly after `now_ms` for a job every `interval_ms`, aligned to the epoch.
pub fn next_tick_after(now_ms: i64, interval_ms: i64) -> i64 {
    let interval_ms = interval_ms.max(1);
    (now_ms.div_euclid(interval_ms) + 1) * interval_ms
}

/// The delay before retry number `attempt` (1-based) of a failed job: 1 s, 2 s, 4 s, ... capped at
/// one minute.
pub fn retry_delay(attempt: i32) -> Duration {
    let exponent = u32::try_from(attempt.saturating_sub(1)).unwrap_or(0).min(6);
    Duration::from_secs(1u64 << exponent).min(Duration::from_secs(60))
}

/// What happens to a queued job after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Queue it again, not before this time (ms since the epoch).
    RetryAt(i64),
    /// No attempts left: mark it failed.
    GiveUp,
}

/// Decides a failed job's fate from its attempts so far.
pub fn after_failure(attempts: i32, max_attempts: i32, now_ms: i64) -> AfterFailure {
    if attempts >= max_attempts {
        return AfterFailure::GiveUp;
    }
    let delay = i64::try_from(retry_delay(attempts).as_millis()).unwrap_or(i64::MAX);
    AfterFailure::RetryAt(now_ms.saturating_add(delay))
}

/// The running worker: one scheduler task per cron job and one queue loop.
pub struct JobsWorker {
    cancel: CancellationToken,
    presence: (CancellationToken, JoinHandle<()>),
    grace: Grace,
    grace_cap: Duration,
    tasks: Vec<(String, JoinHandle<()>)>,
    heartbeat: Heartbeat,
    heartbeat_max_age: Duration,
}

/// When the grace of the jobs running at shutdown ends: set by [`JobsWorker::stop`] before it
/// sends the cancellation signal, read by the tasks once they see it.
#[derive(Clone, Debug, Default)]
struct Grace(Arc<std::sync::OnceLock<tokio::time::Instant>>);

impl Grace {
    /// The end of the grace; `fallback` from now when the signal came without one.
    fn until(&self, fallback: Duration) -> tokio::time::Instant {
        self.0
            .get()
            .copied()
            .unwrap_or_else(|| tokio::time::Instant::now() + fallback)
    }
}

impl fmt::Debug for JobsWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobsWorker")
            .field(
                "tasks",
                &self.tasks.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl JobsWorker {
    /// Starts the schedulers and the queue loop.
    pub fn start(
        pool: Pool,
        leader: LeaderHandle,
        registry: JobRegistry,
        config: WorkerConfig,
    ) -> Self {
        let cancel = CancellationToken::new();
        let grace = Grace::default();
        let grace_cap = config.cancel_grace;
        let heartbeat = Heartbeat::new();
        let heartbeat_max_age = config.heartbeat_max_age();
        let presence_stop = CancellationToken::new();
        let presence = tokio::spawn(run_presence(
            pool.clone(),
            leader.clone(),
            config.clone(),
            presence_stop.clone(),
        ));
        let mut tasks = Vec::new();
        for job in registry.cron.clone() {
            let name = format!("cron {}", job.name);
            let task = tokio::spawn(run_scheduler(
                pool.clone(),
                leader.clone(),
                job,
                config.clone(),
                Stopping {
                    cancel: cancel.clone(),
                    grace: grace.clone(),
                },
            ));
            tasks.push((name, task));
        }
        let queue = tokio::spawn(run_queue(
            pool,
            Arc::new(registry.queued),
            config,
            heartbeat.clone(),
            Stopping {
                cancel: cancel.clone(),
                grace: grace.clone(),
            },
        ));
        tasks.push(("queue".to_owned(), queue));
        Self {
            cancel,
            presence: (presence_stop, presence),
            grace,
            grace_cap,
            tasks,
            heartbeat,
            heartbeat_max_age,
        }
    }

    /// The queue loop's heartbeat.
    pub fn heartbeat(&self) -> Heartbeat {
        self.heartbeat.clone()
    }

    /// The readiness check `jobs-worker`: unhealthy when the queue loop has not beaten for
    /// [`WorkerConfig::heartbeat_max_age`].
    pub fn health_check(&self) -> Check {
        self.heartbeat.check("jobs-worker", self.heartbeat_max_age)
    }

    /// Stops scheduling and polling within `budget` (what is left of the shutdown budget now).
    /// A job running now gets its cancellation signal and [`cancel_grace`] of `budget` to finish;
    /// one that does not is queued again (a queued job) or recorded `interrupted` (a cron tick),
    /// so it runs again later. A task still busy at the end of `budget` is abandoned. After this
    /// returns no cron tick starts, so the leader key can be released.
    pub async fn stop(self, budget: Duration) {
        let grace = cancel_grace(budget, self.grace_cap);
        let stopped_by = tokio::time::Instant::now() + budget;
        let _ = self.grace.0.set(tokio::time::Instant::now() + grace);
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            budget_ms = budget.as_millis() as u64,
            "stopping the jobs worker: running jobs get their cancellation signal"
        );
        self.cancel.cancel();
        for (name, mut task) in self.tasks {
            if tokio::time::timeout_at(stopped_by, &mut task)
                .await
                .is_err()
            {
                tracing::warn!(task = %name, "jobs task did not stop in time; abandoning it");
                task.abort();
            }
        }
        // Beat until the last job is done: its work is this live instance's until then.
        let (presence_stop, presence) = self.presence;
        presence_stop.cancel();
        let _ = tokio::time::timeout_at(stopped_by, presence).await;
        tracing::info!("jobs worker stopped");
    }
}

fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The worker's shutdown signal and the grace that follows it, as each task sees them.
#[derive(Clone, Debug)]
struct Stopping {
    cancel: CancellationToken,
    grace: Grace,
}

async fn run_scheduler(
    pool: Pool,
    leader: LeaderHandle,
    job: CronJob,
    config: WorkerConfig,
    stopping: Stopping,
) {
    tracing::info!(job = job.name, schedule = %job.schedule.describe(), "cron scheduler started");
    let cancel = &stopping.cancel;
    // How often the leader looks for ticks of this job that were cut off and must run again, and
    // how much time before the next tick such a look needs (it never delays a due tick).
    let resume_every = config.poll_interval.max(Duration::from_millis(100));
    let look_needs = Duration::from_millis(200);
    let mut last_look: Option<tokio::time::Instant> = None;
    loop {
        let now = epoch_ms();
        let Some(tick) = job.schedule.next_after_ms(now) else {
            tracing::warn!(
                job = job.name,
                "the schedule has no further tick; scheduler stops"
            );
            break;
        };
        let wait = Duration::from_millis(u64::try_from(tick - now).unwrap_or(0));
        let look_due = last_look.is_none_or(|at| at.elapsed() >= resume_every);
        if look_due && wait > look_needs && leader.is_leader() {
            // Ticks cut off by a shutdown or left by a dead instance: the leader runs them again.
            last_look = Some(tokio::time::Instant::now());
            while !cancel.is_cancelled() {
                match resume_interrupted(&pool, job.name, &config.instance_id).await {
                    Ok(Some(tick)) => {
                        tracing::info!(
                            job = job.name,
                            scheduled_for_ms = tick,
                            "running an interrupted cron tick again"
                        );
                        run_tick(&pool, &job, tick, &config, &stopping).await;
                    }
                    Ok(None) => break,
                    Err(error) => {
                        tracing::warn!(job = job.name, error = %crate::boot::ErrorChain(&error), "looking for interrupted cron ticks failed");
                        break;
                    }
                }
            }
            continue;
        }
        if wait > resume_every + look_needs {
            // Not due for a while: look for interrupted ticks again before it is.
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(resume_every) => continue,
            }
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
        if cancel.is_cancelled() {
            break;
        }
        if !leader.is_leader() {
            tracing::debug!(
                job = job.name,
                scheduled_for_ms = tick,
                "not the leader; tick left to the leader"
            );
            continue;
        }
        match claim_tick(&pool, job.name, tick, &config.instance_id).await {
            Ok(true) => run_tick(&pool, &job, tick, &config, &stopping).await,
            Ok(false) => tracing::info!(
                job = job.name,
                scheduled_for_ms = tick,
                "tick already claimed by another process; skipping"
            ),
            Err(error) => tracing::warn!(
                job = job.name,
                scheduled_for_ms = tick,
                error = %crate::boot::ErrorChain(&error),
                "claiming the cron tick failed; skipping it"
            ),
        }
    }
    tracing::info!(job = job.name, "cron scheduler stopped");
}

/// Claims a tick: inserts `(job, scheduled_for)`; true when this process won it.
pub async fn claim_tick(
    pool: &Pool,
    job: &str,
    scheduled_for_ms: i64,
    instance_id: &str,
) -> Result<bool, Error> {
    const SQL: &str = "INSERT INTO kumiko_cron_runs (job, scheduled_for_ms, instance_id, state, started_at_ms) \
                       VALUES ($1, $2, $3, 'running', $4) ON CONFLICT (job, scheduled_for_ms) DO NOTHING";
    let inserted = on_pool!(pool, |executor| sqlx::query(SQL)
        .bind(job)
        .bind(scheduled_for_ms)
        .bind(instance_id)
        .bind(epoch_ms())
        .execute(executor)
        .await
        .map(|result| result.rows_affected()))
    .map_err(|source| Error::Database {
        action: "claiming a cron tick",
        source,
    })?;
    Ok(inserted == 1)
}

/// Claims the oldest `interrupted` tick of `job` for `instance_id` to run it again; `None` when
/// there is none. One conditional update: of processes racing for the same tick, exactly one
/// wins it.
pub async fn resume_interrupted(
    pool: &Pool,
    job: &str,
    instance_id: &str,
) -> Result<Option<i64>, Error> {
    const POSTGRES: &str = "UPDATE kumiko_cron_runs SET state = 'running', instance_id = $2, started_at_ms = $3, \
        finished_at_ms = NULL WHERE state = 'interrupted' AND job = $1 AND scheduled_for_ms = \
        (SELECT scheduled_for_ms FROM kumiko_cron_runs WHERE job = $1 AND state = 'interrupted' \
         ORDER BY scheduled_for_ms LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING scheduled_for_ms";
    const SQLITE: &str = "UPDATE kumiko_cron_runs SET state = 'running', instance_id = $2, started_at_ms = $3, \
        finished_at_ms = NULL WHERE state = 'interrupted' AND job = $1 AND scheduled_for_ms = \
        (SELECT scheduled_for_ms FROM kumiko_cron_runs WHERE job = $1 AND state = 'interrupted' \
         ORDER BY scheduled_for_ms LIMIT 1) RETURNING scheduled_for_ms";
    let now = epoch_ms();
    match pool {
        Pool::Postgres(executor) => {
            sqlx::query_scalar(POSTGRES)
                .bind(job)
                .bind(instance_id)
                .bind(now)
                .fetch_optional(executor)
                .await
        }
        Pool::Sqlite(executor) => {
            sqlx::query_scalar(SQLITE)
                .bind(job)
                .bind(instance_id)
                .bind(now)
                .fetch_optional(executor)
                .await
        }
    }
    .map_err(|source| Error::Database {
        action: "claiming an interrupted cron tick",
        source,
    })
}

/// How one cron run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TickOutcome {
    Succeeded,
    Failed(String),
    /// Cut off by the shutdown: run again later.
    Interrupted(String),
}

impl TickOutcome {
    fn state(&self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed(_) => "failed",
            Self::Interrupted(_) => "interrupted",
        }
    }
}

async fn run_tick(
    pool: &Pool,
    job: &CronJob,
    tick: i64,
    config: &WorkerConfig,
    stopping: &Stopping,
) {
    let context = CronContext {
        pool: pool.clone(),
        job: job.name,
        scheduled_for_ms: tick,
        instance_id: config.instance_id.clone(),
        cancel: stopping.cancel.child_token(),
    };
    let started = std::time::Instant::now();
    let run = tokio::time::timeout(config.job_timeout, (job.handler)(context));
    tokio::pin!(run);
    let finished = |outcome: Result<Result<(), Error>, tokio::time::error::Elapsed>| match outcome {
        Ok(Ok(())) => TickOutcome::Succeeded,
        Ok(Err(error)) => TickOutcome::Failed(crate::boot::ErrorChain(&error).to_string()),
        Err(_) => TickOutcome::Failed(format!(
            "did not finish within {} ms",
            config.job_timeout.as_millis()
        )),
    };
    let outcome = tokio::select! {
        outcome = &mut run => Some(finished(outcome)),
        () = stopping.cancel.cancelled() => None,
    };
    let outcome = match outcome {
        // Finished before the signal; or failed after it, which is giving up because of it.
        Some(TickOutcome::Failed(message)) if stopping.cancel.is_cancelled() => {
            TickOutcome::Interrupted(format!(
                "cancelled at the shutdown of {}: {message}",
                config.instance_id
            ))
        }
        Some(outcome) => outcome,
        None => {
            let until = stopping.grace.until(config.cancel_grace);
            match tokio::time::timeout_at(until, &mut run).await {
                Ok(outcome) => match finished(outcome) {
                    TickOutcome::Succeeded => TickOutcome::Succeeded,
                    TickOutcome::Failed(message) | TickOutcome::Interrupted(message) => {
                        TickOutcome::Interrupted(format!(
                            "cancelled at the shutdown of {}: {message}",
                            config.instance_id
                        ))
                    }
                },
                Err(_) => TickOutcome::Interrupted(format!(
                    "cancelled at the shutdown of {}: still running at the end of its grace",
                    config.instance_id
                )),
            }
        }
    };
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Some(metrics) = &config.metrics {
        let result = match &outcome {
            TickOutcome::Succeeded => "succeeded",
            TickOutcome::Failed(_) => "failed",
            TickOutcome::Interrupted(_) => "cancelled",
        };
        metrics.observe_job(job.name, result, elapsed_ms / 1000.0);
    }
    let error = match &outcome {
        TickOutcome::Succeeded => {
            tracing::info!(
                job = job.name,
                scheduled_for_ms = tick,
                elapsed_ms,
                "cron tick ran"
            );
            None
        }
        TickOutcome::Failed(message) => {
            tracing::warn!(job = job.name, scheduled_for_ms = tick, elapsed_ms, error = %message, "cron tick failed");
            Some(message.as_str())
        }
        TickOutcome::Interrupted(message) => {
            tracing::warn!(job = job.name, scheduled_for_ms = tick, elapsed_ms, reason = %message, "cron tick interrupted by the shutdown; it runs again");
            Some(message.as_str())
        }
    };
    // Only the claim's holder records the outcome: each scheduled time completes at most once.
    const SQL: &str = "UPDATE kumiko_cron_runs SET state = $1, finished_at_ms = $2, error = $3 \
                       WHERE job = $4 AND scheduled_for_ms = $5 AND instance_id = $6 AND state = 'running'";
    let finished_at = match &outcome {
        TickOutcome::Interrupted(_) => None,
        TickOutcome::Succeeded | TickOutcome::Failed(_) => Some(epoch_ms()),
    };
    let recorded = on_pool!(pool, |executor| sqlx::query(SQL)
        .bind(outcome.state())
        .bind(finished_at)
        .bind(error)
        .bind(job.name)
        .bind(tick)
        .bind(&config.instance_id)
        .execute(executor)
        .await
        .map(|result| result.rows_affected()));
    match recorded {
        Ok(1) => {}
        Ok(_) => tracing::warn!(
            job = job.name,
            scheduled_for_ms = tick,
            "the cron run's claim was no longer this process's; its outcome is not recorded"
        ),
        Err(error) => {
            tracing::warn!(job = job.name, scheduled_for_ms = tick, %error, "recording the cron run failed")
        }
    }
}

/// A row of the queue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JobRecord {
    /// Its id.
    pub id: i64,
    /// Its kind.
    pub kind: String,
    /// `queued`, `running`, `succeeded` or `failed`.
    pub state: String,
    /// Attempts so far.
    pub attempts: i32,
    /// The limit.
    pub max_attempts: i32,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// When it was enqueued (ms since the epoch).
    pub created_at_ms: i64,
    /// When it finished (ms since the epoch).
    pub finished_at_ms: Option<i64>,
}

type JobRow = (
    i64,
    String,
    String,
    i32,
    i32,
    Option<String>,
    i64,
    Option<i64>,
);

impl From<JobRow> for JobRecord {
    fn from(row: JobRow) -> Self {
        let (id, kind, state, attempts, max_attempts, last_error, created_at_ms, finished_at_ms) =
            row;
        Self {
            id,
            kind,
            state,
            attempts,
            max_attempts,
            last_error,
            created_at_ms,
            finished_at_ms,
        }
    }
}

/// Queues a job of `kind` with `payload`; any worker with a handler for `kind` runs it.
/// Returns the job's id.
pub async fn enqueue(
    pool: &Pool,
    kind: &str,
    payload: &serde_json::Value,
    max_attempts: i32,
) -> Result<i64, Error> {
    const SQL: &str = "INSERT INTO kumiko_jobs (kind, payload, state, attempts, max_attempts, run_after_ms, created_at_ms) \
                       VALUES ($1, $2, 'queued', 0, $3, $4, $4) RETURNING id";
    let payload = serde_json::to_string(payload).map_err(|source| Error::JobPayload {
        kind: kind.to_owned(),
        source,
    })?;
    let now = epoch_ms();
    let id = on_pool!(pool, |executor| sqlx::query_scalar::<_, i64>(SQL)
        .bind(kind)
        .bind(&payload)
        .bind(max_attempts.max(1))
        .bind(now)
        .fetch_one(executor)
        .await)
    .map_err(|source| Error::Database {
        action: "enqueueing a job",
        source,
    })?;
    tracing::info!(job_id = id, kind, "job enqueued");
    Ok(id)
}

/// One queued job by id.
pub async fn job(pool: &Pool, id: i64) -> Result<Option<JobRecord>, Error> {
    const SQL: &str = "SELECT id, kind, state, attempts, max_attempts, last_error, created_at_ms, finished_at_ms \
                       FROM kumiko_jobs WHERE id = $1";
    let row = on_pool!(pool, |executor| sqlx::query_as::<_, JobRow>(SQL)
        .bind(id)
        .fetch_optional(executor)
        .await)
    .map_err(|source| Error::Database {
        action: "reading a job",
        source,
    })?;
    Ok(row.map(JobRecord::from))
}

/// A claimed job, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    /// Its id.
    pub id: i64,
    /// Its kind.
    pub kind: String,
    /// Its payload, as stored.
    pub payload: String,
    /// This attempt (already counted).
    pub attempts: i32,
    /// The limit.
    pub max_attempts: i32,
}

/// Claims the oldest runnable job for `instance_id`: a queued job whose time has come, or a
/// running one whose lock is older than `stale_after` (its worker died).
pub async fn claim_next(
    pool: &Pool,
    instance_id: &str,
    stale_after: Duration,
) -> Result<Option<ClaimedJob>, Error> {
    const POSTGRES: &str = "UPDATE kumiko_jobs SET state = 'running', attempts = attempts + 1, locked_by = $1, locked_at_ms = $2 \
        WHERE id = (SELECT id FROM kumiko_jobs \
                    WHERE (state = 'queued' AND run_after_ms <= $2) OR (state = 'running' AND locked_at_ms < $3) \
                    ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) \
        RETURNING id, kind, payload, attempts, max_attempts";
    // One statement: SQLite's single writer makes the read and the update atomic.
    const SQLITE: &str = "UPDATE kumiko_jobs SET state = 'running', attempts = attempts + 1, locked_by = $1, locked_at_ms = $2 \
        WHERE id = (SELECT id FROM kumiko_jobs \
                    WHERE (state = 'queued' AND run_after_ms <= $2) OR (state = 'running' AND locked_at_ms < $3) \
                    ORDER BY id LIMIT 1) \
        RETURNING id, kind, payload, attempts, max_attempts";
    let now = epoch_ms();
    let stale_before = now.saturating_sub(ms(stale_after));
    type Row = (i64, String, String, i32, i32);
    let row: Option<Row> = match pool {
        Pool::Postgres(executor) => {
            sqlx::query_as(POSTGRES)
                .bind(instance_id)
                .bind(now)
                .bind(stale_before)
                .fetch_optional(executor)
                .await
        }
        Pool::Sqlite(executor) => {
            sqlx::query_as(SQLITE)
                .bind(instance_id)
                .bind(now)
                .bind(stale_before)
                .fetch_optional(executor)
                .await
        }
    }
    .map_err(|source| Error::Database {
        action: "claiming a queued job",
        source,
    })?;
    Ok(
        row.map(|(id, kind, payload, attempts, max_attempts)| ClaimedJob {
            id,
            kind,
            payload,
            attempts,
            max_attempts,
        }),
    )
}

/// How one run of a queued job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// It succeeded.
    Succeeded,
    /// It failed (retried with backoff while attempts are left).
    Failed(String),
    /// The worker shut down and the job did not finish within the grace: queued again at once,
    /// the attempt not counted.
    Cancelled(String),
}

async fn finish_job(pool: &Pool, job: &ClaimedJob, outcome: JobOutcome) -> Result<(), Error> {
    let now = epoch_ms();
    if let JobOutcome::Cancelled(reason) = &outcome {
        return requeue_cancelled(pool, job, reason, now).await;
    }
    let (state, run_after, finished, error) = match &outcome {
        JobOutcome::Succeeded => ("succeeded", None, Some(now), None),
        JobOutcome::Failed(message) => match after_failure(job.attempts, job.max_attempts, now) {
            AfterFailure::RetryAt(at) => ("queued", Some(at), None, Some(message.as_str())),
            AfterFailure::GiveUp => ("failed", None, Some(now), Some(message.as_str())),
        },
        JobOutcome::Cancelled(message) => ("queued", Some(now), None, Some(message.as_str())),
    };
    const SQL: &str = "UPDATE kumiko_jobs SET state = $1, run_after_ms = COALESCE($2, run_after_ms), finished_at_ms = $3, \
                       last_error = COALESCE($4, last_error), locked_by = NULL, locked_at_ms = NULL WHERE id = $5";
    on_pool!(pool, |executor| sqlx::query(SQL)
        .bind(state)
        .bind(run_after)
        .bind(finished)
        .bind(error)
        .bind(job.id)
        .execute(executor)
        .await
        .map(drop))
    .map_err(|source| Error::Database {
        action: "recording a job's outcome",
        source,
    })?;
    match (state, error) {
        ("succeeded", _) => {
            tracing::info!(job_id = job.id, kind = %job.kind, attempt = job.attempts, "job succeeded")
        }
        (state, error) => {
            tracing::warn!(job_id = job.id, kind = %job.kind, attempt = job.attempts, state, error, "job failed")
        }
    }
    Ok(())
}

/// Queues a job cancelled at shutdown again, at once, without counting the attempt.
async fn requeue_cancelled(
    pool: &Pool,
    job: &ClaimedJob,
    reason: &str,
    now: i64,
) -> Result<(), Error> {
    const SQL: &str = "UPDATE kumiko_jobs SET state = 'queued', run_after_ms = $1, attempts = attempts - 1, \
                       last_error = $2, locked_by = NULL, locked_at_ms = NULL WHERE id = $3";
    on_pool!(pool, |executor| sqlx::query(SQL)
        .bind(now)
        .bind(reason)
        .bind(job.id)
        .execute(executor)
        .await
        .map(drop))
    .map_err(|source| Error::Database {
        action: "queueing a cancelled job again",
        source,
    })?;
    tracing::warn!(job_id = job.id, kind = %job.kind, attempt = job.attempts, reason, "job cancelled at shutdown; queued again");
    Ok(())
}

/// Records that `instance_id`'s queue loop is alive.
pub async fn beat_worker(pool: &Pool, instance_id: &str) -> Result<(), Error> {
    const SQL: &str = "INSERT INTO kumiko_workers (instance_id, last_seen_ms) VALUES ($1, $2) \
                       ON CONFLICT (instance_id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms";
    on_pool!(pool, |executor| sqlx::query(SQL)
        .bind(instance_id)
        .bind(epoch_ms())
        .execute(executor)
        .await
        .map(drop))
    .map_err(|source| Error::Database {
        action: "recording the worker's heartbeat",
        source,
    })
}

/// What [`recover_orphans`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Queued jobs queued again (attempts were left).
    pub requeued: Vec<i64>,
    /// Queued jobs marked failed (no attempts left).
    pub failed: Vec<i64>,
    /// Cron runs marked `interrupted` (the leader runs them again).
    pub cron_runs_interrupted: u64,
}

/// Whose running work [`recover_orphans`] takes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orphans {
    /// At a worker's boot: this instance's previous incarnation's work too (the instance id is
    /// the pod's name, so a restarted pod finds its own runs), and every instance's that stopped
    /// beating.
    AtBoot,
    /// While running (the leader, periodically): only instances that stopped beating; never this
    /// instance's own work, which is running now.
    WhileRunning,
}

/// Work left `running` by an instance that no longer exists (see [`Orphans`]; an instance is
/// gone when its last beat in `kumiko_workers` is older than `gone_after`) is recovered: a queued
/// job is queued again while it has attempts left and marked failed otherwise, a cron run is
/// marked `interrupted` so the leader runs it again. Each is logged. Workers beat from their own
/// task ([`JobsWorker::start`]), also while a long job runs and through the shutdown grace, so
/// a live worker's work is never taken from it.
pub async fn recover_orphans(
    pool: &Pool,
    instance_id: &str,
    gone_after: Duration,
    scope: Orphans,
) -> Result<Recovered, Error> {
    const AT_BOOT: &str = "(locked_by IS NULL OR locked_by = $1 OR locked_by NOT IN \
        (SELECT instance_id FROM kumiko_workers WHERE last_seen_ms >= $2 AND instance_id <> $1))";
    const WHILE_RUNNING: &str = "(locked_by IS NOT NULL AND locked_by <> $1 AND locked_by NOT IN \
        (SELECT instance_id FROM kumiko_workers WHERE last_seen_ms >= $2))";
    let orphan = match scope {
        Orphans::AtBoot => AT_BOOT,
        Orphans::WhileRunning => WHILE_RUNNING,
    };
    let requeue = format!(
        "UPDATE kumiko_jobs SET state = 'queued', run_after_ms = $3, locked_by = NULL, locked_at_ms = NULL, \
         last_error = 'orphaned: its worker stopped while running it' \
         WHERE state = 'running' AND attempts < max_attempts AND {orphan} RETURNING id"
    );
    let fail = format!(
        "UPDATE kumiko_jobs SET state = 'failed', finished_at_ms = $3, locked_by = NULL, locked_at_ms = NULL, \
         last_error = 'orphaned: its worker stopped while running its last attempt' \
         WHERE state = 'running' AND attempts >= max_attempts AND {orphan} RETURNING id"
    );
    let cron_orphan = match scope {
        Orphans::AtBoot => {
            "(instance_id = $1 OR instance_id NOT IN \
             (SELECT instance_id FROM kumiko_workers WHERE last_seen_ms >= $2 AND instance_id <> $1))"
        }
        Orphans::WhileRunning => {
            "(instance_id <> $1 AND instance_id NOT IN \
             (SELECT instance_id FROM kumiko_workers WHERE last_seen_ms >= $2))"
        }
    };
    let cron = format!(
        "UPDATE kumiko_cron_runs SET state = 'interrupted', finished_at_ms = $3, \
         error = 'orphaned: its instance stopped while running it' \
         WHERE state = 'running' AND {cron_orphan}"
    );
    let now = epoch_ms();
    let alive_since = now.saturating_sub(ms(gone_after));
    let database = |source| Error::Database {
        action: "recovering work left running by a stopped instance",
        source,
    };
    let requeued: Vec<i64> = on_pool!(pool, |executor| sqlx::query_scalar(sqlx::AssertSqlSafe(
        requeue.clone()
    ))
    .bind(instance_id)
    .bind(alive_since)
    .bind(now)
    .fetch_all(executor)
    .await)
    .map_err(database)?;
    let failed: Vec<i64> = on_pool!(pool, |executor| sqlx::query_scalar(sqlx::AssertSqlSafe(
        fail.clone()
    ))
    .bind(instance_id)
    .bind(alive_since)
    .bind(now)
    .fetch_all(executor)
    .await)
    .map_err(database)?;
    let cron_runs_interrupted = on_pool!(pool, |executor| sqlx::query(sqlx::AssertSqlSafe(
        cron.clone()
    ))
    .bind(instance_id)
    .bind(alive_since)
    .bind(now)
    .execute(executor)
    .await
    .map(|result| result.rows_affected()))
    .map_err(database)?;
    let recovered = Recovered {
        requeued,
        failed,
        cron_runs_interrupted,
    };
    if recovered != Recovered::default() {
        tracing::warn!(
            requeued = ?recovered.requeued,
            failed = ?recovered.failed,
            cron_runs_interrupted = recovered.cron_runs_interrupted,
            "recovered work left running by a stopped instance"
        );
    }
    Ok(recovered)
}

/// The worker's presence: beats in `kumiko_workers` every second from its own task, so a long
/// job (or the shutdown grace) never makes a live worker look gone; on the leader, every
/// [`WorkerConfig::presumed_gone_after`], recovers the running work of instances that stopped
/// beating ([`Orphans::WhileRunning`]). Stops after the worker's other tasks.
async fn run_presence(
    pool: Pool,
    leader: LeaderHandle,
    config: WorkerConfig,
    stop: CancellationToken,
) {
    let every = Duration::from_secs(1).min(config.poll_interval.max(Duration::from_millis(100)));
    let recover_every = config.presumed_gone_after();
    let mut last_recovery = tokio::time::Instant::now();
    loop {
        if let Err(error) = beat_worker(&pool, &config.instance_id).await {
            tracing::warn!(error = %crate::boot::ErrorChain(&error), "recording the worker's heartbeat failed");
        }
        if leader.is_leader() && last_recovery.elapsed() >= recover_every {
            last_recovery = tokio::time::Instant::now();
            if let Err(error) = recover_orphans(
                &pool,
                &config.instance_id,
                recover_every,
                Orphans::WhileRunning,
            )
            .await
            {
                tracing::warn!(error = %crate::boot::ErrorChain(&error), "recovering orphaned work failed");
            }
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
    }
}

async fn run_queue(
    pool: Pool,
    handlers: Arc<BTreeMap<String, QueuedHandler>>,
    config: WorkerConfig,
    heartbeat: Heartbeat,
    stopping: Stopping,
) {
    let cancel = &stopping.cancel;
    tracing::info!(kinds = ?handlers.keys().collect::<Vec<_>>(), poll_interval_ms = ms(config.poll_interval), "queue worker started");
    while !cancel.is_cancelled() {
        heartbeat.beat();
        let claimed = match claim_next(&pool, &config.instance_id, config.job_timeout).await {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(error = %crate::boot::ErrorChain(&error), "polling the job queue failed");
                None
            }
        };
        let Some(job) = claimed else {
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(config.poll_interval) => {}
            }
            continue;
        };
        let started = std::time::Instant::now();
        let outcome = run_claimed(&pool, &handlers, &job, &config, &heartbeat, &stopping).await;
        if let Some(metrics) = &config.metrics {
            let result = match &outcome {
                JobOutcome::Succeeded => "succeeded",
                JobOutcome::Failed(_) => "failed",
                JobOutcome::Cancelled(_) => "cancelled",
            };
            metrics.observe_job(&job.kind, result, started.elapsed().as_secs_f64());
        }
        if let Err(error) = finish_job(&pool, &job, outcome).await {
            tracing::warn!(job_id = job.id, error = %crate::boot::ErrorChain(&error), "the job ran, but its outcome was not recorded");
        }
    }
    tracing::info!("queue worker stopped");
}

async fn run_claimed(
    pool: &Pool,
    handlers: &BTreeMap<String, QueuedHandler>,
    job: &ClaimedJob,
    config: &WorkerConfig,
    heartbeat: &Heartbeat,
    stopping: &Stopping,
) -> JobOutcome {
    let cancel = &stopping.cancel;
    let Some(handler) = handlers.get(&job.kind) else {
        return JobOutcome::Failed(format!(
            "no handler for job kind `{}` in this worker",
            job.kind
        ));
    };
    let payload = match serde_json::from_str(&job.payload) {
        Ok(payload) => payload,
        Err(source) => {
            return JobOutcome::Failed(
                crate::boot::ErrorChain(&Error::JobPayload {
                    kind: job.kind.clone(),
                    source,
                })
                .to_string(),
            );
        }
    };
    let context = QueuedContext {
        pool: pool.clone(),
        id: job.id,
        kind: job.kind.clone(),
        payload,
        attempt: job.attempts,
        instance_id: config.instance_id.clone(),
        cancel: cancel.child_token(),
    };
    let run = tokio::time::timeout(config.job_timeout, handler(context));
    tokio::pin!(run);
    // Beat while the job runs: the loop is alive, only busy.
    let mut beat = tokio::time::interval(config.poll_interval);
    let finished = |outcome: Result<Result<(), Error>, tokio::time::error::Elapsed>| match outcome {
        Ok(Ok(())) => JobOutcome::Succeeded,
        Ok(Err(error)) => JobOutcome::Failed(crate::boot::ErrorChain(&error).to_string()),
        Err(_) => JobOutcome::Failed(format!(
            "did not finish within {} ms",
            config.job_timeout.as_millis()
        )),
    };
    let after_cancel = |outcome| match finished(outcome) {
        JobOutcome::Succeeded => JobOutcome::Succeeded,
        JobOutcome::Failed(message) | JobOutcome::Cancelled(message) => {
            JobOutcome::Cancelled(format!(
                "cancelled at the shutdown of {}: {message}",
                config.instance_id
            ))
        }
    };
    loop {
        tokio::select! {
            outcome = &mut run => {
                // A job that gave up because of the shutdown is not a failed attempt.
                return if cancel.is_cancelled() { after_cancel(outcome) } else { finished(outcome) };
            }
            () = cancel.cancelled() => break,
            _ = beat.tick() => heartbeat.beat(),
        }
    }
    // Shutdown: the job has its cancellation signal; it gets the grace (what the worker's stop
    // was given of the shutdown budget) to finish.
    let until = stopping.grace.until(config.cancel_grace);
    let grace = until.saturating_duration_since(tokio::time::Instant::now());
    match tokio::time::timeout_at(until, &mut run).await {
        Ok(outcome) => after_cancel(outcome),
        Err(_) => JobOutcome::Cancelled(format!(
            "cancelled at the shutdown of {}: still running after the {} ms grace",
            config.instance_id,
            grace.as_millis()
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::time::Instant;

    use super::*;

    #[test]
    fn ticks_are_aligned_to_the_epoch_and_strictly_in_the_future() {
        assert_eq!(next_tick_after(0, 1000), 1000);
        assert_eq!(next_tick_after(999, 1000), 1000);
        assert_eq!(next_tick_after(1000, 1000), 2000);
        assert_eq!(
            next_tick_after(1_700_000_000_123, 60_000),
            1_700_000_040_000
        );
        // Two processes with clocks a little apart compute the same tick.
        assert_eq!(next_tick_after(5_010, 1000), next_tick_after(5_990, 1000));
    }

    fn at(text: &str) -> i64 {
        text.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn a_cron_expression_fires_at_its_local_time_across_a_daylight_saving_change() {
        let schedule = Schedule::cron("0 9 * * Mon-Fri", "Europe/Berlin").unwrap();
        // Friday 2026-03-27 10:00 UTC is 11:00 in Berlin (CET): the next is Monday 09:00, which
        // is 07:00 UTC because Berlin moved to CEST on Sunday 2026-03-29.
        assert_eq!(
            schedule.next_after_ms(at("2026-03-27T10:00:00Z")),
            Some(at("2026-03-30T07:00:00Z"))
        );
        // Before 09:00 CET on a weekday: the same day, 08:00 UTC.
        assert_eq!(
            schedule.next_after_ms(at("2026-03-26T06:59:59Z")),
            Some(at("2026-03-26T08:00:00Z"))
        );
        // Strictly after: at the tick itself, the next one.
        assert_eq!(
            schedule.next_after_ms(at("2026-03-26T08:00:00Z")),
            Some(at("2026-03-27T08:00:00Z"))
        );
    }

    #[test]
    fn a_cron_expression_with_seconds_is_the_same_on_every_process() {
        let schedule = Schedule::cron("*/2 * * * * *", "UTC").unwrap();
        let a = schedule.next_after_ms(at("2026-01-01T00:00:01.010Z"));
        let b = schedule.next_after_ms(at("2026-01-01T00:00:01.990Z"));
        assert_eq!(a, Some(at("2026-01-01T00:00:02Z")));
        assert_eq!(a, b);
    }

    #[test]
    fn a_bad_expression_or_time_zone_is_an_error_naming_it() {
        let error = Schedule::cron("61 * * * *", "UTC").unwrap_err();
        assert!(error.to_string().contains("61 * * * *"), "{error}");
        let error = Schedule::cron("0 9 * * *", "Mars/Olympus").unwrap_err();
        assert!(error.to_string().contains("Mars/Olympus"), "{error}");
    }

    #[test]
    fn a_bad_cron_schedule_is_kept_as_a_registry_error_naming_the_job() {
        let registry = JobRegistry::new()
            .cron_at("daily", "0 9 * * *", "Europe/Berlin", |_| async { Ok(()) })
            .cron_at("broken", "0 25 * * *", "UTC", |_| async { Ok(()) });
        assert_eq!(registry.cron_jobs().len(), 1);
        assert_eq!(registry.errors().len(), 1);
        assert!(
            registry.errors()[0].starts_with("cron job broken:"),
            "{:?}",
            registry.errors()
        );
        let twice = JobRegistry::new()
            .cron_at("daily", "0 9 * * *", "UTC", |_| async { Ok(()) })
            .cron(CronJob::new("daily", Duration::from_secs(60), |_| async {
                Ok(())
            }))
            .queued("mail", |_| async { Ok(()) })
            .queued("mail", |_| async { Ok(()) });
        assert_eq!(twice.cron_jobs().len(), 1);
        assert_eq!(twice.queued_kinds(), ["mail"]);
        assert!(twice.errors()[0].starts_with("cron job daily: is registered twice"));
        assert!(twice.errors()[1].starts_with("queued job mail: has two handlers"));
    }

    #[test]
    fn retry_delay_doubles_up_to_a_minute() {
        assert_eq!(retry_delay(1), Duration::from_secs(1));
        assert_eq!(retry_delay(2), Duration::from_secs(2));
        assert_eq!(retry_delay(4), Duration::from_secs(8));
        assert_eq!(retry_delay(50), Duration::from_secs(60));
        assert_eq!(retry_delay(0), Duration::from_secs(1));
    }

    #[test]
    fn the_cancel_grace_is_a_share_of_what_is_left_of_the_budget_never_more_than_the_cap() {
        let cap = Duration::from_secs(10);
        assert_eq!(cancel_grace(Duration::from_secs(40), cap), cap);
        assert_eq!(
            cancel_grace(Duration::from_secs(4), cap),
            Duration::from_secs(3)
        );
        assert_eq!(
            cancel_grace(Duration::from_millis(400), cap),
            Duration::from_millis(300)
        );
        assert_eq!(cancel_grace(Duration::ZERO, cap), Duration::ZERO);
    }

    #[test]
    fn a_failed_job_is_retried_until_its_attempts_run_out() {
        assert_eq!(after_failure(1, 3, 10_000), AfterFailure::RetryAt(11_000));
        assert_eq!(after_failure(2, 3, 10_000), AfterFailure::RetryAt(12_000));
        assert_eq!(after_failure(3, 3, 10_000), AfterFailure::GiveUp);
    }

    /// A migrated pool of each backend.
    struct Pools {
        _dir: tempfile::TempDir,
        _postgres: kumiko_testkit::TempPostgres,
        pools: Vec<Pool>,
    }

    async fn pools() -> Pools {
        use crate::config::{DatabaseTarget, SecretUrl};
        let dir = tempfile::tempdir().unwrap();
        let postgres = kumiko_testkit::TempPostgres::start().unwrap();
        let targets = [
            DatabaseTarget::Sqlite {
                path: dir.path().join("kumiko.db"),
            },
            DatabaseTarget::Postgres {
                url: SecretUrl::new(postgres.superuser_url("postgres")),
            },
        ];
        let mut pools = Vec::new();
        for target in &targets {
            crate::migrations::apply_sets(target, &[crate::migrations::runtime_set(target)])
                .await
                .unwrap();
            pools.push(
                Pool::connect(target, crate::db::PoolOptions::default())
                    .await
                    .unwrap(),
            );
        }
        Pools {
            _dir: dir,
            _postgres: postgres,
            pools,
        }
    }

    #[tokio::test]
    async fn a_cron_tick_is_claimed_by_exactly_one_process() {
        let pools = pools().await;
        for pool in &pools.pools {
            assert!(claim_tick(pool, "rollup", 1000, "a").await.unwrap());
            assert!(!claim_tick(pool, "rollup", 1000, "b").await.unwrap());
            assert!(claim_tick(pool, "rollup", 2000, "b").await.unwrap());
            assert!(claim_tick(pool, "other", 1000, "b").await.unwrap());
        }
    }

    #[tokio::test]
    async fn concurrent_claims_of_one_tick_have_one_winner() {
        let pools = pools().await;
        for pool in &pools.pools {
            let claims = (0..8).map(|i| {
                let pool = pool.clone();
                tokio::spawn(
                    async move { claim_tick(&pool, "rollup", 5000, &format!("p{i}")).await },
                )
            });
            let mut winners = 0;
            for claim in claims {
                if claim.await.unwrap().unwrap() {
                    winners += 1;
                }
            }
            assert_eq!(winners, 1, "{:?}", pool.backend());
        }
    }

    #[tokio::test]
    async fn queued_jobs_are_claimed_once_each_by_concurrent_workers() {
        let pools = pools().await;
        for pool in &pools.pools {
            let mut ids = Vec::new();
            for n in 0..10 {
                ids.push(
                    enqueue(pool, "noop", &serde_json::json!({ "n": n }), 3)
                        .await
                        .unwrap(),
                );
            }
            let workers = (0..4).map(|w| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    loop {
                        match claim_next(&pool, &format!("w{w}"), Duration::from_secs(60)).await {
                            Ok(Some(job)) => mine.push(job.id),
                            Ok(None) => break,
                            // SQLite may refuse a writer whose snapshot went stale: try again.
                            Err(_) => tokio::task::yield_now().await,
                        }
                    }
                    mine
                })
            });
            let mut claimed = Vec::new();
            for worker in workers {
                claimed.extend(worker.await.unwrap());
            }
            claimed.sort_unstable();
            assert_eq!(
                claimed,
                ids,
                "every job claimed exactly once on {:?}",
                pool.backend()
            );
        }
    }

    #[tokio::test]
    async fn queued_jobs_succeed_retry_with_backoff_and_fail_after_their_attempts() {
        let pools = pools().await;
        for pool in &pools.pools {
            let registry = JobRegistry::new()
                .queued("fails", |_context| async {
                    Err(Error::Job {
                        job: "fails".to_owned(),
                        message: "always".to_owned(),
                    })
                })
                .queued("works", |_context| async { Ok(()) })
                .queued("flaky", |context| async move {
                    if context.attempt == 1 {
                        Err(Error::Job {
                            job: "flaky".to_owned(),
                            message: "first attempt fails".to_owned(),
                        })
                    } else {
                        Ok(())
                    }
                });
            let failing = enqueue(pool, "fails", &serde_json::json!({}), 1)
                .await
                .unwrap();
            let working = enqueue(pool, "works", &serde_json::json!({}), 3)
                .await
                .unwrap();
            let unknown = enqueue(pool, "nobody-handles-this", &serde_json::json!({}), 1)
                .await
                .unwrap();
            let flaky = enqueue(pool, "flaky", &serde_json::json!({}), 3)
                .await
                .unwrap();
            let config = WorkerConfig {
                poll_interval: Duration::from_millis(50),
                ..WorkerConfig::new("test")
            };
            let worker = JobsWorker::start(
                pool.clone(),
                crate::leader::LeaderElection::standalone().handle(),
                registry,
                config,
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let f = job(pool, failing).await.unwrap().unwrap();
                let w = job(pool, working).await.unwrap().unwrap();
                let u = job(pool, unknown).await.unwrap().unwrap();
                let r = job(pool, flaky).await.unwrap().unwrap();
                if f.state == "failed"
                    && w.state == "succeeded"
                    && u.state == "failed"
                    && r.state == "succeeded"
                {
                    assert_eq!(f.attempts, 1);
                    assert_eq!(r.attempts, 2, "retried once after the first failure");
                    assert!(f.last_error.unwrap().contains("always"));
                    assert!(u.last_error.unwrap().contains("no handler"));
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "jobs did not settle: {f:?} {w:?} {u:?} {r:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(worker.health_check().name(), "jobs-worker");
            assert!(
                worker.heartbeat().age() < Duration::from_secs(1),
                "the queue loop beats while it polls"
            );
            worker.stop(Duration::from_secs(5)).await;
        }
    }

    async fn count_runs(pool: &Pool) -> Vec<(i64, String)> {
        on_pool!(pool, |executor| sqlx::query_as::<_, (i64, String)>(
            "SELECT scheduled_for_ms, instance_id FROM kumiko_cron_runs WHERE job = 'count' ORDER BY scheduled_for_ms"
        )
        .fetch_all(executor)
        .await)
        .unwrap()
    }

    fn counting_job(counter: Arc<Mutex<Vec<(i64, String)>>>) -> JobRegistry {
        JobRegistry::new().cron(CronJob::new(
            "count",
            Duration::from_millis(200),
            move |context| {
                let counter = counter.clone();
                async move {
                    counter
                        .lock()
                        .unwrap()
                        .push((context.scheduled_for_ms, context.instance_id));
                    Ok(())
                }
            },
        ))
    }

    /// Waits (with a generous deadline, never a fixed time) until `at_least` ticks ran.
    async fn wait_for_runs(runs: &Mutex<Vec<(i64, String)>>, at_least: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while runs.lock().unwrap().len() < at_least {
            assert!(Instant::now() < deadline, "only {:?}", runs.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn fast(instance: &str) -> WorkerConfig {
        WorkerConfig {
            poll_interval: Duration::from_millis(50),
            ..WorkerConfig::new(instance)
        }
    }

    #[tokio::test]
    async fn cron_runs_on_the_leader_only() {
        let pools = pools().await;
        for pool in &pools.pools {
            let runs = Arc::new(Mutex::new(Vec::new()));
            let leader = JobsWorker::start(
                pool.clone(),
                LeaderHandle::fixed(crate::leader::Leadership::Standalone),
                counting_job(runs.clone()),
                fast("leader"),
            );
            let follower = JobsWorker::start(
                pool.clone(),
                LeaderHandle::fixed(crate::leader::Leadership::Follower),
                counting_job(runs.clone()),
                fast("follower"),
            );
            wait_for_runs(&runs, 2).await;
            follower.stop(Duration::from_secs(5)).await;
            leader.stop(Duration::from_secs(5)).await;
            let runs = runs.lock().unwrap().clone();
            assert!(runs.len() >= 2, "the leader ran the ticks: {runs:?}");
            assert!(
                runs.iter().all(|(_, instance)| instance == "leader"),
                "{runs:?}"
            );
            assert_eq!(
                count_runs(pool).await,
                runs,
                "one kumiko_cron_runs row per run"
            );
        }
    }

    #[tokio::test]
    async fn two_leaders_on_one_database_run_each_tick_once() {
        let pools = pools().await;
        for pool in &pools.pools {
            let runs = Arc::new(Mutex::new(Vec::new()));
            let workers: Vec<JobsWorker> = ["a", "b", "c"]
                .into_iter()
                .map(|instance| {
                    JobsWorker::start(
                        pool.clone(),
                        LeaderHandle::fixed(crate::leader::Leadership::Standalone),
                        counting_job(runs.clone()),
                        fast(instance),
                    )
                })
                .collect();
            wait_for_runs(&runs, 3).await;
            for worker in workers {
                worker.stop(Duration::from_secs(5)).await;
            }
            let mut runs = runs.lock().unwrap().clone();
            runs.sort();
            let mut ticks: Vec<i64> = runs.iter().map(|(tick, _)| *tick).collect();
            let executions = ticks.len();
            ticks.dedup();
            assert!(executions >= 3, "{runs:?}");
            assert_eq!(ticks.len(), executions, "a tick ran twice: {runs:?}");
            assert_eq!(count_runs(pool).await, runs);
        }
    }

    async fn tick_rows(pool: &Pool, job: &str) -> Vec<(i64, String, String)> {
        on_pool!(pool, |executor| sqlx::query_as::<_, (i64, String, String)>(
            "SELECT scheduled_for_ms, instance_id, state FROM kumiko_cron_runs WHERE job = $1 ORDER BY scheduled_for_ms"
        )
        .bind(job)
        .fetch_all(executor)
        .await)
        .unwrap()
    }

    async fn interrupt(pool: &Pool, job: &str, tick: i64) {
        on_pool!(pool, |executor| sqlx::query(
            "UPDATE kumiko_cron_runs SET state = 'interrupted' WHERE job = $1 AND scheduled_for_ms = $2"
        )
        .bind(job)
        .bind(tick)
        .execute(executor)
        .await
        .map(drop))
        .unwrap();
    }

    #[tokio::test]
    async fn an_interrupted_tick_is_claimed_again_by_exactly_one_of_concurrent_leaders() {
        let pools = pools().await;
        for pool in &pools.pools {
            assert!(claim_tick(pool, "report", 1000, "a").await.unwrap());
            assert_eq!(resume_interrupted(pool, "report", "b").await.unwrap(), None);
            interrupt(pool, "report", 1000).await;
            let claims = (0..8).map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    loop {
                        // SQLite may refuse a writer whose snapshot went stale: try again.
                        match resume_interrupted(&pool, "report", &format!("p{i}")).await {
                            Ok(won) => return won,
                            Err(_) => tokio::task::yield_now().await,
                        }
                    }
                })
            });
            let mut winners = Vec::new();
            for claim in claims {
                winners.extend(claim.await.unwrap());
            }
            assert_eq!(winners, [1000], "{:?}", pool.backend());
            let rows = tick_rows(pool, "report").await;
            assert_eq!(rows.len(), 1, "still one row for the tick: {rows:?}");
            assert_eq!(rows[0].2, "running");
            assert_ne!(rows[0].1, "a", "claimed by one of the resumers");
        }
    }

    #[tokio::test]
    async fn a_cron_tick_cut_off_by_stop_is_interrupted_and_run_again_by_the_next_leader() {
        let pools = pools().await;
        for pool in &pools.pools {
            // The first worker's tick ignores its cancellation signal: it is cut off at the end
            // of the grace.
            let stubborn = JobRegistry::new().cron(CronJob::new(
                "slow",
                Duration::from_millis(200),
                |_tick| std::future::pending(),
            ));
            let first = JobsWorker::start(
                pool.clone(),
                LeaderHandle::fixed(crate::leader::Leadership::Standalone),
                stubborn,
                WorkerConfig {
                    cancel_grace: Duration::from_millis(300),
                    ..fast("first")
                },
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            while tick_rows(pool, "slow").await.is_empty() {
                assert!(Instant::now() < deadline, "no tick started");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // The grace (the 300 ms cap) cuts the tick off; the rest of the budget is for
            // recording it `interrupted`. With only a 100 ms rest (a 400 ms budget), a loaded
            // machine's SQLite write did not make it: the task was abandoned with the row still
            // `running` (then recovered only once the instance stops beating). `stop` returns as
            // soon as the outcome is recorded, so the long budget costs nothing.
            first.stop(Duration::from_secs(20)).await;
            let rows = tick_rows(pool, "slow").await;
            assert_eq!(rows.len(), 1, "{rows:?}");
            let (tick, _, state) = rows[0].clone();
            assert_eq!(state, "interrupted", "{:?}", pool.backend());

            let runs = Arc::new(Mutex::new(Vec::new()));
            let second = JobsWorker::start(
                pool.clone(),
                LeaderHandle::fixed(crate::leader::Leadership::Standalone),
                JobRegistry::new().cron(CronJob::new("slow", Duration::from_secs(3600), {
                    let runs = runs.clone();
                    move |context| {
                        let runs = runs.clone();
                        async move {
                            runs.lock().unwrap().push(context.scheduled_for_ms);
                            Ok(())
                        }
                    }
                })),
                fast("second"),
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let rows = tick_rows(pool, "slow").await;
                if rows[0].2 == "succeeded" {
                    assert_eq!(rows, [(tick, "second".to_owned(), "succeeded".to_owned())]);
                    break;
                }
                assert!(Instant::now() < deadline, "not run again: {rows:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            second.stop(Duration::from_secs(5)).await;
            assert_eq!(
                *runs.lock().unwrap(),
                [tick],
                "run again once, for its own tick"
            );
        }
    }
}
