//! Unit tests of the pure builders.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kumiko_crds::KumikoApp;

use super::*;

/// The children of `app`, validated first as the controller does.
fn desired(app: &KumikoApp, observed: &Observed) -> Children {
    children(
        &ValidatedApp::new(app).expect("test app is valid"),
        observed,
    )
}

/// The image the Deployments of `app` run given `observed`.
fn rollout_image_of(app: &KumikoApp, observed: &Observed) -> Option<String> {
    rollout_image(
        &ValidatedApp::new(app).expect("test app is valid"),
        observed,
    )
}

fn app(yaml: &str) -> KumikoApp {
    serde_saphyr::from_str(yaml).expect("test manifest parses")
}

fn minimal() -> KumikoApp {
    app(r#"
apiVersion: kumiko.so/v1alpha1
kind: KumikoApp
metadata: {name: status, namespace: status, uid: 1b4e28ba-2fa1-11d2-883f-0016d3cca427}
spec:
  image: ghcr.io/acme/status:1.4.2
  worker: {replicas: 1}
  database: {cluster: {storage: {size: 1Gi}}}
"#)
}

fn migrated(image: &str) -> Observed {
    Observed {
        database_ready: true,
        roles_ready: true,
        migrated_image: Some(image.to_owned()),
        running_image: Some(image.to_owned()),
        credentials_checksum: Some("abc".to_owned()),
        app_uid: None,
        operators: crate::observed::OperatorNamespaces::default(),
    }
}

fn all_pod_specs(desired: &Children) -> Vec<&k8s_openapi::api::core::v1::PodSpec> {
    let mut specs = Vec::new();
    if let Some(job) = &desired.migrate_job {
        specs.extend(job.spec.as_ref().and_then(|s| s.template.spec.as_ref()));
    }
    for process in [&desired.api, &desired.worker].into_iter().flatten() {
        specs.extend(
            process
                .deployment
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref()),
        );
    }
    specs
}

#[test]
fn first_deploy_renders_the_migrate_job_and_no_deployments() {
    let desired = desired(&minimal(), &Observed::default_for_render());
    assert!(desired.migrate_job.is_some());
    assert!(desired.api.is_none() && desired.worker.is_none());
}

#[test]
fn nothing_migrates_before_the_database_and_roles_are_ready() {
    let desired = desired(&minimal(), &Observed::default());
    assert!(desired.migrate_job.is_none());
}

#[test]
fn migrated_image_rolls_out_and_needs_no_job() {
    let app = minimal();
    let desired = desired(&app, &migrated(&app.spec.image));
    assert!(desired.migrate_job.is_none());
    let deployment = &desired.api.expect("api").deployment;
    let image = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone();
    assert_eq!(image.as_deref(), Some("ghcr.io/acme/status:1.4.2"));
}

#[test]
fn migration_failure_keeps_old_image() {
    let mut app = minimal();
    app.spec.image = "ghcr.io/acme/status:1.5.0".to_owned();
    // 1.4.2 is migrated and running; 1.5.0's Job has not succeeded.
    let desired = desired(&app, &migrated("ghcr.io/acme/status:1.4.2"));
    assert_eq!(
        rollout_image_of(&app, &migrated("ghcr.io/acme/status:1.4.2")).as_deref(),
        Some("ghcr.io/acme/status:1.4.2")
    );
    assert!(
        desired.migrate_job.is_some(),
        "the new image's Job is desired"
    );
    for spec in all_pod_specs(&desired).into_iter().skip(1) {
        assert_eq!(
            spec.containers[0].image.as_deref(),
            Some("ghcr.io/acme/status:1.4.2")
        );
    }
}

