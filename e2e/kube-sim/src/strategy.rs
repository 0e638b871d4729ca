//! Per-type behaviour of writes, as kube-apiserver's registry strategies: validation and defaults
//! (built-in or schema), status subresource handling, generation, deletion rules and the side
//! effects of creating or deleting namespaces, CRDs and pods.

use serde_json::{Value, json};

use crate::cluster::{Cluster, EventKind, State};
use crate::crd;
use crate::meta;
use crate::names::NameRule;
use crate::registry::{ResourceType, StoreKey, TypeSource};
use crate::status::{ApiError, Cause};
use crate::write::{self, FieldValidation, Propagation, WriteOptions};

/// An object that passed validation, with defaults applied and unknown fields dropped.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub object: Value,
    pub warnings: Vec<String>,
}

/// A field error as a `Cause` with the path and kube-apiserver's message body.
pub(crate) fn cause(reason: &str, field: &str, message: impl Into<String>) -> Cause {
    Cause {
        reason: reason.into(),
        message: message.into(),
        field: field.into(),
    }
}

/// The name rule of a kind.
pub(crate) fn name_rule(rt: &ResourceType) -> NameRule {
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Namespace") => NameRule::Label,
        ("", "Service") => NameRule::Dns1035,
        ("", "Event") | ("events.k8s.io", "Event") => NameRule::Subdomain,
        // pkg/apis/rbac/validation: ValidateRBACName is path.IsValidPathSegmentName
        // (`system:discovery` is a valid ClusterRole name).
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        _ => NameRule::Subdomain,
    }
}

fn unknown_fields_outcome(
    unknown: Vec<String>,
    fv: FieldValidation,
) -> Result<Vec<String>, ApiError> {
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    let rendered: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    match fv {
        FieldValidation::Strict => Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            rendered.join(", ")
        ))),
        FieldValidation::Warn => Ok(rendered),
        FieldValidation::Ignore => Ok(Vec::new()),
    }
}

/// The fields of an object its type does not declare.
pub(crate) fn unknown_fields(rt: &ResourceType, obj: &Value) -> Result<Vec<String>, ApiError> {
    match &rt.source {
        TypeSource::Custom(schema) => {
            Ok(kumiko_crds::validate::unknown_fields(&schema.schema, obj))
        }
        TypeSource::Builtin => crate::builtin::decode(rt, obj).map(|(_, unknown)| unknown),
    }
}

/// Validates and defaults an object about to be stored (create when `old` is None).
pub(crate) fn admit(
    state: &mut State,
    rt: &ResourceType,
    obj: Value,
    old: Option<&Value>,
    opts: &WriteOptions,
    subresource: Option<&str>,
) -> Result<Admitted, ApiError> {
    let name = meta::name(&obj).to_string();
    let mut causes = validate_object_meta(rt, &obj, old);
    let (mut object, unknown) = match &rt.source {
        TypeSource::Custom(schema) => {
            let v = schema
                .validator
                .validate(&obj, old, &rt.api_version(), &rt.kind);
            causes.extend(
                v.errors
                    .iter()
                    .map(|e| cause(e.reason(), &e.field, e.body())),
            );
            // CloudNativePG's validating webhook runs after the schema admitted the Cluster
            // (validating admission follows validation); kube-apiserver keeps its 422 and
            // prefixes the message with the webhook's name.
            if causes.is_empty()
                && rt.group == "postgresql.cnpg.io"
                && rt.kind == "Cluster"
                && subresource.is_none()
            {
                let denied = crate::controllers::cnpg::webhook_causes(&v.object);
                if !denied.is_empty() {
                    let mut error = ApiError::invalid(&rt.group, &rt.kind, &name, denied);
                    error.message = format!(
                        "admission webhook {:?} denied the request: {}",
                        crate::controllers::cnpg::VALIDATING_WEBHOOK,
                        error.message
                    );
                    return Err(error);
                }
            }
            (v.object, v.unknown_fields)
        }
        TypeSource::Builtin => {
            let (mut object, unknown) = crate::builtin::decode(rt, &obj)?;
            crate::builtin::default(state, rt, &mut object, old);
            causes.extend(crate::builtin::validate(rt, &object, old, subresource));
            (object, unknown)
        }
    };
    if !causes.is_empty() {
        return Err(ApiError::invalid(&rt.group, &rt.kind, &name, causes));
    }
    let warnings = unknown_fields_outcome(unknown, opts.field_validation)?;
    if let Some(m) = object.as_object_mut() {
        m.insert("apiVersion".into(), json!(rt.api_version()));
        m.insert("kind".into(), json!(rt.kind));
    }
    if rt.group == "events.k8s.io" && rt.kind == "Event" {
        object = crate::events::events_to_core(&object);
    }
    Ok(Admitted { object, warnings })
}

