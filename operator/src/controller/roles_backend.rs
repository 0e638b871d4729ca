//! The [`RolesBackend`] over the [`crate::roles`] module: real Postgres, through the admin
//! connection Secret of the app's database.

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

fn wrap(action: &'static str, request: &RolesRequest) -> impl FnOnce(crate::roles::Error) -> Error {
    let app = format!("{}/{}", request.namespace, request.app);
    move |source| Error::Roles {
        action,
        app,
        source,
    }
}

/// The admin connection, and the app's names in Postgres. The operator and the app's pods dial
/// the same host: the admin Secret's, qualified with the database cluster's namespace
/// ([`AdminConnection::from_cluster_secret`]).
fn prepare(request: &RolesRequest) -> Result<(AdminConnection, AppDatabase), Error> {
    let admin =
        AdminConnection::from_cluster_secret(&request.admin_secret, &request.database_service)
            .map_err(wrap("reading the database admin Secret", request))?;
    let mut app = AppDatabase::new(
        &request.app,
        &format!("{}/{}", request.namespace, request.app),
    )
    .map_err(wrap("mapping the app onto Postgres names", request))?;
    app.connection_limit = request.connection_limit;
    app.statement_timeout = request.statement_timeout;
    Ok((admin, app))
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
            let (admin, app) = prepare(request)?;
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
            Ok(RolesOutcome {
                owner: provisioned.owner.secret_data(),
                runtime: runtime.secret_data(),
            })
        }
        .boxed()
    }

    fn reclaim<'a>(&'a self, request: &'a RolesRequest) -> BoxFuture<'a, Result<(), Error>> {
        async move {
            let (admin, app) = prepare(request)?;
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
    use crate::roles::ClusterService;

    fn request(admin_secret: &[(&str, &str)], service: ClusterService) -> RolesRequest {
        RolesRequest {
            app: "shop".to_owned(),
            namespace: "shop".to_owned(),
            admin_secret: admin_secret
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            database_service: service,
            connection_limit: 10,
            statement_timeout: std::time::Duration::from_secs(30),
            owner_password: None,
            runtime_password: None,
            rotate_runtime: false,
            delete_on_reclaim: false,
        }
    }

    /// The operator dials, and the app's Secrets name (their facts take the admin's host and
    /// port), the shared cluster's `-rw` Service in the cluster's namespace, not the app's.
    #[test]
    fn a_shared_cluster_in_another_namespace_is_dialled_by_its_qualified_rw_service() {
        let cnpg_copy = request(
            &[
                ("username", "postgres"),
                ("password", "pw"),
                ("host", "shared-rw"),
                ("port", "5432"),
                ("dbname", "*"),
            ],
            ClusterService::read_write("shared", "databases"),
        );
        let (admin, _) = prepare(&cnpg_copy).unwrap();
        assert_eq!(admin.host(), "shared-rw.databases.svc");
        assert_eq!(admin.port(), 5432);
        assert_eq!(admin.dbname(), "postgres");

        let password_only = request(
            &[("username", "postgres"), ("password", "pw")],
            ClusterService::read_write("shared", "databases"),
        );
        let (admin, _) = prepare(&password_only).unwrap();
        assert_eq!(admin.host(), "shared-rw.databases.svc");
    }

    #[test]
    fn a_dedicated_clusters_short_host_is_qualified_with_the_app_namespace() {
        let superuser = request(
            &[
                ("username", "postgres"),
                ("password", "pw"),
                ("host", "shop-db-rw"),
            ],
            ClusterService::read_write("shop-db", "shop"),
        );
        let (admin, _) = prepare(&superuser).unwrap();
        assert_eq!(admin.host(), "shop-db-rw.shop.svc");
    }
}
