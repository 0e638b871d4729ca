//! The jobs worker and leader election, measured from outside: real `kumiko-app worker`
//! processes, a real redis-server (or two), one real Postgres, SIGKILL for a crashed leader.
//!
//! Every worker runs the uptime roll-up every second. `kumiko_cron_runs` (keyed by `(job,
//! scheduled_for)`) shows who ran each tick; `uptime_rollups` has no unique key, so a tick run
//! twice would show up there as two rows.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

mod data_process;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use data_process::{Database, Proc, block_on, http_get, run, spawn};
use kumiko_runtime::leader::{DEFAULT_RENEW_INTERVAL, DEFAULT_TTL};
use kumiko_testkit::TempRedis;

const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn migrated_database() -> Database {
    let database = Database::start();
    let (code, stdout, stderr) = run(
        &["migrate", "apply"],
        &[("DATABASE_URL", database.url.clone())],
        READY_TIMEOUT,
    );
    assert_eq!(code, 0, "migrate apply:\n{stdout}\n{stderr}");
    database
}

fn worker(database: &Database, redis: &TempRedis, instance: &str) -> Proc {
    let mut process = spawn(
        &["worker"],
        &[
            ("DATABASE_URL", database.url.clone()),
            ("REDIS_URL", redis.url()),
            ("KUMIKO_INSTANCE_ID", instance.to_owned()),
            ("KUMIKO_UPTIME_ROLLUP_INTERVAL", "1s".to_owned()),
            ("KUMIKO_JOBS_POLL_INTERVAL", "100ms".to_owned()),
            ("KUMIKO_LINGER", "0s".to_owned()),
        ],
    );
    process.wait_ready(READY_TIMEOUT);
    process
}

/// `(scheduled_for_ms, instance_id)` of every roll-up tick claimed, in order.
fn kumiko_cron_runs(database: &Database) -> Vec<(i64, String)> {
    block_on(async {
        let mut connection = database.connect().await;
        sqlx::query_as(
            "SELECT scheduled_for_ms, instance_id FROM kumiko_cron_runs \
             WHERE job = 'uptime-rollup' ORDER BY scheduled_for_ms",
        )
        .fetch_all(&mut connection)
        .await
        .expect("read kumiko_cron_runs")
    })
}

/// How many times each tick's roll-up ran (from the audit table without a unique key).
fn executions_per_tick(database: &Database) -> BTreeMap<i64, i64> {
    let rows: Vec<(i64, i64)> = block_on(async {
        let mut connection = database.connect().await;
        sqlx::query_as(
            "SELECT scheduled_for_ms, count(*) FROM uptime_rollups GROUP BY scheduled_for_ms",
        )
        .fetch_all(&mut connection)
        .await
        .expect("read uptime_rollups")
    });
    rows.into_iter().collect()
}

/// No tick's roll-up ran twice.
fn assert_no_tick_ran_twice(database: &Database) -> BTreeMap<i64, i64> {
    let executions = executions_per_tick(database);
    assert!(!executions.is_empty(), "no tick ran");
    let twice: Vec<_> = executions
        .iter()
        .filter(|(_, count)| **count != 1)
        .collect();
    assert!(twice.is_empty(), "ticks run more than once: {twice:?}");
    executions
}

/// `(scheduled_for_ms, state)` of every roll-up tick claimed, in order.
fn claimed_ticks(database: &Database) -> Vec<(i64, String)> {
    block_on(async {
        let mut connection = database.connect().await;
        sqlx::query_as(
            "SELECT scheduled_for_ms, state FROM kumiko_cron_runs \
             WHERE job = 'uptime-rollup' ORDER BY scheduled_for_ms",
        )
        .fetch_all(&mut connection)
        .await
        .expect("read kumiko_cron_runs")
    })
}

/// Once every worker has stopped gracefully: no tick ran twice, no roll-up ran for a tick nobody
/// claimed, and every claimed tick either ran once (`succeeded`) or was cut off by the shutdown
/// (`interrupted`: not run, the next leader runs it again); none is left `running` or `failed`.
///
/// Only after the stop: while workers run, the last claimed tick may still be running (claimed
/// before its roll-up commits), so "claimed == ran" is no invariant of a live system.
fn assert_each_claimed_tick_ran_once_or_awaits_its_rerun(database: &Database) {
    let executions = assert_no_tick_ran_twice(database);
    let claimed = claimed_ticks(database);
    let unclaimed: Vec<&i64> = executions
        .keys()
        .filter(|tick| !claimed.iter().any(|(claimed, _)| claimed == *tick))
        .collect();
    assert!(
        unclaimed.is_empty(),
        "roll-ups of unclaimed ticks: {unclaimed:?}"
    );
    for (tick, state) in &claimed {
        let ran = executions.get(tick).copied().unwrap_or(0);
        match state.as_str() {
            "succeeded" => assert_eq!(ran, 1, "tick {tick} succeeded: {claimed:?}"),
            "interrupted" => assert_eq!(ran, 0, "tick {tick} awaits its re-run: {claimed:?}"),
            other => panic!("tick {tick} left {other} after a graceful stop: {claimed:?}"),
        }
    }
}

