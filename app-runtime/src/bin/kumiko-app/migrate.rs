//! `kumiko-app migrate apply|status`. Not implemented yet (another part of the work).

use kumiko_runtime::config::Env;

/// `migrate apply`; returns the exit code.
pub async fn apply(_env: Env) -> i32 {
    eprintln!("kumiko: `migrate apply` is not implemented yet");
    2
}

/// `migrate status`; returns the exit code.
pub async fn status(_env: Env) -> i32 {
    eprintln!("kumiko: `migrate status` is not implemented yet");
    2
}
