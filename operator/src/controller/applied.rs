//! What the cluster holds of the operator's last writes, kept current by one metadata-only watch
//! per kind the operator applies (children carry the `app.kubernetes.io/managed-by` label):
//!
//! - the [`APPLIED_HASH_ANNOTATION`] of every child: deciding whether a child needs a write then
//!   reads nothing from the API (until a kind's watch has listed once, [`AppliedHashes::lookup`]
//!   says so and the caller applies);
//! - the fields the operator owns in it: a fingerprint of its server-side apply entry in
//!   `metadata.managedFields`. Kubernetes moves a field to whoever changes it last ("if a field
//!   is changed by an update, ownership transfers to the updater", the server-side apply
//!   documentation, *Field management*; the same for a forced apply), so a `kubectl scale`, an
//!   edit or another manager's forced apply of a field the operator applied shrinks the
//!   operator's entry. The fingerprint the operator's own apply returned is the *baseline*; a
//!   watch event whose fingerprint differs from it, for the same applied hash, is **drift**: the
//!   child's app is reconciled at once and its apply puts the fields back.
//!
//! After a restart no baseline is known. A child is then trusted as it is (its fingerprint
//! becomes the baseline) unless another manager changed the object's main resource (or its
//! `scale` subresource) at or after the operator's last apply there, which is when it may have
//! drifted while nobody watched; such a child is applied once.
//!
//! The same watches report a deleted child's app, so that it is restored at once rather than at
//! the next resync.
//!
//! [`APPLIED_HASH_ANNOTATION`]: super::apply::APPLIED_HASH_ANNOTATION

use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
use kube::api::{Api, PartialObjectMeta};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use kumiko_crds::{KumikoApp, names};
use serde::de::DeserializeOwned;

use super::apply::APPLIED_HASH_ANNOTATION;
use crate::desired::MANAGER;

/// An object's address within one kind: `(namespace, name)`.
type Address = (String, String);

/// What the operator owns in one object, read from its `metadata.managedFields`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ownership {
    /// A fingerprint of the fields of the operator's `Apply` entry on the main resource
    /// (`None`: it has no such entry).
    pub fields: Option<u64>,
    /// The manager that changed the main resource (or its `scale`) last, at or after the
    /// operator's own last change there, if another one did.
    pub changed_since_by: Option<String>,
}

impl Ownership {
    /// Reads the ownership facts from an object's metadata.
    pub fn of(meta: &ObjectMeta) -> Self {
        let entries = meta.managed_fields.as_deref().unwrap_or_default();
        let on_main = |entry: &&ManagedFieldsEntry| {
            matches!(
                entry.subresource.as_deref(),
                None | Some("") | Some("scale")
            )
        };
        let ours = entries.iter().filter(on_main).find(|entry| {
            entry.manager.as_deref() == Some(MANAGER)
                && entry.operation.as_deref() == Some("Apply")
                && entry.subresource.as_deref().is_none_or(str::is_empty)
        });
        let fields = ours
            .and_then(|entry| entry.fields_v1.as_ref())
            .map(|fields| {
                let mut hasher = DefaultHasher::new();
                fields.0.to_string().hash(&mut hasher);
                hasher.finish()
            });
        let our_time = ours
            .and_then(|entry| entry.time.as_ref())
            .map(|time| time.0);
        let changed_since_by = entries
            .iter()
            .filter(on_main)
            .filter(|entry| entry.manager.as_deref() != Some(MANAGER))
            .filter_map(|entry| Some((entry.time.as_ref()?.0, entry.manager.clone()?)))
            .filter(|(time, _)| our_time.is_none_or(|ours| *time >= ours))
            .max_by_key(|(time, _)| *time)
            .map(|(_, manager)| manager);
        Self {
            fields,
            changed_since_by,
        }
    }
}

/// What [`AppliedHashes::lookup`] knows about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The kind's watch has not listed yet: apply.
    Unknown,
    /// The object does not exist.
    Absent,
    /// The object exists with this applied hash (`None`: it carries none).
    Present {
        /// Its applied-hash annotation.
        hash: Option<String>,
        /// Whether the fields the operator applied are still its own.
        drift: Drift,
    },
}

