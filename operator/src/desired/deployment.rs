//! The Deployment of one process type (API or worker): `maxUnavailable: 0` rolling updates, the
//! shared pod template, the process type's scheduling.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{PodTemplateSpec, ResourceRequirements, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kumiko_crds::SchedulingSpec;

use super::Context;
use super::pod::{self, CREDENTIALS_CHECKSUM_ANNOTATION, Process};

/// What differs between the process types' Deployments.
pub(super) struct ProcessShape<'a> {
    pub(super) process: Process,
    pub(super) name: String,
    /// `None` when an autoscaler owns the replicas: the field is left out of what is applied.
    pub(super) replicas: Option<i32>,
    pub(super) command: Option<&'a Vec<String>>,
    pub(super) args: Option<&'a Vec<String>>,
    pub(super) resources: &'a ResourceRequirements,
    pub(super) scheduling: &'a SchedulingSpec,
}

/// The Deployment of `shape` at `image`.
pub(super) fn deployment(
    context: &Context<'_>,
    shape: &ProcessShape<'_>,
    image: &str,
) -> Deployment {
    let component = shape.process.name();
    let container = pod::container(
        context,
        shape.process,
        image,
        shape.command,
        shape.args,
        shape.resources,
    );
    let mut pod_spec = pod::pod_spec(context, container, "Always");
    let scheduling = shape.scheduling;
    pod_spec.node_selector =
        (!scheduling.node_selector.is_empty()).then(|| scheduling.node_selector.clone());
    pod_spec.tolerations =
        (!scheduling.tolerations.is_empty()).then(|| scheduling.tolerations.clone());
    pod_spec.affinity = scheduling.affinity.clone();
    pod_spec.topology_spread_constraints =
        Some(if scheduling.topology_spread_constraints.is_empty() {
            vec![TopologySpreadConstraint {
                max_skew: 1,
                topology_key: "kubernetes.io/hostname".to_owned(),
                when_unsatisfiable: "ScheduleAnyway".to_owned(),
                label_selector: Some(LabelSelector {
                    match_labels: Some(context.selector_labels(component)),
                    match_expressions: None,
                }),
                ..TopologySpreadConstraint::default()
            }]
        } else {
            scheduling.topology_spread_constraints.clone()
        });
    let annotations = context
        .observed
        .credentials_checksum
        .as_ref()
        .map(|checksum| {
            BTreeMap::from([(CREDENTIALS_CHECKSUM_ANNOTATION.to_owned(), checksum.clone())])
        });
    Deployment {
        metadata: context.metadata(shape.name.clone(), component),
        spec: Some(DeploymentSpec {
            replicas: shape.replicas,
            selector: LabelSelector {
                match_labels: Some(context.selector_labels(component)),
                match_expressions: None,
            },
            // Never fewer ready pods than desired during a rollout: one new pod at a time.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            revision_history_limit: Some(3),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(context.labels(component)),
                    annotations,
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}
