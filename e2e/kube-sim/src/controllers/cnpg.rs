//! CloudNativePG `postgresql.cnpg.io/v1` Clusters, backed by a real Postgres.
//!
//! For each Cluster the controller:
//! - creates a PersistentVolumeClaim per instance, `<cluster>-<N>`, as CloudNativePG 1.27 builds
//!   it ([`instance_claim`]), owned by the Cluster, and uses a claim of that name that already
//!   exists (a Cluster created again over the claims of a deleted one, e.g. after
//!   `kubectl delete cluster --cascade=orphan`); waits while one is still being deleted; deletes
//!   the claims of instances past `spec.instances` when it scales down, as CNPG does;
//! - finds its Postgres: with `--postgres URL` the server at that admin URL (shared by every
//!   Cluster; its data is not on the claims); with `--start-postgres` a throwaway server of its
//!   own, started with `kumiko-testkit` with its data directory on the volume of the primary's
//!   claim `<cluster>-1` ([`super::volumes`]): a new server on an empty volume, the last one's
//!   databases, roles and rows on a volume that holds them. The server is the primary pod's
//!   container: it stops when that pod is gone (the data stays), and its log is the pod's
//!   `postgres` log (`kubectl logs <cluster>-1`). The data goes when the claim goes (garbage
//!   collection after the Cluster is deleted, or `kubectl delete pvc` once no pod uses it);
//! - creates the owner role (`spec.bootstrap.initdb.owner`, default: the database name) with a
//!   password and the database (`spec.bootstrap.initdb.database`, default `app`) owned by it,
//!   for real; the password is kept across reconciliations (read back from the Secret) or taken
//!   from `spec.bootstrap.initdb.secret.name` (a basic-auth Secret) when given;
//! - writes the `<cluster>-app` Secret (unless `initdb.secret` names one) and, with
//!   `spec.enableSuperuserAccess: true`, the `<cluster>-superuser` Secret (removed when it goes
//!   false), both `kubernetes.io/basic-auth` with CNPG's keys (`username`, `user`, `password`,
//!   `host`, `port`, `dbname`, `uri`, `jdbc-uri`, `pgpass`, `fqdn-uri`, `fqdn-jdbc-uri`) and
//!   labels (`cnpg.io/cluster`, `cnpg.io/reload`, `cnpg.io/userType`), with the values CNPG 1.27
//!   writes ([`secret_data`]: host `<cluster>-rw`, port 5432), which pods resolve through their
//!   hosts file and reach through the `-rw` Service's proxy;
//! - writes the `<cluster>-rw`, `-ro` and `-r` Services (port 5432, CNPG's selectors);
//! - creates the instance pods `<cluster>-1` (the primary) to `<cluster>-N` with CNPG's labels
//!   (`cnpg.io/cluster`, `cnpg.io/instanceName`, `cnpg.io/podRole: instance`,
//!   `cnpg.io/instanceRole` and `role`: `primary` or `replica`), one container `postgres`
//!   declaring port 5432 (`postgresql`) with the Cluster's `resources`, the instance's claim
//!   mounted at `/var/lib/postgresql/data` (volume `pgdata`), bound to the node
//!   [`INSTANCE_NODE`] (so the kubelet leaves them alone), with grace period 0, and Running and
//!   Ready at once, with the Events `Scheduled`, `Pulled`, `Created` and `Started`; each
//!   publishes the real Postgres port as its container's loopback port
//!   (`kube-sim.kumiko.so/port-postgres`), so the Services' endpoints, the API server's proxy and
//!   `pods/NAME/portforward` reach the real Postgres through them, as they reach CNPG's pods.
//!   Deleted instance pods are recreated, those past `spec.instances` deleted; they go with the
//!   Cluster. Without a Postgres (instant
//!   mode with none configured) no pod is created;
//! - sets the status CNPG reports when healthy: `phase: Cluster in healthy state`, `instances`,
//!   `readyInstances` (= `spec.instances`), `currentPrimary`/`targetPrimary` `<cluster>-1`,
//!   `writeService`, `readService`, and a `Ready` condition (`ClusterIsReady`). While the
//!   database is being set up the phase is `Setting up primary`, with the reason in
//!   `phaseReason` if it fails.
//!
//! The API server also applies the resource rule of CNPG's validating webhook to every Cluster
//! write ([`webhook_causes`]): a request above its limit is refused.
//!
//! Secrets and Services carry an owner reference to the Cluster, so they go with it. With no
//! Postgres configured, Clusters stay in `Setting up primary` saying so, except in instant mode,
//! where their Secrets and Services are written but no Postgres, role or pod is created.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};
use kumiko_testkit::TempPostgres;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};
use sqlx::{ConnectOptions, Connection};
use tokio_util::sync::CancellationToken;

use super::error::{Error, Result, is_not_found, kube_error};
use super::pods::is_terminating;
use super::recorder::{EventType, Involved, Recorder, Source};
use super::volumes::Volumes;
use super::{
    CONTAINER_PORT_ANNOTATION_PREFIX, ControllersConfig, FIELD_MANAGER, POD_PORT_ANNOTATION,
    PostgresSource,
};

/// The instance pods' `podIP` and `hostIP`: the real Postgres listens on loopback.
pub const POSTGRES_HOST: &str = "127.0.0.1";

/// The node the instance pods are bound to: not the kubelet's, so no process is started for them.
pub const INSTANCE_NODE: &str = "kube-sim-cnpg";

/// The container port of Postgres in an instance pod (named `postgresql`, as in CNPG).
pub const INSTANCE_POSTGRES_PORT: i32 = 5432;

/// The image an instance pod names when the Cluster gives no `imageName`.
pub const DEFAULT_INSTANCE_IMAGE: &str = "ghcr.io/cloudnative-pg/postgresql:17";

/// The CNPG Cluster resource.
pub fn cluster_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("postgresql.cnpg.io", "v1", "Cluster"),
        "clusters",
    )
}

/// The bootstrap settings of a Cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    /// `spec.instances`.
    pub instances: i64,
    /// `spec.bootstrap.initdb.database` (default `app`).
    pub database: String,
    /// `spec.bootstrap.initdb.owner` (default: the database name).
    pub owner: String,
    /// `spec.bootstrap.initdb.secret.name`.
    pub owner_secret: Option<String>,
    /// `spec.enableSuperuserAccess`.
    pub superuser_access: bool,
}

