//! CNPG Clusters' PersistentVolumeClaims and the data on them, against a real Postgres.
//!
//! CloudNativePG 1.27 creates one claim per instance, owned by the Cluster
//! (`pkg/reconciler/persistentvolumeclaim/build.go`), so garbage collection of the Cluster takes
//! the claims, and with them the data (dynamically provisioned volumes have reclaim policy
//! `Delete`, "Persistent Volumes"); a Cluster created again over claims that still exist (after
//! `--cascade=orphan`) starts on their data; a claim in use by a pod stays `Terminating` until the
//! pod is gone ("Storage Object in Use Protection").

// Test helpers outside #[test] functions: a failed set-up is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod controllers_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use controllers_support::{Sim, through_primary_portforward, wait_for};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::ResourceExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams, PropagationPolicy,
};
use kube_sim::controllers::{ControllersConfig, PostgresSource};
use serde_json::json;
use sqlx::Connection;

const WAIT: Duration = Duration::from_secs(90);

fn clusters(client: &kube::Client) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("postgresql.cnpg.io", "v1", "Cluster"),
        "clusters",
    );
    Api::namespaced_with(client.clone(), "default", &resource)
}

/// A sim with throwaway Postgres servers whose volumes live under `state`.
async fn sim(state: &Path) -> Sim {
    Sim::start(ControllersConfig {
        postgres: PostgresSource::Throwaway,
        state_dir: Some(state.to_path_buf()),
        backoff_base: Duration::from_secs(1),
        ..ControllersConfig::default()
    })
    .await
}

async fn create_cluster(sim: &Sim, name: &str, instances: i64) {
    let cluster: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"instances": instances, "storage": {"size": "1Gi"},
            "bootstrap": {"initdb": {"database": "shop", "owner": "shop"}}}
    }))
    .expect("cluster");
    let clusters = clusters(&sim.client);
    clusters
        .create(&PostParams::default(), &cluster)
        .await
        .expect("cluster created");
    wait_for("the Cluster to be healthy", WAIT, || {
        let clusters = clusters.clone();
        async move {
            let cluster = clusters.get(name).await.ok()?;
            (cluster.data.pointer("/status/phase")?.as_str()? == "Cluster in healthy state")
                .then_some(())
        }
    })
    .await;
}

/// Runs `statement` (and returns the first column of the first row, if any) as the app's owner,
/// through a portforward to the primary.
async fn sql(sim: &Sim, cluster: &str, statement: &str) -> Result<Option<i64>, sqlx::Error> {
    let secrets: Api<Secret> = Api::namespaced(sim.client.clone(), "default");
    let secret = secrets
        .get(&format!("{cluster}-app"))
        .await
        .expect("the app Secret");
    let uri = String::from_utf8(secret.data.expect("data")["uri"].0.clone()).expect("utf-8");
    let (uri, bridge) = through_primary_portforward(&sim.client, "default", cluster, &uri).await;
    let result = async {
        let mut connection = sqlx::postgres::PgConnection::connect(&uri).await?;
        let value: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(statement.to_owned()))
            .fetch_optional(&mut connection)
            .await?;
        let _ = connection.close().await;
        Ok(value)
    }
    .await;
    bridge.abort();
    result
}

/// Whether table `orders` exists in the Cluster's database.
async fn orders_table_exists(sim: &Sim, cluster: &str) -> bool {
    sql(
        sim,
        cluster,
        "SELECT count(*) FROM pg_tables WHERE tablename = 'orders'",
    )
    .await
    .expect("the database answers")
        == Some(1)
}

async fn claim(sim: &Sim, name: &str) -> Option<PersistentVolumeClaim> {
    Api::<PersistentVolumeClaim>::namespaced(sim.client.clone(), "default")
        .get_opt(name)
        .await
        .expect("reading the claim")
}

fn volume_dir(state: &Path, claim: &PersistentVolumeClaim) -> PathBuf {
    state.join("volumes").join(claim.uid().expect("uid"))
}

