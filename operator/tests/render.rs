//! `kumiko-operator render`: snapshots of every example's output, and bad input refused by name.

// Test helpers may panic: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use kumiko_operator::observed::Observed;
use kumiko_operator::render::{parse_app, render};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("operator/ has a parent")
        .to_path_buf()
}

fn render_example(name: &str, rolled_out: bool) -> String {
    let path = repo_root().join("examples").join(format!("{name}.yaml"));
    let manifest = std::fs::read_to_string(&path).expect("example exists");
    let app = parse_app(&path, &manifest).expect("example is valid");
    render(&app, &Observed::default_for_render(), rolled_out).expect("renders")
}

#[test]
fn minimal_example_renders_as_reviewed() {
    insta::assert_snapshot!(render_example("minimal", true));
}

#[test]
fn production_example_renders_as_reviewed() {
    insta::assert_snapshot!(render_example("production", true));
}

#[test]
fn shared_cluster_example_renders_as_reviewed() {
    insta::assert_snapshot!(render_example("shared-cluster", true));
}

#[test]
fn web_example_renders_as_reviewed() {
    let output = render_example("web", true);
    assert!(output.contains("kind: Ingress"), "{output}");
    assert!(
        output.contains("cert-manager.io/cluster-issuer: letsencrypt"),
        "{output}"
    );
    insta::assert_snapshot!(output);
}

#[test]
fn first_deploy_says_what_follows_the_migration() {
    let output = render_example("minimal", false);
    assert!(output.contains("kind: Job"));
    assert!(!output.contains("kind: Deployment"));
    assert!(output.contains(
        "# Once the migrate Job succeeds, the operator rolls out Deployment status-api and Deployment status-worker"
    ));
}

/// Every container (and the CNPG Cluster, whose resources CNPG gives each of its containers) in
/// `render`'s output of every example, first deploy and rolled out, has a memory limit no smaller
/// than its memory request (issue 12, defects 2 and 7).
#[test]
fn every_rendered_container_has_a_memory_limit() {
    fn memory_limit_covers_request(resources: &serde_json::Value, what: &str) {
        let parse = |q: &serde_json::Value| {
            q.as_str()
                .and_then(kumiko_operator::quantity::parse_quantity)
                .unwrap_or_else(|| panic!("{what}: {q} is not a quantity"))
        };
        let limit = &resources["limits"]["memory"];
        assert!(limit.is_string(), "{what} has no memory limit: {resources}");
        assert!(
            parse(&resources["requests"]["memory"]) <= parse(limit),
            "{what}: memory request above its limit: {resources}"
        );
    }
    fn check(node: &serde_json::Value, at: &str, found: &mut usize) {
        match node {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Array(containers)) = map.get("containers") {
                    for container in containers {
                        *found += 1;
                        memory_limit_covers_request(
                            &container["resources"],
                            &format!("{at}: container {}", container["name"]),
                        );
                    }
                }
                if map.get("kind").and_then(|k| k.as_str()) == Some("Cluster") {
                    *found += 1;
                    memory_limit_covers_request(
                        &map["spec"]["resources"],
                        &format!("{at}: the CNPG Cluster"),
                    );
                }
                for (key, child) in map {
                    check(child, &format!("{at}.{key}"), found);
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    check(item, at, found);
                }
            }
            _ => {}
        }
    }
    for name in ["minimal", "production", "shared-cluster"] {
        for rolled_out in [false, true] {
            let output = render_example(name, rolled_out);
            let documents: Vec<serde_json::Value> =
                serde_saphyr::from_str_multiple(&output).expect("render prints YAML");
            let mut found = 0;
            for document in &documents {
                check(document, name, &mut found);
            }
            assert!(found >= 1, "{name}: no container found");
        }
    }
}

fn render_cli(file: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kumiko-operator"))
        .args(["render", "-f"])
        .arg(file)
        .output()
        .expect("kumiko-operator runs")
}

/// Each invalid example exits 1 (an error, not a panic's 101) and names the field at fault.
#[test]
fn invalid_manifests_exit_non_zero_naming_the_field() {
    let cases = [
        ("cel-two-database-modes", "spec.database"),
        ("schema-negative-replicas", "spec.api.replicas"),
        ("cel-shutdown-too-short", "spec.lifecycle.shutdownTimeout"),
        ("schema-unknown-field", "spec.api.replica"),
        ("cel-malformed-image", "spec.image"),
        (
            "cel-name-too-long",
            "metadata.name must be at most 40 characters",
        ),
        (
            "cel-request-above-limit",
            "api.resources.requests.cpu must be less than or equal to api.resources.limits.cpu",
        ),
        (
            "cel-tls-without-hosts",
            "spec.api.expose.tls: Required value: api.expose.tls needs api.expose.hosts",
        ),
        (
            "schema-duplicate-env",
            r#"spec.env[1]: Duplicate value: map[string]interface {}{"name":"FEATURE_X"}"#,
        ),
    ];
    for (name, field) in cases {
        let path = repo_root()
            .join("examples/invalid")
            .join(format!("{name}.yaml"));
        let output = render_cli(&path);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains(field),
            "{name}: {stderr} should name {field}"
        );
        assert!(
            output.stdout.is_empty(),
            "{name}: nothing printed on stdout"
        );
    }
}

#[test]
fn malformed_yaml_and_wrong_kinds_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "spec: [unclosed").expect("write");
    let output = render_cli(&broken);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not valid YAML"));

    let deployment = dir.path().join("deployment.yaml");
    std::fs::write(&deployment, "apiVersion: apps/v1\nkind: Deployment\n").expect("write");
    let output = render_cli(&deployment);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("expected apiVersion kumiko.so/v1alpha1")
    );

    let missing = dir.path().join("missing.yaml");
    let output = render_cli(&missing);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("reading"));
}

#[test]
fn crd_command_prints_the_checked_in_crd() {
    let output = Command::new(env!("CARGO_BIN_EXE_kumiko-operator"))
        .arg("crd")
        .output()
        .expect("kumiko-operator runs");
    let checked_in = std::fs::read(repo_root().join("crds/kumikoapp.yaml")).expect("crd file");
    assert!(output.stdout == checked_in, "run `make crds`");
}
