//! The ServiceAccount every pod of the app runs as.

use k8s_openapi::api::core::v1::ServiceAccount;

use super::Context;

/// The ServiceAccount of the app's pods; its token is never mounted.
pub(super) fn service_account(context: &Context<'_>) -> ServiceAccount {
    ServiceAccount {
        metadata: context.metadata(context.names().service_account.clone(), "app"),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}
