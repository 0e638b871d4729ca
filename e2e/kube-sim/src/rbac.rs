//! Authorization as kube-apiserver's RBAC authorizer decides it (`--authorization-mode=RBAC`),
//! from the `rbac.authorization.k8s.io/v1` objects the cluster holds. Pure: the caller passes the
//! user, the request's attributes and a snapshot of the RBAC objects.
//!
//! The rules followed (Kubernetes documentation, "Using RBAC Authorization", and
//! `plugin/pkg/auth/authorizer/rbac` with `pkg/apis/rbac/v1/evaluation_helpers.go`):
//! - members of the group `system:masters` are allowed everything (kube-apiserver's privileged
//!   group, authorized before RBAC);
//! - a ClusterRoleBinding grants its ClusterRole's rules in every namespace and at the cluster
//!   scope; a RoleBinding grants its Role's (or ClusterRole's) rules in its own namespace only;
//! - a binding applies to a subject of kind `User` or `Group` by name, and of kind
//!   `ServiceAccount` to `system:serviceaccount:<namespace>:<name>` (the namespace defaults to the
//!   binding's);
//! - a rule matches a resource request when its `verbs` hold the verb (or `*`), its `apiGroups`
//!   the group (or `*`), its `resources` the resource, `resource/subresource`, `*` or
//!   `*/subresource`, and its `resourceNames` are empty or hold the requested name (a request
//!   without a name, such as list or create, never matches a rule with names);
//! - a rule matches a non-resource request (`/healthz`, `/version`) by its `nonResourceURLs`:
//!   equal, `*`, or a prefix ending in `*`;
//! - an aggregated ClusterRole (`aggregationRule`) has the rules of every ClusterRole whose labels
//!   match one of its selectors (the aggregation controller writes them into `rules` on a real
//!   cluster; here they are computed when asked);
//! - a binding to a role that does not exist grants nothing.
//!
//! A denied request is answered 403 with [`forbidden_message`], the text kube-apiserver writes
//! (`staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go`).

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

/// The group whose members bypass authorization.
pub const MASTERS_GROUP: &str = "system:masters";

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    /// The user name (`system:serviceaccount:ns:name` for a ServiceAccount).
    pub name: String,
    /// The groups (`system:authenticated`, `system:serviceaccounts`, ...).
    pub groups: Vec<String>,
}

