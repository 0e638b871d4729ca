//! Registration is frozen at boot validation (phase 6), in a real boot: a readiness check that a
//! boot callback registers in phase 7 is refused with `Error::LateRegistration` naming it, and the
//! process does not become ready with a check that would stay pending.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use kumiko_runtime::Error;
use kumiko_runtime::boot::Phase;
use kumiko_runtime::config::{Env, ProcessKind};
use kumiko_runtime::health::Check;
use kumiko_runtime::runtime::{self, AppBoot};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_registered_after_boot_validation_is_an_error_and_the_boot_fails() {
    let dir = tempfile::tempdir().unwrap();
    let port = kumiko_testkit::free_port().unwrap();
    let env: Env = [
        ("PORT", port.to_string()),
        (
            "KUMIKO_DATA_DIR",
            dir.path().join("data").display().to_string(),
        ),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect();
    let refused = Arc::new(Mutex::new(None));
    let seen = refused.clone();
    let boot: AppBoot = Box::new(move |runtime, _components| {
        Box::pin(async move {
            // Phase 7 onwards: past boot validation.
            let _pool = runtime.connect_database().await?;
            let outcome = runtime
                .health
                .register(Check::new("late", || async { Ok(String::new()) }));
            let error = outcome.expect_err("a registration after phase 6 must be refused");
            let message = error.to_string();
            *seen.lock().unwrap() = Some(error);
            Err(runtime
                .boot
                .fail_invalid(Phase::ConnectDatabase, vec![message]))
        })
    });
    let code = runtime::run(ProcessKind::Api, env, Vec::new(), Vec::new(), boot).await;
    assert_eq!(code, runtime::EXIT_FAILURE);
    let error = refused
        .lock()
        .unwrap()
        .take()
        .expect("the boot callback ran");
    assert!(
        matches!(&error, Error::LateRegistration { name, .. } if name == "late"),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("after boot validation"),
        "{error}"
    );
}
