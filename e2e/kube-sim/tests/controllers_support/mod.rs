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
    pub async fn start(mut config: ControllersConfig) -> Sim {
        config.images.push(ImageMapping {
            image: SIM_POD_IMAGE.to_owned(),
            binary: env!("CARGO_BIN_EXE_sim-pod").into(),
        });
        let server = Server::start(Config::default())
            .await
            .expect("kube-sim starts");
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