/// Validates a built-in object again after mutating admission changed it. kube-apiserver runs
/// mutating admission before the strategy's validation (the create and update handlers in
/// `k8s.io/apiserver/pkg/endpoints/handlers` admit, then `rest.BeforeCreate`/`BeforeUpdate`
/// validate), so a pod that LimitRanger's defaults made invalid, say a `default` memory limit
/// below the container's own memory request, is 422 Invalid, not stored.
pub(crate) fn validate_after_mutation(
    rt: &ResourceType,
    obj: &Value,
    old: Option<&Value>,
    subresource: Option<&str>,
) -> Result<(), ApiError> {
    if !matches!(rt.source, TypeSource::Builtin) {
        return Ok(());
    }
    let causes = crate::builtin::validate(rt, obj, old, subresource);
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            &rt.group,
            &rt.kind,
            meta::name(obj),
            causes,
        ))
    }
}

/// ObjectMeta validation shared by every kind (apimachinery `ValidateObjectMeta`).
fn validate_object_meta(rt: &ResourceType, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    let name = meta::name(obj);
    if old.is_none() {
        if let Err(msg) = name_rule(rt).check(name) {
            causes.push(cause(
                "FieldValueInvalid",
                "metadata.name",
                format!("Invalid value: {name:?}: {msg}"),
            ));
        }
        if rt.is_custom()
            && let Some(gn) = meta::meta_str(obj, "generateName")
            && !gn.is_empty()
            && meta::meta_str(obj, "name").is_none_or(str::is_empty)
        {
            // generateName is checked through the generated name.
        }
    }
    let meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    if let Some(labels) = meta.get("labels") {
        match labels.as_object() {
            Some(map) => {
                for (k, v) in map {
                    if let Err(msg) = crate::names::validate_qualified_name(k) {
                        causes.push(cause(
                            "FieldValueInvalid",
                            "metadata.labels",
                            format!("Invalid value: {k:?}: {msg}"),
                        ));
                    }
                    match v.as_str() {
                        Some(s) => {
                            if let Err(msg) = crate::names::validate_label_value(s) {
                                causes.push(cause(
                                    "FieldValueInvalid",
                                    &format!("metadata.labels[{k}]"),
                                    format!("Invalid value: {s:?}: {msg}"),
                                ));
                            }
                        }
                        None => causes.push(cause(
                            "FieldValueTypeInvalid",
                            &format!("metadata.labels[{k}]"),
                            "Invalid value: the label value must be a string".to_string(),
                        )),
                    }
                }
            }
            None if labels.is_null() => {}
            None => causes.push(cause(
                "FieldValueTypeInvalid",
                "metadata.labels",
                "Invalid value: labels must be an object of strings",
            )),
        }
    }
    if let Some(annotations) = meta.get("annotations").and_then(Value::as_object) {
        let mut total = 0usize;
        for (k, v) in annotations {
            total += k.len() + v.as_str().map_or(0, str::len);
            if let Err(msg) = crate::names::validate_qualified_name(&k.to_lowercase()) {
                causes.push(cause(
                    "FieldValueInvalid",
                    "metadata.annotations",
                    format!("Invalid value: {k:?}: {msg}"),
                ));
            }
            if !v.is_string() {
                causes.push(cause(
                    "FieldValueTypeInvalid",
                    &format!("metadata.annotations[{k}]"),
                    "Invalid value: the annotation value must be a string",
                ));
            }
        }
        if total > 256 * 1024 {
            causes.push(cause(
                "FieldValueTooLong",
                "metadata.annotations",
                "Too long: must have at most 262144 bytes",
            ));
        }
    }
    if let Some(fins) = meta.get("finalizers").and_then(Value::as_array) {
        for (i, f) in fins.iter().enumerate() {
            let s = f.as_str().unwrap_or_default();
            let standard = matches!(s, "kubernetes" | "orphan" | "foregroundDeletion");
            if !standard && let Err(msg) = crate::names::validate_qualified_name(s) {
                causes.push(cause(
                    "FieldValueInvalid",
                    &format!("metadata.finalizers[{i}]"),
                    format!("Invalid value: {s:?}: {msg}"),
                ));
            }
        }
    }
    if let Some(refs) = meta.get("ownerReferences").and_then(Value::as_array) {
        let mut controllers = 0;
        for (i, r) in refs.iter().enumerate() {
            for field in ["apiVersion", "kind", "name", "uid"] {
                if r.get(field)
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    let detail = match field {
                        "apiVersion" => "version must not be empty",
                        "kind" => "kind must not be empty",
                        "name" => "name must not be empty",
                        _ => "uid must not be empty",
                    };
                    causes.push(cause(
                        "FieldValueInvalid",
                        &format!("metadata.ownerReferences[{i}].{field}"),
                        format!("Invalid value: \"\": {detail}"),
                    ));
                }
            }
            if r.get("controller").and_then(Value::as_bool) == Some(true) {
                controllers += 1;
            }
        }
        if controllers > 1 {
            causes.push(cause(
                "FieldValueInvalid",
                "metadata.ownerReferences",
                "Invalid value: only one reference can have Controller set to true",
            ));
        }
    }
    causes
}

