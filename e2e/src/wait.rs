//! Waiting for the cluster to reach a state.

use std::future::Future;
use std::time::Duration;

use anyhow::{Result, bail};

/// Multiplies every wait of the suite (a real cluster pulls images and starts Postgres far slower
/// than kube-sim): a positive number; 1 when unset.
pub const TIMEOUT_SCALE_ENV: &str = "KUMIKO_E2E_TIMEOUT_SCALE";

/// `timeout` scaled by [`TIMEOUT_SCALE_ENV`].
pub fn scaled(timeout: Duration) -> Duration {
    scale_by(timeout, std::env::var(TIMEOUT_SCALE_ENV).ok().as_deref())
}

fn scale_by(timeout: Duration, scale: Option<&str>) -> Duration {
    match scale.and_then(|scale| scale.trim().parse::<f64>().ok()) {
        Some(factor) if factor.is_finite() && factor > 0.0 => timeout.mul_f64(factor),
        _ => timeout,
    }
}

/// Polls `check` every 200 ms until it yields a value, or fails after `timeout` (scaled by
/// [`TIMEOUT_SCALE_ENV`]) naming `what`. Errors of `check` are retried too (the last one is
/// reported on timeout).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let timeout = scaled(timeout);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_scale_by_a_positive_factor_and_ignore_anything_else() {
        let base = Duration::from_secs(10);
        assert_eq!(scale_by(base, None), base);
        assert_eq!(scale_by(base, Some("4")), Duration::from_secs(40));
        assert_eq!(scale_by(base, Some("0.5")), Duration::from_secs(5));
        assert_eq!(scale_by(base, Some("0")), base);
        assert_eq!(scale_by(base, Some("-2")), base);
        assert_eq!(scale_by(base, Some("fast")), base);
    }
}
