//! Finding (and, once, building) the binaries the local cluster runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};

/// The environment variable that names a `kumiko-app` binary to use instead of the workspace's.
pub const APP_BINARY_ENV: &str = "KUMIKO_E2E_APP_BINARY";

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The cargo profile directory the running test binary lives in (`<target>/debug`): test
/// binaries are `<target>/debug/deps/NAME-HASH`.
pub fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running test binary")?;
    let deps = exe
        .parent()
        .with_context(|| format!("{} has no parent directory", exe.display()))?;
    let profile = if deps.file_name().is_some_and(|name| name == "deps") {
        deps.parent().unwrap_or(deps)
    } else {
        deps
    };
    Ok(profile.to_path_buf())
}

/// The name of the broken-migration program (`src/bin/kumiko-app-broken-migration.rs`).
pub const BROKEN_MIGRATION_BINARY: &str = "kumiko-app-broken-migration";

/// Puts the broken-migration program into `dir` beside a link `kumiko-app` to `app_binary` (the
/// program runs the `kumiko-app` beside itself), and returns its path. The program is
/// `<target>/debug/kumiko-app-broken-migration`, which cargo builds with this crate's tests
/// (built here when missing).
pub fn broken_migration_beside(dir: &Path, app_binary: &Path) -> Result<PathBuf> {
    let built = profile_dir()?.join(BROKEN_MIGRATION_BINARY);
    if !built.is_file() {
        cargo_build(&["-p", "kumiko-e2e", "--bin", BROKEN_MIGRATION_BINARY])?;
    }
    let program = dir.join(BROKEN_MIGRATION_BINARY);
    std::fs::copy(&built, &program)
        .with_context(|| format!("copying {} to {}", built.display(), program.display()))?;
    let app_link = dir.join("kumiko-app");
    std::os::unix::fs::symlink(app_binary, &app_link)
        .with_context(|| format!("linking {} to {}", app_link.display(), app_binary.display()))?;
    Ok(program)
}

/// Runs `cargo build ARGS` in the workspace.
fn cargo_build(args: &[&str]) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .arg("build")
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("running `cargo build {}`", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo build {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The `kumiko-app` binary: `KUMIKO_E2E_APP_BINARY`, else `<target>/debug/kumiko-app`, built with
/// `cargo build -p kumiko-runtime --bin kumiko-app` when it does not exist yet (once per process;
/// cargo's own lock serialises concurrent test processes).
pub fn kumiko_app() -> Result<PathBuf> {
    static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| locate_or_build().map_err(|error| format!("{error:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn locate_or_build() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(APP_BINARY_ENV) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!(
                "{APP_BINARY_ENV}={} is not a file: point it at a built kumiko-app",
                path.display()
            );
        }
        return Ok(path);
    }
    let binary = profile_dir()?.join("kumiko-app");
    // A concurrent cargo build replaces the file (remove, then link): give it a moment to
    // reappear before building it ourselves (which would queue behind that build's lock).
    for _ in 0..50 {
        if binary.is_file() {
            return Ok(binary);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    cargo_build(&["-p", "kumiko-runtime", "--bin", "kumiko-app"])?;
    if !binary.is_file() {
        bail!(
            "`cargo build` succeeded but {} does not exist: set {APP_BINARY_ENV}",
            binary.display()
        );
    }
    Ok(binary)
}
