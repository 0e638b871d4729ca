//! `kumiko-operator render`: prints, offline, every object a KumikoApp produces.

use crate::cli::RenderArgs;

/// Runs `render`.
pub fn run(args: &RenderArgs) -> Result<(), crate::Error> {
    Err(crate::Error::InvalidManifest {
        path: args.file.clone(),
        message: "render is not implemented yet".to_owned(),
    })
}
