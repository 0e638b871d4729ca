//! Validation of an object against a CRD version's structural schema, the way kube-apiserver does
//! it for custom resources: unknown fields pruned (and reported), defaults applied, OpenAPI value
//! validations (type, required, enum, pattern, bounds, lengths, item counts, formats, list-type
//! uniqueness, embedded resources), then the `x-kubernetes-validations` CEL rules with `oldSelf`
//! on updates.
//!
//! Errors carry the field path and kube-apiserver's wording, e.g.
//! `spec.api.replicas: Invalid value: -1: spec.api.replicas in body should be greater than or equal to 0`.
//!
//! On updates, validation ratchets as kube-apiserver 1.30+ does (CRDValidationRatcheting): a value
//! that is unchanged from the old object is not re-validated, so an object made invalid by a schema
//! change can still be updated elsewhere.
//!
//! Used by the operator's `render` command (to reject a manifest the API server would reject) and
//! by the local cluster `kube-sim` for every custom resource.

use std::collections::BTreeMap;
use std::fmt;

use kube::core::cel;
use serde_json::{Map, Value};

mod cel_rules;
use cel_rules::CelRules;

/// The type of a field error, as `k8s.io/apimachinery/pkg/util/validation/field.ErrorType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldErrorKind {
    /// `Invalid value` (`FieldValueInvalid`).
    Invalid,
    /// A value of the wrong type (`FieldValueTypeInvalid`, printed as `Invalid value`).
    TypeInvalid,
    /// `Required value` (`FieldValueRequired`).
    Required,
    /// `Unsupported value` (`FieldValueNotSupported`).
    NotSupported,
    /// `Duplicate value` (`FieldValueDuplicate`).
    Duplicate,
    /// `Forbidden` (`FieldValueForbidden`).
    Forbidden,
    /// `Too long` (`FieldValueTooLong`).
    TooLong,
    /// `Too many` (`FieldValueTooMany`).
    TooMany,
    /// `Internal error` (`InternalError`).
    Internal,
}

impl FieldErrorKind {
    /// The `reason` kube-apiserver puts in `details.causes[]`.
    pub fn reason(self) -> &'static str {
        match self {
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::TypeInvalid => "FieldValueTypeInvalid",
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::TooMany => "FieldValueTooMany",
            FieldErrorKind::Internal => "InternalError",
        }
    }

    fn label(self) -> &'static str {
        match self {
            FieldErrorKind::Invalid | FieldErrorKind::TypeInvalid => "Invalid value",
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::TooLong => "Too long",
            FieldErrorKind::TooMany => "Too many",
            FieldErrorKind::Internal => "Internal error",
        }
    }

    fn from_reason(reason: Option<&str>) -> Self {
        match reason {
            Some("FieldValueRequired") => FieldErrorKind::Required,
            Some("FieldValueDuplicate") => FieldErrorKind::Duplicate,
            Some("FieldValueForbidden") => FieldErrorKind::Forbidden,
            _ => FieldErrorKind::Invalid,
        }
    }
}

/// One validation error on one field.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    /// What kind of error.
    pub kind: FieldErrorKind,
    /// The field path, e.g. `spec.api.replicas` or `spec.env[2].name`.
    pub field: String,
    /// The offending value, when the error prints one.
    pub bad_value: Option<Value>,
    /// The detail, e.g. `spec.api.replicas in body should be greater than or equal to 0`.
    pub detail: String,
}

impl FieldError {
    fn new(kind: FieldErrorKind, field: &str, bad_value: Option<Value>, detail: String) -> Self {
        FieldError {
            kind,
            field: field.to_string(),
            bad_value,
            detail,
        }
    }

    /// The `reason` kube-apiserver puts in `details.causes[]`.
    pub fn reason(&self) -> &'static str {
        self.kind.reason()
    }

    /// The message without the field: `Invalid value: -1: ... should be greater than or equal to 0`.
    pub fn body(&self) -> String {
        let mut s = match (self.kind, &self.bad_value) {
            (
                FieldErrorKind::Required
                | FieldErrorKind::Forbidden
                | FieldErrorKind::TooLong
                | FieldErrorKind::Internal,
                _,
            )
            | (_, None) => self.kind.label().to_string(),
            (_, Some(v)) => format!("{}: {}", self.kind.label(), render_value(v)),
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.body())
        } else {
            write!(f, "{}: {}", self.field, self.body())
        }
    }
}

/// Prints a value as kube-apiserver does in field errors (`field.Error.ErrorBody` in apimachinery's
/// `pkg/util/validation/field/errors.go`): strings quoted, numbers and booleans bare, and anything
/// else in Go's `%#v` syntax, e.g. `map[string]interface {}{"name":"A"}`.
fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "\"null\"".to_string(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(_) | Value::Object(_) => go_sharp_v(v),
    }
}

