//! The structure of a type that merges need: which objects are structs and which are maps, and
//! how each list merges (`x-kubernetes-list-type` atomic/set/map with its keys for server-side
//! apply, `x-kubernetes-patch-strategy`/`-merge-key` for strategic merge patch).
//!
//! Custom resources take it from their CRD schema. Built-in types take it from the `k8s-openapi`
//! schemas, overlaid with the list annotations of the Kubernetes OpenAPI for the types used here
//! (the generated schemas do not carry them).

use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value, json};

use crate::registry::{CustomSchema, ResourceType, TypeSource};

/// The structure of one type.
#[derive(Clone, Debug)]
pub enum Shape {
    /// From a CRD version's schema.
    Custom(Arc<CustomSchema>),
    /// A built-in type, by its definition name (e.g. `io.k8s.api.apps.v1.Deployment`).
    Builtin(Option<String>),
}

/// How a list merges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListType {
    /// Replaced as a whole.
    Atomic,
    /// A set of scalars.
    Set,
    /// A map keyed by these item fields.
    Map(Vec<String>),
}

/// A position in a schema (None: unknown structure, merged as untyped data).
#[derive(Clone, Copy, Debug)]
pub struct Node<'a> {
    schema: Option<&'a Value>,
    defs: Option<&'a Map<String, Value>>,
    /// The root of a custom resource: its `metadata` is `ObjectMeta`, whatever the schema says.
    custom_root: bool,
}

impl Shape {
    /// The shape of a served type.
    pub fn for_type(rt: &ResourceType) -> Shape {
        match &rt.source {
            TypeSource::Custom(s) => Shape::Custom(s.clone()),
            TypeSource::Builtin => Shape::Builtin(builtin_def_name(&rt.group, &rt.kind)),
        }
    }

    /// The root node.
    pub fn root(&self) -> Node<'_> {
        match self {
            Shape::Custom(s) => Node {
                schema: Some(&s.schema),
                defs: None,
                custom_root: true,
            },
            Shape::Builtin(name) => {
                let defs = builtin_defs();
                Node {
                    schema: name.as_ref().and_then(|n| defs.get(n)),
                    defs: Some(defs),
                    custom_root: false,
                }
            }
        }
    }
}

impl<'a> Node<'a> {
    /// A node of unknown structure.
    pub fn unknown() -> Node<'a> {
        Node {
            schema: None,
            defs: None,
            custom_root: false,
        }
    }

    fn resolve(&self) -> Option<&'a Value> {
        let mut cur = self.schema?;
        for _ in 0..8 {
            let reference = cur.get("$ref").and_then(Value::as_str).or_else(|| {
                cur.get("allOf")
                    .and_then(Value::as_array)
                    .filter(|a| a.len() == 1)
                    .and_then(|a| a[0].get("$ref"))
                    .and_then(Value::as_str)
            });
            match reference {
                Some(r) => {
                    let name = r.rsplit('/').next().unwrap_or_default();
                    cur = self.defs?.get(name)?;
                }
                None => return Some(cur),
            }
        }
        Some(cur)
    }

    /// The annotations of this position, merging the referencing node's own keys (the overlay
    /// puts list annotations beside a `$ref`).
    fn ext(&self, key: &str) -> Option<&'a Value> {
        self.schema
            .and_then(|s| s.get(key))
            .or_else(|| self.resolve().and_then(|s| s.get(key)))
    }

    fn child(&self, schema: Option<&'a Value>) -> Node<'a> {
        Node {
            schema,
            defs: self.defs,
            custom_root: false,
        }
    }

    /// Whether `name` is a declared field (a struct field rather than a map entry).
    pub fn is_declared(&self, name: &str) -> bool {
        if self.custom_root && matches!(name, "apiVersion" | "kind" | "metadata") {
            return true;
        }
        match self.resolve() {
            Some(s) => s
                .get("properties")
                .and_then(Value::as_object)
                .is_some_and(|p| p.contains_key(name)),
            // Unknown structure: treat keys as fields of a struct, not map entries.
            None => false,
        }
    }

    /// Whether this is an object with declared fields (vs. a map or unknown).
    pub fn is_struct(&self) -> bool {
        self.resolve()
            .and_then(|s| s.get("properties"))
            .and_then(Value::as_object)
            .is_some_and(|p| !p.is_empty())
    }

    /// The node of field or map entry `name`.
    pub fn field(&self, name: &str) -> Node<'a> {
        if self.custom_root && name == "metadata" {
            let defs = builtin_defs();
            return Node {
                schema: defs.get("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
                defs: Some(defs),
                custom_root: false,
            };
        }
        let Some(s) = self.resolve() else {
            return Node::unknown();
        };
        if let Some(p) = s.get("properties").and_then(|p| p.get(name)) {
            return self.child(Some(p));
        }
        match s.get("additionalProperties") {
            Some(ap) if ap.is_object() => self.child(Some(ap)),
            _ => Node::unknown(),
        }
    }

    /// The schema's `default` here, if any.
    pub fn default_value(&self) -> Option<Value> {
        self.ext("default").cloned()
    }

    /// The node of list items.
    pub fn items(&self) -> Node<'a> {
        self.child(self.resolve().and_then(|s| s.get("items")))
    }

    /// How this list merges under server-side apply (atomic unless annotated).
    pub fn list_type(&self) -> ListType {
        match self.ext("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => ListType::Set,
            Some("map") => ListType::Map(
                self.ext("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|k| k.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            _ => ListType::Atomic,
        }
    }

    /// Whether this object is replaced as a whole (`x-kubernetes-map-type: atomic`).
    pub fn map_atomic(&self) -> bool {
        self.ext("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic")
    }

    /// The strategic-merge-patch strategy of this list or object (`merge`, `replace`, `retainKeys`).
    pub fn patch_strategy(&self) -> Option<&'a str> {
        self.ext("x-kubernetes-patch-strategy")
            .and_then(Value::as_str)
    }

    /// The strategic-merge-patch merge key of this list.
    pub fn patch_merge_key(&self) -> Option<&'a str> {
        self.ext("x-kubernetes-patch-merge-key")
            .and_then(Value::as_str)
    }
}