/// Reads a Cluster's spec.
pub fn bootstrap(spec: &Value) -> Bootstrap {
    let initdb = spec.pointer("/bootstrap/initdb");
    let text = |key: &str| {
        initdb
            .and_then(|initdb| initdb.get(key))
            .and_then(Value::as_str)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
    };
    let database = text("database").unwrap_or_else(|| "app".to_owned());
    Bootstrap {
        instances: spec.get("instances").and_then(Value::as_i64).unwrap_or(1),
        owner: text("owner").unwrap_or_else(|| database.clone()),
        database,
        owner_secret: initdb
            .and_then(|initdb| initdb.pointer("/secret/name"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        superuser_access: spec
            .get("enableSuperuserAccess")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    }
}

/// Credentials for one role of a Cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Role name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Database (`*` for the superuser, as CNPG writes it).
    pub dbname: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("dbname", &self.dbname)
            .finish()
    }
}

fn encode(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

/// The port every CNPG Service and Secret names (CNPG's `postgres.ServerPort`).
pub const POSTGRES_PORT: u16 = 5432;

/// The data of a CNPG credentials Secret of Cluster `cluster` in `namespace`, as CloudNativePG
/// 1.27 writes it (`pkg/specs/secrets.go`, `CreateSecret`, called with the `-rw` Service's name
/// as the host): `host` is the short Service name `<cluster>-rw` and `port` 5432, also in
/// `pgpass`; `uri` and `jdbc-uri` name `<cluster>-rw.<namespace>:5432`; `fqdn-uri` and
/// `fqdn-jdbc-uri` name `<cluster>-rw.<namespace>.svc.cluster.local:5432`. A pod reaches them
/// through its hosts file ([`super::dns`]) and the Service's proxy, as through cluster DNS and
/// kube-proxy.
pub fn secret_data(
    credentials: &Credentials,
    cluster: &str,
    namespace: &str,
) -> BTreeMap<String, String> {
    let Credentials {
        username,
        password,
        dbname,
    } = credentials;
    let host = format!("{cluster}-rw");
    let port = POSTGRES_PORT;
    let database = if dbname == "*" {
        "*".to_owned()
    } else {
        encode(dbname)
    };
    let uri = |server: &str| {
        format!(
            "postgresql://{}:{}@{server}:{port}/{database}",
            encode(username),
            encode(password),
        )
    };
    let jdbc = |server: &str| {
        format!(
            "jdbc:postgresql://{server}:{port}/{database}?password={}&user={}",
            encode(password),
            encode(username)
        )
    };
    let namespaced = format!("{host}.{namespace}");
    let fqdn = format!("{host}.{namespace}.svc.{}", super::dns::CLUSTER_DOMAIN);
    BTreeMap::from([
        ("username".to_owned(), username.clone()),
        ("user".to_owned(), username.clone()),
        ("password".to_owned(), password.clone()),
        ("host".to_owned(), host.clone()),
        ("port".to_owned(), port.to_string()),
        ("dbname".to_owned(), dbname.clone()),
        ("uri".to_owned(), uri(&namespaced)),
        ("jdbc-uri".to_owned(), jdbc(&namespaced)),
        (
            "pgpass".to_owned(),
            format!("{host}:{port}:{dbname}:{username}:{password}\n"),
        ),
        ("fqdn-uri".to_owned(), uri(&fqdn)),
        ("fqdn-jdbc-uri".to_owned(), jdbc(&fqdn)),
    ])
}

/// A random password: 64 alphanumeric characters, as CNPG generates them.
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..64)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
}

/// How to reach a Postgres as its administrator.
#[derive(Clone)]
struct AdminTarget {
    url: String,
    username: String,
    password: String,
    port: u16,
}

fn parse_admin_url(text: &str) -> Result<AdminTarget> {
    let invalid = |reason: &str| Error::InvalidOption {
        option: "--postgres",
        value: redact_url(text),
        reason: reason.to_owned(),
    };
    let url = url::Url::parse(text).map_err(|error| invalid(&error.to_string()))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(invalid(
            "expected postgres://USER:PASSWORD@HOST:PORT/DATABASE",
        ));
    }
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8_lossy()
            .into_owned()
    };
    let username = if url.username().is_empty() {
        "postgres".to_owned()
    } else {
        decode(url.username())
    };
    Ok(AdminTarget {
        url: text.to_owned(),
        username,
        password: url.password().map(decode).unwrap_or_default(),
        port: url.port().unwrap_or(5432),
    })
}

/// The URL without its password, for messages.
fn redact_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("REDACTED"));
            }
            url.to_string()
        }
        Err(_) => "<unparseable URL>".to_owned(),
    }
}

/// Creates (or updates the password of) the owner role, and the database owned by it.
async fn provision(admin: &AdminTarget, owner: &str, password: &str, database: &str) -> Result<()> {
    let postgres_error = |action: &str| {
        let action = action.to_owned();
        move |source| Error::Postgres { action, source }
    };
    let options = sqlx::postgres::PgConnectOptions::from_str(&admin.url)
        .map_err(postgres_error("reading the Postgres admin URL"))?
        .disable_statement_logging();
    let mut connection = sqlx::postgres::PgConnection::connect_with(&options)
        .await
        .map_err(postgres_error(
            "connecting to Postgres as its administrator",
        ))?;
    let role_exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(owner)
            .fetch_one(&mut connection)
            .await
            .map_err(postgres_error("looking up the owner role"))?;
    let template = if role_exists {
        "SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', $1::text, $2::text)"
    } else {
        "SELECT format('CREATE ROLE %I WITH LOGIN PASSWORD %L', $1::text, $2::text)"
    };
    let statement: String = sqlx::query_scalar(template)
        .bind(owner)
        .bind(password)
        .fetch_one(&mut connection)
        .await
        .map_err(postgres_error("quoting the role statement"))?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
        .execute(&mut connection)
        .await
        .map_err(postgres_error(&format!("creating the owner role {owner}")))?;
    let database_exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(database)
            .fetch_one(&mut connection)
            .await
            .map_err(postgres_error("looking up the database"))?;
    if !database_exists {
        let statement: String =
            sqlx::query_scalar("SELECT format('CREATE DATABASE %I OWNER %I', $1::text, $2::text)")
                .bind(database)
                .bind(owner)
                .fetch_one(&mut connection)
                .await
                .map_err(postgres_error("quoting the database statement"))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut connection)
            .await
            .map_err(postgres_error(&format!("creating the database {database}")))?;
    }
    let _ = connection.close().await;
    Ok(())
}

struct Inner {
    client: kube::Client,
    config: Arc<ControllersConfig>,
    shared: Option<AdminTarget>,
    /// The claims' volumes, which the throwaway servers run on.
    volumes: Arc<Volumes>,
    /// Writes the instance pods' Events.
    recorder: Recorder,
    /// The throwaway servers, by the UID of the claim they run on.
    servers: Mutex<HashMap<String, ServerEntry>>,
}