#[test]
fn every_pod_is_restricted() {
    let app = minimal();
    let mut observed = migrated("other:1");
    observed.running_image = Some(app.spec.image.clone());
    let desired = desired(&app, &observed);
    let specs = all_pod_specs(&desired);
    assert_eq!(specs.len(), 3, "job, api, worker");
    for spec in specs {
        let pod = spec.security_context.as_ref().unwrap();
        assert_eq!(pod.run_as_non_root, Some(true));
        assert!(pod.run_as_user.unwrap() > 0);
        assert_eq!(
            pod.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        assert_eq!(spec.automount_service_account_token, Some(false));
        for container in &spec.containers {
            let sc = container.security_context.as_ref().unwrap();
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            assert_eq!(sc.read_only_root_filesystem, Some(true));
            assert_eq!(
                sc.capabilities.as_ref().unwrap().drop.as_deref(),
                Some(&["ALL".to_owned()][..])
            );
            let mounts = container.volume_mounts.as_ref().unwrap();
            assert!(mounts.iter().any(|m| m.mount_path == "/tmp"));
        }
    }
}

#[test]
fn grace_period_and_probes_follow_the_lifecycle() {
    let mut app = minimal();
    app.spec.lifecycle.shutdown_timeout = "1m".to_owned();
    app.spec.lifecycle.startup_timeout = "45s".to_owned();
    let desired = desired(&app, &migrated(&app.spec.image));
    let deployment = desired.api.unwrap().deployment;
    let spec = deployment.spec.unwrap();
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.termination_grace_period_seconds, Some(65));
    let container = &pod.containers[0];
    let startup = container.startup_probe.as_ref().unwrap();
    let covered = startup.period_seconds.unwrap() * startup.failure_threshold.unwrap();
    assert!(covered >= 45, "startup probe covers {covered}s of 45s");
    let ready = container.readiness_probe.as_ref().unwrap();
    assert_eq!(
        ready.http_get.as_ref().unwrap().path.as_deref(),
        Some("/health/ready")
    );
    let live = container.liveness_probe.as_ref().unwrap();
    assert_eq!(
        live.http_get.as_ref().unwrap().path.as_deref(),
        Some("/health")
    );
    let strategy = spec.strategy.unwrap().rolling_update.unwrap();
    assert_eq!(strategy.max_unavailable, Some(IntOrString::Int(0)));
    let env = container.env.as_ref().unwrap();
    let value = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(value("KUMIKO_SHUTDOWN_TIMEOUT").as_deref(), Some("60s"));
    assert_eq!(value("KUMIKO_STARTUP_TIMEOUT").as_deref(), Some("45s"));
    assert_eq!(value("KUMIKO_PROCESS").as_deref(), Some("api"));
    assert_eq!(value("PORT").as_deref(), Some("3000"));
}

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

#[test]
fn serving_processes_use_the_runtime_role_and_the_job_the_owner_role() {
    let app = minimal();
    let mut observed = migrated("other:1");
    observed.running_image = Some(app.spec.image.clone());
    let desired = desired(&app, &observed);
    let secret_of = |spec: &k8s_openapi::api::core::v1::PodSpec| {
        spec.containers[0]
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == "DATABASE_URL")
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.secret_key_ref.as_ref())
            .map(|s| s.name.clone())
    };
    let specs = all_pod_specs(&desired);
    assert_eq!(secret_of(specs[0]).as_deref(), Some("status-db-owner"));
    assert_eq!(secret_of(specs[1]).as_deref(), Some("status-db-runtime"));
    assert_eq!(secret_of(specs[2]).as_deref(), Some("status-db-runtime"));
}

