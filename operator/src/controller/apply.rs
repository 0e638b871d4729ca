//! Apply: server-side apply of the desired children, skipped when nothing changed.
//!
//! Every applied object carries the annotation [`APPLIED_HASH_ANNOTATION`]: a hash of exactly what
//! was applied. Before applying, the live object's hash is looked up (in the watch-fed
//! [`super::applied::AppliedHashes`], or by reading its metadata while that has not synced); when
//! it is the same, nothing is written. A resync of an unchanged app therefore writes nothing, also
//! after a restart.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::Context;
use super::applied::Lookup;
use crate::Error;
use crate::desired::MANAGER;

/// The annotation holding the hash of what the operator last applied to an object.
pub const APPLIED_HASH_ANNOTATION: &str = "kumiko.so/applied-hash";

/// The hash of an object as it would be applied.
pub fn applied_hash<K: Serialize>(object: &K) -> String {
    let text = serde_json::to_string(object).unwrap_or_default();
    hex::encode(Sha256::digest(text.as_bytes()))[..16].to_owned()
}

/// Whether `object` was written (false: the live object already matched).
pub async fn apply<K>(context: &Context, object: &K) -> Result<bool, Error>
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
    let hash = applied_hash(object);
    let live_hash = match context.applied.lookup(&kind, &namespace, &name) {
        Lookup::Present(hash) => hash,
        Lookup::Absent => None,
        Lookup::Unknown => {
            let api: Api<K> = Api::namespaced(context.client.clone(), &namespace);
            api.get_metadata_opt(&name)
                .await
                .map_err(|source| Error::Kube {
                    action: format!("reading {kind} {namespace}/{name}"),
                    source,
                })?
                .and_then(|live| live.metadata.annotations)
                .and_then(|mut annotations| annotations.remove(APPLIED_HASH_ANNOTATION))
        }
    };
    if live_hash.as_deref() == Some(hash.as_str()) {
        return Ok(false);
    }
    let mut stamped = object.clone();
    stamped
        .annotations_mut()
        .insert(APPLIED_HASH_ANNOTATION.to_owned(), hash.clone());
    server_side_apply(&context.client, &stamped).await?;
    context.applied.wrote(&kind, &namespace, &name, &hash);
    context.metrics.wrote(&kind);
    tracing::info!(%kind, %namespace, %name, "applied");
    Ok(true)
}

async fn server_side_apply<K>(client: &Client, object: &K) -> Result<(), Error>
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
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServiceAccount;

    #[test]
    fn the_same_object_hashes_the_same_and_a_change_hashes_differently() {
        let mut account = ServiceAccount::default();
        account.metadata.name = Some("shop".to_owned());
        let first = applied_hash(&account);
        assert_eq!(first, applied_hash(&account.clone()));
        account.automount_service_account_token = Some(false);
        assert_ne!(first, applied_hash(&account));
    }
}
