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

/// The Gateway API `gateway.networking.k8s.io/v1` CRDs the sim ships for its `--gateway-api`
/// option (GatewayClass, Gateway, HTTPRoute): schemas written for kube-sim with the standard
/// channel's constraints on the fields its gateway controller reads (see each file's header and
/// the README).
pub const GATEWAY_API_CRDS: [(&str, &str); 3] = [
    (
        "GatewayClass",
        include_str!("../crds/gateway-api/gatewayclasses.yaml"),
    ),
    ("Gateway", include_str!("../crds/gateway-api/gateways.yaml")),
    (
        "HTTPRoute",
        include_str!("../crds/gateway-api/httproutes.yaml"),
    ),
];

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

    fn gateway_api_schema(kind: &str) -> Value {
        let (_, text) = GATEWAY_API_CRDS.iter().find(|(k, _)| *k == kind).unwrap();
        let crd: Value = serde_saphyr::from_str(text).unwrap();
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    /// The fields (and details) `object` of Gateway API `kind` is rejected on; empty when valid.
    fn gateway_api_errors(
        kind: &str,
        object: &Value,
        old: Option<&Value>,
    ) -> Vec<(String, String)> {
        let schema = gateway_api_schema(kind);
        let validated = kumiko_crds::validate::validate(
            &schema,
            object,
            old,
            "gateway.networking.k8s.io/v1",
            kind,
        );
        validated
            .errors
            .into_iter()
            .map(|e| (e.field.clone(), e.body()))
            .collect()
    }

    fn http_route(spec: Value) -> Value {
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
               "metadata": {"name": "api", "namespace": "shop"}, "spec": spec})
    }

    fn valid_route_spec() -> Value {
        json!({"parentRefs": [{"name": "web"}], "hostnames": ["shop.example.com", "*.example.com"],
               "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                          "backendRefs": [{"name": "api", "port": 80}]}]})
    }

    #[test]
    fn shipped_gateway_api_crds_are_valid_and_served_with_a_status() {
        for (kind, text) in GATEWAY_API_CRDS {
            let crd: Value = serde_saphyr::from_str(text).unwrap();
            assert!(
                validate(&crd, None).is_empty(),
                "{kind}: {:?}",
                validate(&crd, None)
            );
            let types = types_of(&crd);
            assert_eq!(types.len(), 1);
            assert_eq!(types[0].kind, kind);
            assert!(types[0].status_subresource, "{kind}");
        }
    }

    #[test]
    fn an_http_route_as_the_operator_writes_it_is_accepted_with_defaults() {
        let schema = gateway_api_schema("HTTPRoute");
        let validated = kumiko_crds::validate::validate(
            &schema,
            &http_route(valid_route_spec()),
            None,
            "gateway.networking.k8s.io/v1",
            "HTTPRoute",
        );
        assert!(validated.is_valid(), "{:?}", validated.errors);
        let stored = &validated.object["spec"];
        assert_eq!(
            stored["parentRefs"][0]["group"],
            "gateway.networking.k8s.io"
        );
        assert_eq!(stored["parentRefs"][0]["kind"], "Gateway");
        assert_eq!(stored["rules"][0]["backendRefs"][0]["kind"], "Service");
        assert_eq!(stored["rules"][0]["backendRefs"][0]["weight"], 1);
        // A route without rules gets the one rule matching every path.
        let bare = kumiko_crds::validate::validate(
            &schema,
            &http_route(json!({"parentRefs": [{"name": "web"}]})),
            None,
            "gateway.networking.k8s.io/v1",
            "HTTPRoute",
        );
        assert!(bare.is_valid(), "{:?}", bare.errors);
        assert_eq!(
            bare.object["spec"]["rules"][0]["matches"][0]["path"],
            json!({"type": "PathPrefix", "value": "/"})
        );
    }

    #[test]
    fn an_http_route_hostname_must_be_a_lowercase_dns_name_with_an_optional_wildcard() {
        for host in [
            "Shop.example.com",
            "shop.*.com",
            "127.0.0.1:80",
            "shop_example.com",
        ] {
            let mut spec = valid_route_spec();
            spec["hostnames"] = json!([host]);
            let errors = gateway_api_errors("HTTPRoute", &http_route(spec), None);
            assert!(
                errors.iter().any(|(field, _)| field == "spec.hostnames[0]"),
                "{host}: {errors:?}"
            );
        }
        let mut many = valid_route_spec();
        many["hostnames"] = json!(
            (0..17)
                .map(|i| format!("h{i}.example.com"))
                .collect::<Vec<_>>()
        );
        let errors = gateway_api_errors("HTTPRoute", &http_route(many), None);
        assert!(
            errors.iter().any(|(field, _)| field == "spec.hostnames"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_path_prefix_must_be_an_absolute_clean_path() {
        for (value, message) in [
            ("api", "must be an absolute path"),
            ("/a//b", "must not contain '//'"),
            ("/a/../b", "must not contain '/../'"),
            ("/a#b", "must not contain '#'"),
            ("/a b", "must only contain valid characters"),
        ] {
            let mut spec = valid_route_spec();
            spec["rules"][0]["matches"][0]["path"]["value"] = json!(value);
            let errors = gateway_api_errors("HTTPRoute", &http_route(spec), None);
            assert!(
                errors.iter().any(|(field, body)| field
                    .starts_with("spec.rules[0].matches[0].path")
                    && body.contains(message)),
                "{value}: {errors:?}"
            );
        }
        let mut spec = valid_route_spec();
        spec["rules"][0]["matches"][0]["path"]["type"] = json!("Glob");
        let errors = gateway_api_errors("HTTPRoute", &http_route(spec), None);
        assert!(
            errors
                .iter()
                .any(|(field, _)| field == "spec.rules[0].matches[0].path.type"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_service_backend_ref_needs_a_port() {
        let mut spec = valid_route_spec();
        spec["rules"][0]["backendRefs"] = json!([{"name": "api"}]);
        let errors = gateway_api_errors("HTTPRoute", &http_route(spec), None);
        assert!(
            errors
                .iter()
                .any(|(field, body)| field == "spec.rules[0].backendRefs[0]"
                    && body.contains("Must have port for Service reference")),
            "{errors:?}"
        );
        let mut other_kind = valid_route_spec();
        other_kind["rules"][0]["backendRefs"] =
            json!([{"group": "example.com", "kind": "Bucket", "name": "api"}]);
        assert_eq!(
            gateway_api_errors("HTTPRoute", &http_route(other_kind), None),
            vec![]
        );
    }

    #[test]
    fn an_http_route_takes_at_most_32_parent_refs() {
        let mut spec = valid_route_spec();
        spec["parentRefs"] = json!(
            (0..33)
                .map(|i| json!({"name": format!("gw{i}")}))
                .collect::<Vec<_>>()
        );
        let errors = gateway_api_errors("HTTPRoute", &http_route(spec.clone()), None);
        assert!(
            errors.iter().any(|(field, _)| field == "spec.parentRefs"),
            "{errors:?}"
        );
        spec["parentRefs"] = json!(
            (0..32)
                .map(|i| json!({"name": format!("gw{i}")}))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            gateway_api_errors("HTTPRoute", &http_route(spec), None),
            vec![]
        );
    }

    fn gateway(listeners: Value) -> Value {
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
               "metadata": {"name": "web", "namespace": "shop"},
               "spec": {"gatewayClassName": "kube-sim", "listeners": listeners}})
    }

    #[test]
    fn gateway_listeners_are_unique_and_tls_only_where_the_protocol_has_it() {
        let http = json!({"name": "http", "port": 80, "protocol": "HTTP"});
        assert_eq!(
            gateway_api_errors("Gateway", &gateway(json!([http.clone()])), None),
            vec![]
        );
        let errors = gateway_api_errors(
            "Gateway",
            &gateway(json!([http.clone(), http.clone()])),
            None,
        );
        assert!(!errors.is_empty(), "duplicate listeners: {errors:?}");
        let errors = gateway_api_errors(
            "Gateway",
            &gateway(json!([{"name": "http", "port": 80, "protocol": "HTTP",
                              "tls": {"certificateRefs": [{"name": "cert"}]}}])),
            None,
        );
        assert!(
            errors.iter().any(|(field, body)| field == "spec.listeners"
                && body.contains("tls must not be specified")),
            "{errors:?}"
        );
        let errors = gateway_api_errors(
            "Gateway",
            &gateway(json!([{"name": "https", "port": 443, "protocol": "HTTPS", "tls": {}}])),
            None,
        );
        assert!(
            errors
                .iter()
                .any(|(field, body)| field == "spec.listeners[0].tls"
                    && body.contains("certificateRefs")),
            "{errors:?}"
        );
        let errors = gateway_api_errors("Gateway", &gateway(json!([])), None);
        assert!(
            errors.iter().any(|(field, _)| field == "spec.listeners"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_gateway_class_controller_name_is_a_domain_path_and_immutable() {
        let class = |controller: &str| {
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
                   "metadata": {"name": "kube-sim"}, "spec": {"controllerName": controller}})
        };
        let ours = class(crate::controllers::gateway::CONTROLLER_NAME);
        assert_eq!(gateway_api_errors("GatewayClass", &ours, None), vec![]);
        let errors = gateway_api_errors("GatewayClass", &class("no-domain"), None);
        assert!(
            errors
                .iter()
                .any(|(field, _)| field == "spec.controllerName"),
            "{errors:?}"
        );
        let errors = gateway_api_errors("GatewayClass", &class("example.com/other"), Some(&ours));
        assert!(
            errors
                .iter()
                .any(|(field, body)| field == "spec.controllerName"
                    && body.contains("Value is immutable")),
            "{errors:?}"
        );
    }

    #[test]
    fn crd_name_must_be_plural_dot_group() {
        let crd = json!({"metadata": {"name": "x.example.com"}, "spec": {"group": "example.com", "scope": "Namespaced", "names": {"plural": "things", "kind": "Thing"}, "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object"}}}]}});
        let causes = validate(&crd, None);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "metadata.name");
    }
}
