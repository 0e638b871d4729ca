//! Autoscaling (`spec.api.autoscaling`): the operator hands the API Deployment's `replicas` to a
//! HorizontalPodAutoscaler and never writes them again; load on the API scales it up by the HPA
//! algorithm on the pods' real CPU use (`metrics.k8s.io`), and its end scales it down after the
//! stabilisation window (shortened here to 15 s; kube-sim's e2e cluster samples and syncs every
//! 5 s instead of Kubernetes' 15 s). `kubectl scale kumikoapp` sets the API replicas through the
//! KumikoApp's `scale` subresource, and `kubectl top pods` shows the pods' use. The app's
//! `AutoscalerActive` condition turns True once the autoscaler computes from the pods' metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kumiko_e2e::{TestApp, TestCluster, eventually, manifests};
use serde_json::json;

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

/// The managers that own `spec.replicas` of `deployment`, as `(manager, operation, subresource)`.
fn replicas_owners(deployment: &Deployment) -> Vec<(String, String, String)> {
    deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| {
            entry
                .fields_v1
                .as_ref()
                .and_then(|fields| fields.0.pointer("/f:spec/f:replicas"))
                .is_some()
        })
        .map(|entry| {
            (
                entry.manager.clone().unwrap_or_default(),
                entry.operation.clone().unwrap_or_default(),
                entry.subresource.clone().unwrap_or_default(),
            )
        })
        .collect()
}

