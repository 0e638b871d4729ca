//! Admission hooks: functions the server calls, in-process and under its lock, before it stores a
//! created or updated object. A hook may change the object (mutating admission, e.g. LimitRange
//! defaults), read other objects, queue status updates of other objects that are stored in the same
//! step (e.g. a ResourceQuota's `status.used`), or reject the request: the client then gets
//! `403 Forbidden` with `<resource> "<name>" is forbidden: <message>`.
//!
//! Hooks run after defaulting and validation (as kube-apiserver runs its validating admission
//! after the type's validation), for create and update, never for dry-run side effects: in a
//! dry-run request queued status updates are dropped. A built-in object a hook changed is
//! validated again before it is stored, because kube-apiserver validates after its mutating
//! admission (a LimitRange default can make a pod invalid).

use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::cluster::State;
use crate::registry::StoreKey;

/// The operation being admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// A create (POST, or a server-side apply that creates).
    Create,
    /// An update (PUT, PATCH, apply) of the main resource or a subresource.
    Update,
}

/// What is being admitted.
#[derive(Debug)]
pub struct AdmissionRequest<'a> {
    /// Create or update.
    pub operation: Operation,
    /// API group (`""` for core).
    pub group: &'a str,
    /// Version the request used.
    pub version: &'a str,
    /// Plural resource, e.g. `pods`.
    pub resource: &'a str,
    /// Kind, e.g. `Pod`.
    pub kind: &'a str,
    /// Subresource, e.g. `status`.
    pub subresource: Option<&'a str>,
    /// Namespace (`""` for cluster-scoped objects).
    pub namespace: &'a str,
    /// Object name.
    pub name: &'a str,
    /// The stored object, on updates.
    pub old_object: Option<&'a Value>,
    /// Whether the request is a dry run.
    pub dry_run: bool,
}

/// Why a request was not admitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The message after `is forbidden: `.
    pub message: String,
}

/// Read access to the cluster and a queue of status updates, for hooks.
pub struct AdmissionContext<'s> {
    pub(crate) state: &'s State,
    pub(crate) status_updates: Vec<(StoreKey, String, String, Value)>,
}

impl std::fmt::Debug for AdmissionContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionContext").finish_non_exhaustive()
    }
}

impl<'s> AdmissionContext<'s> {
    pub(crate) fn new(state: &'s State) -> Self {
        AdmissionContext {
            state,
            status_updates: Vec::new(),
        }
    }

    /// The objects of a resource (`group`, plural) in a namespace, or in all when `None`.
    pub fn list(&self, group: &str, resource: &str, namespace: Option<&str>) -> Vec<Value> {
        let key = StoreKey {
            group: group.into(),
            plural: resource.into(),
        };
        self.state
            .store(&key)
            .map(|s| crate::cluster::in_scope(s, namespace).cloned().collect())
            .unwrap_or_default()
    }

    /// One object.
    pub fn get(&self, group: &str, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = StoreKey {
            group: group.into(),
            plural: resource.into(),
        };
        self.state.get(&key, namespace, name).cloned()
    }

    /// Queues a replacement of another object's `status`, stored (with its own resourceVersion and
    /// watch event) right after the admitted object, and only if it is admitted and not a dry run.
    pub fn update_status(
        &mut self,
        group: &str,
        resource: &str,
        namespace: &str,
        name: &str,
        status: Value,
    ) {
        self.status_updates.push((
            StoreKey {
                group: group.into(),
                plural: resource.into(),
            },
            namespace.into(),
            name.into(),
            status,
        ));
    }
}

/// An admission hook.
pub trait AdmissionHook: Send + Sync {
    /// Admits (possibly after changing `object`) or rejects a request.
    fn admit(
        &self,
        request: &AdmissionRequest<'_>,
        object: &mut Value,
        context: &mut AdmissionContext<'_>,
    ) -> Result<(), Rejection>;
}

impl<F> AdmissionHook for F
where
    F: Fn(&AdmissionRequest<'_>, &mut Value, &mut AdmissionContext<'_>) -> Result<(), Rejection>
        + Send
        + Sync,
{
    fn admit(
        &self,
        request: &AdmissionRequest<'_>,
        object: &mut Value,
        context: &mut AdmissionContext<'_>,
    ) -> Result<(), Rejection> {
        self(request, object, context)
    }
}

/// The registered hooks, called in registration order.
#[derive(Default)]
pub struct AdmissionChain {
    hooks: RwLock<Vec<Arc<dyn AdmissionHook>>>,
}

impl std::fmt::Debug for AdmissionChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionChain").finish_non_exhaustive()
    }
}

impl AdmissionChain {
    /// Registers a hook; it is called for every create and update of every resource.
    pub fn register(&self, hook: Arc<dyn AdmissionHook>) {
        self.hooks
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(hook);
    }

    pub(crate) fn hooks(&self) -> Vec<Arc<dyn AdmissionHook>> {
        self.hooks.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
