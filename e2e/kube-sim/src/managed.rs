//! Field management (`metadata.managedFields`) and server-side apply, after the
//! structured-merge-diff rules kube-apiserver uses:
//!
//! - every write records which fields each manager set: an `Update` entry for create, update and
//!   patch (the manager takes the fields it changed from everyone else), an `Apply` entry for
//!   server-side apply (the manager owns exactly the fields of its applied configuration);
//! - an apply that changes a field another manager owns fails with 409 Conflict naming the
//!   managers and fields, unless `force=true`, which moves the ownership;
//! - a field an applier owned and no longer applies is removed, unless another manager owns it;
//! - lists merge by their list type (atomic, set, or map by keys), objects field by field.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::meta;
use crate::registry::ResourceType;
use crate::shape::{ListType, Node, Shape};

/// One element of a field path.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathElement {
    /// `f:name`: a struct field or map entry.
    Field(String),
    /// `k:{"name":"app"}`: a list-map item by its keys (canonical JSON, keys sorted).
    Key(String),
    /// `v:"x"`: a set item by value (JSON).
    Value(String),
    /// `i:3`: a list item by index (atomic lists are never descended, so rare).
    Index(usize),
}

impl PathElement {
    fn encode(&self) -> String {
        match self {
            PathElement::Field(n) => format!("f:{n}"),
            PathElement::Key(k) => format!("k:{k}"),
            PathElement::Value(v) => format!("v:{v}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(s: &str) -> Option<Self> {
        let (prefix, rest) = s.split_at_checked(2)?;
        match prefix {
            "f:" => Some(PathElement::Field(rest.into())),
            "k:" => {
                let v: Value = serde_json::from_str(rest).ok()?;
                Some(PathElement::Key(canonical(&v)))
            }
            "v:" => {
                let v: Value = serde_json::from_str(rest).ok()?;
                Some(PathElement::Value(v.to_string()))
            }
            "i:" => rest.parse().ok().map(PathElement::Index),
            _ => None,
        }
    }

    /// As kube-apiserver prints it in conflict messages (`.spec`, `[name="app"]`, `[="x"]`).
    fn display(&self) -> String {
        match self {
            PathElement::Field(n) => format!(".{n}"),
            PathElement::Key(k) => {
                let v: Value = serde_json::from_str(k).unwrap_or(Value::Null);
                let parts: Vec<String> = v
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                    .unwrap_or_default();
                format!("[{}]", parts.join(","))
            }
            PathElement::Value(v) => format!("[={v}]"),
            PathElement::Index(i) => format!("[{i}]"),
        }
    }
}

/// A value's compact JSON text.
fn json_text(v: &Value) -> String {
    v.to_string()
}

/// JSON with object keys sorted (serde_json's map is sorted), compact.
fn canonical(v: &Value) -> String {
    v.to_string()
}

/// A field path.
pub type Path = Vec<PathElement>;

/// Prints a path as in conflict messages.
pub fn display_path(p: &Path) -> String {
    p.iter().map(PathElement::display).collect()
}

/// The fields of an object with, for leaves, their values.
type FieldValues = BTreeMap<Path, Option<Value>>;

/// The key of a list-map item. A key field left out takes its schema default (list-map keys must
/// be required or defaulted); for built-ins, `protocol` defaults to `TCP`.
fn list_key(item: &Value, keys: &[String], item_node: Node<'_>) -> PathElement {
    let m: Map<String, Value> = keys
        .iter()
        .filter_map(|k| {
            let v = item
                .get(k)
                .cloned()
                .or_else(|| item_node.field(k).default_value())
                .or_else(|| (k == "protocol").then(|| json!("TCP")))?;
            Some((k.clone(), v))
        })
        .collect();
    PathElement::Key(canonical(&Value::Object(m)))
}

fn collect(value: &Value, node: Node<'_>, path: &mut Path, out: &mut FieldValues) {
    match value {
        Value::Object(map) => {
            if node.map_atomic() {
                out.insert(path.clone(), Some(value.clone()));
                return;
            }
            for (k, v) in map {
                path.push(PathElement::Field(k.clone()));
                let child = node.field(k);
                collect(v, child, path, out);
                let empty = v.is_null() || v.as_object().is_some_and(Map::is_empty);
                if empty {
                    out.insert(path.clone(), Some(v.clone()));
                } else if !node.is_declared(k) && !out.contains_key(path) {
                    out.insert(path.clone(), None);
                }
                path.pop();
            }
        }
        Value::Array(items) => match node.list_type() {
            ListType::Atomic => {
                out.insert(path.clone(), Some(value.clone()));
            }
            ListType::Set => {
                for item in items {
                    path.push(PathElement::Value(item.to_string()));
                    out.insert(path.clone(), Some(item.clone()));
                    path.pop();
                }
            }
            ListType::Map(keys) => {
                let item_node = node.items();
                for item in items {
                    path.push(list_key(item, &keys, item_node));
                    collect(item, item_node, path, out);
                    out.entry(path.clone()).or_insert(None);
                    path.pop();
                }
            }
        },
        scalar => {
            out.insert(path.clone(), Some(scalar.clone()));
        }
    }
}

/// The repeated keys of list-maps in an applied configuration, as structured-merge-diff reports
/// them when server-side apply converts the configuration to a typed value:
/// `.spec.template.spec.containers[name="app"].env: duplicate entries for key [name="A"]`, once
/// per repeated key. Kubernetes cannot apply such a configuration (a create or update can still
/// store one).
pub fn duplicate_list_map_keys(applied: &Value, shape: &Shape) -> Vec<String> {
    fn walk(value: &Value, node: Node<'_>, path: &mut Path, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if node.map_atomic() {
                    return;
                }
                for (k, v) in map {
                    path.push(PathElement::Field(k.clone()));
                    walk(v, node.field(k), path, out);
                    path.pop();
                }
            }
            Value::Array(items) => {
                let ListType::Map(keys) = node.list_type() else {
                    return;
                };
                let item_node = node.items();
                let mut seen: BTreeMap<PathElement, usize> = BTreeMap::new();
                for item in items {
                    let key = list_key(item, &keys, item_node);
                    let times = seen.entry(key.clone()).or_insert(0);
                    *times += 1;
                    if *times == 2 {
                        out.push(format!(
                            "{}: duplicate entries for key {}",
                            display_path(path),
                            key.display()
                        ));
                    }
                    path.push(key);
                    walk(item, item_node, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(applied, shape.root(), &mut Vec::new(), &mut out);
    out
}

/// Metadata that field management never tracks (set by the server, or managedFields itself).
const UNTRACKED_METADATA: [&str; 11] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

/// What field management tracks of an object: not apiVersion, kind or server-set metadata, and
/// status or everything but status depending on the endpoint. Copies only what it keeps (the
/// untracked managedFields are often the bulk of an object).
fn strip(obj: &Value, subresource: Option<&str>, rt: &ResourceType) -> Value {
    let Some(fields) = obj.as_object() else {
        return obj.clone();
    };
    let status_endpoint = subresource == Some("status");
    let mut kept = Map::new();
    for (key, value) in fields {
        let tracked = match key.as_str() {
            "apiVersion" | "kind" => false,
            "status" => status_endpoint || !rt.status_subresource,
            _ => !status_endpoint,
        };
        if !tracked {
            continue;
        }
        match (key.as_str(), value) {
            ("metadata", Value::Object(metadata)) => {
                let metadata: Map<String, Value> = metadata
                    .iter()
                    .filter(|(field, _)| !UNTRACKED_METADATA.contains(&field.as_str()))
                    .map(|(field, value)| (field.clone(), value.clone()))
                    .collect();
                if !metadata.is_empty() {
                    kept.insert(key.clone(), Value::Object(metadata));
                }
            }
            _ => {
                kept.insert(key.clone(), value.clone());
            }
        }
    }
    Value::Object(kept)
}

fn field_values(
    obj: &Value,
    shape: &Shape,
    subresource: Option<&str>,
    rt: &ResourceType,
) -> FieldValues {
    let mut out = FieldValues::new();
    collect(
        &strip(obj, subresource, rt),
        shape.root(),
        &mut Vec::new(),
        &mut out,
    );
    out
}

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    subresource: String,
    api_version: String,
    time: Option<String>,
    fields: BTreeSet<Path>,
}

impl Entry {
    fn same_owner(&self, manager: &str, operation: &str, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }
}

fn parse_fields(v: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
    let Some(map) = v.as_object() else { return };
    for (k, child) in map {
        if k == "." {
            out.insert(path.clone());
            continue;
        }
        let Some(pe) = PathElement::decode(k) else {
            continue;
        };
        path.push(pe);
        if child.as_object().is_some_and(Map::is_empty) {
            out.insert(path.clone());
        } else {
            parse_fields(child, path, out);
        }
        path.pop();
    }
}

#[derive(Default)]
struct Tree {
    member: bool,
    children: BTreeMap<String, Tree>,
}

fn render_fields(fields: &BTreeSet<Path>) -> Value {
    let mut root = Tree::default();
    for p in fields {
        let mut cur = &mut root;
        for pe in p {
            cur = cur.children.entry(pe.encode()).or_default();
        }
        cur.member = true;
    }
    fn render(t: &Tree) -> Value {
        let mut m = Map::new();
        if t.member && !t.children.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for (k, c) in &t.children {
            m.insert(k.clone(), render(c));
        }
        Value::Object(m)
    }
    render(&root)
}

fn read_entries(obj: Option<&Value>) -> Vec<Entry> {
    let Some(list) = obj
        .and_then(|o| o.get("metadata"))
        .and_then(|m| m.get("managedFields"))
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .map(|e| {
            let s = |k: &str| {
                e.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let mut fields = BTreeSet::new();
            if let Some(f) = e.get("fieldsV1") {
                parse_fields(f, &mut Vec::new(), &mut fields);
            }
            Entry {
                manager: s("manager"),
                operation: s("operation"),
                subresource: s("subresource"),
                api_version: s("apiVersion"),
                time: e.get("time").and_then(Value::as_str).map(str::to_string),
                fields,
            }
        })
        .collect()
}

fn write_entries(entries: &[Entry]) -> Value {
    Value::Array(
        entries
            .iter()
            .filter(|e| !e.fields.is_empty())
            .map(|e| {
                let mut m = Map::new();
                m.insert("manager".into(), json!(e.manager));
                m.insert("operation".into(), json!(e.operation));
                m.insert("apiVersion".into(), json!(e.api_version));
                if let Some(t) = &e.time {
                    m.insert("time".into(), json!(t));
                }
                m.insert("fieldsType".into(), json!("FieldsV1"));
                m.insert("fieldsV1".into(), render_fields(&e.fields));
                if !e.subresource.is_empty() {
                    m.insert("subresource".into(), json!(e.subresource));
                }
                Value::Object(m)
            })
            .collect(),
    )
}

/// Paths that differ between two field-value maps: added, removed, and leaves whose value changed.
fn changes(old: &FieldValues, new: &FieldValues) -> (BTreeSet<Path>, BTreeSet<Path>) {
    let mut changed = BTreeSet::new();
    let mut removed = BTreeSet::new();
    for (p, v) in new {
        match old.get(p) {
            None => {
                changed.insert(p.clone());
            }
            Some(ov) => {
                if let (Some(a), Some(b)) = (ov, v)
                    && !same_value(a, b)
                {
                    changed.insert(p.clone());
                }
            }
        }
    }
    for p in old.keys() {
        if !new.contains_key(p) {
            removed.insert(p.clone());
        }
    }
    (changed, removed)
}

/// Whether two values are equal as structured-merge-diff compares them (`value.Equals`): numbers
/// by their numeric value, so `1` and `1.0` are the same (a YAML client may send either for the
/// same manifest: sigs.k8s.io/yaml writes a float `1.0` as `1`), maps regardless of key order.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_value(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, x)| y.get(key).is_some_and(|y| same_value(x, y)))
        }
        _ => a == b,
    }
}

/// Records an `Update` operation by `manager` in `new.metadata.managedFields`.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
    rt: &ResourceType,
) {
    let shape = Shape::for_type(rt);
    // A request may carry managedFields: an empty list clears them (as kube-apiserver allows);
    // otherwise the stored entries are authoritative.
    let requested = new
        .get("metadata")
        .and_then(|m| m.get("managedFields"))
        .cloned();
    let stored = old
        .and_then(|o| o.get("metadata"))
        .and_then(|m| m.get("managedFields"));
    let mut entries = match &requested {
        Some(Value::Array(a)) if a.is_empty() && old.is_some() => Vec::new(),
        // A client may rewrite managedFields (kubectl does when it moves client-side apply
        // ownership to server-side apply): what it sends is taken as is.
        Some(r) if old.is_some() && Some(r) != stored => read_entries(Some(new)),
        _ => read_entries(old),
    };
    let old_fv = old
        .map(|o| field_values(o, &shape, subresource, rt))
        .unwrap_or_default();
    let new_fv = field_values(new, &shape, subresource, rt);
    let (changed, removed) = changes(&old_fv, &new_fv);
    let sub = subresource.unwrap_or_default();
    if !changed.is_empty() || !removed.is_empty() {
        for e in entries.iter_mut() {
            if e.subresource == sub {
                e.fields.retain(|p| !removed.contains(p));
            }
            if !e.same_owner(manager, "Update", sub) {
                e.fields.retain(|p| !changed.contains(p));
            }
        }
        if !changed.is_empty() {
            let now = meta::now_rfc3339();
            match entries
                .iter_mut()
                .find(|e| e.same_owner(manager, "Update", sub))
            {
                Some(e) => {
                    e.fields.extend(changed);
                    e.time = Some(now);
                    e.api_version = rt.api_version();
                }
                None => entries.push(Entry {
                    manager: manager.to_string(),
                    operation: "Update".into(),
                    subresource: sub.to_string(),
                    api_version: rt.api_version(),
                    time: Some(now),
                    fields: changed,
                }),
            }
        }
    }
    let rendered = write_entries(&entries);
    let meta = meta::meta_mut(new);
    if rendered.as_array().is_some_and(Vec::is_empty) {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), rendered);
    }
}

