//! Waiting for the cluster to reach a state.

use std::future::Future;
use std::time::Duration;

use anyhow::{Result, bail};

/// Polls `check` every 200 ms until it yields a value, or fails after `timeout` naming `what`.
/// Errors of `check` are retried too (the last one is reported on timeout).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last_error = Some(error),
        }
        if tokio::time::Instant::now() >= deadline {
            match last_error {
                Some(error) => bail!(
                    "timed out after {}s waiting for {what}; last error: {error:#}",
                    timeout.as_secs()
                ),
                None => bail!("timed out after {}s waiting for {what}", timeout.as_secs()),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
