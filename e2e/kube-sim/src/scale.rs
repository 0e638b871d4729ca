//! The `scale` subresource: an `autoscaling/v1` `Scale` view of an object's replica count.
//!
//! Rules followed (Kubernetes API reference, "Scale v1 autoscaling"; kube-apiserver's
//! `pkg/registry/apps/deployment/storage` and `.../replicaset/storage` `ScaleREST`; the
//! apiextensions-apiserver's custom resource scale, "Extend the Kubernetes API with
//! CustomResourceDefinitions", section "Scale subresource"):
//! - Deployments and ReplicaSets: `spec.replicas` is the object's `spec.replicas`,
//!   `status.replicas` its `status.replicas`, `status.selector` its `spec.selector` as a label
//!   selector string;
//! - a custom resource whose CRD version declares `subresources.scale`: `spec.replicas` is read
//!   from `specReplicasPath` (0 when absent), `status.replicas` from `statusReplicasPath` (0 when
//!   absent), `status.selector` from `labelSelectorPath` (a string; empty when absent or when the
//!   path is not declared); a type without a scale subresource answers 404;
//! - the Scale's metadata carries the object's name, namespace, uid, resourceVersion and
//!   creationTimestamp;
//! - writing a Scale (PUT, or PATCH applied to the current Scale) sets only the replica count;
//!   a Scale with a `resourceVersion` is a precondition (409 when stale), one without is
//!   unconditional; `spec.replicas` below 0 is 422 (`must be greater than or equal to 0`); a
//!   Scale naming another object is 400;
//! - the write is recorded in `managedFields` as an `Update` of the `scale` subresource by the
//!   request's manager, which so takes `spec.replicas` over (the server-side apply
//!   documentation, "Field management");
//! - RBAC checks the `scale` subresource (`deployments/scale`), done by the HTTP layer as for
//!   every subresource.

use serde_json::{Map, Value, json};

use crate::meta;
use crate::registry::{ResourceType, TypeSource};
use crate::status::{ApiError, Cause};

/// Where a type keeps the values a Scale shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePaths {
    /// The path of the desired replica count (`spec.replicas`).
    pub spec_replicas: Vec<String>,
    /// The path of the observed replica count (`status.replicas`).
    pub status_replicas: Vec<String>,
    /// Where the selector comes from.
    pub selector: SelectorSource,
}

/// Where a Scale's `status.selector` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectorSource {
    /// A `metav1.LabelSelector` object at this path, rendered as a selector string.
    LabelSelector(Vec<String>),
    /// A string at this path (a CRD's `labelSelectorPath`).
    String(Vec<String>),
    /// None (a CRD without `labelSelectorPath`).
    None,
}

/// `.spec.replicas` as path segments.
fn json_path(path: &str) -> Vec<String> {
    path.trim_start_matches('.')
        .split('.')
        .filter(|segment| !segment.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The scale paths of a type, or `None` when it has no scale subresource.
pub fn scale_paths(rt: &ResourceType) -> Option<ScalePaths> {
    match &rt.source {
        TypeSource::Builtin => match (rt.group.as_str(), rt.kind.as_str()) {
            ("apps", "Deployment" | "ReplicaSet") => Some(ScalePaths {
                spec_replicas: json_path(".spec.replicas"),
                status_replicas: json_path(".status.replicas"),
                selector: SelectorSource::LabelSelector(json_path(".spec.selector")),
            }),
            _ => None,
        },
        TypeSource::Custom(schema) => {
            let scale = schema.scale.as_ref()?;
            let path = |key: &str| scale.get(key).and_then(Value::as_str).map(json_path);
            Some(ScalePaths {
                spec_replicas: path("specReplicasPath")?,
                status_replicas: path("statusReplicasPath")?,
                selector: path("labelSelectorPath")
                    .map_or(SelectorSource::None, SelectorSource::String),
            })
        }
    }
}

fn at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |value, key| value.get(key))
}

/// A label selector object as the string `kubectl` and the Scale show (`a=b,c in (d)`).
pub fn selector_string(selector: &Value) -> String {
    let mut terms = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (key, value) in labels {
            terms.push(format!("{key}={}", value.as_str().unwrap_or_default()));
        }
    }
    for expression in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = expression
            .get("key")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let values: Vec<&str> = expression
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        match expression
            .get("operator")
            .and_then(Value::as_str)
            .unwrap_or_default()
        {
            "In" => terms.push(format!("{key} in ({})", values.join(","))),
            "NotIn" => terms.push(format!("{key} notin ({})", values.join(","))),
            "Exists" => terms.push(key.to_owned()),
            "DoesNotExist" => terms.push(format!("!{key}")),
            other => terms.push(format!("{key} {other}")),
        }
    }
    terms.sort();
    terms.join(",")
}

/// The Scale of an object.
pub fn to_scale(paths: &ScalePaths, obj: &Value) -> Value {
    let replicas = |path: &[String]| at(obj, path).and_then(Value::as_i64).unwrap_or(0);
    let selector = match &paths.selector {
        SelectorSource::LabelSelector(path) => at(obj, path).map(selector_string),
        SelectorSource::String(path) => at(obj, path).and_then(Value::as_str).map(str::to_owned),
        SelectorSource::None => None,
    };
    let mut metadata = Map::new();
    for key in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(value) = obj.get("metadata").and_then(|m| m.get(key)) {
            metadata.insert(key.to_owned(), value.clone());
        }
    }
    let mut status = json!({"replicas": replicas(&paths.status_replicas)});
    if let Some(selector) = selector.filter(|s| !s.is_empty()) {
        status["selector"] = json!(selector);
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": replicas(&paths.spec_replicas)},
        "status": status,
    })
}

