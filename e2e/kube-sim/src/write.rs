//! Writes: create, update, patch (merge, JSON, strategic, apply), delete and deletecollection, with
//! the semantics of kube-apiserver's generic registry (see each function).

use serde_json::{Value, json};

use crate::admission::{AdmissionContext, AdmissionRequest, Operation};
use crate::cluster::{Cluster, EventKind, ListOptions, State, matches_selectors, render};
use crate::managed;
use crate::meta;
use crate::patch;
use crate::registry::{ResourceType, StoreKey};
use crate::status::{ApiError, Cause};
use crate::strategy;

/// `fieldValidation`: what to do with unknown or duplicate fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Reject the request (400).
    Strict,
    /// Drop the fields and answer with a `Warning` header (the server default).
    #[default]
    Warn,
    /// Drop the fields silently.
    Ignore,
}

impl FieldValidation {
    /// Parses the query parameter.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "Strict" => Ok(FieldValidation::Strict),
            "Warn" | "" => Ok(FieldValidation::Warn),
            "Ignore" => Ok(FieldValidation::Ignore),
            other => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {other:?}"
            ))),
        }
    }
}

/// Options shared by every write.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: everything but storing.
    pub dry_run: bool,
    /// The field manager: `fieldManager`, or the user agent's product name.
    pub manager: String,
    /// Whether `fieldManager` was given explicitly (apply requires it).
    pub manager_explicit: bool,
    /// `fieldValidation`.
    pub field_validation: FieldValidation,
    /// `force` (apply only).
    pub force: bool,
}

/// The result of a write.
#[derive(Clone, Debug)]
pub struct Written {
    /// The object as stored (or as it would be, for a dry run).
    pub object: Value,
    /// Warnings for the `Warning` header.
    pub warnings: Vec<String>,
    /// Whether the object was created (201) rather than updated (200).
    pub created: bool,
}

/// A patch format, from the request's `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// The patch type of a content type.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let ct = ct.split(';').next().unwrap_or_default().trim();
        match ct {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// `propagationPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    /// Delete now; dependents are garbage-collected afterwards.
    Background,
    /// Dependents first (`foregroundDeletion` finalizer), then the owner.
    Foreground,
    /// Keep dependents, removing their owner references (`orphan` finalizer).
    Orphan,
}

impl Propagation {
    /// Parses the parameter.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "Background" => Ok(Propagation::Background),
            "Foreground" => Ok(Propagation::Foreground),
            "Orphan" => Ok(Propagation::Orphan),
            other => Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
            ))),
        }
    }
}

/// `DeleteOptions`.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// `propagationPolicy` (None: the type's default).
    pub propagation: Option<Propagation>,
    /// `gracePeriodSeconds`.
    pub grace_period_seconds: Option<i64>,
    /// `preconditions.uid`.
    pub precondition_uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub precondition_rv: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

/// The result of a delete.
#[derive(Clone, Debug)]
pub enum Deleted {
    /// The object is gone; its last state.
    Gone(Value),
    /// The object is being deleted (finalizers or graceful termination pending); its state.
    Pending(Value),
}

pub(crate) const FOREGROUND: &str = "foregroundDeletion";
pub(crate) const ORPHAN: &str = "orphan";

impl Cluster {
    /// Creates an object (POST). Answers 409 AlreadyExists when the name is taken.
    pub fn create(
        &self,
        rt: &ResourceType,
        ns: &str,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let result = {
            let mut state = self.lock();
            create_locked(self, &mut state, rt, ns, body, opts, None)
        };
        self.gc_wake.notify_one();
        result
    }

    /// Replaces an object (PUT), or its status (`subresource = Some("status")`).
    pub fn update(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        body: Value,
        subresource: Option<&str>,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let result = {
            let mut state = self.lock();
            update_locked(self, &mut state, rt, ns, name, body, subresource, opts)
        };
        self.gc_wake.notify_one();
        result
    }

