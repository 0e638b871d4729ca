//! Patches: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch (the
//! built-in types' `patchStrategy`/`patchMergeKey`, with the `$patch`, `$retainKeys`,
//! `$deleteFromPrimitiveList` and `$setElementOrder` directives).

use serde_json::{Map, Value};

use crate::shape::{Node, Shape};
use crate::status::ApiError;

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    match patch {
        Value::Object(p) => {
            let mut out = match target {
                Value::Object(t) => t.clone(),
                _ => Map::new(),
            };
            for (k, v) in p {
                if v.is_null() {
                    out.remove(k);
                } else {
                    let merged = merge_patch(out.get(k).unwrap_or(&Value::Null), v);
                    out.insert(k.clone(), merged);
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// RFC 6902. A failed operation (e.g. `test`) answers 422, a malformed patch 400.
pub fn json_patch(target: &Value, patch: &Value) -> Result<Value, ApiError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let mut doc = target.clone();
    json_patch::patch(&mut doc, &ops.0).map_err(|e| {
        let mut err = ApiError::bad_request(format!(
            "the server rejected our request due to an error in our request: {e}"
        ));
        err.code = 422;
        err.reason = "Invalid".into();
        err
    })?;
    Ok(doc)
}

/// Strategic merge patch of a built-in object.
pub fn strategic_merge(target: &Value, patch: &Value, shape: &Shape) -> Result<Value, ApiError> {
    if !patch.is_object() {
        return Err(ApiError::bad_request(
            "strategic merge patch must be a JSON object",
        ));
    }
    Ok(smp_value(Some(target), patch, shape.root())?.unwrap_or(Value::Null))
}

fn is_directive(k: &str) -> bool {
    k == "$patch"
        || k == "$retainKeys"
        || k.starts_with("$setElementOrder/")
        || k.starts_with("$deleteFromPrimitiveList/")
}

/// Removes directives from a value that has no original to merge with.
fn strip_directives(v: &Value) -> Option<Value> {
    match v {
        Value::Object(m) => {
            if m.get("$patch").and_then(Value::as_str) == Some("delete") {
                return None;
            }
            let mut out = Map::new();
            for (k, v) in m {
                if is_directive(k) {
                    continue;
                }
                if let Some(s) = strip_directives(v) {
                    out.insert(k.clone(), s);
                }
            }
            Some(Value::Object(out))
        }
        Value::Array(items) => Some(Value::Array(
            items.iter().filter_map(strip_directives).collect(),
        )),
        other => Some(other.clone()),
    }
}

/// Merges `patch` into `original`; None means "delete this value".
fn smp_value(
    original: Option<&Value>,
    patch: &Value,
    node: Node<'_>,
) -> Result<Option<Value>, ApiError> {
    let Value::Object(p) = patch else {
        return Ok(Some(patch.clone()));
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("delete") => return Ok(None),
        Some("replace") => return Ok(strip_directives(patch)),
        Some("merge") | None => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown patch type: {other:?} in map"
            )));
        }
    }
    let mut out = match original {
        Some(Value::Object(o)) => o.clone(),
        _ => Map::new(),
    };
    if let Some(keep) = p.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, pv) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(del)) = (out.get_mut(field), pv.as_array()) {
                list.retain(|v| !del.contains(v));
            }
            continue;
        }
        if is_directive(k) {
            continue;
        }
        if pv.is_null() {
            out.remove(k);
            continue;
        }
        let child = node.field(k);
        let merged = match (out.get(k), pv) {
            (Some(Value::Array(o)), Value::Array(pl)) => Some(smp_list(o, pl, child)?),
            (Some(ov @ Value::Object(_)), Value::Object(_)) => smp_value(Some(ov), pv, child)?,
            (_, Value::Array(pl)) => Some(smp_list(&[], pl, child)?),
            (_, _) => strip_directives(pv),
        };
        match merged {
            Some(v) => {
                out.insert(k.clone(), v);
            }
            None => {
                out.remove(k);
            }
        }
    }
    for (k, pv) in p {
        if let Some(field) = k.strip_prefix("$setElementOrder/")
            && let (Some(Value::Array(list)), Some(order)) = (out.get_mut(field), pv.as_array())
        {
            let key = node.field(field).patch_merge_key().map(str::to_string);
            reorder(list, order, key.as_deref());
        }
    }
    Ok(Some(Value::Object(out)))
}

