//! An app installed as a Helm chart (`examples/app-chart`, one KumikoApp) with `helm install
//! --wait`: Helm 4 waits with kstatus (`pkg/kube/statuswait.go`), which reads a custom resource's
//! `observedGeneration`, `Reconciling`, `Stalled` and `Ready` (cli-utils
//! `pkg/kstatus/status/{generic,status}.go`). So `--wait` must return only once the operator reports
//! the app Ready, and a failed migration (`Stalled=True`, a terminal state for Helm's waiter) must
//! fail the install at once with the app's reason, not time out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Output;

use kube::Api;
use kumiko_crds::KumikoApp;
use kumiko_crds::condition;
use kumiko_e2e::cluster::BROKEN_MIGRATION_ERROR;
use kumiko_e2e::{TestCluster, chart, manifests};

/// Runs the real `helm` against the test's cluster, without blocking the runtime the in-process
/// operator runs on.
async fn helm(cluster: &TestCluster, args: &[&str]) -> Output {
    tokio::process::Command::new(chart::helm())
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(args)
        .output()
        .await
        .expect("helm runs (make deps installs it)")
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn example_chart() -> String {
    kumiko_e2e::binaries::workspace_root()
        .join("examples/app-chart")
        .display()
        .to_string()
}

/// `helm install --wait` of the app's chart, one API pod, no worker, fast lifecycle timings.
async fn install(cluster: &TestCluster, release: &str, namespace: &str, image: &str) -> Output {
    let lifecycle = format!("lifecycle={}", manifests::fast_lifecycle());
    helm(
        cluster,
        &[
            "install",
            release,
            &example_chart(),
            "--namespace",
            namespace,
            "--wait",
            "--timeout",
            "240s",
            "--set",
            &format!("image={image}"),
            "--set",
            "apiReplicas=1",
            "--set",
            "workerReplicas=0",
            "--set-json",
            &lifecycle,
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_and_upgrade_wait_for_ready_and_uninstall_waits_for_the_finalizer() {
    let cluster = TestCluster::start().await.unwrap();
    let namespace = cluster.namespace("helmwait").await.unwrap();
    let image = cluster.app_image().to_owned();

    let installed = install(&cluster, "shop", &namespace, &image).await;
    assert!(installed.status.success(), "{}", text(&installed));

    // Read right after Helm returned: it waited for the operator, not for the object to exist.
    let apps: Api<KumikoApp> = Api::namespaced(cluster.client().clone(), &namespace);
    let app = apps.get("shop").await.unwrap();
    assert!(
        manifests::is_ready(&app),
        "helm --wait returned before Ready: {:?}",
        app.status
    );
    assert_eq!(
        app.status.as_ref().and_then(|s| s.observed_generation),
        app.metadata.generation
    );

    let status = helm(&cluster, &["status", "shop", "--namespace", &namespace]).await;
    assert!(status.status.success(), "{}", text(&status));
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("STATUS: deployed"),
        "{}",
        text(&status)
    );

    // An upgrade to a new image: generation 2 is InProgress until the operator observed it and
    // rolled it out (migrate Job first), so Helm returns with the new image Ready.
    let v2 = cluster.app_image_v2().unwrap().to_owned();
    let upgraded = helm(
        &cluster,
        &[
            "upgrade",
            "shop",
            &example_chart(),
            "--namespace",
            &namespace,
            "--reuse-values",
            "--set",
            &format!("image={v2}"),
            "--wait",
            "--timeout",
            "240s",
        ],
    )
    .await;
    assert!(upgraded.status.success(), "{}", text(&upgraded));
    let app = apps.get("shop").await.unwrap();
    assert_eq!(app.metadata.generation, Some(2));
    assert!(manifests::is_ready(&app), "{:?}", app.status);
    let status = app.status.as_ref().unwrap();
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(status.image.as_deref(), Some(v2.as_str()));
    assert_eq!(status.migrated_image.as_deref(), Some(v2.as_str()));

    // Uninstall waits for the operator's finalizer to be done with the app.
    let uninstalled = helm(
        &cluster,
        &[
            "uninstall",
            "shop",
            "--namespace",
            &namespace,
            "--wait",
            "--timeout",
            "120s",
        ],
    )
    .await;
    assert!(uninstalled.status.success(), "{}", text(&uninstalled));
    assert!(
        apps.get_opt("shop").await.unwrap().is_none(),
        "the KumikoApp is gone when helm uninstall --wait returns"
    );
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_wait_fails_with_the_apps_reason_when_its_migration_fails() {
    let cluster = TestCluster::start().await.unwrap();
    let namespace = cluster.namespace("helmfail").await.unwrap();
    let broken = cluster.broken_migration_image().unwrap().to_owned();

    let installed = install(&cluster, "broken", &namespace, &broken).await;
    let output = text(&installed);
    assert!(!installed.status.success(), "{output}");
    // Helm's waiter stops at the terminal state (Stalled=True: kstatus Failed) and names the
    // resource, its status and the app's message; it did not run into its timeout.
    assert!(
        output.contains(&format!(
            "KumikoApp/{namespace}/broken not ready. status: Failed"
        )),
        "{output}"
    );
    assert!(output.contains(BROKEN_MIGRATION_ERROR), "{output}");
    assert!(!output.contains("context deadline exceeded"), "{output}");

    let apps: Api<KumikoApp> = Api::namespaced(cluster.client().clone(), &namespace);
    let app = apps.get("broken").await.unwrap();
    let (stalled, reason, _) = manifests::condition(&app, condition::STALLED).unwrap();
    assert_eq!(
        (stalled.as_str(), reason.as_str()),
        ("True", "MigrationFailed")
    );

    let status = helm(&cluster, &["status", "broken", "--namespace", &namespace]).await;
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("STATUS: failed"),
        "{}",
        text(&status)
    );
    cluster.shutdown().await.unwrap();
}
