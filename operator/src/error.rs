//! The operator's error type: one enum, a `#[source]` on every wrapped cause, and a static category
//! for metrics.

use std::path::PathBuf;

/// Everything that can go wrong in the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing YAML failed.
    #[error("serializing YAML")]
    SerializeYaml(#[source] serde_saphyr::SerializeError),
    /// Writing to standard output failed.
    #[error("writing to standard output")]
    Stdout(#[source] std::io::Error),
    /// Reading an input file failed.
    #[error("reading {path}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An input manifest is not valid YAML, or not of the expected shape.
    #[error("{path}: {message}")]
    InvalidManifest {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A KumikoApp breaks a rule of its API; each line names the field and the fix.
    #[error("{path}: the KumikoApp is invalid:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    InvalidApp {
        /// The file.
        path: PathBuf,
        /// Every problem found, not only the first.
        problems: Vec<String>,
    },
}

impl Error {
    /// A short, static name of the kind of error, for metrics labels.
    pub fn category(&self) -> &'static str {
        match self {
            Self::SerializeYaml(_) => "serialize",
            Self::Stdout(_) | Self::ReadFile { .. } => "io",
            Self::InvalidManifest { .. } | Self::InvalidApp { .. } => "invalid_input",
        }
    }
}