/// A throwaway Postgres running on a claim's volume, as the container of an instance pod.
struct ServerEntry {
    namespace: String,
    /// The instance pod whose container it is.
    pod: String,
    /// Whether the sweep has seen that pod (only then does its absence stop the server).
    pod_seen: bool,
    /// How much of the server's log has gone to the pod's log.
    log_offset: u64,
}

/// The CNPG Cluster controller. Clones share the same state.
#[derive(Clone)]
pub struct CnpgController {
    inner: Arc<Inner>,
}

impl CnpgController {
    /// A controller for the API `client` talks to; checks `--postgres` at once.
    pub async fn new(
        client: kube::Client,
        config: Arc<ControllersConfig>,
        volumes: Arc<Volumes>,
        recorder: Recorder,
    ) -> Result<Self> {
        let shared = match &config.postgres {
            PostgresSource::Url(url) => Some(parse_admin_url(url)?),
            PostgresSource::None | PostgresSource::Throwaway => None,
        };
        Ok(CnpgController {
            inner: Arc::new(Inner {
                client,
                config,
                shared,
                volumes,
                recorder,
                servers: Mutex::new(HashMap::new()),
            }),
        })
    }

    fn lock_servers(&self) -> std::sync::MutexGuard<'_, HashMap<String, ServerEntry>> {
        self.inner.servers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn detach_all(&self) -> Vec<crate::controllers::volumes::Attachment> {
        let uids: Vec<String> = self.lock_servers().drain().map(|(uid, _)| uid).collect();
        uids.iter()
            .filter_map(|uid| self.inner.volumes.detach(uid))
            .collect()
    }

    /// Stops every throwaway Postgres (their data stays on the claims' volumes).
    pub async fn stop_all(&self) {
        let servers = self.detach_all();
        let _ = tokio::task::spawn_blocking(move || drop(servers)).await;
    }

    /// Stops every throwaway Postgres, blocking.
    pub fn stop_all_now(&self) {
        drop(self.detach_all());
    }

    /// The admin target for a Cluster whose primary's data lives on claim `claim_uid` (starting
    /// its throwaway server on that claim's volume if needed: a new cluster on an empty volume,
    /// the last one's databases on a volume that holds them), or `None` when no Postgres is
    /// configured.
    async fn admin_for(
        &self,
        claim_uid: &str,
        namespace: &str,
        primary: &str,
    ) -> Result<Option<AdminTarget>> {
        match &self.inner.config.postgres {
            PostgresSource::Url(_) => Ok(self.inner.shared.clone()),
            PostgresSource::None => Ok(None),
            PostgresSource::Throwaway => {
                let volumes = &self.inner.volumes;
                let server = match volumes.attached::<TempPostgres>(claim_uid) {
                    Some(server) => server,
                    None => {
                        let dir = volumes.path(claim_uid)?;
                        let server =
                            tokio::task::spawn_blocking(move || TempPostgres::start_in(&dir))
                                .await
                                .map_err(|error| Error::Io {
                                    action: format!(
                                        "starting a throwaway Postgres for {namespace}/{primary}"
                                    ),
                                    source: std::io::Error::other(error.to_string()),
                                })?
                                .map_err(|source| Error::TempPostgres {
                                    cluster: format!("{namespace}/{primary}"),
                                    source,
                                })?;
                        let server = Arc::new(server);
                        if let Some(previous) = volumes.attach(claim_uid, server.clone()) {
                            tokio::task::spawn_blocking(move || drop(previous));
                        }
                        if volumes.is_deleted(claim_uid) {
                            // The claim went while the server started.
                            if let Some(server) = volumes.detach(claim_uid) {
                                tokio::task::spawn_blocking(move || drop(server));
                            }
                            return Err(Error::InvalidObject {
                                object: format!("PersistentVolumeClaim {namespace}/{primary}"),
                                field: "metadata.uid".to_owned(),
                                message: "deleted while its Postgres started".to_owned(),
                            });
                        }
                        self.lock_servers().insert(
                            claim_uid.to_owned(),
                            ServerEntry {
                                namespace: namespace.to_owned(),
                                pod: primary.to_owned(),
                                pod_seen: false,
                                log_offset: 0,
                            },
                        );
                        server
                    }
                };
                Ok(Some(AdminTarget {
                    url: server.superuser_url("postgres"),
                    username: "postgres".to_owned(),
                    password: TempPostgres::SUPERUSER_PASSWORD.to_owned(),
                    port: server.port(),
                }))
            }
        }
    }

    /// Stops the servers whose instance pod is gone (the container goes with its pod; the data
    /// stays on the claim), and copies what each server logged since the last sweep into its
    /// pod's `postgres` log.
    async fn sweep(&self) {
        let entries: Vec<(String, String, String, u64)> = self
            .lock_servers()
            .iter()
            .map(|(uid, e)| {
                (
                    uid.clone(),
                    e.namespace.clone(),
                    e.pod.clone(),
                    e.log_offset,
                )
            })
            .collect();
        for (uid, namespace, pod, offset) in entries {
            let pods: Api<Pod> = Api::namespaced(self.inner.client.clone(), &namespace);
            let present = match pods.get_opt(&pod).await {
                Ok(found) => found.is_some_and(|pod| !is_terminating(&pod.metadata)),
                Err(_) => continue,
            };
            let seen = {
                let mut servers = self.lock_servers();
                let Some(entry) = servers.get_mut(&uid) else {
                    continue;
                };
                entry.pod_seen |= present;
                entry.pod_seen
            };
            if seen && !present {
                self.lock_servers().remove(&uid);
                if let Some(server) = self.inner.volumes.detach(&uid) {
                    let _ = tokio::task::spawn_blocking(move || drop(server)).await;
                }
                continue;
            }
            if present && let Some(server) = self.inner.volumes.attached::<TempPostgres>(&uid) {
                let log = server.log_path();
                let read = tokio::task::spawn_blocking(move || read_from(&log, offset))
                    .await
                    .ok()
                    .flatten();
                if let Some(chunk) = read.filter(|chunk| !chunk.is_empty()) {
                    self.inner
                        .config
                        .log_sink
                        .append(&namespace, &pod, "postgres", &chunk);
                    if let Some(entry) = self.lock_servers().get_mut(&uid) {
                        entry.log_offset = offset + chunk.len() as u64;
                    }
                }
            }
        }
    }

