//! The PodMonitor of `spec.monitoring` and the `AutoscalerActive` condition, on the pure
//! [`plan`].

use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus,
};

use super::*;

fn monitored(monitoring: serde_json::Value) -> KumikoApp {
    app_with(serde_json::json!({ "monitoring": monitoring }))
}

fn plan_for(app: &KumikoApp, world: &World) -> Plan {
    plan(
        &validated(app),
        world,
        Some(&roles_confirmed(app)),
        &at(200),
    )
}

fn served(app: &KumikoApp) -> World {
    World {
        pod_monitors_served: true,
        ..rolled_out_world(app)
    }
}

fn condition_of<'a>(plan: &'a Plan, kind: &str) -> Option<&'a Condition> {
    find_condition(&plan.status, kind)
}

/// A PodMonitor at the end of the rollout where the cluster serves PodMonitors; none (and a
/// False condition naming what to install, with the app Ready) where it does not.
#[test]
fn the_pod_monitor_is_applied_where_served_and_reported_missing_where_not() {
    let app = monitored(serde_json::json!({"labels": {"release": "kube-prometheus-stack"}}));
    let rows = [
        // (served, PodMonitor applied, condition status, reason)
        (true, true, "True", "PodMonitorApplied"),
        (false, false, "False", POD_MONITOR_CRD_MISSING),
    ];
    for (is_served, applies, status, reason) in rows {
        let world = World {
            pod_monitors_served: is_served,
            ..rolled_out_world(&app)
        };
        let plan = plan_for(&app, &world);
        assert_eq!(
            applied(&plan).last().map(String::as_str) == Some("PodMonitor shop"),
            applies,
            "served {is_served}: {:?}",
            applied(&plan)
        );
        let monitoring =
            condition_of(&plan, condition::MONITORING_AVAILABLE).expect("monitoring is enabled");
        assert_eq!(
            (monitoring.status.as_str(), monitoring.reason.as_str()),
            (status, reason)
        );
        assert!(plan.progress.is_ready(), "served {is_served}: not Ready");
        assert!(plan.deletes.is_empty());
    }
    let missing = plan_for(
        &app,
        &World {
            pod_monitors_served: false,
            ..rolled_out_world(&app)
        },
    );
    let message = &condition_of(&missing, condition::MONITORING_AVAILABLE)
        .expect("present")
        .message;
    assert!(
        message.contains("monitoring.coreos.com/v1 PodMonitor")
            && message.contains("prometheus-operator"),
        "{message}"
    );
}

/// Turned off (or the block removed), the PodMonitor is deleted in the monitoring step and the
/// condition goes away; where none exists, nothing is deleted.
#[test]
fn turning_monitoring_off_deletes_the_pod_monitor() {
    let existing: crate::prometheus_operator::PodMonitor =
        serde_json::from_value(serde_json::json!({
            "apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
            "metadata": {"name": "shop", "namespace": "shop"},
            "spec": {"selector": {}, "podMetricsEndpoints": []}
        }))
        .expect("parses");
    for app in [monitored(serde_json::json!({"enabled": false})), app()] {
        let world = World {
            pod_monitor: Some(existing.clone()),
            ..served(&app)
        };
        let plan = plan_for(&app, &world);
        assert_eq!(plan.deletes, vec![Delete::PodMonitor("shop".to_owned())]);
        assert_eq!(plan.deletes[0].step(), Step::Monitoring);
        assert!(
            !applied(&plan)
                .iter()
                .any(|kind| kind.starts_with("PodMonitor"))
        );
        assert_eq!(condition_of(&plan, condition::MONITORING_AVAILABLE), None);
        let gone = plan_for(&app, &served(&app));
        assert!(gone.deletes.is_empty());
    }
}

/// Paused: no PodMonitor applied or deleted.
#[test]
fn a_paused_app_neither_applies_nor_deletes_a_pod_monitor() {
    let mut app = monitored(serde_json::json!({"enabled": false}));
    app.spec.paused = true;
    let world = World {
        pod_monitor: serde_json::from_value(serde_json::json!({
            "metadata": {"name": "shop", "namespace": "shop"},
            "spec": {"selector": {}, "podMetricsEndpoints": []}
        }))
        .ok(),
        ..served(&app)
    };
    let plan = plan_for(&app, &world);
    assert!(plan.deletes.is_empty() && plan.apply.is_none());
}

/// A failure at the monitoring step leaves `MonitoringAvailable` not known (Unknown), and the
/// route as planned.
#[test]
fn a_failure_at_the_monitoring_step_leaves_its_condition_unknown() {
    let app = monitored(serde_json::json!({}));
    let plan = plan_for(&app, &served(&app));
    let base = baseline(&app, None);
    let failed = plan.progress_until(Step::Monitoring, &base);
    assert_eq!(
        failed.monitoring.as_ref().map(|check| check.status),
        Some("Unknown")
    );
    assert_eq!(failed.route, plan.progress.route);
    let later = plan.progress_until(Step::Cleanup, &base);
    assert_eq!(later.monitoring, plan.progress.monitoring);
}

