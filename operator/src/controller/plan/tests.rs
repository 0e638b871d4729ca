//! The rules of the ordered rollout, one table test each, on the pure [`plan`].

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStatus};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kumiko_crds::KumikoApp;

use super::*;
use crate::cnpg::{Cluster, ClusterSpec, ClusterStorage};
use crate::desired::{MIGRATION_IMAGE_ANNOTATION, ProcessObjects, Route};
use crate::gateway_api::{HTTPRoute, HttpRouteStatus, ParentReference, RouteParentStatus};
use crate::validate::ValidatedApp;

const IMAGE: &str = "ghcr.io/acme/shop:2.0.0";
const OLD_IMAGE: &str = "ghcr.io/acme/shop:1.0.0";

fn at(second: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + second).expect("in range"))
}

/// The app `shop` in namespace `shop` (generation 1, created at second 100, with the operator's
/// finalizer), with `spec` merged over an image, a worker and a dedicated cluster.
fn app_with(spec: serde_json::Value) -> KumikoApp {
    let mut base = serde_json::json!({
        "image": IMAGE,
        "worker": {"replicas": 1},
        "database": {"cluster": {"storage": {"size": "1Gi"}}}
    });
    if let (Some(base), Some(extra)) = (base.as_object_mut(), spec.as_object()) {
        for (key, value) in extra {
            base.insert(key.clone(), value.clone());
        }
    }
    let mut app: KumikoApp = serde_json::from_value(serde_json::json!({
        "apiVersion": "kumiko.so/v1alpha1",
        "kind": "KumikoApp",
        "metadata": {
            "name": "shop", "namespace": "shop", "uid": "6f1c2a52-0000-4000-8000-000000000001",
            "generation": 1, "finalizers": [FINALIZER]
        },
        "spec": base
    }))
    .expect("test app parses");
    app.metadata.creation_timestamp = Some(at(100));
    app
}

fn app() -> KumikoApp {
    app_with(serde_json::json!({}))
}

fn validated(app: &KumikoApp) -> ValidatedApp<'_> {
    ValidatedApp::new(app).expect("test app is valid")
}

fn secret(password: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("password".to_owned(), password.to_owned()),
        ("username".to_owned(), "shop".to_owned()),
    ])
}

/// The database is ready and both credential Secrets exist.
fn ready_world() -> World {
    World {
        database_ready: true,
        database_message: "the database is reachable".to_owned(),
        admin_secret: Some(secret("admin-pass-1")),
        owner_secret: Some(secret("owner-pass-1")),
        runtime_secret: Some(secret("runtime-pass-1")),
        ..World::default()
    }
}

fn job(name: &str, image: &str, outcome: Option<&str>, created: i64) -> Job {
    let mut job = Job::default();
    job.metadata.name = Some(name.to_owned());
    job.metadata.creation_timestamp = Some(at(created));
    job.metadata.annotations = Some(BTreeMap::from([(
        MIGRATION_IMAGE_ANNOTATION.to_owned(),
        image.to_owned(),
    )]));
    job.status = outcome.map(|kind| JobStatus {
        conditions: Some(vec![JobCondition {
            type_: kind.to_owned(),
            status: "True".to_owned(),
            reason: Some("BackoffLimitExceeded".to_owned()),
            message: Some("Job has reached the specified backoff limit".to_owned()),
            ..JobCondition::default()
        }]),
        ..JobStatus::default()
    });
    job
}

