//! The garbage collector, namespace controller and CRD finalizer, run asynchronously after writes
//! (as kube-controller-manager and kube-apiserver's finalizer controllers do).
//!
//! Rules (Kubernetes "Garbage Collection" and "Owners and Dependents"):
//! - a dependent whose owners (by `ownerReferences[].uid`) are all gone is deleted in the
//!   background; references to owners that are gone are removed when other owners remain;
//!   a namespaced dependent's owner must be in the same namespace or cluster-scoped;
//! - an owner deleting with the `foregroundDeletion` finalizer gets its dependents deleted
//!   (foreground too); the finalizer is removed once no dependent with `blockOwnerDeletion: true`
//!   remains, and the owner then goes;
//! - an owner deleting with the `orphan` finalizer has its references removed from its dependents,
//!   then the finalizer removed;
//! - a terminating Namespace has its contents deleted, then its `kubernetes` finalizer removed;
//! - a deleting CRD has its custom resources deleted, then its cleanup finalizer removed.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::cluster::{Cluster, EventKind, ObjKey, State};
use crate::crd::CLEANUP_FINALIZER;
use crate::meta;
use crate::registry::StoreKey;
use crate::write::{
    DeleteOptions, FOREGROUND, ORPHAN, Propagation, delete_locked, deletion_can_complete,
    finalize_delete,
};

/// Runs the collector until the cluster is dropped: after every wake-up, and every second.
pub(crate) async fn run(cluster: std::sync::Weak<Cluster>) {
    loop {
        let Some(cl) = cluster.upgrade() else { return };
        {
            let mut state = cl.lock();
            for _ in 0..32 {
                if !collect(&cl, &mut state) {
                    break;
                }
            }
        }
        let wake = async {
            tokio::select! {
                _ = cl.gc_wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        };
        wake.await;
        drop(cl);
    }
}

type ObjRef = ObjKey;

/// Copies of the objects at `keys` that still exist.
fn objects_at<'a>(
    state: &State,
    keys: impl IntoIterator<Item = &'a ObjKey>,
) -> Vec<(StoreKey, Value)> {
    keys.into_iter()
        .filter_map(|(key, ns, name)| Some((key.clone(), state.get(key, ns, name)?.clone())))
        .collect()
}

/// Copies of the objects being deleted.
fn deleting_objects(state: &State) -> Vec<(StoreKey, Value)> {
    objects_at(state, &state.gc_index.deleting)
}

/// Copies of the objects whose owner references name `uid`.
fn dependents_of(state: &State, uid: &str) -> Vec<(StoreKey, Value)> {
    state
        .gc_index
        .dependents
        .get(uid)
        .map(|keys| objects_at(state, keys))
        .unwrap_or_default()
}

/// The addresses of every object in namespace `ns`.
fn namespace_contents(state: &State, ns: &str) -> Vec<ObjRef> {
    state
        .stores
        .iter()
        .flat_map(|(key, store)| {
            store
                .range((ns.to_owned(), String::new())..)
                .take_while(move |((ons, _), _)| ons == ns)
                .map(move |((ons, name), _)| (key.clone(), ons.clone(), name.clone()))
        })
        .collect()
}

/// Whether one of `obj`'s owner references names an owner that is gone (or lives in another
/// namespace, which Kubernetes treats as absent).
fn has_absent_owner(state: &State, obj: &Value) -> bool {
    let Some(refs) = obj
        .get("metadata")
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
    else {
        return false;
    };
    let ns = meta::namespace(obj);
    refs.iter().any(|r| {
        let uid = r.get("uid").and_then(Value::as_str).unwrap_or_default();
        !matches!(state.by_uid(uid), Some((_, owner))
            if meta::namespace(owner).is_empty() || meta::namespace(owner) == ns)
    })
}

fn remove_finalizer(cl: &Cluster, state: &mut State, key: &StoreKey, obj: &Value, fin: &str) {
    let mut new = obj.clone();
    let fins: Vec<String> = meta::finalizers(obj)
        .into_iter()
        .filter(|f| f != fin)
        .collect();
    meta::set_finalizers(&mut new, &fins);
    store_or_finish(cl, state, key, obj, new);
}

fn store_or_finish(cl: &Cluster, state: &mut State, key: &StoreKey, old: &Value, new: Value) {
    if meta::is_deleting(&new) && deletion_can_complete(&new) {
        finalize_delete(cl, state, key, new, Some(old.clone()));
    } else if &new != old {
        state.commit(&cl.events, key, new, EventKind::Modified, Some(old.clone()));
    }
}

fn delete(cl: &Cluster, state: &mut State, r: &ObjRef, propagation: Propagation) {
    let opts = DeleteOptions {
        propagation: Some(propagation),
        ..Default::default()
    };
    // Already gone or refused: nothing to do.
    let _ = delete_locked(cl, state, &r.0, &r.1, &r.2, &opts);
}

fn obj_ref(key: &StoreKey, obj: &Value) -> ObjRef {
    (
        key.clone(),
        meta::namespace(obj).to_string(),
        meta::name(obj).to_string(),
    )
}

