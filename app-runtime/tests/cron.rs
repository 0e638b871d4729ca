//! Cron expressions, measured from outside: two workers of the lifecycle fixture
//! (`examples/lifecycle_fixture.rs`) on one Postgres and one Redis, a short schedule in a time
//! zone; every scheduled time fires once, on its scheduled second, across both.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

mod app_process;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use app_process::{App, example};
use kumiko_testkit::{TempPostgres, TempRedis};

const BOOT: Duration = Duration::from_secs(60);

fn fixture_worker(postgres: &TempPostgres, redis: &TempRedis, instance: &str) -> App {
    let mut app = example("lifecycle_fixture", &["worker"])
        .env("DATABASE_URL", postgres.superuser_url("postgres"))
        .env("REDIS_URL", redis.url())
        .env("KUMIKO_MIGRATIONS_MODE", "apply")
        .env("KUMIKO_INSTANCE_ID", instance)
        .env("KUMIKO_LINGER", "0s")
        .env("KUMIKO_FIXTURE_CRON", "*/2 * * * * *")
        .env("KUMIKO_FIXTURE_CRON_TZ", "Europe/Berlin")
        .spawn();
    app.wait_ready(BOOT);
    app
}

/// `scheduled_for_ms` of every `fixture cron fired` line, with how often it was seen.
fn fired(apps: &[&App]) -> BTreeMap<i64, usize> {
    let mut fired = BTreeMap::new();
    for app in apps {
        for line in app.json_logs() {
            if line["message"] == "fixture cron fired" {
                *fired
                    .entry(line["scheduled_for_ms"].as_i64().unwrap())
                    .or_default() += 1;
            }
        }
    }
    fired
}

#[test]
fn a_cron_expression_fires_at_its_scheduled_time_exactly_once_across_two_workers_on_one_redis() {
    let postgres = TempPostgres::start().unwrap();
    let redis = TempRedis::start().unwrap();
    let a = fixture_worker(&postgres, &redis, "worker-a");
    let b = fixture_worker(&postgres, &redis, "worker-b");
    let deadline = Instant::now() + Duration::from_secs(40);
    while fired(&[&a, &b]).len() < 4 {
        assert!(
            Instant::now() < deadline,
            "too few ticks:\n{}\n---\n{}",
            a.all_output(),
            b.all_output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let fired = fired(&[&a, &b]);
    // Every scheduled time between the first and the last fired: none skipped.
    let ticks: Vec<i64> = fired.keys().copied().collect();
    for pair in ticks.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            2000,
            "a scheduled time was skipped: {ticks:?}"
        );
    }
    for (tick, count) in &fired {
        assert_eq!(*count, 1, "tick {tick} ran {count} times: {fired:?}");
        assert_eq!(
            tick % 2000,
            0,
            "tick {tick} is not on the schedule's second"
        );
    }
    // Each run started at (not before) its scheduled time: the log line comes after the tick.
    for app in [&a, &b] {
        for line in app.json_logs() {
            if line["message"] == "fixture cron fired" {
                let tick = line["scheduled_for_ms"].as_i64().unwrap();
                let logged: jiff::Timestamp = line["timestamp"].as_str().unwrap().parse().unwrap();
                assert!(logged.as_millisecond() >= tick, "{line}");
            }
        }
    }
    for mut app in [a, b] {
        app.sigterm();
        assert_eq!(
            app.wait_exit(Duration::from_secs(20)).unwrap().code(),
            Some(0),
            "{}",
            app.all_output()
        );
    }
}