fn autoscaler(status: Option<(&str, &str, &str)>) -> HorizontalPodAutoscaler {
    HorizontalPodAutoscaler {
        status: status.map(|(status, reason, message)| HorizontalPodAutoscalerStatus {
            conditions: Some(vec![
                HorizontalPodAutoscalerCondition {
                    type_: "AbleToScale".to_owned(),
                    status: "True".to_owned(),
                    reason: Some("SucceededGetScale".to_owned()),
                    ..HorizontalPodAutoscalerCondition::default()
                },
                HorizontalPodAutoscalerCondition {
                    type_: SCALING_ACTIVE.to_owned(),
                    status: status.to_owned(),
                    reason: Some(reason.to_owned()),
                    message: Some(message.to_owned()),
                    ..HorizontalPodAutoscalerCondition::default()
                },
            ]),
            desired_replicas: 2,
            ..HorizontalPodAutoscalerStatus::default()
        }),
        ..HorizontalPodAutoscaler::default()
    }
}

/// `AutoscalerActive` follows the autoscaler's `ScalingActive`: True, False with its reason and
/// message (a reason it does not know kept in the message), Unknown before it reports; it never
/// holds Ready back.
#[test]
fn autoscaler_active_follows_the_autoscalers_scaling_active_condition() {
    let app = autoscaled_app();
    let unable = "the HPA was unable to compute the replica count: did not receive metrics for any ready pods";
    let rows: [(Option<HorizontalPodAutoscaler>, &str, &str, &str); 5] = [
        (
            Some(autoscaler(Some(("True", "ValidMetricFound", "ok")))),
            "True",
            "ScalingActive",
            "shop-api computes replica counts",
        ),
        (
            Some(autoscaler(Some((
                "False",
                "FailedGetResourceMetric",
                unable,
            )))),
            "False",
            "FailedGetResourceMetric",
            "did not receive metrics for any ready pods",
        ),
        (
            Some(autoscaler(Some(("False", "SomethingNew", "new words")))),
            "False",
            SCALING_INACTIVE,
            "(SomethingNew): new words",
        ),
        (Some(autoscaler(None)), "Unknown", WAITING, "shop-api"),
        (None, "Unknown", WAITING, "shop-api"),
    ];
    for (observed, status, reason, message) in rows {
        let world = World {
            api_autoscaler: observed,
            ..migrated_world(&app, Some(deployment(IMAGE, 2, 2)))
        };
        let plan = plan_for(&app, &world);
        let active = condition_of(&plan, condition::AUTOSCALER_ACTIVE).expect("autoscaled");
        assert_eq!(
            (active.status.as_str(), active.reason.as_str()),
            (status, reason)
        );
        assert!(
            active.message.contains(message),
            "{message:?} not in {:?}",
            active.message
        );
        assert!(
            plan.progress.is_ready(),
            "{status} {reason} holds Ready back"
        );
    }
}

/// With both process types autoscaled, one inactive autoscaler makes the condition False; both
/// active make it True naming both; without autoscaling there is no condition.
#[test]
fn autoscaler_active_is_true_only_when_every_autoscaler_is_active() {
    let both = app_with(serde_json::json!({
        "api": {"autoscaling": {"minReplicas": 2, "maxReplicas": 6}},
        "worker": {"replicas": 1, "autoscaling": {"maxReplicas": 3}}
    }));
    let active = || Some(autoscaler(Some(("True", "ValidMetricFound", "ok"))));
    let world = World {
        api_autoscaler: active(),
        worker_autoscaler: Some(autoscaler(Some(("False", "ScalingDisabled", "zero")))),
        ..migrated_world(&both, Some(deployment(IMAGE, 2, 2)))
    };
    let plan = plan_for(&both, &world);
    let condition = condition_of(&plan, condition::AUTOSCALER_ACTIVE).expect("autoscaled");
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("False", "ScalingDisabled")
    );
    assert!(condition.message.contains("shop-worker"));
    let world = World {
        worker_autoscaler: active(),
        ..world
    };
    let plan = plan_for(&both, &world);
    let condition = condition_of(&plan, condition::AUTOSCALER_ACTIVE).expect("autoscaled");
    assert_eq!(condition.status, "True");
    assert!(condition.message.contains("shop-api and shop-worker"));
    let plain = app();
    let plan = plan_for(&plain, &rolled_out_world(&plain));
    assert_eq!(condition_of(&plan, condition::AUTOSCALER_ACTIVE), None);
}