    /// Patches an object or its status.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        patch_type: PatchType,
        patch_body: &[u8],
        subresource: Option<&str>,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let result = {
            let mut state = self.lock();
            patch_locked(
                self,
                &mut state,
                rt,
                ns,
                name,
                patch_type,
                patch_body,
                subresource,
                opts,
            )
        };
        self.gc_wake.notify_one();
        result
    }

    /// Deletes an object.
    pub fn delete(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Deleted, ApiError> {
        let result = {
            let mut state = self.lock();
            delete_locked(self, &mut state, &rt.store_key(), ns, name, opts)
        };
        self.gc_wake.notify_one();
        result.map(|d| match d {
            Deleted::Gone(o) => Deleted::Gone(render(rt, &o)),
            Deleted::Pending(o) => Deleted::Pending(render(rt, &o)),
        })
    }

    /// Deletes every object matching the selectors (in one namespace, or all).
    pub fn delete_collection(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        list: &ListOptions,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let names: Vec<(String, String)> = {
            let state = self.lock();
            state
                .store(&rt.store_key())
                .map(|s| {
                    crate::cluster::in_scope(s, ns)
                        .filter(|o| matches_selectors(o, list))
                        .map(|o| (meta::namespace(o).to_owned(), meta::name(o).to_owned()))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut items = Vec::new();
        for (ons, name) in names {
            match self.delete(rt, &ons, &name, opts) {
                Ok(Deleted::Gone(o) | Deleted::Pending(o)) => items.push(o),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let rv = self.resource_version();
        Ok(json!({
            "kind": rt.list_kind,
            "apiVersion": rt.api_version(),
            "metadata": {"resourceVersion": rv.to_string()},
            "items": items,
        }))
    }
}

fn check_kind(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (expected a {} object)",
            rt.kind
        )));
    }
    let api_version = obj.get("apiVersion").and_then(Value::as_str);
    let kind = obj.get("kind").and_then(Value::as_str);
    if rt.is_custom() {
        if kind.is_none_or(str::is_empty) {
            return Err(ApiError::bad_request(format!(
                "Object 'Kind' is missing in '{}'",
                obj
            )));
        }
        if api_version.is_none_or(str::is_empty) {
            return Err(ApiError::bad_request(format!(
                "Object 'apiVersion' is missing in '{}'",
                obj
            )));
        }
    }
    if let Some(av) = api_version.filter(|s| !s.is_empty())
        && av != rt.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            rt.api_version()
        )));
    }
    if let Some(k) = kind.filter(|s| !s.is_empty())
        && k != rt.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            rt.kind
        )));
    }
    Ok(())
}

fn check_namespace(rt: &ResourceType, obj: &mut Value, ns: &str) -> Result<(), ApiError> {
    let meta = meta::meta_mut(obj);
    if rt.namespaced {
        match meta.get("namespace").and_then(Value::as_str) {
            Some(body_ns) if !body_ns.is_empty() && body_ns != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                meta.insert("namespace".into(), json!(ns));
            }
        }
    } else {
        meta.remove("namespace");
    }
    Ok(())
}

/// Namespace lifecycle admission: the namespace must exist and not be terminating.
fn check_namespace_lifecycle(
    state: &State,
    rt: &ResourceType,
    ns: &str,
    name: &str,
) -> Result<(), ApiError> {
    if !rt.namespaced {
        return Ok(());
    }
    let key = StoreKey {
        group: String::new(),
        plural: "namespaces".into(),
    };
    match state.get(&key, "", ns) {
        None => Err(ApiError::not_found("", "namespaces", ns)),
        Some(n) if meta::is_deleting(n) => Err(ApiError::forbidden(
            &rt.group,
            &rt.plural,
            name,
            &format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ),
        )),
        Some(_) => Ok(()),
    }
}

#[allow(clippy::too_many_arguments)]
fn run_admission(
    cl: &Cluster,
    state: &State,
    rt: &ResourceType,
    op: Operation,
    subresource: Option<&str>,
    obj: &mut Value,
    old: Option<&Value>,
    dry_run: bool,
) -> Result<Vec<(StoreKey, String, String, Value)>, ApiError> {
    let hooks = cl.admission.hooks();
    if hooks.is_empty() {
        return Ok(Vec::new());
    }
    let ns = meta::namespace(obj).to_string();
    let name = meta::name(obj).to_string();
    let mut ctx = AdmissionContext::new(state);
    for hook in hooks {
        let req = AdmissionRequest {
            operation: op,
            group: &rt.group,
            version: &rt.version,
            resource: &rt.plural,
            kind: &rt.kind,
            subresource,
            namespace: &ns,
            name: &name,
            old_object: old,
            dry_run,
        };
        hook.admit(&req, obj, &mut ctx)
            .map_err(|r| ApiError::forbidden(&rt.group, &rt.plural, &name, &r.message))?;
    }
    Ok(if dry_run {
        Vec::new()
    } else {
        ctx.status_updates
    })
}

