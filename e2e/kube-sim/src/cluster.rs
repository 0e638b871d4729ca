//! The cluster state: every object, the global resourceVersion, the bounded event history, and the
//! read paths (get, list). Writes live in [`crate::write`], watches in [`crate::watch`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast};

use crate::admission::AdmissionChain;
use crate::authn::Authenticator;
use crate::faults::Faults;
use crate::logs::PodLogs;
use crate::meta;
use crate::registry::{Registry, ResourceType, StoreKey};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;

/// Tunables of the simulated API server.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// How many watch events are kept for resuming watches; older resourceVersions answer 410.
    pub event_history: usize,
    /// How often a watch that asked for bookmarks gets one.
    pub bookmark_interval: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            event_history: 10_000,
            bookmark_interval: Duration::from_secs(10),
        }
    }
}

/// The type of a watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `ADDED`.
    Added,
    /// `MODIFIED`.
    Modified,
    /// `DELETED`.
    Deleted,
}

impl EventKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// One change to one object, as kept in the history and sent to watchers.
#[derive(Debug)]
pub struct WatchEvent {
    /// The resourceVersion of the change.
    pub rv: u64,
    /// What happened.
    pub kind: EventKind,
    /// Which store.
    pub key: StoreKey,
    /// The object after the change (for deletions: the last state, with the deletion's rv):
    /// the very value the store holds, shared, not a copy.
    pub object: Arc<Value>,
    /// The object before the change, if any (to turn selector exits into `DELETED`): the value
    /// the store held until this change, shared with the event that stored it.
    pub old: Option<Arc<Value>>,
}

/// A paged list's remaining items, kept so that `continue` serves a consistent snapshot.
#[derive(Debug)]
pub(crate) struct Continuation {
    pub rv: u64,
    pub items: Vec<Arc<Value>>,
}

/// One store: the objects of one resource, by (namespace, name). Each object is shared with the
/// watch events that carry it (the history and the watchers), so that keeping a version for them
/// costs no copy.
pub(crate) type Store = BTreeMap<(String, String), Arc<Value>>;

/// Everything behind the lock.
#[derive(Debug)]
pub(crate) struct State {
    pub rv: u64,
    pub registry: Registry,
    pub stores: BTreeMap<StoreKey, Store>,
    pub history: VecDeque<Arc<WatchEvent>>,
    /// Events with rv at or below this are no longer in the history.
    pub compacted_rv: u64,
    pub uids: HashMap<String, (StoreKey, String, String)>,
    pub next_ip: u32,
    /// The loopback block ClusterIPs come from.
    pub ip_block: crate::cluster_ips::IpBlock,
    pub continuations: BTreeMap<u64, Continuation>,
    pub next_continuation: u64,
    pub history_limit: usize,
    /// The garbage collector's indexes, kept up to date by [`State::commit`].
    pub gc_index: GcIndex,
}

/// An object's address: its store, namespace and name.
pub(crate) type ObjKey = (StoreKey, String, String);

/// What the garbage collector needs without scanning every object after every write (the way
/// kube-controller-manager keeps a graph of owners and dependents fed by its informers).
#[derive(Debug, Default)]
pub(crate) struct GcIndex {
    /// Objects with `metadata.deletionTimestamp` set.
    pub deleting: BTreeSet<ObjKey>,
    /// Owner uid → the objects whose `ownerReferences` name it.
    pub dependents: HashMap<String, BTreeSet<ObjKey>>,
    /// Objects whose owners may be gone: written with owner references, or dependents of an
    /// object that was just deleted. The collector drains this set.
    pub maybe_orphaned: BTreeSet<ObjKey>,
}