/// A decoded JSON value as Go's `%#v` prints it: `map[string]interface {}{"a":1, "b":"x"}` (keys
/// sorted), `[]interface {}{1, 2}`, `interface {}(nil)` for a nested null.
fn go_sharp_v(v: &Value) -> String {
    match v {
        Value::Null => "interface {}(nil)".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => format!(
            "[]interface {{}}{{{}}}",
            items.iter().map(go_sharp_v).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            format!(
                "map[string]interface {{}}{{{}}}",
                entries
                    .iter()
                    .map(|(k, v)| format!("{k:?}:{}", go_sharp_v(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }
}

/// What validation found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Validated {
    /// The object with unknown fields pruned and defaults applied: what the API server stores.
    pub object: Value,
    /// Paths of pruned unknown fields, e.g. `spec.foo` (an error under `fieldValidation=Strict`,
    /// a warning under `Warn`).
    pub unknown_fields: Vec<String>,
    /// The validation errors; empty when the object is valid.
    pub errors: Vec<FieldError>,
}

impl Validated {
    /// Whether there are no errors.
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }
}

/// The fields of `metav1.ObjectMeta`: anything else under a resource's `metadata` is pruned.
const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// The `metadata` fields an embedded resource keeps (kube-apiserver prunes the rest).
const EMBEDDED_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "labels",
    "annotations",
    "finalizers",
];

/// Validates `object` against a CRD version's `openAPIV3Schema`.
///
/// `old` is the stored object on updates: it enables transition rules (`oldSelf`) and ratcheting.
/// `api_version` and `kind` are the CRD version's, bound as CEL root variables.
pub fn validate(
    schema: &Value,
    object: &Value,
    old: Option<&Value>,
    api_version: &str,
    kind: &str,
) -> Validated {
    validate_with(
        schema,
        &CelRules::new(schema),
        object,
        old,
        api_version,
        kind,
    )
}

/// A schema with its CEL rules compiled once, for validating many objects.
pub struct SchemaValidator {
    schema: Value,
    rules: CelRules,
}

impl std::fmt::Debug for SchemaValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaValidator").finish_non_exhaustive()
    }
}

impl SchemaValidator {
    /// Compiles the schema's rules.
    pub fn new(schema: Value) -> Self {
        let rules = CelRules::new(&schema);
        SchemaValidator { schema, rules }
    }

    /// The schema.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Same as [`validate`], without compiling the rules again.
    pub fn validate(
        &self,
        object: &Value,
        old: Option<&Value>,
        api_version: &str,
        kind: &str,
    ) -> Validated {
        validate_with(&self.schema, &self.rules, object, old, api_version, kind)
    }
}

fn validate_with(
    schema: &Value,
    rules: &CelRules,
    object: &Value,
    old: Option<&Value>,
    api_version: &str,
    kind: &str,
) -> Validated {
    let mut unknown_fields = Vec::new();
    let mut pruned = object.clone();
    prune_root(schema, &mut pruned, &mut unknown_fields);
    let mut defaulted = pruned;
    apply_defaults(schema, &mut defaulted);
    // The old object as stored was already pruned and defaulted; do it again in case the schema
    // changed since (kube-apiserver defaults on read).
    let old = old.map(|o| {
        let mut o = o.clone();
        prune_root(schema, &mut o, &mut Vec::new());
        apply_defaults(schema, &mut o);
        o
    });

    let mut errors = Vec::new();
    let mut walker = Walker {
        errors: &mut errors,
    };
    walker.node(schema, &defaulted, old.as_ref(), "", true);

    let blocked = errors.iter().any(|e| e.kind == FieldErrorKind::TypeInvalid);
    if blocked {
        errors.push(FieldError::new(
            FieldErrorKind::Internal,
            "",
            None,
            "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation".into(),
        ));
    } else {
        errors.extend(cel_errors(
            rules,
            &defaulted,
            old.as_ref(),
            api_version,
            kind,
        ));
    }
    Validated {
        object: defaulted,
        unknown_fields,
        errors,
    }
}

/// The paths of the fields of `object` that the schema does not declare (what pruning removes).
pub fn unknown_fields(schema: &Value, object: &Value) -> Vec<String> {
    let mut unknown = Vec::new();
    prune_root(schema, &mut object.clone(), &mut unknown);
    unknown
}

/// Compiles every CEL rule of a schema; the errors a CRD with this schema would be rejected for.
pub fn compile_rules(schema: &Value) -> Vec<String> {
    let compiled = cel::compile_schema(schema);
    let mut out = Vec::new();
    collect_compile_errors(&compiled, &mut out);
    out
}

fn collect_compile_errors(node: &cel::CompiledSchema, out: &mut Vec<String>) {
    for err in node.compilation_errors() {
        out.push(err.to_string());
    }
    for child in node.properties.values() {
        collect_compile_errors(child, out);
    }
    if let Some(items) = &node.items {
        collect_compile_errors(items, out);
    }
    if let Some(ap) = &node.additional_properties {
        collect_compile_errors(ap, out);
    }
}

// ---------------------------------------------------------------------------------------------
// Pruning