fn apply_status_updates(
    cl: &Cluster,
    state: &mut State,
    updates: Vec<(StoreKey, String, String, Value)>,
) {
    for (key, ns, name, status) in updates {
        if let Some(old) = state.get(&key, &ns, &name).cloned() {
            let mut new = old.clone();
            if let Some(m) = new.as_object_mut() {
                m.insert("status".into(), status);
            }
            if new != old {
                state.commit(&cl.events, &key, new, EventKind::Modified, Some(old));
            }
        }
    }
}

/// Create, under the lock. `preset_managed` carries managedFields computed by server-side apply.
pub(crate) fn create_locked(
    cl: &Cluster,
    state: &mut State,
    rt: &ResourceType,
    ns: &str,
    mut obj: Value,
    opts: &WriteOptions,
    preset_managed: Option<Value>,
) -> Result<Written, ApiError> {
    check_kind(rt, &obj)?;
    check_namespace(rt, &mut obj, ns)?;
    let meta = meta::meta_mut(&mut obj);
    let mut name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if name.is_empty()
        && let Some(prefix) = meta.get("generateName").and_then(Value::as_str)
        && !prefix.is_empty()
    {
        let mut base = prefix.to_string();
        // kube-apiserver truncates the prefix so that the name fits 63 characters.
        base.truncate(58);
        name = format!("{base}{}", meta::random_suffix());
        meta.insert("name".into(), json!(name));
    }
    if name.is_empty() {
        return Err(ApiError::invalid(
            &rt.group,
            &rt.kind,
            "",
            vec![Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value: name or generateName is required".into(),
                field: "metadata.name".into(),
            }],
        ));
    }
    check_namespace_lifecycle(state, rt, ns, &name)?;
    let meta = meta::meta_mut(&mut obj);
    meta.insert("uid".into(), json!(meta::new_uid()));
    meta.insert("creationTimestamp".into(), json!(meta::now_rfc3339()));
    for f in [
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "resourceVersion",
        "selfLink",
    ] {
        meta.remove(f);
    }
    if rt.has_generation {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    meta.remove("managedFields");
    if rt.status_subresource
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    let admitted = strategy::admit(state, rt, obj, None, opts, None)?;
    let mut obj = admitted.object;
    let before_admission = obj.clone();
    let updates = run_admission(
        cl,
        state,
        rt,
        Operation::Create,
        None,
        &mut obj,
        None,
        opts.dry_run,
    )?;
    if obj != before_admission {
        strategy::validate_after_mutation(rt, &obj, None, None)?;
    }
    if state
        .get(&rt.store_key(), meta::namespace(&obj), &name)
        .is_some()
    {
        return Err(ApiError::already_exists(&rt.group, &rt.plural, &name));
    }
    match preset_managed {
        Some(mf) => {
            meta::meta_mut(&mut obj).insert("managedFields".into(), mf);
        }
        None => managed::record_update(None, &mut obj, &opts.manager, None, rt),
    }
    if opts.dry_run {
        return Ok(Written {
            object: render(rt, &obj),
            warnings: admitted.warnings,
            created: true,
        });
    }
    let stored = state.commit(&cl.events, &rt.store_key(), obj, EventKind::Added, None);
    apply_status_updates(cl, state, updates);
    strategy::after_create(cl, state, rt, &stored);
    Ok(Written {
        object: render(rt, &stored),
        warnings: admitted.warnings,
        created: true,
    })
}

fn get_old(state: &State, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
    state
        .get(&rt.store_key(), ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&rt.group, &rt.plural, name))
}

