//! API errors as `metav1.Status`, with the reasons, codes and message wording kube-apiserver uses.

use serde_json::{Value, json};

/// One entry of `details.causes`: a field-level reason for an `Invalid` (422) or `Conflict` error.
#[derive(Clone, Debug, PartialEq)]
pub struct Cause {
    /// Machine-readable reason, e.g. `FieldValueInvalid`, `FieldManagerConflict`.
    pub reason: String,
    /// Human-readable message, e.g. `Invalid value: -1: ... should be greater than or equal to 0`.
    pub message: String,
    /// The field path, e.g. `spec.api.replicas`.
    pub field: String,
}

/// `details` of a Status beyond the causes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Details {
    /// `details.name`.
    pub name: Option<String>,
    /// `details.group`.
    pub group: Option<String>,
    /// `details.kind` (kube-apiserver puts the resource or the kind here, depending on the error).
    pub kind: Option<String>,
    /// `details.retryAfterSeconds`.
    pub retry_after_seconds: Option<u32>,
}

/// An error answered as a `metav1.Status` object.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `metav1.StatusReason`, e.g. `NotFound`.
    pub reason: String,
    /// The message, in kube-apiserver's wording.
    pub message: String,
    /// `details.causes`.
    pub causes: Vec<Cause>,
    /// The rest of `details`.
    pub details: Box<Details>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.reason, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// `resource.group` as kube-apiserver prints a GroupResource (`pods`, `deployments.apps`).