fn child_path(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn index_path(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn key_path(path: &str, key: &str) -> String {
    format!("{path}[{key}]")
}

fn preserves_unknown(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

fn is_embedded(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-embedded-resource")
        .and_then(Value::as_bool)
        == Some(true)
}

fn prune_root(schema: &Value, obj: &mut Value, unknown: &mut Vec<String>) {
    let Value::Object(map) = obj else {
        return;
    };
    if let Some(Value::Object(meta)) = map.get_mut("metadata") {
        prune_meta(meta, "metadata", OBJECT_META_FIELDS, unknown);
    }
    prune_object(
        schema,
        map,
        "",
        unknown,
        &["apiVersion", "kind", "metadata"],
    );
}

fn prune_meta(meta: &mut Map<String, Value>, path: &str, keep: &[&str], unknown: &mut Vec<String>) {
    let drop: Vec<String> = meta
        .keys()
        .filter(|k| !keep.contains(&k.as_str()))
        .cloned()
        .collect();
    for k in drop {
        meta.remove(&k);
        unknown.push(child_path(path, &k));
    }
}

fn prune_object(
    schema: &Value,
    map: &mut Map<String, Value>,
    path: &str,
    unknown: &mut Vec<String>,
    always_keep: &[&str],
) {
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    let preserve = preserves_unknown(schema);
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        // `metadata` is pruned to ObjectMeta by prune_meta, whatever the schema says of it (a
        // CRD schema may declare `metadata: {type: object}`, as CNPG's does).
        if always_keep.contains(&key.as_str())
            && (key == "metadata" || !props.is_some_and(|p| p.contains_key(&key)))
        {
            continue;
        }
        let field_path = child_path(path, &key);
        if let Some(prop) = props.and_then(|p| p.get(&key)) {
            if let Some(v) = map.get_mut(&key) {
                prune_value(prop, v, &field_path, unknown);
            }
        } else if let Some(ap) = additional.filter(|a| a.is_object()) {
            let entry_path = key_path(path, &key);
            if let Some(v) = map.get_mut(&key) {
                prune_value(ap, v, &entry_path, unknown);
            }
        } else if additional.and_then(Value::as_bool) == Some(true) || preserve {
            // Kept as is.
        } else {
            map.remove(&key);
            unknown.push(field_path);
        }
    }
}

fn prune_value(schema: &Value, value: &mut Value, path: &str, unknown: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if is_embedded(schema) {
                if let Some(Value::Object(meta)) = map.get_mut("metadata") {
                    prune_meta(
                        meta,
                        &child_path(path, "metadata"),
                        EMBEDDED_META_FIELDS,
                        unknown,
                    );
                }
                prune_object(
                    schema,
                    map,
                    path,
                    unknown,
                    &["apiVersion", "kind", "metadata"],
                );
            } else if schema.get("properties").is_some()
                || schema.get("additionalProperties").is_some()
                || !preserves_unknown(schema)
            {
                prune_object(schema, map, path, unknown, &[]);
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_value(item_schema, item, &index_path(path, i), unknown);
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Defaulting

/// Applies the schema's `default`s (recursing into defaulted values, as kube-apiserver does) and
/// drops `null` values of non-nullable fields that have no default.
pub fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (key, prop) in props {
                    let nullable = prop.get("nullable").and_then(Value::as_bool) == Some(true);
                    match (map.get(key), prop.get("default")) {
                        (None, Some(d)) => {
                            map.insert(key.clone(), d.clone());
                        }
                        (Some(Value::Null), Some(d)) if !nullable => {
                            map.insert(key.clone(), d.clone());
                        }
                        (Some(Value::Null), None) if !nullable => {
                            map.remove(key);
                        }
                        _ => {}
                    }
                    if let Some(child) = map.get_mut(key) {
                        apply_defaults(prop, child);
                    }
                }
            }
            if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                let props = schema.get("properties").and_then(Value::as_object);
                for (key, child) in map.iter_mut() {
                    if props.is_none_or(|p| !p.contains_key(key)) {
                        apply_defaults(ap, child);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    apply_defaults(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// OpenAPI value validation

struct Walker<'e> {
    errors: &'e mut Vec<FieldError>,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            n.is_i64()
                || n.is_u64()
                || n.as_f64()
                    .is_some_and(|f| f.fract() == 0.0 && f.is_finite())
        }
        _ => false,
    }
}

fn fmt_num(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

/// The path as kube-openapi prints it inside messages (`spec.x`, or `body` at the root).
fn body_path(path: &str) -> &str {
    if path.is_empty() { "body" } else { path }
}

impl Walker<'_> {
    fn push(&mut self, kind: FieldErrorKind, path: &str, bad: Option<Value>, detail: String) {
        self.errors.push(FieldError::new(kind, path, bad, detail));
    }

    fn invalid(&mut self, path: &str, bad: &Value, detail: String) {
        self.push(FieldErrorKind::Invalid, path, Some(bad.clone()), detail);
    }

    /// Validates one value. `root` marks the resource's root (where apiVersion/kind/metadata live).
    fn node(&mut self, schema: &Value, value: &Value, old: Option<&Value>, path: &str, root: bool) {
        // Ratcheting: a value equal to the old one is not validated again.
        if old.is_some_and(|o| o == value) {
            return;
        }
        if !self.check_type(schema, value, path) {
            return;
        }
        self.check_value(schema, value, path);
        self.check_junctors(schema, value, path);
        match value {
            Value::Object(map) => self.object(schema, map, old, path, root),
            Value::Array(items) => self.array(schema, items, old, path),
            _ => {}
        }
    }

    fn check_type(&mut self, schema: &Value, value: &Value, path: &str) -> bool {
        let int_or_string = schema
            .get("x-kubernetes-int-or-string")
            .and_then(Value::as_bool)
            == Some(true);
        if int_or_string {
            if is_integer(value) || value.is_string() {
                return true;
            }
            if value.is_null() && schema.get("nullable").and_then(Value::as_bool) == Some(true) {
                return true;
            }
            self.push(
                FieldErrorKind::TypeInvalid,
                path,
                Some(value.clone()),
                format!(
                    "{} in body must be of type integer,string: \"{}\"",
                    body_path(path),
                    type_name(value)
                ),
            );
            return false;
        }
        let Some(expected) = schema.get("type").and_then(Value::as_str) else {
            return true;
        };
        if value.is_null() && schema.get("nullable").and_then(Value::as_bool) == Some(true) {
            return true;
        }
        let ok = match expected {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => is_integer(value),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => true,
        };
        if !ok {
            self.push(
                FieldErrorKind::TypeInvalid,
                path,
                Some(value.clone()),
                format!(
                    "{} in body must be of type {expected}: \"{}\"",
                    body_path(path),
                    type_name(value)
                ),
            );
        }
        ok
    }

    fn check_value(&mut self, schema: &Value, value: &Value, path: &str) {
        let bp = body_path(path).to_string();
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            let supported: Vec<String> = allowed
                .iter()
                .map(|a| match a {
                    Value::String(s) => format!("{s:?}"),
                    other => format!("{:?}", other.to_string()),
                })
                .collect();
            self.push(
                FieldErrorKind::NotSupported,
                path,
                Some(value.clone()),
                format!("supported values: {}", supported.join(", ")),
            );
        }
        match value {
            Value::Number(n) => {
                let Some(x) = n.as_f64() else { return };
                let excl_min =
                    schema.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true);
                let excl_max =
                    schema.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true);
                if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
                    if excl_min && x <= min {
                        self.invalid(
                            path,
                            value,
                            format!("{bp} in body should be greater than {}", fmt_num(min)),
                        );
                    } else if !excl_min && x < min {
                        self.invalid(
                            path,
                            value,
                            format!(
                                "{bp} in body should be greater than or equal to {}",
                                fmt_num(min)
                            ),
                        );
                    }
                }
                if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
                    if excl_max && x >= max {
                        self.invalid(
                            path,
                            value,
                            format!("{bp} in body should be less than {}", fmt_num(max)),
                        );
                    } else if !excl_max && x > max {
                        self.invalid(
                            path,
                            value,
                            format!(
                                "{bp} in body should be less than or equal to {}",
                                fmt_num(max)
                            ),
                        );
                    }
                }
                if let Some(m) = schema.get("multipleOf").and_then(Value::as_f64)
                    && m > 0.0
                    && (x / m).fract() != 0.0
                {
                    self.invalid(
                        path,
                        value,
                        format!("{bp} in body should be a multiple of {}", fmt_num(m)),
                    );
                }
                if let Some(format) = schema.get("format").and_then(Value::as_str) {
                    let out_of_range = match format {
                        "int32" => !(f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&x),
                        _ => false,
                    };
                    if out_of_range {
                        self.invalid(
                            path,
                            value,
                            format!("{bp} in body must be of type {format}: \"{}\"", fmt_num(x)),
                        );
                    }
                }
            }
            Value::String(s) => {
                let len = s.chars().count() as u64;
                if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                    && len > max
                {
                    self.push(
                        FieldErrorKind::TooLong,
                        path,
                        Some(value.clone()),
                        format!("may not be more than {max} bytes"),
                    );
                }
                if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                    && len < min
                {
                    self.invalid(
                        path,
                        value,
                        format!("{bp} in body should be at least {min} chars long"),
                    );
                }
                if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
                    match regex::Regex::new(pattern) {
                        Ok(re) if !re.is_match(s) => {
                            self.invalid(
                                path,
                                value,
                                format!("{bp} in body should match '{pattern}'"),
                            );
                        }
                        Ok(_) => {}
                        Err(e) => self.push(
                            FieldErrorKind::Internal,
                            path,
                            None,
                            format!("the schema pattern '{pattern}' does not compile: {e}"),
                        ),
                    }
                }
                if let Some(format) = schema.get("format").and_then(Value::as_str)
                    && !format_ok(format, s)
                {
                    self.invalid(
                        path,
                        value,
                        format!("{bp} in body must be of type {format}: {s:?}"),
                    );
                }
            }
            Value::Array(items) => {
                let n = items.len() as u64;
                if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                    && n > max
                {
                    self.push(
                        FieldErrorKind::TooMany,
                        path,
                        Some(Value::from(n)),
                        format!("must have at most {max} items"),
                    );
                }
                if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                    && n < min
                {
                    self.invalid(
                        path,
                        value,
                        format!("{bp} in body should have at least {min} items"),
                    );
                }
            }
            Value::Object(map) => {
                let n = map.len() as u64;
                if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
                    && n > max
                {
                    self.push(
                        FieldErrorKind::TooMany,
                        path,
                        Some(Value::from(n)),
                        format!("must have at most {max} items"),
                    );
                }
                if let Some(min) = schema.get("minProperties").and_then(Value::as_u64)
                    && n < min
                {
                    self.invalid(
                        path,
                        value,
                        format!("{bp} in body should have at least {min} properties"),
                    );
                }
            }
            _ => {}
        }
    }

    /// `allOf`, `anyOf`, `oneOf`, `not`: value validations without types (structural schemas).
    fn check_junctors(&mut self, schema: &Value, value: &Value, path: &str) {
        let bp = body_path(path).to_string();
        let passes = |branch: &Value| {
            let mut errs = Vec::new();
            let mut w = Walker { errors: &mut errs };
            w.node(branch, value, None, path, false);
            errs.is_empty()
        };
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for branch in all {
                self.node(branch, value, None, path, false);
            }
        }
        if let Some(any) = schema.get("anyOf").and_then(Value::as_array)
            && !any.is_empty()
            && !any.iter().any(passes)
        {
            self.invalid(
                path,
                value,
                format!("{bp} in body must validate at least one schema (anyOf)"),
            );
        }
        if let Some(one) = schema.get("oneOf").and_then(Value::as_array)
            && !one.is_empty()
            && one.iter().filter(|b| passes(b)).count() != 1
        {
            self.invalid(
                path,
                value,
                format!("{bp} in body must validate one and only one schema (oneOf)"),
            );
        }
        if let Some(not) = schema.get("not")
            && passes(not)
        {
            self.invalid(
                path,
                value,
                format!("{bp} in body must not validate the schema (not)"),
            );
        }
    }

    fn object(
        &mut self,
        schema: &Value,
        map: &Map<String, Value>,
        old: Option<&Value>,
        path: &str,
        root: bool,
    ) {
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for r in required.iter().filter_map(Value::as_str) {
                // A required field set to null counts as missing.
                if map.get(r).is_none_or(Value::is_null) {
                    self.push(
                        FieldErrorKind::Required,
                        &child_path(path, r),
                        None,
                        String::new(),
                    );
                }
            }
        }
        if is_embedded(schema) {
            for field in ["apiVersion", "kind"] {
                if map
                    .get(field)
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    self.push(
                        FieldErrorKind::Required,
                        &child_path(path, field),
                        None,
                        "must not be empty".into(),
                    );
                }
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties").filter(|a| a.is_object());
        for (key, child) in map {
            if root
                && (key == "apiVersion" || key == "kind")
                && props.is_none_or(|p| !p.contains_key(key))
            {
                continue;
            }
            let old_child = old.and_then(|o| o.get(key));
            if let Some(prop) = props.and_then(|p| p.get(key)) {
                self.node(prop, child, old_child, &child_path(path, key), false);
            } else if let Some(ap) = additional {
                self.node(ap, child, old_child, &key_path(path, key), false);
            }
        }
    }

    fn array(&mut self, schema: &Value, items: &[Value], old: Option<&Value>, path: &str) {
        let list_type = schema
            .get("x-kubernetes-list-type")
            .and_then(Value::as_str)
            .unwrap_or("atomic");
        let keys: Vec<&str> = schema
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        // As apiextensions-apiserver's `listtype.ValidateListSetsAndMaps`: a value (a set) or a key
        // (a map, made of the key fields the item has) seen before is a Duplicate at the index of
        // its second appearance, once per value however often it repeats.
        let identity = |item: &Value| -> Option<Value> {
            match list_type {
                "set" => Some(item.clone()),
                "map" => Some(Value::Object(
                    keys.iter()
                        .filter_map(|k| item.get(*k).map(|v| (k.to_string(), v.clone())))
                        .collect(),
                )),
                _ => None,
            }
        };
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            let Some(id) = identity(item) else { break };
            let times = seen.entry(id.to_string()).or_insert(0);
            *times += 1;
            if *times == 2 {
                self.push(
                    FieldErrorKind::Duplicate,
                    &index_path(path, i),
                    Some(id),
                    String::new(),
                );
            }
        }
        let Some(item_schema) = schema.get("items") else {
            return;
        };
        let old_items = old.and_then(Value::as_array);
        for (i, item) in items.iter().enumerate() {
            // Ratcheting correlates items only for map lists (by key) and sets (by value).
            let old_item = match (list_type, old_items) {
                ("map", Some(olds)) => olds
                    .iter()
                    .find(|o| keys.iter().all(|k| o.get(*k) == item.get(*k))),
                ("set", Some(olds)) => olds.iter().find(|o| *o == item),
                _ => None,
            };
            self.node(item_schema, item, old_item, &index_path(path, i), false);
        }
    }
}