    /// Runs the controller until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let resource = cluster_resource();
        let clusters: Api<DynamicObject> = Api::all_with(self.inner.client.clone(), &resource);
        let instances: Api<Pod> = Api::all(self.inner.client.clone());
        let controller = Controller::new_with(clusters, watcher::Config::default(), resource)
            .owns_with(
                instances,
                (),
                watcher::Config::default().labels("cnpg.io/podRole=instance"),
            );
        let stream = controller
            .run(reconcile, error_policy, Arc::new(self.clone()))
            .for_each(|_| async {});
        let sweeper = {
            let this = self.clone();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    this.sweep().await;
                }
            }
        };
        tokio::select! {
            () = stream => {}
            () = sweeper => {}
            () = shutdown.cancelled() => {}
        }
    }

    async fn set_status(&self, cluster: &DynamicObject, status: Value) -> Result<()> {
        let namespace = cluster.namespace().unwrap_or_default();
        if cluster.data.get("status") == Some(&status) {
            return Ok(());
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.inner.client.clone(), &namespace, &cluster_resource());
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        api.patch_status(
            &cluster.name_any(),
            &params,
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .map_err(kube_error(format!(
            "updating the status of Cluster {namespace}/{}",
            cluster.name_any()
        )))?;
        Ok(())
    }
}

fn owner_reference(cluster: &DynamicObject) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "postgresql.cnpg.io/v1".to_owned(),
        kind: "Cluster".to_owned(),
        name: cluster.metadata.name.clone()?,
        uid: cluster.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

fn credentials_secret(
    cluster: &DynamicObject,
    name: &str,
    user_type: &str,
    credentials: &Credentials,
) -> Value {
    let cluster_name = cluster.name_any();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": cluster.namespace(),
            "labels": {
                "cnpg.io/cluster": cluster_name,
                "cnpg.io/reload": "true",
                "cnpg.io/userType": user_type,
            },
            "ownerReferences": owner_reference(cluster).map(|o| vec![o]),
        },
        "type": "kubernetes.io/basic-auth",
        "stringData": secret_data(credentials, &cluster_name, &cluster.namespace().unwrap_or_default()),
    })
}

/// Where CNPG mounts an instance's data volume (`PGDATA` is `pgdata` under it).
pub const PGDATA_MOUNT: &str = "/var/lib/postgresql/data";

/// The PersistentVolumeClaim of instance `index` (1-based) of a Cluster, as CloudNativePG 1.27
/// builds it (`pkg/reconciler/persistentvolumeclaim/build.go`, `Build` with the `PG_DATA`
/// calculator of `calculator.go`): named after the instance (`<cluster>-<index>`); labels
/// `cnpg.io/cluster`, `cnpg.io/instanceName`, `cnpg.io/pvcRole: PG_DATA` and
/// `app.kubernetes.io/{managed-by: cloudnative-pg, name: postgresql, component: database}`;
/// annotations `cnpg.io/nodeSerial` and `cnpg.io/pvcStatus: initializing`; owned by the Cluster
/// (`SetAsOwnedBy`: `controller: true`, no `blockOwnerDeletion`); `spec.storage.pvcTemplate` as
/// the spec, access mode `ReadWriteOnce` unless it names one, `storageClass` and
/// `resources.requests.storage: <spec.storage.size>` when given.
pub fn instance_claim(cluster: &DynamicObject, index: i64) -> Value {
    let cluster_name = cluster.name_any();
    let name = format!("{cluster_name}-{index}");
    let storage = cluster.data.pointer("/spec/storage");
    let mut spec = storage
        .and_then(|storage| storage.get("pvcTemplate"))
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    if spec
        .get("accessModes")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        spec["accessModes"] = json!(["ReadWriteOnce"]);
    }
    if let Some(class) = storage
        .and_then(|storage| storage.get("storageClass"))
        .and_then(Value::as_str)
    {
        spec["storageClassName"] = json!(class);
    }
    if let Some(size) = storage
        .and_then(|storage| storage.get("size"))
        .and_then(Value::as_str)
        .filter(|size| !size.is_empty())
    {
        if !spec.get("resources").is_some_and(Value::is_object) {
            spec["resources"] = json!({});
        }
        if !spec["resources"]
            .get("requests")
            .is_some_and(Value::is_object)
        {
            spec["resources"]["requests"] = json!({});
        }
        spec["resources"]["requests"]["storage"] = json!(size);
    }
    let mut owner = json!(owner_reference(cluster));
    if let Some(owner) = owner.as_object_mut() {
        owner.remove("blockOwnerDeletion");
    }
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name,
            "namespace": cluster.namespace(),
            "labels": {
                "cnpg.io/cluster": cluster_name,
                "cnpg.io/instanceName": name,
                "cnpg.io/pvcRole": "PG_DATA",
                "app.kubernetes.io/managed-by": "cloudnative-pg",
                "app.kubernetes.io/name": "postgresql",
                "app.kubernetes.io/component": "database",
            },
            "annotations": {
                "cnpg.io/nodeSerial": index.to_string(),
                "cnpg.io/pvcStatus": "initializing",
            },
            "ownerReferences": [owner],
        },
        "spec": spec,
    })
}

/// The claims of instances 1..=`instances`: created when missing (an existing claim of the same
/// name is used as it is, whoever made it: a Cluster created again over the claims of a deleted
/// one starts on their data). Returns the claims, or `None` while one of them is still being
/// deleted (CNPG waits for it: `waitForTerminatingPVC`).
async fn ensure_claims(
    client: &kube::Client,
    cluster: &DynamicObject,
    instances: i64,
) -> Result<Option<Vec<PersistentVolumeClaim>>> {
    let namespace = cluster.namespace().unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
    let mut found = Vec::new();
    for index in 1..=instances.max(1) {
        let name = format!("{}-{index}", cluster.name_any());
        let claim = match claims.get_opt(&name).await.map_err(kube_error(format!(
            "reading PersistentVolumeClaim {namespace}/{name}"
        )))? {
            Some(claim) => claim,
            None => {
                let manifest: PersistentVolumeClaim =
                    serde_json::from_value(instance_claim(cluster, index)).map_err(|error| {
                        Error::InvalidObject {
                            object: format!("PersistentVolumeClaim {namespace}/{name}"),
                            field: "(the claim kube-sim builds)".to_owned(),
                            message: error.to_string(),
                        }
                    })?;
                claims
                    .create(&kube::api::PostParams::default(), &manifest)
                    .await
                    .map_err(kube_error(format!(
                        "creating PersistentVolumeClaim {namespace}/{name}"
                    )))?
            }
        };
        if is_terminating(&claim.metadata) {
            return Ok(None);
        }
        found.push(claim);
    }
    Ok(Some(found))
}