fn item_key<'v>(item: &'v Value, key: &str) -> Option<&'v Value> {
    item.get(key)
}

fn smp_list(original: &[Value], patch: &[Value], node: Node<'_>) -> Result<Value, ApiError> {
    let strategy = node.patch_strategy().unwrap_or_default();
    if !strategy.split(',').any(|s| s == "merge") {
        return Ok(
            strip_directives(&Value::Array(patch.to_vec())).unwrap_or(Value::Array(Vec::new()))
        );
    }
    // `$patch: replace` as a list element replaces the whole list.
    if patch
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        let rest: Vec<Value> = patch
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .cloned()
            .collect();
        return Ok(strip_directives(&Value::Array(rest)).unwrap_or(Value::Array(Vec::new())));
    }
    let mut out: Vec<Value> = original.to_vec();
    match node.patch_merge_key() {
        None => {
            // A list of primitives merged as a set.
            for item in patch {
                if !out.contains(item) {
                    out.push(item.clone());
                }
            }
        }
        Some(key) => {
            let item_node = node.items();
            for pi in patch {
                let Some(k) = item_key(pi, key) else {
                    return Err(ApiError::bad_request(format!(
                        "map: {pi} does not contain declared merge key: {key}"
                    )));
                };
                let pos = out.iter().position(|o| item_key(o, key) == Some(k));
                let deleting = pi.get("$patch").and_then(Value::as_str) == Some("delete");
                match (pos, deleting) {
                    (Some(i), true) => {
                        out.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => {
                        if let Some(m) = smp_value(Some(&out[i]), pi, item_node)? {
                            out[i] = m;
                        } else {
                            out.remove(i);
                        }
                    }
                    (None, false) => {
                        if let Some(v) = strip_directives(pi) {
                            out.push(v);
                        }
                    }
                }
            }
        }
    }
    Ok(Value::Array(out))
}

/// `$setElementOrder`: items listed come first in that order; the others keep their place after.
fn reorder(list: &mut Vec<Value>, order: &[Value], key: Option<&str>) {
    let id = |v: &Value| -> Value {
        match key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let mut ordered = Vec::new();
    for o in order {
        let want = id(o);
        if let Some(pos) = list.iter().position(|i| id(i) == want) {
            ordered.push(list.remove(pos));
        }
    }
    ordered.append(list);
    *list = ordered;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::builtin_def_name;
    use serde_json::json;

    fn deploy() -> Shape {
        Shape::Builtin(builtin_def_name("apps", "Deployment"))
    }

    #[test]
    fn merge_patch_deletes_with_null() {
        let out = merge_patch(
            &json!({"a": 1, "b": {"c": 2, "d": 3}}),
            &json!({"a": null, "b": {"c": 5}}),
        );
        assert_eq!(out, json!({"b": {"c": 5, "d": 3}}));
    }

    #[test]
    fn json_patch_test_failure_is_422() {
        let err = json_patch(
            &json!({"a": 1}),
            &json!([{"op": "test", "path": "/a", "value": 2}]),
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
        let ok = json_patch(
            &json!({"a": 1}),
            &json!([{"op": "replace", "path": "/a", "value": 2}]),
        )
        .unwrap();
        assert_eq!(ok, json!({"a": 2}));
    }

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let target = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "side", "image": "s:1"}
        ]}}}});
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "a:2", "env": [{"name": "Y", "value": "2"}]},
            {"name": "side", "$patch": "delete"}
        ]}}}});
        let out = strategic_merge(&target, &patch, &deploy()).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "app", "image": "a:2", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}])
        );
    }

    #[test]
    fn strategic_merge_replaces_lists_without_strategy() {
        let target = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "args": ["a", "b"]}]}}}});
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "args": ["c"]}]}}}});
        let out = strategic_merge(&target, &patch, &deploy()).unwrap();
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["args"],
            json!(["c"])
        );
    }

    #[test]
    fn finalizers_merge_as_a_set_and_delete_from_primitive_list() {
        let target = json!({"metadata": {"finalizers": ["a", "b"]}});
        let out = strategic_merge(&target, &json!({"metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"]}}), &deploy()).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "c"]));
    }
}