#[test]
fn migrate_job_name_changes_with_image_env_and_retry_but_not_replicas() {
    let base = minimal();
    let name = |app: &KumikoApp| {
        desired(app, &Observed::default_for_render())
            .migrate_job
            .unwrap()
            .metadata
            .name
            .unwrap()
    };
    let original = name(&base);
    assert!(original.starts_with("status-migrate-") && original.len() <= 63);

    let mut scaled = base.clone();
    scaled.spec.api.replicas = 7;
    assert_eq!(name(&scaled), original);

    let mut new_image = base.clone();
    new_image.spec.image = "ghcr.io/acme/status:2".to_owned();
    assert_ne!(name(&new_image), original);

    let mut new_env = base.clone();
    new_env.spec.env.push(k8s_openapi::api::core::v1::EnvVar {
        name: "FEATURE".to_owned(),
        value: Some("1".to_owned()),
        value_from: None,
    });
    assert_ne!(name(&new_env), original);

    let mut retried = base.clone();
    retried.metadata.annotations = Some(
        [(RETRY_MIGRATION_ANNOTATION.to_owned(), "1".to_owned())]
            .into_iter()
            .collect(),
    );
    assert_ne!(name(&retried), original);
}

/// `minimal()` with `spec.database.reclaimPolicy` set.
fn with_reclaim_policy(policy: &str) -> KumikoApp {
    let mut app = minimal();
    app.spec.database.reclaim_policy = serde_json::from_value(serde_json::json!(policy)).unwrap();
    app
}

#[test]
fn a_retained_cluster_has_no_owner_so_garbage_collection_cannot_reach_its_volumes() {
    let app = with_reclaim_policy("Retain");
    let desired = desired(&app, &Observed::default_for_render());
    let cluster = desired.database_cluster.unwrap();
    assert_eq!(cluster.metadata.owner_references, None);
    let labels = cluster.metadata.labels.unwrap();
    assert_eq!(
        labels["app.kubernetes.io/instance"], "status",
        "labelled with its app"
    );
    assert_eq!(labels["app.kubernetes.io/managed-by"], "kumiko-operator");
    assert_eq!(labels["app.kubernetes.io/component"], "database");
}

#[test]
fn a_cluster_reclaimed_with_delete_is_owned_by_the_app() {
    let app = with_reclaim_policy("Delete");
    let desired = desired(&app, &Observed::default_for_render());
    let owners = desired
        .database_cluster
        .unwrap()
        .metadata
        .owner_references
        .unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].kind, "KumikoApp");
    assert_eq!(owners[0].controller, Some(true));
}

#[test]
fn every_child_is_labelled_and_owned_by_the_app() {
    let app = with_reclaim_policy("Delete");
    let mut observed = migrated("other:1");
    observed.running_image = Some(app.spec.image.clone());
    let desired = desired(&app, &observed);
    let mut metas = vec![
        &desired.service_account.metadata,
        &desired.resource_quota.metadata,
        &desired.limit_range.metadata,
        &desired.database_cluster.as_ref().unwrap().metadata,
        &desired.migrate_job.as_ref().unwrap().metadata,
    ];
    let policies = desired.network_policies.as_ref().unwrap();
    metas.extend(policies.iter().map(|policy| &policy.metadata));
    for process in [&desired.api, &desired.worker].into_iter().flatten() {
        metas.push(&process.deployment.metadata);
        metas.push(&process.pod_disruption_budget.metadata);
        if let Some(service) = &process.service {
            metas.push(&service.metadata);
        }
    }
    assert_eq!(metas.len(), 13);
    for meta in metas {
        let labels = meta.labels.as_ref().unwrap();
        for key in [
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/component",
            "app.kubernetes.io/managed-by",
        ] {
            assert!(labels.contains_key(key), "{:?} lacks {key}", meta.name);
        }
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.kind, "KumikoApp");
        assert_eq!(owner.uid, "1b4e28ba-2fa1-11d2-883f-0016d3cca427");
        assert_eq!(owner.controller, Some(true));
    }
}

#[test]
fn computed_quota_fits_the_rollout_peak() {
    let desired = desired(&minimal(), &Observed::default_for_render());
    let hard = desired.resource_quota.spec.unwrap().hard.unwrap();
    // api (2+1)×100m + worker (1+1)×100m + migrate 100m + db (1+1)×250m = 1100m.
    assert_eq!(hard["requests.cpu"].0, "1100m");
    // 3×128 + 2×128 + 128 + 2×256 = 1280Mi.
    assert_eq!(hard["requests.memory"].0, "1280Mi");
    assert_eq!(hard["pods"].0, "8");
    assert_eq!(hard["requests.storage"].0, "1024Mi");
}