/// Whether a child still holds what the operator applied to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Drift {
    /// The operator's fields are as its last apply left them.
    None,
    /// Someone else took fields the operator applied; `by` names the manager where known.
    Changed {
        /// The field manager that changed the object last.
        by: Option<String>,
    },
}

/// The facts of one child, as its watch last saw them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Child {
    hash: Option<String>,
    ownership: Ownership,
}

/// The operator's own last apply of one child: what it applied and the fields it got.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Baseline {
    hash: String,
    fields: Option<u64>,
}

/// The children of one kind.
#[derive(Debug, Default)]
struct KindChildren {
    /// Whether a full list has been seen.
    synced: bool,
    children: HashMap<Address, Child>,
    /// The objects of a relist in progress (swapped in when it is done).
    relisting: Option<HashMap<Address, Child>>,
    /// What the operator's own applies left (since this process started, or trusted since).
    baselines: HashMap<Address, Baseline>,
}

impl KindChildren {
    /// Whether `child` differs from what the operator last applied to it.
    fn drift(&self, address: &Address, child: &Child) -> Drift {
        let changed = Drift::Changed {
            by: child.ownership.changed_since_by.clone(),
        };
        match self.baselines.get(address) {
            Some(baseline) if child.hash.as_deref() == Some(baseline.hash.as_str()) => {
                if child.ownership.fields == baseline.fields {
                    Drift::None
                } else {
                    changed
                }
            }
            // A different hash: the annotation says a write is due anyway.
            Some(_) => Drift::None,
            // No baseline (a restart): trusted unless someone changed it since the last apply.
            None if child.ownership.changed_since_by.is_some() => changed,
            None => Drift::None,
        }
    }
}

/// The applied hashes and ownership of every kind the operator writes, shared by all reconciles.
#[derive(Debug, Default)]
pub struct AppliedHashes {
    kinds: Mutex<HashMap<String, KindChildren>>,
}

impl AppliedHashes {
    fn kinds(&self) -> MutexGuard<'_, HashMap<String, KindChildren>> {
        self.kinds
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What is known of `kind` `namespace/name`.
    pub fn lookup(&self, kind: &str, namespace: &str, name: &str) -> Lookup {
        let kinds = self.kinds();
        let Some(children) = kinds.get(kind).filter(|children| children.synced) else {
            return Lookup::Unknown;
        };
        let address = (namespace.to_owned(), name.to_owned());
        match children.children.get(&address) {
            Some(child) => Lookup::Present {
                hash: child.hash.clone(),
                drift: children.drift(&address, child),
            },
            None => Lookup::Absent,
        }
    }

    /// Whether someone else changed fields the operator applied to `kind` `namespace/name`.
    pub fn drifted(&self, kind: &str, namespace: &str, name: &str) -> bool {
        matches!(
            self.lookup(kind, namespace, name),
            Lookup::Present {
                drift: Drift::Changed { .. },
                ..
            }
        )
    }

    /// The ownership facts of `kind` `namespace/name` as its watch last saw them.
    pub fn lookup_ownership(&self, kind: &str, namespace: &str, name: &str) -> Option<Ownership> {
        let kinds = self.kinds();
        let address = (namespace.to_owned(), name.to_owned());
        kinds
            .get(kind)?
            .children
            .get(&address)
            .map(|child| child.ownership.clone())
    }

    /// Records a write the operator just made (what it applied, and the ownership the API
    /// server answered with), before its watch event arrives.
    pub fn wrote(&self, kind: &str, namespace: &str, name: &str, hash: &str, owned: Ownership) {
        let mut kinds = self.kinds();
        let children = kinds.entry(kind.to_owned()).or_default();
        let address = (namespace.to_owned(), name.to_owned());
        children.baselines.insert(
            address.clone(),
            Baseline {
                hash: hash.to_owned(),
                fields: owned.fields,
            },
        );
        children.children.insert(
            address,
            Child {
                hash: Some(hash.to_owned()),
                ownership: owned,
            },
        );
    }

    /// Takes the child as it is now as the operator's baseline (a child trusted after a
    /// restart, see the module documentation).
    pub fn trust(&self, kind: &str, namespace: &str, name: &str) {
        let mut kinds = self.kinds();
        let Some(children) = kinds.get_mut(kind) else {
            return;
        };
        let address = (namespace.to_owned(), name.to_owned());
        if let Some(Child {
            hash: Some(hash),
            ownership,
        }) = children.children.get(&address).cloned()
        {
            children.baselines.insert(
                address,
                Baseline {
                    hash,
                    fields: ownership.fields,
                },
            );
        }
    }