impl GcIndex {
    fn owner_uids(obj: &Value) -> impl Iterator<Item = &str> {
        obj.get("metadata")
            .and_then(|m| m.get("ownerReferences"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| r.get("uid").and_then(Value::as_str))
    }

    /// Forgets what `previous` (the stored object about to be replaced or removed) contributed.
    fn remove(&mut self, at: &ObjKey, previous: &Value) {
        self.deleting.remove(at);
        for uid in Self::owner_uids(previous) {
            if let Some(set) = self.dependents.get_mut(uid) {
                set.remove(at);
                if set.is_empty() {
                    self.dependents.remove(uid);
                }
            }
        }
    }

    /// Records what the stored object `current` contributes.
    fn insert(&mut self, at: &ObjKey, current: &Value) {
        if meta::is_deleting(current) {
            self.deleting.insert(at.clone());
        }
        let mut has_owner = false;
        for uid in Self::owner_uids(current) {
            has_owner = true;
            self.dependents
                .entry(uid.to_owned())
                .or_default()
                .insert(at.clone());
        }
        if has_owner {
            self.maybe_orphaned.insert(at.clone());
        }
    }

    /// An object with `uid` is gone: its dependents may now be orphans.
    fn owner_gone(&mut self, uid: &str) {
        if let Some(set) = self.dependents.get(uid) {
            self.maybe_orphaned.extend(set.iter().cloned());
        }
    }
}

/// The simulated cluster: shared by the HTTP layer, the garbage collector and in-process hooks.
pub struct Cluster {
    pub(crate) state: Mutex<State>,
    pub(crate) events: broadcast::Sender<Arc<WatchEvent>>,
    pub(crate) gc_wake: Notify,
    pub(crate) config: ClusterConfig,
    pub(crate) faults: Faults,
    pub(crate) admission: AdmissionChain,
    pub(crate) logs: PodLogs,
    pub(crate) running: crate::connect::exec::RunningContainers,
    pub(crate) metrics: crate::pod_metrics::PodMetrics,
    pub(crate) authenticator: Authenticator,
    pub(crate) decisions: Mutex<BTreeSet<crate::authz::Decided>>,
    /// How many requests each user made, by verb (see [`Cluster::requests_of`]).
    pub(crate) requests: Mutex<BTreeMap<(String, String), u64>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").finish_non_exhaustive()
    }
}

/// Options of a list or watch request.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// `labelSelector`.
    pub label_selector: LabelSelector,
    /// `fieldSelector`.
    pub field_selector: FieldSelector,
    /// `limit` (0 = none).
    pub limit: usize,
    /// `continue`.
    pub continue_token: Option<String>,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `resourceVersionMatch`.
    pub resource_version_match: Option<String>,
    /// `allowWatchBookmarks`.
    pub allow_bookmarks: bool,
    /// `sendInitialEvents`.
    pub send_initial_events: Option<bool>,
    /// `timeoutSeconds`.
    pub timeout_seconds: Option<u64>,
}

impl State {
    pub(crate) fn store(&self, key: &StoreKey) -> Option<&Store> {
        self.stores.get(key)
    }

    pub(crate) fn get(&self, key: &StoreKey, ns: &str, name: &str) -> Option<&Value> {
        self.stores
            .get(key)?
            .get(&(ns.to_string(), name.to_string()))
            .map(|object| &**object)
    }

    /// Records a change: bumps the resourceVersion, updates the store and the uid index, appends
    /// to the history and notifies watchers. Returns the object as stored. `old` is the object
    /// before the change as the watch event shows it (normally the stored one, which the event
    /// then shares instead of copying).
    pub(crate) fn commit(
        &mut self,
        events: &broadcast::Sender<Arc<WatchEvent>>,
        key: &StoreKey,
        mut object: Value,
        kind: EventKind,
        old: Option<Value>,
    ) -> Value {
        self.rv += 1;
        let rv = self.rv;
        meta::meta_mut(&mut object).insert("resourceVersion".into(), json!(rv.to_string()));
        let ns = meta::namespace(&object).to_string();
        let name = meta::name(&object).to_string();
        let uid = meta::uid(&object).to_string();
        let object = Arc::new(object);
        let store = self.stores.entry(key.clone()).or_default();
        let at: ObjKey = (key.clone(), ns.clone(), name.clone());
        let previous = match kind {
            EventKind::Deleted => {
                let previous = store.remove(&(ns, name));
                self.uids.remove(&uid);
                self.gc_index.owner_gone(&uid);
                previous
            }
            EventKind::Added | EventKind::Modified => {
                let previous = store.insert((ns.clone(), name.clone()), object.clone());
                self.uids.insert(uid, (key.clone(), ns, name));
                previous
            }
        };
        if let Some(previous) = &previous {
            self.gc_index.remove(&at, previous);
        }
        if kind != EventKind::Deleted {
            self.gc_index.insert(&at, &object);
        }
        let old = match (old, previous) {
            (Some(old), Some(previous)) if *previous == old => Some(previous),
            (old, _) => old.map(Arc::new),
        };
        let event = Arc::new(WatchEvent {
            rv,
            kind,
            key: key.clone(),
            object: object.clone(),
            old,
        });
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted_rv = dropped.rv;
            }
        }
        // No receivers is fine: nobody watches.
        let _ = events.send(event);
        Value::clone(&object)
    }

    /// The object with this uid, if it exists.
    pub(crate) fn by_uid(&self, uid: &str) -> Option<(&StoreKey, &Value)> {
        let (key, ns, name) = self.uids.get(uid)?;
        let obj = self.get(key, ns, name)?;
        Some((key, obj))
    }

    /// Allocates a ClusterIP from this kube-sim's loopback block (sequentially; never reused
    /// until the block's 65,534 addresses are spent), see [`crate::cluster_ips`].
    pub(crate) fn allocate_cluster_ip(&mut self) -> String {
        self.next_ip += 1;
        self.ip_block.address(self.next_ip).to_string()
    }
}

