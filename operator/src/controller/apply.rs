//! Apply: server-side apply of the desired children, skipped when nothing changed, repeated when
//! someone else changed what the operator applied.
//!
//! Every applied object carries the annotation [`APPLIED_HASH_ANNOTATION`]: a hash of exactly what
//! was applied. Before applying, the live object is looked up in the watch-fed
//! [`super::applied::AppliedHashes`]: when its hash is the same and the fields the operator applied
//! are still its own (no drift, see [`super::applied`]), nothing is written. A resync of an
//! unchanged app therefore writes nothing; an edit by anyone else of a field the operator manages
//! is put back, counted (`kumiko_operator_drift_corrections_total`) and reported by a
//! `DriftCorrected` Event on the app.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Client, Resource, ResourceExt};
use kumiko_crds::KumikoApp;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::Context;
use super::applied::{Drift, Lookup, Ownership};
use crate::Error;
use crate::desired::MANAGER;

/// The annotation holding the hash of what the operator last applied to an object.
pub const APPLIED_HASH_ANNOTATION: &str = "kumiko.so/applied-hash";

/// The hash of an object as it would be applied.
pub fn applied_hash<K: Serialize>(object: &K) -> Result<String, Error> {
    let text = serde_json::to_string(object).map_err(|source| Error::Serialize {
        what: "a child object, to hash it".to_owned(),
        source,
    })?;
    Ok(hex::encode(Sha256::digest(text.as_bytes()))[..16].to_owned())
}

/// What [`apply`] did with one child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The live object already held it: nothing written.
    Unchanged,
    /// Written: new, or what the operator applies changed.
    Written,
    /// Written back after someone else changed fields the operator manages.
    DriftCorrected {
        /// The field manager that had changed it, where known.
        by: Option<String>,
    },
}

/// What to do with a child, given what is known of it: the pure half of [`apply`].
pub fn decide(lookup: &Lookup, hash: &str) -> Decision {
    match lookup {
        Lookup::Unknown | Lookup::Absent => Decision::Write,
        Lookup::Present { hash: live, drift } if live.as_deref() == Some(hash) => match drift {
            Drift::None => Decision::Keep,
            Drift::Changed { by } => Decision::CorrectDrift { by: by.clone() },
        },
        Lookup::Present { .. } => Decision::Write,
    }
}

/// The outcome of [`decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The live object holds what would be applied: write nothing.
    Keep,
    /// Apply: the object is new or what the operator applies changed.
    Write,
    /// Apply again: someone else changed fields the operator applied.
    CorrectDrift {
        /// The field manager that changed them, where known.
        by: Option<String>,
    },
}

/// Applies `object`, a child of `app`, unless the live object already holds it.
pub async fn apply<K>(context: &Context, app: &KumikoApp, object: &K) -> Result<Applied, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let kind = K::kind(&()).into_owned();
    let name = object.name_any();
    let namespace = object.namespace().unwrap_or_default();
    let hash = applied_hash(object)?;
    let lookup = context.applied.lookup(&kind, &namespace, &name);
    let decision = decide(&lookup, &hash);
    if decision == Decision::Keep {
        // Trusted as it is (after a restart the first look sets the baseline).
        context.applied.trust(&kind, &namespace, &name);
        return Ok(Applied::Unchanged);
    }
    let mut stamped = object.clone();
    stamped
        .annotations_mut()
        .insert(APPLIED_HASH_ANNOTATION.to_owned(), hash.clone());
    let before = match &lookup {
        Lookup::Present { .. } => Some(previous_fields(context, &kind, &namespace, &name)),
        Lookup::Unknown | Lookup::Absent => None,
    };
    let live = server_side_apply(&context.client, &stamped).await?;
    let owned = Ownership::of(live.meta());
    context
        .applied
        .wrote(&kind, &namespace, &name, &hash, owned.clone());
    context.metrics.wrote(&kind);
    tracing::info!(%kind, %namespace, %name, "applied");
    let Decision::CorrectDrift { by } = decision else {
        return Ok(Applied::Written);
    };
    // After a restart "changed since" may be a harmless update of fields the operator does not
    // apply: only a change of the operator's own fields is drift.
    if before.flatten() == owned.fields {
        return Ok(Applied::Written);
    }
    context.metrics.drift_corrected(&kind);
    let changed_by = by
        .as_deref()
        .map(|manager| format!(" (changed by field manager {manager:?})"))
        .unwrap_or_default();
    context
        .publish_event(
            app,
            Some(super::plan::reference::<K>(&namespace, &name)),
            EventType::Normal,
            "DriftCorrected",
            "Apply",
            &format!("put {kind} {name} back to what the operator applies{changed_by}"),
        )
        .await;
    Ok(Applied::DriftCorrected { by })
}

/// The fingerprint of the operator's fields in the live object before this apply, as its watch
/// last saw them (`None` inside when it held none).
fn previous_fields(context: &Context, kind: &str, namespace: &str, name: &str) -> Option<u64> {
    match context.applied.lookup_ownership(kind, namespace, name) {
        Some(ownership) => ownership.fields,
        None => None,
    }
}

/// Server-side applies `object` (forced, as [`MANAGER`]) and returns the object as stored.
async fn server_side_apply<K>(client: &Client, object: &K) -> Result<K, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let kind = K::kind(&());
    let name = object.name_any();
    let namespace = object.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    // The desired objects carry no apiVersion/kind (k8s-openapi types fill them when serialized).
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(|source| Error::Kube {
        action: format!("applying {kind} {namespace}/{name}"),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServiceAccount;

    #[test]
    fn the_same_object_hashes_the_same_and_a_change_hashes_differently() {
        let mut account = ServiceAccount::default();
        account.metadata.name = Some("shop".to_owned());
        let first = applied_hash(&account).unwrap();
        assert_eq!(first, applied_hash(&account.clone()).unwrap());
        account.automount_service_account_token = Some(false);
        assert_ne!(first, applied_hash(&account).unwrap());
    }
}
