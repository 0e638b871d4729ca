//! `spec.networkPolicy`, end to end: an app gets its NetworkPolicies by default (seen with the real
//! `kubectl`, with the selectors the operator means), restricted egress adds one, and turning the
//! policies off deletes them while the app stays Ready.
//!
//! kube-sim stores and validates NetworkPolicies but does not enforce them (its README), so this
//! proves what the operator writes and deletes, not that traffic is filtered: the selectors are
//! checked against the pods' labels by the operator's `every_selector_matches_the_pods_it_means`,
//! and traffic by the CNI of a real cluster.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use kumiko_e2e::wait::eventually;
use kumiko_e2e::{TestApp, TestCluster, manifests};
use serde_json::{Value, json};

/// `kubectl --kubeconfig <cluster> ARGS`: whether it succeeded, and its output.
async fn kubectl(cluster: &TestCluster, args: &[&str]) -> (bool, String) {
    let output = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(args)
        .output()
        .await
        .expect("kubectl runs");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// The app's NetworkPolicies as `kubectl get networkpolicies -o json` lists them, by name.
async fn policies(cluster: &TestCluster, namespace: &str) -> Vec<(String, Value)> {
    let (ok, output) = kubectl(
        cluster,
        &["get", "networkpolicies", "-n", namespace, "-o", "json"],
    )
    .await;
    assert!(ok, "kubectl get networkpolicies: {output}");
    let list: Value = serde_json::from_str(&output).expect("kubectl prints JSON");
    let mut items: Vec<(String, Value)> = list["items"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|item| {
            (
                item["metadata"]["name"].as_str().unwrap_or("").to_owned(),
                item["spec"].clone(),
            )
        })
        .collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    items
}

fn names(policies: &[(String, Value)]) -> Vec<&str> {
    policies.iter().map(|(name, _)| name.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_is_fenced_by_default_and_its_policies_go_when_turned_off() {
    let cluster = TestCluster::start().await.unwrap();
    let namespace = cluster.namespace("netpol").await.unwrap();
    let mut manifest = manifests::minimal_app("fenced", &namespace, cluster.app_image());
    let app = TestApp::apply(cluster.client(), &manifest).await.unwrap();
    app.wait_ready().await.unwrap();

    let fenced = policies(&cluster, &namespace).await;
    assert_eq!(
        names(&fenced),
        vec!["fenced-api", "fenced-db", "fenced-no-ingress"]
    );
    let spec = |name: &str| {
        fenced
            .iter()
            .find(|(policy, _)| policy == name)
            .map(|(_, spec)| spec.clone())
            .unwrap()
    };
    let api = spec("fenced-api");
    assert_eq!(
        api["podSelector"]["matchLabels"],
        json!({
            "app.kubernetes.io/component": "api",
            "app.kubernetes.io/instance": "fenced",
            "app.kubernetes.io/name": "kumiko-app"
        })
    );
    assert_eq!(api["policyTypes"], json!(["Ingress"]));
    assert!(api["ingress"][0].get("from").is_none(), "any source: {api}");
    let database = spec("fenced-db");
    assert_eq!(
        database["podSelector"]["matchLabels"],
        json!({"cnpg.io/cluster": "fenced-db", "cnpg.io/podRole": "instance"})
    );
    let no_ingress = spec("fenced-no-ingress");
    assert_eq!(
        no_ingress["podSelector"]["matchExpressions"][0]["values"],
        json!(["worker", "migrate"])
    );
    // The selectors select the pods kube-sim runs for the app and its database.
    for (selector, what) in [
        (
            "app.kubernetes.io/instance=fenced,app.kubernetes.io/component=api",
            "API",
        ),
        (
            "cnpg.io/cluster=fenced-db,cnpg.io/podRole=instance",
            "database",
        ),
    ] {
        let (ok, pods) = kubectl(
            &cluster,
            &[
                "get", "pods", "-n", &namespace, "-l", selector, "-o", "name",
            ],
        )
        .await;
        assert!(
            ok && !pods.trim().is_empty(),
            "no {what} pod selected: {pods}"
        );
    }

    // Restricted egress adds a policy; the app stays Ready (kube-sim does not enforce it).
    manifest["spec"]["networkPolicy"] = json!({"egress": {"to": [{"cidr": "10.0.0.0/8"}]}});
    app.reapply(&manifest).await.unwrap();
    eventually(
        "the egress policy exists",
        Duration::from_secs(60),
        || async {
            let present = policies(&cluster, &namespace).await;
            Ok(names(&present).contains(&"fenced-egress").then_some(()))
        },
    )
    .await
    .unwrap();
    app.wait_ready().await.unwrap();

    // Turned off: every policy is deleted, the app stays Ready.
    manifest["spec"]["networkPolicy"] = json!({"enabled": false});
    app.reapply(&manifest).await.unwrap();
    eventually(
        "the policies are deleted",
        Duration::from_secs(60),
        || async {
            Ok(policies(&cluster, &namespace)
                .await
                .is_empty()
                .then_some(()))
        },
    )
    .await
    .unwrap();
    let ready = app.wait_ready().await.unwrap();
    assert!(manifests::is_ready(&ready));
}