#[test]
fn credentials_checksum_lands_in_the_pod_template() {
    let app = minimal();
    let mut observed = migrated(&app.spec.image);
    observed.credentials_checksum = Some("rotated".to_owned());
    let desired = desired(&app, &observed);
    let template = desired.api.unwrap().deployment.spec.unwrap().template;
    let annotations = template.metadata.unwrap().annotations.unwrap();
    assert_eq!(annotations[CREDENTIALS_CHECKSUM_ANNOTATION], "rotated");
}

#[test]
fn external_database_uses_the_named_secret_everywhere() {
    let app = app(r#"
apiVersion: kumiko.so/v1alpha1
kind: KumikoApp
metadata: {name: ext, namespace: ext}
spec:
  image: ghcr.io/acme/status:1
  database: {external: {uriSecret: {name: pg, key: url}}}
"#);
    let desired = desired(&app, &Observed::default_for_render());
    assert!(desired.database_cluster.is_none());
    let job = desired.migrate_job.unwrap();
    let env = job.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    let url = env.iter().find(|e| e.name == "DATABASE_URL").unwrap();
    let secret = url
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!((secret.name.as_str(), secret.key.as_str()), ("pg", "url"));
}

/// Every container's requests and limits, named for the assertion messages: the migrate Job, the
/// Deployments and the CNPG Cluster (whose resources CNPG gives each of its containers).
fn all_resources(
    desired: &Children,
) -> Vec<(String, k8s_openapi::api::core::v1::ResourceRequirements)> {
    let mut out = Vec::new();
    for spec in all_pod_specs(desired) {
        for container in &spec.containers {
            out.push((
                container.name.clone(),
                container.resources.clone().expect("resources are set"),
            ));
        }
    }
    if let Some(cluster) = &desired.database_cluster {
        out.push((
            "database".to_owned(),
            cluster.spec.resources.clone().expect("resources are set"),
        ));
    }
    out
}

fn quantity(map: &Option<std::collections::BTreeMap<String, Quantity>>, key: &str) -> Option<f64> {
    map.as_ref()
        .and_then(|m| m.get(key))
        .map(|q| crate::quantity::parse_quantity(&q.0).expect("a valid quantity"))
}

/// Issue 12, defect 7: no container may take a node's memory from its neighbours.
#[test]
fn every_container_gets_a_memory_limit() {
    let app = minimal();
    let mut seen = Vec::new();
    for observed in [Observed::default_for_render(), migrated(&app.spec.image)] {
        let desired = desired(&app, &observed);
        for (name, resources) in all_resources(&desired) {
            seen.push(name.clone());
            let limit = quantity(&resources.limits, "memory");
            let request = quantity(&resources.requests, "memory");
            assert!(limit.is_some(), "{name} has no memory limit: {resources:?}");
            assert_eq!(limit, request, "{name}: the limit defaults to the request");
            assert_eq!(
                quantity(&resources.limits, "cpu"),
                None,
                "{name}: no CPU limit unless the spec gives one"
            );
        }
    }
    for name in ["migrate", "api", "worker", "database"] {
        assert!(
            seen.iter().any(|n| n == name),
            "{name} not checked: {seen:?}"
        );
    }
}

/// Issue 12, defect 2: a spec with limits only (below the default requests) must not get default
/// requests above them, or kube-apiserver rejects the Deployment and Job and CNPG the Cluster.
#[test]
fn limits_alone_never_leave_a_request_above_its_limit() {
    let app = app(r#"
apiVersion: kumiko.so/v1alpha1
kind: KumikoApp
metadata: {name: small, namespace: small}
spec:
  image: ghcr.io/acme/status:1
  api: {resources: {limits: {cpu: 50m, memory: 64Mi}}}
  worker: {replicas: 1, resources: {limits: {memory: 100Mi}}}
  migrate: {resources: {limits: {cpu: 20m}}}
  database: {cluster: {storage: {size: 1Gi}, resources: {limits: {cpu: 200m, memory: 200Mi}}}}
"#);
    for observed in [Observed::default_for_render(), migrated(&app.spec.image)] {
        let desired = desired(&app, &observed);
        for (name, resources) in all_resources(&desired) {
            for resource in ["cpu", "memory"] {
                let request = quantity(&resources.requests, resource).expect("a request");
                if let Some(limit) = quantity(&resources.limits, resource) {
                    assert!(
                        request <= limit,
                        "{name} {resource}: request {request} > limit {limit}"
                    );
                }
            }
        }
    }
    let desired = desired(&app, &migrated(&app.spec.image));
    let api = all_resources(&desired)
        .into_iter()
        .find(|(name, _)| name == "api")
        .expect("api container")
        .1;
    let requests = api.requests.expect("requests");
    assert_eq!(
        (requests["cpu"].0.as_str(), requests["memory"].0.as_str()),
        ("50m", "64Mi")
    );
}

/// The quota sums the requests the containers actually get: api 3×50m/64Mi, worker 2×100m/100Mi,
/// migrate 20m/128Mi, database 2×200m/200Mi.
#[test]
fn quota_counts_the_effective_requests() {
    let app = app(r#"
apiVersion: kumiko.so/v1alpha1
kind: KumikoApp
metadata: {name: small, namespace: small}
spec:
  image: ghcr.io/acme/status:1
  api: {resources: {limits: {cpu: 50m, memory: 64Mi}}}
  worker: {replicas: 1, resources: {limits: {memory: 100Mi}}}
  migrate: {resources: {limits: {cpu: 20m}}}
  database: {cluster: {storage: {size: 1Gi}, resources: {limits: {cpu: 200m, memory: 200Mi}}}}
"#);
    let desired = desired(&app, &Observed::default_for_render());
    let hard = desired.resource_quota.spec.unwrap().hard.unwrap();
    // 150m + 200m + 20m + 400m.
    assert_eq!(hard["requests.cpu"].0, "770m");
    // 192Mi + 200Mi + 128Mi + 400Mi.
    assert_eq!(hard["requests.memory"].0, "920Mi");
}

#[test]
fn limit_range_defaults_a_memory_limit_and_no_cpu_limit() {
    let desired = desired(&minimal(), &Observed::default_for_render());
    let item = &desired.limit_range.spec.unwrap().limits[0];
    let default = item.default.as_ref().expect("a default limit");
    assert_eq!(default["memory"].0, "128Mi");
    assert!(!default.contains_key("cpu"));
    assert_eq!(item.default_request.as_ref().unwrap()["memory"].0, "128Mi");
}

fn autoscaled(autoscaling: &str) -> KumikoApp {
    app(&format!(
        r#"
apiVersion: kumiko.so/v1alpha1
kind: KumikoApp
metadata: {{name: status, namespace: status, uid: 1b4e28ba-2fa1-11d2-883f-0016d3cca427}}
spec:
  image: ghcr.io/acme/status:1.4.2
  api: {{replicas: 2, autoscaling: {autoscaling}}}
  worker: {{replicas: 1}}
  database: {{cluster: {{storage: {{size: 1Gi}}}}}}
"#
    ))
}

fn exposed(expose: &str) -> KumikoApp {
    app(&format!(
        r#"
apiVersion: kumiko.so/v1alpha1
kind: KumikoApp
metadata: {{name: status, namespace: status, uid: 1b4e28ba-2fa1-11d2-883f-0016d3cca427}}
spec:
  image: ghcr.io/acme/status:1.4.2
  api:
    expose: {expose}
  database: {{cluster: {{storage: {{size: 1Gi}}}}}}
"#
    ))
}

fn api_autoscaler(
    app: &KumikoApp,
) -> k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerSpec {
    let image = app.spec.image.clone();
    let desired = desired(app, &migrated(&image));
    let api = desired.api.expect("the API's objects");
    assert_eq!(
        api.deployment.spec.as_ref().and_then(|spec| spec.replicas),
        None,
        "an autoscaled Deployment carries no replicas"
    );
    let autoscaler = api.horizontal_pod_autoscaler.expect("an autoscaler");
    assert_eq!(autoscaler.metadata.name.as_deref(), Some("status-api"));
    assert_eq!(
        autoscaler.metadata.owner_references.as_ref().map(Vec::len),
        Some(1)
    );
    autoscaler.spec.expect("a spec")
}

#[test]
fn an_autoscaler_targets_its_deployment_with_cpu_at_80_percent_by_default() {
    let spec = api_autoscaler(&autoscaled("{maxReplicas: 5}"));
    assert_eq!(spec.scale_target_ref.kind, "Deployment");
    assert_eq!(
        spec.scale_target_ref.api_version.as_deref(),
        Some("apps/v1")
    );
    assert_eq!(spec.scale_target_ref.name, "status-api");
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(1), 5));
    let metrics = spec.metrics.expect("metrics");
    assert_eq!(metrics.len(), 1);
    let cpu = metrics[0].resource.as_ref().expect("a resource metric");
    assert_eq!(cpu.name, "cpu");
    assert_eq!(cpu.target.type_, "Utilization");
    assert_eq!(cpu.target.average_utilization, Some(80));
    let window = spec
        .behavior
        .and_then(|behavior| behavior.scale_down)
        .and_then(|rules| rules.stabilization_window_seconds);
    assert_eq!(window, Some(300), "Kubernetes' default window");
}

#[test]
fn an_autoscaler_takes_the_spec_targets_and_window() {
    let spec = api_autoscaler(&autoscaled(
        "{minReplicas: 2, maxReplicas: 8, targetMemoryUtilization: 70, scaleDownStabilization: 30s}",
    ));
    let metrics = spec.metrics.expect("metrics");
    let names: Vec<(&str, Option<i32>)> = metrics
        .iter()
        .filter_map(|metric| metric.resource.as_ref())
        .map(|resource| (resource.name.as_str(), resource.target.average_utilization))
        .collect();
    assert_eq!(names, vec![("memory", Some(70))], "memory alone scales");
    let window = spec
        .behavior
        .and_then(|behavior| behavior.scale_down)
        .and_then(|rules| rules.stabilization_window_seconds);
    assert_eq!(window, Some(30));
}

#[test]
fn the_computed_quota_fits_the_autoscalers_max_replicas() {
    let desired = desired(
        &autoscaled("{maxReplicas: 6}"),
        &Observed::default_for_render(),
    );
    let hard = desired.resource_quota.spec.unwrap().hard.unwrap();
    // api (6+1) + worker (1+1) + migrate 1 + db (1+1) = 12 pods; api (6+1)×100m + 200m + 100m +
    // 500m = 1500m.
    assert_eq!(hard["pods"].0, "12");
    assert_eq!(hard["requests.cpu"].0, "1500m");
}

#[test]
fn an_ingress_routes_each_host_and_the_prefix_to_the_api_service_with_the_issuer_annotation() {
    let app = exposed(
        "{hosts: [status.example.com, www.example.com], path: /app, ingress: {className: nginx}, tls: {issuer: {name: letsencrypt}}}",
    );
    let desired = desired(&app, &migrated("ghcr.io/acme/status:1.4.2"));
    let Some(Route::Ingress(ingress)) = &desired.route else {
        panic!("an Ingress: {:?}", desired.route);
    };
    assert_eq!(
        ingress
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(route::CLUSTER_ISSUER_ANNOTATION))
            .map(String::as_str),
        Some("letsencrypt")
    );
    let spec = ingress.spec.as_ref().expect("spec");
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    let rules = spec.rules.as_ref().expect("rules");
    assert_eq!(
        rules.iter().map(|r| r.host.as_deref()).collect::<Vec<_>>(),
        [Some("status.example.com"), Some("www.example.com")]
    );
    for rule in rules {
        let path = &rule.http.as_ref().expect("http").paths[0];
        assert_eq!(path.path.as_deref(), Some("/app"));
        assert_eq!(path.path_type, "Prefix");
        let service = path.backend.service.as_ref().expect("a Service backend");
        assert_eq!(service.name, "status-api");
        assert_eq!(
            service.port.as_ref().and_then(|p| p.name.as_deref()),
            Some("http")
        );
    }
    let tls = &spec.tls.as_ref().expect("tls")[0];
    assert_eq!(tls.secret_name.as_deref(), Some("status-tls"));
    assert_eq!(
        tls.hosts.as_deref(),
        Some(
            &[
                "status.example.com".to_owned(),
                "www.example.com".to_owned()
            ][..]
        )
    );
    assert_eq!(
        route::urls(app.spec.api.expose.as_ref().expect("exposed")),
        [
            "https://status.example.com/app",
            "https://www.example.com/app"
        ]
    );
}

