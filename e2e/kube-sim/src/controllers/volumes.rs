//! PersistentVolumeClaims whose volumes hold data: a directory per claim, bound at once, kept
//! while the claim exists and removed with it.
//!
//! Rules followed (Kubernetes documentation, "Persistent Volumes" and "Storage Classes"):
//! - a claim that names no `storageClassName` gets the cluster's default class at admission
//!   (the `DefaultStorageClass` admission plugin); kube-sim's default class is [`DEFAULT_STORAGE_CLASS`],
//!   `standard`, as on kind;
//! - "Storage Object in Use Protection": every claim gets the finalizer [`PVC_PROTECTION`] at
//!   admission, and a deleted claim stays (`Terminating`) until no pod that uses it is left (a pod
//!   uses a claim while it exists and is neither `Succeeded` nor `Failed`); then the finalizer is
//!   removed and the claim goes;
//! - dynamic provisioning binds a claim to a new volume `pvc-<claim uid>` (`spec.volumeName`)
//!   and the claim reports `status.phase: Bound` with the volume's `accessModes` and `capacity`
//!   (the requested `storage`);
//! - a dynamically provisioned volume has reclaim policy `Delete`: when its claim is gone, the
//!   volume and its data are deleted.
//!
//! Each claim's volume is a directory `<state dir>/volumes/<claim uid>` ([`Volumes`]). What runs
//! on a volume (a CNPG instance's Postgres) registers with [`Volumes::attach`], and is stopped
//! before the directory is removed. No PersistentVolume objects are served.

use std::any::Any;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::error::{Error, Result, kube_error};
use super::pods::is_terminating;
use super::{ControllersConfig, FIELD_MANAGER};
use crate::admission::{
    AdmissionContext, AdmissionHook, AdmissionRequest, Operation, Rejection as ApiRejection,
};

/// The finalizer of "Storage Object in Use Protection".
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";

/// The storage class a claim gets when it names none (kind's default class).
pub const DEFAULT_STORAGE_CLASS: &str = "standard";

/// What runs on a volume; dropping it stops that (blocking is allowed).
pub type Attachment = Arc<dyn Any + Send + Sync>;