/// One pass; whether anything changed.
pub(crate) fn collect(cl: &Cluster, state: &mut State) -> bool {
    let rv_before = state.rv;
    let deleting = deleting_objects(state);

    for (key, obj) in &deleting {
        let uid = meta::uid(obj);
        let fins = meta::finalizers(obj);
        if fins.iter().any(|f| f == ORPHAN) {
            for (dk, dep) in &dependents_of(state, uid) {
                let Some(current) = state
                    .get(dk, meta::namespace(dep), meta::name(dep))
                    .cloned()
                else {
                    continue;
                };
                let mut new = current.clone();
                let refs: Vec<Value> = meta::owner_references(&current)
                    .into_iter()
                    .filter(|r| r.get("uid").and_then(Value::as_str) != Some(uid))
                    .collect();
                set_owner_refs(&mut new, refs);
                store_or_finish(cl, state, dk, &current, new);
            }
            if let Some(current) = state
                .get(key, meta::namespace(obj), meta::name(obj))
                .cloned()
            {
                remove_finalizer(cl, state, key, &current, ORPHAN);
            }
        } else if fins.iter().any(|f| f == FOREGROUND) {
            let deps = dependents_of(state, uid);
            for (dk, dep) in &deps {
                if !meta::is_deleting(dep) {
                    delete(cl, state, &obj_ref(dk, dep), Propagation::Foreground);
                }
            }
            let blocking = deps.iter().any(|(dk, dep)| {
                state
                    .get(dk, meta::namespace(dep), meta::name(dep))
                    .is_some()
                    && meta::owner_references(dep).iter().any(|r| {
                        r.get("uid").and_then(Value::as_str) == Some(uid)
                            && r.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true)
                    })
            });
            if !blocking
                && let Some(current) = state
                    .get(key, meta::namespace(obj), meta::name(obj))
                    .cloned()
            {
                remove_finalizer(cl, state, key, &current, FOREGROUND);
            }
        }
    }

    // Dependents of owners that are gone.
    let candidates = std::mem::take(&mut state.gc_index.maybe_orphaned);
    let orphaned: Vec<(StoreKey, Value)> = objects_at(state, &candidates)
        .into_iter()
        .filter(|(_, o)| has_absent_owner(state, o))
        .collect();
    for (key, snapshot) in &orphaned {
        // Earlier steps of this pass may have changed or removed it.
        let Some(current) = state
            .get(key, meta::namespace(snapshot), meta::name(snapshot))
            .cloned()
        else {
            continue;
        };
        let obj = &current;
        let refs = meta::owner_references(obj);
        if refs.is_empty() {
            continue;
        }
        let ns = meta::namespace(obj);
        let mut present = Vec::new();
        let mut foreground_owner = false;
        for r in &refs {
            let uid = r.get("uid").and_then(Value::as_str).unwrap_or_default();
            match state.by_uid(uid) {
                Some((_, owner))
                    if meta::namespace(owner).is_empty() || meta::namespace(owner) == ns =>
                {
                    if meta::is_deleting(owner)
                        && meta::finalizers(owner).iter().any(|f| f == FOREGROUND)
                    {
                        foreground_owner = true;
                    }
                    present.push(r.clone());
                }
                _ => {}
            }
        }
        if present.len() == refs.len() {
            continue;
        }
        if present.is_empty() {
            if !meta::is_deleting(obj) {
                delete(cl, state, &obj_ref(key, obj), Propagation::Background);
            }
        } else if !foreground_owner {
            let mut new = obj.clone();
            set_owner_refs(&mut new, present);
            store_or_finish(cl, state, key, obj, new);
        }
    }

    // Terminating namespaces and deleting CRDs.
    let deleting = deleting_objects(state);
    for (key, obj) in &deleting {
        if key.group.is_empty() && key.plural == "namespaces" {
            let ns = meta::name(obj).to_string();
            let contents = objects_at(state, &namespace_contents(state, &ns));
            for (ck, c) in &contents {
                if !meta::is_deleting(c) {
                    delete(cl, state, &obj_ref(ck, c), Propagation::Background);
                }
            }
            let remaining = !namespace_contents(state, &ns).is_empty();
            if !remaining && let Some(current) = state.get(key, "", &ns).cloned() {
                let mut new = current.clone();
                if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.insert("finalizers".into(), json!([]));
                    spec.remove("finalizers");
                }
                store_or_finish(cl, state, key, &current, new);
            }
        } else if key.group == "apiextensions.k8s.io"
            && meta::finalizers(obj).iter().any(|f| f == CLEANUP_FINALIZER)
        {
            let group = meta::get_path(obj, &["spec", "group"])
                .and_then(Value::as_str)
                .unwrap_or_default();
            let plural = meta::get_path(obj, &["spec", "names", "plural"])
                .and_then(Value::as_str)
                .unwrap_or_default();
            let crs = StoreKey {
                group: group.into(),
                plural: plural.into(),
            };
            let items: Vec<Value> = state
                .store(&crs)
                .map(|s| s.values().map(|item| Value::clone(item)).collect())
                .unwrap_or_default();
            for item in &items {
                if !meta::is_deleting(item) {
                    delete(cl, state, &obj_ref(&crs, item), Propagation::Background);
                }
            }
            if state.store(&crs).is_none_or(|s| s.is_empty())
                && let Some(current) = state.get(key, "", meta::name(obj)).cloned()
            {
                remove_finalizer(cl, state, key, &current, CLEANUP_FINALIZER);
            }
        }
    }
    state.rv != rv_before
}

fn set_owner_refs(obj: &mut Value, refs: Vec<Value>) {
    let meta = meta::meta_mut(obj);
    if refs.is_empty() {
        meta.remove("ownerReferences");
    } else {
        meta.insert("ownerReferences".into(), Value::Array(refs));
    }
}

/// Starts the collector for a cluster.
pub(crate) fn spawn(cluster: &Arc<Cluster>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(Arc::downgrade(cluster)))
}
