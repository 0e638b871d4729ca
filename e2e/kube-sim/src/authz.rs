//! Authorization of each request, as kube-apiserver's handler chain does it after authentication:
//! impersonation (`Impersonate-User`, `Impersonate-Group`), then the RBAC decision
//! ([`crate::rbac`]) on the request's attributes, then 403 Forbidden with kube-apiserver's message.
//! Also the `authorization.k8s.io/v1` access reviews that `kubectl auth can-i` asks.
//!
//! The attributes follow `staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`:
//! the verb is `get`/`list`/`watch` for GET (by whether a name is given and `watch=true`),
//! `create` for POST, `update` for PUT, `patch` for PATCH, `delete`/`deletecollection` for DELETE;
//! a path outside `/api` and `/apis` is a non-resource request with the lower-case HTTP method as
//! verb. A server-side apply that creates its object needs `create` as well as `patch`
//! (`staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go`). The connect subresources
//! `pods/exec` and `pods/portforward` need the method's verb (`get` for a WebSocket upgrade) and
//! `create` as well (`crate::connect::authorization_requests`); the proxy subresources take the
//! method's verb.

use serde_json::{Value, json};

use crate::authn::AUTHENTICATED_GROUP;
use crate::cluster::Cluster;
use crate::rbac::{self, Decision, RbacObjects, Request, UserInfo};
use crate::status::ApiError;

/// The RBAC objects the cluster holds now.
pub fn rbac_objects(cluster: &Cluster) -> RbacObjects {
    let group = "rbac.authorization.k8s.io";
    RbacObjects::from_values(
        cluster.snapshot(group, "roles", None),
        cluster.snapshot(group, "clusterroles", None),
        cluster.snapshot(group, "rolebindings", None),
        cluster.snapshot(group, "clusterrolebindings", None),
    )
}

/// Whether `user` may do `request`.
pub fn allowed(cluster: &Cluster, user: &UserInfo, request: &Request) -> bool {
    if user.groups.iter().any(|group| group == rbac::MASTERS_GROUP) {
        return true;
    }
    matches!(
        rbac::authorize(user, request, &rbac_objects(cluster)),
        Decision::Allow(_)
    )
}

/// One authorization decision about a user other than a `system:masters` member, as the
/// authorization log keeps it: who asked for what, at which scope, and the answer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Decided {
    /// The user.
    pub user: String,
    /// The verb.
    pub verb: String,
    /// The API group (empty for core; `-` for a non-resource path).
    pub group: String,
    /// `resource` or `resource/subresource` (or the path of a non-resource request).
    pub resource: String,
    /// Whether the request was namespaced (`false`: the cluster scope).
    pub namespaced: bool,
    /// Whether it was allowed.
    pub allowed: bool,
}

impl Decided {
    fn of(user: &UserInfo, request: &Request, allowed: bool) -> Self {
        let (verb, group, resource, namespaced) = match request {
            Request::Resource {
                verb,
                group,
                resource,
                subresource,
                namespace,
                ..
            } => (
                verb.clone(),
                group.clone(),
                match subresource {
                    Some(subresource) => format!("{resource}/{subresource}"),
                    None => resource.clone(),
                },
                namespace.is_some(),
            ),
            Request::NonResource { verb, path } => {
                (verb.clone(), "-".to_owned(), path.clone(), false)
            }
        };
        Decided {
            user: user.name.clone(),
            verb,
            group,
            resource,
            namespaced,
            allowed,
        }
    }
}