fn deployment(image: &str, replicas: i32, available: i32) -> Deployment {
    Deployment {
        metadata: kube::api::ObjectMeta {
            generation: Some(1),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            template: PodTemplateSpec {
                metadata: None,
                spec: Some(PodSpec {
                    containers: vec![Container {
                        image: Some(image.to_owned()),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: Some(DeploymentStatus {
            observed_generation: Some(1),
            replicas: Some(replicas),
            ready_replicas: Some(available),
            updated_replicas: Some(available),
            available_replicas: Some(available),
            ..DeploymentStatus::default()
        }),
    }
}

/// The previous status after the roles were confirmed for this generation.
fn roles_confirmed(app: &KumikoApp) -> KumikoAppStatus {
    let mut progress = Progress::unknown(app.metadata.generation);
    progress.database = Check::done("Reachable", "the database is reachable");
    progress.roles = Check::done("Provisioned", "owner and runtime roles are in place");
    compute_status(None, &progress, &at(0))
}

fn job_name(app: &KumikoApp) -> String {
    validated(app).names.migrate_job
}

fn api_image(plan: &Plan) -> Option<String> {
    plan.apply
        .as_ref()
        .and_then(|children| children.api.as_ref())
        .and_then(|api| running_image(Some(&api.deployment)))
}

fn reasons(plan: &Plan) -> Vec<&'static str> {
    plan.events.iter().map(|event| event.reason).collect()
}

#[test]
fn budget_and_database_come_first_and_nothing_follows_until_the_database_is_ready() {
    let app = app();
    let world = World {
        database_message: "waiting for CNPG Cluster shop-db to be Ready".to_owned(),
        ..World::default()
    };
    let plan = plan(&validated(&app), &world, None, &at(200));
    let children = plan.apply.as_ref().expect("not paused: children to apply");
    assert_eq!(
        children.resource_quota.metadata.name.as_deref(),
        Some("shop-budget")
    );
    assert_eq!(
        children
            .database_cluster
            .as_ref()
            .and_then(|c| c.metadata.name.as_deref()),
        Some("shop-db")
    );
    assert!(children.migrate_job.is_none() && children.api.is_none() && children.worker.is_none());
    assert_eq!(plan.roles, None);
    assert_eq!(plan.progress.database.status, "False");
    assert_eq!(plan.progress.roles.status, "Unknown");
    assert_eq!(plan.progress.migrated.status, "Unknown");
}

#[test]
fn roles_follow_the_ready_database_and_the_plan_ends_there() {
    let app = app();
    let world = World {
        owner_secret: None,
        runtime_secret: None,
        ..ready_world()
    };
    let plan = plan(&validated(&app), &world, None, &at(200));
    assert_eq!(
        plan.roles,
        Some(RolesAction {
            rotate_runtime: false
        })
    );
    let children = plan.apply.as_ref().expect("children");
    assert!(children.database_cluster.is_some());
    assert!(children.migrate_job.is_none() && children.api.is_none());
    assert_eq!(plan.progress.database.status, "True");
    assert_eq!(
        plan.progress.roles.status, "Unknown",
        "the roles are judged once they ran"
    );
}

#[test]
fn with_the_roles_ensured_the_migrate_job_follows_in_the_same_reconcile() {
    let app = app();
    let world = World {
        roles_ensured: true,
        ..ready_world()
    };
    let plan = plan(&validated(&app), &world, None, &at(200));
    assert_eq!(plan.roles, None);
    let children = plan.apply.as_ref().expect("children");
    let job = children.migrate_job.as_ref().expect("the migrate Job");
    assert_eq!(job.metadata.name.as_deref(), Some(job_name(&app).as_str()));
    assert!(
        children.api.is_none() && children.worker.is_none(),
        "no Deployment before an image is migrated"
    );
    assert_eq!(reasons(&plan), vec!["MigrationStarted"]);
    assert_eq!(plan.progress.roles.status, "True");
    assert_eq!(plan.progress.migrated.reason, "Running");
    assert_eq!(
        plan.progress.migration_job.as_deref(),
        Some(job_name(&app).as_str())
    );
}

#[test]
fn roles_confirmed_for_this_generation_are_not_asked_again() {
    let app = app();
    let previous = roles_confirmed(&app);
    let plan = plan(&validated(&app), &ready_world(), Some(&previous), &at(200));
    assert_eq!(plan.roles, None);
    assert_eq!(plan.progress.roles.status, "True");
    // A new generation, a drifted Secret, a missing Secret: asked again.
    let mut changed = app.clone();
    changed.metadata.generation = Some(2);
    let plan_changed = super::plan(
        &validated(&changed),
        &ready_world(),
        Some(&previous),
        &at(200),
    );
    assert!(plan_changed.roles.is_some(), "new generation");
    let drifted = World {
        secrets_drifted: true,
        ..ready_world()
    };
    assert!(
        super::plan(&validated(&app), &drifted, Some(&previous), &at(200))
            .roles
            .is_some(),
        "drifted Secret"
    );
    let missing = World {
        runtime_secret: None,
        ..ready_world()
    };
    assert!(
        super::plan(&validated(&app), &missing, Some(&previous), &at(200))
            .roles
            .is_some(),
        "missing Secret"
    );
}

#[test]
fn a_rotation_rotates_once_reports_it_and_records_the_value() {
    let mut app = app();
    app.metadata.annotations = Some(BTreeMap::from([(
        ROTATE_ANNOTATION.to_owned(),
        "2026-01".to_owned(),
    )]));
    let previous = roles_confirmed(&app);
    let first = plan(&validated(&app), &ready_world(), Some(&previous), &at(200));
    assert_eq!(
        first.roles,
        Some(RolesAction {
            rotate_runtime: true
        })
    );
    assert_eq!(reasons(&first), vec!["CredentialsRotated"]);
    let after = World {
        roles_ensured: true,
        runtime_secret: Some(secret("runtime-pass-2")),
        ..ready_world()
    };
    let second = plan(&validated(&app), &after, Some(&previous), &at(200)).after(&first);
    assert_eq!(second.roles, None);
    assert!(
        !reasons(&second).contains(&"CredentialsRotated"),
        "recorded once"
    );
    assert_eq!(
        second.progress.rotated_credentials_for.as_deref(),
        Some("2026-01")
    );
    // The next reconcile finds the value recorded: nothing to rotate.
    let recorded = second.status.clone();
    assert_eq!(
        plan(&validated(&app), &ready_world(), Some(&recorded), &at(300)).roles,
        None
    );
}

use crate::desired::ROTATE_CREDENTIALS_ANNOTATION as ROTATE_ANNOTATION;

#[test]
fn one_job_per_image_hash_and_a_running_job_is_not_applied_again() {
    let app = app();
    let name = job_name(&app);
    let world = World {
        jobs: vec![job(&name, IMAGE, None, 150)],
        ..ready_world()
    };
    let previous = roles_confirmed(&app);
    let plan = plan(&validated(&app), &world, Some(&previous), &at(200));
    let children = plan.apply.as_ref().expect("children");
    assert!(children.migrate_job.is_none(), "the Job runs already");
    assert!(plan.events.is_empty());
    assert_eq!(plan.progress.migrated.reason, "Running");
    // Another image is another Job.
    let mut next = app.clone();
    next.spec.image = "ghcr.io/acme/shop:3.0.0".to_owned();
    assert_ne!(job_name(&next), name);
    let next_plan = super::plan(&validated(&next), &world, Some(&previous), &at(200));
    assert_eq!(
        next_plan
            .apply
            .as_ref()
            .and_then(|c| c.migrate_job.as_ref())
            .and_then(|job| job.metadata.name.clone()),
        Some(job_name(&next))
    );
}

#[test]
fn a_succeeded_migration_rolls_the_workloads_out_at_the_new_image() {
    let app = app();
    let world = World {
        jobs: vec![job(&job_name(&app), IMAGE, Some("Complete"), 150)],
        ..ready_world()
    };
    let previous = roles_confirmed(&app);
    let plan = plan(&validated(&app), &world, Some(&previous), &at(200));
    assert_eq!(api_image(&plan).as_deref(), Some(IMAGE));
    let children = plan.apply.as_ref().expect("children");
    assert!(children.worker.is_some() && children.migrate_job.is_none());
    assert_eq!(plan.progress.migrated_image.as_deref(), Some(IMAGE));
    assert_eq!(plan.progress.migrated.status, "True");
    assert_eq!(plan.progress.image.as_deref(), Some(IMAGE));
    assert_eq!(
        plan.progress.api.reason, "RollingOut",
        "judged as just created"
    );
}

#[test]
fn a_failed_migration_holds_the_old_image_stalls_and_reports_once() {
    let app = app();
    let name = job_name(&app);
    let mut previous = roles_confirmed(&app);
    previous.migrated_image = Some(OLD_IMAGE.to_owned());
    previous.image = Some(OLD_IMAGE.to_owned());
    let world = World {
        jobs: vec![job(&name, IMAGE, Some("Failed"), 150)],
        api: Some(deployment(OLD_IMAGE, 2, 2)),
        worker: Some(deployment(OLD_IMAGE, 1, 1)),
        migration_log: Some(
            "applying 0002\nconnecting with owner-pass-1\nERROR: relation exists".to_owned(),
        ),
        ..ready_world()
    };
    let plan = plan(&validated(&app), &world, Some(&previous), &at(200));
    assert_eq!(
        api_image(&plan).as_deref(),
        Some(OLD_IMAGE),
        "the old image keeps serving"
    );
    assert_eq!(plan.progress.migrated.reason, MIGRATION_FAILED);
    let (reason, message) = plan.progress.stalled.clone().expect("stalled");
    assert_eq!(reason, MIGRATION_FAILED);
    assert!(message.contains("ERROR: relation exists"), "{message}");
    assert!(
        !message.contains("owner-pass-1"),
        "credentials withheld: {message}"
    );
    assert_eq!(reasons(&plan), vec![MIGRATION_FAILED]);
    // Reported: the next look keeps the message and records nothing.
    let reported = plan.status.clone();
    let again = World {
        migration_log: None,
        ..world
    };
    let next = super::plan(&validated(&app), &again, Some(&reported), &at(300));
    assert!(next.events.is_empty());
    assert_eq!(next.progress.stalled, plan.progress.stalled);
    assert_eq!(next.status, reported, "no status write");
}

#[test]
fn paused_plans_no_write_only_status() {
    let mut app = app_with(serde_json::json!({"paused": true}));
    app.metadata.finalizers = None;
    let world = World {
        owner_secret: None,
        runtime_secret: None,
        jobs: (0..5)
            .map(|i| {
                job(
                    &format!("shop-migrate-old{i}"),
                    OLD_IMAGE,
                    Some("Complete"),
                    i,
                )
            })
            .collect(),
        ..ready_world()
    };
    let plan = plan(&validated(&app), &world, None, &at(200));
    assert_eq!(plan.apply, None);
    assert_eq!(plan.add_finalizer, None);
    assert_eq!(plan.roles, None);
    assert!(plan.deletes.is_empty() && plan.events.is_empty());
    assert!(plan.is_empty());
    assert!(plan.progress.paused);
    assert_eq!(plan.progress.roles.status, "False");
    // The status is still written: it records the generation the operator saw, and says why
    // nothing moves.
    assert_eq!(plan.status.observed_generation, Some(1));
    let reconciling =
        find_condition(&plan.status, condition::RECONCILING).expect("a Reconciling condition");
    assert_eq!(
        (reconciling.status.as_str(), reconciling.reason.as_str()),
        ("False", "Paused")
    );
}

#[test]
fn the_finalizer_is_added_when_missing_and_only_then() {
    let mut app = app();
    app.metadata.finalizers = Some(vec!["example.com/other".to_owned()]);
    let plan = plan(&validated(&app), &World::default(), None, &at(200));
    assert_eq!(
        plan.add_finalizer,
        Some(vec!["example.com/other".to_owned(), FINALIZER.to_owned()])
    );
    let with = self::app();
    assert_eq!(
        super::plan(&validated(&with), &World::default(), None, &at(200)).add_finalizer,
        None
    );
}

#[test]
fn a_worker_dropped_from_the_spec_is_deleted() {
    let mut app = app();
    app.spec.worker = None;
    let world = World {
        worker: Some(deployment(IMAGE, 1, 1)),
        ..ready_world()
    };
    let plan = plan(
        &validated(&app),
        &world,
        Some(&roles_confirmed(&app)),
        &at(200),
    );
    assert_eq!(
        plan.deletes,
        vec![
            Delete::Deployment("shop-worker".to_owned()),
            Delete::PodDisruptionBudget("shop-worker".to_owned())
        ]
    );
    assert_eq!(plan.progress.worker.reason, "NotConfigured");
}

#[test]
fn only_the_newest_three_migrate_jobs_are_kept() {
    let app = app();
    let current = job_name(&app);
    let mut jobs: Vec<Job> = (0..4)
        .map(|i| {
            job(
                &format!("shop-migrate-old{i}"),
                OLD_IMAGE,
                Some("Complete"),
                i,
            )
        })
        .collect();
    jobs.push(job(&current, IMAGE, Some("Complete"), 10));
    let world = World {
        jobs,
        ..ready_world()
    };
    let plan = plan(
        &validated(&app),
        &world,
        Some(&roles_confirmed(&app)),
        &at(200),
    );
    assert_eq!(
        plan.deletes,
        vec![
            Delete::Job("shop-migrate-old0".to_owned()),
            Delete::Job("shop-migrate-old1".to_owned())
        ]
    );
    assert!(plan.deletes.iter().all(|d| d.step() == Step::Cleanup));
}

#[test]
fn a_cluster_retained_from_an_earlier_app_is_adopted_with_an_event_once() {
    let app = app();
    let mut cluster = Cluster::new(
        "shop-db",
        ClusterSpec {
            instances: 1,
            image_name: None,
            enable_superuser_access: Some(true),
            storage: ClusterStorage {
                size: k8s_openapi::apimachinery::pkg::api::resource::Quantity("1Gi".to_owned()),
                storage_class: None,
            },
            resources: None,
            backup: None,
        },
    );
    cluster.metadata.creation_timestamp = Some(at(10));
    let world = World {
        cluster: Some(cluster),
        ..ready_world()
    };
    let first = plan(&validated(&app), &world, None, &at(200));
    assert_eq!(reasons(&first), vec!["AdoptedDatabase"]);
    let later = plan(&validated(&app), &world, Some(&first.status), &at(300));
    assert!(!reasons(&later).contains(&"AdoptedDatabase"));
}

#[test]
fn reclaim_follows_the_policy_and_the_mode() {
    let retain = app();
    let delete = app_with(serde_json::json!({
        "database": {"cluster": {"storage": {"size": "1Gi"}}, "reclaimPolicy": "Delete"}
    }));
    let external = app_with(serde_json::json!({
        "database": {"external": {"uriSecret": {"name": "db", "key": "uri"}}, "reclaimPolicy": "Delete"}
    }));
    let shared_retain = app_with(serde_json::json!({
        "database": {"shared": {"clusterName": "pg", "adminSecret": {"name": "admin"}}}
    }));
    let table = [
        (&retain, true, Reclaim::Retain, false),
        (&shared_retain, true, Reclaim::Retain, false),
        (&delete, true, Reclaim::Drop, true),
        (&delete, false, Reclaim::DatabaseGone, true),
        (&external, true, Reclaim::External, false),
    ];
    for (app, admin, expected, looks) in table {
        let validated = validated(app);
        assert_eq!(
            reclaim(&validated, admin),
            expected,
            "{:?}",
            app.spec.database
        );
        assert_eq!(needs_database(&validated), looks, "{:?}", app.spec.database);
    }
}

#[test]
fn a_rolled_out_app_plans_nothing_and_computes_the_status_it_has() {
    let app = app();
    let world = World {
        jobs: vec![job(&job_name(&app), IMAGE, Some("Complete"), 150)],
        api: Some(deployment(IMAGE, 2, 2)),
        worker: Some(deployment(IMAGE, 1, 1)),
        ..ready_world()
    };
    let first = plan(
        &validated(&app),
        &world,
        Some(&roles_confirmed(&app)),
        &at(200),
    );
    assert!(first.progress.is_ready(), "{:?}", first.progress);
    let steady = plan(&validated(&app), &world, Some(&first.status), &at(900));
    assert!(steady.is_empty(), "{steady:?}");
    assert_eq!(steady.status, first.status, "nothing but time changed");
    assert_eq!(
        steady.apply, first.apply,
        "the same children, skipped by hash"
    );
}

#[test]
fn a_failure_at_a_step_leaves_it_and_later_steps_as_before() {
    let app = app();
    let world = World {
        roles_ensured: true,
        ..ready_world()
    };
    let plan = plan(&validated(&app), &world, None, &at(200));
    let base = baseline(&app, None);
    let at_migrate = plan.progress_until(Step::Migrate, &base);
    assert_eq!(at_migrate.roles, plan.progress.roles);
    assert_eq!(at_migrate.migrated, base.migrated);
    assert_eq!(at_migrate.migration_job, None);
    let at_budget = plan.progress_until(Step::Budget, &base);
    assert_eq!(at_budget.database, base.database);
}

/// `render` prints exactly the children `plan` applies, given the facts the plan found.
#[test]
fn render_prints_exactly_what_plan_applies() {
    let app = app();
    let first_deploy = World {
        roles_ensured: true,
        ..ready_world()
    };
    let rolled_out = World {
        jobs: vec![job(&job_name(&app), IMAGE, Some("Complete"), 150)],
        api: Some(deployment(IMAGE, 2, 2)),
        worker: Some(deployment(IMAGE, 1, 1)),
        ..ready_world()
    };
    for world in [first_deploy, rolled_out] {
        let plan = plan(
            &validated(&app),
            &world,
            Some(&roles_confirmed(&app)),
            &at(200),
        );
        let children = plan.apply.as_ref().expect("children");
        let rendered = crate::render::render(&app, &plan.facts, false).expect("renders");
        let documents: String = rendered
            .lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| format!("{line}\n"))
            .collect();
        assert_eq!(
            documents,
            crate::render::documents(children).expect("serializes")
        );
    }
}

/// What a plan applies, by kind and name, in order.
fn applied(plan: &Plan) -> Vec<String> {
    let Some(Children {
        service_account,
        resource_quota,
        limit_range,
        network_policies,
        database_cluster,
        migrate_job,
        api,
        worker,
        route,
        pod_monitor,
    }) = &plan.apply
    else {
        return Vec::new();
    };
    let name = |kind: &str, meta: &kube::api::ObjectMeta| {
        format!("{kind} {}", meta.name.as_deref().unwrap_or(""))
    };
    let mut out = vec![
        name("ServiceAccount", &service_account.metadata),
        name("ResourceQuota", &resource_quota.metadata),
        name("LimitRange", &limit_range.metadata),
    ];
    out.extend(
        network_policies
            .iter()
            .flat_map(|policies| policies.iter())
            .map(|policy| name("NetworkPolicy", &policy.metadata)),
    );
    out.extend(
        database_cluster
            .iter()
            .map(|c| name("Cluster", &c.metadata)),
    );
    out.extend(migrate_job.iter().map(|j| name("Job", &j.metadata)));
    for process in [api, worker].into_iter().flatten() {
        out.push(name("Deployment", &process.deployment.metadata));
        out.extend(process.service.iter().map(|s| name("Service", &s.metadata)));
        out.push(name(
            "PodDisruptionBudget",
            &process.pod_disruption_budget.metadata,
        ));
    }
    match route {
        None => {}
        Some(Route::Ingress(ingress)) => out.push(name("Ingress", &ingress.metadata)),
        Some(Route::Gateway { route, certificate }) => {
            out.extend(certificate.iter().map(|c| name("Certificate", &c.metadata)));
            out.push(name("HTTPRoute", &route.metadata));
        }
    }
    out.extend(
        pod_monitor
            .iter()
            .map(|monitor| name("PodMonitor", &monitor.metadata)),
    );
    out
}

/// The ordered rollout from nothing, one row per look: quota and database first, the roles once
/// the database is ready, the migrate Job once the roles are, the workloads once it succeeded,
/// Ready once they are available.
#[test]
fn the_rollout_goes_quota_database_roles_migrate_workloads_status() {
    let app = app();
    let job = job_name(&app);
    let budget = [
        "ServiceAccount shop",
        "ResourceQuota shop-budget",
        "LimitRange shop-budget",
        "NetworkPolicy shop-api",
        "NetworkPolicy shop-no-ingress",
        "NetworkPolicy shop-db",
        "Cluster shop-db",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        budget
            .iter()
            .chain(extra)
            .map(|s| (*s).to_owned())
            .collect()
    };
    let migrated = World {
        jobs: vec![self::job(&job, IMAGE, Some("Complete"), 150)],
        ..ready_world()
    };
    let workloads = [
        "Deployment shop-api",
        "Service shop-api",
        "PodDisruptionBudget shop-api",
        "Deployment shop-worker",
        "PodDisruptionBudget shop-worker",
    ];
    let job_row = format!("Job {job}");
    let rows: Vec<(&str, World, Vec<String>, bool, &str)> = vec![
        (
            "nothing ready",
            World::default(),
            with(&[]),
            false,
            condition::DATABASE_READY,
        ),
        (
            "database ready, no roles",
            World {
                owner_secret: None,
                runtime_secret: None,
                ..ready_world()
            },
            with(&[]),
            true,
            condition::ROLES_READY,
        ),
        (
            "roles ensured",
            World {
                roles_ensured: true,
                ..ready_world()
            },
            with(&[job_row.as_str()]),
            false,
            condition::MIGRATED,
        ),
        (
            "migrated",
            migrated.clone(),
            with(&workloads),
            false,
            condition::API_AVAILABLE,
        ),
        (
            "available",
            World {
                api: Some(deployment(IMAGE, 2, 2)),
                worker: Some(deployment(IMAGE, 1, 1)),
                ..migrated
            },
            with(&workloads),
            false,
            condition::READY,
        ),
    ];
    let mut previous: Option<KumikoAppStatus> = None;
    for (look, world, expected, roles, waiting_for) in rows {
        let plan = plan(&validated(&app), &world, previous.as_ref(), &at(200));
        assert_eq!(applied(&plan), expected, "{look}");
        assert_eq!(plan.roles.is_some(), roles, "{look}");
        let ready = find_condition(&plan.status, condition::READY).expect("Ready");
        if waiting_for == condition::READY {
            assert_eq!(ready.status, "True", "{look}: {}", ready.message);
        } else {
            assert!(
                ready
                    .message
                    .starts_with(&format!("waiting for {waiting_for}")),
                "{look}: {}",
                ready.message
            );
        }
        if plan.roles.is_none() {
            previous = Some(plan.status.clone());
        }
    }
}

/// The world of a rolled-out app (`api` replicas 2, worker 1, migrated to [`IMAGE`]).
fn rolled_out_world(app: &KumikoApp) -> World {
    World {
        jobs: vec![job(&job_name(app), IMAGE, Some("Complete"), 150)],
        api: Some(deployment(IMAGE, 2, 2)),
        worker: Some(deployment(IMAGE, 1, 1)),
        ..ready_world()
    }
}

fn through_gateway() -> KumikoApp {
    app_with(serde_json::json!({
        "api": {"expose": {
            "hosts": ["shop.example.com"],
            "gateway": {"name": "public", "namespace": "infra"},
            "tls": {"issuer": {"name": "letsencrypt"}}
        }}
    }))
}

/// An HTTPRoute at generation 2 whose Gateway `infra/public` reports `accepted` and `resolved`
/// for `judged`.
fn reported_route(accepted: &str, resolved: &str, judged: i64) -> HTTPRoute {
    let condition = |kind: &str, status: &str| Condition {
        type_: kind.to_owned(),
        status: status.to_owned(),
        reason: if status == "True" {
            kind
        } else {
            "NotAllowedByListeners"
        }
        .to_owned(),
        message: "from the gateway".to_owned(),
        observed_generation: Some(judged),
        last_transition_time: at(0),
    };
    let mut route: HTTPRoute = serde_json::from_value(serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "shop-api", "namespace": "shop", "generation": 2},
        "spec": {"parentRefs": [{"name": "public", "namespace": "infra"}], "rules": []}
    }))
    .expect("route parses");
    route.status = Some(HttpRouteStatus {
        parents: vec![RouteParentStatus {
            parent_ref: ParentReference {
                name: "public".to_owned(),
                namespace: Some("infra".to_owned()),
                section_name: None,
            },
            controller_name: "example.com/gateway".to_owned(),
            conditions: vec![
                condition("Accepted", accepted),
                condition("ResolvedRefs", resolved),
            ],
        }],
    });
    route
}

/// The traffic step: the route is applied with the API's objects, after them, and only once an
/// image is migrated; its URL is in the status.
#[test]
fn the_route_follows_the_workloads_with_its_urls() {
    let app = app_with(serde_json::json!({
        "api": {"expose": {"hosts": ["shop.example.com"], "ingress": {"className": "nginx"}}}
    }));
    let before = plan(
        &validated(&app),
        &ready_world(),
        Some(&roles_confirmed(&app)),
        &at(200),
    );
    assert!(
        !applied(&before)
            .iter()
            .any(|kind| kind.starts_with("Ingress")),
        "no route before the API exists: {:?}",
        applied(&before)
    );
    let rolled = plan(
        &validated(&app),
        &rolled_out_world(&app),
        Some(&roles_confirmed(&app)),
        &at(200),
    );
    assert_eq!(
        applied(&rolled).last().map(String::as_str),
        Some("Ingress shop-api")
    );
    assert_eq!(rolled.status.urls, vec!["http://shop.example.com/"]);
    assert_eq!(rolled.progress.route.reason, "Ingress");
    assert!(rolled.progress.is_ready(), "{:?}", rolled.progress);
}

/// Ready waits for the Gateway to accept the HTTPRoute and resolve its references, for the
/// route's current generation; a refusal is reported with the Gateway's reason.
#[test]
fn ready_waits_for_the_gateway_to_accept_the_route() {
    let app = through_gateway();
    let judge = |route: Option<HTTPRoute>| {
        let world = World {
            http_route: route,
            ..rolled_out_world(&app)
        };
        plan(
            &validated(&app),
            &world,
            Some(&roles_confirmed(&app)),
            &at(200),
        )
    };
    let created = judge(None);
    assert_eq!(
        applied(&created)[applied(&created).len() - 2..],
        [
            "Certificate shop-tls".to_owned(),
            "HTTPRoute shop-api".to_owned()
        ]
    );
    assert_eq!(created.progress.route.status, "False");
    assert!(!created.progress.is_ready());
    assert_eq!(created.status.urls, vec!["https://shop.example.com/"]);

    let accepted = judge(Some(reported_route("True", "True", 2)));
    assert_eq!(
        accepted.progress.route.status, "True",
        "{:?}",
        accepted.progress.route
    );
    assert!(accepted.progress.is_ready(), "{:?}", accepted.progress);

    let stale = judge(Some(reported_route("True", "True", 1)));
    assert_eq!(
        stale.progress.route.status, "False",
        "judged an older generation"
    );

    let refused = judge(Some(reported_route("False", "True", 2)));
    assert_eq!(refused.progress.route.reason, ROUTE_NOT_ACCEPTED);
    assert!(
        refused
            .progress
            .route
            .message
            .contains("NotAllowedByListeners"),
        "{}",
        refused.progress.route.message
    );
    let ready = find_condition(&refused.status, kumiko_crds::condition::READY).expect("Ready");
    assert_eq!(ready.status, "Unknown");
    assert!(ready.message.contains("RouteAccepted"), "{}", ready.message);
}

/// A route of a kind the spec no longer asks for is deleted in the traffic step.
#[test]
fn a_route_dropped_from_the_spec_is_deleted() {
    let app = app();
    let ingress = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "shop-api", "namespace": "shop"}
    }))
    .expect("ingress parses");
    let world = World {
        ingress: Some(ingress),
        http_route: Some(reported_route("True", "True", 2)),
        ..rolled_out_world(&app)
    };
    let plan = plan(
        &validated(&app),
        &world,
        Some(&roles_confirmed(&app)),
        &at(200),
    );
    assert_eq!(
        plan.deletes,
        vec![
            Delete::Ingress("shop-api".to_owned()),
            Delete::HttpRoute("shop-api".to_owned())
        ]
    );
    assert!(
        plan.deletes
            .iter()
            .all(|delete| delete.step() == Step::Traffic)
    );
    assert_eq!(plan.progress.route.reason, "NotExposed");
    let switched = through_gateway();
    let switched_plan = super::plan(
        &validated(&switched),
        &world,
        Some(&roles_confirmed(&switched)),
        &at(200),
    );
    assert_eq!(
        switched_plan.deletes,
        vec![Delete::Ingress("shop-api".to_owned())]
    );
}

