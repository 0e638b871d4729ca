//! What the cluster holds of the operator's last writes: the [`APPLIED_HASH_ANNOTATION`] of every
//! child, kept current by one metadata-only watch per kind the operator applies (children carry
//! the `app.kubernetes.io/managed-by` label). Deciding whether a child needs a write then reads
//! nothing from the API; until a kind's watch has listed once, [`AppliedHashes::lookup`] says so
//! and the caller reads the object's metadata itself. The same watches report a deleted child's
//! app, so that it is restored at once rather than at the next resync.
//!
//! [`APPLIED_HASH_ANNOTATION`]: super::apply::APPLIED_HASH_ANNOTATION

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use kube::api::{Api, PartialObjectMeta};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use kumiko_crds::KumikoApp;
use serde::de::DeserializeOwned;

use super::apply::APPLIED_HASH_ANNOTATION;

/// An object's address within one kind: `(namespace, name)`.
type Address = (String, String);

/// What [`AppliedHashes::lookup`] knows about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The kind's watch has not listed yet: ask the API.
    Unknown,
    /// The object does not exist.
    Absent,
    /// The object exists with this applied hash (`None`: it carries none).
    Present(Option<String>),
}

/// The applied hashes of one kind.
#[derive(Debug, Default)]
struct KindHashes {
    /// Whether a full list has been seen.
    synced: bool,
    hashes: HashMap<Address, Option<String>>,
    /// The objects of a relist in progress (swapped in when it is done).
    relisting: Option<HashMap<Address, Option<String>>>,
}

/// The applied hashes of every kind the operator writes, shared by all reconciles.
#[derive(Debug, Default)]
pub struct AppliedHashes {
    kinds: Mutex<HashMap<String, KindHashes>>,
}

impl AppliedHashes {
    fn kinds(&self) -> MutexGuard<'_, HashMap<String, KindHashes>> {
        self.kinds
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What is known of `kind` `namespace/name`.
    pub fn lookup(&self, kind: &str, namespace: &str, name: &str) -> Lookup {
        let kinds = self.kinds();
        match kinds.get(kind) {
            Some(hashes) if hashes.synced => {
                match hashes.hashes.get(&(namespace.to_owned(), name.to_owned())) {
                    Some(hash) => Lookup::Present(hash.clone()),
                    None => Lookup::Absent,
                }
            }
            _ => Lookup::Unknown,
        }
    }

    /// Records a write the operator just made, before its watch event arrives.
    pub fn wrote(&self, kind: &str, namespace: &str, name: &str, hash: &str) {
        let mut kinds = self.kinds();
        let hashes = kinds.entry(kind.to_owned()).or_default();
        hashes.hashes.insert(
            (namespace.to_owned(), name.to_owned()),
            Some(hash.to_owned()),
        );
    }

    /// Folds one watch event of `kind` in.
    pub fn observe<K: Resource>(&self, kind: &str, event: watcher::Event<K>) {
        let address = |object: &K| {
            (
                object.meta().namespace.clone().unwrap_or_default(),
                object.meta().name.clone().unwrap_or_default(),
            )
        };
        let hash = |object: &K| {
            object
                .meta()
                .annotations
                .as_ref()
                .and_then(|annotations| annotations.get(APPLIED_HASH_ANNOTATION))
                .cloned()
        };
        let mut kinds = self.kinds();
        let hashes = kinds.entry(kind.to_owned()).or_default();
        match event {
            watcher::Event::Apply(object) => {
                hashes.hashes.insert(address(&object), hash(&object));
            }
            watcher::Event::Delete(object) => {
                hashes.hashes.remove(&address(&object));
            }
            watcher::Event::Init => hashes.relisting = Some(HashMap::new()),
            watcher::Event::InitApply(object) => {
                hashes
                    .relisting
                    .get_or_insert_with(HashMap::new)
                    .insert(address(&object), hash(&object));
            }
            watcher::Event::InitDone => {
                hashes.hashes = hashes.relisting.take().unwrap_or_default();
                hashes.synced = true;
            }
        }
    }
}

