//! (being written)
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use super::ControllersConfig;
/// Runs the controller until shutdown.
pub async fn run(_client: kube::Client, _config: Arc<ControllersConfig>, shutdown: CancellationToken) {
    shutdown.cancelled().await;
}
