//! `kumiko-app worker`: background jobs. Not implemented yet (another part of the work).

use kumiko_runtime::config::Env;

/// Runs the worker process; returns the exit code.
pub async fn run(_env: Env) -> i32 {
    eprintln!("kumiko: `worker` is not implemented yet");
    2
}