fn check_subresource(rt: &ResourceType, subresource: Option<&str>) -> Result<(), ApiError> {
    match subresource {
        None => Ok(()),
        Some("status") if rt.status_subresource => Ok(()),
        // Written by the scale handler ([`crate::scale`]): the whole object, its field
        // ownership recorded under the `scale` subresource as kube-apiserver records it.
        Some("scale") if crate::scale::scale_paths(rt).is_some() => Ok(()),
        Some(other) => Err(ApiError::path_not_found(other)),
    }
}

#[allow(clippy::too_many_arguments)]
fn update_locked(
    cl: &Cluster,
    state: &mut State,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    mut body: Value,
    subresource: Option<&str>,
    opts: &WriteOptions,
) -> Result<Written, ApiError> {
    check_subresource(rt, subresource)?;
    check_kind(rt, &body)?;
    check_namespace(rt, &mut body, ns)?;
    let body_name = meta::name(&body);
    if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let old = get_old(state, rt, ns, name)?;
    let body_rv = meta::meta_str(&body, "resourceVersion").unwrap_or_default();
    if !body_rv.is_empty() && body_rv != meta::meta_str(&old, "resourceVersion").unwrap_or_default()
    {
        return Err(ApiError::stale(&rt.group, &rt.plural, name));
    }
    let new = strategy::prepare_update(rt, &old, body, subresource);
    commit_update(cl, state, rt, old, new, subresource, opts, None)
}

/// The shared tail of update, patch and apply: system metadata, validation, generation,
/// admission, managed fields, no-op detection, storing, and completing a pending deletion.
#[allow(clippy::too_many_arguments)]
pub(crate) fn commit_update(
    cl: &Cluster,
    state: &mut State,
    rt: &ResourceType,
    old: Value,
    mut new: Value,
    subresource: Option<&str>,
    opts: &WriteOptions,
    preset_managed: Option<Value>,
) -> Result<Written, ApiError> {
    // System metadata is the server's.
    let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
    {
        let meta = meta::meta_mut(&mut new);
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
            "resourceVersion",
        ] {
            match old_meta.get(f) {
                Some(v) => {
                    meta.insert(f.into(), v.clone());
                }
                None => {
                    meta.remove(f);
                }
            }
        }
        meta.remove("selfLink");
    }
    if meta::is_deleting(&old) {
        let old_f = meta::finalizers(&old);
        let added: Vec<String> = meta::finalizers(&new)
            .into_iter()
            .filter(|f| !old_f.contains(f))
            .collect();
        if !added.is_empty() {
            return Err(ApiError::invalid(
                &rt.group,
                &rt.kind,
                meta::name(&old),
                vec![Cause {
                    reason: "FieldValueForbidden".into(),
                    message: format!(
                        "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                    ),
                    field: "metadata.finalizers".into(),
                }],
            ));
        }
    }
    let admitted = strategy::admit(state, rt, new, Some(&old), opts, subresource)?;
    let mut new = admitted.object;
    if rt.has_generation && strategy::spec_changed(rt, &old, &new) {
        let g = meta::generation(&old) + 1;
        meta::meta_mut(&mut new).insert("generation".into(), json!(g));
    }
    let before_admission = new.clone();
    let updates = run_admission(
        cl,
        state,
        rt,
        Operation::Update,
        subresource,
        &mut new,
        Some(&old),
        opts.dry_run,
    )?;
    if new != before_admission {
        strategy::validate_after_mutation(rt, &new, Some(&old), subresource)?;
    }
    match preset_managed {
        Some(mf) => {
            let meta = meta::meta_mut(&mut new);
            if mf.as_array().is_some_and(|a| a.is_empty()) {
                meta.remove("managedFields");
            } else {
                meta.insert("managedFields".into(), mf);
            }
        }
        None => managed::record_update(Some(&old), &mut new, &opts.manager, subresource, rt),
    }
    if new == old {
        // A no-op write changes nothing: same resourceVersion, no watch event.
        return Ok(Written {
            object: render(rt, &old),
            warnings: admitted.warnings,
            created: false,
        });
    }
    if opts.dry_run {
        return Ok(Written {
            object: render(rt, &new),
            warnings: admitted.warnings,
            created: false,
        });
    }
    let key = rt.store_key();
    if meta::is_deleting(&new) && deletion_can_complete(&new) {
        let gone = finalize_delete(cl, state, &key, new, Some(old));
        apply_status_updates(cl, state, updates);
        return Ok(Written {
            object: render(rt, &gone),
            warnings: admitted.warnings,
            created: false,
        });
    }
    let stored = state.commit(&cl.events, &key, new, EventKind::Modified, Some(old));
    apply_status_updates(cl, state, updates);
    strategy::after_update(cl, state, rt, &stored);
    Ok(Written {
        object: render(rt, &stored),
        warnings: admitted.warnings,
        created: false,
    })
}