async fn wait_gone(sim: &Sim, what: &str, pod_or_claim: &str) {
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(sim.client.clone(), "default");
    wait_for(&format!("{what} {pod_or_claim} to be gone"), WAIT, || {
        let (pods, claims) = (pods.clone(), claims.clone());
        async move {
            let gone = match what {
                "pod" => pods.get_opt(pod_or_claim).await.ok()?.is_none(),
                _ => claims.get_opt(pod_or_claim).await.ok()?.is_none(),
            };
            gone.then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn each_instance_gets_a_bound_claim_built_and_owned_as_cloudnative_pg_does() {
    let state = tempfile::tempdir().expect("state dir");
    let sim = sim(state.path()).await;
    create_cluster(&sim, "shop-db", 2).await;
    let owner = clusters(&sim.client).get("shop-db").await.expect("cluster");
    for index in [1, 2] {
        let name = format!("shop-db-{index}");
        let claim = wait_for(&format!("claim {name} to be Bound"), WAIT, || async {
            let claim = claim(&sim, &name).await?;
            (claim.status.as_ref()?.phase.as_deref()? == "Bound").then_some(claim)
        })
        .await;
        let labels = claim.labels();
        for (key, value) in [
            ("cnpg.io/cluster", "shop-db"),
            ("cnpg.io/instanceName", name.as_str()),
            ("cnpg.io/pvcRole", "PG_DATA"),
            ("app.kubernetes.io/managed-by", "cloudnative-pg"),
            ("app.kubernetes.io/name", "postgresql"),
            ("app.kubernetes.io/component", "database"),
        ] {
            assert_eq!(labels.get(key).map(String::as_str), Some(value), "{key}");
        }
        assert_eq!(
            claim
                .annotations()
                .get("cnpg.io/nodeSerial")
                .map(String::as_str),
            Some(index.to_string().as_str())
        );
        let references = claim.owner_references();
        assert_eq!(references.len(), 1);
        assert_eq!(
            (
                references[0].kind.as_str(),
                references[0].name.as_str(),
                references[0].controller
            ),
            ("Cluster", "shop-db", Some(true))
        );
        assert_eq!(references[0].uid, owner.uid().expect("uid"));
        assert!(
            claim
                .finalizers()
                .contains(&"kubernetes.io/pvc-protection".to_owned()),
            "in-use protection"
        );
        let spec = claim.spec.clone().expect("spec");
        assert_eq!(spec.access_modes, Some(vec!["ReadWriteOnce".to_owned()]));
        assert_eq!(spec.storage_class_name.as_deref(), Some("standard"));
        assert_eq!(
            spec.volume_name,
            Some(format!("pvc-{}", claim.uid().expect("uid")))
        );
        let status = claim.status.clone().expect("status");
        assert_eq!(status.capacity.expect("capacity")["storage"].0, "1Gi");
        assert_eq!(status.access_modes, Some(vec!["ReadWriteOnce".to_owned()]));
        // The instance pod mounts it.
        let pod = Api::<Pod>::namespaced(sim.client.clone(), "default")
            .get(&name)
            .await
            .expect("instance pod");
        let volumes = pod.spec.expect("spec").volumes.expect("volumes");
        assert_eq!(
            volumes[0]
                .persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.as_str()),
            Some(name.as_str())
        );
    }
    // The primary's data directory is on the primary's claim.
    let primary = claim(&sim, "shop-db-1").await.expect("claim");
    assert!(
        volume_dir(state.path(), &primary)
            .join("data/PG_VERSION")
            .is_file(),
        "Postgres's data directory is the claim's volume"
    );
    // Scaling down deletes the removed instance's claim (CNPG's `scaleDownCluster`).
    clusters(&sim.client)
        .patch(
            "shop-db",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"instances": 1}})),
        )
        .await
        .expect("scaled down");
    wait_gone(&sim, "claim", "shop-db-2").await;
    assert!(claim(&sim, "shop-db-1").await.is_some());
    sim.stop().await;
}

#[tokio::test]
async fn deleting_a_cluster_collects_its_claims_and_their_data() {
    // The controllers' warnings (a volume that cannot be removed) in the test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("kube_sim=warn")
        .try_init();
    let state = tempfile::tempdir().expect("state dir");
    let sim = sim(state.path()).await;
    create_cluster(&sim, "db", 1).await;
    sql(&sim, "db", "CREATE TABLE orders (id int)")
        .await
        .expect("table created");
    assert!(orders_table_exists(&sim, "db").await);
    let volume = volume_dir(state.path(), &claim(&sim, "db-1").await.expect("claim"));
    assert!(volume.is_dir());

    clusters(&sim.client)
        .delete("db", &DeleteParams::background())
        .await
        .expect("cluster deleted");
    wait_gone(&sim, "claim", "db-1").await;
    wait_for("the volume to be deleted", WAIT, || async {
        (!volume.exists()).then_some(())
    })
    .await;

    // The same Cluster again: new claims, an empty database.
    create_cluster(&sim, "db", 1).await;
    assert!(
        !orders_table_exists(&sim, "db").await,
        "the data went with the claim"
    );
    sim.stop().await;
}

