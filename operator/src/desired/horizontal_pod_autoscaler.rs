//! The HorizontalPodAutoscaler of one process type (`autoscaling/v2`), when its spec asks for
//! autoscaling: it targets the process type's Deployment, keeps the average utilisation of the
//! pods' requests near the targets, and scales down only after the stabilisation window.
//!
//! The scale-up rate and the scale-down policy are left to Kubernetes' defaults (at most double,
//! or four pods more, every 15 seconds; scale-down by the whole excess at once, after the window).

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HPAScalingRules, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};

use super::Context;
use crate::validate::Autoscaler;

/// The HorizontalPodAutoscaler `name` of `component`, scaling the Deployment of the same name.
pub(super) fn horizontal_pod_autoscaler(
    context: &Context<'_>,
    name: String,
    component: &str,
    autoscaler: &Autoscaler,
) -> HorizontalPodAutoscaler {
    let utilization = |resource: &str, percent: i32| MetricSpec {
        type_: "Resource".to_owned(),
        resource: Some(ResourceMetricSource {
            name: resource.to_owned(),
            target: MetricTarget {
                type_: "Utilization".to_owned(),
                average_utilization: Some(percent),
                ..MetricTarget::default()
            },
        }),
        ..MetricSpec::default()
    };
    let metrics = [
        autoscaler
            .cpu_utilization
            .map(|cpu| utilization("cpu", cpu)),
        autoscaler
            .memory_utilization
            .map(|memory| utilization("memory", memory)),
    ]
    .into_iter()
    .flatten()
    .collect();
    HorizontalPodAutoscaler {
        metadata: context.metadata(name.clone(), component),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name,
            },
            min_replicas: Some(autoscaler.min_replicas),
            max_replicas: autoscaler.max_replicas,
            metrics: Some(metrics),
            behavior: Some(HorizontalPodAutoscalerBehavior {
                scale_down: Some(HPAScalingRules {
                    stabilization_window_seconds: Some(
                        autoscaler.scale_down_stabilization_seconds(),
                    ),
                    ..HPAScalingRules::default()
                }),
                scale_up: None,
            }),
        }),
        status: None,
    }
}