/// A field another manager owns that an apply would change.
#[derive(Clone, Debug, PartialEq)]
pub struct Conflict {
    /// The other manager.
    pub manager: String,
    /// Its operation (`Apply` or `Update`).
    pub operation: String,
    /// Its subresource, if any.
    pub subresource: String,
    /// Its API version.
    pub api_version: String,
    /// When it last changed its fields (Update entries).
    pub time: Option<String>,
    /// The field, as `.spec.replicas`.
    pub field: String,
}

impl Conflict {
    /// The manager as kube-apiserver prints it: `"kubectl" using apps/v1`, with
    /// ` with subresource "status"` and ` at TIME` for Update entries.
    pub fn manager_display(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s = format!("{s} with subresource {:?}", self.subresource);
        }
        match (&self.time, self.operation.as_str()) {
            (Some(t), "Update") => format!("{s} using {} at {t}", self.api_version),
            _ => format!("{s} using {}", self.api_version),
        }
    }
}

/// The result of an apply.
#[derive(Debug)]
pub struct Applied {
    /// The merged object (before defaulting and validation).
    pub object: Value,
    /// The new `managedFields`.
    pub managed_fields: Value,
}

/// Merges an applied configuration into the live object (structured merge).
fn merge(live: &Value, applied: &Value, node: Node<'_>) -> Value {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) if !node.map_atomic() => {
            let mut out = l.clone();
            for (k, av) in a {
                let merged = match l.get(k) {
                    Some(lv) => merge(lv, av, node.field(k)),
                    None => av.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(a)) => match node.list_type() {
            ListType::Atomic => applied.clone(),
            ListType::Set => {
                let mut out = l.clone();
                for item in a {
                    if !out.contains(item) {
                        out.push(item.clone());
                    }
                }
                Value::Array(out)
            }
            ListType::Map(keys) => {
                let item_node = node.items();
                let mut out: Vec<Value> = Vec::new();
                for li in l {
                    let k = list_key(li, &keys, item_node);
                    match a.iter().find(|ai| list_key(ai, &keys, item_node) == k) {
                        Some(ai) => out.push(merge(li, ai, item_node)),
                        None => out.push(li.clone()),
                    }
                }
                for ai in a {
                    let k = list_key(ai, &keys, item_node);
                    if !l.iter().any(|li| list_key(li, &keys, item_node) == k) {
                        out.push(ai.clone());
                    }
                }
                Value::Array(out)
            }
        },
        _ => applied.clone(),
    }
}

