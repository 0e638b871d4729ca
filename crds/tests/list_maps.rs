//! The lists the operator copies into every pod template are declared as Kubernetes declares the
//! same fields of a Pod (`x-kubernetes-list-type: map` with the same keys: `env` and
//! `imagePullSecrets` by `name`, `topologySpreadConstraints` by `topologyKey` and
//! `whenUnsatisfiable`), so a duplicate is refused at admission, naming the field, instead of by
//! server-side apply of the Deployments ("duplicate entries for key"). Checked with the validator
//! `render` and kube-sim share, against the generated schema.

// Test helpers may panic: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kube::CustomResourceExt;
use kumiko_crds::KumikoApp;
use kumiko_crds::validate::validate;
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

fn app(spec_extra: Value) -> Value {
    let mut spec = json!({
        "image": "ghcr.io/acme/status:1.4.2",
        "database": {"cluster": {"storage": {"size": "1Gi"}}}
    });
    for (key, value) in spec_extra.as_object().expect("an object") {
        spec[key] = value.clone();
    }
    json!({
        "apiVersion": "kumiko.so/v1alpha1",
        "kind": "KumikoApp",
        "metadata": {"name": "status", "namespace": "status"},
        "spec": spec
    })
}

fn errors(object: &Value) -> Vec<String> {
    validate(&schema(), object, None, "kumiko.so/v1alpha1", "KumikoApp")
        .errors
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn a_repeated_env_name_is_a_duplicate_at_its_second_entry() {
    let object = app(json!({"env": [
        {"name": "FEATURE_X", "value": "1"},
        {"name": "LOG", "value": "info"},
        {"name": "FEATURE_X", "value": "2"}
    ]}));
    assert_eq!(
        errors(&object),
        vec![r#"spec.env[2]: Duplicate value: map[string]interface {}{"name":"FEATURE_X"}"#]
    );
}

#[test]
fn a_repeated_image_pull_secret_is_a_duplicate() {
    let object = app(json!({"imagePullSecrets": [{"name": "ghcr"}, {"name": "ghcr"}]}));
    assert_eq!(
        errors(&object),
        vec![
            r#"spec.imagePullSecrets[1]: Duplicate value: map[string]interface {}{"name":"ghcr"}"#
        ]
    );
}

#[test]
fn a_repeated_spread_key_pair_is_a_duplicate_but_another_pair_is_not() {
    let constraint = |key: &str, when: &str| json!({"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": when});
    let object = app(
        json!({"worker": {"scheduling": {"topologySpreadConstraints": [
            constraint("topology.kubernetes.io/zone", "DoNotSchedule"),
            constraint("topology.kubernetes.io/zone", "ScheduleAnyway"),
            constraint("topology.kubernetes.io/zone", "DoNotSchedule"),
        ]}}}),
    );
    assert_eq!(
        errors(&object),
        vec![
            r#"spec.worker.scheduling.topologySpreadConstraints[2]: Duplicate value: map[string]interface {}{"topologyKey":"topology.kubernetes.io/zone", "whenUnsatisfiable":"DoNotSchedule"}"#
        ]
    );
}

#[test]
fn distinct_names_are_accepted() {
    let object = app(json!({
        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "1"}],
        "imagePullSecrets": [{"name": "ghcr"}, {"name": "quay"}]
    }));
    assert_eq!(errors(&object), Vec::<String>::new());
}

/// The validator runs the CEL rules too: a request above its limit is refused with the field.
#[test]
fn a_request_above_its_limit_is_refused_by_the_shared_validator() {
    let object = app(json!({"api": {"resources": {
        "requests": {"cpu": "250m"},
        "limits": {"cpu": "100m"}
    }}}));
    assert_eq!(
        errors(&object),
        vec![
            r#"spec.api.resources: Invalid value: "object": api.resources.requests.cpu must be less than or equal to api.resources.limits.cpu: Kubernetes rejects a container whose request is above its limit; lower the request or raise the limit"#
        ]
    );
}