/// The definition name of a built-in kind.
pub fn builtin_def_name(group: &str, kind: &str) -> Option<String> {
    let prefix = match group {
        "" => "io.k8s.api.core.v1",
        "apps" => "io.k8s.api.apps.v1",
        "batch" => "io.k8s.api.batch.v1",
        "policy" => "io.k8s.api.policy.v1",
        "networking.k8s.io" => "io.k8s.api.networking.v1",
        "coordination.k8s.io" => "io.k8s.api.coordination.v1",
        "events.k8s.io" => "io.k8s.api.events.v1",
        "apiextensions.k8s.io" => "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1",
        _ => return None,
    };
    Some(format!("{prefix}.{kind}"))
}

/// (definition, property, list type, list-map keys, patch strategy, patch merge key).
type ListAnnotation = (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static str,
    &'static str,
);

/// The list annotations of the Kubernetes OpenAPI for the types used here.
#[rustfmt::skip]
const LIST_ANNOTATIONS: &[ListAnnotation] = &[
    ("io.k8s.api.core.v1.PodSpec", "containers", "map", &["name"], "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "initContainers", "map", &["name"], "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "ephemeralContainers", "map", &["name"], "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "volumes", "map", &["name"], "merge,retainKeys", "name"),
    ("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", "map", &["name"], "merge", "name"),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", "map", &["ip"], "merge", "ip"),
    ("io.k8s.api.core.v1.PodSpec", "topologySpreadConstraints", "map", &["topologyKey", "whenUnsatisfiable"], "merge", "topologyKey"),
    ("io.k8s.api.core.v1.PodSpec", "resourceClaims", "map", &["name"], "merge,retainKeys", "name"),
    ("io.k8s.api.core.v1.PodSpec", "schedulingGates", "map", &["name"], "merge", "name"),
    ("io.k8s.api.core.v1.Container", "ports", "map", &["containerPort", "protocol"], "merge", "containerPort"),
    ("io.k8s.api.core.v1.Container", "env", "map", &["name"], "merge", "name"),
    ("io.k8s.api.core.v1.Container", "volumeMounts", "map", &["mountPath"], "merge", "mountPath"),
    ("io.k8s.api.core.v1.Container", "volumeDevices", "map", &["devicePath"], "merge", "devicePath"),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", "map", &["port", "protocol"], "merge", "port"),
    ("io.k8s.api.core.v1.ServiceAccount", "secrets", "", &[], "merge", "name"),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "ownerReferences", "map", &["uid"], "merge", "uid"),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers", "set", &[], "merge", ""),
    ("io.k8s.api.core.v1.PodStatus", "conditions", "map", &["type"], "merge", "type"),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", "map", &["ip"], "merge", "ip"),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", "map", &["ip"], "merge", "ip"),
    ("io.k8s.api.core.v1.NamespaceStatus", "conditions", "map", &["type"], "merge", "type"),
    ("io.k8s.api.core.v1.ServiceStatus", "conditions", "map", &["type"], "merge", "type"),
    ("io.k8s.api.apps.v1.DeploymentStatus", "conditions", "map", &["type"], "merge", "type"),
    ("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", "map", &["type"], "merge", "type"),
    ("io.k8s.api.batch.v1.JobStatus", "conditions", "atomic", &[], "merge", "type"),
    ("io.k8s.api.policy.v1.PodDisruptionBudgetStatus", "conditions", "map", &["type"], "merge", "type"),
    ("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinitionStatus", "conditions", "map", &["type"], "merge", "type"),
];

