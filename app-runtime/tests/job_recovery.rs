//! Queued jobs across worker restarts, measured from outside: workers of the lifecycle fixture
//! (`examples/lifecycle_fixture.rs`) on one Postgres. A job running at SIGTERM gets its
//! cancellation signal, is queued again within the shutdown budget and finished by the next
//! worker; its grace is a share of what is left of `KUMIKO_SHUTDOWN_TIMEOUT` when the worker stops;
//! a cron tick cut off by the shutdown is run again by the next worker, once; work left running by
//! a killed worker is recovered when the next worker boots.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

mod app_process;

use std::time::{Duration, Instant};

use app_process::{App, example};
use kumiko_runtime::config::{DatabaseTarget, SecretUrl};
use kumiko_runtime::db::{Pool, PoolOptions};
use kumiko_testkit::TempPostgres;
use nix::sys::signal::Signal;

const BOOT: Duration = Duration::from_secs(60);

fn fixture_worker(postgres: &TempPostgres, instance: &str) -> App {
    fixture_worker_with(postgres, instance, &[])
}

/// A worker of the fixture; `extra` overrides the defaults.
fn fixture_worker_with(postgres: &TempPostgres, instance: &str, extra: &[(&str, &str)]) -> App {
    let mut builder = example("lifecycle_fixture", &["worker"])
        .env("DATABASE_URL", postgres.superuser_url("postgres"))
        .env("KUMIKO_MIGRATIONS_MODE", "apply")
        .env("KUMIKO_INSTANCE_ID", instance)
        .env("KUMIKO_LINGER", "0s")
        .env("KUMIKO_SHUTDOWN_TIMEOUT", "8s")
        .env("KUMIKO_JOBS_POLL_INTERVAL", "100ms")
        // Far beyond the test: only the shutdown path or the boot-time recovery can free the job.
        .env("KUMIKO_JOB_TIMEOUT", "10m");
    for (key, value) in extra {
        builder = builder.env(key, *value);
    }
    let mut app = builder.spawn();
    app.wait_ready(BOOT);
    app
}

/// The fixture's cron job every second, slow (until cancelled) on `worker-a`.
const CRON_SLOW_ON_A: [(&str, &str); 2] = [
    ("KUMIKO_FIXTURE_CRON", "* * * * * *"),
    ("KUMIKO_FIXTURE_CRON_SLOW_ON", "worker-a"),
];

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

fn pool(postgres: &TempPostgres) -> Pool {
    let target = DatabaseTarget::Postgres {
        url: SecretUrl::new(postgres.superuser_url("postgres")),
    };
    block_on(Pool::connect(&target, PoolOptions::default())).unwrap()
}

fn enqueue_nap(postgres: &TempPostgres, slow_on: &str) -> i64 {
    enqueue(postgres, &serde_json::json!({ "slow_on": slow_on }))
}

fn enqueue(postgres: &TempPostgres, payload: &serde_json::Value) -> i64 {
    let pool = pool(postgres);
    let id = block_on(kumiko_runtime::jobs::enqueue(&pool, "nap", payload, 3)).unwrap();
    block_on(pool.close());
    id
}

/// The fixture cron job's row for `tick`: (instance, state).
fn cron_row(postgres: &TempPostgres, tick: i64) -> Vec<(String, String)> {
    let pool = pool(postgres);
    let rows = block_on(async {
        kumiko_runtime::on_pool!(&pool, |executor| sqlx::query_as::<_, (String, String)>(
            "SELECT instance_id, state FROM kumiko_cron_runs \
             WHERE job = 'fixture-cron' AND scheduled_for_ms = $1"
        )
        .bind(tick)
        .fetch_all(executor)
        .await)
    })
    .unwrap();
    block_on(pool.close());
    rows
}