/// A failure at the traffic step leaves `RouteAccepted` as it was.
#[test]
fn a_failure_at_the_traffic_step_leaves_the_route_condition_as_before() {
    let app = through_gateway();
    let world = World {
        http_route: Some(reported_route("True", "True", 2)),
        ..rolled_out_world(&app)
    };
    let plan = plan(
        &validated(&app),
        &world,
        Some(&roles_confirmed(&app)),
        &at(200),
    );
    let base = baseline(&app, None);
    let at_traffic = plan.progress_until(Step::Traffic, &base);
    assert_eq!(at_traffic.route, base.route);
    assert_eq!(at_traffic.api, plan.progress.api);
    let at_cleanup = plan.progress_until(Step::Cleanup, &base);
    assert_eq!(at_cleanup.route, plan.progress.route);
}

/// A migrated app whose API autoscales between 2 and 6 pods.
fn autoscaled_app() -> KumikoApp {
    app_with(serde_json::json!({
        "api": {"replicas": 2, "autoscaling": {"minReplicas": 2, "maxReplicas": 6}}
    }))
}

fn migrated_world(app: &KumikoApp, api: Option<Deployment>) -> World {
    World {
        jobs: vec![job(&job_name(app), IMAGE, Some("Complete"), 150)],
        api,
        worker: Some(deployment(IMAGE, 1, 1)),
        ..ready_world()
    }
}