/// Deletes the claims of instances past `spec.instances`, as CNPG does when it scales down
/// (`scaleDownCluster` in internal/controller/cluster_scale.go deletes the instance's PVC group);
/// each goes once its pod is gone (in-use protection).
async fn delete_surplus_claims(
    client: &kube::Client,
    cluster: &DynamicObject,
    instances: i64,
) -> Result<()> {
    let namespace = cluster.namespace().unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
    let selector = format!(
        "cnpg.io/cluster={},cnpg.io/pvcRole=PG_DATA",
        cluster.name_any()
    );
    let listed = claims
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .map_err(kube_error(format!(
            "listing the PersistentVolumeClaims in {namespace}"
        )))?;
    for claim in listed.items {
        let name = claim.name_any();
        let serial = claim
            .annotations()
            .get("cnpg.io/nodeSerial")
            .and_then(|serial| serial.parse::<i64>().ok());
        if serial.is_some_and(|serial| serial > instances.max(1))
            && !is_terminating(&claim.metadata)
        {
            match claims.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(error) if is_not_found(&error) => {}
                Err(source) => {
                    return Err(Error::Kube {
                        action: format!("deleting PersistentVolumeClaim {namespace}/{name}"),
                        source,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Marks a claim's instance as initialized (`cnpg.io/pvcStatus: ready`, as CNPG does once the
/// instance has started on it).
async fn mark_claim_ready(client: &kube::Client, claim: &PersistentVolumeClaim) -> Result<()> {
    let ready = claim
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("cnpg.io/pvcStatus"))
        .is_some_and(|status| status == "ready");
    if ready {
        return Ok(());
    }
    let namespace = claim.namespace().unwrap_or_default();
    let name = claim.name_any();
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), &namespace)
        .patch(
            &name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({"metadata": {"annotations": {"cnpg.io/pvcStatus": "ready"}}})),
        )
        .await
        .map_err(kube_error(format!(
            "marking PersistentVolumeClaim {namespace}/{name} ready"
        )))?;
    Ok(())
}

/// Instance pod `index` (1-based) of a Cluster whose Postgres listens on `port`.
pub fn instance_pod(cluster: &DynamicObject, index: i64, port: u16) -> Value {
    let cluster_name = cluster.name_any();
    let name = format!("{cluster_name}-{index}");
    let role = if index == 1 { "primary" } else { "replica" };
    let spec = cluster.data.get("spec");
    let image = spec
        .and_then(|spec| spec.get("imageName"))
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_INSTANCE_IMAGE);
    let mut container = json!({
        "name": "postgres",
        "image": image,
        "ports": [{"name": "postgresql", "containerPort": INSTANCE_POSTGRES_PORT, "protocol": "TCP"}],
        "volumeMounts": [{"name": "pgdata", "mountPath": PGDATA_MOUNT}],
    });
    if let Some(resources) = spec.and_then(|spec| spec.get("resources")) {
        container["resources"] = resources.clone();
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": cluster.namespace(),
            "labels": {
                "cnpg.io/cluster": cluster_name,
                "cnpg.io/instanceName": name,
                "cnpg.io/podRole": "instance",
                "cnpg.io/instanceRole": role,
                "role": role,
            },
            "annotations": {
                POD_PORT_ANNOTATION: port.to_string(),
                format!("{CONTAINER_PORT_ANNOTATION_PREFIX}postgres"): port.to_string(),
            },
            "ownerReferences": owner_reference(cluster).map(|o| vec![o]),
        },
        "spec": {
            "nodeName": INSTANCE_NODE,
            "terminationGracePeriodSeconds": 0,
            "containers": [container],
            "volumes": [{"name": "pgdata", "persistentVolumeClaim": {"claimName": name}}],
        },
    })
}

/// The status of a running, ready instance pod (`started`: when it started).
pub fn instance_status(image: &str, uid: &str, started: &str) -> Value {
    let condition =
        |type_: &str| json!({"type": type_, "status": "True", "lastTransitionTime": started});
    json!({
        "phase": "Running",
        "hostIP": POSTGRES_HOST,
        "hostIPs": [{"ip": POSTGRES_HOST}],
        "podIP": POSTGRES_HOST,
        "podIPs": [{"ip": POSTGRES_HOST}],
        "startTime": started,
        "qosClass": "Burstable",
        "conditions": [
            condition("PodReadyToStartContainers"),
            condition("Initialized"),
            condition("Ready"),
            condition("ContainersReady"),
            condition("PodScheduled"),
        ],
        "containerStatuses": [{
            "name": "postgres",
            "image": image,
            "imageID": image,
            "containerID": format!("kube-sim://{uid}-postgres"),
            "ready": true,
            "started": true,
            "restartCount": 0,
            "state": {"running": {"startedAt": started}},
        }],
    })
}

/// Creates the missing instance pods, marks them Running and Ready, and deletes those past
/// `spec.instances`.
async fn ensure_instances(
    controller: &CnpgController,
    cluster: &DynamicObject,
    instances: i64,
    port: u16,
) -> Result<()> {
    let client = &controller.inner.client;
    let namespace = cluster.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let wanted = instances.max(1);
    let selector = format!(
        "cnpg.io/cluster={},cnpg.io/podRole=instance",
        cluster.name_any()
    );
    let listed = pods
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .map_err(kube_error(format!(
            "listing the instance pods in {namespace}"
        )))?;
    for pod in listed.items {
        let name = pod.name_any();
        let index = name
            .rsplit_once('-')
            .and_then(|(_, index)| index.parse::<i64>().ok());
        if index.is_some_and(|index| index > wanted) && !is_terminating(&pod.metadata) {
            pods.delete(&name, &DeleteParams::default())
                .await
                .map_err(kube_error(format!("deleting pod {namespace}/{name}")))?;
        }
    }
    for index in 1..=wanted {
        let name = format!("{}-{index}", cluster.name_any());
        let existing = pods
            .get_opt(&name)
            .await
            .map_err(kube_error(format!("reading pod {namespace}/{name}")))?;
        let pod = match existing {
            Some(pod) if is_terminating(&pod.metadata) => continue,
            Some(pod) => pod,
            None => {
                let manifest: Pod = serde_json::from_value(instance_pod(cluster, index, port))
                    .map_err(|error| Error::InvalidObject {
                        object: format!("pod {namespace}/{name}"),
                        field: "(the instance pod kube-sim builds)".to_owned(),
                        message: error.to_string(),
                    })?;
                pods.create(&kube::api::PostParams::default(), &manifest)
                    .await
                    .map_err(kube_error(format!("creating pod {namespace}/{name}")))?
            }
        };
        // The server running as this pod's container stops when the pod is gone.
        for entry in controller.lock_servers().values_mut() {
            if entry.namespace == namespace && entry.pod == name {
                entry.pod_seen = true;
            }
        }
        let ready = super::pods::is_ready(&pod) && super::pods::phase(&pod) == "Running";
        if !ready {
            let image = pod
                .spec
                .as_ref()
                .and_then(|spec| spec.containers.first())
                .and_then(|container| container.image.clone())
                .unwrap_or_default();
            record_instance_start(controller, &pod, &image);
            let status = instance_status(&image, &pod.uid().unwrap_or_default(), &now_text());
            pods.patch_status(&name, &params, &Patch::Merge(json!({ "status": status })))
                .await
                .map_err(kube_error(format!(
                    "updating the status of pod {namespace}/{name}"
                )))?;
        }
    }
    Ok(())
}

