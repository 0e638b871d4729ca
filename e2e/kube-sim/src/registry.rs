//! The resource types the server serves: the built-in ones and those added by CustomResourceDefinitions.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

/// How a type's objects are validated and defaulted.
#[derive(Clone, Debug)]
pub enum TypeSource {
    /// A built-in type, handled by [`crate::builtin`].
    Builtin,
    /// A custom resource, validated against its CRD version's schema.
    Custom(Arc<CustomSchema>),
}

/// What a CRD version contributes: its schema, columns and subresources.
#[derive(Debug)]
pub struct CustomSchema {
    /// The CRD's name (`plural.group`).
    pub crd_name: String,
    /// The version's `schema.openAPIV3Schema`.
    pub schema: Value,
    /// The schema with its CEL rules compiled.
    pub validator: kumiko_crds::validate::SchemaValidator,
    /// The version's `additionalPrinterColumns`.
    pub printer_columns: Vec<Value>,
    /// The version's `subresources.scale` (`specReplicasPath`, ...), served by [`crate::scale`].
    pub scale: Option<Value>,
}

/// One served resource of one group/version.
#[derive(Clone, Debug)]
pub struct ResourceType {
    /// API group, empty for core.
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// List kind, e.g. `DeploymentList`.
    pub list_kind: String,
    /// Plural resource name, e.g. `deployments`.
    pub plural: String,
    /// Singular name, e.g. `deployment`.
    pub singular: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Short names, e.g. `deploy`.
    pub short_names: Vec<String>,
    /// Categories, e.g. `all`.
    pub categories: Vec<String>,
    /// Whether `/status` is a subresource (then the main endpoint ignores status).
    pub status_subresource: bool,
    /// Whether the type's objects carry `metadata.generation`.
    pub has_generation: bool,
    /// The version objects are stored at (the same for every served version of a CRD).
    pub storage_version: String,
    /// Built-in or custom.
    pub source: TypeSource,
}

impl ResourceType {
    /// `apiVersion` for this group/version (`v1`, `apps/v1`).
    pub fn api_version(&self) -> String {
        api_version(&self.group, &self.version)
    }

    /// The key objects are stored under (one store for all versions of a resource; core and
    /// events.k8s.io Events share one).
    pub fn store_key(&self) -> StoreKey {
        if self.group == "events.k8s.io" && self.plural == "events" {
            return StoreKey {
                group: String::new(),
                plural: "events".into(),
            };
        }
        StoreKey {
            group: self.group.clone(),
            plural: self.plural.clone(),
        }
    }

    /// Whether this is a custom resource.
    pub fn is_custom(&self) -> bool {
        matches!(self.source, TypeSource::Custom(_))
    }
}

/// `apiVersion` from group and version.
pub fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// Identifies the store of one resource (group + plural), independent of version.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StoreKey {
    /// API group.
    pub group: String,
    /// Plural resource name.
    pub plural: String,
}

/// All served types, by group, version and plural.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    types: BTreeMap<(String, String, String), ResourceType>,
    /// Group order as listed in `/apis` (built-ins first, then CRD groups as added).
    group_order: Vec<String>,
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    status: bool,
    generation: bool,
}