/// The KumikoApp that controls `object`, if one does.
pub fn owning_app<K: Resource>(object: &K) -> Option<ObjectRef<DeserializeGuard<KumikoApp>>> {
    let namespace = object.meta().namespace.as_deref()?;
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .find(|owner| {
            owner.controller == Some(true)
                && owner.kind == KumikoApp::kind(&())
                && owner.api_version == KumikoApp::api_version(&())
        })
        .map(|owner| ObjectRef::new(&owner.name).within(namespace))
}

/// Keeps `hashes` current for kind `K`: a metadata-only watch of the objects labelled
/// `selector`, across namespaces; sends the app of every deleted child to `deleted`. Runs until
/// the stream ends (never, in practice: the watcher retries with back-off and relists).
pub async fn watch_kind<K>(
    client: Client,
    hashes: Arc<AppliedHashes>,
    selector: String,
    deleted: UnboundedSender<ObjectRef<DeserializeGuard<KumikoApp>>>,
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
                if let watcher::Event::Delete(object) = &event
                    && let Some(app) = owning_app(object)
                {
                    // The controller is gone when the receiver is: nothing to tell.
                    let _ = deleted.unbounded_send(app);
                }
                hashes.observe(&kind, event);
            }
            Err(error) => tracing::debug!(%kind, %error, "watch of applied children"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            Some(vec![owner("Other", true), owner("KumikoApp", true)]);
        assert_eq!(
            owning_app(&child),
            Some(ObjectRef::new("shop").within("shop"))
        );
    }

    #[test]
    fn nothing_is_known_before_the_first_list_completes() {
        let hashes = AppliedHashes::default();
        assert_eq!(hashes.lookup("Service", "shop", "web"), Lookup::Unknown);
        hashes.observe::<Service>("Service", watcher::Event::Init);
        hashes.observe(
            "Service",
            watcher::Event::InitApply(service("web", Some("a"))),
        );
        assert_eq!(hashes.lookup("Service", "shop", "web"), Lookup::Unknown);
        hashes.observe::<Service>("Service", watcher::Event::InitDone);
        assert_eq!(
            hashes.lookup("Service", "shop", "web"),
            Lookup::Present(Some("a".to_owned()))
        );
        assert_eq!(hashes.lookup("Service", "shop", "api"), Lookup::Absent);
        assert_eq!(hashes.lookup("Deployment", "shop", "web"), Lookup::Unknown);
    }

    #[test]
    fn changes_deletions_and_relists_are_followed() {
        let hashes = AppliedHashes::default();
        hashes.observe::<Service>("Service", watcher::Event::Init);
        hashes.observe::<Service>("Service", watcher::Event::InitDone);
        hashes.observe("Service", watcher::Event::Apply(service("web", None)));
        assert_eq!(
            hashes.lookup("Service", "shop", "web"),
            Lookup::Present(None)
        );
        hashes.wrote("Service", "shop", "web", "b");
        assert_eq!(
            hashes.lookup("Service", "shop", "web"),
            Lookup::Present(Some("b".to_owned()))
        );
        hashes.observe("Service", watcher::Event::Delete(service("web", Some("b"))));
        assert_eq!(hashes.lookup("Service", "shop", "web"), Lookup::Absent);

        // A relist replaces what was known once it is complete: "old" went while unwatched.
        hashes.observe("Service", watcher::Event::Apply(service("old", Some("c"))));
        hashes.observe::<Service>("Service", watcher::Event::Init);
        hashes.observe(
            "Service",
            watcher::Event::InitApply(service("new", Some("d"))),
        );
        hashes.observe::<Service>("Service", watcher::Event::InitDone);
        assert_eq!(hashes.lookup("Service", "shop", "old"), Lookup::Absent);
        assert_eq!(
            hashes.lookup("Service", "shop", "new"),
            Lookup::Present(Some("d".to_owned()))
        );
    }
}
