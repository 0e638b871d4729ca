//! The two credential Secrets, `<app>-db-owner` and `<app>-db-runtime`, owned by the app. Their
//! data (CNPG's keys: `host`, `port`, `dbname`, `user`, `password`, `uri`, ...) comes from the roles
//! step, so they are built after it, not with the other [`super::Children`].

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Resource;

use super::Context;
use crate::observed::Observed;
use crate::validate::ValidatedApp;

/// The Secret `name` holding `data`, labelled as the database's and owned by the app.
pub fn credential_secret(
    app: &ValidatedApp<'_>,
    name: &str,
    data: &BTreeMap<String, String>,
) -> Secret {
    let observed = Observed::default();
    let context = Context::new(app, &observed);
    let mut metadata = context.metadata(name.to_owned(), "database");
    // As written since the first release: a controller reference without `blockOwnerDeletion`
    // (changing it would rewrite every app's Secrets once).
    metadata.owner_references = app.app.controller_owner_ref(&()).map(|owner| vec![owner]);
    Secret {
        metadata,
        data: Some(
            data.iter()
                .map(|(key, value)| (key.clone(), ByteString(value.clone().into_bytes())))
                .collect(),
        ),
        type_: Some("kubernetes.io/basic-auth".to_owned()),
        ..Secret::default()
    }
}