/// Whether a deleting object can go: no finalizers left (metadata and, for namespaces, spec)
/// and no graceful termination pending.
pub(crate) fn deletion_can_complete(obj: &Value) -> bool {
    let grace_pending = obj
        .get("metadata")
        .and_then(|m| m.get("deletionGracePeriodSeconds"))
        .and_then(Value::as_i64)
        .is_some_and(|g| g > 0);
    let spec_finalizers = obj
        .get("spec")
        .and_then(|s| s.get("finalizers"))
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
        && obj.get("kind").and_then(Value::as_str) == Some("Namespace");
    meta::finalizers(obj).is_empty() && !grace_pending && !spec_finalizers
}

/// Removes an object for good (DELETED event) and runs the type's after-delete hook.
pub(crate) fn finalize_delete(
    cl: &Cluster,
    state: &mut State,
    key: &StoreKey,
    obj: Value,
    old: Option<Value>,
) -> Value {
    let old = old.or_else(|| Some(obj.clone()));
    let gone = state.commit(&cl.events, key, obj, EventKind::Deleted, old);
    strategy::after_delete(cl, state, key, &gone);
    cl.gc_wake.notify_one();
    gone
}

#[allow(clippy::too_many_arguments)]
fn patch_locked(
    cl: &Cluster,
    state: &mut State,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    patch_type: PatchType,
    patch_body: &[u8],
    subresource: Option<&str>,
    opts: &WriteOptions,
) -> Result<Written, ApiError> {
    check_subresource(rt, subresource)?;
    if patch_type == PatchType::Apply {
        return apply_locked(cl, state, rt, ns, name, patch_body, subresource, opts);
    }
    let old = get_old(state, rt, ns, name)?;
    let current = render(rt, &old);
    let patched = match patch_type {
        PatchType::Merge => patch::merge_patch(&current, &parse_json(patch_body)?),
        PatchType::Json => patch::json_patch(&current, &parse_json(patch_body)?)?,
        PatchType::Strategic => {
            if rt.is_custom() {
                return Err(ApiError::unsupported_media_type(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                ));
            }
            let shape = crate::shape::Shape::for_type(rt);
            patch::strategic_merge(&current, &parse_json(patch_body)?, &shape)?
        }
        PatchType::Apply => unreachable_apply(),
    };
    let mut patched = patched;
    check_kind(rt, &patched)?;
    check_namespace(rt, &mut patched, ns)?;
    if meta::name(&patched) != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            meta::name(&patched)
        )));
    }
    let patched_rv = meta::meta_str(&patched, "resourceVersion").unwrap_or_default();
    if !patched_rv.is_empty()
        && patched_rv != meta::meta_str(&old, "resourceVersion").unwrap_or_default()
    {
        return Err(ApiError::stale(&rt.group, &rt.plural, name));
    }
    let new = strategy::prepare_update(rt, &old, patched, subresource);
    commit_update(cl, state, rt, old, new, subresource, opts, None)
}

fn unreachable_apply() -> Value {
    // Apply patches are dispatched before this match; an empty object keeps the types simple.
    json!({})
}

pub(crate) fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
}

/// Parses an apply body: YAML (JSON is YAML).
fn parse_apply(body: &[u8]) -> Result<Value, ApiError> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return Ok(v);
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("error decoding YAML: the body is not UTF-8"))?;
    serde_saphyr::from_str::<Value>(text)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
}