/// `Ok` when `user` may do `request`, else the 403 kube-apiserver answers. Decisions about users
/// outside `system:masters` are kept in the cluster's authorization log.
pub fn check(cluster: &Cluster, user: &UserInfo, request: &Request) -> Result<(), ApiError> {
    let is_master = user.groups.iter().any(|group| group == rbac::MASTERS_GROUP);
    let allowed = allowed(cluster, user, request);
    if !is_master {
        cluster.record_decision(Decided::of(user, request, allowed));
    }
    if allowed {
        return Ok(());
    }
    let message = rbac::forbidden_message(user, request);
    Err(match request {
        Request::Resource {
            group,
            resource,
            subresource,
            name,
            ..
        } => {
            let _ = subresource;
            ApiError::forbidden_request(group, resource, name.as_deref(), &message)
        }
        Request::NonResource { .. } => ApiError::forbidden_request("", "", None, &message),
    })
}

/// The verb of a resource request.
pub fn resource_verb(method: &str, named: bool, watch: bool) -> &'static str {
    match (method, named) {
        ("GET" | "HEAD", false) if watch => "watch",
        ("GET" | "HEAD", false) => "list",
        ("GET" | "HEAD", true) if watch => "watch",
        ("GET" | "HEAD", true) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", false) => "deletecollection",
        ("DELETE", true) => "delete",
        _ => "unknown",
    }
}

/// A non-resource request for `path`.
pub fn non_resource(method: &str, path: &str) -> Request {
    Request::NonResource {
        verb: method.to_ascii_lowercase(),
        path: path.to_owned(),
    }
}

/// The user a request acts as: `user`, or the one it impersonates (`Impersonate-User`, with
/// `Impersonate-Group`s), once `user` is allowed to impersonate them (verb `impersonate` on
/// `users`, `serviceaccounts` or `groups`). Impersonating a ServiceAccount without groups gives it
/// its fixed groups; every impersonated user is in `system:authenticated`.
pub fn impersonate(
    cluster: &Cluster,
    user: UserInfo,
    as_user: Option<&str>,
    as_groups: &[String],
) -> Result<UserInfo, ApiError> {
    let Some(name) = as_user else {
        if as_groups.is_empty() {
            return Ok(user);
        }
        return Err(ApiError::new(
            500,
            "InternalError",
            "requested impersonation of groups without a user",
        ));
    };
    let service_account = name
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'));
    let target = match service_account {
        Some((namespace, account)) => Request::Resource {
            verb: "impersonate".to_owned(),
            group: String::new(),
            resource: "serviceaccounts".to_owned(),
            subresource: None,
            namespace: Some(namespace.to_owned()),
            name: Some(account.to_owned()),
        },
        None => Request::Resource {
            verb: "impersonate".to_owned(),
            group: String::new(),
            resource: "users".to_owned(),
            subresource: None,
            namespace: None,
            name: Some(name.to_owned()),
        },
    };
    check(cluster, &user, &target)?;
    for group in as_groups {
        check(
            cluster,
            &user,
            &Request::Resource {
                verb: "impersonate".to_owned(),
                group: String::new(),
                resource: "groups".to_owned(),
                subresource: None,
                namespace: None,
                name: Some(group.clone()),
            },
        )?;
    }
    let mut groups = as_groups.to_vec();
    if groups.is_empty()
        && let Some((namespace, _)) = service_account
    {
        groups = vec![
            "system:serviceaccounts".to_owned(),
            format!("system:serviceaccounts:{namespace}"),
        ];
    }
    if !groups.iter().any(|group| group == AUTHENTICATED_GROUP) {
        groups.push(AUTHENTICATED_GROUP.to_owned());
    }
    Ok(UserInfo {
        name: name.to_owned(),
        groups,
    })
}

