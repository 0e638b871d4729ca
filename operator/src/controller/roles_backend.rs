//! The [`RolesBackend`] over the [`crate::roles`] module: real Postgres, through the admin
//! connection Secret of the app's database.

use std::collections::BTreeMap;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::credentials::{RolesBackend, RolesOutcome, RolesRequest};
use crate::Error;
use crate::roles::{
    AdminConnection, AppDatabase, Password, ReclaimPolicy, StoredPasswords, ensure, reclaim,
    rotate_runtime_password,
};

/// Converges roles in Postgres with [`crate::roles`].
#[derive(Clone, Copy, Debug, Default)]
pub struct PostgresRoles;

/// The host the operator dials for a Secret's `host`: a short Service name (CNPG writes
/// `<cluster>-rw`) is qualified with the app's namespace, since the operator runs in another one;
/// anything with a dot, `localhost` or an address is used as it is.
pub fn operator_host(secret_host: &str, namespace: &str) -> String {
    if secret_host.contains('.') || secret_host.contains(':') || secret_host == "localhost" {
        secret_host.to_owned()
    } else {
        format!("{secret_host}.{namespace}.svc")
    }
}

fn wrap(action: &'static str, request: &RolesRequest) -> impl FnOnce(crate::roles::Error) -> Error {
    let app = format!("{}/{}", request.namespace, request.app);
    move |source| Error::Roles {
        action,
        app,
        source,
    }
}

fn prepare(request: &RolesRequest) -> Result<(AdminConnection, AppDatabase, String, u16), Error> {
    let admin = AdminConnection::from_secret_data(&request.admin_secret)
        .map_err(wrap("reading the database admin Secret", request))?;
    let secret_host = admin.host().to_owned();
    let port = admin.port();
    let admin = admin.with_host(&operator_host(&secret_host, &request.namespace));
    let mut app = AppDatabase::new(
        &request.app,
        &format!("{}/{}", request.namespace, request.app),
    )
    .map_err(wrap("mapping the app onto Postgres names", request))?;
    app.connection_limit = request.connection_limit;
    app.statement_timeout = request.statement_timeout;
    Ok((admin, app, secret_host, port))
}

fn stored(role: &str, password: Option<&String>) -> Option<Password> {
    password.and_then(|text| Password::from_stored(role, text).ok())
}

impl RolesBackend for PostgresRoles {
    fn ensure<'a>(
        &'a self,
        request: &'a RolesRequest,
    ) -> BoxFuture<'a, Result<RolesOutcome, Error>> {
        async move {
            let (admin, app, host, port) = prepare(request)?;
            let names = app.object_names();
            let passwords = StoredPasswords {
                owner: stored(&names.owner_role, request.owner_password.as_ref()),
                runtime: stored(&names.runtime_role, request.runtime_password.as_ref()),
            };
            let provisioned = ensure(&admin, &app, &passwords)
                .await
                .map_err(wrap("provisioning the database roles", request))?;
            let mut runtime = provisioned.runtime;
            if request.rotate_runtime {
                runtime = rotate_runtime_password(&admin, &app)
                    .await
                    .map_err(wrap("rotating the runtime password", request))?;
            }
            let secret_data = |facts: crate::roles::ConnectionFacts| -> BTreeMap<String, String> {
                facts.with_endpoint(&host, port).secret_data()
            };
            Ok(RolesOutcome {
                owner: secret_data(provisioned.owner),
                runtime: secret_data(runtime),
            })
        }
        .boxed()
    }

    fn reclaim<'a>(&'a self, request: &'a RolesRequest) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            let (admin, app, _, _) = prepare(request)?;
            let policy = if request.delete_on_reclaim {
                ReclaimPolicy::Delete
            } else {
                ReclaimPolicy::Retain
            };
            reclaim(&admin, &app, policy)
                .await
                .map_err(wrap("reclaiming the database roles", request))?;
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_service_names_are_qualified_with_the_app_namespace() {
        assert_eq!(operator_host("shop-db-rw", "shop"), "shop-db-rw.shop.svc");
        assert_eq!(operator_host("db.example.com", "shop"), "db.example.com");
        assert_eq!(operator_host("127.0.0.1", "shop"), "127.0.0.1");
        assert_eq!(operator_host("localhost", "shop"), "localhost");
    }
}
