//! CustomResourceDefinitions: validation of the CRD itself, turning its served versions into
//! resource types, and the `NamesAccepted`/`Established` status the apiextensions controllers set.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::cluster::{Cluster, State};
use crate::meta;
use crate::registry::{CustomSchema, ResourceType, TypeSource};
use crate::status::Cause;
use crate::strategy::cause;

/// The finalizer kube-apiserver puts on CRDs: their custom resources are deleted before the CRD.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    meta::get_path(v, path)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Validates a CRD as kube-apiserver does, for the parts that matter here.
pub(crate) fn validate(crd: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut out = Vec::new();
    let group = str_at(crd, &["spec", "group"]);
    let plural = str_at(crd, &["spec", "names", "plural"]);
    let kind = str_at(crd, &["spec", "names", "kind"]);
    let name = meta::name(crd);
    if group.is_empty() {
        out.push(cause("FieldValueRequired", "spec.group", "Required value"));
    } else if !group.contains('.') {
        out.push(cause(
            "FieldValueInvalid",
            "spec.group",
            format!("Invalid value: {group:?}: should be a domain with at least one dot"),
        ));
    }
    if plural.is_empty() {
        out.push(cause(
            "FieldValueRequired",
            "spec.names.plural",
            "Required value",
        ));
    } else if let Err(msg) = crate::names::validate_dns1123_label(plural) {
        out.push(cause(
            "FieldValueInvalid",
            "spec.names.plural",
            format!("Invalid value: {plural:?}: {msg}"),
        ));
    }
    if kind.is_empty() {
        out.push(cause(
            "FieldValueRequired",
            "spec.names.kind",
            "Required value",
        ));
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        out.push(cause(
            "FieldValueInvalid",
            "metadata.name",
            format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let scope = str_at(crd, &["spec", "scope"]);
    if !matches!(scope, "Namespaced" | "Cluster") {
        out.push(cause(
            "FieldValueNotSupported",
            "spec.scope",
            format!("Unsupported value: {scope:?}: supported values: \"Cluster\", \"Namespaced\""),
        ));
    }
    let versions = crd
        .get("spec")
        .and_then(|s| s.get("versions"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        out.push(cause(
            "FieldValueInvalid",
            "spec.versions",
            "Invalid value: must have exactly one version marked as storage version",
        ));
    }
    let storage = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count();
    if !versions.is_empty() && storage != 1 {
        out.push(cause("FieldValueInvalid", "spec.versions", format!("Invalid value: must have exactly one version marked as storage version, status.storedVersions[{storage}]")));
    }
    for (i, v) in versions.iter().enumerate() {
        let path = format!("spec.versions[{i}]");
        let vname = str_at(v, &["name"]);
        if let Err(msg) = crate::names::validate_dns1123_label(vname) {
            out.push(cause(
                "FieldValueInvalid",
                &format!("{path}.name"),
                format!("Invalid value: {vname:?}: {msg}"),
            ));
        }
        match v.get("schema").and_then(|s| s.get("openAPIV3Schema")) {
            None => out.push(cause(
                "FieldValueRequired",
                &format!("{path}.schema.openAPIV3Schema"),
                "Required value: schemas are required",
            )),
            Some(schema) => {
                if schema.get("type").and_then(Value::as_str) != Some("object") {
                    out.push(cause(
                        "FieldValueInvalid",
                        &format!("{path}.schema.openAPIV3Schema.type"),
                        "Invalid value: must be object at the root",
                    ));
                }
                for err in kumiko_crds::validate::compile_rules(schema) {
                    out.push(cause(
                        "FieldValueInvalid",
                        &format!("{path}.schema.openAPIV3Schema"),
                        format!("Invalid value: \"object\": compilation failed: {err}"),
                    ));
                }
            }
        }
    }
    if let Some(old) = old {
        if str_at(old, &["spec", "group"]) != group {
            out.push(cause(
                "FieldValueInvalid",
                "spec.group",
                "Invalid value: field is immutable",
            ));
        }
        if str_at(old, &["spec", "scope"]) != scope {
            out.push(cause(
                "FieldValueInvalid",
                "spec.scope",
                "Invalid value: field is immutable",
            ));
        }
    }
    out
}

/// The resource types of a CRD's served versions.
pub(crate) fn types_of(crd: &Value) -> Vec<ResourceType> {
    let group = str_at(crd, &["spec", "group"]).to_string();
    let names = crd
        .get("spec")
        .and_then(|s| s.get("names"))
        .cloned()
        .unwrap_or_default();
    let kind = str_at(&names, &["kind"]).to_string();
    let plural = str_at(&names, &["plural"]).to_string();
    let singular = match str_at(&names, &["singular"]) {
        "" => kind.to_lowercase(),
        s => s.to_string(),
    };
    let list_kind = match str_at(&names, &["listKind"]) {
        "" => format!("{kind}List"),
        s => s.to_string(),
    };
    let strings = |key: &str| -> Vec<String> {
        names
            .get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let namespaced = str_at(crd, &["spec", "scope"]) == "Namespaced";
    let versions = crd
        .get("spec")
        .and_then(|s| s.get("versions"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let storage_version = versions
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .map(|v| str_at(v, &["name"]).to_string())
        .unwrap_or_default();
    versions
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool) != Some(false))
        .map(|v| ResourceType {
            group: group.clone(),
            version: str_at(v, &["name"]).to_string(),
            kind: kind.clone(),
            list_kind: list_kind.clone(),
            plural: plural.clone(),
            singular: singular.clone(),
            namespaced,
            short_names: strings("shortNames"),
            categories: strings("categories"),
            status_subresource: v
                .get("subresources")
                .and_then(|s| s.get("status"))
                .is_some(),
            has_generation: true,
            storage_version: storage_version.clone(),
            source: TypeSource::Custom(Arc::new({
                let schema = v
                    .get("schema")
                    .and_then(|s| s.get("openAPIV3Schema"))
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "object"}));
                CustomSchema {
                    crd_name: meta::name(crd).to_string(),
                    validator: kumiko_crds::validate::SchemaValidator::new(schema.clone()),
                    schema,
                    printer_columns: v
                        .get("additionalPrinterColumns")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                    scale: v.get("subresources").and_then(|s| s.get("scale")).cloned(),
                }
            })),
        })
        .collect()
}

/// Serves a CRD's versions and records `NamesAccepted` and `Established` (what the apiextensions
/// controllers do a moment after the CRD is written; here in the same step, as a separate write).
pub(crate) fn establish(cl: &Cluster, state: &mut State, crd: &Value) {
    let name = meta::name(crd).to_string();
    state.registry.remove_crd(&name);
    let types = types_of(crd);
    let storage = types
        .first()
        .map(|t| t.storage_version.clone())
        .unwrap_or_default();
    for t in types {
        state.registry.insert(t);
    }
    let now = meta::now_rfc3339();
    let old_status = crd.get("status").cloned().unwrap_or_else(|| json!({}));
    let mut stored: Vec<Value> = old_status
        .get("storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !storage.is_empty() && !stored.contains(&json!(storage)) {
        stored.push(json!(storage));
    }
    let names = crd
        .get("spec")
        .and_then(|s| s.get("names"))
        .cloned()
        .unwrap_or_default();
    let condition = |t: &str, reason: &str, message: &str| {
        let existing = old_status
            .get("conditions")
            .and_then(Value::as_array)
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.get("type").and_then(Value::as_str) == Some(t))
            })
            .filter(|c| c.get("status").and_then(Value::as_str) == Some("True"));
        let since = existing
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| json!(now));
        json!({"type": t, "status": "True", "lastTransitionTime": since, "reason": reason, "message": message})
    };
    let status = json!({
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "acceptedNames": names,
        "storedVersions": stored,
    });
    let key = crate::registry::StoreKey {
        group: "apiextensions.k8s.io".into(),
        plural: "customresourcedefinitions".into(),
    };
    crate::strategy::set_status(cl, state, &key, crd, status);
}

/// The CloudNativePG `postgresql.cnpg.io/v1` Cluster CRD the sim ships (a minimal schema; see the
/// README for the fields it checks).
pub const CNPG_CLUSTER_CRD: &str = include_str!("../crds/cnpg-cluster.yaml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_cnpg_crd_is_valid() {
        let crd: Value = serde_saphyr::from_str(CNPG_CLUSTER_CRD).unwrap();
        assert!(
            validate(&crd, None).is_empty(),
            "{:?}",
            validate(&crd, None)
        );
        let types = types_of(&crd);
        assert_eq!(types.len(), 1);
        assert_eq!(types[0].kind, "Cluster");
        assert!(types[0].status_subresource);
    }

    #[test]
    fn crd_name_must_be_plural_dot_group() {
        let crd = json!({"metadata": {"name": "x.example.com"}, "spec": {"group": "example.com", "scope": "Namespaced", "names": {"plural": "things", "kind": "Thing"}, "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object"}}}]}});
        let causes = validate(&crd, None);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "metadata.name");
    }
}
