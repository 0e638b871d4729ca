//! Starting and stopping the server: in-process for tests ([`Server::start`]) and from the binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{AppState, router};
use base64::Engine as _;

use crate::cluster::{Cluster, ClusterConfig};
use crate::tls::Pki;
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
    /// The certificates could not be made.
    #[error("setting up TLS: {0}")]
    Tls(#[source] crate::tls::TlsError),
    /// A client configuration could not be built.
    #[error("building a client configuration: {reason}")]
    ClientConfig {
        /// What failed.
        reason: String,
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
    /// Whether to preload the shipped Gateway API CRDs ([`crate::crd::GATEWAY_API_CRDS`]) and the
    /// GatewayClass of kube-sim's gateway controller
    /// ([`crate::controllers::gateway::GATEWAY_CLASS`]), as installing the Gateway API and a
    /// gateway implementation would on a real cluster. Off by default: a cluster serves no
    /// Gateway API until it is installed.
    pub preload_gateway_api: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kubeconfig: None,
            port: 0,
            cluster: ClusterConfig::default(),
            preload_cnpg: true,
            preload_gateway_api: false,
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
    credentials: Credentials,
    cluster: Arc<Cluster>,
    shutdown: Option<oneshot::Sender<()>>,
    serve: Option<JoinHandle<()>>,
    gc: JoinHandle<()>,
}

impl Server {
    /// Starts a server on a loopback port; returns once it accepts requests.
    pub async fn start(config: Config) -> Result<ServerHandle, SimError> {
        let cluster = Cluster::new(config.cluster.clone());
        preload(&cluster, config.preload_cnpg, config.preload_gateway_api)?;
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
        let pki = Arc::new(Pki::new(&[addr.ip()]).map_err(SimError::Tls)?);
        let url = format!("https://{addr}");
        let credentials = Credentials {
            ca_pem: pki.ca_pem().to_owned(),
            token: cluster.authenticator().admin_token().to_owned(),
        };
        if let Some(path) = &config.kubeconfig {
            write_kubeconfig(path, &url, &credentials)?;
        }
        let app = router(AppState {
            cluster: cluster.clone(),
            address: addr.to_string(),
        });
        let (tx, rx) = oneshot::channel::<()>();
        let serve = tokio::spawn(serve_tls(listener, pki.acceptor(), app, rx));
        let gc = crate::gc::spawn(&cluster);
        Ok(ServerHandle {
            url,
            addr,
            kubeconfig: config.kubeconfig,
            credentials,
            cluster,
            shutdown: Some(tx),
            serve: Some(serve),
            gc,
        })
    }
}

/// Accepts connections until `stop`, each on its own task: the TLS handshake, then HTTP/1.1 with
/// upgrades (portforward and the proxy's WebSockets). Stopping ends every open connection.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: axum::Router,
    mut stop: oneshot::Receiver<()>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stop => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "accepting a connection");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        connections.spawn(async move {
            let stream = match acceptor.accept(stream).await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%error, "TLS handshake");
                    return;
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(error) = builder
                .serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "serving a connection");
            }
        });
        // Forget finished connections.
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
}

/// What a client needs to trust and authenticate to the server.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The admin bearer token.
    pub token: String,
}

fn preload(cluster: &Arc<Cluster>, cnpg: bool, gateway_api: bool) -> Result<(), SimError> {
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
    for (plural, object) in crate::authz::bootstrap_policy() {
        if let Some(rt) = registry.get("rbac.authorization.k8s.io", "v1", plural) {
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            cluster
                .create(rt, "", object, &opts)
                .map_err(|source| SimError::Preload {
                    what: format!("the bootstrap {plural} {name}"),
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
    if gateway_api
        && let Some(crd_rt) =
            registry.get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    {
        for (kind, text) in crate::crd::GATEWAY_API_CRDS {
            let what = || format!("the Gateway API {kind} CRD");
            let crd: Value = serde_saphyr::from_str(text).map_err(|e| SimError::Preload {
                what: what(),
                source: crate::status::ApiError::bad_request(e.to_string()),
            })?;
            cluster
                .create(crd_rt, "", crd, &opts)
                .map_err(|source| SimError::Preload {
                    what: what(),
                    source,
                })?;
        }
        let registry = cluster.registry();
        if let Some(class_rt) = registry.get("gateway.networking.k8s.io", "v1", "gatewayclasses") {
            cluster
                .create(
                    class_rt,
                    "",
                    crate::controllers::gateway::gateway_class(),
                    &opts,
                )
                .map_err(|source| SimError::Preload {
                    what: "the kube-sim GatewayClass".into(),
                    source,
                })?;
        }
    }
    Ok(())
}

/// The kubeconfig YAML for a server URL (context `kube-sim`, namespace `default`): the CA to trust
/// and the admin token.
pub fn kubeconfig_yaml(url: &str, credentials: &Credentials) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(credentials.ca_pem.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-sim\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\ncontexts:\n- name: kube-sim\n  context:\n    cluster: kube-sim\n    user: kube-sim-admin\n    namespace: default\ncurrent-context: kube-sim\nusers:\n- name: kube-sim-admin\n  user:\n    token: {}\npreferences: {{}}\n",
        credentials.token
    )
}

fn write_kubeconfig(path: &Path, url: &str, credentials: &Credentials) -> Result<(), SimError> {
    let err = |source| SimError::Kubeconfig {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    std::fs::write(path, kubeconfig_yaml(url, credentials)).map_err(err)
}

/// A kube client configuration for `url` that trusts the CA of `credentials` and sends its token.
pub fn client_config(url: &str, credentials: &Credentials) -> Result<kube::Config, SimError> {
    let invalid = |reason: String| SimError::ClientConfig { reason };
    let cluster_url = url
        .parse()
        .map_err(|error| invalid(format!("the URL {url}: {error}")))?;
    let mut config = kube::Config::new(cluster_url);
    let ca = pem_to_der(&credentials.ca_pem)
        .ok_or_else(|| invalid("the CA certificate is not PEM".to_owned()))?;
    config.root_cert = Some(vec![ca]);
    let authorization = http::HeaderValue::from_str(&format!("Bearer {}", credentials.token))
        .map_err(|error| invalid(format!("the token: {error}")))?;
    config
        .headers
        .push((http::header::AUTHORIZATION, authorization));
    Ok(config)
}

/// The DER bytes of the first PEM block.
fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .skip_while(|line| !line.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|line| !line.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

impl ServerHandle {
    /// The base URL, e.g. `https://127.0.0.1:41234`.
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

    /// The kubeconfig YAML for this server (its CA, the admin token).
    pub fn kubeconfig_yaml(&self) -> String {
        kubeconfig_yaml(&self.url, &self.credentials)
    }

    /// The CA and the admin token.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// A kube client configuration as the cluster's admin (trusts the CA, sends the token).
    pub fn client_config(&self) -> Result<kube::Config, SimError> {
        client_config(&self.url, &self.credentials)
    }

    /// A kube client as the cluster's admin.
    pub fn client(&self) -> Result<kube::Client, SimError> {
        kube::Client::try_from(self.client_config()?).map_err(|error| SimError::ClientConfig {
            reason: error.to_string(),
        })
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