fn wait_for_runs(database: &Database, at_least: usize, timeout: Duration) -> Vec<(i64, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        let runs = kumiko_cron_runs(database);
        if runs.len() >= at_least {
            return runs;
        }
        assert!(
            Instant::now() < deadline,
            "only {} ticks ran: {runs:?}",
            runs.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `scheduler-leader` check's message in `/health/ready`.
fn leadership(process: &Proc) -> String {
    let (status, body) = http_get(process.port, "/health/ready").expect("readiness answers");
    assert_eq!(status, 200, "a follower is ready too: {body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
    body["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|check| check["name"] == "scheduler-leader")
        .map(|check| check["message"].as_str().unwrap_or_default().to_owned())
        .expect("a scheduler-leader check")
}

/// Waits (at most a few check intervals) until the cached `scheduler-leader` check says
/// `expected`; returns what it said last.
fn settled_leadership(process: &Proc, expected: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let message = leadership(process);
        if message == expected || Instant::now() >= deadline {
            return message;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_workers_on_one_redis_exactly_one_runs_the_cron_job() {
    let database = migrated_database();
    let redis = TempRedis::start().unwrap();
    let mut a = worker(&database, &redis, "worker-a");
    let mut b = worker(&database, &redis, "worker-b");

    let runs = wait_for_runs(&database, 5, Duration::from_secs(30));
    let instances: std::collections::BTreeSet<&str> =
        runs.iter().map(|(_, instance)| instance.as_str()).collect();
    assert_eq!(instances.len(), 1, "one leader ran every tick: {runs:?}");

    let (leader, follower) = if instances.contains("worker-a") {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!(settled_leadership(leader, "leader"), "leader");
    assert_eq!(settled_leadership(follower, "follower"), "follower");

    assert_eq!(
        b.terminate(Duration::from_secs(30)).and_then(|s| s.code()),
        Some(0)
    );
    assert_eq!(
        a.terminate(Duration::from_secs(30)).and_then(|s| s.code()),
        Some(0)
    );
    assert_each_claimed_tick_ran_once_or_awaits_its_rerun(&database);
}

#[test]
fn killed_leader_is_replaced_within_ttl_plus_renew_interval() {
    let database = migrated_database();
    let redis = TempRedis::start().unwrap();
    let a = worker(&database, &redis, "worker-a");
    let b = worker(&database, &redis, "worker-b");
    let runs = wait_for_runs(&database, 2, Duration::from_secs(30));
    let leader_name = runs[0].1.clone();
    let (mut leader, mut follower, follower_name) = if leader_name == "worker-a" {
        (a, b, "worker-b")
    } else {
        (b, a, "worker-a")
    };

    leader.kill();
    let killed = Instant::now();
    let killed_ms = jiff::Timestamp::now().as_millisecond();
    let bound = DEFAULT_TTL + DEFAULT_RENEW_INTERVAL;
    // The bound, plus one tick of the 1 s schedule and a margin for a loaded machine.
    let deadline = killed + bound + Duration::from_secs(5);
    let taken_over = loop {
        let runs = kumiko_cron_runs(&database);
        if let Some((tick, _)) = runs
            .iter()
            .find(|(tick, instance)| instance == follower_name && *tick > killed_ms)
        {
            break *tick;
        }
        assert!(
            Instant::now() < deadline,
            "no takeover within {bound:?} (+ tick): {runs:?}\n{}",
            follower.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let acquired = follower
        .wait_for_log("acquired scheduler leadership", Duration::from_secs(1))
        .expect("the follower logs its takeover");
    assert!(acquired["level"] == "INFO", "{acquired}");
    assert!(
        taken_over - killed_ms
            <= i64::try_from((bound + Duration::from_secs(2)).as_millis()).unwrap(),
        "first tick of the new leader {} ms after the kill",
        taken_over - killed_ms
    );
    eprintln!(
        "the follower's first tick came {} ms after the leader was killed",
        taken_over - killed_ms
    );
    assert_eq!(settled_leadership(&follower, "leader"), "leader");
    // The killed leader may have died between claiming a tick and running it: that tick is lost
    // (at most once), never run twice.
    assert_no_tick_ran_twice(&database);
    assert_eq!(
        follower
            .terminate(Duration::from_secs(30))
            .and_then(|s| s.code()),
        Some(0)
    );
}

#[test]
fn forced_split_brain_on_two_redis_servers_still_runs_each_tick_once() {
    let database = migrated_database();
    // Two leaders for sure: each worker has a Redis of its own, the database is shared.
    let redis_a = TempRedis::start().unwrap();
    let redis_b = TempRedis::start().unwrap();
    let mut a = worker(&database, &redis_a, "worker-a");
    let mut b = worker(&database, &redis_b, "worker-b");
    let both_up_ms = jiff::Timestamp::now().as_millisecond();

    let runs = wait_for_runs(&database, 6, Duration::from_secs(30));
    assert_eq!(settled_leadership(&a, "leader"), "leader");
    assert_eq!(settled_leadership(&b, "leader"), "leader");
    // Both leaders went for every tick once both were up: the loser logged its skip (waited
    // for: the loser's claim may come a moment after the winner's run was recorded).
    let skipped = || -> std::collections::BTreeSet<i64> {
        [&a, &b]
            .iter()
            .flat_map(|process| process.json_logs())
            .filter(|record| {
                record["message"] == "tick already claimed by another process; skipping"
            })
            .filter_map(|record| record["scheduled_for_ms"].as_i64())
            .collect()
    };
    let contested: Vec<i64> = runs
        .iter()
        .map(|(tick, _)| *tick)
        .filter(|tick| *tick > both_up_ms + 1000)
        .collect();
    assert!(!contested.is_empty(), "{runs:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for tick in &contested {
        while !skipped().contains(tick) {
            assert!(
                std::time::Instant::now() < deadline,
                "tick {tick} was not contested; skips: {:?}",
                skipped()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert_eq!(
        a.terminate(Duration::from_secs(30)).and_then(|s| s.code()),
        Some(0)
    );
    assert_eq!(
        b.terminate(Duration::from_secs(30)).and_then(|s| s.code()),
        Some(0)
    );
    assert_each_claimed_tick_ran_once_or_awaits_its_rerun(&database);
}

#[test]
fn leader_key_deleted_by_hand_still_runs_each_tick_once() {
    let database = migrated_database();
    let redis = TempRedis::start().unwrap();
    let mut a = worker(&database, &redis, "worker-a");
    let mut b = worker(&database, &redis, "worker-b");
    wait_for_runs(&database, 2, Duration::from_secs(30));

    // Split brain by hand: the follower can take the key while the old leader still believes
    // it leads, until its next renewal finds the key gone or someone else's.
    block_on(async {
        let client = redis::Client::open(redis.url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let _: i64 = redis::cmd("DEL")
            .arg(kumiko_runtime::leader::DEFAULT_KEY)
            .query_async(&mut connection)
            .await
            .unwrap();
    });
    let before = kumiko_cron_runs(&database).len();
    wait_for_runs(
        &database,
        before + 2 * usize::try_from(DEFAULT_RENEW_INTERVAL.as_secs()).unwrap(),
        Duration::from_secs(30),
    );
    let leaders = [leadership(&a), leadership(&b)];
    assert_eq!(
        leaders
            .iter()
            .filter(|message| *message == "leader")
            .count(),
        1,
        "one leader again after a renew interval: {leaders:?}"
    );
    assert_eq!(
        a.terminate(Duration::from_secs(30)).and_then(|s| s.code()),
        Some(0)
    );
    assert_eq!(
        b.terminate(Duration::from_secs(30)).and_then(|s| s.code()),
        Some(0)
    );
    assert_each_claimed_tick_ran_once_or_awaits_its_rerun(&database);
}

#[test]
fn follower_runs_queued_jobs_but_no_cron_ticks() {
    let database = migrated_database();
    let redis = TempRedis::start().unwrap();
    // Someone else holds the leader key for the whole test: this worker stays a follower.
    block_on(async {
        let client = redis::Client::open(redis.url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("SET")
            .arg(kumiko_runtime::leader::DEFAULT_KEY)
            .arg("another-process:token")
            .arg("PX")
            .arg(600_000)
            .query_async(&mut connection)
            .await
            .unwrap();
    });
    let mut follower = worker(&database, &redis, "worker-f");
    assert_eq!(settled_leadership(&follower, "follower"), "follower");

    // What the API does for `POST /api/components/{id}/uptime/recompute`.
    let target = database.target();
    let job_id = block_on(async {
        let pool = kumiko_runtime::db::Pool::connect(&target, Default::default())
            .await
            .unwrap();
        let kumiko_runtime::db::Pool::Postgres(postgres) = &pool else {
            unreachable!("DATABASE_URL is Postgres");
        };
        let component_id: i64 = sqlx::query_scalar(
            "INSERT INTO components (name, created_at_ms, updated_at_ms) VALUES ('API', 0, 0) \
             RETURNING id",
        )
        .fetch_one(postgres)
        .await
        .unwrap();
        let job_id = kumiko_runtime::jobs::enqueue(
            &pool,
            "uptime-recompute",
            &serde_json::json!({ "component_id": component_id }),
            3,
        )
        .await
        .unwrap();
        pool.close().await;
        job_id
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        if let Some(record) = follower
            .json_logs()
            .into_iter()
            .find(|record| record["message"] == "job succeeded" && record["job_id"] == job_id)
        {
            break record;
        }
        assert!(
            Instant::now() < deadline,
            "the job did not run:\n{}",
            follower.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(done["kind"], "uptime-recompute");
    // Two seconds of 1 s ticks went by; the follower ran none of them.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        kumiko_cron_runs(&database).is_empty(),
        "{:?}",
        kumiko_cron_runs(&database)
    );
    assert_eq!(
        follower
            .terminate(Duration::from_secs(30))
            .and_then(|s| s.code()),
        Some(0)
    );
}