/// What the main endpoint and the status subresource take from a request body.
pub(crate) fn prepare_update(
    rt: &ResourceType,
    old: &Value,
    mut body: Value,
    subresource: Option<&str>,
) -> Value {
    match subresource {
        Some("status") => {
            // `/status` ignores everything but status (and managedFields, computed after).
            let mut new = old.clone();
            if let Some(m) = new.as_object_mut() {
                match body.get_mut("status").map(Value::take) {
                    Some(status) if !status.is_null() => {
                        m.insert("status".into(), status);
                    }
                    _ => {
                        m.remove("status");
                    }
                }
            }
            new
        }
        Some("finalize") => {
            let mut new = old.clone();
            let fins = body
                .get("spec")
                .and_then(|s| s.get("finalizers"))
                .cloned()
                .unwrap_or_else(|| json!([]));
            if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("finalizers".into(), fins);
            }
            new
        }
        _ => {
            if rt.status_subresource
                && let Some(m) = body.as_object_mut()
            {
                match old.get("status") {
                    Some(s) => {
                        m.insert("status".into(), s.clone());
                    }
                    None => {
                        m.remove("status");
                    }
                }
            }
            body
        }
    }
}

/// Whether an update changes what `metadata.generation` counts: the spec for built-ins; for
/// custom resources everything but metadata (and status, when it is a subresource).
pub(crate) fn spec_changed(rt: &ResourceType, old: &Value, new: &Value) -> bool {
    if rt.is_custom() {
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(m) = v.as_object_mut() {
                m.remove("metadata");
                m.remove("apiVersion");
                m.remove("kind");
                if rt.status_subresource {
                    m.remove("status");
                }
            }
            v
        };
        strip(old) != strip(new)
    } else {
        old.get("spec") != new.get("spec")
    }
}

/// Deletions kube-apiserver refuses outright.
pub(crate) fn check_delete(rt: &ResourceType, old: &Value) -> Result<(), ApiError> {
    let name = meta::name(old);
    if rt.group.is_empty()
        && rt.kind == "Namespace"
        && matches!(name, "default" | "kube-system" | "kube-public")
    {
        return Err(ApiError::forbidden(
            "",
            "namespaces",
            name,
            "this namespace may not be deleted",
        ));
    }
    Ok(())
}

