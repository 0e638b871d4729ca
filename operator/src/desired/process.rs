//! The objects of one process type: the API's Deployment, Service and PodDisruptionBudget, the
//! worker's Deployment and PodDisruptionBudget, and each one's HorizontalPodAutoscaler when its
//! spec asks for autoscaling.

use super::deployment::{self, ProcessShape};
use super::horizontal_pod_autoscaler::horizontal_pod_autoscaler;
use super::pod::Process;
use super::pod_disruption_budget::pod_disruption_budget;
use super::service::service;
use super::{Context, ProcessObjects};

/// The API Deployment, Service (port 80 to the container's `http` port) and PodDisruptionBudget.
pub(super) fn api(context: &Context<'_>, image: &str) -> ProcessObjects {
    let api = &context.app.spec.api;
    let name = context.names().api.clone();
    let shape = ProcessShape {
        process: Process::Api,
        name: name.clone(),
        replicas: context.app.api_autoscaler.is_none().then_some(api.replicas),
        command: api.command.as_ref(),
        args: api.args.as_ref(),
        resources: &context.app.resources.api.requirements,
        scheduling: &api.scheduling,
    };
    ProcessObjects {
        deployment: deployment::deployment(context, &shape, image),
        service: Some(service(context)),
        pod_disruption_budget: pod_disruption_budget(context, name.clone(), Process::Api.name()),
        horizontal_pod_autoscaler: context.app.api_autoscaler.as_ref().map(|autoscaler| {
            horizontal_pod_autoscaler(context, name, Process::Api.name(), autoscaler)
        }),
    }
}

/// The worker Deployment and PodDisruptionBudget, or `None` when the spec has no worker.
pub(super) fn worker(context: &Context<'_>, image: &str) -> Option<ProcessObjects> {
    let worker = context.app.spec.worker.as_ref()?;
    let resources = context.app.resources.worker.as_ref()?;
    let name = context.names().worker.clone();
    let shape = ProcessShape {
        process: Process::Worker,
        name: name.clone(),
        replicas: context
            .app
            .worker_autoscaler
            .is_none()
            .then_some(worker.replicas),
        command: worker.command.as_ref(),
        args: worker.args.as_ref(),
        resources: &resources.requirements,
        scheduling: &worker.scheduling,
    };
    Some(ProcessObjects {
        deployment: deployment::deployment(context, &shape, image),
        service: None,
        pod_disruption_budget: pod_disruption_budget(context, name.clone(), Process::Worker.name()),
        horizontal_pod_autoscaler: context.app.worker_autoscaler.as_ref().map(|autoscaler| {
            horizontal_pod_autoscaler(context, name, Process::Worker.name(), autoscaler)
        }),
    })
}