/// What is asked, as the authorizer sees a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// A request for an API resource.
    Resource {
        /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`, ...
        verb: String,
        /// The API group (empty for core).
        group: String,
        /// The resource (plural).
        resource: String,
        /// The subresource (`status`, `log`, `finalizers`, ...).
        subresource: Option<String>,
        /// The namespace, for a namespaced request.
        namespace: Option<String>,
        /// The object's name, when the request names one.
        name: Option<String>,
    },
    /// A request for a path outside the resource tree (`/version`, `/healthz`, `/openapi/v3`).
    NonResource {
        /// `get`, `post`, ...
        verb: String,
        /// The path.
        path: String,
    },
}

/// The RBAC objects of a cluster.
#[derive(Clone, Debug, Default)]
pub struct RbacObjects {
    /// Roles, every namespace.
    pub roles: Vec<Role>,
    /// ClusterRoles.
    pub cluster_roles: Vec<ClusterRole>,
    /// RoleBindings, every namespace.
    pub role_bindings: Vec<RoleBinding>,
    /// ClusterRoleBindings.
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
}

impl RbacObjects {
    /// Reads the four kinds from stored objects (those that do not parse are left out, as the API
    /// server would never have stored them).
    pub fn from_values(
        roles: Vec<Value>,
        cluster_roles: Vec<Value>,
        role_bindings: Vec<Value>,
        cluster_role_bindings: Vec<Value>,
    ) -> Self {
        fn parse<T: serde::de::DeserializeOwned>(values: Vec<Value>) -> Vec<T> {
            values
                .into_iter()
                .filter_map(|value| serde_json::from_value(value).ok())
                .collect()
        }
        RbacObjects {
            roles: parse(roles),
            cluster_roles: parse(cluster_roles),
            role_bindings: parse(role_bindings),
            cluster_role_bindings: parse(cluster_role_bindings),
        }
    }

    fn cluster_role(&self, name: &str) -> Option<&ClusterRole> {
        self.cluster_roles
            .iter()
            .find(|role| role.metadata.name.as_deref() == Some(name))
    }

    /// The effective rules of a ClusterRole: its own, or for an aggregated one the rules of every
    /// ClusterRole its selectors match.
    fn cluster_role_rules(&self, name: &str) -> Vec<&PolicyRule> {
        let Some(role) = self.cluster_role(name) else {
            return Vec::new();
        };
        match role
            .aggregation_rule
            .as_ref()
            .and_then(|rule| rule.cluster_role_selectors.as_ref())
        {
            Some(selectors) => self
                .cluster_roles
                .iter()
                .filter(|other| other.metadata.name.as_deref() != Some(name))
                .filter(|other| {
                    selectors
                        .iter()
                        .any(|selector| selector_matches(selector, &other.metadata.labels))
                })
                .flat_map(|other| other.rules.iter().flatten())
                .collect(),
            None => role.rules.iter().flatten().collect(),
        }
    }

    fn role_rules(&self, namespace: &str, name: &str) -> Vec<&PolicyRule> {
        self.roles
            .iter()
            .filter(|role| {
                role.metadata.namespace.as_deref() == Some(namespace)
                    && role.metadata.name.as_deref() == Some(name)
            })
            .flat_map(|role| role.rules.iter().flatten())
            .collect()
    }
}

/// The authorizer's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; says by what (the binding and role, or the privileged group).
    Allow(String),
    /// Not allowed by any binding.
    Deny,
}

/// Decides `request` by `user` against `rbac`.
pub fn authorize(user: &UserInfo, request: &Request, rbac: &RbacObjects) -> Decision {
    if user.groups.iter().any(|group| group == MASTERS_GROUP) {
        return Decision::Allow(format!("group {MASTERS_GROUP:?}"));
    }
    for binding in &rbac.cluster_role_bindings {
        if !binding
            .subjects
            .iter()
            .flatten()
            .any(|subject| applies_to(subject, user, ""))
        {
            continue;
        }
        let rules = match binding.role_ref.kind.as_str() {
            "ClusterRole" => rbac.cluster_role_rules(&binding.role_ref.name),
            _ => Vec::new(),
        };
        if rules.iter().any(|rule| rule_allows(rule, request)) {
            return Decision::Allow(format!(
                "ClusterRoleBinding {:?} of ClusterRole {:?}",
                binding.metadata.name.as_deref().unwrap_or_default(),
                binding.role_ref.name
            ));
        }
    }
    let Request::Resource {
        namespace: Some(namespace),
        ..
    } = request
    else {
        return Decision::Deny;
    };
    for binding in rbac
        .role_bindings
        .iter()
        .filter(|binding| binding.metadata.namespace.as_deref() == Some(namespace.as_str()))
    {
        if !binding
            .subjects
            .iter()
            .flatten()
            .any(|subject| applies_to(subject, user, namespace))
        {
            continue;
        }
        let rules = match binding.role_ref.kind.as_str() {
            "ClusterRole" => rbac.cluster_role_rules(&binding.role_ref.name),
            "Role" => rbac.role_rules(namespace, &binding.role_ref.name),
            _ => Vec::new(),
        };
        if rules.iter().any(|rule| rule_allows(rule, request)) {
            return Decision::Allow(format!(
                "RoleBinding {namespace}/{} of {} {:?}",
                binding.metadata.name.as_deref().unwrap_or_default(),
                binding.role_ref.kind,
                binding.role_ref.name
            ));
        }
    }
    Decision::Deny
}

/// Whether a binding's `subject` is `user` (`binding_namespace`: where a RoleBinding lives, empty
/// for a ClusterRoleBinding).
fn applies_to(subject: &Subject, user: &UserInfo, binding_namespace: &str) -> bool {
    match subject.kind.as_str() {
        "User" => subject.name == user.name,
        "Group" => user.groups.contains(&subject.name),
        "ServiceAccount" => {
            let namespace = subject
                .namespace
                .as_deref()
                .filter(|namespace| !namespace.is_empty())
                .unwrap_or(binding_namespace);
            user.name == service_account_user(namespace, &subject.name)
        }
        _ => false,
    }
}

/// The user name of a ServiceAccount.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

fn has(list: &Option<Vec<String>>, value: &str) -> bool {
    list.iter()
        .flatten()
        .any(|item| item == "*" || item == value)
}

/// Whether one rule allows the request.
pub fn rule_allows(rule: &PolicyRule, request: &Request) -> bool {
    match request {
        Request::Resource {
            verb,
            group,
            resource,
            subresource,
            name,
            ..
        } => {
            has(&Some(rule.verbs.clone()), verb)
                && has(&rule.api_groups, group)
                && resource_matches(rule, resource, subresource.as_deref())
                && match rule.resource_names.as_deref() {
                    None | Some([]) => true,
                    Some(names) => name.as_ref().is_some_and(|name| names.contains(name)),
                }
        }
        Request::NonResource { verb, path } => {
            has(&Some(rule.verbs.clone()), verb)
                && rule.non_resource_urls.iter().flatten().any(|url| {
                    url == "*"
                        || url == path
                        || url
                            .strip_suffix('*')
                            .is_some_and(|prefix| path.starts_with(prefix))
                })
        }
    }
}

fn resource_matches(rule: &PolicyRule, resource: &str, subresource: Option<&str>) -> bool {
    let combined = match subresource {
        Some(subresource) => format!("{resource}/{subresource}"),
        None => resource.to_owned(),
    };
    rule.resources.iter().flatten().any(|rule_resource| {
        rule_resource == "*"
            || *rule_resource == combined
            || subresource
                .is_some_and(|subresource| rule_resource.strip_prefix("*/") == Some(subresource))
    })
}

/// Whether a label selector (`matchLabels`, `matchExpressions`) matches `labels`. An empty
/// selector matches everything.
fn selector_matches(
    selector: &LabelSelector,
    labels: &Option<std::collections::BTreeMap<String, String>>,
) -> bool {
    let get = |key: &str| labels.as_ref().and_then(|labels| labels.get(key));
    let by_label = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| get(key) == Some(value));
    let by_expression = selector
        .match_expressions
        .iter()
        .flatten()
        .all(|expression| {
            let values = expression.values.as_deref().unwrap_or_default();
            let value = get(&expression.key);
            match expression.operator.as_str() {
                "In" => value.is_some_and(|value| values.contains(value)),
                "NotIn" => value.is_none_or(|value| !values.contains(value)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        });
    by_label && by_expression
}

/// The message of the 403 kube-apiserver answers a denied request with.
pub fn forbidden_message(user: &UserInfo, request: &Request) -> String {
    match request {
        Request::NonResource { verb, path } => {
            format!("User {:?} cannot {verb} path {path:?}", user.name)
        }
        Request::Resource {
            verb,
            group,
            resource,
            subresource,
            namespace,
            ..
        } => {
            let resource = match subresource {
                Some(subresource) => format!("{resource}/{subresource}"),
                None => resource.clone(),
            };
            match namespace {
                Some(namespace) => format!(
                    "User {:?} cannot {verb} resource {resource:?} in API group {group:?} in the namespace {namespace:?}",
                    user.name
                ),
                None => format!(
                    "User {:?} cannot {verb} resource {resource:?} in API group {group:?} at the cluster scope",
                    user.name
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service_account() -> UserInfo {
        UserInfo {
            name: "system:serviceaccount:kumiko-system:kumiko-operator".to_owned(),
            groups: vec![
                "system:serviceaccounts".to_owned(),
                "system:serviceaccounts:kumiko-system".to_owned(),
                "system:authenticated".to_owned(),
            ],
        }
    }

    fn request(verb: &str, group: &str, resource: &str, namespace: Option<&str>) -> Request {
        Request::Resource {
            verb: verb.to_owned(),
            group: group.to_owned(),
            resource: resource.to_owned(),
            subresource: None,
            namespace: namespace.map(str::to_owned),
            name: None,
        }
    }

    fn with_subresource(request: Request, sub: &str) -> Request {
        match request {
            Request::Resource {
                verb,
                group,
                resource,
                namespace,
                name,
                ..
            } => Request::Resource {
                verb,
                group,
                resource,
                subresource: Some(sub.to_owned()),
                namespace,
                name,
            },
            other => other,
        }
    }

    fn named(request: Request, object: &str) -> Request {
        match request {
            Request::Resource {
                verb,
                group,
                resource,
                subresource,
                namespace,
                ..
            } => Request::Resource {
                verb,
                group,
                resource,
                subresource,
                namespace,
                name: Some(object.to_owned()),
            },
            other => other,
        }
    }

    /// The operator's ServiceAccount bound cluster-wide to a ClusterRole with `rules`, and in
    /// kumiko-system to a Role with `role_rules`.
    fn objects(rules: Value, role_rules: Value) -> RbacObjects {
        RbacObjects::from_values(
            vec![
                json!({"metadata": {"name": "leader", "namespace": "kumiko-system"}, "rules": role_rules}),
            ],
            vec![json!({"metadata": {"name": "operator"}, "rules": rules})],
            vec![json!({
                "metadata": {"name": "leader", "namespace": "kumiko-system"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "leader"},
                "subjects": [{"kind": "ServiceAccount", "name": "kumiko-operator"}]
            })],
            vec![json!({
                "metadata": {"name": "operator"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "operator"},
                "subjects": [{"kind": "ServiceAccount", "name": "kumiko-operator", "namespace": "kumiko-system"}]
            })],
        )
    }

    fn allowed(user: &UserInfo, request: &Request, rbac: &RbacObjects) -> bool {
        matches!(authorize(user, request, rbac), Decision::Allow(_))
    }

    #[test]
    fn a_cluster_role_binding_grants_its_rules_in_every_namespace_and_the_cluster_scope() {
        let rbac = objects(
            json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]}]),
            json!([]),
        );
        let user = service_account();
        assert!(allowed(&user, &request("list", "", "secrets", None), &rbac));
        assert!(allowed(
            &user,
            &request("watch", "", "secrets", Some("shop")),
            &rbac
        ));
        assert!(!allowed(
            &user,
            &request("delete", "", "secrets", Some("shop")),
            &rbac
        ));
        assert!(
            !allowed(&user, &request("list", "apps", "secrets", None), &rbac),
            "another group"
        );
        assert!(!allowed(
            &user,
            &request("list", "", "configmaps", None),
            &rbac
        ));
    }

    #[test]
    fn a_role_binding_grants_only_in_its_namespace() {
        let rbac = objects(
            json!([]),
            json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "update"]}]),
        );
        let user = service_account();
        let lease = request(
            "update",
            "coordination.k8s.io",
            "leases",
            Some("kumiko-system"),
        );
        assert!(
            allowed(&user, &lease, &rbac),
            "the binding's namespace defaults the subject's"
        );
        let elsewhere = request("update", "coordination.k8s.io", "leases", Some("default"));
        assert!(!allowed(&user, &elsewhere, &rbac));
        let cluster_wide = request("list", "coordination.k8s.io", "leases", None);
        assert!(!allowed(&user, &cluster_wide, &rbac));
    }

    #[test]
    fn subresources_must_be_named_or_matched_by_a_star() {
        let rbac = objects(
            json!([
                {"apiGroups": ["kumiko.so"], "resources": ["kumikoapps"], "verbs": ["patch"]},
                {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
                {"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["update"]}
            ]),
            json!([]),
        );
        let user = service_account();
        let status = with_subresource(
            request("patch", "kumiko.so", "kumikoapps", Some("shop")),
            "status",
        );
        assert!(
            !allowed(&user, &status, &rbac),
            "kumikoapps does not grant kumikoapps/status"
        );
        let log = with_subresource(request("get", "", "pods", Some("shop")), "log");
        assert!(allowed(&user, &log, &rbac));
        assert!(
            !allowed(&user, &request("get", "", "pods", Some("shop")), &rbac),
            "pods/log is not pods"
        );
        let scale = with_subresource(
            request("update", "apps", "deployments", Some("shop")),
            "scale",
        );
        assert!(allowed(&user, &scale, &rbac));
    }

    #[test]
    fn resource_names_restrict_requests_that_name_an_object_only() {
        let rbac = objects(
            json!([]),
            json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["kumiko-operator"], "verbs": ["get", "create"]}]),
        );
        let user = service_account();
        let get = request(
            "get",
            "coordination.k8s.io",
            "leases",
            Some("kumiko-system"),
        );
        assert!(allowed(
            &user,
            &named(get.clone(), "kumiko-operator"),
            &rbac
        ));
        assert!(!allowed(&user, &named(get, "other"), &rbac));
        let create = request(
            "create",
            "coordination.k8s.io",
            "leases",
            Some("kumiko-system"),
        );
        assert!(
            !allowed(&user, &create, &rbac),
            "create names no object: resourceNames cannot allow it"
        );
    }

    #[test]
    fn aggregated_cluster_roles_take_the_rules_of_the_roles_their_selectors_match() {
        let rbac = RbacObjects::from_values(
            vec![],
            vec![
                json!({"metadata": {"name": "view"}, "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"rbac.example/aggregate-to-view": "true"}}]}, "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}),
                json!({"metadata": {"name": "kumiko-view", "labels": {"rbac.example/aggregate-to-view": "true"}}, "rules": [{"apiGroups": ["kumiko.so"], "resources": ["kumikoapps"], "verbs": ["get", "list"]}]}),
                json!({"metadata": {"name": "unrelated"}, "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}),
            ],
            vec![],
            vec![
                json!({"metadata": {"name": "viewers"}, "roleRef": {"kind": "ClusterRole", "name": "view", "apiGroup": "rbac.authorization.k8s.io"}, "subjects": [{"kind": "Group", "name": "viewers", "apiGroup": "rbac.authorization.k8s.io"}]}),
            ],
        );
        let user = UserInfo {
            name: "jane".to_owned(),
            groups: vec!["viewers".to_owned()],
        };
        assert!(allowed(
            &user,
            &request("list", "kumiko.so", "kumikoapps", Some("shop")),
            &rbac
        ));
        assert!(
            !allowed(&user, &request("get", "", "secrets", Some("shop")), &rbac),
            "only what the matched roles grant (the aggregated role's own rules are replaced)"
        );
    }

    #[test]
    fn users_groups_and_the_privileged_group() {
        let rbac = RbacObjects::from_values(
            vec![],
            vec![
                json!({"metadata": {"name": "discovery"}, "rules": [{"nonResourceURLs": ["/version", "/apis/*"], "verbs": ["get"]}]}),
            ],
            vec![],
            vec![
                json!({"metadata": {"name": "discovery"}, "roleRef": {"kind": "ClusterRole", "name": "discovery", "apiGroup": "rbac.authorization.k8s.io"}, "subjects": [{"kind": "Group", "name": "system:authenticated", "apiGroup": "rbac.authorization.k8s.io"}]}),
            ],
        );
        let user = service_account();
        let path = |path: &str| Request::NonResource {
            verb: "get".to_owned(),
            path: path.to_owned(),
        };
        assert!(allowed(&user, &path("/version"), &rbac));
        assert!(allowed(&user, &path("/apis/apps"), &rbac));
        assert!(!allowed(&user, &path("/healthz"), &rbac));
        let admin = UserInfo {
            name: "kube-sim-admin".to_owned(),
            groups: vec![MASTERS_GROUP.to_owned()],
        };
        assert!(allowed(
            &admin,
            &request("delete", "", "secrets", None),
            &rbac
        ));
        assert!(allowed(&admin, &path("/healthz"), &rbac));
    }

    #[test]
    fn a_binding_to_a_missing_role_grants_nothing() {
        let rbac = RbacObjects::from_values(
            vec![],
            vec![],
            vec![
                json!({"metadata": {"name": "b", "namespace": "shop"}, "roleRef": {"kind": "Role", "name": "missing", "apiGroup": "rbac.authorization.k8s.io"}, "subjects": [{"kind": "User", "name": "jane", "apiGroup": "rbac.authorization.k8s.io"}]}),
            ],
            vec![],
        );
        let user = UserInfo {
            name: "jane".to_owned(),
            groups: vec![],
        };
        assert!(!allowed(
            &user,
            &request("get", "", "pods", Some("shop")),
            &rbac
        ));
    }

    #[test]
    fn denials_are_worded_as_kube_apiserver_words_them() {
        let user = service_account();
        assert_eq!(
            forbidden_message(&user, &request("list", "", "secrets", Some("shop"))),
            "User \"system:serviceaccount:kumiko-system:kumiko-operator\" cannot list resource \"secrets\" in API group \"\" in the namespace \"shop\""
        );
        assert_eq!(
            forbidden_message(
                &user,
                &with_subresource(request("patch", "kumiko.so", "kumikoapps", None), "status")
            ),
            "User \"system:serviceaccount:kumiko-system:kumiko-operator\" cannot patch resource \"kumikoapps/status\" in API group \"kumiko.so\" at the cluster scope"
        );
        assert_eq!(
            forbidden_message(
                &user,
                &Request::NonResource {
                    verb: "get".to_owned(),
                    path: "/healthz".to_owned()
                }
            ),
            "User \"system:serviceaccount:kumiko-system:kumiko-operator\" cannot get path \"/healthz\""
        );
    }
}