    /// Folds one watch event of `kind` in; returns whether the event shows drift (someone
    /// else took fields the operator applied since its last apply).
    pub fn observe<K: Resource>(&self, kind: &str, event: &watcher::Event<K>) -> bool {
        let address = |object: &K| {
            (
                object.meta().namespace.clone().unwrap_or_default(),
                object.meta().name.clone().unwrap_or_default(),
            )
        };
        let child = |object: &K| Child {
            hash: object
                .meta()
                .annotations
                .as_ref()
                .and_then(|annotations| annotations.get(APPLIED_HASH_ANNOTATION))
                .cloned(),
            ownership: Ownership::of(object.meta()),
        };
        let mut kinds = self.kinds();
        let children = kinds.entry(kind.to_owned()).or_default();
        match event {
            watcher::Event::Apply(object) => {
                let (address, child) = (address(object), child(object));
                // Only a known baseline tells drift apart from an old apply's fields.
                let drifted = children.baselines.contains_key(&address)
                    && children.drift(&address, &child) != Drift::None;
                children.children.insert(address, child);
                drifted
            }
            watcher::Event::Delete(object) => {
                let address = address(object);
                children.children.remove(&address);
                children.baselines.remove(&address);
                false
            }
            watcher::Event::Init => {
                children.relisting = Some(HashMap::new());
                false
            }
            watcher::Event::InitApply(object) => {
                children
                    .relisting
                    .get_or_insert_with(HashMap::new)
                    .insert(address(object), child(object));
                false
            }
            watcher::Event::InitDone => {
                children.children = children.relisting.take().unwrap_or_default();
                let KindChildren {
                    children: listed,
                    baselines,
                    ..
                } = children;
                baselines.retain(|address, _| listed.contains_key(address));
                children.synced = true;
                false
            }
        }
    }
}

/// The KumikoApp that `object` belongs to: the one that controls it (its controller owner
/// reference) or, for a child that has no owner because it outlives its app (a retained CNPG
/// Cluster), the one its labels name: `app.kubernetes.io/managed-by: kumiko-operator` and
/// `app.kubernetes.io/instance: <app>` in the same namespace.
pub fn owning_app<K: Resource>(object: &K) -> Option<ObjectRef<DeserializeGuard<KumikoApp>>> {
    let meta = object.meta();
    let namespace = meta.namespace.as_deref()?;
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|owner| owner.controller == Some(true));
    let name = match controller {
        Some(owner)
            if owner.kind == KumikoApp::kind(&())
                && owner.api_version == KumikoApp::api_version(&()) =>
        {
            owner.name.as_str()
        }
        // Controlled by something else: not ours to reconcile.
        Some(_) => return None,
        None => {
            let labels = meta.labels.as_ref()?;
            if labels.get(names::MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGER) {
                return None;
            }
            labels.get(names::INSTANCE_LABEL)?.as_str()
        }
    };
    Some(ObjectRef::new(name).within(namespace))
}

