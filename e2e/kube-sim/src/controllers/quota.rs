//! ResourceQuota and LimitRange enforcement for pods, and the quota status controller.
//!
//! [`PodAdmission`] is registered with the API server's admission chain: on every pod creation it
//! applies LimitRange defaults, checks LimitRange bounds and quotas ([`super::admission`]),
//! binds the pod to the sim's single node (`spec.nodeName: kube-sim`, as the scheduler would;
//! this makes pod deletion graceful, as for any scheduled pod), and updates the `status.used`
//! of the namespace's quotas in the same step. [`run`] keeps `status.hard` and `status.used`
//! current as pods come, finish and go.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{LimitRange, PersistentVolumeClaim, Pod, ResourceQuota};
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::admission::{LIMIT_RANGER_ANNOTATION, admit_pod, quota_status};
use super::error::{Error, Result, kube_error};
use super::kubelet::env::NODE_NAME;
use super::{ControllersConfig, FIELD_MANAGER};
use crate::admission::{
    AdmissionContext, AdmissionHook, AdmissionRequest, Operation, Rejection as ApiRejection,
};

/// The admission hook for pod creation.
#[derive(Debug, Clone, Copy)]
pub struct PodAdmission {
    /// Bind new pods to the sim's node (only when a kubelet runs them).
    pub bind_to_node: bool,
}

fn parse_all<T: DeserializeOwned>(values: Vec<Value>) -> Vec<T> {
    values
        .into_iter()
        .filter_map(|value| serde_json::from_value(value).ok())
        .collect()
}

impl AdmissionHook for PodAdmission {
    fn admit(
        &self,
        request: &AdmissionRequest<'_>,
        object: &mut Value,
        context: &mut AdmissionContext<'_>,
    ) -> Result<(), ApiRejection> {
        if !(request.group.is_empty()
            && request.resource == "pods"
            && request.subresource.is_none()
            && request.operation == Operation::Create)
        {
            return Ok(());
        }
        let mut pod: Pod =
            serde_json::from_value(object.clone()).map_err(|error| ApiRejection {
                message: format!("kube-sim cannot read the pod for admission: {error}"),
            })?;
        let namespace = request.namespace;
        let ranges: Vec<LimitRange> = parse_all(context.list("", "limitranges", Some(namespace)));
        let quotas: Vec<ResourceQuota> =
            parse_all(context.list("", "resourcequotas", Some(namespace)));
        let pods: Vec<Pod> = parse_all(context.list("", "pods", Some(namespace)));
        admit_pod(&mut pod, &ranges, &quotas, &pods, jiff::Timestamp::now()).map_err(
            |rejection| ApiRejection {
                message: rejection.message,
            },
        )?;

        // Carry the mutations back into the stored object.
        if let Some(spec) = &pod.spec {
            for (key, containers) in [
                ("containers", Some(&spec.containers)),
                ("initContainers", spec.init_containers.as_ref()),
            ] {
                for (index, container) in containers.into_iter().flatten().enumerate() {
                    if let (Some(resources), Some(target)) = (
                        &container.resources,
                        object.pointer_mut(&format!("/spec/{key}/{index}")),
                    ) && let Ok(value) = serde_json::to_value(resources)
                    {
                        target["resources"] = value;
                    }
                }
            }
        }
        if let Some(note) = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|annotations| annotations.get(LIMIT_RANGER_ANNOTATION))
            && let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut)
        {
            let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
            annotations[LIMIT_RANGER_ANNOTATION] = json!(note);
        }
        if self.bind_to_node
            && let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut)
            && spec
                .get("nodeName")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        {
            spec.insert("nodeName".to_owned(), json!(NODE_NAME));
        }

        // The quotas' usage, with this pod counted.
        let mut counted = pods;
        counted.push(pod);
        let claims: Vec<PersistentVolumeClaim> =
            parse_all(context.list("", "persistentvolumeclaims", Some(namespace)));
        for quota in &quotas {
            let status = quota_status(quota, counted.iter(), claims.iter(), jiff::Timestamp::now());
            if quota.status.as_ref() != Some(&status)
                && let Ok(value) = serde_json::to_value(&status)
            {
                context.update_status("", "resourcequotas", namespace, &quota.name_any(), value);
            }
        }
        Ok(())
    }
}

struct Context {
    client: kube::Client,
}

async fn reconcile(quota: Arc<ResourceQuota>, context: Arc<Context>) -> Result<Action> {
    let namespace = quota.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let pods = pods
        .list(&ListParams::default())
        .await
        .map_err(kube_error(format!(
            "listing the pods of namespace {namespace}"
        )))?
        .items;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(context.client.clone(), &namespace);
    let claims = claims
        .list(&ListParams::default())
        .await
        .map_err(kube_error(format!(
            "listing the PersistentVolumeClaims of namespace {namespace}"
        )))?
        .items;
    let status = quota_status(&quota, pods.iter(), claims.iter(), jiff::Timestamp::now());
    if quota.status.as_ref() != Some(&status) {
        let api: Api<ResourceQuota> = Api::namespaced(context.client.clone(), &namespace);
        // `used` and `hard` are maps: a merge patch must remove the keys that went away.
        let mut patch = json!({ "status": status });
        for (field, current) in [("hard", &status.hard), ("used", &status.used)] {
            for key in quota
                .status
                .as_ref()
                .and_then(|s| {
                    if field == "hard" {
                        s.hard.as_ref()
                    } else {
                        s.used.as_ref()
                    }
                })
                .into_iter()
                .flat_map(|map| map.keys())
            {
                if !current.as_ref().is_some_and(|map| map.contains_key(key)) {
                    patch["status"][field][key] = Value::Null;
                }
            }
        }
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        api.patch_status(&quota.name_any(), &params, &Patch::Merge(patch))
            .await
            .map_err(kube_error(format!(
                "updating the status of ResourceQuota {namespace}/{}",
                quota.name_any()
            )))?;
    }
    Ok(Action::requeue(Duration::from_secs(60)))
}

fn error_policy(_quota: Arc<ResourceQuota>, error: &Error, _context: Arc<Context>) -> Action {
    tracing::debug!(%error, "quota controller");
    Action::requeue(Duration::from_millis(500))
}

/// Keeps every ResourceQuota's status current until `shutdown`.
pub async fn run(
    client: kube::Client,
    _config: Arc<ControllersConfig>,
    shutdown: CancellationToken,
) {
    let quotas: Api<ResourceQuota> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let controller = Controller::new(quotas, watcher::Config::default());
    let store = controller.store();
    let claim_store = store.clone();
    let stream = controller
        .watches(pods, watcher::Config::default(), move |pod: Pod| {
            let namespace = pod.namespace();
            store
                .state()
                .into_iter()
                .filter(|quota| quota.namespace() == namespace)
                .map(|quota| ObjectRef::from_obj(&*quota))
                .collect::<Vec<_>>()
        })
        .watches(
            claims,
            watcher::Config::default(),
            move |claim: PersistentVolumeClaim| {
                let namespace = claim.namespace();
                claim_store
                    .state()
                    .into_iter()
                    .filter(|quota| quota.namespace() == namespace)
                    .map(|quota| ObjectRef::from_obj(&*quota))
                    .collect::<Vec<_>>()
            },
        )
        .run(reconcile, error_policy, Arc::new(Context { client }))
        .for_each(|_| async {});
    tokio::select! {
        () = stream => {}
        () = shutdown.cancelled() => {}
    }
}
