//! Starting and stopping the server: in-process for tests ([`Server::start`]) and from the binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{AppState, router};
use crate::cluster::{Cluster, ClusterConfig};
use crate::write::WriteOptions;

/// Errors of starting the server.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The listening socket could not be opened.
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Bind {
        /// The port asked for (0: any free port).
        port: u16,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The kubeconfig could not be written.
    #[error("cannot write the kubeconfig {}: {source}", path.display())]
    Kubeconfig {
        /// Where.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A preloaded object was refused (a bug in the shipped manifests).
    #[error("cannot preload {what}: {source}")]
    Preload {
        /// What was being created.
        what: String,
        /// The API error.
        #[source]
        source: crate::status::ApiError,
    },
}

/// How to start the server.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to write a kubeconfig pointing at the server (none: do not write one).
    pub kubeconfig: Option<PathBuf>,
    /// The loopback port (0: a free one).
    pub port: u16,
    /// API server tunables.
    pub cluster: ClusterConfig,
    /// Whether to preload the shipped CNPG `Cluster` CRD.
    pub preload_cnpg: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kubeconfig: None,
            port: 0,
            cluster: ClusterConfig::default(),
            preload_cnpg: true,
        }
    }
}

/// The namespaces every cluster starts with.
pub const INITIAL_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Entry point of the library.
#[derive(Debug)]
pub struct Server;

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    url: String,
    addr: SocketAddr,
    kubeconfig: Option<PathBuf>,
    cluster: Arc<Cluster>,
    shutdown: Option<oneshot::Sender<()>>,
    serve: Option<JoinHandle<()>>,
    gc: JoinHandle<()>,
}

impl Server {
    /// Starts a server on a loopback port; returns once it accepts requests.
    pub async fn start(config: Config) -> Result<ServerHandle, SimError> {
        let cluster = Cluster::new(config.cluster.clone());
        preload(&cluster, config.preload_cnpg)?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port))
            .await
            .map_err(|source| SimError::Bind {
                port: config.port,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind {
            port: config.port,
            source,
        })?;
        let url = format!("http://{addr}");
        if let Some(path) = &config.kubeconfig {
            write_kubeconfig(path, &url)?;
        }
        let app = router(AppState {
            cluster: cluster.clone(),
            address: addr.to_string(),
        });
        let (tx, rx) = oneshot::channel::<()>();
        let serve = tokio::spawn(async move {
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "kube-sim stopped serving");
            }
        });
        let gc = crate::gc::spawn(&cluster);
        Ok(ServerHandle {
            url,
            addr,
            kubeconfig: config.kubeconfig,
            cluster,
            shutdown: Some(tx),
            serve: Some(serve),
            gc,
        })
    }
}

fn preload(cluster: &Arc<Cluster>, cnpg: bool) -> Result<(), SimError> {
    let opts = WriteOptions {
        manager: "kube-apiserver".into(),
        ..Default::default()
    };
    let registry = cluster.registry();
    if let Some(ns_rt) = registry.get("", "v1", "namespaces") {
        for ns in INITIAL_NAMESPACES {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            cluster
                .create(ns_rt, "", obj, &opts)
                .map_err(|source| SimError::Preload {
                    what: format!("namespace {ns}"),
                    source,
                })?;
        }
    }
    if cnpg
        && let Some(crd_rt) =
            registry.get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    {
        let crd: Value = serde_saphyr::from_str(crate::crd::CNPG_CLUSTER_CRD).map_err(|e| {
            SimError::Preload {
                what: "the CNPG Cluster CRD".into(),
                source: crate::status::ApiError::bad_request(e.to_string()),
            }
        })?;
        cluster
            .create(crd_rt, "", crd, &opts)
            .map_err(|source| SimError::Preload {
                what: "the CNPG Cluster CRD".into(),
                source,
            })?;
    }
    Ok(())
}

/// The kubeconfig YAML for a server URL (context `kube-sim`, namespace `default`, no credentials).
pub fn kubeconfig_yaml(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-sim\n  cluster:\n    server: {url}\ncontexts:\n- name: kube-sim\n  context:\n    cluster: kube-sim\n    user: kube-sim\n    namespace: default\ncurrent-context: kube-sim\nusers:\n- name: kube-sim\n  user: {{}}\npreferences: {{}}\n"
    )
}

fn write_kubeconfig(path: &Path, url: &str) -> Result<(), SimError> {
    let err = |source| SimError::Kubeconfig {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    std::fs::write(path, kubeconfig_yaml(url)).map_err(err)
}

impl ServerHandle {
    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the kubeconfig was written, if asked for.
    pub fn kubeconfig_path(&self) -> Option<&Path> {
        self.kubeconfig.as_deref()
    }

    /// The kubeconfig YAML for this server.
    pub fn kubeconfig_yaml(&self) -> String {
        kubeconfig_yaml(&self.url)
    }

    /// The cluster behind the server: faults, admission hooks, pod logs, direct reads.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Stops serving (open watches end) and waits for the server task.
    pub async fn shutdown(mut self) {
        self.cluster.faults().cut_watches();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(serve) = self.serve.take() {
            let _ = serve.await;
        }
        self.gc.abort();
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.gc.abort();
        if let Some(serve) = &self.serve {
            serve.abort();
        }
    }
}