pub fn group_resource(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason: reason.to_string(),
            message: message.into(),
            causes: Vec::new(),
            details: Box::default(),
        }
    }

    fn with_details(mut self, group: &str, kind: &str, name: &str) -> Self {
        self.details.group = Some(group.to_string());
        self.details.kind = Some(kind.to_string());
        self.details.name = Some(name.to_string());
        self
    }

    /// 404 `NotFound`: `deployments.apps "web" not found`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", group_resource(group, resource)),
        )
        .with_details(group, resource, name)
    }

    /// 404 `NotFound` for a path that names no resource.
    pub fn path_not_found(path: &str) -> Self {
        let _ = path;
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 409 `AlreadyExists`: `configmaps "x" already exists`.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!(
                "{} \"{name}\" already exists",
                group_resource(group, resource)
            ),
        )
        .with_details(group, resource, name)
    }

    /// 409 `Conflict`: `Operation cannot be fulfilled on deployments.apps "web": <detail>`.
    pub fn conflict(group: &str, resource: &str, name: &str, detail: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {detail}",
                group_resource(group, resource)
            ),
        )
        .with_details(group, resource, name)
    }

    /// 409 `Conflict` for an update whose resourceVersion is stale.
    pub fn stale(group: &str, resource: &str, name: &str) -> Self {
        Self::conflict(
            group,
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 `Invalid`: `Kind.group "name" is invalid: <causes>`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let rendered: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let aggregate = if rendered.len() == 1 {
            rendered.join("")
        } else {
            format!("[{}]", rendered.join(", "))
        };
        let mut err = Self::new(
            422,
            "Invalid",
            format!("{qualified} \"{name}\" is invalid: {aggregate}"),
        )
        .with_details(group, kind, name);
        err.causes = causes;
        err
    }

    /// 400 `BadRequest`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 403 `Forbidden`: `pods "x" is forbidden: <detail>`.
    pub fn forbidden(group: &str, resource: &str, name: &str, detail: &str) -> Self {
        Self::new(
            403,
            "Forbidden",
            format!(
                "{} \"{name}\" is forbidden: {detail}",
                group_resource(group, resource)
            ),
        )
        .with_details(group, resource, name)
    }

    /// 403 `Forbidden` for a request the authorizer denied, worded as `apierrors.NewForbidden`:
    /// `secrets "x" is forbidden: <detail>`, `secrets is forbidden: <detail>` without a name,
    /// `forbidden: <detail>` for a non-resource path.
    pub fn forbidden_request(
        group: &str,
        resource: &str,
        name: Option<&str>,
        detail: &str,
    ) -> Self {
        let message = match (resource.is_empty(), name) {
            (true, _) => format!("forbidden: {detail}"),
            (false, Some(name)) => format!(
                "{} \"{name}\" is forbidden: {detail}",
                group_resource(group, resource)
            ),
            (false, None) => format!("{} is forbidden: {detail}", group_resource(group, resource)),
        };
        Self::new(403, "Forbidden", message).with_details(group, resource, name.unwrap_or_default())
    }

    /// 401 `Unauthorized`: no credentials, or ones the server does not know.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 405 `MethodNotAllowed`.
    pub fn method_not_allowed(verb: &str, group: &str, resource: &str) -> Self {
        let _ = (group, resource);
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({verb})"),
        )
    }

    /// 410 `Expired` (HTTP Gone): a resourceVersion or continue token older than the history kept.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 415 `UnsupportedMediaType`.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    /// 406 `NotAcceptable`.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    /// 500 `InternalError`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    /// 500 with no reason (`StatusReasonUnknown`) and the bare message: how kube-apiserver answers
    /// an error its handlers did not turn into a `metav1.Status` (`ErrorToAPIStatus` in
    /// k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/status.go), e.g. server-side apply's
    /// `failed to create typed patch object`.
    pub fn unknown(message: impl Into<String>) -> Self {
        Self::new(500, "", message)
    }

    /// 429 `TooManyRequests`.
    pub fn too_many_requests(message: impl Into<String>) -> Self {
        let mut e = Self::new(429, "TooManyRequests", message);
        e.details.retry_after_seconds = Some(1);
        e
    }

    /// The `metav1.Status` object.
    pub fn to_status(&self) -> Value {
        let mut details = serde_json::Map::new();
        if let Some(name) = &self.details.name {
            details.insert("name".into(), json!(name));
        }
        if let Some(group) = &self.details.group
            && !group.is_empty()
        {
            details.insert("group".into(), json!(group));
        }
        if let Some(kind) = &self.details.kind {
            details.insert("kind".into(), json!(kind));
        }
        if !self.causes.is_empty() {
            details.insert(
                "causes".into(),
                Value::Array(
                    self.causes
                        .iter()
                        .map(
                            |c| json!({"reason": c.reason, "message": c.message, "field": c.field}),
                        )
                        .collect(),
                ),
            );
        }
        if let Some(secs) = self.details.retry_after_seconds {
            details.insert("retryAfterSeconds".into(), json!(secs));
        }
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if !details.is_empty()
            && let Some(obj) = status.as_object_mut()
        {
            obj.insert("details".into(), Value::Object(details));
        }
        status
    }
}

/// A `metav1.Status` of success, as answered for an immediate deletion.
pub fn success_status(group: &str, kind: &str, name: &str, uid: &str) -> Value {
    let mut details = json!({"name": name, "kind": kind, "uid": uid});
    if !group.is_empty()
        && let Some(obj) = details.as_object_mut()
    {
        obj.insert("group".into(), json!(group));
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_with_one_cause_is_not_bracketed() {
        let err = ApiError::invalid(
            "kumiko.so",
            "KumikoApp",
            "web",
            vec![Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value".into(),
                field: "spec.image".into(),
            }],
        );
        assert_eq!(
            err.message,
            "KumikoApp.kumiko.so \"web\" is invalid: spec.image: Required value"
        );
        assert_eq!(
            err.to_status()["details"]["causes"][0]["field"],
            "spec.image"
        );
    }

    #[test]
    fn not_found_names_the_group_resource() {
        let err = ApiError::not_found("apps", "deployments", "web");
        assert_eq!(err.message, "deployments.apps \"web\" not found");
        assert_eq!(err.to_status()["code"], 404);
    }
}