fn replicas(deployment: &Deployment) -> i32 {
    deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn load_scales_the_api_up_and_its_end_scales_it_down_while_the_operator_leaves_replicas_alone()
 {
    let cluster = TestCluster::start().await.unwrap();
    let namespace = cluster.namespace("autoscaling").await.unwrap();
    let mut manifest = manifests::minimal_app("autoscaled", &namespace, cluster.app_image());
    manifest["spec"]["api"] = json!({
        "replicas": 1,
        "resources": {"requests": {"cpu": "50m"}},
        "autoscaling": {
            "minReplicas": 1,
            "maxReplicas": 3,
            "targetCpuUtilization": 50,
            "scaleDownStabilization": "15s"
        }
    });
    let app = TestApp::apply(cluster.client(), &manifest).await.unwrap();
    app.wait_ready().await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(cluster.client().clone(), &namespace);
    let autoscalers: Api<HorizontalPodAutoscaler> =
        Api::namespaced(cluster.client().clone(), &namespace);
    let autoscaler = autoscalers.get("autoscaled-api").await.unwrap();
    let spec = autoscaler.spec.unwrap();
    assert_eq!(spec.scale_target_ref.name, "autoscaled-api");
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(1), 3));
    let status = app.get().await.unwrap().status.unwrap();
    assert!(status.api.as_ref().unwrap().autoscaled, "{status:?}");
    // Once the pods' metrics come in, the autoscaler computes a replica count
    // (`ScalingActive=True`) and the app says so.
    let active = app
        .wait_for("AutoscalerActive=True", Duration::from_secs(60), |app| {
            manifests::condition(app, "AutoscalerActive")
                .is_some_and(|(status, _, _)| status == "True")
        })
        .await
        .unwrap();
    let (_, reason, message) = manifests::condition(&active, "AutoscalerActive").unwrap();
    assert_eq!(reason, "ScalingActive");
    assert!(message.contains("autoscaled-api"), "{message}");
    assert!(manifests::is_ready(&active));

    // Every version of the API Deployment from here on, to check who changed its replicas.
    let versions = Arc::new(std::sync::Mutex::new(Vec::<Deployment>::new()));
    let recorder = {
        let versions = versions.clone();
        let config = watcher::Config::default().fields("metadata.name=autoscaled-api");
        let stream = watcher(deployments.clone(), config);
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream.applied_objects());
            while let Ok(Some(deployment)) = stream.try_next().await {
                versions.lock().unwrap().push(deployment);
            }
        })
    };

    // Load: requests through the Service until the autoscaler has scaled the API to its maximum.
    let loading = Arc::new(AtomicBool::new(true));
    let cluster = Arc::new(cluster);
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (cluster, loading, namespace) =
                (cluster.clone(), loading.clone(), namespace.clone());
            tokio::spawn(async move {
                while loading.load(Ordering::SeqCst) {
                    let _ = cluster
                        .service_get(&namespace, "autoscaled-api", 80, "/")
                        .await;
                }
            })
        })
        .collect();
    eventually(
        "the autoscaler scales the API up to 3 under load",
        Duration::from_secs(150),
        || {
            let deployments = deployments.clone();
            async move {
                let deployment = deployments.get("autoscaled-api").await?;
                Ok((replicas(&deployment) == 3).then_some(()))
            }
        },
    )
    .await
    .unwrap();
    loading.store(false, Ordering::SeqCst);
    futures::future::join_all(workers).await;

    eventually(
        "the autoscaler scales the API back to 1 once the load ended",
        Duration::from_secs(150),
        || {
            let deployments = deployments.clone();
            async move {
                let deployment = deployments.get("autoscaled-api").await?;
                Ok((replicas(&deployment) == 1).then_some(()))
            }
        },
    )
    .await
    .unwrap();
    // The recorder's watch may deliver the scale-down after the read above saw it.
    eventually(
        "the recorder saw the scale-down",
        Duration::from_secs(30),
        || {
            let versions = versions.clone();
            async move {
                let last = versions.lock().unwrap().last().map(replicas);
                Ok((last == Some(1)).then_some(()))
            }
        },
    )
    .await
    .unwrap();
    recorder.abort();

    // Only the autoscaler changed the replicas; the operator's field set never held them, and
    // the operator changed nothing of the Deployment meanwhile (its entry's time stayed).
    let versions = versions.lock().unwrap().clone();
    let counts: Vec<i32> = versions.iter().map(replicas).collect();
    assert!(
        counts.contains(&3) && counts.last() == Some(&1),
        "{counts:?}"
    );
    let operator_times: std::collections::BTreeSet<String> = versions
        .iter()
        .flat_map(|deployment| deployment.metadata.managed_fields.iter().flatten())
        .filter(|entry| entry.manager.as_deref() == Some("kumiko-operator"))
        .map(|entry| format!("{:?}", entry.time))
        .collect();
    assert_eq!(
        operator_times.len(),
        1,
        "the operator wrote: {operator_times:?}"
    );
    for deployment in &versions {
        let owners = replicas_owners(deployment);
        assert!(
            owners
                .iter()
                .all(|(manager, _, _)| manager != "kumiko-operator"),
            "the operator owned replicas: {owners:?}"
        );
    }
    let last = versions.last().unwrap();
    assert!(
        replicas_owners(last).contains(&(
            "kube-controller-manager".to_owned(),
            "Update".to_owned(),
            "scale".to_owned()
        )),
        "{:?}",
        replicas_owners(last)
    );
    let events = kubectl(
        &cluster,
        &[
            "get",
            "events",
            "-n",
            &namespace,
            "--field-selector",
            "reason=SuccessfulRescale",
            "-o",
            "jsonpath={.items[*].message}",
        ],
    )
    .await;
    assert!(
        events.0 && events.1.contains("New size: 3") && events.1.contains("New size: 1"),
        "{events:?}"
    );
    let app = app.wait_ready().await.unwrap();
    eventually(
        "the status counts the one API pod left",
        Duration::from_secs(60),
        || {
            let app = app.clone();
            let apps: Api<kumiko_crds::KumikoApp> =
                Api::namespaced(cluster.client().clone(), &namespace);
            async move {
                let name = app.metadata.name.clone().unwrap_or_default();
                let current = apps.get(&name).await?;
                let api = current.status.and_then(|status| status.api);
                Ok(api.is_some_and(|api| api.replicas == 1).then_some(()))
            }
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_scale_kumikoapp_changes_the_api_replicas() {
    let cluster = TestCluster::start().await.unwrap();
    let namespace = cluster.namespace("scale-kapp").await.unwrap();
    let app = TestApp::apply(
        cluster.client(),
        &manifests::minimal_app("scaled", &namespace, cluster.app_image()),
    )
    .await
    .unwrap();
    app.wait_ready().await.unwrap();
    let (ok, output) = kubectl(
        &cluster,
        &[
            "scale",
            "kumikoapp/scaled",
            "-n",
            &namespace,
            "--replicas=2",
        ],
    )
    .await;
    assert!(ok, "{output}");
    assert_eq!(app.get().await.unwrap().spec.api.replicas, 2);
    eventually(
        "the API runs two ready pods",
        Duration::from_secs(90),
        || {
            let app = app.clone();
            async move {
                let current = app.get().await?;
                let api = current
                    .status
                    .as_ref()
                    .and_then(|status| status.api.clone());
                Ok((manifests::is_ready(&current)
                    && api.is_some_and(|api| api.ready_replicas == 2))
                .then_some(()))
            }
        },
    )
    .await
    .unwrap();
    let (ok, selector) = kubectl(
        &cluster,
        &[
            "get",
            "--raw",
            &format!("/apis/kumiko.so/v1alpha1/namespaces/{namespace}/kumikoapps/scaled/scale"),
        ],
    )
    .await;
    assert!(ok, "{selector}");
    let scale: serde_json::Value = serde_json::from_str(&selector).unwrap();
    assert_eq!(scale["spec"]["replicas"], 2);
    assert_eq!(scale["status"]["replicas"], 2);
    assert_eq!(
        scale["status"]["selector"],
        "app.kubernetes.io/component=api,app.kubernetes.io/instance=scaled,app.kubernetes.io/name=kumiko-app"
    );
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_top_pods_shows_the_app_pods_use() {
    let cluster = TestCluster::start().await.unwrap();
    if !cluster.is_local() {
        // A real cluster serves metrics.k8s.io only with metrics-server installed.
        return;
    }
    let namespace = cluster.namespace("top").await.unwrap();
    let app = TestApp::apply(
        cluster.client(),
        &manifests::minimal_app("top", &namespace, cluster.app_image()),
    )
    .await
    .unwrap();
    app.wait_ready().await.unwrap();
    let api_pod = app.pods("api").await.unwrap()[0]
        .metadata
        .name
        .clone()
        .unwrap();
    let line = eventually(
        "kubectl top lists the API pod",
        Duration::from_secs(60),
        || {
            let (cluster, namespace, api_pod) = (&cluster, namespace.clone(), api_pod.clone());
            async move {
                let (ok, output) =
                    kubectl(cluster, &["top", "pods", "-n", &namespace, "--no-headers"]).await;
                Ok(ok
                    .then(|| {
                        output
                            .lines()
                            .find(|line| line.starts_with(&api_pod))
                            .map(str::to_owned)
                    })
                    .flatten())
            }
        },
    )
    .await
    .unwrap();
    let columns: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(columns.len(), 3, "{line}");
    assert!(columns[1].ends_with('m'), "CPU in millicores: {line}");
    let memory: u64 = columns[2].trim_end_matches("Mi").parse().unwrap();
    assert!(memory > 0, "a running kumiko-app holds memory: {line}");
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_autoscaling_on_keeps_the_running_pods_and_turning_it_off_removes_the_autoscaler() {
    let cluster = TestCluster::start().await.unwrap();
    let namespace = cluster.namespace("handover").await.unwrap();
    let mut manifest = manifests::minimal_app("handover", &namespace, cluster.app_image());
    manifest["spec"]["api"]["replicas"] = json!(2);
    let app = TestApp::apply(cluster.client(), &manifest).await.unwrap();
    app.wait_ready().await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(cluster.client().clone(), &namespace);
    let autoscalers: Api<HorizontalPodAutoscaler> =
        Api::namespaced(cluster.client().clone(), &namespace);
    let before = deployments.get("handover-api").await.unwrap();
    assert_eq!(replicas(&before), 2);
    assert_eq!(
        replicas_owners(&before),
        vec![(
            "kumiko-operator".to_owned(),
            "Apply".to_owned(),
            String::new()
        )]
    );

    let versions = Arc::new(std::sync::Mutex::new(Vec::<Deployment>::new()));
    let recorder = {
        let versions = versions.clone();
        let config = watcher::Config::default().fields("metadata.name=handover-api");
        let stream = watcher(deployments.clone(), config);
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream.applied_objects());
            while let Ok(Some(deployment)) = stream.try_next().await {
                versions.lock().unwrap().push(deployment);
            }
        })
    };
    // A long window: the idle autoscaler does not scale the two pods down during the test.
    app.patch_spec(json!({"api": {"autoscaling": {"minReplicas": 1, "maxReplicas": 3, "scaleDownStabilization": "10m"}}}))
        .await
        .unwrap();
    eventually(
        "the operator hands the replicas over",
        Duration::from_secs(60),
        || {
            let app = app.clone();
            async move {
                let current = app.get().await?;
                let api = current.status.and_then(|status| status.api);
                Ok(api.is_some_and(|api| api.autoscaled).then_some(()))
            }
        },
    )
    .await
    .unwrap();
    let handed_over = deployments.get("handover-api").await.unwrap();
    assert_eq!(replicas(&handed_over), 2, "the pods in service stay");
    let owners = replicas_owners(&handed_over);
    assert!(
        owners
            .iter()
            .all(|(manager, _, _)| manager != "kumiko-operator"),
        "{owners:?}"
    );
    assert!(
        owners
            .iter()
            .any(|(manager, _, _)| manager == "kumiko-operator-replicas-handover"),
        "{owners:?}"
    );
    assert!(autoscalers.get_opt("handover-api").await.unwrap().is_some());
    app.wait_ready().await.unwrap();

    app.patch_spec(json!({"api": {"autoscaling": null}}))
        .await
        .unwrap();
    eventually(
        "the operator deletes the autoscaler",
        Duration::from_secs(60),
        || {
            let autoscalers = autoscalers.clone();
            async move {
                Ok(autoscalers
                    .get_opt("handover-api")
                    .await?
                    .is_none()
                    .then_some(()))
            }
        },
    )
    .await
    .unwrap();
    let taken_back = eventually(
        "the operator applies the replicas again",
        Duration::from_secs(60),
        || {
            let deployments = deployments.clone();
            async move {
                let deployment = deployments.get("handover-api").await?;
                let owned = replicas_owners(&deployment)
                    .iter()
                    .any(|(manager, _, _)| manager == "kumiko-operator");
                Ok(owned.then_some(deployment))
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(replicas(&taken_back), 2);
    let status = app.wait_ready().await.unwrap().status.unwrap();
    assert!(!status.api.unwrap().autoscaled);
    recorder.abort();
    let counts: Vec<i32> = versions.lock().unwrap().iter().map(replicas).collect();
    assert!(
        counts.iter().all(|count| *count == 2),
        "the Deployment never fell back to one pod: {counts:?}"
    );
    cluster.shutdown().await.unwrap();
}
