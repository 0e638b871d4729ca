//! Observability: structured logs on stdout, JSON by default (`KUMIKO_LOG_FORMAT=text` for
//! people), filtered by `RUST_LOG` (default `info`).

use std::io::Write;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::error::Error;

/// What observability the process ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Telemetry {
    /// Logs go to stdout in the configured format.
    Stdout,
    /// The no-op fallback: nothing is logged (installing the subscriber failed).
    NoOp,
}

/// The filter when `RUST_LOG` is unset: our `info`, libraries' warnings.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn,hyper=warn,h2=warn";

/// Installs the global log subscriber.
pub fn init(format: LogFormat) -> Result<Telemetry, Error> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let installed = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    installed
        .map(|()| Telemetry::Stdout)
        .map_err(|error| Error::Telemetry(error.to_string()))
}

/// Flushes what is buffered (the last step of shutdown, and before any forced exit).
pub fn flush() {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
}
