//! The API and worker Deployments, the API Service, their PodDisruptionBudgets, and the
//! ServiceAccount.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    PodTemplateSpec, ResourceRequirements, Service, ServiceAccount, ServicePort, ServiceSpec,
    TopologySpreadConstraint,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kumiko_crds::{SchedulingSpec, names};

use super::pod::{self, CREDENTIALS_CHECKSUM_ANNOTATION, HTTP_PORT_NAME, Process};
use super::{Context, ProcessObjects};

/// The ServiceAccount of the app's pods; its token is never mounted.
pub(super) fn desired_service_account(context: &Context<'_>) -> ServiceAccount {
    ServiceAccount {
        metadata: context.metadata(names::service_account(&context.name), "app"),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

struct ProcessShape<'a> {
    process: Process,
    name: String,
    replicas: i32,
    command: Option<&'a Vec<String>>,
    args: Option<&'a Vec<String>>,
    resources: Option<&'a ResourceRequirements>,
    scheduling: &'a SchedulingSpec,
}

fn desired_deployment(context: &Context<'_>, shape: &ProcessShape<'_>, image: &str) -> Deployment {
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
            replicas: Some(shape.replicas),
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

fn desired_pod_disruption_budget(
    context: &Context<'_>,
    name: String,
    component: &str,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: context.metadata(name, component),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(context.selector_labels(component)),
                match_expressions: None,
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

/// The API Deployment, Service (port 80 to the container's `http` port) and PodDisruptionBudget.
pub(super) fn desired_api(context: &Context<'_>, image: &str) -> ProcessObjects {
    let api = &context.app.spec.api;
    let name = names::api(&context.name);
    let shape = ProcessShape {
        process: Process::Api,
        name: name.clone(),
        replicas: api.replicas,
        command: api.command.as_ref(),
        args: api.args.as_ref(),
        resources: api.resources.as_ref(),
        scheduling: &api.scheduling,
    };
    let component = Process::Api.name();
    let service = Service {
        metadata: context.metadata(name.clone(), component),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(context.selector_labels(component)),
            ports: Some(vec![ServicePort {
                name: Some(HTTP_PORT_NAME.to_owned()),
                port: 80,
                target_port: Some(IntOrString::String(HTTP_PORT_NAME.to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    ProcessObjects {
        deployment: desired_deployment(context, &shape, image),
        service: Some(service),
        pod_disruption_budget: desired_pod_disruption_budget(context, name, component),
    }
}

/// The worker Deployment and PodDisruptionBudget, or `None` when the spec has no worker.
pub(super) fn desired_worker(context: &Context<'_>, image: &str) -> Option<ProcessObjects> {
    let worker = context.app.spec.worker.as_ref()?;
    let name = names::worker(&context.name);
    let shape = ProcessShape {
        process: Process::Worker,
        name: name.clone(),
        replicas: worker.replicas,
        command: worker.command.as_ref(),
        args: worker.args.as_ref(),
        resources: worker.resources.as_ref(),
        scheduling: &worker.scheduling,
    };
    Some(ProcessObjects {
        deployment: desired_deployment(context, &shape, image),
        service: None,
        pod_disruption_budget: desired_pod_disruption_budget(context, name, Process::Worker.name()),
    })
}