#[tokio::test]
async fn a_cluster_created_again_over_orphaned_claims_starts_on_their_data() {
    let state = tempfile::tempdir().expect("state dir");
    let sim = sim(state.path()).await;
    create_cluster(&sim, "db", 1).await;
    sql(&sim, "db", "CREATE TABLE orders (id int)")
        .await
        .expect("table created");
    let before = claim(&sim, "db-1").await.expect("claim");

    clusters(&sim.client)
        .delete(
            "db",
            &DeleteParams {
                propagation_policy: Some(PropagationPolicy::Orphan),
                ..DeleteParams::default()
            },
        )
        .await
        .expect("cluster deleted, orphaning");
    wait_for("the Cluster to be gone", WAIT, || async {
        clusters(&sim.client)
            .get_opt("db")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    // The instance pod goes too, and its Postgres stops; the claim and its volume stay.
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    let port: u16 = pods.get("db-1").await.expect("instance pod").annotations()
        [kube_sim::controllers::POD_PORT_ANNOTATION]
        .parse()
        .expect("a port");
    pods.delete("db-1", &DeleteParams::default())
        .await
        .expect("pod deleted");
    wait_gone(&sim, "pod", "db-1").await;
    wait_for("the old Postgres to stop", WAIT, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
            .then_some(())
    })
    .await;
    let kept = claim(&sim, "db-1").await.expect("the claim is kept");
    assert_eq!(kept.uid(), before.uid());
    assert!(kept.owner_references().is_empty(), "orphaned");

    create_cluster(&sim, "db", 1).await;
    assert_eq!(
        claim(&sim, "db-1").await.expect("claim").uid(),
        before.uid(),
        "the new Cluster uses the claim that was there"
    );
    assert!(
        orders_table_exists(&sim, "db").await,
        "a Postgres started again on the claim's volume finds the table"
    );
    sim.stop().await;
}

#[tokio::test]
async fn a_claim_deleted_while_in_use_waits_for_its_pod_then_takes_its_data() {
    let state = tempfile::tempdir().expect("state dir");
    let sim = sim(state.path()).await;
    create_cluster(&sim, "db", 1).await;
    sql(&sim, "db", "CREATE TABLE orders (id int)")
        .await
        .expect("table created");
    clusters(&sim.client)
        .delete(
            "db",
            &DeleteParams {
                propagation_policy: Some(PropagationPolicy::Orphan),
                ..DeleteParams::default()
            },
        )
        .await
        .expect("cluster deleted, orphaning");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(sim.client.clone(), "default");
    let volume = volume_dir(state.path(), &claim(&sim, "db-1").await.expect("claim"));

    // `kubectl delete pvc db-1` while the orphaned instance pod still runs on it.
    claims
        .delete("db-1", &DeleteParams::default())
        .await
        .expect("claim deleted");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let terminating = claim(&sim, "db-1").await.expect("still there");
    assert!(
        terminating.metadata.deletion_timestamp.is_some(),
        "Terminating while its pod uses it"
    );
    assert!(volume.is_dir(), "the data stays while in use");

    Api::<Pod>::namespaced(sim.client.clone(), "default")
        .delete("db-1", &DeleteParams::default())
        .await
        .expect("pod deleted");
    wait_gone(&sim, "claim", "db-1").await;
    wait_for("the volume to be deleted", WAIT, || async {
        (!volume.exists()).then_some(())
    })
    .await;

    create_cluster(&sim, "db", 1).await;
    assert!(
        !orders_table_exists(&sim, "db").await,
        "a new claim, a new database"
    );
    sim.stop().await;
}

/// "Storage Resource Quota": the instances' claims count against the namespace's quota
/// (`requests.storage`, `persistentvolumeclaims`); a claim that would exceed it is forbidden, so
/// the Cluster stays in `Setting up primary` with kube-apiserver's message, as CNPG's would.
#[tokio::test]
async fn claims_count_against_the_storage_quota_and_are_refused_over_it() {
    let state = tempfile::tempdir().expect("state dir");
    let sim = sim(state.path()).await;
    let quotas: Api<k8s_openapi::api::core::v1::ResourceQuota> =
        Api::namespaced(sim.client.clone(), "default");
    quotas
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "budget"},
                "spec": {"hard": {"requests.storage": "1Gi", "persistentvolumeclaims": "5"}}}))
            .expect("quota"),
        )
        .await
        .expect("quota created");
    create_cluster(&sim, "fits", 1).await;
    wait_for("the quota to count the claim", WAIT, || async {
        let used = quotas.get("budget").await.ok()?.status?.used?;
        (used.get("requests.storage")?.0 == "1Gi" && used.get("persistentvolumeclaims")?.0 == "1")
            .then_some(())
    })
    .await;

    let over: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
        "metadata": {"name": "over", "namespace": "default"},
        "spec": {"instances": 1, "storage": {"size": "1Gi"}}
    }))
    .expect("cluster");
    let clusters = clusters(&sim.client);
    clusters
        .create(&PostParams::default(), &over)
        .await
        .expect("cluster created");
    let reason = wait_for("the Cluster to report the refusal", WAIT, || async {
        let cluster = clusters.get("over").await.ok()?;
        let reason = cluster
            .data
            .pointer("/status/phaseReason")?
            .as_str()?
            .to_owned();
        reason.contains("exceeded quota").then_some(reason)
    })
    .await;
    assert!(
        reason.contains(
            "exceeded quota: budget, requested: requests.storage=1Gi, used: requests.storage=1Gi, limited: requests.storage=1Gi"
        ),
        "{reason}"
    );
    assert!(claim(&sim, "over-1").await.is_none());
    sim.stop().await;
}