#[rustfmt::skip]
const BUILTINS: &[Builtin] = &[
    Builtin { group: "", version: "v1", kind: "Namespace", plural: "namespaces", namespaced: false, short_names: &["ns"], categories: &[], status: true, generation: false },
    Builtin { group: "", version: "v1", kind: "Secret", plural: "secrets", namespaced: true, short_names: &[], categories: &[], status: false, generation: false },
    Builtin { group: "", version: "v1", kind: "ConfigMap", plural: "configmaps", namespaced: true, short_names: &["cm"], categories: &[], status: false, generation: false },
    Builtin { group: "", version: "v1", kind: "Service", plural: "services", namespaced: true, short_names: &["svc"], categories: &["all"], status: true, generation: false },
    Builtin { group: "", version: "v1", kind: "ServiceAccount", plural: "serviceaccounts", namespaced: true, short_names: &["sa"], categories: &[], status: false, generation: false },
    Builtin { group: "", version: "v1", kind: "Pod", plural: "pods", namespaced: true, short_names: &["po"], categories: &["all"], status: true, generation: false },
    Builtin { group: "", version: "v1", kind: "Event", plural: "events", namespaced: true, short_names: &["ev"], categories: &[], status: false, generation: false },
    Builtin { group: "", version: "v1", kind: "ResourceQuota", plural: "resourcequotas", namespaced: true, short_names: &["quota"], categories: &[], status: true, generation: false },
    Builtin { group: "", version: "v1", kind: "PersistentVolumeClaim", plural: "persistentvolumeclaims", namespaced: true, short_names: &["pvc"], categories: &[], status: true, generation: false },
    Builtin { group: "", version: "v1", kind: "LimitRange", plural: "limitranges", namespaced: true, short_names: &["limits"], categories: &[], status: false, generation: false },
    Builtin { group: "apps", version: "v1", kind: "Deployment", plural: "deployments", namespaced: true, short_names: &["deploy"], categories: &["all"], status: true, generation: true },
    Builtin { group: "apps", version: "v1", kind: "ReplicaSet", plural: "replicasets", namespaced: true, short_names: &["rs"], categories: &["all"], status: true, generation: true },
    Builtin { group: "batch", version: "v1", kind: "Job", plural: "jobs", namespaced: true, short_names: &[], categories: &["all"], status: true, generation: true },
    Builtin { group: "policy", version: "v1", kind: "PodDisruptionBudget", plural: "poddisruptionbudgets", namespaced: true, short_names: &["pdb"], categories: &[], status: true, generation: true },
    Builtin { group: "autoscaling", version: "v2", kind: "HorizontalPodAutoscaler", plural: "horizontalpodautoscalers", namespaced: true, short_names: &["hpa"], categories: &["all"], status: true, generation: true },
    Builtin { group: "networking.k8s.io", version: "v1", kind: "Ingress", plural: "ingresses", namespaced: true, short_names: &["ing"], categories: &["all"], status: true, generation: true },
    Builtin { group: "networking.k8s.io", version: "v1", kind: "NetworkPolicy", plural: "networkpolicies", namespaced: true, short_names: &["netpol"], categories: &[], status: false, generation: true },
    Builtin { group: "rbac.authorization.k8s.io", version: "v1", kind: "Role", plural: "roles", namespaced: true, short_names: &[], categories: &[], status: false, generation: false },
    Builtin { group: "rbac.authorization.k8s.io", version: "v1", kind: "RoleBinding", plural: "rolebindings", namespaced: true, short_names: &[], categories: &[], status: false, generation: false },
    Builtin { group: "rbac.authorization.k8s.io", version: "v1", kind: "ClusterRole", plural: "clusterroles", namespaced: false, short_names: &[], categories: &[], status: false, generation: false },
    Builtin { group: "rbac.authorization.k8s.io", version: "v1", kind: "ClusterRoleBinding", plural: "clusterrolebindings", namespaced: false, short_names: &[], categories: &[], status: false, generation: false },
    Builtin { group: "coordination.k8s.io", version: "v1", kind: "Lease", plural: "leases", namespaced: true, short_names: &[], categories: &[], status: false, generation: false },
    Builtin { group: "events.k8s.io", version: "v1", kind: "Event", plural: "events", namespaced: true, short_names: &["ev"], categories: &[], status: false, generation: false },
    Builtin { group: "apiextensions.k8s.io", version: "v1", kind: "CustomResourceDefinition", plural: "customresourcedefinitions", namespaced: false, short_names: &["crd", "crds"], categories: &["api-extensions"], status: true, generation: true },
];