/// Removes the field at `path` from `obj`.
fn remove_path(obj: &mut Value, path: &[PathElement]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for pe in parent_path {
        let next = match (pe, cur) {
            (PathElement::Field(n), Value::Object(m)) => m.get_mut(n),
            (PathElement::Key(k), Value::Array(items)) => {
                items.iter_mut().find(|i| key_matches(i, k))
            }
            (PathElement::Value(v), Value::Array(items)) => {
                items.iter_mut().find(|i| i.to_string() == *v)
            }
            (PathElement::Index(i), Value::Array(items)) => items.get_mut(*i),
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match (last, cur) {
        (PathElement::Field(n), Value::Object(m)) => {
            m.remove(n);
        }
        (PathElement::Key(k), Value::Array(items)) => items.retain(|i| !key_matches(i, k)),
        (PathElement::Value(v), Value::Array(items)) => items.retain(|i| json_text(i) != *v),
        _ => {}
    }
}

fn key_matches(item: &Value, key: &str) -> bool {
    let Ok(Value::Object(k)) = serde_json::from_str::<Value>(key) else {
        return false;
    };
    k.iter().all(|(f, v)| item.get(f) == Some(v))
}

/// Server-side apply of `applied` by `manager` onto `live` (None: the object is created).
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    subresource: Option<&str>,
    shape: &Shape,
    rt: &ResourceType,
) -> Result<Applied, Vec<Conflict>> {
    let sub = subresource.unwrap_or_default();
    let config_fv = field_values(applied, shape, subresource, rt);
    let config_set: BTreeSet<Path> = config_fv.keys().cloned().collect();
    let mut entries = read_entries(live);
    let empty = json!({});
    let live_obj = live.unwrap_or(&empty);
    let mut merged = merge(live_obj, applied, shape.root());

    // Conflicts: fields other managers own that this apply changes.
    let live_fv = field_values(live_obj, shape, subresource, rt);
    let merged_fv = field_values(&merged, shape, subresource, rt);
    let (changed, removed) = changes(&live_fv, &merged_fv);
    let touched: BTreeSet<Path> = changed.union(&removed).cloned().collect();
    let mut conflicts = Vec::new();
    let mut conflicting: Vec<(usize, BTreeSet<Path>)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if e.same_owner(manager, "Apply", sub) || e.subresource != sub {
            continue;
        }
        let c: BTreeSet<Path> = e.fields.intersection(&touched).cloned().collect();
        if !c.is_empty() {
            for p in &c {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    operation: e.operation.clone(),
                    subresource: e.subresource.clone(),
                    api_version: e.api_version.clone(),
                    time: e.time.clone(),
                    field: display_path(p),
                });
            }
            conflicting.push((i, c));
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    for (i, c) in conflicting {
        entries[i].fields.retain(|p| !c.contains(p));
    }

    // Fields this manager applied before and no longer applies go, unless someone else owns them
    // (or something under them).
    let previous: BTreeSet<Path> = entries
        .iter()
        .find(|e| e.same_owner(manager, "Apply", sub))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others: BTreeSet<Path> = entries
        .iter()
        .filter(|e| !e.same_owner(manager, "Apply", sub))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let dropped: Vec<&Path> = previous.difference(&config_set).collect();
    for p in dropped {
        let owned_elsewhere = others.iter().any(|o| o.starts_with(p))
            || config_set.iter().any(|o| o.starts_with(p) && o != p);
        if !owned_elsewhere {
            remove_path(&mut merged, p);
        }
    }

    let now = meta::now_rfc3339();
    match entries
        .iter_mut()
        .find(|e| e.same_owner(manager, "Apply", sub))
    {
        Some(e) => {
            if e.fields != config_set {
                e.time = Some(now);
            }
            e.fields = config_set;
            e.api_version = rt.api_version();
        }
        None => entries.push(Entry {
            manager: manager.to_string(),
            operation: "Apply".into(),
            subresource: sub.to_string(),
            api_version: rt.api_version(),
            time: Some(now),
            fields: config_set,
        }),
    }
    if let Some(m) = merged.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    Ok(Applied {
        object: merged,
        managed_fields: write_entries(&entries),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn deploy_rt() -> ResourceType {
        Registry::with_builtins()
            .get("apps", "v1", "deployments")
            .cloned()
            .unwrap()
    }

    #[test]
    fn fields_v1_round_trips_with_item_markers() {
        let rt = deploy_rt();
        let shape = Shape::for_type(&rt);
        let obj = json!({"metadata": {"name": "a", "labels": {"app": "x"}}, "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let fv = field_values(&obj, &shape, None, &rt);
        let set: BTreeSet<Path> = fv.keys().cloned().collect();
        let rendered = render_fields(&set);
        assert_eq!(
            rendered,
            json!({"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}})
        );
        let mut back = BTreeSet::new();
        parse_fields(&rendered, &mut Vec::new(), &mut back);
        assert_eq!(back, set);
    }

    #[test]
    fn apply_conflicts_with_another_manager_unless_forced() {
        let rt = deploy_rt();
        let shape = Shape::for_type(&rt);
        let a = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 1}});
        let first = apply(None, &a, "alice", false, None, &shape, &rt).unwrap();
        let mut live = first.object.clone();
        live["metadata"]["managedFields"] = first.managed_fields.clone();
        let b = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 2}});
        let err = apply(Some(&live), &b, "bob", false, None, &shape, &rt).unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].manager_display(), "\"alice\" using apps/v1");
        assert_eq!(err[0].field, ".spec.replicas");
        // Same value: shared ownership, no conflict.
        assert!(apply(Some(&live), &a, "bob", false, None, &shape, &rt).is_ok());
        let forced = apply(Some(&live), &b, "bob", true, None, &shape, &rt).unwrap();
        assert_eq!(forced.object["spec"]["replicas"], 2);
        let managers: Vec<&str> = forced
            .managed_fields
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(managers, vec!["bob"]);
    }

    #[test]
    fn the_same_number_written_as_integer_or_float_is_co_owned_not_a_conflict() {
        // The server-side apply documentation, "Conflicts": managers that apply the same value
        // share it. kubectl sends `minimum: 1.0` from a YAML file as `1`; another client as `1.0`.
        let rt = deploy_rt();
        let shape = Shape::for_type(&rt);
        let template = |minimum: Value| json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "annotations": {"a": "x"}}, "spec": {"replicas": 3, "template": {"spec": {"tolerations": [{"key": "k", "tolerationSeconds": minimum}]}}}});
        let first = apply(
            None,
            &template(json!(1.0)),
            "alice",
            false,
            None,
            &shape,
            &rt,
        )
        .unwrap();
        let mut live = first.object.clone();
        live["metadata"]["managedFields"] = first.managed_fields.clone();
        assert!(
            apply(
                Some(&live),
                &template(json!(1)),
                "bob",
                false,
                None,
                &shape,
                &rt
            )
            .is_ok()
        );
        let err = apply(
            Some(&live),
            &template(json!(2)),
            "bob",
            false,
            None,
            &shape,
            &rt,
        )
        .unwrap_err();
        assert_eq!(err[0].field, ".spec.template.spec.tolerations");
        assert!(same_value(
            &json!({"a": 1, "b": [2.0]}),
            &json!({"b": [2], "a": 1.0})
        ));
        assert!(!same_value(&json!(1), &json!("1")));
    }

    #[test]
    fn fields_no_longer_applied_are_removed() {
        let rt = deploy_rt();
        let shape = Shape::for_type(&rt);
        let a = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"x": "1", "y": "2"}}});
        let first = apply(None, &a, "alice", false, None, &shape, &rt).unwrap();
        let mut live = first.object.clone();
        live["metadata"]["managedFields"] = first.managed_fields;
        let b = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"x": "1"}}});
        let second = apply(Some(&live), &b, "alice", false, None, &shape, &rt).unwrap();
        assert_eq!(second.object["metadata"]["labels"], json!({"x": "1"}));
    }

    #[test]
    fn list_map_items_merge_by_key() {
        let rt = deploy_rt();
        let shape = Shape::for_type(&rt);
        let live = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]}}}});
        let applied =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "3"}]}}}});
        let merged = merge(&live, &applied, shape.root());
        assert_eq!(
            merged["spec"]["template"]["spec"]["containers"],
            json!([{"name": "a", "image": "1"}, {"name": "b", "image": "3"}])
        );
    }

    #[test]
    fn update_takes_changed_fields_from_other_managers() {
        let rt = deploy_rt();
        let old = json!({"metadata": {"name": "d", "managedFields": [{"manager": "alice", "operation": "Apply", "apiVersion": "apps/v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}, "f:paused": {}}}}]}, "spec": {"replicas": 1, "paused": false}});
        let mut new = json!({"metadata": {"name": "d"}, "spec": {"replicas": 5, "paused": false}});
        record_update(Some(&old), &mut new, "hpa", None, &rt);
        let mf = new["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(mf[0]["fieldsV1"], json!({"f:spec": {"f:paused": {}}}));
        assert_eq!(mf[1]["manager"], "hpa");
        assert_eq!(mf[1]["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
    }
}