/// The Events of an instance pod's start, as the scheduler and a kubelet record them
/// ([`super::kubelet`] has the rules): `Scheduled`, `Pulled` (the image is present: CNPG's
/// operand images use `IfNotPresent`), `Created`, `Started`; and its `postgres` log begins.
fn record_instance_start(controller: &CnpgController, pod: &Pod, image: &str) {
    let recorder = &controller.inner.recorder;
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    recorder.record(
        &Source::scheduler(),
        &Involved::pod(pod, None),
        EventType::Normal,
        "Scheduled",
        format!("Successfully assigned {namespace}/{name} to {INSTANCE_NODE}"),
    );
    let kubelet = Source::kubelet(INSTANCE_NODE);
    let container = Involved::pod(pod, Some("spec.containers{postgres}".to_owned()));
    recorder.record(
        &kubelet,
        &container,
        EventType::Normal,
        "Pulled",
        format!("Container image {image:?} already present on machine"),
    );
    recorder.record(
        &kubelet,
        &container,
        EventType::Normal,
        "Created",
        "Created container: postgres",
    );
    recorder.record(
        &kubelet,
        &container,
        EventType::Normal,
        "Started",
        "Started container postgres",
    );
    controller
        .inner
        .config
        .log_sink
        .start(&namespace, &name, "postgres");
}

/// The bytes of `path` from `offset` on (`None` if it cannot be read).
fn read_from(path: &std::path::Path, offset: u64) -> Option<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    file.seek(SeekFrom::Start(offset)).ok()?;
    let mut chunk = Vec::new();
    file.read_to_end(&mut chunk).ok()?;
    Some(chunk)
}

fn service(cluster: &DynamicObject, suffix: &str, selector: Value) -> Value {
    let cluster_name = cluster.name_any();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": format!("{cluster_name}-{suffix}"),
            "namespace": cluster.namespace(),
            "labels": {"cnpg.io/cluster": cluster_name},
            "ownerReferences": owner_reference(cluster).map(|o| vec![o]),
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "postgres", "port": 5432, "protocol": "TCP", "targetPort": 5432}],
        },
    })
}