/// The object with the replica count of `scale` written into it, ready to be stored as an update
/// (its `resourceVersion` is the Scale's when the Scale has one: a precondition).
pub fn apply_scale(
    rt: &ResourceType,
    paths: &ScalePaths,
    obj: &Value,
    scale: &Value,
) -> Result<Value, ApiError> {
    let name = meta::name(obj).to_owned();
    if let Some(given) = scale
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|given| !given.is_empty())
        && given != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({given}) does not match the name on the URL ({name})"
        )));
    }
    let replicas = match scale.get("spec").and_then(|s| s.get("replicas")) {
        None | Some(Value::Null) => 0,
        Some(value) => value.as_i64().ok_or_else(|| {
            ApiError::bad_request(format!(
                "Scale in version \"v1\" cannot be handled as a Scale: spec.replicas: {value} is not an integer"
            ))
        })?,
    };
    if replicas < 0 {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            &name,
            vec![Cause {
                reason: "FieldValueInvalid".into(),
                message: format!("Invalid value: {replicas}: must be greater than or equal to 0"),
                field: "spec.replicas".into(),
            }],
        ));
    }
    let mut updated = obj.clone();
    set_at(&mut updated, &paths.spec_replicas, json!(replicas)).ok_or_else(|| {
        ApiError::internal(format!(
            "cannot set {} of {} {name}",
            paths.spec_replicas.join("."),
            rt.kind
        ))
    })?;
    if let Some(rv) = scale
        .get("metadata")
        .and_then(|m| m.get("resourceVersion"))
        .and_then(Value::as_str)
        .filter(|rv| !rv.is_empty())
        && let Some(metadata) = updated.get_mut("metadata").and_then(Value::as_object_mut)
    {
        metadata.insert("resourceVersion".into(), json!(rv));
    }
    Ok(updated)
}

fn set_at(obj: &mut Value, path: &[String], value: Value) -> Option<()> {
    let (last, parents) = path.split_last()?;
    let mut current = obj;
    for key in parents {
        let map = current.as_object_mut()?;
        current = map.entry(key.clone()).or_insert_with(|| json!({}));
        if current.is_null() {
            *current = json!({});
        }
    }
    current.as_object_mut()?.insert(last.clone(), value);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn deployments() -> ResourceType {
        Registry::with_builtins()
            .get("apps", "v1", "deployments")
            .cloned()
            .expect("deployments")
    }

    fn deployment() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "resourceVersion": "7",
                "creationTimestamp": "2025-01-01T00:00:00Z", "labels": {"x": "y"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web", "tier": "api"}}},
            "status": {"replicas": 3}})
    }

    #[test]
    fn deployment_scale_shows_spec_and_status_replicas_and_the_selector() {
        let paths = scale_paths(&deployments()).expect("deployments have a scale");
        let scale = to_scale(&paths, &deployment());
        assert_eq!(scale["apiVersion"], "autoscaling/v1");
        assert_eq!(scale["kind"], "Scale");
        assert_eq!(scale["metadata"]["resourceVersion"], "7");
        assert_eq!(scale["metadata"]["uid"], "u1");
        assert!(scale["metadata"].get("labels").is_none());
        assert_eq!(scale["spec"]["replicas"], 2);
        assert_eq!(scale["status"]["replicas"], 3);
        assert_eq!(scale["status"]["selector"], "app=web,tier=api");
    }

    #[test]
    fn types_without_a_scale_subresource_have_none() {
        let registry = Registry::with_builtins();
        let pods = registry.get("", "v1", "pods").expect("pods");
        assert_eq!(scale_paths(pods), None);
        let jobs = registry.get("batch", "v1", "jobs").expect("jobs");
        assert_eq!(scale_paths(jobs), None);
    }

    #[test]
    fn writing_a_scale_sets_only_the_replicas_and_keeps_its_resource_version() {
        let rt = deployments();
        let paths = scale_paths(&rt).expect("paths");
        let scale = json!({"metadata": {"name": "web", "resourceVersion": "5"},
            "spec": {"replicas": 4}, "status": {"replicas": 99}});
        let updated = apply_scale(&rt, &paths, &deployment(), &scale).expect("applies");
        assert_eq!(updated["spec"]["replicas"], 4);
        assert_eq!(updated["status"]["replicas"], 3, "status is not written");
        assert_eq!(
            updated["metadata"]["resourceVersion"], "5",
            "a precondition"
        );
        let unconditional = json!({"spec": {"replicas": 1}});
        let updated = apply_scale(&rt, &paths, &deployment(), &unconditional).expect("applies");
        assert_eq!(updated["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn negative_replicas_are_invalid_and_another_name_is_a_bad_request() {
        let rt = deployments();
        let paths = scale_paths(&rt).expect("paths");
        let error = apply_scale(
            &rt,
            &paths,
            &deployment(),
            &json!({"spec": {"replicas": -1}}),
        )
        .expect_err("negative");
        assert_eq!(error.code, 422);
        assert!(
            error
                .message
                .contains("spec.replicas: Invalid value: -1: must be greater than or equal to 0"),
            "{}",
            error.message
        );
        let error = apply_scale(
            &rt,
            &paths,
            &deployment(),
            &json!({"metadata": {"name": "other"}, "spec": {"replicas": 1}}),
        )
        .expect_err("other name");
        assert_eq!(error.code, 400);
    }

    #[test]
    fn selector_expressions_render_as_kubectl_prints_them() {
        let selector = json!({"matchLabels": {"a": "b"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["api", "web"]},
            {"key": "canary", "operator": "DoesNotExist"}]});
        assert_eq!(selector_string(&selector), "!canary,a=b,tier in (api,web)");
    }
}
