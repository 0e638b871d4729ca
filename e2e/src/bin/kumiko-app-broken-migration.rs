//! `kumiko-app-broken-migration`: the app image whose migration fails, for the e2e suite's
//! failed-migration scenario. `... migrate ...` prints the migration error and exits 1; any other
//! command runs the `kumiko-app` that sits beside this program, with the same arguments.
//!
//! Before the error it prints what a careless app might: its `DATABASE_URL`, and the password of
//! that URL alone on a line, so the scenario proves that the operator keeps both out of the
//! KumikoApp's status and Events.
//!
//! The same program runs on both clusters: kube-sim maps the image `kumiko-app:broken-migration`
//! to it (the harness puts it beside a link to the app binary), and
//! `infra/docker/app-broken-migration.Dockerfile` builds it into an image beside the real
//! `kumiko-app` (no shell there). It uses the standard library only, so the image build compiles
//! it with `rustc` alone.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

/// The error line, as `kumiko_e2e::cluster::BROKEN_MIGRATION_ERROR` expects it in the log tail.
const MIGRATION_ERROR: &str =
    "migration 20990101000000 failed: relation \"widgets\" already exists";

/// The password of a `postgres://user:password@host/db` URL.
fn password_of(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let (credentials, _) = rest.split_once('@')?;
    let (_, password) = credentials.split_once(':')?;
    Some(password)
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.iter().any(|arg| arg == "migrate") {
        let url = std::env::var("DATABASE_URL").unwrap_or_default();
        eprintln!("kumiko: connecting to {url}");
        if let Some(password) = password_of(&url) {
            eprintln!("kumiko: as {password}");
        }
        eprintln!("kumiko: applying migrations");
        eprintln!("{MIGRATION_ERROR}");
        return ExitCode::from(1);
    }
    let app = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name("kumiko-app"),
        Err(error) => {
            eprintln!("kumiko-app-broken-migration: cannot locate itself: {error}");
            return ExitCode::from(127);
        }
    };
    // `exec` returns only when the program could not be started.
    let error = Command::new(&app).args(&args).exec();
    eprintln!(
        "kumiko-app-broken-migration: cannot run {}: {error}",
        app.display()
    );
    ExitCode::from(127)
}
