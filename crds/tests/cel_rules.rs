//! Every CEL rule of the KumikoApp CRD, tested both ways against the generated schema with kube's
//! client-side CEL evaluator (the same rules the API server runs, defaults applied first).

// Test helpers may panic: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kube::CustomResourceExt;
use kube::core::cel::Validator;
use kumiko_crds::KumikoApp;
use serde_json::{Value, json};

fn schema() -> Value {
    let crd = KumikoApp::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("the CRD has a schema");
    serde_json::to_value(schema).expect("schema serializes")
}

fn minimal() -> Value {
    json!({
        "apiVersion": "kumiko.so/v1alpha1",
        "kind": "KumikoApp",
        "metadata": {"name": "status", "namespace": "status"},
        "spec": {
            "image": "ghcr.io/acme/status:1.4.2",
            "database": {"cluster": {"storage": {"size": "1Gi"}}}
        }
    })
}

/// The messages of every rule the object breaks (empty when it is valid).
fn broken_rules(object: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(&schema(), object, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

fn with(mut object: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a parent");
    let mut node = &mut object;
    for part in parent.split('/').filter(|p| !p.is_empty()) {
        if node.get(part).is_none() {
            node[part] = json!({});
        }
        node = node.get_mut(part).expect("created above");
    }
    node[key] = value;
    object
}

fn assert_rejected_naming(object: &Value, old: Option<&Value>, needle: &str) {
    let broken = broken_rules(object, old);
    assert!(
        broken.iter().any(|message| message.contains(needle)),
        "expected a rejection mentioning {needle:?}, got {broken:?}"
    );
}

#[test]
fn minimal_app_is_valid() {
    assert_eq!(broken_rules(&minimal(), None), Vec::<String>::new());
}

#[test]
fn two_database_modes_are_rejected() {
    let app = with(
        minimal(),
        "/spec/database/external",
        json!({"uriSecret": {"name": "db", "key": "uri"}}),
    );
    assert_rejected_naming(&app, None, "exactly one of cluster, shared or external");
}

#[test]
fn no_database_mode_is_rejected() {
    let app = with(
        minimal(),
        "/spec/database",
        json!({"reclaimPolicy": "Retain"}),
    );
    assert_rejected_naming(&app, None, "exactly one of cluster, shared or external");
}

#[test]
fn database_mode_cannot_change_after_creation() {
    let old = minimal();
    let new = with(
        minimal(),
        "/spec/database",
        json!({"external": {"uriSecret": {"name": "db", "key": "uri"}}}),
    );
    assert_rejected_naming(&new, Some(&old), "cannot change after creation");
    // The same mode with other settings is an ordinary update.
    let resized = with(minimal(), "/spec/database/cluster/instances", json!(3));
    assert_eq!(broken_rules(&resized, Some(&old)), Vec::<String>::new());
}

#[test]
fn shutdown_timeout_must_exceed_linger_plus_drain() {
    let app = with(
        minimal(),
        "/spec/lifecycle",
        json!({"shutdownTimeout": "33s", "linger": "3s", "drainTimeout": "30s"}),
    );
    assert_rejected_naming(&app, None, "shutdownTimeout must be longer");
    let app = with(
        minimal(),
        "/spec/lifecycle",
        json!({"shutdownTimeout": "34s", "linger": "3s", "drainTimeout": "30s"}),
    );
    assert_eq!(broken_rules(&app, None), Vec::<String>::new());
}

#[test]
fn defaults_alone_satisfy_the_lifecycle_rule() {
    let app = with(minimal(), "/spec/lifecycle", json!({}));
    assert_eq!(broken_rules(&app, None), Vec::<String>::new());
}

#[test]
fn quota_too_small_for_the_rollout_is_rejected() {
    // Defaults: api 2 replicas, worker absent, 1 database instance; each Kumiko pod requests 100m
    // and each Postgres pod 250m: (2+1)×100m + 100m migrate + (1+1)×250m = 900m.
    let fits = with(minimal(), "/spec/quota", json!({"cpu": "900m"}));
    assert_eq!(broken_rules(&fits, None), Vec::<String>::new());
    let short = with(minimal(), "/spec/quota", json!({"cpu": "899m"}));
    assert_rejected_naming(&short, None, "quota.cpu is smaller");
}

#[test]
fn quota_counts_explicit_requests_and_the_worker() {
    let app = with(
        minimal(),
        "/spec/worker",
        json!({"replicas": 2, "resources": {"requests": {"memory": "1Gi"}}}),
    );
    // Memory: (2+1)×128Mi api + (2+1)×1Gi worker + 128Mi migrate + 2×256Mi db = 4096Mi.
    let fits = with(app.clone(), "/spec/quota", json!({"memory": "4Gi"}));
    assert_eq!(broken_rules(&fits, None), Vec::<String>::new());
    let short = with(app, "/spec/quota", json!({"memory": "4095Mi"}));
    assert_rejected_naming(&short, None, "quota.memory is smaller");
}

#[test]
fn quota_pods_must_fit_surge_and_migration() {
    // (2+1) api + 1 migrate + (1+1) database = 6.
    let fits = with(minimal(), "/spec/quota", json!({"pods": 6}));
    assert_eq!(broken_rules(&fits, None), Vec::<String>::new());
    let short = with(minimal(), "/spec/quota", json!({"pods": 5}));
    assert_rejected_naming(&short, None, "quota.pods is smaller");
}

#[test]
fn quota_storage_must_fit_the_cluster_volumes() {
    let app = with(minimal(), "/spec/database/cluster/instances", json!(3));
    let fits = with(app.clone(), "/spec/quota", json!({"storage": "3Gi"}));
    assert_eq!(broken_rules(&fits, None), Vec::<String>::new());
    let short = with(app, "/spec/quota", json!({"storage": "2Gi"}));
    assert_rejected_naming(&short, None, "quota.storage is smaller");
}

#[test]
fn storage_can_grow_but_not_shrink() {
    let old = with(
        minimal(),
        "/spec/database/cluster/storage/size",
        json!("10Gi"),
    );
    let grown = with(
        minimal(),
        "/spec/database/cluster/storage/size",
        json!("20Gi"),
    );
    assert_eq!(broken_rules(&grown, Some(&old)), Vec::<String>::new());
    let shrunk = with(
        minimal(),
        "/spec/database/cluster/storage/size",
        json!("5Gi"),
    );
    assert_rejected_naming(&shrunk, Some(&old), "cannot shrink");
}

#[test]
fn malformed_image_references_are_rejected() {
    for image in [
        "ghcr.io/acme/status",
        "Status:1.0",
        "ghcr.io/acme/status:",
        "ghcr.io/acme/status@sha256:abc",
        "ghcr.io//status:1",
        "status:1 ",
    ] {
        let app = with(minimal(), "/spec/image", json!(image));
        assert_rejected_naming(&app, None, "image must be an image reference");
    }
}

#[test]
fn well_formed_image_references_are_accepted() {
    let digest = "a".repeat(64);
    for image in [
        "kumiko-app:dev".to_owned(),
        "localhost:5000/status:1".to_owned(),
        "ghcr.io/acme/status:1.4.2".to_owned(),
        format!("ghcr.io/acme/status@sha256:{digest}"),
        format!("ghcr.io/acme/status:1.4.2@sha256:{digest}"),
    ] {
        let app = with(minimal(), "/spec/image", json!(image));
        assert_eq!(broken_rules(&app, None), Vec::<String>::new(), "{image}");
    }
}

#[test]
fn names_longer_than_derived_names_allow_are_rejected() {
    let app = with(minimal(), "/metadata/name", json!("a".repeat(41)));
    assert_rejected_naming(&app, None, "at most 40 characters");
    let app = with(minimal(), "/metadata/name", json!("a".repeat(40)));
    assert_eq!(broken_rules(&app, None), Vec::<String>::new());
}

#[test]
fn names_that_are_not_dns_labels_are_rejected() {
    for name in ["1status", "status.v2", "status-"] {
        let app = with(minimal(), "/metadata/name", json!(name));
        assert_rejected_naming(&app, None, "DNS-1035 label");
    }
}

#[test]
fn env_cannot_override_contract_variables() {
    let app = with(
        minimal(),
        "/spec/env",
        json!([{"name": "FEATURE_X", "value": "1"}, {"name": "DATABASE_URL", "value": "postgres://x"}]),
    );
    assert_rejected_naming(&app, None, "env must not set PORT, DATABASE_URL");
    let app = with(
        minimal(),
        "/spec/env",
        json!([{"name": "FEATURE_X", "value": "1"}]),
    );
    assert_eq!(broken_rules(&app, None), Vec::<String>::new());
}

/// kube-apiserver refuses a container whose request exceeds its limit
/// (`ValidateResourceRequirements`, pkg/apis/core/validation); the CRD refuses it earlier, for
/// every process type and the database, naming the field.
#[test]
fn a_request_above_its_limit_is_rejected_naming_the_field() {
    let cases = [
        ("/spec/api/resources", "cpu", "api.resources.requests.cpu"),
        (
            "/spec/worker/resources",
            "memory",
            "worker.resources.requests.memory",
        ),
        (
            "/spec/migrate/resources",
            "cpu",
            "migrate.resources.requests.cpu",
        ),
        (
            "/spec/database/cluster/resources",
            "memory",
            "database.cluster.resources.requests.memory",
        ),
    ];
    for (pointer, resource, field) in cases {
        let (request, limit) = match resource {
            "cpu" => ("250m", "100m"),
            _ => ("256Mi", "128Mi"),
        };
        let app = with(
            minimal(),
            pointer,
            json!({"requests": {resource: request}, "limits": {resource: limit}}),
        );
        assert_rejected_naming(
            &app,
            None,
            &format!("{field} must be less than or equal to"),
        );
    }
}

#[test]
fn a_request_equal_to_its_limit_or_a_limit_alone_is_accepted() {
    for resources in [
        json!({"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"cpu": "0.1", "memory": "1024Mi"}}),
        json!({"limits": {"cpu": "50m", "memory": "64Mi"}}),
        json!({"requests": {"cpu": "2"}, "limits": {"memory": "64Mi"}}),
    ] {
        let app = with(minimal(), "/spec/api/resources", resources.clone());
        assert_eq!(
            broken_rules(&app, None),
            Vec::<String>::new(),
            "{resources}"
        );
    }
}

/// The quota rules count the request the operator gives a container, not the default it would
/// have had: a memory limit alone is the memory request (as Kubernetes defaults it), and a CPU
/// limit below the default request lowers the request to it.
#[test]
fn quota_counts_the_effective_request_of_a_limit_alone() {
    let app = with(
        minimal(),
        "/spec/api/resources",
        json!({"limits": {"cpu": "50m", "memory": "1Gi"}}),
    );
    // Memory: (2+1)×1Gi api + 128Mi migrate + 2×256Mi db = 3712Mi.
    let fits = with(app.clone(), "/spec/quota", json!({"memory": "3712Mi"}));
    assert_eq!(broken_rules(&fits, None), Vec::<String>::new());
    let short = with(app.clone(), "/spec/quota", json!({"memory": "3711Mi"}));
    assert_rejected_naming(&short, None, "quota.memory is smaller");
    // CPU: (2+1)×50m api + 100m migrate + 2×250m db = 750m.
    let fits = with(app.clone(), "/spec/quota", json!({"cpu": "750m"}));
    assert_eq!(broken_rules(&fits, None), Vec::<String>::new());
    let short = with(app, "/spec/quota", json!({"cpu": "749m"}));
    assert_rejected_naming(&short, None, "quota.cpu is smaller");
    // A CPU limit above the default leaves the default request: (2+1)×100m + 100m + 500m = 900m.
    let generous = with(
        minimal(),
        "/spec/api/resources",
        json!({"limits": {"cpu": "2"}}),
    );
    let fits = with(generous, "/spec/quota", json!({"cpu": "900m"}));
    assert_eq!(broken_rules(&fits, None), Vec::<String>::new());
}

#[test]
fn every_rule_fits_the_api_server_cost_budget() {
    use kube::core::cel::{compile_schema, estimate_rule_cost};
    fn rules_with_schema(schema: &Value, found: &mut Vec<(String, Value)>) {
        if let Some(rules) = schema
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
        {
            for rule in rules {
                if let Some(text) = rule.get("rule").and_then(Value::as_str) {
                    found.push((text.to_owned(), schema.clone()));
                }
            }
        }
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for child in properties.values() {
                rules_with_schema(child, found);
            }
        }
        if let Some(items) = schema.get("items") {
            rules_with_schema(items, found);
        }
    }
    let mut found = Vec::new();
    rules_with_schema(&schema(), &mut found);
    assert!(
        found.len() >= 12,
        "expected every rule, found {}",
        found.len()
    );
    for (rule, at) in found {
        let compiled = compile_schema(&at);
        let warnings = estimate_rule_cost(&rule, &compiled);
        assert!(warnings.is_empty(), "{rule}: {warnings:?}");
    }
}

#[test]
fn autoscaling_with_min_replicas_above_max_is_rejected_naming_the_field() {
    for process in ["api", "worker"] {
        let app = with(
            minimal(),
            &format!("/spec/{process}/autoscaling"),
            json!({"minReplicas": 5, "maxReplicas": 3}),
        );
        assert_rejected_naming(
            &app,
            None,
            "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas",
        );
    }
}

#[test]
fn autoscaling_within_its_bounds_is_accepted() {
    let app = with(
        minimal(),
        "/spec/api/autoscaling",
        json!({"minReplicas": 3, "maxReplicas": 3, "targetCpuUtilization": 70}),
    );
    let app = with(app, "/spec/worker/autoscaling", json!({"maxReplicas": 4}));
    assert_eq!(broken_rules(&app, None), Vec::<String>::new());
}

fn exposed(expose: Value) -> Value {
    with(minimal(), "/spec/api/expose", expose)
}

#[test]
fn an_ingress_with_hosts_and_tls_is_valid() {
    let app = exposed(json!({
        "hosts": ["status.example.com"],
        "ingress": {"className": "nginx"},
        "tls": {"issuer": {"name": "letsencrypt"}}
    }));
    assert_eq!(broken_rules(&app, None), Vec::<String>::new());
    let app = exposed(json!({
        "hosts": ["*.example.com"],
        "path": "/api",
        "gateway": {"name": "public", "namespace": "infra"},
        "tls": {"secretName": "status-tls"}
    }));
    assert_eq!(broken_rules(&app, None), Vec::<String>::new());
}

#[test]
fn the_quota_must_fit_the_autoscalers_max_replicas() {
    // 4 API pods at peak fit 8 pods without autoscaling ((2 + 1) + 1 migrate Job + (1 + 1)
    // database pods = 6); with maxReplicas 10 they need 15.
    let app = with(minimal(), "/spec/quota", json!({"pods": 8}));
    assert_eq!(broken_rules(&app, None), Vec::<String>::new());
    let autoscaled = with(
        app,
        "/spec/api/autoscaling",
        json!({"minReplicas": 2, "maxReplicas": 10}),
    );
    assert_rejected_naming(&autoscaled, None, "quota.pods is smaller");
    let cpu = with(minimal(), "/spec/quota", json!({"cpu": "1"}));
    assert_eq!(broken_rules(&cpu, None), Vec::<String>::new());
    let cpu = with(cpu, "/spec/api/autoscaling", json!({"maxReplicas": 10}));
    assert_rejected_naming(&cpu, None, "quota.cpu is smaller");
}

#[test]
fn tls_without_hosts_is_rejected_naming_the_field() {
    let app = exposed(json!({
        "ingress": {},
        "tls": {"secretName": "status-tls"}
    }));
    assert_rejected_naming(&app, None, "api.expose.tls needs api.expose.hosts");
}

#[test]
fn tls_without_a_source_is_rejected() {
    let app = exposed(json!({
        "hosts": ["status.example.com"],
        "ingress": {},
        "tls": {}
    }));
    assert_rejected_naming(&app, None, "api.expose.tls must set secretName");
}

#[test]
fn both_or_neither_route_kind_is_rejected() {
    let both = exposed(json!({"ingress": {}, "gateway": {"name": "public"}}));
    assert_rejected_naming(&both, None, "exactly one of ingress or gateway");
    let neither = exposed(json!({"hosts": ["status.example.com"]}));
    assert_rejected_naming(&neither, None, "exactly one of ingress or gateway");
}

#[test]
fn bad_hosts_and_relative_paths_are_rejected() {
    let app = exposed(json!({"hosts": ["Status.Example.com"], "ingress": {}}));
    assert_rejected_naming(&app, None, "api.expose.hosts must be lowercase DNS names");
    let app = exposed(json!({"hosts": ["status.example.com"], "ingress": {}, "path": "api"}));
    assert_rejected_naming(&app, None, "api.expose.path must start with /");
}

fn network_policy(policy: Value) -> Value {
    with(minimal(), "/spec/networkPolicy", policy)
}

#[test]
fn network_policies_on_by_default_and_with_egress_are_accepted() {
    let app = network_policy(json!({
        "apiFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
        "egress": {
            "to": [
                {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"], "ports": [{"port": 443}]},
                {"cidr": "fd00::/8"},
                {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "mail"}}}
            ]
        }
    }));
    assert_eq!(broken_rules(&app, None), Vec::<String>::new());
    let off = network_policy(json!({"enabled": false}));
    assert_eq!(broken_rules(&off, None), Vec::<String>::new());
}

#[test]
fn egress_beside_policies_turned_off_is_accepted_and_left_to_the_operator_to_ignore() {
    let app = network_policy(json!({"enabled": false, "egress": {}}));
    assert_eq!(broken_rules(&app, None), Vec::<String>::new());
    // Nor do the egress rules that need Redis or the external database listed apply then.
    let with_redis = with(
        app,
        "/spec/redis",
        json!({"urlSecret": {"name": "redis", "key": "url"}}),
    );
    assert_eq!(broken_rules(&with_redis, None), Vec::<String>::new());
}

#[test]
fn an_api_peer_without_a_selector_is_rejected_naming_the_field() {
    let app = network_policy(json!({"apiFrom": [{}]}));
    assert_rejected_naming(&app, None, "networkPolicy.apiFrom entries must set");
}

#[test]
fn an_egress_destination_must_be_a_cidr_or_selectors_not_both() {
    let both = network_policy(json!({"egress": {"to": [
        {"cidr": "10.0.0.0/8", "podSelector": {}}
    ]}}));
    assert_rejected_naming(&both, None, "either cidr (with optional except) or");
    let neither = network_policy(json!({"egress": {"to": [{"ports": [{"port": 443}]}]}}));
    assert_rejected_naming(&neither, None, "either cidr (with optional except) or");
    let except_alone = network_policy(json!({"egress": {"redis": [
        {"podSelector": {}, "except": ["10.0.0.0/24"]}
    ]}}));
    assert_rejected_naming(&except_alone, None, "either cidr (with optional except) or");
}

#[test]
fn malformed_cidrs_are_rejected_naming_the_field() {
    for (pointer, value, needle) in [
        (
            "to",
            json!([{"cidr": "10.0.0.0"}]),
            "networkPolicy egress.to.cidr must be a CIDR",
        ),
        (
            "to",
            json!([{"cidr": "300.0.0.0/8"}]),
            "networkPolicy egress.to.cidr must be a CIDR",
        ),
        (
            "to",
            json!([{"cidr": "10.0.0.0/33"}]),
            "networkPolicy egress.to.cidr must be a CIDR",
        ),
        (
            "to",
            json!([{"cidr": "10.0.0.0/8", "except": ["ten"]}]),
            "networkPolicy.egress.to.except entries must be CIDRs",
        ),
        (
            "databaseCidrs",
            json!(["db.example.com"]),
            "networkPolicy.egress.databaseCidrs entries must be CIDRs",
        ),
        (
            "redis",
            json!([{"cidr": "fd00::/129"}]),
            "networkPolicy egress.redis.cidr must be a CIDR",
        ),
    ] {
        let app = network_policy(json!({"egress": {pointer: value}}));
        assert_rejected_naming(&app, None, needle);
    }
}

#[test]
fn egress_without_dns_or_any_destination_is_rejected_naming_the_field() {
    let app = network_policy(json!({"egress": {"dns": false}}));
    assert_rejected_naming(&app, None, "networkPolicy.egress with dns: false");
    let with_destination =
        network_policy(json!({"egress": {"dns": false, "to": [{"cidr": "10.0.0.0/8"}]}}));
    assert_eq!(broken_rules(&with_destination, None), Vec::<String>::new());
}

#[test]
fn restricted_egress_with_an_external_database_needs_its_cidrs() {
    let external = |egress: Value| {
        let app = with(
            minimal(),
            "/spec/database",
            json!({"external": {"uriSecret": {"name": "db", "key": "uri"}}}),
        );
        with(app, "/spec/networkPolicy", json!({"egress": egress}))
    };
    assert_rejected_naming(
        &external(json!({})),
        None,
        "networkPolicy.egress.databaseCidrs is required with database.external",
    );
    assert_eq!(
        broken_rules(&external(json!({"databaseCidrs": ["192.0.2.10/32"]})), None),
        Vec::<String>::new()
    );
}

#[test]
fn restricted_egress_with_redis_needs_redis_listed() {
    let app = with(
        network_policy(json!({"egress": {}})),
        "/spec/redis",
        json!({"urlSecret": {"name": "redis", "key": "url"}}),
    );
    assert_rejected_naming(
        &app,
        None,
        "networkPolicy.egress.redis is required with spec.redis",
    );
    let listed = with(
        app,
        "/spec/networkPolicy/egress/redis",
        json!([{"podSelector": {"matchLabels": {"app": "redis"}}}]),
    );
    assert_eq!(broken_rules(&listed, None), Vec::<String>::new());
}

#[test]
fn monitoring_labels_for_prometheus_are_accepted() {
    let app = with(
        minimal(),
        "/spec/monitoring",
        json!({"interval": "30s", "labels": {"release": "kube-prometheus-stack"}}),
    );
    assert_eq!(broken_rules(&app, None), Vec::<String>::new());
    let off = with(minimal(), "/spec/monitoring", json!({"enabled": false}));
    assert_eq!(broken_rules(&off, None), Vec::<String>::new());
}

#[test]
fn monitoring_labels_of_the_operator_are_rejected_naming_the_field() {
    let app = with(
        minimal(),
        "/spec/monitoring",
        json!({"labels": {"app.kubernetes.io/managed-by": "me"}}),
    );
    assert_rejected_naming(
        &app,
        None,
        "monitoring.labels cannot set app.kubernetes.io/ labels",
    );
}