/// The volumes' directories and what is attached to them. Shared by the claim controller and the
/// CNPG simulation.
pub struct Volumes {
    root: PathBuf,
    _temporary: Option<tempfile::TempDir>,
    attached: Mutex<HashMap<String, Attachment>>,
    /// Volumes deleted: never created again (a late user of a deleted claim gets an error).
    deleted: Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for Volumes {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Volumes")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// Whether `uid` can name a directory (a UID: letters, digits and dashes).
fn is_safe_uid(uid: &str) -> bool {
    !uid.is_empty() && uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

impl Volumes {
    /// The volumes under `state_dir/volumes`, or under a temporary directory removed when this
    /// value is dropped.
    pub fn new(state_dir: Option<&Path>) -> Result<Self> {
        let io = |action: &str| {
            let action = action.to_owned();
            move |source| Error::Io { action, source }
        };
        let (root, temporary) = match state_dir {
            Some(dir) => (dir.join("volumes"), None),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("kube-sim-state-")
                    .tempdir()
                    .map_err(io("creating kube-sim's state directory"))?;
                (dir.path().join("volumes"), Some(dir))
            }
        };
        std::fs::create_dir_all(&root).map_err(io(&format!("creating {}", root.display())))?;
        Ok(Volumes {
            root,
            _temporary: temporary,
            attached: Mutex::new(HashMap::new()),
            deleted: Mutex::new(BTreeSet::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Attachment>> {
        self.attached.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The directory of the volume of claim `uid`, created if missing.
    pub fn path(&self, uid: &str) -> Result<PathBuf> {
        if !is_safe_uid(uid) {
            return Err(Error::InvalidObject {
                object: "PersistentVolumeClaim".to_owned(),
                field: "metadata.uid".to_owned(),
                message: format!("{uid:?} cannot name a volume directory"),
            });
        }
        if self
            .deleted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(uid)
        {
            return Err(Error::InvalidObject {
                object: "PersistentVolumeClaim".to_owned(),
                field: "metadata.uid".to_owned(),
                message: format!("the volume of claim {uid} has been deleted"),
            });
        }
        let path = self.root.join(uid);
        std::fs::create_dir_all(&path).map_err(|source| Error::Io {
            action: format!("creating the volume directory {}", path.display()),
            source,
        })?;
        Ok(path)
    }

    /// The UIDs of the volumes that have a directory.
    pub fn on_disk(&self) -> BTreeSet<String> {
        std::fs::read_dir(&self.root)
            .map(|entries| {
                entries
                    .filter_map(std::result::Result::ok)
                    .filter_map(|entry| entry.file_name().into_string().ok())
                    .filter(|name| is_safe_uid(name))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What is attached to volume `uid`, if it is a `T`.
    pub fn attached<T: Any + Send + Sync>(&self, uid: &str) -> Option<Arc<T>> {
        let attachment = self.lock().get(uid).cloned()?;
        attachment.downcast::<T>().ok()
    }

    /// Attaches `attachment` to volume `uid` (replacing, and returning, what was attached).
    pub fn attach(&self, uid: &str, attachment: Attachment) -> Option<Attachment> {
        self.lock().insert(uid.to_owned(), attachment)
    }

    /// Whether volume `uid` has been deleted.
    pub fn is_deleted(&self, uid: &str) -> bool {
        self.deleted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(uid)
    }

    /// Detaches what is attached to volume `uid`; the caller drops it (off the async runtime).
    pub fn detach(&self, uid: &str) -> Option<Attachment> {
        self.lock().remove(uid)
    }

    /// The volumes something is attached to.
    pub fn attached_uids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Deletes volume `uid`: stops what is attached, then removes its directory.
    pub async fn delete(&self, uid: &str) -> Result<()> {
        if !is_safe_uid(uid) {
            return Ok(());
        }
        self.deleted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid.to_owned());
        if let Some(attachment) = self.detach(uid) {
            let _ = tokio::task::spawn_blocking(move || drop(attachment)).await;
        }
        let path = self.root.join(uid);
        match tokio::fs::remove_dir_all(&path).await {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Io {
                action: format!("removing the volume directory {}", path.display()),
                source,
            }),
        }
    }

    /// Stops everything attached (the sim stops), blocking.
    pub fn detach_all_now(&self) {
        let attachments: Vec<Attachment> = self.lock().drain().map(|(_, a)| a).collect();
        drop(attachments);
    }
}

impl Drop for Volumes {
    fn drop(&mut self) {
        self.detach_all_now();
    }
}

/// The claims a pod uses (`spec.volumes[].persistentVolumeClaim.claimName`).
pub fn claims_of(pod: &Pod) -> Vec<&str> {
    pod.spec
        .iter()
        .flat_map(|spec| spec.volumes.iter().flatten())
        .filter_map(|volume| volume.persistent_volume_claim.as_ref())
        .map(|source| source.claim_name.as_str())
        .collect()
}

/// Whether `pod` keeps claim `claim` in use ("Storage Object in Use Protection": a pod that
/// exists and is neither Succeeded nor Failed).
pub fn uses_claim(pod: &Pod, claim: &str) -> bool {
    let finished = matches!(super::pods::phase(pod), "Succeeded" | "Failed");
    !finished && claims_of(pod).contains(&claim)
}

/// What the claim controller does for one claim.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimPlan {
    /// Bind the claim to its volume: `spec.volumeName` and this status.
    Bind {
        /// `pvc-<claim uid>`.
        volume_name: String,
        /// The Bound status.
        status: Value,
    },
    /// Remove [`PVC_PROTECTION`]: the claim is deleted and no pod uses it any more.
    Release,
    /// Nothing to do.
    Nothing,
}

/// The status of a claim bound to its volume: phase Bound, the claim's access modes (default
/// `ReadWriteOnce`) and its requested storage as capacity.
pub fn bound_status(claim: &PersistentVolumeClaim) -> Value {
    let spec = claim.spec.as_ref();
    let access_modes = spec
        .and_then(|spec| spec.access_modes.clone())
        .filter(|modes| !modes.is_empty())
        .unwrap_or_else(|| vec!["ReadWriteOnce".to_owned()]);
    let storage = spec
        .and_then(|spec| spec.resources.as_ref())
        .and_then(|resources| resources.requests.as_ref())
        .and_then(|requests| requests.get("storage"))
        .map(|quantity| quantity.0.clone());
    let mut status = json!({"phase": "Bound", "accessModes": access_modes});
    if let Some(storage) = storage {
        status["capacity"] = json!({ "storage": storage });
    }
    status
}

/// The claim controller's decision for `claim`, given the pods of its namespace.
pub fn plan_claim(claim: &PersistentVolumeClaim, pods: &[Pod]) -> ClaimPlan {
    let name = claim.name_any();
    if is_terminating(&claim.metadata) {
        let protected = claim
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == PVC_PROTECTION);
        if protected && !pods.iter().any(|pod| uses_claim(pod, &name)) {
            return ClaimPlan::Release;
        }
        return ClaimPlan::Nothing;
    }
    let uid = claim.uid().unwrap_or_default();
    let volume_name = format!("pvc-{uid}");
    let status = bound_status(claim);
    let bound = claim
        .spec
        .as_ref()
        .and_then(|spec| spec.volume_name.as_deref())
        == Some(volume_name.as_str())
        && serde_json::to_value(&claim.status).ok().as_ref() == Some(&status);
    if bound {
        ClaimPlan::Nothing
    } else {
        ClaimPlan::Bind {
            volume_name,
            status,
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(values: Vec<Value>) -> Vec<T> {
    values
        .into_iter()
        .filter_map(|value| serde_json::from_value(value).ok())
        .collect()
}

/// Admission of new claims: the default storage class, the in-use protection finalizer, and the
/// namespace's ResourceQuotas ([`super::admission::check_claim_quotas`]; the quotas' `used` is
/// updated in the same step, as for pods).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClaimAdmission;

impl AdmissionHook for ClaimAdmission {
    fn admit(
        &self,
        request: &AdmissionRequest<'_>,
        object: &mut Value,
        context: &mut AdmissionContext<'_>,
    ) -> std::result::Result<(), ApiRejection> {
        if !(request.group.is_empty()
            && request.resource == "persistentvolumeclaims"
            && request.subresource.is_none()
            && request.operation == Operation::Create)
        {
            return Ok(());
        }
        if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut)
            && spec
                .get("storageClassName")
                .is_none_or(|class| class.is_null())
        {
            spec.insert("storageClassName".to_owned(), json!(DEFAULT_STORAGE_CLASS));
        }
        if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            let finalizers = metadata.entry("finalizers").or_insert_with(|| json!([]));
            if let Some(list) = finalizers.as_array_mut()
                && !list.iter().any(|f| f.as_str() == Some(PVC_PROTECTION))
            {
                list.push(json!(PVC_PROTECTION));
            }
        }
        let claim: PersistentVolumeClaim =
            serde_json::from_value(object.clone()).map_err(|error| ApiRejection {
                message: format!("kube-sim cannot read the claim for admission: {error}"),
            })?;
        let namespace = request.namespace;
        let quotas: Vec<k8s_openapi::api::core::v1::ResourceQuota> =
            parse(context.list("", "resourcequotas", Some(namespace)));
        let mut claims: Vec<PersistentVolumeClaim> =
            parse(context.list("", "persistentvolumeclaims", Some(namespace)));
        super::admission::check_claim_quotas(&claim, &quotas, &claims).map_err(|rejection| {
            ApiRejection {
                message: rejection.message,
            }
        })?;
        if quotas.is_empty() {
            return Ok(());
        }
        let pods: Vec<Pod> = parse(context.list("", "pods", Some(namespace)));
        claims.push(claim);
        for quota in &quotas {
            let status = super::admission::quota_status(
                quota,
                pods.iter(),
                claims.iter(),
                jiff::Timestamp::now(),
            );
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
    volumes: Arc<Volumes>,
}

async fn reconcile(claim: Arc<PersistentVolumeClaim>, context: Arc<Context>) -> Result<Action> {
    let namespace = claim.namespace().unwrap_or_default();
    let name = claim.name_any();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(context.client.clone(), &namespace);
    let pods: Vec<Pod> = if is_terminating(&claim.metadata) {
        Api::<Pod>::namespaced(context.client.clone(), &namespace)
            .list(&ListParams::default())
            .await
            .map_err(kube_error(format!("listing the pods of {namespace}")))?
            .items
    } else {
        Vec::new()
    };
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    match plan_claim(&claim, &pods) {
        ClaimPlan::Bind {
            volume_name,
            status,
        } => {
            context.volumes.path(&claim.uid().unwrap_or_default())?;
            if claim.spec.as_ref().and_then(|s| s.volume_name.as_deref())
                != Some(volume_name.as_str())
            {
                claims
                    .patch(
                        &name,
                        &params,
                        &Patch::Merge(json!({"spec": {"volumeName": volume_name}})),
                    )
                    .await
                    .map_err(kube_error(format!(
                        "binding PersistentVolumeClaim {namespace}/{name}"
                    )))?;
            }
            claims
                .patch_status(&name, &params, &Patch::Merge(json!({ "status": status })))
                .await
                .map_err(kube_error(format!(
                    "updating the status of PersistentVolumeClaim {namespace}/{name}"
                )))?;
            Ok(Action::await_change())
        }
        ClaimPlan::Release => {
            let finalizers: Vec<String> = claim
                .metadata
                .finalizers
                .iter()
                .flatten()
                .filter(|f| *f != PVC_PROTECTION)
                .cloned()
                .collect();
            claims
                .patch(
                    &name,
                    &params,
                    &Patch::Merge(json!({"metadata": {"finalizers": finalizers}})),
                )
                .await
                .map_err(kube_error(format!(
                    "releasing PersistentVolumeClaim {namespace}/{name}"
                )))?;
            Ok(Action::await_change())
        }
        // A deleted claim still in use: look again when its pods may have gone.
        ClaimPlan::Nothing if is_terminating(&claim.metadata) => {
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        ClaimPlan::Nothing => Ok(Action::await_change()),
    }
}

fn error_policy(
    _claim: Arc<PersistentVolumeClaim>,
    error: &Error,
    _context: Arc<Context>,
) -> Action {
    tracing::warn!(%error, "volume controller");
    Action::requeue(Duration::from_secs(2))
}

/// Sweeps in a row a volume may miss its claim before it is deleted although its claim was never
/// seen (a claim created a moment ago may not have reached this controller's cache yet).
const UNSEEN_SWEEPS: u32 = 5;

/// What the sweep remembers between runs.
#[derive(Debug, Default)]
struct SweepState {
    /// Claims seen in the cache.
    seen: BTreeSet<String>,
    /// Volumes whose claim was never seen, with the number of sweeps that missed it.
    missing: HashMap<String, u32>,
}

/// Deletes the volumes whose claim is gone (reclaim policy `Delete`): those of claims seen before
/// and not there any more, and those whose claim has not been seen in [`UNSEEN_SWEEPS`] sweeps.
async fn sweep(volumes: &Volumes, claims: &Store<PersistentVolumeClaim>, state: &mut SweepState) {
    let live: BTreeSet<String> = claims.state().iter().filter_map(|c| c.uid()).collect();
    state.seen.extend(live.iter().cloned());
    state.missing.retain(|uid, _| !live.contains(uid));
    let mut known = volumes.on_disk();
    known.extend(volumes.attached_uids());
    for uid in known.difference(&live) {
        let gone = state.seen.contains(uid) || {
            let misses = state.missing.entry(uid.clone()).or_insert(0);
            *misses += 1;
            *misses >= UNSEEN_SWEEPS
        };
        if !gone {
            continue;
        }
        match volumes.delete(uid).await {
            Ok(()) => {
                state.seen.remove(uid);
                state.missing.remove(uid);
            }
            Err(error) => tracing::warn!(%error, "deleting a volume"),
        }
    }
}

/// Runs the claim controller until `shutdown`.
pub async fn run(
    client: kube::Client,
    _config: Arc<ControllersConfig>,
    volumes: Arc<Volumes>,
    shutdown: CancellationToken,
) {
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let controller = Controller::new(claims, watcher::Config::default()).watches(
        pods,
        watcher::Config::default(),
        |pod: Pod| {
            let namespace = pod.namespace().unwrap_or_default();
            claims_of(&pod)
                .into_iter()
                .map(|claim| kube::runtime::reflector::ObjectRef::new(claim).within(&namespace))
                .collect::<Vec<_>>()
        },
    );
    let store = controller.store();
    let context = Arc::new(Context {
        client,
        volumes: volumes.clone(),
    });
    let stream = controller
        .run(reconcile, error_policy, context)
        .for_each(|_| async {});
    let sweeper = async move {
        // Only once the claims are listed: an empty store would look like every claim is gone.
        if store.wait_until_ready().await.is_err() {
            return;
        }
        let mut state = SweepState::default();
        loop {
            sweep(&volumes, &store, &mut state).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    tokio::select! {
        () = stream => {}
        () = sweeper => {}
        () = shutdown.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(value: Value) -> PersistentVolumeClaim {
        serde_json::from_value(value).expect("claim")
    }

    fn pod(value: Value) -> Pod {
        serde_json::from_value(value).expect("pod")
    }

    #[test]
    fn a_new_claim_is_bound_to_its_own_volume_with_its_requested_capacity() {
        let new = claim(json!({
            "metadata": {"name": "db-1", "uid": "u-1"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
        }));
        let ClaimPlan::Bind {
            volume_name,
            status,
        } = plan_claim(&new, &[])
        else {
            panic!("a new claim is bound");
        };
        assert_eq!(volume_name, "pvc-u-1");
        assert_eq!(
            status,
            json!({"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}})
        );
        let mut bound = new.clone();
        bound.spec.as_mut().expect("spec").volume_name = Some(volume_name);
        bound.status = serde_json::from_value(status).expect("status");
        assert_eq!(plan_claim(&bound, &[]), ClaimPlan::Nothing);
    }

    /// "Storage Object in Use Protection": a deleted claim stays while a running pod uses it; a
    /// finished pod does not hold it.
    #[test]
    fn a_deleted_claim_waits_for_the_pods_that_use_it() {
        let deleted = claim(json!({
            "metadata": {"name": "db-1", "uid": "u-1", "deletionTimestamp": "2026-01-01T00:00:00Z",
                "finalizers": [PVC_PROTECTION]},
            "spec": {}
        }));
        let user = |phase: &str| {
            pod(json!({
                "metadata": {"name": "db-1"},
                "spec": {"containers": [], "volumes": [{"name": "pgdata", "persistentVolumeClaim": {"claimName": "db-1"}}]},
                "status": {"phase": phase}
            }))
        };
        assert_eq!(plan_claim(&deleted, &[user("Running")]), ClaimPlan::Nothing);
        assert_eq!(
            plan_claim(&deleted, &[user("Succeeded")]),
            ClaimPlan::Release
        );
        assert_eq!(plan_claim(&deleted, &[]), ClaimPlan::Release);
    }

    /// Reclaim policy `Delete`: what runs on the volume is stopped (dropped) before the
    /// directory goes, and a deleted volume is never created again.
    #[tokio::test]
    async fn deleting_a_volume_stops_what_is_attached_and_removes_its_directory() {
        struct Server(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Server {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let state = tempfile::tempdir().expect("state dir");
        let volumes = Volumes::new(Some(state.path())).expect("volumes");
        let path = volumes.path("u-1").expect("path");
        std::fs::write(path.join("file"), b"data").expect("written");
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        volumes.attach("u-1", Arc::new(Server(stopped.clone())));
        assert!(volumes.attached::<Server>("u-1").is_some());
        volumes.delete("u-1").await.expect("deleted");
        assert!(stopped.load(std::sync::atomic::Ordering::SeqCst));
        assert!(!path.exists());
        assert!(volumes.path("u-1").is_err(), "not created again");
        assert!(volumes.on_disk().is_empty());
    }

    #[test]
    fn only_uids_name_volume_directories() {
        assert!(is_safe_uid("0b3c6f0e-4d7a-4f8e-9a51-2f6d1c0b7e11"));
        assert!(!is_safe_uid("../etc"));
        assert!(!is_safe_uid(""));
    }
}
