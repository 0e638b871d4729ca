//! A cluster without CloudNativePG: an app that asks for a dedicated cluster is reported, with a
//! clear reason naming what to install, instead of failing with a bare 404; nothing is lost, and
//! the operator keeps running. kube-sim answers 404 for the resources of a CRD that is not
//! installed, as kube-apiserver does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kumiko_crds::KumikoApp;
use kumiko_operator::controller::leader::LeaseTimings;
use kumiko_operator::controller::metrics::Metrics;
use kumiko_operator::controller::roles_backend::PostgresRoles;
use kumiko_operator::controller::run::{RunSettings, run_with};
use serde_json::json;
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedicated_cluster_without_cnpg_installed_is_reported_naming_what_to_install() {
    kumiko_operator::controller::run::init_logging();
    let server = kube_sim::Server::start(kube_sim::Config {
        preload_cnpg: false,
        ..kube_sim::Config::default()
    })
    .await
    .unwrap();
    let client = server.client().unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &KumikoApp::crd())
        .await
        .unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some("shop".to_owned());
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();

    let metrics = Arc::new(Metrics::new());
    let (stop, stop_rx) = watch::channel(false);
    let operator = tokio::spawn(run_with(
        client.clone(),
        RunSettings {
            http_addr: "127.0.0.1:0".parse().unwrap(),
            lease_name: "kumiko-operator".to_owned(),
            lease_namespace: "default".to_owned(),
            cnpg_namespace: "cnpg-system".to_owned(),
            identity: "operator".to_owned(),
            concurrency: 4,
            leader_election: false,
            lease_timings: LeaseTimings::default(),
        },
        Arc::new(PostgresRoles),
        metrics,
        stop_rx,
    ));

    let apps: Api<KumikoApp> = Api::namespaced(client.clone(), "shop");
    apps.patch(
        "shop",
        &PatchParams::apply("test").force(),
        &Patch::Apply(json!({
            "apiVersion": "kumiko.so/v1alpha1",
            "kind": "KumikoApp",
            "metadata": {"name": "shop"},
            "spec": {
                "image": "ghcr.io/acme/shop:1.0.0",
                "database": {"cluster": {"storage": {"size": "1Gi"}}}
            }
        })),
    )
    .await
    .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (reconciling, ready) = loop {
        let app = apps.get("shop").await.unwrap();
        let condition = |kind: &str| {
            app.status
                .as_ref()
                .and_then(|status| status.conditions.iter().find(|c| c.type_ == kind).cloned())
        };
        if let (Some(reconciling), Some(ready)) = (condition("Reconciling"), condition("Ready"))
            && reconciling.message.contains("does not serve")
        {
            break (reconciling, ready);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no condition names the missing API: {:?}",
            app.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(reconciling.status, "True");
    assert_eq!(reconciling.reason, "Retrying");
    assert!(
        reconciling
            .message
            .contains("postgresql.cnpg.io/v1 Cluster")
            && reconciling.message.contains("install CloudNativePG"),
        "{}",
        reconciling.message
    );
    assert_ne!(ready.status, "True");
    assert!(!operator.is_finished(), "the operator keeps running");

    stop.send(true).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(30), operator)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
}