impl Cluster {
    /// A cluster with the built-in types and the default namespaces.
    pub fn new(config: ClusterConfig) -> Arc<Cluster> {
        let (events, _) = broadcast::channel(16_384);
        let state = State {
            rv: 0,
            registry: Registry::with_builtins(),
            stores: BTreeMap::new(),
            history: VecDeque::new(),
            compacted_rv: 0,
            uids: HashMap::new(),
            next_ip: 0,
            ip_block: crate::cluster_ips::IpBlock::claim(),
            continuations: BTreeMap::new(),
            next_continuation: 0,
            history_limit: config.event_history.max(1),
            gc_index: GcIndex::default(),
        };
        Arc::new(Cluster {
            state: Mutex::new(state),
            events,
            gc_wake: Notify::new(),
            config,
            faults: Faults::default(),
            admission: AdmissionChain::default(),
            logs: PodLogs::default(),
            running: crate::connect::exec::RunningContainers::default(),
            metrics: crate::pod_metrics::PodMetrics::default(),
            authenticator: Authenticator::new(),
            decisions: Mutex::new(BTreeSet::new()),
            requests: Mutex::new(BTreeMap::new()),
        })
    }

    /// Keeps an authorization decision (see [`crate::authz::check`]).
    pub(crate) fn record_decision(&self, decided: crate::authz::Decided) {
        self.decisions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(decided);
    }