#[allow(clippy::too_many_arguments)]
fn apply_locked(
    cl: &Cluster,
    state: &mut State,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    body: &[u8],
    subresource: Option<&str>,
    opts: &WriteOptions,
) -> Result<Written, ApiError> {
    if !opts.manager_explicit || opts.manager.is_empty() {
        return Err(ApiError::bad_request(
            "PATCH, application/apply-patch+yaml requires fieldManager to be set",
        ));
    }
    let mut applied = parse_apply(body)?;
    if !applied.is_object() {
        return Err(ApiError::bad_request(
            "the applied configuration must be an object",
        ));
    }
    let av = applied
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = applied
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if av.is_empty() || kind.is_empty() {
        return Err(ApiError::bad_request(
            "invalid object type: apiVersion and kind must be set in an applied configuration",
        ));
    }
    check_kind(rt, &applied)?;
    check_namespace(rt, &mut applied, ns)?;
    let applied_name = meta::name(&applied);
    if applied_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({applied_name}) does not match the name on the URL ({name})"
        )));
    }
    // What an apply may own: the status subresource only status, the main resource everything
    // but status (when status is a subresource).
    if let Some(m) = applied.as_object_mut() {
        if subresource == Some("status") {
            m.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
            if let Some(Value::Object(meta)) = m.get_mut("metadata") {
                meta.retain(|k, _| matches!(k.as_str(), "name" | "namespace"));
            }
        } else if rt.status_subresource {
            m.remove("status");
        }
    }
    // An applied configuration is converted to the type's schema: a field the schema does not
    // declare fails the apply whatever fieldValidation says.
    let unknown = crate::strategy::unknown_fields(rt, &applied)?;
    if !unknown.is_empty() {
        let fields: Vec<String> = unknown
            .iter()
            .map(|f| format!(".{f}: field not declared in schema"))
            .collect();
        return Err(ApiError::bad_request(format!(
            "failed to create typed patch object ({}, Kind={}): {}",
            rt.api_version(),
            rt.kind,
            fields.join(", ")
        )));
    }
    let shape = crate::shape::Shape::for_type(rt);
    // Repeated list-map keys fail the same conversion, as a plain error kube-apiserver answers
    // with 500 (structured-merge-diff's message; several are listed under `errors:`).
    let duplicates = managed::duplicate_list_map_keys(&applied, &shape);
    if !duplicates.is_empty() {
        let detail = match duplicates.as_slice() {
            [only] => only.clone(),
            many => format!("errors:\n  {}", many.join("\n  ")),
        };
        // `objectGVKNN` of k8s.io/apimachinery's managedfields: `namespace/name; group/version,
        // Kind=kind` (an empty namespace and group print as nothing).
        return Err(ApiError::unknown(format!(
            "failed to create typed patch object ({ns}/{name}; {}/{}, Kind={}): {detail}",
            rt.group, rt.version, rt.kind,
        )));
    }
    let live = state.get(&rt.store_key(), ns, name).cloned();
    match live {
        None => {
            if subresource.is_some() {
                return Err(ApiError::not_found(&rt.group, &rt.plural, name));
            }
            let outcome =
                managed::apply(None, &applied, &opts.manager, opts.force, None, &shape, rt)
                    .map_err(|c| conflict_error(rt, name, c))?;
            let mut obj = outcome.object;
            meta::meta_mut(&mut obj).remove("managedFields");
            create_locked(cl, state, rt, ns, obj, opts, Some(outcome.managed_fields))
        }
        Some(old) => {
            let current = render(rt, &old);
            let outcome = managed::apply(
                Some(&current),
                &applied,
                &opts.manager,
                opts.force,
                subresource,
                &shape,
                rt,
            )
            .map_err(|c| conflict_error(rt, name, c))?;
            let new = strategy::prepare_update(rt, &old, outcome.object, subresource);
            commit_update(
                cl,
                state,
                rt,
                old,
                new,
                subresource,
                opts,
                Some(outcome.managed_fields),
            )
        }
    }
}

