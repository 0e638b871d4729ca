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

    /// The host CNPG's superuser Secret names, as it is: the short `-rw` Service name (CNPG 1.27
    /// writes `<cluster>-rw`), which resolves only in the Cluster's namespace; `<cluster>-rw` when
    /// the Secret names none (older CNPG versions). Never qualified here: qualifying it is the
    /// operator's job (`spec.database.shared.clusterNamespace`).
    fn secret_host(&self) -> String {
        self.superuser
            .get("host")
            .filter(|host| !host.is_empty())
            .cloned()
            .unwrap_or_else(|| format!("{}-rw", self.name))
    }

    /// The Postgres port (5432 when the Secret names none).
    fn secret_port(&self) -> String {
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

    /// A superuser connection to `database`, reachable from the test process (through a tunnel
    /// to the Service the Secret's host names, in the Cluster's namespace).
    pub async fn superuser(&self, cluster: &TestCluster, database: &str) -> Result<Reachable> {
        let uri = self.superuser_uri(&self.secret_host(), &self.secret_port(), database)?;
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

    /// Writes the admin Secret `secret` into `app_namespace` for an app's
    /// `spec.database.shared.adminSecret` (which names a Secret of the app's namespace): a
    /// verbatim copy of CNPG's `<cluster>-superuser` Secret, every key as CNPG wrote it (on
    /// CNPG 1.27 the short `host: <cluster>-rw`, `dbname: *`, `uri` on `<cluster>-rw.<ns>`), as a
    /// user copies it. Nothing is qualified or rewritten.
    pub async fn write_admin_secret(
        &self,
        cluster: &TestCluster,
        app_namespace: &str,
        secret: &str,
    ) -> Result<()> {
        let data: BTreeMap<String, ByteString> = self
            .superuser
            .iter()
            .map(|(key, value)| (key.clone(), ByteString(value.clone().into_bytes())))
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
