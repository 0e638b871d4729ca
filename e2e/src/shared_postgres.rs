//! A CNPG Cluster the harness owns, with superuser access, for apps in the `shared` database mode
//! (`spec.database.shared`): it outlives the apps, so a test can look into Postgres after an app
//! is gone. The same on both clusters: kube-sim's CNPG simulation backs it with a throwaway
//! Postgres, kind's CNPG runs it; the superuser comes from CNPG's `<cluster>-superuser` Secret.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

use crate::cluster::{FIELD_MANAGER, TestCluster};
use crate::postgres::{self, Reachable};
use crate::wait::eventually;

/// How long the shared Cluster may take to accept connections (a real CNPG pulls an image and
/// runs initdb).
pub const SHARED_POSTGRES_TIMEOUT: Duration = Duration::from_secs(300);

/// A CNPG Cluster (one instance, `enableSuperuserAccess: true`) in a namespace of its own.
pub struct SharedPostgres {
    /// The Cluster's namespace.
    pub namespace: String,
    /// The Cluster's name.
    pub name: String,
    superuser: BTreeMap<String, String>,
}

fn cnpg_clusters(cluster: &TestCluster, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("postgresql.cnpg.io", "v1", "Cluster"),
        "clusters",
    );
    Api::namespaced_with(cluster.client().clone(), namespace, &resource)
}

fn strings(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(key, value)| (key.clone(), String::from_utf8_lossy(&value.0).into_owned()))
        .collect()
}

impl SharedPostgres {
    /// Creates the Cluster `name` in a new namespace and waits until its superuser can log in.
    pub async fn create(cluster: &TestCluster, name: &str) -> Result<Self> {
        let namespace = cluster.namespace("shared-pg").await?;
        let manifest = json!({
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Cluster",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "instances": 1,
                "enableSuperuserAccess": true,
                "storage": {"size": "1Gi"},
            },
        });
        cnpg_clusters(cluster, &namespace)
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&manifest),
            )
            .await
            .with_context(|| format!("creating CNPG Cluster {namespace}/{name}"))?;
        let secrets: Api<Secret> = Api::namespaced(cluster.client().clone(), &namespace);
        let secret_name = format!("{name}-superuser");
        let superuser = eventually(
            &format!("Secret {namespace}/{secret_name}"),
            SHARED_POSTGRES_TIMEOUT,
            || {
                let secrets = secrets.clone();
                let secret_name = secret_name.clone();
                async move { Ok(secrets.get_opt(&secret_name).await?.as_ref().map(strings)) }
            },
        )
        .await?;
        let shared = SharedPostgres {
            namespace,
            name: name.to_owned(),
            superuser,
        };
        eventually(
            &format!("the superuser of {}/{} to log in", shared.namespace, name),
            SHARED_POSTGRES_TIMEOUT,
            || async {
                let reachable = shared.superuser(cluster, "postgres").await?;
                postgres::current_user(reachable.uri()).await?;
                Ok(Some(()))
            },
        )
        .await?;
        Ok(shared)
    }

    /// The host apps and the operator dial: the Secret's, with a short Service name qualified
    /// with the Cluster's namespace (apps live elsewhere); CNPG's `-rw` Service when the Secret
    /// names none (older CNPG versions).
    pub fn host(&self) -> String {
        match self.superuser.get("host").filter(|host| !host.is_empty()) {
            Some(host) if host.contains('.') || host.contains(':') || host == "localhost" => {
                host.clone()
            }
            Some(host) => format!("{host}.{}.svc", self.namespace),
            None => format!("{}-rw.{}.svc", self.name, self.namespace),
        }
    }

    /// The Postgres port (5432 when the Secret names none).
    pub fn port(&self) -> String {
        self.superuser
            .get("port")
            .filter(|port| !port.is_empty())
            .cloned()
            .unwrap_or_else(|| "5432".to_owned())
    }

    fn value(&self, key: &str) -> Result<&str> {
        self.superuser
            .get(key)
            .map(String::as_str)
            .with_context(|| format!("the superuser Secret of {} has no {key}", self.name))
    }

    /// A superuser connection to `database`, reachable from the test process.
    pub async fn superuser(&self, cluster: &TestCluster, database: &str) -> Result<Reachable> {
        let uri = self.superuser_uri(&self.host(), &self.port(), database)?;
        cluster.postgres(&self.namespace, &uri).await
    }

    /// The superuser's URI for `database` at `host:port`.
    pub fn superuser_uri(&self, host: &str, port: &str, database: &str) -> Result<String> {
        let encode = |text: &str| utf8_percent_encode(text, NON_ALPHANUMERIC).to_string();
        Ok(format!(
            "postgresql://{}:{}@{host}:{port}/{}",
            encode(self.value("username")?),
            encode(self.value("password")?),
            encode(database)
        ))
    }

    /// The superuser's role name.
    pub fn superuser_name(&self) -> Result<&str> {
        self.value("username")
    }

    /// Writes the admin Secret `secret` into `app_namespace` (CNPG's keys, the host qualified)
    /// for an app's `spec.database.shared.adminSecret`.
    pub async fn write_admin_secret(
        &self,
        cluster: &TestCluster,
        app_namespace: &str,
        secret: &str,
    ) -> Result<()> {
        let data: BTreeMap<String, ByteString> = [
            ("username", self.value("username")?.to_owned()),
            ("password", self.value("password")?.to_owned()),
            ("host", self.host()),
            ("port", self.port()),
            ("dbname", "postgres".to_owned()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), ByteString(value.into_bytes())))
        .collect();
        let manifest = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(secret.to_owned()),
                namespace: Some(app_namespace.to_owned()),
                ..kube::api::ObjectMeta::default()
            },
            type_: Some("kubernetes.io/basic-auth".to_owned()),
            data: Some(data),
            ..Secret::default()
        };
        Api::<Secret>::namespaced(cluster.client().clone(), app_namespace)
            .patch(
                secret,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&manifest),
            )
            .await
            .with_context(|| format!("writing Secret {app_namespace}/{secret}"))?;
        Ok(())
    }

    /// `spec.database` of an app on this Cluster, through the admin Secret `admin_secret`.
    pub fn database_spec(&self, admin_secret: &str) -> Value {
        json!({
            "shared": {
                "clusterName": self.name,
                "clusterNamespace": self.namespace,
                "adminSecret": {"name": admin_secret},
            }
        })
    }
}
