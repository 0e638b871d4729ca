//! (being written)
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use super::{ControllersConfig, Result};
/// The CNPG controller.
#[derive(Clone)]
pub struct CnpgController;
impl CnpgController {
    /// New.
    pub async fn new(_client: kube::Client, _config: Arc<ControllersConfig>) -> Result<Self> { Ok(CnpgController) }
    /// Run.
    pub async fn run(self, shutdown: CancellationToken) { shutdown.cancelled().await; }
    /// Stop.
    pub async fn stop_all(&self) {}
    /// Stop now.
    pub fn stop_all_now(&self) {}
}
