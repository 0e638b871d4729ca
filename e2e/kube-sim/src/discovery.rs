//! Discovery (`/version`, `/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`), the OpenAPI v3
//! documents (`/openapi/v3`, `/openapi/v3/apis/{group}/{version}`) that `kubectl` uses for
//! server-side field validation support and for `kubectl explain`, and the OpenAPI v2 document
//! (`/openapi/v2`, JSON or gnostic protobuf) that older code paths of kubectl read.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use serde_json::{Map, Value, json};

use crate::registry::{Registry, ResourceType, TypeSource, api_version};
use crate::shape::{builtin_def_name, builtin_defs};

/// The Kubernetes version the sim reports.
pub const KUBE_VERSION: (&str, &str) = ("1", "33");

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": KUBE_VERSION.0,
        "minor": KUBE_VERSION.1,
        "gitVersion": format!("v{}.{}.0-kube-sim", KUBE_VERSION.0, KUBE_VERSION.1),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_json(registry: &Registry, group: &str) -> Value {
    let versions = registry.versions(group);
    let entries: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": api_version(group, v), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": entries,
        "preferredVersion": entries.first().cloned().unwrap_or(Value::Null),
    })
}

/// `/apis`.
pub fn group_list(registry: &Registry) -> Value {
    let groups: Vec<Value> = registry
        .groups()
        .iter()
        .map(|g| group_json(registry, g))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`, if served.
pub fn group(registry: &Registry, group: &str) -> Option<Value> {
    if !registry.groups().iter().any(|g| g == group) {
        return None;
    }
    let mut g = group_json(registry, group);
    if let Some(m) = g.as_object_mut() {
        m.insert("kind".into(), json!("APIGroup"));
        m.insert("apiVersion".into(), json!("v1"));
    }
    Some(g)
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// `/api/v1` or `/apis/{group}/{version}`, if served.
pub fn resource_list(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let types = registry.resources(group, version);
    if types.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for t in types {
        let mut r = json!({
            "name": t.plural,
            "singularName": t.singular,
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": VERBS,
        });
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            r["categories"] = json!(t.categories);
        }
        resources.push(r);
        if t.status_subresource {
            resources.push(json!({"name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced, "kind": t.kind, "verbs": ["get", "patch", "update"]}));
        }
        if crate::scale::scale_paths(t).is_some() {
            resources.push(json!({"name": format!("{}/scale", t.plural), "singularName": "", "namespaced": t.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
        if group.is_empty() && t.kind == "Pod" {
            resources.push(json!({"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]}));
            resources.push(json!({"name": "pods/eviction", "singularName": "", "namespaced": true, "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}));
        }
        if group.is_empty() && t.kind == "Namespace" {
            resources.push(json!({"name": "namespaces/finalize", "singularName": "", "namespaced": false, "kind": "Namespace", "verbs": ["update"]}));
        }
    }
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": api_version(group, version),
        "resources": resources,
    }))
}

/// The definition name of a custom resource's schema (reversed group, version, kind).
fn custom_def_name(t: &ResourceType) -> String {
    let reversed: Vec<&str> = t.group.split('.').rev().collect();
    format!("{}.{}.{}", reversed.join("."), t.version, t.kind)
}

fn def_name(t: &ResourceType) -> String {
    match &t.source {
        TypeSource::Custom(_) => custom_def_name(t),
        TypeSource::Builtin => builtin_def_name(&t.group, &t.kind).unwrap_or_default(),
    }
}

/// Definitions reachable from `roots` through `$ref`s.
fn reachable(defs: &Map<String, Value>, roots: &[String]) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut todo: Vec<String> = roots.to_vec();
    let mut seen = BTreeSet::new();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let Some(d) = defs.get(&name) else { continue };
        collect_refs(d, &mut todo);
        out.insert(name, d.clone());
    }
    out
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref"
                    && let Some(r) = x.as_str()
                {
                    out.push(r.rsplit('/').next().unwrap_or_default().to_string());
                } else {
                    collect_refs(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The OpenAPI v3 document of one group/version.
pub fn openapi_gv(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let types = registry.resources(group, version);
    if types.is_empty() {
        return None;
    }
    let builtin = builtin_defs();
    let mut schemas: BTreeMap<String, Value> = BTreeMap::new();
    let mut roots = vec!["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta".to_string()];
    let mut paths = Map::new();
    let params = json!([
        {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}},
    ]);
    for t in &types {
        let gvk = json!({"group": t.group, "version": t.version, "kind": t.kind});
        let name = def_name(t);
        match &t.source {
            TypeSource::Custom(s) => {
                let mut schema = s.schema.clone();
                if let Some(m) = schema.as_object_mut() {
                    m.insert("x-kubernetes-group-version-kind".into(), json!([gvk]));
                    let props = m.entry("properties").or_insert_with(|| json!({}));
                    if let Some(p) = props.as_object_mut() {
                        p.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
                        p.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
                        p.insert("metadata".into(), json!({"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}], "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"}));
                    }
                }
                schemas.insert(name.clone(), schema);
            }
            TypeSource::Builtin => roots.push(name.clone()),
        }
        let item_path = if t.namespaced {
            format!(
                "/{}/namespaces/{{namespace}}/{}/{{name}}",
                gv_path(&t.group, &t.version),
                t.plural
            )
        } else {
            format!("/{}/{}/{{name}}", gv_path(&t.group, &t.version), t.plural)
        };
        let op = |verb: &str| {
            json!({
                "operationId": format!("{verb}{}", t.kind),
                "parameters": params,
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}}}},
                "x-kubernetes-action": verb,
                "x-kubernetes-group-version-kind": gvk,
            })
        };
        paths.insert(
            item_path,
            json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}),
        );
    }
    for (k, v) in reachable(builtin, &roots) {
        schemas.entry(k).or_insert(v);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v{}.{}.0", KUBE_VERSION.0, KUBE_VERSION.1)},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// A content hash for `serverRelativeURL` (clients cache documents by it).
fn hash_of(v: &Value) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.to_string().hash(&mut h);
    format!("{:016X}", h.finish())
}

/// Every served group/version, the core `v1` first.
fn group_versions(registry: &Registry) -> Vec<(String, String)> {
    let mut gvs: Vec<(String, String)> = vec![(String::new(), "v1".into())];
    for g in registry.groups() {
        for v in registry.versions(g) {
            gvs.push((g.clone(), v));
        }
    }
    gvs
}

/// `/openapi/v3`: the documents by group/version.
pub fn openapi_root(registry: &Registry) -> Value {
    let mut paths = Map::new();
    for (g, v) in group_versions(registry) {
        if let Some(doc) = openapi_gv(registry, &g, &v) {
            let p = gv_path(&g, &v);
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash_of(&doc))}),
            );
        }
    }
    json!({"paths": paths})
}

/// `/openapi/v2`: one Swagger 2.0 document with the definitions of every group/version, derived
/// from the v3 documents (the same schemas: `#/components/schemas/` becomes `#/definitions/`,
/// `allOf: [{$ref}]` a plain `$ref`, and what v2 lacks, `nullable`, `anyOf`, `oneOf`, `not`, is
/// left out, as kube-apiserver's v2 publishing of CRD schemas leaves it out). Paths are not
/// listed: kubectl reads the definitions by their `x-kubernetes-group-version-kind`, and the
/// `fieldValidation` parameter from the v3 paths.
pub fn openapi_v2(registry: &Registry) -> Value {
    let mut definitions = Map::new();
    for (g, v) in group_versions(registry) {
        let Some(doc) = openapi_gv(registry, &g, &v) else {
            continue;
        };
        if let Some(schemas) = doc["components"]["schemas"].as_object() {
            for (name, schema) in schemas {
                definitions
                    .entry(name.clone())
                    .or_insert_with(|| schema_v2(schema));
            }
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": format!("v{}.{}.0", KUBE_VERSION.0, KUBE_VERSION.1)},
        "paths": {},
        "definitions": definitions,
    })
}

/// An OpenAPI v3 schema as Swagger 2.0 writes it.
fn schema_v2(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, value) in map {
                match key.as_str() {
                    "nullable" | "anyOf" | "oneOf" | "not" => {}
                    "$ref" => {
                        let reference = value.as_str().unwrap_or_default();
                        out.insert(
                            key.clone(),
                            json!(reference.replace("#/components/schemas/", "#/definitions/")),
                        );
                    }
                    "allOf" => match value.as_array().map(Vec::as_slice) {
                        Some([only]) if only.get("$ref").is_some() => {
                            if let Some(Value::Object(reference)) = Some(schema_v2(only)) {
                                out.extend(reference);
                            }
                        }
                        _ => {
                            out.insert(key.clone(), schema_v2(value));
                        }
                    },
                    // Values, not schemas: kept as they are.
                    "default" | "example" | "enum" | "x-kubernetes-validations" => {
                        out.insert(key.clone(), value.clone());
                    }
                    "properties" => {
                        let properties = value
                            .as_object()
                            .map(|properties| {
                                properties
                                    .iter()
                                    .map(|(name, property)| (name.clone(), schema_v2(property)))
                                    .collect::<Map<_, _>>()
                            })
                            .unwrap_or_default();
                        out.insert(key.clone(), Value::Object(properties));
                    }
                    _ => {
                        out.insert(key.clone(), schema_v2(value));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(schema_v2).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_resource_list_has_pod_subresources() {
        let r = Registry::with_builtins();
        let list = resource_list(&r, "", "v1").unwrap();
        let names: Vec<&str> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"pods/log"));
        assert!(names.contains(&"pods/status"));
        assert!(!names.contains(&"configmaps/status"));
    }

    #[test]
    fn openapi_patch_operations_advertise_field_validation() {
        let r = Registry::with_builtins();
        let doc = openapi_gv(&r, "apps", "v1").unwrap();
        let op = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(op["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(
            op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        assert!(doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"].is_object());
        assert!(doc["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"].is_object());
    }

    #[test]
    fn openapi_v2_definitions_use_v2_references_and_drop_what_v2_lacks() {
        let v3 = json!({
            "type": "object",
            "nullable": true,
            "properties": {
                "metadata": {"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}], "description": "meta"},
                "default": {"type": "string", "default": "x", "anyOf": [{"type": "string"}]}
            }
        });
        assert_eq!(
            schema_v2(&v3),
            json!({
                "type": "object",
                "properties": {
                    "metadata": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "description": "meta"},
                    "default": {"type": "string", "default": "x"}
                }
            })
        );
        let doc = openapi_v2(&Registry::with_builtins());
        assert_eq!(doc["swagger"], "2.0");
        let deployment = &doc["definitions"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deployment["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "version": "v1", "kind": "Deployment"}])
        );
        assert!(!doc.to_string().contains("#/components/schemas/"));
    }
}