/// Keeps `hashes` current for kind `K`: a metadata-only watch of the objects labelled
/// `selector`, across namespaces; sends the app of every deleted or drifted child to `changed`.
/// Runs until the stream ends (never, in practice: the watcher retries with back-off and
/// relists).
pub async fn watch_kind<K>(
    client: Client,
    hashes: Arc<AppliedHashes>,
    selector: String,
    changed: UnboundedSender<ObjectRef<DeserializeGuard<KumikoApp>>>,
) where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let kind = K::kind(&()).into_owned();
    let api: Api<PartialObjectMeta<K>> = Api::all(client);
    let mut events = watcher(api, watcher::Config::default().labels(&selector))
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                let app = match &event {
                    watcher::Event::Delete(object) | watcher::Event::Apply(object) => {
                        owning_app(object)
                    }
                    _ => None,
                };
                let deletion = matches!(event, watcher::Event::Delete(_));
                let drifted = hashes.observe(&kind, &event);
                if let Some(app) = app.filter(|_| deletion || drifted) {
                    if drifted {
                        tracing::info!(%kind, app = %app, "a child drifted from what was applied");
                    }
                    // The controller is gone when the receiver is: nothing to tell.
                    let _ = changed.unbounded_send(app);
                }
            }
            Err(error) => tracing::debug!(%kind, %error, "watch of applied children"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::apply::{Decision, decide};
    use k8s_openapi::api::core::v1::Service;
    use std::collections::BTreeMap;

    fn service(name: &str, hash: Option<&str>) -> Service {
        let mut service = Service::default();
        service.metadata.name = Some(name.to_owned());
        service.metadata.namespace = Some("shop".to_owned());
        service.metadata.annotations = hash
            .map(|hash| BTreeMap::from([(APPLIED_HASH_ANNOTATION.to_owned(), hash.to_owned())]));
        service
    }

    fn present(hash: &str) -> Lookup {
        Lookup::Present {
            hash: Some(hash.to_owned()),
            drift: Drift::None,
        }
    }

    /// A managedFields entry of `manager` owning `fields` (as fieldsV1 JSON) at `time`.
    fn entry(
        manager: &str,
        operation: &str,
        subresource: Option<&str>,
        fields: serde_json::Value,
        time: &str,
    ) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.to_owned()),
            operation: Some(operation.to_owned()),
            subresource: subresource.map(str::to_owned),
            api_version: Some("apps/v1".to_owned()),
            fields_type: Some("FieldsV1".to_owned()),
            fields_v1: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1(
                fields,
            )),
            time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                time.parse().unwrap(),
            )),
        }
    }

    fn replicas_and_image() -> serde_json::Value {
        serde_json::json!({"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:image": {}}}}})
    }

    fn image_only() -> serde_json::Value {
        serde_json::json!({"f:spec": {"f:template": {"f:spec": {"f:image": {}}}}})
    }

    /// A Service applied with hash "h", its managedFields as given.
    fn applied_service(entries: Vec<ManagedFieldsEntry>) -> Service {
        let mut object = service("web", Some("h"));
        object.metadata.managed_fields = Some(entries);
        object
    }

    fn synced(hashes: &AppliedHashes) {
        hashes.observe::<Service>("Service", &watcher::Event::Init);
        hashes.observe::<Service>("Service", &watcher::Event::InitDone);
    }

    const APPLIED_AT: &str = "2026-12-03T10:00:00Z";
    const LATER: &str = "2026-12-03T10:05:00Z";

    #[test]
    fn a_field_taken_by_another_manager_after_the_operators_apply_is_drift() {
        let hashes = AppliedHashes::default();
        synced(&hashes);
        let ours = entry(
            "kumiko-operator",
            "Apply",
            None,
            replicas_and_image(),
            APPLIED_AT,
        );
        let applied = applied_service(vec![ours.clone()]);
        hashes.wrote(
            "Service",
            "shop",
            "web",
            "h",
            Ownership::of(&applied.metadata),
        );
        assert!(
            !hashes.observe("Service", &watcher::Event::Apply(applied)),
            "the operator's own apply is no drift"
        );
        assert_eq!(hashes.lookup("Service", "shop", "web"), present("h"));

        // `kubectl scale`: replicas moves to kubectl; the operator keeps the image.
        let ours_now = entry("kumiko-operator", "Apply", None, image_only(), APPLIED_AT);
        let scaled = entry(
            "kubectl",
            "Update",
            Some("scale"),
            serde_json::json!({"f:spec": {"f:replicas": {}}}),
            LATER,
        );
        let drifted = applied_service(vec![ours_now, scaled]);
        assert!(hashes.observe("Service", &watcher::Event::Apply(drifted)));
        assert_eq!(
            hashes.lookup("Service", "shop", "web"),
            Lookup::Present {
                hash: Some("h".to_owned()),
                drift: Drift::Changed {
                    by: Some("kubectl".to_owned())
                }
            }
        );

        // The operator applies again and owns both fields: converged.
        let restored = applied_service(vec![ours]);
        hashes.wrote(
            "Service",
            "shop",
            "web",
            "h",
            Ownership::of(&restored.metadata),
        );
        assert!(!hashes.observe("Service", &watcher::Event::Apply(restored)));
        assert_eq!(hashes.lookup("Service", "shop", "web"), present("h"));
    }

    #[test]
    fn status_writes_and_fields_the_operator_does_not_apply_are_no_drift() {
        let hashes = AppliedHashes::default();
        synced(&hashes);
        let ours = entry(
            "kumiko-operator",
            "Apply",
            None,
            replicas_and_image(),
            APPLIED_AT,
        );
        let applied = applied_service(vec![ours.clone()]);
        hashes.wrote(
            "Service",
            "shop",
            "web",
            "h",
            Ownership::of(&applied.metadata),
        );
        let status = entry(
            "kube-controller-manager",
            "Update",
            Some("status"),
            serde_json::json!({"f:status": {"f:replicas": {}}}),
            LATER,
        );
        let annotation = entry(
            "kube-controller-manager",
            "Update",
            None,
            serde_json::json!({"f:metadata": {"f:annotations": {"f:deployment.kubernetes.io/revision": {}}}}),
            LATER,
        );
        let touched = applied_service(vec![ours, status, annotation]);
        assert!(!hashes.observe("Service", &watcher::Event::Apply(touched)));
        assert_eq!(hashes.lookup("Service", "shop", "web"), present("h"));
    }

    #[test]
    fn an_old_event_of_a_previous_apply_is_not_drift() {
        let hashes = AppliedHashes::default();
        synced(&hashes);
        let ours = entry(
            "kumiko-operator",
            "Apply",
            None,
            replicas_and_image(),
            LATER,
        );
        let applied = applied_service(vec![ours]);
        hashes.wrote(
            "Service",
            "shop",
            "web",
            "h",
            Ownership::of(&applied.metadata),
        );
        // The watch still delivers the object as an earlier apply (hash "g", fewer fields) left it.
        let mut earlier = service("web", Some("g"));
        earlier.metadata.managed_fields = Some(vec![entry(
            "kumiko-operator",
            "Apply",
            None,
            image_only(),
            APPLIED_AT,
        )]);
        assert!(!hashes.observe("Service", &watcher::Event::Apply(earlier)));
    }

    #[test]
    fn after_a_restart_a_child_changed_since_the_last_apply_is_suspect_and_the_rest_trusted() {
        let hashes = AppliedHashes::default();
        let ours = entry(
            "kumiko-operator",
            "Apply",
            None,
            replicas_and_image(),
            APPLIED_AT,
        );
        let untouched = applied_service(vec![ours.clone()]);
        let mut edited = applied_service(vec![
            entry("kumiko-operator", "Apply", None, image_only(), APPLIED_AT),
            entry(
                "kubectl-edit",
                "Update",
                None,
                serde_json::json!({"f:spec": {"f:replicas": {}}}),
                LATER,
            ),
        ]);
        edited.metadata.name = Some("edited".to_owned());
        hashes.observe::<Service>("Service", &watcher::Event::Init);
        hashes.observe("Service", &watcher::Event::InitApply(untouched));
        hashes.observe("Service", &watcher::Event::InitApply(edited));
        hashes.observe::<Service>("Service", &watcher::Event::InitDone);
        assert_eq!(hashes.lookup("Service", "shop", "web"), present("h"));
        assert_eq!(
            hashes.lookup("Service", "shop", "edited"),
            Lookup::Present {
                hash: Some("h".to_owned()),
                drift: Drift::Changed {
                    by: Some("kubectl-edit".to_owned())
                }
            }
        );
        // Trusted, the untouched one now has a baseline: a later change of it is drift.
        hashes.trust("Service", "shop", "web");
        let scaled = applied_service(vec![
            entry("kumiko-operator", "Apply", None, image_only(), APPLIED_AT),
            entry(
                "kubectl",
                "Update",
                None,
                serde_json::json!({"f:spec": {"f:replicas": {}}}),
                LATER,
            ),
        ]);
        assert!(hashes.observe("Service", &watcher::Event::Apply(scaled)));
    }

    #[test]
    fn a_child_names_the_app_that_controls_it() {
        let mut child = service("web", None);
        assert_eq!(owning_app(&child), None);
        let owner = |kind: &str, controller| {
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "kumiko.so/v1alpha1".to_owned(),
                kind: kind.to_owned(),
                name: "shop".to_owned(),
                uid: "u".to_owned(),
                controller: Some(controller),
                block_owner_deletion: None,
            }
        };
        child.metadata.owner_references = Some(vec![owner("KumikoApp", false)]);
        assert_eq!(owning_app(&child), None, "not the controller");
        child.metadata.owner_references =
            Some(vec![owner("Other", false), owner("KumikoApp", true)]);
        assert_eq!(
            owning_app(&child),
            Some(ObjectRef::new("shop").within("shop"))
        );
        child.metadata.owner_references = Some(vec![owner("Other", true)]);
        assert_eq!(owning_app(&child), None, "controlled by something else");
    }

    #[test]
    fn a_retained_child_without_an_owner_names_its_app_by_its_labels() {
        let mut child = service("shop-db", None);
        child.metadata.labels = Some(BTreeMap::from([(
            "app.kubernetes.io/instance".to_owned(),
            "shop".to_owned(),
        )]));
        assert_eq!(owning_app(&child), None, "not managed by the operator");
        child.metadata.labels.as_mut().unwrap().insert(
            "app.kubernetes.io/managed-by".to_owned(),
            "kumiko-operator".to_owned(),
        );
        assert_eq!(
            owning_app(&child),
            Some(ObjectRef::new("shop").within("shop"))
        );
    }

    #[test]
    fn nothing_is_known_before_the_first_list_completes() {
        let hashes = AppliedHashes::default();
        assert_eq!(hashes.lookup("Service", "shop", "web"), Lookup::Unknown);
        hashes.observe::<Service>("Service", &watcher::Event::Init);
        hashes.observe(
            "Service",
            &watcher::Event::InitApply(service("web", Some("a"))),
        );
        assert_eq!(hashes.lookup("Service", "shop", "web"), Lookup::Unknown);
        hashes.observe::<Service>("Service", &watcher::Event::InitDone);
        assert_eq!(hashes.lookup("Service", "shop", "web"), present("a"));
        assert_eq!(hashes.lookup("Service", "shop", "api"), Lookup::Absent);
        assert_eq!(hashes.lookup("Deployment", "shop", "web"), Lookup::Unknown);
    }

    #[test]
    fn changes_deletions_and_relists_are_followed() {
        let hashes = AppliedHashes::default();
        hashes.observe::<Service>("Service", &watcher::Event::Init);
        hashes.observe::<Service>("Service", &watcher::Event::InitDone);
        hashes.observe("Service", &watcher::Event::Apply(service("web", None)));
        assert_eq!(
            hashes.lookup("Service", "shop", "web"),
            Lookup::Present {
                hash: None,
                drift: Drift::None
            }
        );
        hashes.wrote("Service", "shop", "web", "b", Ownership::default());
        assert_eq!(hashes.lookup("Service", "shop", "web"), present("b"));
        hashes.observe(
            "Service",
            &watcher::Event::Delete(service("web", Some("b"))),
        );
        assert_eq!(hashes.lookup("Service", "shop", "web"), Lookup::Absent);

        // A relist replaces what was known once it is complete: "old" went while unwatched.
        hashes.observe("Service", &watcher::Event::Apply(service("old", Some("c"))));
        hashes.observe::<Service>("Service", &watcher::Event::Init);
        hashes.observe(
            "Service",
            &watcher::Event::InitApply(service("new", Some("d"))),
        );
        hashes.observe::<Service>("Service", &watcher::Event::InitDone);
        assert_eq!(hashes.lookup("Service", "shop", "old"), Lookup::Absent);
        assert_eq!(hashes.lookup("Service", "shop", "new"), present("d"));
    }

    #[test]
    fn only_a_new_hash_or_drift_makes_a_write() {
        assert_eq!(decide(&Lookup::Unknown, "h"), Decision::Write);
        assert_eq!(decide(&Lookup::Absent, "h"), Decision::Write);
        assert_eq!(decide(&present("h"), "h"), Decision::Keep);
        assert_eq!(decide(&present("g"), "h"), Decision::Write);
        let drifted = Lookup::Present {
            hash: Some("h".to_owned()),
            drift: Drift::Changed {
                by: Some("kubectl".to_owned()),
            },
        };
        assert_eq!(
            decide(&drifted, "h"),
            Decision::CorrectDrift {
                by: Some("kubectl".to_owned())
            }
        );
    }
}