impl Registry {
    /// The registry of the built-in types.
    pub fn with_builtins() -> Self {
        let mut registry = Registry::default();
        for b in BUILTINS {
            registry.insert(ResourceType {
                group: b.group.into(),
                version: b.version.into(),
                kind: b.kind.into(),
                list_kind: format!("{}List", b.kind),
                plural: b.plural.into(),
                singular: b.kind.to_lowercase(),
                namespaced: b.namespaced,
                short_names: b.short_names.iter().map(|s| s.to_string()).collect(),
                categories: b.categories.iter().map(|s| s.to_string()).collect(),
                status_subresource: b.status,
                has_generation: b.generation,
                storage_version: b.version.into(),
                source: TypeSource::Builtin,
            });
        }
        registry
    }

    /// Adds or replaces one type.
    pub fn insert(&mut self, t: ResourceType) {
        if !t.group.is_empty() && !self.group_order.contains(&t.group) {
            self.group_order.push(t.group.clone());
        }
        self.types
            .insert((t.group.clone(), t.version.clone(), t.plural.clone()), t);
    }

    /// Removes every type a CRD contributed.
    pub fn remove_crd(&mut self, crd_name: &str) {
        self.types.retain(|_, t| match &t.source {
            TypeSource::Custom(s) => s.crd_name != crd_name,
            TypeSource::Builtin => true,
        });
        let groups: Vec<String> = self.types.values().map(|t| t.group.clone()).collect();
        self.group_order.retain(|g| groups.contains(g));
    }

    /// The type served at group/version/plural.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
    }

    /// The type of a storage key at its storage version.
    pub fn storage_type(&self, key: &StoreKey) -> Option<&ResourceType> {
        self.types.values().find(|t| {
            t.group == key.group && t.plural == key.plural && t.version == t.storage_version
        })
    }

    /// The type of an `apiVersion` + `kind` pair.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceType> {
        let (group, version) = split_api_version(api_version);
        self.types
            .values()
            .find(|t| t.group == group && t.version == version && t.kind == kind)
    }

    /// The groups other than core, in discovery order.
    pub fn groups(&self) -> &[String] {
        &self.group_order
    }

    /// The versions served for a group (sorted by Kubernetes version priority, highest first).
    pub fn versions(&self, group: &str) -> Vec<String> {
        let mut versions: Vec<String> = self
            .types
            .values()
            .filter(|t| t.group == group)
            .map(|t| t.version.clone())
            .collect();
        versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        versions.dedup();
        versions
    }

    /// The types served at one group/version.
    pub fn resources(&self, group: &str, version: &str) -> Vec<&ResourceType> {
        self.types
            .values()
            .filter(|t| t.group == group && t.version == version)
            .collect()
    }

    /// Every served type.
    pub fn all(&self) -> impl Iterator<Item = &ResourceType> {
        self.types.values()
    }
}

/// Splits `apps/v1` into (`apps`, `v1`) and `v1` into (``, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// Kubernetes version priority: GA > beta > alpha, then by numbers; non-matching strings last.
pub fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let Ok(major) = digits.parse::<u32>() else {
        return (0, 0, 0);
    };
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        return (3, major, 0);
    }
    let (level, num) = if let Some(n) = tail.strip_prefix("beta") {
        (2, n)
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n)
    } else {
        return (0, 0, 0);
    };
    match num.parse::<u32>() {
        Ok(minor) => (level, major, minor),
        Err(_) => (0, 0, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ga_versions_sort_before_beta_and_alpha() {
        let mut v = vec!["v1alpha1", "v2beta1", "v1", "v1beta2", "v2"];
        v.sort_by_key(|x| std::cmp::Reverse(version_priority(x)));
        assert_eq!(v, vec!["v2", "v1", "v2beta1", "v1beta2", "v1alpha1"]);
    }

    #[test]
    fn builtins_are_found_by_kind() {
        let r = Registry::with_builtins();
        assert_eq!(
            r.by_kind("apps/v1", "Deployment")
                .map(|t| t.plural.as_str()),
            Some("deployments")
        );
        assert!(r.get("", "v1", "pods").is_some_and(|t| t.namespaced));
    }
}