#[test]
fn an_http_route_attaches_to_the_named_gateway_and_an_issuer_makes_a_certificate() {
    let app = exposed(
        "{hosts: [status.example.com], gateway: {name: public, namespace: infra, sectionName: https}, tls: {secretName: status-cert, issuer: {name: internal, kind: Issuer}}}",
    );
    let desired = desired(&app, &migrated("ghcr.io/acme/status:1.4.2"));
    let Some(Route::Gateway { route, certificate }) = &desired.route else {
        panic!("an HTTPRoute: {:?}", desired.route);
    };
    let parent = &route.spec.parent_refs[0];
    assert_eq!(
        (
            parent.name.as_str(),
            parent.namespace.as_deref(),
            parent.section_name.as_deref()
        ),
        ("public", Some("infra"), Some("https"))
    );
    assert_eq!(route.spec.hostnames, ["status.example.com"]);
    let rule = &route.spec.rules[0];
    assert_eq!(rule.matches[0].path.type_, "PathPrefix");
    assert_eq!(rule.matches[0].path.value, "/");
    assert_eq!(
        (
            rule.backend_refs[0].name.as_str(),
            rule.backend_refs[0].port
        ),
        ("status-api", 80)
    );
    assert_eq!(
        route.metadata.owner_references.as_ref().map(Vec::len),
        Some(1)
    );
    let certificate = certificate.as_ref().expect("an issuer makes a Certificate");
    assert_eq!(certificate.spec.secret_name, "status-cert");
    assert_eq!(certificate.spec.dns_names, ["status.example.com"]);
    assert_eq!(certificate.spec.issuer_ref.kind, "Issuer");
    assert_eq!(certificate.spec.issuer_ref.group, "cert-manager.io");
}

#[test]
fn no_route_without_expose_or_before_the_api_exists() {
    let desired_minimal = desired(&minimal(), &migrated("ghcr.io/acme/status:1.4.2"));
    assert!(desired_minimal.route.is_none());
    let app = exposed("{hosts: [status.example.com], ingress: {}}");
    assert!(
        desired(&app, &Observed::default_for_render())
            .route
            .is_none()
    );
    let with_secret =
        exposed("{hosts: [status.example.com], gateway: {name: public}, tls: {secretName: mine}}");
    let desired = desired(&with_secret, &migrated("ghcr.io/acme/status:1.4.2"));
    let Some(Route::Gateway { certificate, .. }) = &desired.route else {
        panic!("an HTTPRoute");
    };
    assert!(
        certificate.is_none(),
        "a Secret the user provides needs no Certificate"
    );
}