fn conflict_error(rt: &ResourceType, name: &str, conflicts: Vec<managed::Conflict>) -> ApiError {
    let causes: Vec<Cause> = conflicts
        .iter()
        .map(|c| Cause {
            reason: "FieldManagerConflict".into(),
            message: format!("conflict with {}", c.manager_display()),
            field: c.field.clone(),
        })
        .collect();
    let message = if let [only] = conflicts.as_slice() {
        format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            only.manager_display(),
            only.field
        )
    } else {
        let mut by_manager: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
        for c in &conflicts {
            by_manager
                .entry(c.manager_display())
                .or_default()
                .push(&c.field);
        }
        let mut lines = Vec::new();
        for (manager, fields) in by_manager {
            lines.push(format!("conflicts with {manager}:"));
            lines.extend(fields.iter().map(|f| format!("- {f}")));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    let mut err = ApiError::conflict(&rt.group, &rt.plural, name, "");
    err.message = message;
    err.causes = causes;
    err
}

/// Delete, under the lock. Returns the object's state at the storage version.
pub(crate) fn delete_locked(
    cl: &Cluster,
    state: &mut State,
    key: &StoreKey,
    ns: &str,
    name: &str,
    opts: &DeleteOptions,
) -> Result<Deleted, ApiError> {
    let rt = state
        .registry
        .storage_type(key)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&key.group, &key.plural, name))?;
    let old = state
        .get(key, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&key.group, &key.plural, name))?;
    if let Some(uid) = &opts.precondition_uid
        && uid != meta::uid(&old)
    {
        return Err(ApiError::conflict(
            &key.group,
            &key.plural,
            name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta::uid(&old)
            ),
        ));
    }
    if let Some(rv) = &opts.precondition_rv
        && rv != meta::meta_str(&old, "resourceVersion").unwrap_or_default()
    {
        return Err(ApiError::conflict(
            &key.group,
            &key.plural,
            name,
            &format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                meta::meta_str(&old, "resourceVersion").unwrap_or_default()
            ),
        ));
    }
    strategy::check_delete(&rt, &old)?;
    let propagation = opts
        .propagation
        .unwrap_or_else(|| strategy::default_propagation(&rt));
    let mut new = old.clone();
    let mut finalizers = meta::finalizers(&new);
    // Finalizers for garbage collection, as the generic registry sets them.
    match propagation {
        Propagation::Orphan => {
            finalizers.retain(|f| f != FOREGROUND);
            if !finalizers.iter().any(|f| f == ORPHAN) {
                finalizers.push(ORPHAN.into());
            }
        }
        Propagation::Foreground => {
            finalizers.retain(|f| f != ORPHAN);
            if !finalizers.iter().any(|f| f == FOREGROUND) {
                finalizers.push(FOREGROUND.into());
            }
        }
        Propagation::Background => {
            // An explicit background delete drops pending GC finalizers; the default keeps them.
            if opts.propagation.is_some() {
                finalizers.retain(|f| f != ORPHAN && f != FOREGROUND);
            }
        }
    }
    meta::set_finalizers(&mut new, &finalizers);
    let grace = strategy::grace_period(&rt, &old, opts.grace_period_seconds);
    let already_deleting = meta::is_deleting(&old);
    {
        let now = jiff::Timestamp::now();
        let meta = meta::meta_mut(&mut new);
        let old_grace = meta
            .get("deletionGracePeriodSeconds")
            .and_then(Value::as_i64);
        if !already_deleting || old_grace.is_some_and(|g| grace < g) {
            let at = now + jiff::SignedDuration::from_secs(grace);
            meta.insert("deletionTimestamp".into(), json!(meta::format_time(at)));
            meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
        }
    }
    if rt.has_generation && !already_deleting {
        let g = meta::generation(&old) + 1;
        meta::meta_mut(&mut new).insert("generation".into(), json!(g));
    }
    strategy::on_deleting(&rt, &mut new);
    if opts.dry_run {
        return Ok(if deletion_can_complete(&new) {
            Deleted::Gone(new)
        } else {
            Deleted::Pending(new)
        });
    }
    if deletion_can_complete(&new) {
        let gone = finalize_delete(cl, state, key, new, Some(old));
        return Ok(Deleted::Gone(gone));
    }
    if new == old {
        return Ok(Deleted::Pending(old));
    }
    let stored = state.commit(&cl.events, key, new, EventKind::Modified, Some(old));
    cl.gc_wake.notify_one();
    Ok(Deleted::Pending(stored))
}