/// Answers a `SelfSubjectAccessReview` (about `user`) or a `SubjectAccessReview` (about the user
/// its spec names): the review with `status.allowed`.
pub fn access_review(
    cluster: &Cluster,
    user: &UserInfo,
    kind: &str,
    review: &Value,
) -> Result<Value, ApiError> {
    let spec = review
        .get("spec")
        .ok_or_else(|| ApiError::bad_request("spec: Required value"))?;
    let subject = match kind {
        "SubjectAccessReview" => UserInfo {
            name: spec
                .get("user")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            groups: spec
                .get("groups")
                .and_then(Value::as_array)
                .map(|groups| {
                    groups
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        },
        _ => user.clone(),
    };
    let text = |attributes: &Value, key: &str| {
        attributes
            .get(key)
            .and_then(Value::as_str)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
    };
    let request = if let Some(attributes) = spec.get("resourceAttributes") {
        Request::Resource {
            verb: text(attributes, "verb").unwrap_or_default(),
            group: text(attributes, "group").unwrap_or_default(),
            resource: text(attributes, "resource").unwrap_or_default(),
            subresource: text(attributes, "subresource"),
            namespace: text(attributes, "namespace"),
            name: text(attributes, "name"),
        }
    } else if let Some(attributes) = spec.get("nonResourceAttributes") {
        Request::NonResource {
            verb: text(attributes, "verb").unwrap_or_default(),
            path: text(attributes, "path").unwrap_or_default(),
        }
    } else {
        return Err(ApiError::new(
            422,
            "Invalid",
            format!(
                "{kind}.authorization.k8s.io \"\" is invalid: spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified"
            ),
        ));
    };
    let decision = if subject
        .groups
        .iter()
        .any(|group| group == rbac::MASTERS_GROUP)
    {
        Decision::Allow(format!("group {:?}", rbac::MASTERS_GROUP))
    } else {
        rbac::authorize(&subject, &request, &rbac_objects(cluster))
    };
    let mut answer = review.clone();
    let status = match decision {
        Decision::Allow(by) => json!({"allowed": true, "reason": format!("RBAC: allowed by {by}")}),
        Decision::Deny => json!({"allowed": false}),
    };
    answer["status"] = status;
    answer["apiVersion"] = json!("authorization.k8s.io/v1");
    answer["kind"] = json!(kind);
    if answer.get("metadata").is_none() {
        answer["metadata"] = json!({});
    }
    Ok(answer)
}

/// The ClusterRoles and ClusterRoleBindings kube-apiserver bootstraps that every client relies
/// on (`plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go`): `cluster-admin` for
/// `system:masters`; discovery, public information and self-reviews for every authenticated user.
pub fn bootstrap_policy() -> Vec<(&'static str, Value)> {
    let role = |name: &str, rules: Value| {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "rules": rules
        })
    };
    let binding = |name: &str, group: &str| {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}]
        })
    };
    vec![
        (
            "clusterroles",
            role(
                "cluster-admin",
                json!([
                    {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                    {"nonResourceURLs": ["*"], "verbs": ["*"]}
                ]),
            ),
        ),
        (
            "clusterroles",
            role(
                "system:discovery",
                json!([{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
            ),
        ),
        (
            "clusterroles",
            role(
                "system:public-info-viewer",
                json!([{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
            ),
        ),
        (
            "clusterroles",
            role(
                "system:basic-user",
                json!([{"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]}]),
            ),
        ),
        (
            "clusterrolebindings",
            binding("cluster-admin", rbac::MASTERS_GROUP),
        ),
        (
            "clusterrolebindings",
            binding("system:discovery", AUTHENTICATED_GROUP),
        ),
        (
            "clusterrolebindings",
            binding("system:public-info-viewer", AUTHENTICATED_GROUP),
        ),
        (
            "clusterrolebindings",
            binding("system:basic-user", AUTHENTICATED_GROUP),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_follow_the_request_info_rules() {
        assert_eq!(resource_verb("GET", false, false), "list");
        assert_eq!(resource_verb("GET", false, true), "watch");
        assert_eq!(resource_verb("GET", true, false), "get");
        assert_eq!(resource_verb("POST", false, false), "create");
        assert_eq!(resource_verb("PATCH", true, false), "patch");
        assert_eq!(resource_verb("DELETE", false, false), "deletecollection");
        assert_eq!(
            non_resource("GET", "/version"),
            Request::NonResource {
                verb: "get".to_owned(),
                path: "/version".to_owned()
            }
        );
    }
}
