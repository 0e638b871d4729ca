//! Queued jobs across worker restarts, measured from outside: workers of the lifecycle fixture
//! (`examples/lifecycle_fixture.rs`) on one Postgres. A job running at SIGTERM gets its
//! cancellation signal, is queued again within the shutdown budget and finished by the next
//! worker; a job left running by a killed worker is recovered when the next worker boots.

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
    let mut app = example("lifecycle_fixture", &["worker"])
        .env("DATABASE_URL", postgres.superuser_url("postgres"))
        .env("KUMIKO_MIGRATIONS_MODE", "apply")
        .env("KUMIKO_INSTANCE_ID", instance)
        .env("KUMIKO_LINGER", "0s")
        .env("KUMIKO_SHUTDOWN_TIMEOUT", "8s")
        .env("KUMIKO_JOBS_POLL_INTERVAL", "100ms")
        // Far beyond the test: only the shutdown path or the boot-time recovery can free the job.
        .env("KUMIKO_JOB_TIMEOUT", "10m")
        .spawn();
    app.wait_ready(BOOT);
    app
}

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
    let pool = pool(postgres);
    let id = block_on(kumiko_runtime::jobs::enqueue(
        &pool,
        "nap",
        &serde_json::json!({ "slow_on": slow_on }),
        3,
    ))
    .unwrap();
    block_on(pool.close());
    id
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
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(line) = app
            .json_logs()
            .into_iter()
            .find(|line| line["message"] == what && line["job_id"] == job_id)
        {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no `{what}` for job {job_id}:\n{}",
            app.all_output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
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
    let mut first = fixture_worker(&postgres, "worker-a");
    let id = enqueue_nap(&postgres, "worker-a");
    wait_for(&first, "fixture nap started", id);
    first.signal(Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(10)).unwrap();
    assert_eq!(job_state(&postgres, id).0, "running", "left running");

    // Once the killed worker's heartbeat is older than the bound (2 × max(3 × 100 ms, 2 s)),
    // the next worker's boot recovers the job and runs it.
    std::thread::sleep(Duration::from_secs(5));
    let second = fixture_worker(&postgres, "worker-b");
    let recovered = second
        .json_logs()
        .into_iter()
        .find(|line| line["message"] == "recovered work left running by a stopped instance")
        .unwrap_or_else(|| panic!("no recovery logged:\n{}", second.all_output()));
    assert_eq!(recovered["requeued"], format!("[{id}]"), "{recovered}");
    wait_for(&second, "job succeeded", id);
    let (state, attempts) = job_state(&postgres, id);
    assert_eq!(state, "succeeded");
    assert_eq!(attempts, 2, "the killed attempt counts");
}