    /// Counts one authenticated request of `user` with `verb` (the authorizer's verb: `get`,
    /// `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`, or the
    /// lower-case HTTP method of a non-resource request), as kube-apiserver's
    /// `apiserver_request_total` counts requests by verb, here also by user.
    pub(crate) fn count_request(&self, user: &str, verb: &str) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry((user.to_owned(), verb.to_owned()))
            .or_insert(0) += 1;
    }

    /// How many requests `user` has made so far, by verb: what the server saw, for benchmarks
    /// that count a client's reads and writes.
    pub fn requests_of(&self, user: &str) -> BTreeMap<String, u64> {
        self.requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .filter(|((who, _), _)| who == user)
            .map(|((_, verb), count)| (verb.clone(), *count))
            .collect()
    }

    /// Every distinct authorization decision about users outside `system:masters` so far: what
    /// a ServiceAccount used, and what it was refused.
    pub fn authorization_log(&self) -> Vec<crate::authz::Decided> {
        self.decisions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The tokens the API server accepts (the admin token, ServiceAccount tokens).
    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }

    /// The uid of ServiceAccount `namespace/name`, if it exists.
    pub fn service_account_uid(&self, namespace: &str, name: &str) -> Option<String> {
        let key = StoreKey {
            group: String::new(),
            plural: "serviceaccounts".into(),
        };
        self.lock()
            .get(&key, namespace, name)
            .and_then(|account| account.pointer("/metadata/uid"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The fault injector (latency, errors, cut watches).
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The admission hooks called on writes.
    pub fn admission(&self) -> &AdmissionChain {
        &self.admission
    }

    /// The container log store served at `pods/{name}/log`.
    pub fn pod_logs(&self) -> &PodLogs {
        &self.logs
    }

    /// The running containers' processes, which `pods/exec` runs commands beside.
    pub fn running_containers(&self) -> &crate::connect::exec::RunningContainers {
        &self.running
    }

    /// The pods' resource use, served as `metrics.k8s.io` (see [`crate::pod_metrics`]).
    pub fn pod_metrics(&self) -> &crate::pod_metrics::PodMetrics {
        &self.metrics
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// A snapshot of the registry (types served).
    pub fn registry(&self) -> Registry {
        self.lock().registry.clone()
    }

    /// Looks up a served type.
    pub fn resource_type(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.lock().registry.get(group, version, plural).cloned()
    }

    /// Gets one object, rendered at the type's version.
    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        let state = self.lock();
        let obj = state
            .get(&rt.store_key(), ns, name)
            .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))?;
        Ok(render(rt, obj))
    }

    /// Lists objects (one namespace, or all when `ns` is None), honouring selectors and paging.
    pub fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        opts: &ListOptions,
    ) -> Result<Value, ApiError> {
        let mut state = self.lock();
        let (rv, mut items) = if let Some(token) = &opts.continue_token {
            let (rv, id) = decode_continue(token)?;
            let cont = state.continuations.remove(&id).ok_or_else(|| {
                ApiError::expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.")
            })?;
            if cont.rv != rv {
                return Err(ApiError::bad_request("continue key is not valid"));
            }
            (rv, cont.items)
        } else {
            check_list_rv(&state, opts)?;
            let items: Vec<Arc<Value>> = state
                .store(&rt.store_key())
                .map(|s| {
                    in_scope_shared(s, ns)
                        .filter(|o| matches_selectors(o, opts))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            (state.rv, items)
        };
        let mut list_meta = serde_json::Map::new();
        list_meta.insert("resourceVersion".into(), json!(rv.to_string()));
        if opts.limit > 0 && items.len() > opts.limit {
            let rest = items.split_off(opts.limit);
            let remaining = rest.len();
            state.next_continuation += 1;
            let id = state.next_continuation;
            state
                .continuations
                .insert(id, Continuation { rv, items: rest });
            // Keep a bounded number of snapshots; the oldest expire (410 on use).
            while state.continuations.len() > 64 {
                state.continuations.pop_first();
            }
            list_meta.insert("continue".into(), json!(encode_continue(rv, id)));
            list_meta.insert("remainingItemCount".into(), json!(remaining));
        }
        // The items are shared with the store: copied (rendered) without holding the lock.
        drop(state);
        let items: Vec<Value> = items.iter().map(|o| render_list_item(rt, o)).collect();
        Ok(json!({
            "kind": rt.list_kind,
            "apiVersion": rt.api_version(),
            "metadata": Value::Object(list_meta),
            "items": items,
        }))
    }

    /// All objects of a store in one namespace (or all), at their stored version. For hooks and GC.
    pub fn snapshot(&self, group: &str, plural: &str, ns: Option<&str>) -> Vec<Value> {
        let key = StoreKey {
            group: group.into(),
            plural: plural.into(),
        };
        let state = self.lock();
        state
            .store(&key)
            .map(|s| in_scope(s, ns).cloned().collect())
            .unwrap_or_default()
    }
}

/// The objects of `store` in namespace `ns` (every object when `None`), in key order, without
/// visiting other namespaces.
pub(crate) fn in_scope<'a>(
    store: &'a Store,
    ns: Option<&'a str>,
) -> impl Iterator<Item = &'a Value> + 'a {
    in_scope_shared(store, ns).map(|object| &**object)
}

/// [`in_scope`], as the shared values the store holds.
pub(crate) fn in_scope_shared<'a>(
    store: &'a Store,
    ns: Option<&'a str>,
) -> impl Iterator<Item = &'a Arc<Value>> + 'a {
    let range = match ns {
        Some(ns) => store.range((ns.to_owned(), String::new())..),
        None => store.range::<(String, String), _>(..),
    };
    range
        .take_while(move |((object_ns, _), _)| ns.is_none_or(|ns| ns == object_ns))
        .map(|(_, object)| object)
}