/// The propagation policy when the request names none: `orphan` for batch/v1 Jobs (kept for
/// compatibility by Kubernetes), background for everything else.
pub(crate) fn default_propagation(rt: &ResourceType) -> Propagation {
    if rt.group == "batch" && rt.kind == "Job" {
        Propagation::Orphan
    } else {
        Propagation::Background
    }
}

/// The grace period of a deletion: pods bound to a node terminate gracefully
/// (`terminationGracePeriodSeconds`, default 30, unless the request says otherwise); unbound or
/// finished pods and every other kind go at once.
pub(crate) fn grace_period(rt: &ResourceType, old: &Value, requested: Option<i64>) -> i64 {
    if !(rt.group.is_empty() && rt.kind == "Pod") {
        return 0;
    }
    let bound = old
        .get("spec")
        .and_then(|s| s.get("nodeName"))
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let phase = old
        .get("status")
        .and_then(|s| s.get("phase"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !bound || phase == "Succeeded" || phase == "Failed" {
        return 0;
    }
    let grace = requested.unwrap_or_else(|| {
        old.get("spec")
            .and_then(|s| s.get("terminationGracePeriodSeconds"))
            .and_then(Value::as_i64)
            .unwrap_or(30)
    });
    // A grace period of 0 requested by a client is "immediately", 1 second at least for a kubelet.
    grace.max(0)
}

/// Changes made when an object starts deleting (namespaces become Terminating).
pub(crate) fn on_deleting(rt: &ResourceType, obj: &mut Value) {
    if rt.group.is_empty()
        && rt.kind == "Namespace"
        && let Some(m) = obj.as_object_mut()
    {
        let status = m.entry("status").or_insert_with(|| json!({}));
        if let Some(s) = status.as_object_mut() {
            s.insert("phase".into(), json!("Terminating"));
        }
    }
}

/// Side effects of a create: a Namespace gets its `default` ServiceAccount (the service account
/// controller's job), a CRD gets served and Established.
pub(crate) fn after_create(cl: &Cluster, state: &mut State, rt: &ResourceType, obj: &Value) {
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Namespace") => {
            let ns = meta::name(obj).to_string();
            if let Some(sa_rt) = state.registry.get("", "v1", "serviceaccounts").cloned() {
                let opts = WriteOptions {
                    manager: "kube-controller-manager".into(),
                    ..Default::default()
                };
                let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}});
                // It can only fail if it exists, which is fine.
                let _ = write::create_locked(cl, state, &sa_rt, &ns, sa, &opts, None);
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd::establish(cl, state, obj),
        _ => {}
    }
}

/// Side effects of an update: a changed CRD is served anew.
pub(crate) fn after_update(cl: &Cluster, state: &mut State, rt: &ResourceType, obj: &Value) {
    if rt.group == "apiextensions.k8s.io" && !meta::is_deleting(obj) {
        crd::establish(cl, state, obj);
    }
}

/// Side effects of an object going away.
pub(crate) fn after_delete(cl: &Cluster, state: &mut State, key: &StoreKey, obj: &Value) {
    match (key.group.as_str(), key.plural.as_str()) {
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            state.registry.remove_crd(meta::name(obj));
        }
        ("", "pods") => cl.logs.remove_pod(meta::namespace(obj), meta::name(obj)),
        _ => {}
    }
}

/// Stores a new status for an object (used by built-in controllers of the server itself).
pub(crate) fn set_status(
    cl: &Cluster,
    state: &mut State,
    key: &StoreKey,
    obj: &Value,
    status: Value,
) {
    let mut new = obj.clone();
    if let Some(m) = new.as_object_mut() {
        m.insert("status".into(), status);
    }
    if &new != obj {
        state.commit(&cl.events, key, new, EventKind::Modified, Some(obj.clone()));
    }
}