/// The `lastTransitionTime` of the Ready condition: kept while its status stays the same.
fn transition_time(previous: Option<&Value>, status: &str) -> String {
    previous
        .and_then(|status| status.get("conditions"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|condition| condition.get("type").and_then(Value::as_str) == Some("Ready"))
        .filter(|condition| condition.get("status").and_then(Value::as_str) == Some(status))
        .and_then(|condition| condition.get("lastTransitionTime"))
        .and_then(Value::as_str)
        .map_or_else(now_text, str::to_owned)
}

fn now_text() -> String {
    // Whole seconds, as metav1.Time is serialised.
    let now = super::pods::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

/// The status of a healthy Cluster (`previous`: the current status, for transition times).
pub fn healthy_status(
    name: &str,
    instances: i64,
    generation: Option<i64>,
    previous: Option<&Value>,
) -> Value {
    json!({
        "phase": "Cluster in healthy state",
        "instances": instances,
        "readyInstances": instances,
        "currentPrimary": format!("{name}-1"),
        "targetPrimary": format!("{name}-1"),
        "latestGeneratedNode": instances,
        "writeService": format!("{name}-rw"),
        "readService": format!("{name}-r"),
        "conditions": [{
            "type": "Ready",
            "status": "True",
            "reason": "ClusterIsReady",
            "message": "Cluster is Ready",
            "lastTransitionTime": transition_time(previous, "True"),
            "observedGeneration": generation,
        }],
    })
}

fn setting_up_status(instances: i64, reason: &str, previous: Option<&Value>) -> Value {
    json!({
        "phase": "Setting up primary",
        "phaseReason": reason,
        "instances": instances,
        "readyInstances": 0,
        "conditions": [{
            "type": "Ready",
            "status": "False",
            "reason": "ClusterIsNotReady",
            "message": reason,
            "lastTransitionTime": transition_time(previous, "False"),
        }],
    })
}

async fn read_secret(api: &Api<Secret>, name: &str) -> Result<Option<BTreeMap<String, String>>> {
    match api.get(name).await {
        Ok(secret) => Ok(Some(
            secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(key, value)| (key, String::from_utf8_lossy(&value.0).into_owned()))
                .collect(),
        )),
        Err(error) if is_not_found(&error) => Ok(None),
        Err(error) => Err(Error::Kube {
            action: format!("reading Secret {name}"),
            source: error,
        }),
    }
}

async fn reconcile(cluster: Arc<DynamicObject>, controller: Arc<CnpgController>) -> Result<Action> {
    if is_terminating(&cluster.metadata) {
        return Ok(Action::await_change());
    }
    // The cache may hold a Cluster that has just been deleted: nothing is created for it (its
    // claims would outlive it until garbage collection, and start servers on dying volumes).
    let current = Api::<DynamicObject>::namespaced_with(
        controller.inner.client.clone(),
        &cluster.namespace().unwrap_or_default(),
        &cluster_resource(),
    )
    .get_opt(&cluster.name_any())
    .await
    .map_err(kube_error(format!(
        "reading Cluster {}",
        cluster.name_any()
    )))?;
    if current
        .is_none_or(|current| current.uid() != cluster.uid() || is_terminating(&current.metadata))
    {
        return Ok(Action::await_change());
    }
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let spec = cluster.data.get("spec").cloned().unwrap_or(Value::Null);
    let settings = bootstrap(&spec);
    let client = controller.inner.client.clone();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let apply = PatchParams::apply(FIELD_MANAGER).force();

    // The instances' claims first (CNPG creates them before the pods): the primary's data
    // lives on `<cluster>-1`'s volume. Without a Postgres nothing is created.
    let claims = if matches!(controller.inner.config.postgres, PostgresSource::None) {
        Vec::new()
    } else {
        let ensured = match ensure_claims(&client, &cluster, settings.instances).await {
            Ok(ensured) => ensured,
            Err(error) => {
                // E.g. a claim over the namespace's storage quota: say so, as CNPG's status does.
                controller
                    .set_status(
                        &cluster,
                        setting_up_status(
                            settings.instances,
                            &with_sources(&error),
                            cluster.data.get("status"),
                        ),
                    )
                    .await?;
                return Err(error);
            }
        };
        match ensured {
            Some(claims) => claims,
            None => {
                controller
                    .set_status(
                        &cluster,
                        setting_up_status(
                            settings.instances,
                            "Waiting for the previous PersistentVolumeClaims to be removed",
                            cluster.data.get("status"),
                        ),
                    )
                    .await?;
                return Ok(Action::requeue(Duration::from_secs(1)));
            }
        }
    };
    let primary_claim = claims
        .first()
        .and_then(ResourceExt::uid)
        .unwrap_or_default();
    let admin = match controller
        .admin_for(&primary_claim, &namespace, &format!("{name}-1"))
        .await
    {
        Ok(Some(admin)) => Some(admin),
        Ok(None) if controller.inner.config.instant => None,
        Ok(None) => {
            controller
                .set_status(
                    &cluster,
                    setting_up_status(
                        settings.instances,
                        "kube-sim has no Postgres: start it with --postgres URL or --start-postgres",
                        cluster.data.get("status"),
                    ),
                )
                .await?;
            return Ok(Action::await_change());
        }
        Err(error) => {
            controller
                .set_status(
                    &cluster,
                    setting_up_status(
                        settings.instances,
                        &error.to_string(),
                        cluster.data.get("status"),
                    ),
                )
                .await?;
            return Err(error);
        }
    };
    let port = admin.as_ref().map_or(5432, |admin| admin.port);

    // The owner's password: the user's Secret, else the one already issued, else a new one.
    let app_secret = format!("{name}-app");
    let password = match &settings.owner_secret {
        Some(secret) => read_secret(&secrets, secret)
            .await?
            .and_then(|data| data.get("password").cloned())
            .ok_or_else(|| Error::InvalidObject {
                object: format!("Cluster {namespace}/{name}"),
                field: "spec.bootstrap.initdb.secret.name".to_owned(),
                message: format!("Secret {secret:?} does not exist or has no `password` key"),
            })?,
        None => read_secret(&secrets, &app_secret)
            .await?
            .and_then(|data| data.get("password").cloned())
            .unwrap_or_else(generate_password),
    };
    if let Some(admin) = &admin
        && let Err(error) = provision(admin, &settings.owner, &password, &settings.database).await
    {
        controller
            .set_status(
                &cluster,
                setting_up_status(
                    settings.instances,
                    &error.to_string(),
                    cluster.data.get("status"),
                ),
            )
            .await?;
        return Err(error);
    }

    if settings.owner_secret.is_none() {
        let credentials = Credentials {
            username: settings.owner.clone(),
            password: password.clone(),
            dbname: settings.database.clone(),
        };
        secrets
            .patch(
                &app_secret,
                &apply,
                &Patch::Apply(credentials_secret(
                    &cluster,
                    &app_secret,
                    "app",
                    &credentials,
                )),
            )
            .await
            .map_err(kube_error(format!(
                "writing Secret {namespace}/{app_secret}"
            )))?;
    }
    let superuser_secret = format!("{name}-superuser");
    if settings.superuser_access {
        let credentials = Credentials {
            username: admin
                .as_ref()
                .map_or_else(|| "postgres".to_owned(), |a| a.username.clone()),
            password: admin
                .as_ref()
                .map_or_else(generate_password, |a| a.password.clone()),
            dbname: "*".to_owned(),
        };
        secrets
            .patch(
                &superuser_secret,
                &apply,
                &Patch::Apply(credentials_secret(
                    &cluster,
                    &superuser_secret,
                    "superuser",
                    &credentials,
                )),
            )
            .await
            .map_err(kube_error(format!(
                "writing Secret {namespace}/{superuser_secret}"
            )))?;
    } else if let Err(error) = secrets
        .delete(&superuser_secret, &DeleteParams::default())
        .await
        && !is_not_found(&error)
    {
        return Err(Error::Kube {
            action: format!("removing Secret {namespace}/{superuser_secret}"),
            source: error,
        });
    }

    for (suffix, selector) in [
        (
            "rw",
            json!({"cnpg.io/cluster": name, "cnpg.io/instanceRole": "primary"}),
        ),
        (
            "ro",
            json!({"cnpg.io/cluster": name, "cnpg.io/instanceRole": "replica"}),
        ),
        (
            "r",
            json!({"cnpg.io/cluster": name, "cnpg.io/podRole": "instance"}),
        ),
    ] {
        let service_name = format!("{name}-{suffix}");
        services
            .patch(
                &service_name,
                &apply,
                &Patch::Apply(service(&cluster, suffix, selector)),
            )
            .await
            .map_err(kube_error(format!(
                "writing Service {namespace}/{service_name}"
            )))?;
    }

    if admin.is_some() {
        ensure_instances(&controller, &cluster, settings.instances, port).await?;
        delete_surplus_claims(&client, &cluster, settings.instances).await?;
        for claim in &claims {
            mark_claim_ready(&client, claim).await?;
        }
    }

    controller
        .set_status(
            &cluster,
            healthy_status(
                &name,
                settings.instances,
                cluster.metadata.generation,
                cluster.data.get("status"),
            ),
        )
        .await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// An error with its causes, `: `-separated.
fn with_sources(error: &Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn error_policy(
    _cluster: Arc<DynamicObject>,
    error: &Error,
    _controller: Arc<CnpgController>,
) -> Action {
    tracing::warn!(%error, "cnpg controller");
    Action::requeue(Duration::from_secs(2))
}

/// The name of CloudNativePG's validating webhook for Clusters, which prefixes its denials.
pub const VALIDATING_WEBHOOK: &str = "vcluster.cnpg.io";

/// What CloudNativePG's validating webhook for Clusters (`vcluster.cnpg.io`,
/// `ClusterCustomValidator.validateResources` in internal/webhook/v1/cluster_webhook.go of CNPG
/// 1.27) refuses of `spec.resources`, on create and update: a CPU or memory request above its
/// limit (both non-zero), at `spec.resources.requests.<cpu|memory>` with the request in its
/// canonical form; and (`validateStorageConfigurationSize`) a `spec.storage` without a valid
/// `size` and without a storage request in its `pvcTemplate`. The webhook's other rules are not
/// simulated.
pub fn webhook_causes(cluster: &Value) -> Vec<crate::status::Cause> {
    use super::quantity::Quantity;
    let resources = cluster.pointer("/spec/resources");
    let get = |section: &str, name: &str| {
        resources
            .and_then(|r| r.get(section))
            .and_then(|s| s.get(name))
            .and_then(Value::as_str)
            .and_then(|text| Quantity::parse(text).ok())
            .filter(|q| !q.is_zero())
    };
    let mut causes = Vec::new();
    let size = cluster
        .pointer("/spec/storage/size")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !size.is_empty() && Quantity::parse(size).is_err() {
        causes.push(crate::strategy::cause(
            "FieldValueInvalid",
            "spec.storage.size",
            format!("Invalid value: {size:?}: Size value isn't valid"),
        ));
    }
    let template_request = cluster
        .pointer("/spec/storage/pvcTemplate/resources/requests/storage")
        .and_then(Value::as_str)
        .and_then(|text| Quantity::parse(text).ok())
        .filter(|q| !q.is_zero());
    if size.is_empty() && template_request.is_none() {
        causes.push(crate::strategy::cause(
            "FieldValueInvalid",
            "spec.storage.size",
            "Invalid value: \"\": Size not configured. Please add it, or a storage request in the pvcTemplate."
                .to_owned(),
        ));
    }
    for (name, what) in [("cpu", "CPU"), ("memory", "Memory")] {
        if let (Some(request), Some(limit)) = (get("requests", name), get("limits", name))
            && request > limit
        {
            causes.push(crate::strategy::cause(
                "FieldValueInvalid",
                &format!("spec.resources.requests.{name}"),
                format!(
                    "Invalid value: {:?}: {what} request is greater than the limit",
                    request.canonical()
                ),
            ));
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initdb_defaults_to_app_owned_by_app() {
        let settings = bootstrap(&json!({"instances": 3}));
        assert_eq!(
            settings,
            Bootstrap {
                instances: 3,
                database: "app".to_owned(),
                owner: "app".to_owned(),
                owner_secret: None,
                superuser_access: false
            }
        );
        let named = bootstrap(&json!({"instances": 1, "enableSuperuserAccess": true,
            "bootstrap": {"initdb": {"database": "shop"}}}));
        assert_eq!(
            (named.database.as_str(), named.owner.as_str()),
            ("shop", "shop")
        );
        assert!(named.superuser_access);
    }

    /// CloudNativePG 1.27, `pkg/specs/secrets.go` (`CreateSecret`): the short `-rw` Service name
    /// in `host` and `pgpass` (CNPG writes the password unescaped there), the namespace-qualified
    /// one in `uri`/`jdbc-uri`, the cluster-domain one in the `fqdn-` forms; port 5432.
    #[test]
    fn secret_carries_what_cnpg_1_27_writes() {
        let data = secret_data(
            &Credentials {
                username: "app".to_owned(),
                password: "p:w@".to_owned(),
                dbname: "app".to_owned(),
            },
            "shop-db",
            "shop",
        );
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "dbname",
                "fqdn-jdbc-uri",
                "fqdn-uri",
                "host",
                "jdbc-uri",
                "password",
                "pgpass",
                "port",
                "uri",
                "user",
                "username"
            ]
        );
        assert_eq!(data["host"], "shop-db-rw");
        assert_eq!(data["port"], "5432");
        assert_eq!(
            data["uri"],
            "postgresql://app:p%3Aw%40@shop-db-rw.shop:5432/app"
        );
        assert_eq!(data["pgpass"], "shop-db-rw:5432:app:app:p:w@\n");
        assert_eq!(
            data["jdbc-uri"],
            "jdbc:postgresql://shop-db-rw.shop:5432/app?password=p%3Aw%40&user=app"
        );
        assert_eq!(
            data["fqdn-uri"],
            "postgresql://app:p%3Aw%40@shop-db-rw.shop.svc.cluster.local:5432/app"
        );
        assert!(!data.values().any(|value| value.contains("127.0.0.1")));
        let superuser = secret_data(
            &Credentials {
                username: "postgres".to_owned(),
                password: "pw".to_owned(),
                dbname: "*".to_owned(),
            },
            "shop-db",
            "shop",
        );
        assert_eq!(superuser["dbname"], "*");
        assert_eq!(
            superuser["uri"],
            "postgresql://postgres:pw@shop-db-rw.shop:5432/*"
        );
    }

    #[test]
    fn admin_url_errors_never_show_the_password() {
        let error = match parse_admin_url("mysql://root:hunter2@127.0.0.1/x") {
            Err(error) => error.to_string(),
            Ok(_) => panic!("mysql is not postgres"),
        };
        assert!(!error.contains("hunter2"), "{error}");
        let target =
            parse_admin_url("postgres://admin:s%40cret@127.0.0.1:6543/postgres").expect("url");
        assert_eq!(
            (
                target.username.as_str(),
                target.password.as_str(),
                target.port
            ),
            ("admin", "s@cret", 6543)
        );
        let debug = format!(
            "{:?}",
            Credentials {
                username: "u".into(),
                password: "hunter2".into(),
                dbname: "d".into(),
            }
        );
        assert!(!debug.contains("hunter2"));
    }

    #[test]
    fn ready_condition_keeps_its_transition_time_while_unchanged() {
        let first = healthy_status("db", 1, Some(1), None);
        let time = first["conditions"][0]["lastTransitionTime"].clone();
        assert!(time.as_str().is_some_and(|t| t.ends_with('Z')));
        let previous = json!({"conditions": [{"type": "Ready", "status": "True",
            "lastTransitionTime": "2025-01-01T00:00:00Z"}]});
        let again = healthy_status("db", 1, Some(1), Some(&previous));
        assert_eq!(
            again["conditions"][0]["lastTransitionTime"],
            json!("2025-01-01T00:00:00Z")
        );
        let failing = setting_up_status(1, "x", Some(&previous));
        assert_ne!(
            failing["conditions"][0]["lastTransitionTime"],
            json!("2025-01-01T00:00:00Z")
        );
    }

    #[test]
    fn generated_passwords_are_long_and_alphanumeric() {
        let password = generate_password();
        assert_eq!(password.len(), 64);
        assert!(password.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