fn api_objects(plan: &Plan) -> &ProcessObjects {
    plan.apply
        .as_ref()
        .and_then(|children| children.api.as_ref())
        .expect("the API's objects are applied")
}

#[test]
fn an_autoscaled_deployment_is_applied_without_replicas_beside_its_autoscaler() {
    let app = autoscaled_app();
    let world = migrated_world(&app, Some(deployment(IMAGE, 2, 2)));
    let plan = plan(
        &validated(&app),
        &world,
        Some(&roles_confirmed(&app)),
        &at(200),
    );
    let api = api_objects(&plan);
    let replicas = api.deployment.spec.as_ref().and_then(|spec| spec.replicas);
    assert_eq!(replicas, None, "the autoscaler owns the replicas");
    let autoscaler = api
        .horizontal_pod_autoscaler
        .as_ref()
        .and_then(|hpa| hpa.spec.as_ref())
        .expect("an autoscaler");
    assert_eq!(autoscaler.scale_target_ref.name, "shop-api");
    assert_eq!(
        (autoscaler.min_replicas, autoscaler.max_replicas),
        (Some(2), 6)
    );
    let worker = plan
        .apply
        .as_ref()
        .and_then(|children| children.worker.as_ref())
        .expect("the worker's objects");
    assert_eq!(
        worker
            .deployment
            .spec
            .as_ref()
            .and_then(|spec| spec.replicas),
        Some(1),
        "the worker does not autoscale: the operator keeps its replicas"
    );
    assert!(worker.horizontal_pod_autoscaler.is_none());
}

