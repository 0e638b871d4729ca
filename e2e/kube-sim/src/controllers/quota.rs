//! (being written)

use tokio_util::sync::CancellationToken;

/// Runs the controller until shutdown.
pub async fn run(_client: kube::Client, shutdown: CancellationToken) {
    shutdown.cancelled().await;
}