/// The cheap `format`s kube-apiserver checks. Unknown formats pass, as there.
fn format_ok(format: &str, s: &str) -> bool {
    match format {
        "date-time" | "datetime" => s.parse::<jiff::Timestamp>().is_ok(),
        "date" => s.parse::<jiff::civil::Date>().is_ok() && s.len() == 10,
        "byte" => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(s).is_ok()
        }
        "uuid" => is_uuid(s),
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(ip, bits)| {
            let bits: Option<u8> = bits.parse().ok();
            match (ip.parse::<std::net::IpAddr>(), bits) {
                (Ok(std::net::IpAddr::V4(_)), Some(b)) => b <= 32,
                (Ok(std::net::IpAddr::V6(_)), Some(b)) => b <= 128,
                _ => false,
            }
        }),
        "hostname" => {
            !s.is_empty()
                && s.len() <= 255
                && s.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                })
        }
        "email" => s
            .split_once('@')
            .is_some_and(|(a, b)| !a.is_empty() && b.contains('.')),
        "duration" => is_go_duration(s),
        _ => true,
    }
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && [8, 4, 4, 4, 12]
            .iter()
            .zip(&parts)
            .all(|(n, p)| p.len() == *n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A Go `time.ParseDuration` string: `300ms`, `1h30m`, `-1.5h`, `0`.
fn is_go_duration(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    if s == "0" {
        return true;
    }
    if s.is_empty() {
        return false;
    }
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return false;
        }
        rest = &rest[num_len..];
        let unit = ["ns", "us", "µs", "μs", "ms", "s", "m", "h"]
            .iter()
            .find(|u| rest.starts_with(**u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

// ---------------------------------------------------------------------------------------------
// CEL

thread_local! {
    /// Registering the Kubernetes CEL functions is not free: once per thread.
    static CEL: cel::Validator = cel::Validator::new();
}

fn cel_errors(
    rules: &CelRules,
    object: &Value,
    old: Option<&Value>,
    api_version: &str,
    kind: &str,
) -> Vec<FieldError> {
    let (group, _) = api_version.split_once('/').unwrap_or(("", api_version));
    let root = cel::RootContext {
        api_version: api_version.to_string(),
        api_group: group.to_string(),
        kind: kind.to_string(),
    };
    CEL.with(|validator| rules.evaluate(validator, object, old, &root))
        .into_iter()
        .filter(|e| !ratcheted(e, object, old))
        .map(|e| {
            // A rule on the root reports the root path, which kube-apiserver prints as `<nil>`.
            let field = match cel_path(&e.field_path) {
                p if p.is_empty() => "<nil>".to_string(),
                p => p,
            };
            match e.kind {
                cel::ErrorKind::ValidationFailure => {
                    let kind = FieldErrorKind::from_reason(e.reason.as_deref());
                    let bad = match kind {
                        FieldErrorKind::Invalid => Some(Value::String(
                            value_at(object, &e.field_path)
                                .map_or("object", type_name)
                                .to_string(),
                        )),
                        FieldErrorKind::Duplicate => value_at(object, &e.field_path).cloned(),
                        _ => None,
                    };
                    FieldError::new(kind, &field, bad, e.message)
                }
                _ => FieldError::new(
                    FieldErrorKind::Invalid,
                    &field,
                    Some(Value::String(
                        value_at(object, &e.field_path)
                            .map_or("object", type_name)
                            .to_string(),
                    )),
                    e.message,
                ),
            }
        })
        .collect()
}

/// A CEL error at a value unchanged since the old object is ratcheted (dropped), unless the rule
/// is a transition rule (it exists to compare against the old value).
fn ratcheted(e: &cel::ValidationError, object: &Value, old: Option<&Value>) -> bool {
    let Some(old) = old else { return false };
    if e.rule.contains("oldSelf") {
        return false;
    }
    match (
        value_at(object, &e.field_path),
        value_at(old, &e.field_path),
    ) {
        (Some(new), Some(old)) => new == old,
        _ => false,
    }
}

/// kube-cel paths use `.key` for map entries; kube-apiserver prints `[key]` for them. Paths are
/// kept as they are otherwise (`spec.items[0].name`).
fn cel_path(p: &str) -> String {
    p.trim_start_matches('.').to_string()
}

/// The value at a kube-cel style path (`spec.items[0].name`).
fn value_at<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = root;
    for seg in path
        .trim_start_matches('.')
        .split('.')
        .filter(|s| !s.is_empty())
    {
        let (name, indexes) = match seg.find('[') {
            Some(i) => (&seg[..i], &seg[i..]),
            None => (seg, ""),
        };
        if !name.is_empty() {
            cur = cur.get(name)?;
        }
        for idx in indexes.split('[').filter(|s| !s.is_empty()) {
            let idx = idx.trim_end_matches(']');
            cur = match idx.parse::<usize>() {
                Ok(i) => cur.get(i)?,
                Err(_) => cur.get(idx.trim_matches('\''))?,
            };
        }
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["image"],
                    "x-kubernetes-validations": [
                        {"rule": "self.api.replicas <= 10", "message": "at most 10 API replicas", "fieldPath": ".api.replicas"}
                    ],
                    "properties": {
                        "image": {"type": "string", "minLength": 1, "pattern": "^[a-z0-9./:-]+$"},
                        "mode": {"type": "string", "enum": ["web", "worker"], "default": "web"},
                        "api": {
                            "type": "object",
                            "default": {},
                            "properties": {
                                "replicas": {"type": "integer", "format": "int32", "minimum": 0, "default": 2},
                                "port": {"x-kubernetes-int-or-string": true}
                            }
                        },
                        "env": {
                            "type": "array",
                            "maxItems": 3,
                            "x-kubernetes-list-type": "map",
                            "x-kubernetes-list-map-keys": ["name"],
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {"name": {"type": "string"}, "value": {"type": "string"}}
                            }
                        },
                        "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                        "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 5}},
                        "raw": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "template": {"type": "object", "x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true},
                        "immutable": {"type": "string", "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "immutable"}]}
                    }
                },
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
            }
        })
    }

    fn run(obj: Value) -> Validated {
        validate(&schema(), &obj, None, "example.com/v1", "Thing")
    }

    fn messages(v: &Validated) -> Vec<String> {
        v.errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn negative_replicas_is_rejected_with_the_apiserver_wording() {
        let v = run(json!({"spec": {"image": "app", "api": {"replicas": -1}}}));
        assert_eq!(
            messages(&v),
            vec![
                "spec.api.replicas: Invalid value: -1: spec.api.replicas in body should be greater than or equal to 0"
            ]
        );
        assert_eq!(v.errors[0].reason(), "FieldValueInvalid");
    }

    #[test]
    fn missing_required_field_is_required_value() {
        let v = run(json!({"spec": {}}));
        assert_eq!(messages(&v), vec!["spec.image: Required value"]);
        assert_eq!(v.errors[0].reason(), "FieldValueRequired");
    }

    #[test]
    fn enum_violation_lists_supported_values() {
        let v = run(json!({"spec": {"image": "a", "mode": "batch"}}));
        assert_eq!(
            messages(&v),
            vec![r#"spec.mode: Unsupported value: "batch": supported values: "web", "worker""#]
        );
    }

    #[test]
    fn wrong_type_blocks_cel_and_says_so() {
        let v = run(json!({"spec": {"image": "a", "api": {"replicas": "two"}}}));
        assert_eq!(
            v.errors[0].to_string(),
            r#"spec.api.replicas: Invalid value: "two": spec.api.replicas in body must be of type integer: "string""#
        );
        assert_eq!(v.errors[0].reason(), "FieldValueTypeInvalid");
        assert_eq!(v.errors.len(), 2);
        assert_eq!(v.errors[1].kind, FieldErrorKind::Internal);
    }

    #[test]
    fn defaults_are_applied_recursively_into_defaulted_objects() {
        let v = run(json!({"spec": {"image": "a"}}));
        assert!(v.is_valid(), "{:?}", v.errors);
        assert_eq!(v.object["spec"]["mode"], "web");
        assert_eq!(v.object["spec"]["api"]["replicas"], 2);
    }

    #[test]
    fn unknown_fields_are_pruned_and_reported_but_preserved_where_declared() {
        let v = run(json!({
            "metadata": {"name": "x", "bogus": 1},
            "spec": {"image": "a", "foo": 1, "raw": {"anything": {"goes": true}}, "env": [{"name": "A", "extra": 1}]}
        }));
        assert_eq!(
            v.unknown_fields,
            vec!["metadata.bogus", "spec.env[0].extra", "spec.foo"]
        );
        assert!(v.object["spec"].get("foo").is_none());
        assert_eq!(v.object["spec"]["raw"]["anything"]["goes"], true);
    }

    #[test]
    fn pattern_and_length_are_checked() {
        let v = run(json!({"spec": {"image": "UPPER", "labels": {"k": "toolong"}}}));
        let m = messages(&v);
        assert!(m.contains(&r#"spec.image: Invalid value: "UPPER": spec.image in body should match '^[a-z0-9./:-]+$'"#.to_string()), "{m:?}");
        assert!(
            m.contains(&"spec.labels[k]: Too long: may not be more than 5 bytes".to_string()),
            "{m:?}"
        );
    }

    #[test]
    fn max_items_is_too_many() {
        let v = run(
            json!({"spec": {"image": "a", "env": [{"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d"}]}}),
        );
        assert_eq!(
            messages(&v),
            vec!["spec.env: Too many: 4: must have at most 3 items"]
        );
    }

    #[test]
    fn list_map_keys_and_sets_must_be_unique_reported_once_in_go_syntax() {
        let v = run(json!({"spec": {
            "image": "a",
            "env": [{"name": "a", "value": "1"}, {"name": "a", "value": "2"}, {"name": "a"}],
            "tags": ["x", "x"]
        }}));
        assert_eq!(
            messages(&v),
            vec![
                r#"spec.env[1]: Duplicate value: map[string]interface {}{"name":"a"}"#,
                r#"spec.tags[1]: Duplicate value: "x""#
            ]
        );
    }

    #[test]
    fn compound_values_print_as_go_prints_them() {
        assert_eq!(
            render_value(&json!({"whenUnsatisfiable": "DoNotSchedule", "topologyKey": "zone"})),
            r#"map[string]interface {}{"topologyKey":"zone", "whenUnsatisfiable":"DoNotSchedule"}"#
        );
        assert_eq!(
            render_value(&json!([1, "a", null])),
            r#"[]interface {}{1, "a", interface {}(nil)}"#
        );
    }

    #[test]
    fn int_or_string_takes_both() {
        assert!(run(json!({"spec": {"image": "a", "api": {"port": "http"}}})).is_valid());
        assert!(run(json!({"spec": {"image": "a", "api": {"port": 80}}})).is_valid());
        assert!(!run(json!({"spec": {"image": "a", "api": {"port": true}}})).is_valid());
    }

    #[test]
    fn embedded_resource_needs_api_version_and_kind() {
        let v = run(json!({"spec": {"image": "a", "template": {"metadata": {"name": "x"}}}}));
        assert_eq!(
            messages(&v),
            vec![
                "spec.template.apiVersion: Required value: must not be empty",
                "spec.template.kind: Required value: must not be empty"
            ]
        );
    }

    #[test]
    fn cel_rule_failure_names_the_field_path() {
        let v = run(json!({"spec": {"image": "a", "api": {"replicas": 11}}}));
        assert_eq!(
            messages(&v),
            vec![r#"spec.api.replicas: Invalid value: "integer": at most 10 API replicas"#]
        );
    }

    #[test]
    fn transition_rule_sees_old_self_on_update_only() {
        let old = json!({"spec": {"image": "a", "immutable": "x"}});
        let new = json!({"spec": {"image": "a", "immutable": "y"}});
        assert!(run(new.clone()).is_valid());
        let v = validate(&schema(), &new, Some(&old), "example.com/v1", "Thing");
        assert_eq!(
            messages(&v),
            vec![r#"spec.immutable: Invalid value: "string": immutable"#]
        );
    }

    #[test]
    fn unchanged_invalid_values_ratchet_on_update() {
        let old = json!({"spec": {"image": "a", "api": {"replicas": -1}}});
        let new = json!({"spec": {"image": "a", "api": {"replicas": -1}}, "status": {"x": 1}});
        assert!(validate(&schema(), &new, Some(&old), "example.com/v1", "Thing").is_valid());
    }

    #[test]
    fn transition_rules_in_an_unchanged_spec_are_still_evaluated() {
        let schema = json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "x-kubernetes-validations": [{"rule": "self.count <= 10", "message": "at most 10"}],
                    "properties": {
                        "count": {"type": "integer"},
                        "inner": {
                            "type": "object",
                            "properties": {"level": {
                                "type": "integer",
                                "x-kubernetes-validations": [{"rule": "self > oldSelf", "message": "must rise on every write"}]
                            }}
                        }
                    }
                },
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
            }
        });
        let old = json!({"spec": {"count": 11, "inner": {"level": 1}}});
        let status_only = json!({"spec": {"count": 11, "inner": {"level": 1}}, "status": {"x": 1}});
        let v = validate(&schema, &status_only, Some(&old), "example.com/v1", "Thing");
        // The unchanged count ratchets; the transition rule is not ratcheted (as kube-apiserver).
        assert_eq!(
            messages(&v),
            vec![r#"spec.inner.level: Invalid value: "integer": must rise on every write"#]
        );
    }

    #[test]
    fn root_rules_see_the_identity_of_the_object_and_may_read_the_spec() {
        let schema = |rule: &str| {
            json!({
                "type": "object",
                "x-kubernetes-validations": [{"rule": rule, "message": "rejected by the root rule"}],
                "properties": {
                    "metadata": {"type": "object"},
                    "spec": {"type": "object", "properties": {"image": {"type": "string"}}}
                }
            })
        };
        let object = |name: &str, image: &str| {
            json!({
                "apiVersion": "example.com/v1", "kind": "Thing",
                "metadata": {"name": name, "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}]},
                "spec": {"image": image}
            })
        };
        let identity = schema("size(self.metadata.name) <= 5 && self.kind == 'Thing'");
        let check = |schema: &Value, object: &Value| {
            messages(&validate(schema, object, None, "example.com/v1", "Thing"))
        };
        assert!(check(&identity, &object("short", "a")).is_empty());
        assert_eq!(
            check(&identity, &object("much-longer", "a")),
            vec!["<nil>: Invalid value: \"object\": rejected by the root rule"]
        );
        // A root rule that reads more than the identity sees the whole object.
        let spec = schema("self.spec.image != 'forbidden'");
        assert!(check(&spec, &object("a", "allowed")).is_empty());
        assert_eq!(check(&spec, &object("a", "forbidden")).len(), 1);
    }

    #[test]
    fn rule_compile_errors_are_reported() {
        let s = json!({"type": "object", "x-kubernetes-validations": [{"rule": "self.a ==="}]});
        assert_eq!(compile_rules(&s).len(), 1);
        assert!(compile_rules(&schema()).is_empty());
    }

    #[test]
    fn a_compiled_validator_is_shareable_and_agrees() {
        fn shareable<T: Send + Sync>(_: &T) {}
        let v = SchemaValidator::new(schema());
        shareable(&v);
        let obj = json!({"spec": {"image": "a", "api": {"replicas": 11}}});
        assert_eq!(
            v.validate(&obj, None, "example.com/v1", "Thing"),
            validate(&schema(), &obj, None, "example.com/v1", "Thing")
        );
    }

    #[test]
    fn go_durations_parse() {
        assert!(is_go_duration("1h30m"));
        assert!(is_go_duration("300ms"));
        assert!(!is_go_duration("5 minutes"));
    }
}
