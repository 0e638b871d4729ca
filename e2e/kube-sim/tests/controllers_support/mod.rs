//! Shared set-up of the controller tests: an in-process kube-sim with its controllers, and
//! polling with a deadline (an upper bound that is part of each test's contract, never a timing
//! assertion).

#![allow(dead_code)]
// Test helpers: a failed set-up is a failed test.
#![allow(clippy::expect_used)]

use std::future::Future;
use std::time::Duration;

use kube::Client;
use kube_sim::controllers::{Controllers, ControllersConfig, ImageMapping, client_for};
use kube_sim::{Config, Server, ServerHandle};

/// The image name that runs the `sim-pod` test binary.
pub const SIM_POD_IMAGE: &str = "sim-pod:test";

/// A running sim with controllers.
pub struct Sim {
    /// The API server.
    pub server: ServerHandle,
    /// The controllers.
    pub controllers: Option<Controllers>,
    /// A client for the test.
    pub client: Client,
}

impl Sim {
    /// Starts the server and the controllers (`sim-pod:test` maps to the test binary).
    pub async fn start(config: ControllersConfig) -> Sim {
        Sim::start_with(Config::default(), config).await
    }

    /// Starts the server as `server` says and the controllers (`sim-pod:test` maps to the test
    /// binary).
    pub async fn start_with(server: Config, mut config: ControllersConfig) -> Sim {
        config.images.push(ImageMapping {
            image: SIM_POD_IMAGE.to_owned(),
            binary: env!("CARGO_BIN_EXE_sim-pod").into(),
        });
        let server = Server::start(server).await.expect("kube-sim starts");
        let controllers = Controllers::start_for(&server, config)
            .await
            .expect("controllers start");
        let client = client_for(&server).expect("client");
        Sim {
            server,
            controllers: Some(controllers),
            client,
        }
    }

    /// Stops the controllers (killing pod processes) and the server.
    pub async fn stop(mut self) {
        if let Some(controllers) = self.controllers.take() {
            controllers.shutdown().await;
        }
        self.server.shutdown().await;
    }
}

/// Polls `check` every 100ms until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `uri` (a CNPG Secret's, naming `<cluster>-rw.<namespace>:5432`) made reachable from the test
/// process, which is outside the cluster and resolves no Service name: its host and port
/// replaced by a local listener that forwards each connection through the API's
/// `pods/<cluster>-1/portforward` to port 5432 of the primary, as `kubectl port-forward` would.
/// The listener lives as long as the returned task.
pub async fn through_primary_portforward(
    client: &Client,
    namespace: &str,
    cluster: &str,
    uri: &str,
) -> (String, tokio::task::JoinHandle<()>) {
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(client.clone(), namespace);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a local port");
    let local = listener.local_addr().expect("its address").port();
    let primary = format!("{cluster}-1");
    let bridge = tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let Ok(mut forwarder) = pods.portforward(&primary, &[5432]).await else {
                continue;
            };
            let Some(mut upstream) = forwarder.take_stream(5432) else {
                continue;
            };
            tokio::spawn(async move {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut upstream).await;
                drop(upstream);
                let _ = forwarder.join().await;
            });
        }
    });
    let service = format!("{cluster}-rw.{namespace}:5432");
    assert!(uri.contains(&service), "the uri names {service}");
    (uri.replace(&service, &format!("127.0.0.1:{local}")), bridge)
}