#[test]
fn turning_autoscaling_on_hands_the_live_replicas_over_once() {
    let app = autoscaled_app();
    let world = migrated_world(&app, Some(deployment(IMAGE, 3, 3)));
    let first = plan(
        &validated(&app),
        &world,
        Some(&roles_confirmed(&app)),
        &at(200),
    );
    assert_eq!(
        first.handovers,
        vec![ReplicasHandover {
            deployment: "shop-api".to_owned(),
            replicas: 3
        }],
        "the live value, not the spec's 2: the pods in service stay"
    );
    assert!(reasons(&first).contains(&"AutoscalingEnabled"));
    let status = first.status.api.as_ref().expect("API status");
    assert!(status.autoscaled);
    let again = plan(&validated(&app), &world, Some(&first.status), &at(300));
    assert!(again.handovers.is_empty(), "{:?}", again.handovers);
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn a_deployment_created_with_autoscaling_needs_no_handover() {
    let app = autoscaled_app();
    let world = migrated_world(&app, None);
    let plan = plan(
        &validated(&app),
        &world,
        Some(&roles_confirmed(&app)),
        &at(200),
    );
    assert!(plan.handovers.is_empty(), "nobody owns the replicas yet");
    assert!(api_objects(&plan).horizontal_pod_autoscaler.is_some());
    assert!(plan.status.api.as_ref().is_some_and(|api| api.autoscaled));
}

#[test]
fn an_autoscaler_scaling_up_keeps_the_app_ready() {
    let app = autoscaled_app();
    // The autoscaler asked for 5 pods; 2 (its minimum) are ready, 3 start.
    let mut scaling = deployment(IMAGE, 5, 2);
    if let Some(status) = scaling.status.as_mut() {
        status.updated_replicas = Some(5);
    }
    let world = migrated_world(&app, Some(scaling));
    let first = plan(
        &validated(&app),
        &world,
        Some(&roles_confirmed(&app)),
        &at(200),
    );
    let steady = plan(&validated(&app), &world, Some(&first.status), &at(300));
    assert!(steady.progress.is_ready(), "{:?}", steady.progress.api);
}

#[test]
fn an_autoscaled_rollout_is_judged_against_the_replicas_the_autoscaler_set() {
    let app = autoscaled_app();
    // The autoscaler scaled the API to 5 pods, all ready; the spec says 2.
    let world = migrated_world(&app, Some(deployment(IMAGE, 5, 5)));
    let first = plan(
        &validated(&app),
        &world,
        Some(&roles_confirmed(&app)),
        &at(200),
    );
    let steady = plan(&validated(&app), &world, Some(&first.status), &at(300));
    assert_eq!(
        steady.progress.api.reason, "Available",
        "{:?}",
        steady.progress.api
    );
    assert!(steady.progress.is_ready(), "{:?}", steady.progress);
    let api = steady.status.api.as_ref().expect("API status");
    assert_eq!((api.replicas, api.summary.as_str()), (5, "5/5"));
}

#[test]
fn turning_autoscaling_off_deletes_the_autoscaler_and_applies_replicas_again() {
    let autoscaled = autoscaled_app();
    let world = migrated_world(&autoscaled, Some(deployment(IMAGE, 5, 5)));
    let before = plan(
        &validated(&autoscaled),
        &world,
        Some(&roles_confirmed(&autoscaled)),
        &at(200),
    );
    let mut app = autoscaled.clone();
    app.spec.api.autoscaling = None;
    let after = plan(&validated(&app), &world, Some(&before.status), &at(300));
    assert_eq!(
        after.deletes,
        vec![Delete::HorizontalPodAutoscaler("shop-api".to_owned())]
    );
    let api = api_objects(&after);
    assert_eq!(
        api.deployment.spec.as_ref().and_then(|spec| spec.replicas),
        Some(2)
    );
    assert!(api.horizontal_pod_autoscaler.is_none());
    assert!(after.status.api.as_ref().is_some_and(|api| !api.autoscaled));
}

#[test]
fn a_paused_app_hands_nothing_over() {
    let mut app = autoscaled_app();
    app.spec.paused = true;
    let world = migrated_world(&app, Some(deployment(IMAGE, 3, 3)));
    let plan = plan(
        &validated(&app),
        &world,
        Some(&roles_confirmed(&app)),
        &at(200),
    );
    assert!(plan.handovers.is_empty() && plan.apply.is_none());
    assert!(plan.status.api.as_ref().is_some_and(|api| !api.autoscaled));
}

#[test]
fn a_dropped_autoscaled_worker_loses_its_autoscaler_too() {
    let autoscaled = app_with(serde_json::json!({
        "worker": {"autoscaling": {"maxReplicas": 3}}
    }));
    let world = migrated_world(&autoscaled, Some(deployment(IMAGE, 2, 2)));
    let before = plan(
        &validated(&autoscaled),
        &world,
        Some(&roles_confirmed(&autoscaled)),
        &at(200),
    );
    assert!(before.status.worker.as_ref().is_some_and(|w| w.autoscaled));
    let mut app = autoscaled.clone();
    app.spec.worker = None;
    let after = plan(&validated(&app), &world, Some(&before.status), &at(300));
    assert_eq!(
        after.deletes,
        vec![
            Delete::Deployment("shop-worker".to_owned()),
            Delete::PodDisruptionBudget("shop-worker".to_owned()),
            Delete::HorizontalPodAutoscaler("shop-worker".to_owned()),
        ]
    );
}

#[test]
fn the_status_names_each_process_types_pod_selector_for_the_scale_subresource() {
    let app = app();
    let world = migrated_world(&app, Some(deployment(IMAGE, 2, 2)));
    let plan = plan(
        &validated(&app),
        &world,
        Some(&roles_confirmed(&app)),
        &at(200),
    );
    assert_eq!(
        plan.status
            .api
            .as_ref()
            .and_then(|api| api.selector.as_deref()),
        Some(
            "app.kubernetes.io/component=api,app.kubernetes.io/instance=shop,\
             app.kubernetes.io/name=kumiko-app"
        )
    );
}

/// The names of the NetworkPolicies a plan applies.
fn applied_policies(plan: &Plan) -> Vec<String> {
    applied(plan)
        .into_iter()
        .filter_map(|child| child.strip_prefix("NetworkPolicy ").map(str::to_owned))
        .collect()
}

fn present(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

#[test]
fn network_policies_are_on_by_default_and_applied_with_the_budget() {
    let app = app();
    let plan = plan(&validated(&app), &World::default(), None, &at(200));
    assert_eq!(
        applied_policies(&plan),
        vec!["shop-api", "shop-no-ingress", "shop-db"],
        "before the database is ready, with the budget"
    );
    assert!(plan.deletes.is_empty());
}

#[test]
fn turning_network_policies_off_deletes_those_that_exist_and_only_those() {
    let app = app_with(serde_json::json!({"networkPolicy": {"enabled": false}}));
    let world = World {
        network_policies: present(&["shop-api", "shop-no-ingress", "shop-db"]),
        ..rolled_out_world(&app)
    };
    let plan = plan(
        &validated(&app),
        &world,
        Some(&roles_confirmed(&app)),
        &at(200),
    );
    assert!(applied_policies(&plan).is_empty());
    assert_eq!(
        plan.deletes,
        vec![
            Delete::NetworkPolicy("shop-api".to_owned()),
            Delete::NetworkPolicy("shop-no-ingress".to_owned()),
            Delete::NetworkPolicy("shop-db".to_owned()),
        ]
    );
    assert!(plan.deletes.iter().all(|d| d.step() == Step::Traffic));
    let gone = World {
        network_policies: BTreeSet::new(),
        ..rolled_out_world(&app)
    };
    let again = super::plan(&validated(&app), &gone, Some(&plan.status), &at(300));
    assert!(again.deletes.is_empty(), "nothing left to delete");
}

#[test]
fn dropping_egress_deletes_only_the_egress_policy() {
    let app = app();
    let world = World {
        network_policies: present(&["shop-api", "shop-no-ingress", "shop-db", "shop-egress"]),
        ..rolled_out_world(&app)
    };
    let plan = plan(
        &validated(&app),
        &world,
        Some(&roles_confirmed(&app)),
        &at(200),
    );
    assert_eq!(
        plan.deletes,
        vec![Delete::NetworkPolicy("shop-egress".to_owned())]
    );
    let with_egress = app_with(serde_json::json!({"networkPolicy": {"egress": {}}}));
    let kept = super::plan(
        &validated(&with_egress),
        &world,
        Some(&roles_confirmed(&with_egress)),
        &at(200),
    );
    assert!(kept.deletes.is_empty());
    assert_eq!(
        applied_policies(&kept),
        vec!["shop-api", "shop-no-ingress", "shop-db", "shop-egress"]
    );
}

#[test]
fn a_paused_app_deletes_no_network_policy() {
    let app = app_with(serde_json::json!({"paused": true, "networkPolicy": {"enabled": false}}));
    let world = World {
        network_policies: present(&["shop-api", "shop-no-ingress", "shop-db"]),
        ..rolled_out_world(&app)
    };
    let plan = plan(
        &validated(&app),
        &world,
        Some(&roles_confirmed(&app)),
        &at(200),
    );
    assert!(plan.deletes.is_empty() && plan.apply.is_none());
}

#[test]
fn the_database_policy_lets_in_the_operators_namespaces_the_world_names() {
    let app = app();
    let world = World {
        operators: crate::observed::OperatorNamespaces {
            kumiko: "ops".to_owned(),
            cnpg: "databases".to_owned(),
        },
        ..World::default()
    };
    let plan = plan(&validated(&app), &world, None, &at(200));
    assert_eq!(plan.facts.operators.kumiko, "ops");
    let policies = plan
        .apply
        .as_ref()
        .and_then(|c| c.network_policies.as_ref());
    let database = policies
        .and_then(|p| p.database.as_ref())
        .expect("a database policy");
    let namespaces: Vec<String> = database
        .spec
        .iter()
        .flat_map(|spec| spec.ingress.iter().flatten())
        .flat_map(|rule| rule.from.iter().flatten())
        .filter_map(|peer| peer.namespace_selector.as_ref())
        .filter_map(|selector| selector.match_labels.as_ref())
        .filter_map(|labels| labels.get("kubernetes.io/metadata.name").cloned())
        .collect();
    assert_eq!(namespaces, vec!["ops", "databases"]);
}
mod monitoring;