fn check_list_rv(state: &State, opts: &ListOptions) -> Result<(), ApiError> {
    let Some(rv) = opts.resource_version.as_deref().filter(|s| !s.is_empty()) else {
        return Ok(());
    };
    let n: u64 = rv
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?;
    match opts.resource_version_match.as_deref() {
        Some("Exact") if n != state.rv => Err(ApiError::expired(format!(
            "too old resource version: {n} ({})",
            state.rv
        ))),
        _ if n > state.rv => Err(too_large_rv(n, state.rv)),
        _ => Ok(()),
    }
}

pub(crate) fn too_large_rv(requested: u64, current: u64) -> ApiError {
    let mut err = ApiError::expired(format!(
        "Too large resource version: {requested}, current: {current}"
    ));
    err.code = 504;
    err.reason = "Timeout".into();
    err.details.retry_after_seconds = Some(1);
    err
}

pub(crate) fn matches_selectors(obj: &Value, opts: &ListOptions) -> bool {
    opts.label_selector.matches(meta::labels(obj)) && opts.field_selector.matches(obj)
}

/// The object as served at `rt`'s version (custom resources are stored once for all versions
/// and converted with the `None` strategy: only `apiVersion` changes).
pub fn render(rt: &ResourceType, obj: &Value) -> Value {
    if rt.group == "events.k8s.io" && rt.kind == "Event" {
        return crate::events::core_to_events(obj);
    }
    let mut out = obj.clone();
    if let Some(map) = out.as_object_mut() {
        map.insert("apiVersion".into(), json!(rt.api_version()));
        map.insert("kind".into(), json!(rt.kind));
    }
    out
}

/// A list item: built-in lists omit `apiVersion`/`kind` on items, custom resource lists keep them.
fn render_list_item(rt: &ResourceType, obj: &Value) -> Value {
    let mut out = render(rt, obj);
    if !rt.is_custom()
        && let Some(map) = out.as_object_mut()
    {
        map.remove("apiVersion");
        map.remove("kind");
    }
    out
}

fn encode_continue(rv: u64, id: u64) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{{\"rv\":{rv},\"id\":{id}}}"))
}

fn decode_continue(token: &str) -> Result<(u64, u64), ApiError> {
    use base64::Engine;
    let bad = || ApiError::bad_request("continue key is not valid: illegal base64 data");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    match (
        v.get("rv").and_then(Value::as_u64),
        v.get("id").and_then(Value::as_u64),
    ) {
        (Some(rv), Some(id)) => Ok((rv, id)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store, the history and the watchers share one value per object version: an update's
    /// event holds the stored object itself, and as its `old` the previous event's object.
    #[test]
    fn watch_events_share_the_stored_objects_instead_of_copying_them() {
        let cluster = Cluster::new(ClusterConfig::default());
        let key = StoreKey {
            group: String::new(),
            plural: "configmaps".into(),
        };
        let (events, _) = broadcast::channel(16);
        let mut state = cluster.lock();
        let first = json!({"metadata": {"name": "a", "namespace": "default", "uid": "u-1"}});
        let stored = state.commit(&events, &key, first, EventKind::Added, None);
        let mut second = stored.clone();
        second["data"] = json!({"k": "v"});
        state.commit(&events, &key, second, EventKind::Modified, Some(stored));
        let created = state.history[state.history.len() - 2].clone();
        let updated = state.history[state.history.len() - 1].clone();
        let old = updated.old.as_ref().expect("an update has an old object");
        assert!(Arc::ptr_eq(old, &created.object));
        let in_store = state
            .store(&key)
            .and_then(|store| store.get(&("default".to_owned(), "a".to_owned())))
            .expect("stored");
        assert!(Arc::ptr_eq(in_store, &updated.object));
        assert_eq!(updated.object["data"]["k"], "v");
    }

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue(42, 7);
        assert_eq!(decode_continue(&t).unwrap(), (42, 7));
        assert_eq!(decode_continue("!!").unwrap_err().code, 400);
    }
}