/// The first log line of `app` that `matches`, waited for.
fn wait_for_line(
    app: &App,
    what: &str,
    matches: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(line) = app
            .json_logs()
            .into_iter()
            .find(|line| line["message"] == what && matches(line))
        {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no `{what}`:\n{}",
            app.all_output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn job_state(postgres: &TempPostgres, id: i64) -> (String, i32) {
    let pool = pool(postgres);
    let record = block_on(kumiko_runtime::jobs::job(&pool, id))
        .unwrap()
        .unwrap();
    block_on(pool.close());
    (record.state, record.attempts)
}

fn wait_for(app: &App, what: &str, job_id: i64) -> serde_json::Value {
    wait_for_line(app, what, |line| line["job_id"] == job_id)
}

#[test]
fn a_job_running_at_sigterm_is_cancelled_within_the_budget_and_retried_by_the_next_worker() {
    let postgres = TempPostgres::start().unwrap();
    let mut first = fixture_worker(&postgres, "worker-a");
    let id = enqueue_nap(&postgres, "worker-a");
    wait_for(&first, "fixture nap started", id);

    first.sigterm();
    let sent = Instant::now();
    let status = first
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no exit:\n{}", first.all_output()));
    assert_eq!(status.code(), Some(0), "{}", first.all_output());
    assert!(
        sent.elapsed() < Duration::from_secs(8),
        "exit after {:?}, beyond KUMIKO_SHUTDOWN_TIMEOUT",
        sent.elapsed()
    );
    let cancelled = wait_for(&first, "job cancelled at shutdown; queued again", id);
    assert!(
        cancelled["reason"]
            .as_str()
            .unwrap()
            .contains("woken by the shutdown"),
        "{cancelled}"
    );
    // Queued again, the cancelled attempt not counted.
    assert_eq!(job_state(&postgres, id), ("queued".to_owned(), 0));

    let second = fixture_worker(&postgres, "worker-b");
    wait_for(&second, "job succeeded", id);
    assert_eq!(job_state(&postgres, id), ("succeeded".to_owned(), 1));
}

#[test]
fn work_left_running_by_a_killed_instance_is_recovered_at_the_next_boot() {
    let postgres = TempPostgres::start().unwrap();
    let mut first = fixture_worker_with(&postgres, "worker-a", &CRON_SLOW_ON_A);
    let id = enqueue_nap(&postgres, "worker-a");
    wait_for(&first, "fixture nap started", id);
    let tick = wait_for_line(&first, "fixture cron started", |_| true)["scheduled_for_ms"]
        .as_i64()
        .unwrap();
    first.signal(Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(10)).unwrap();
    assert_eq!(job_state(&postgres, id).0, "running", "left running");
    assert_eq!(
        cron_row(&postgres, tick),
        [("worker-a".to_owned(), "running".to_owned())],
        "the cron tick is left running"
    );

    // Once the killed worker's heartbeat is older than the bound (2 × max(3 × 100 ms, 2 s)),
    // the next worker's boot recovers the job and the cron tick, and runs both.
    std::thread::sleep(Duration::from_secs(5));
    let second = fixture_worker_with(&postgres, "worker-b", &CRON_SLOW_ON_A);
    let recovered = second
        .json_logs()
        .into_iter()
        .find(|line| line["message"] == "recovered work left running by a stopped instance")
        .unwrap_or_else(|| panic!("no recovery logged:\n{}", second.all_output()));
    assert_eq!(recovered["requeued"], format!("[{id}]"), "{recovered}");
    assert_eq!(recovered["cron_runs_interrupted"], 1, "{recovered}");
    wait_for(&second, "job succeeded", id);
    let (state, attempts) = job_state(&postgres, id);
    assert_eq!(state, "succeeded");
    assert_eq!(attempts, 2, "the killed attempt counts");
    wait_for_line(&second, "fixture cron fired", |line| {
        line["scheduled_for_ms"] == tick
    });
    wait_until_succeeded(&postgres, tick, "worker-b");
}

/// Waits until the cron run of `tick` is recorded succeeded, by `instance`.
fn wait_until_succeeded(postgres: &TempPostgres, tick: i64, instance: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = cron_row(postgres, tick);
        if rows.iter().any(|(_, state)| state == "succeeded") {
            assert_eq!(rows, [(instance.to_owned(), "succeeded".to_owned())]);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "tick {tick} not completed: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_stubborn_job_at_sigterm_gets_only_what_is_left_of_the_shutdown_budget_and_is_retried() {
    let postgres = TempPostgres::start().unwrap();
    // The linger takes 12 s of the 16 s budget: the worker's stop is given the 4 s left, and the
    // job's grace is a share of that. A grace fixed at boot (a quarter of 16 s) would use all of
    // it: the watchdog would exit 1 with the job still `running`.
    let mut first = fixture_worker_with(
        &postgres,
        "worker-a",
        &[("KUMIKO_SHUTDOWN_TIMEOUT", "16s"), ("KUMIKO_LINGER", "12s")],
    );
    let id = enqueue(
        &postgres,
        &serde_json::json!({ "slow_on": "worker-a", "stubborn": true }),
    );
    wait_for(&first, "fixture nap started", id);

    first.sigterm();
    let status = first
        .wait_exit(Duration::from_secs(40))
        .unwrap_or_else(|| panic!("no exit:\n{}", first.all_output()));
    assert_eq!(status.code(), Some(0), "{}", first.all_output());
    let stopping = wait_for_line(
        &first,
        "stopping the jobs worker: running jobs get their cancellation signal",
        |_| true,
    );
    let budget_ms = stopping["budget_ms"].as_u64().unwrap();
    let grace_ms = stopping["grace_ms"].as_u64().unwrap();
    assert!(
        budget_ms <= 4000,
        "the worker's stop was given more than what the linger left: {stopping}"
    );
    assert!(grace_ms < budget_ms, "{stopping}");
    let cancelled = wait_for(&first, "job cancelled at shutdown; queued again", id);
    assert!(
        cancelled["reason"]
            .as_str()
            .unwrap()
            .contains("still running after the"),
        "{cancelled}"
    );
    assert_eq!(job_state(&postgres, id), ("queued".to_owned(), 0));

    let second = fixture_worker(&postgres, "worker-b");
    wait_for(&second, "job succeeded", id);
    assert_eq!(job_state(&postgres, id), ("succeeded".to_owned(), 1));
}

#[test]
fn a_cron_tick_cut_off_by_sigterm_is_run_again_by_the_next_worker_and_completes_once() {
    let postgres = TempPostgres::start().unwrap();
    let mut first = fixture_worker_with(&postgres, "worker-a", &CRON_SLOW_ON_A);
    let tick = wait_for_line(&first, "fixture cron started", |_| true)["scheduled_for_ms"]
        .as_i64()
        .unwrap();
    first.sigterm();
    let status = first
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no exit:\n{}", first.all_output()));
    assert_eq!(status.code(), Some(0), "{}", first.all_output());
    let interrupted = wait_for_line(
        &first,
        "cron tick interrupted by the shutdown; it runs again",
        |line| line["scheduled_for_ms"] == tick,
    );
    assert!(
        interrupted["reason"]
            .as_str()
            .unwrap()
            .contains("woken by the shutdown"),
        "{interrupted}"
    );
    assert_eq!(
        cron_row(&postgres, tick),
        [("worker-a".to_owned(), "interrupted".to_owned())]
    );

    let second = fixture_worker_with(&postgres, "worker-b", &CRON_SLOW_ON_A);
    wait_for_line(&second, "running an interrupted cron tick again", |line| {
        line["scheduled_for_ms"] == tick
    });
    wait_for_line(&second, "fixture cron fired", |line| {
        line["scheduled_for_ms"] == tick
    });
    wait_until_succeeded(&postgres, tick, "worker-b");
    let fired: usize = [&first, &second]
        .iter()
        .flat_map(|app| app.json_logs())
        .filter(|line| line["message"] == "fixture cron fired" && line["scheduled_for_ms"] == tick)
        .count();
    assert_eq!(fired, 1, "the tick completed once");
}

#[test]
fn work_of_an_instance_that_died_is_recovered_by_a_running_worker_and_a_live_ones_never() {
    let postgres = TempPostgres::start().unwrap();
    let mut first = fixture_worker_with(&postgres, "worker-a", &CRON_SLOW_ON_A);
    let id = enqueue_nap(&postgres, "worker-a");
    wait_for(&first, "fixture nap started", id);
    let tick = wait_for_line(&first, "fixture cron started", |_| true)["scheduled_for_ms"]
        .as_i64()
        .unwrap();
    // worker-a is busy for longer than the bound after which a silent worker counts as gone
    // (2 × max(3 × 100 ms, 2 s)): it still beats, from its own task, so neither the next
    // worker's boot nor its periodic recovery takes the work from it.
    std::thread::sleep(Duration::from_secs(5));
    let second = fixture_worker_with(&postgres, "worker-b", &CRON_SLOW_ON_A);
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        !second
            .json_logs()
            .iter()
            .any(|line| line["message"] == "recovered work left running by a stopped instance"),
        "a live worker's work was taken:\n{}",
        second.all_output()
    );
    assert_eq!(job_state(&postgres, id), ("running".to_owned(), 1));
    assert_eq!(
        cron_row(&postgres, tick),
        [("worker-a".to_owned(), "running".to_owned())]
    );

    // worker-a dies; worker-b, running, recovers its work once it stops beating.
    first.signal(Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(10)).unwrap();
    let recovered = wait_for_line(
        &second,
        "recovered work left running by a stopped instance",
        |_| true,
    );
    assert_eq!(recovered["requeued"], format!("[{id}]"), "{recovered}");
    assert_eq!(recovered["cron_runs_interrupted"], 1, "{recovered}");
    wait_for(&second, "job succeeded", id);
    assert_eq!(job_state(&postgres, id), ("succeeded".to_owned(), 2));
    wait_for_line(&second, "fixture cron fired", |line| {
        line["scheduled_for_ms"] == tick
    });
    wait_until_succeeded(&postgres, tick, "worker-b");
}
