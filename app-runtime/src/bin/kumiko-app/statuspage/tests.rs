//! The status page against real databases: a migrated SQLite file and a throwaway Postgres.

use std::time::Duration;

use super::uptime::{RECOMPUTE_KIND, roll_up};
use super::*;
use kumiko_runtime::config::{DatabaseTarget, SecretUrl};
use kumiko_runtime::db::{Pool, PoolOptions};
use kumiko_runtime::error::Error;
use kumiko_runtime::jobs::{JobsWorker, WorkerConfig};
use kumiko_runtime::leader::LeaderElection;

struct Pools {
    _dir: tempfile::TempDir,
    _postgres: kumiko_testkit::TempPostgres,
    pools: Vec<Pool>,
}

async fn pools() -> Pools {
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
        kumiko_runtime::migrations::apply_sets(
            target,
            &crate::app::Release::First.migrations().sets(target),
        )
        .await
        .unwrap();
        pools.push(Pool::connect(target, PoolOptions::default()).await.unwrap());
    }
    Pools {
        _dir: dir,
        _postgres: postgres,
        pools,
    }
}

fn component(name: &str) -> NewComponent {
    NewComponent {
        name: name.to_owned(),
        description: Some(format!("The {name}")),
    }
}

fn status(value: &str) -> StatusChange {
    StatusChange {
        status: value.to_owned(),
    }
}

#[tokio::test]
async fn components_and_incidents_round_trip_on_both_backends() {
    let pools = pools().await;
    for pool in &pools.pools {
        let api = create_component(pool, &component("API")).await.unwrap();
        let web = create_component(pool, &component("Web")).await.unwrap();
        assert_eq!(api.status, ComponentStatus::Operational);

        let duplicate = create_component(pool, &component("API")).await.unwrap_err();
        assert!(
            matches!(&duplicate, Error::Invalid(errors) if errors[0].field == "name"),
            "{duplicate:?}"
        );

        let changed = set_component_status(pool, web.id, &status("partial_outage"))
            .await
            .unwrap();
        assert_eq!(changed.status, ComponentStatus::PartialOutage);
        let missing = set_component_status(pool, 9999, &status("degraded"))
            .await
            .unwrap_err();
        assert!(matches!(
            missing,
            Error::NotFound {
                what: "component",
                id: 9999
            }
        ));

        let no_such_component = create_incident(
            pool,
            &NewIncident {
                title: "Outage".to_owned(),
                message: None,
                impact: "major".to_owned(),
                component_id: Some(9999),
            },
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&no_such_component, Error::Invalid(errors) if errors[0].field == "component_id"),
            "{no_such_component:?}"
        );

        let incident = create_incident(
            pool,
            &NewIncident {
                title: "Web is slow".to_owned(),
                message: Some("Investigating".to_owned()),
                impact: "major".to_owned(),
                component_id: Some(web.id),
            },
        )
        .await
        .unwrap();
        assert_eq!(incident.state, "investigating");

        let summary = status_summary(pool).await.unwrap();
        assert_eq!(summary.overall, ComponentStatus::PartialOutage);
        assert_eq!(
            summary
                .components
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["API", "Web"]
        );
        assert_eq!(summary.open_incidents, vec![incident.clone()]);

        let resolved = resolve_incident(pool, incident.id).await.unwrap();
        assert_eq!(resolved.state, "resolved");
        assert!(resolved.resolved_at_ms.is_some());
        let again = resolve_incident(pool, incident.id).await.unwrap();
        assert_eq!(
            again.resolved_at_ms, resolved.resolved_at_ms,
            "resolving is idempotent"
        );
        assert!(list_incidents(pool, true).await.unwrap().is_empty());
        assert_eq!(list_incidents(pool, false).await.unwrap().len(), 1);
        assert_eq!(get_component(pool, api.id).await.unwrap(), api);
    }
}

#[tokio::test]
async fn rollup_samples_every_component_and_computes_the_uptime() {
    let pools = pools().await;
    let window = 60_000;
    for pool in &pools.pools {
        let api = create_component(pool, &component("API")).await.unwrap();
        let web = create_component(pool, &component("Web")).await.unwrap();
        set_component_status(pool, web.id, &status("major_outage"))
            .await
            .unwrap();

        let base = kumiko_runtime::query::epoch_ms();
        let first = roll_up(pool, base, window, "test").await.unwrap();
        assert_eq!(first.samples, 2);
        assert_eq!(first.components, 2);
        set_component_status(pool, web.id, &status("degraded"))
            .await
            .unwrap();
        roll_up(pool, base + 1000, window, "test").await.unwrap();
        roll_up(pool, base + 2000, window, "test").await.unwrap();
        // The same tick again writes no new sample.
        let repeat = roll_up(pool, base + 2000, window, "test").await.unwrap();
        assert_eq!(repeat.samples, 0);

        let uptime = list_uptime(pool).await.unwrap();
        let by_name = |name: &str| {
            uptime
                .iter()
                .find(|u| u.component_name == name)
                .unwrap()
                .clone()
        };
        assert_eq!(
            (by_name("API").samples_up, by_name("API").samples_total),
            (3, 3)
        );
        assert_eq!(by_name("API").ratio, Some(1.0));
        assert_eq!(
            (by_name("Web").samples_up, by_name("Web").samples_total),
            (2, 3)
        );
        assert_eq!(by_name("API").component_id, api.id);

        // Samples older than the window are pruned and no longer count.
        roll_up(pool, base + window + 1500, window, "test")
            .await
            .unwrap();
        let web_now = list_uptime(pool)
            .await
            .unwrap()
            .into_iter()
            .find(|u| u.component_id == web.id)
            .unwrap();
        assert_eq!((web_now.samples_up, web_now.samples_total), (2, 2));
    }
}

#[tokio::test]
async fn requested_recompute_runs_as_a_queued_job_on_a_worker() {
    let pools = pools().await;
    for pool in &pools.pools {
        let api = create_component(pool, &component("API")).await.unwrap();
        assert!(list_uptime(pool).await.unwrap().is_empty());
        let missing = request_recompute(pool, 9999).await.unwrap_err();
        assert!(matches!(
            missing,
            Error::NotFound {
                what: "component",
                ..
            }
        ));

        let job_id = request_recompute(pool, api.id).await.unwrap();
        let queued = kumiko_runtime::jobs::job(pool, job_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(queued.kind, RECOMPUTE_KIND);
        assert_eq!(queued.state, "queued");

        // The roll-up ticks hourly, so only the queued job touches the figures here.
        let worker = JobsWorker::start(
            pool.clone(),
            LeaderElection::standalone().handle(),
            job_registry(Duration::from_secs(3600), Duration::from_secs(3600)),
            WorkerConfig {
                poll_interval: Duration::from_millis(50),
                ..WorkerConfig::new("test")
            },
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let job = kumiko_runtime::jobs::job(pool, job_id)
                .await
                .unwrap()
                .unwrap();
            if job.state == "succeeded" {
                break;
            }
            assert!(job.state != "failed", "{job:?}");
            assert!(tokio::time::Instant::now() < deadline, "{job:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        worker.stop(Duration::from_secs(5)).await;
        let uptime = list_uptime(pool).await.unwrap();
        assert_eq!(uptime.len(), 1);
        assert_eq!(uptime[0].component_id, api.id);
        assert_eq!(uptime[0].ratio, None, "no samples yet");
    }
}