/// The built-in definitions, generated once.
pub fn builtin_defs() -> &'static Map<String, Value> {
    static DEFS: OnceLock<Map<String, Value>> = OnceLock::new();
    DEFS.get_or_init(generate_builtin_defs)
}

fn generate_builtin_defs() -> Map<String, Value> {
    use k8s_openapi::api;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let mut roots = Vec::new();
    macro_rules! add {
        ($($t:ty => ($group:expr, $version:expr, $kind:expr)),* $(,)?) => {
            $( let _ = generator.subschema_for::<$t>(); roots.push(($group, $version, $kind)); )*
        };
    }
    add!(
        api::core::v1::Namespace => ("", "v1", "Namespace"),
        api::core::v1::Secret => ("", "v1", "Secret"),
        api::core::v1::ConfigMap => ("", "v1", "ConfigMap"),
        api::core::v1::Service => ("", "v1", "Service"),
        api::core::v1::ServiceAccount => ("", "v1", "ServiceAccount"),
        api::core::v1::Pod => ("", "v1", "Pod"),
        api::core::v1::Event => ("", "v1", "Event"),
        api::core::v1::ResourceQuota => ("", "v1", "ResourceQuota"),
        api::core::v1::LimitRange => ("", "v1", "LimitRange"),
        api::core::v1::PersistentVolumeClaim => ("", "v1", "PersistentVolumeClaim"),
        api::apps::v1::Deployment => ("apps", "v1", "Deployment"),
        api::apps::v1::ReplicaSet => ("apps", "v1", "ReplicaSet"),
        api::batch::v1::Job => ("batch", "v1", "Job"),
        api::policy::v1::PodDisruptionBudget => ("policy", "v1", "PodDisruptionBudget"),
        api::autoscaling::v2::HorizontalPodAutoscaler => ("autoscaling", "v2", "HorizontalPodAutoscaler"),
        api::networking::v1::NetworkPolicy => ("networking.k8s.io", "v1", "NetworkPolicy"),
        api::networking::v1::Ingress => ("networking.k8s.io", "v1", "Ingress"),
        api::coordination::v1::Lease => ("coordination.k8s.io", "v1", "Lease"),
        api::events::v1::Event => ("events.k8s.io", "v1", "Event"),
        apiext::CustomResourceDefinition => ("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
    );
    let mut defs = generator.take_definitions(true);
    for (def, prop, list_type, keys, strategy, merge_key) in LIST_ANNOTATIONS {
        let Some(p) = defs
            .get_mut(*def)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(*prop))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        if !list_type.is_empty() {
            p.insert("x-kubernetes-list-type".into(), json!(list_type));
        }
        if !keys.is_empty() {
            p.insert("x-kubernetes-list-map-keys".into(), json!(keys));
        }
        if !strategy.is_empty() {
            p.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
        }
        if !merge_key.is_empty() {
            p.insert("x-kubernetes-patch-merge-key".into(), json!(merge_key));
        }
    }
    for (group, version, kind) in roots {
        if let Some(name) = builtin_def_name(group, kind)
            && let Some(d) = defs.get_mut(&name).and_then(Value::as_object_mut)
        {
            d.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": group, "version": version, "kind": kind}]),
            );
        }
    }
    defs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_containers_are_a_map_list_keyed_by_name() {
        let shape = Shape::Builtin(builtin_def_name("apps", "Deployment"));
        let containers = shape
            .root()
            .field("spec")
            .field("template")
            .field("spec")
            .field("containers");
        assert_eq!(containers.list_type(), ListType::Map(vec!["name".into()]));
        assert_eq!(containers.patch_merge_key(), Some("name"));
        let ports = containers.items().field("ports");
        assert_eq!(ports.patch_merge_key(), Some("containerPort"));
        assert!(shape.root().field("metadata").is_struct());
        assert!(!shape.root().field("metadata").field("labels").is_struct());
        assert!(shape.root().field("metadata").is_declared("labels"));
        assert!(
            !shape
                .root()
                .field("metadata")
                .field("labels")
                .is_declared("app")
        );
    }

    #[test]
    fn finalizers_are_a_set() {
        let shape = Shape::Builtin(builtin_def_name("", "ConfigMap"));
        assert_eq!(
            shape
                .root()
                .field("metadata")
                .field("finalizers")
                .list_type(),
            ListType::Set
        );
    }
}
