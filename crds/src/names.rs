//! The names of the objects the operator derives from a KumikoApp.
//!
//! Every name fits its limit when the app's name does (at most
//! [`MAX_APP_NAME_LENGTH`](crate::MAX_APP_NAME_LENGTH) characters, a DNS-1035 label), which the CRD
//! enforces. The e2e suite and the local cluster use these functions too, so nobody rebuilds a name
//! by hand.

/// The label every child carries with the app's name (`app.kubernetes.io/instance`).
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// The label naming the process type or part (`api`, `worker`, `migrate`, `database`).
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
/// The label naming the product (`kumiko-app`).
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// The label naming the manager (`kumiko-operator`).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// The API Deployment, its Service and its PodDisruptionBudget.
pub fn api(app: &str) -> String {
    format!("{app}-api")
}

/// The worker Deployment and its PodDisruptionBudget.
pub fn worker(app: &str) -> String {
    format!("{app}-worker")
}

/// The ServiceAccount every pod of the app runs as.
pub fn service_account(app: &str) -> String {
    app.to_owned()
}

/// The ResourceQuota and the LimitRange.
pub fn budget(app: &str) -> String {
    format!("{app}-budget")
}

/// The dedicated CNPG Cluster.
pub fn database_cluster(app: &str) -> String {
    format!("{app}-db")
}

/// The NetworkPolicy of the API pods (the same name as the API's other objects).
pub fn api_network_policy(app: &str) -> String {
    api(app)
}

/// The NetworkPolicy that shuts the worker and migrate pods to every connection.
pub fn no_ingress_network_policy(app: &str) -> String {
    format!("{app}-no-ingress")
}

/// The NetworkPolicy of a dedicated CNPG Cluster's instances (the Cluster's name).
pub fn database_network_policy(app: &str) -> String {
    database_cluster(app)
}

/// The NetworkPolicy restricting where the app's pods connect (`spec.networkPolicy.egress`).
pub fn egress_network_policy(app: &str) -> String {
    format!("{app}-egress")
}

/// The Secret with the owner role's credentials (used by the migrate Job).
pub fn owner_secret(app: &str) -> String {
    format!("{app}-db-owner")
}

/// The Secret with the runtime role's credentials (used by `serve` and `worker`).
pub fn runtime_secret(app: &str) -> String {
    format!("{app}-db-runtime")
}

/// The migrate Job for a given hash of image, command and environment: `<app>-migrate-<hash>`,
/// at most 63 characters (the hash is cut to fit, never the app's name).
pub fn migrate_job(app: &str, hash: &str) -> String {
    let prefix = format!("{app}-migrate-");
    let room = 63usize.saturating_sub(prefix.len()).min(10);
    let hash: String = hash.chars().take(room).collect();
    format!("{prefix}{hash}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_app_name_still_yields_valid_job_names() {
        let app = "a".repeat(crate::MAX_APP_NAME_LENGTH);
        let job = migrate_job(&app, "0123456789abcdef");
        assert!(job.len() <= 63, "{job} is {} characters", job.len());
        assert!(job.ends_with("-migrate-0123456789"));
    }

    #[test]
    fn longest_app_name_yields_valid_service_names() {
        let app = "a".repeat(crate::MAX_APP_NAME_LENGTH);
        // CNPG derives `<cluster>-rw` Services; Service names are DNS-1035 labels (63 at most).
        assert!(format!("{}-rw", database_cluster(&app)).len() <= 63);
        assert!(api(&app).len() <= 63);
        assert!(worker(&app).len() <= 63);
    }
}
