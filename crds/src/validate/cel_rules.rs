//! Where a schema's CEL rules are, and a walk that evaluates only the rules whose result can
//! matter.
//!
//! kube-cel evaluates a subtree by converting the value at every node to CEL, rules or not. The
//! walk here calls it only at nodes that carry rules, and skips:
//! - subtrees without rules;
//! - subtrees unchanged since the old object that hold no transition rule: kube-apiserver ratchets
//!   the errors of non-transition rules on unchanged values, so evaluating them cannot change the
//!   outcome (a status write leaves the spec, and its rules, alone);
//! - at the root, everything but `apiVersion`, `kind`, `metadata.name` and
//!   `metadata.generateName`, which is all kube-apiserver lets a root rule see — when the root's
//!   rules read nothing else.

use std::collections::HashMap;

use kube::core::cel;
use serde_json::{Map, Value};

/// The fields of the root object a root rule can read (besides `spec`, `status` and the like).
const ROOT_IDENTITY: [&str; 3] = ["apiVersion", "kind", "metadata"];
/// What of `metadata` kube-apiserver exposes to CEL.
const VISIBLE_METADATA: [&str; 2] = ["name", "generateName"];

/// Which nodes of a schema carry CEL rules, mirroring the compiled schema's shape.
#[derive(Debug, Default)]
struct RuleMap {
    /// Rules on this node.
    own: bool,
    /// Rules on this node or below.
    any: bool,
    /// Transition rules (`oldSelf`), or rules that did not compile, on this node or below.
    any_transition: bool,
    properties: HashMap<String, RuleMap>,
    items: Option<Box<RuleMap>>,
    additional_properties: Option<Box<RuleMap>>,
    /// `allOf`, `oneOf` and `anyOf` branches, in that order.
    branches: Vec<RuleMap>,
}

impl RuleMap {
    fn of(node: &cel::CompiledSchema) -> Self {
        let own = !node.validations.is_empty();
        let own_transition = own_transition(node);
        let properties: HashMap<String, RuleMap> = node
            .properties
            .iter()
            .map(|(name, child)| (name.clone(), RuleMap::of(child)))
            .collect();
        let items = node
            .items
            .as_deref()
            .map(|items| Box::new(RuleMap::of(items)));
        let additional_properties = node
            .additional_properties
            .as_deref()
            .map(|additional| Box::new(RuleMap::of(additional)));
        let branches: Vec<RuleMap> = branches(node).map(RuleMap::of).collect();
        let children = properties
            .values()
            .chain(items.as_deref())
            .chain(additional_properties.as_deref())
            .chain(branches.iter());
        let (mut any, mut any_transition) = (own, own_transition);
        for child in children {
            any |= child.any;
            any_transition |= child.any_transition;
        }
        RuleMap {
            own,
            any,
            any_transition,
            properties,
            items,
            additional_properties,
            branches,
        }
    }
}

fn branches(node: &cel::CompiledSchema) -> impl Iterator<Item = &cel::CompiledSchema> {
    node.all_of
        .iter()
        .chain(node.one_of.iter())
        .chain(node.any_of.iter())
}

/// A schema's CEL rules, compiled once.
pub(super) struct CelRules {
    compiled: cel::CompiledSchema,
    map: RuleMap,
    /// The root's own rules over `apiVersion`, `kind` and `metadata` alone, when they read
    /// nothing else.
    root_only: Option<cel::CompiledSchema>,
}

impl CelRules {
    /// Compiles the rules of `schema` (an `openAPIV3Schema`).
    pub(super) fn new(schema: &Value) -> Self {
        let compiled = cel::compile_schema(schema);
        let map = RuleMap::of(&compiled);
        let root_only = root_only_schema(schema).map(|root| cel::compile_schema(&root));
        CelRules {
            compiled,
            map,
            root_only,
        }
    }

    /// Evaluates the rules whose outcome can matter for `object` (updating `old`), with the
    /// errors' paths relative to the root.
    pub(super) fn evaluate(
        &self,
        validator: &cel::Validator,
        object: &Value,
        old: Option<&Value>,
        root: &cel::RootContext,
    ) -> Vec<cel::ValidationError> {
        let mut walk = Walk {
            validator,
            errors: Vec::new(),
        };
        if !self.map.any {
            return walk.errors;
        }
        match (&self.root_only, self.map.own) {
            (Some(root_only), true) => {
                let visible = visible_to_root_rules(object);
                let visible_old = old.map(visible_to_root_rules);
                walk.evaluate(root_only, &visible, visible_old.as_ref(), "", Some(root));
                walk.children(&self.compiled, &self.map, object, old, "");
                for (branch, map) in branches(&self.compiled).zip(&self.map.branches) {
                    walk.node(branch, map, object, old, "", Some(root));
                }
            }
            _ => walk.node(&self.compiled, &self.map, object, old, "", Some(root)),
        }
        walk.errors
    }
}

struct Walk<'v> {
    validator: &'v cel::Validator,
    errors: Vec<cel::ValidationError>,
}

impl Walk<'_> {
    fn node(
        &mut self,
        compiled: &cel::CompiledSchema,
        map: &RuleMap,
        value: &Value,
        old: Option<&Value>,
        path: &str,
        root: Option<&cel::RootContext>,
    ) {
        if !map.any {
            return;
        }
        let unchanged = old.is_some_and(|old| old == value);
        if unchanged && !map.any_transition {
            return;
        }
        if map.own && (!unchanged || own_transition(compiled)) {
            // kube-cel evaluates this node and everything below it.
            self.evaluate(compiled, value, old, path, root);
            return;
        }
        self.children(compiled, map, value, old, path);
        for (branch, branch_map) in branches(compiled).zip(&map.branches) {
            self.node(branch, branch_map, value, old, path, root);
        }
    }

    /// The children of a node whose own rules are taken care of (the same descent as kube-cel's).
    fn children(
        &mut self,
        compiled: &cel::CompiledSchema,
        map: &RuleMap,
        value: &Value,
        old: Option<&Value>,
        path: &str,
    ) {
        if let Some(object) = value.as_object() {
            for (name, child) in &compiled.properties {
                let (Some(child_value), Some(child_map)) =
                    (object.get(name), map.properties.get(name))
                else {
                    continue;
                };
                let child_old = old.and_then(|old| old.get(name));
                self.node(
                    child,
                    child_map,
                    child_value,
                    child_old,
                    &join(path, name),
                    None,
                );
            }
            if !compiled.preserve_unknown_fields
                && let (Some(additional), Some(additional_map)) = (
                    compiled.additional_properties.as_deref(),
                    map.additional_properties.as_deref(),
                )
            {
                for (key, child_value) in object {
                    if compiled.properties.contains_key(key) {
                        continue;
                    }
                    let child_old = old.and_then(|old| old.get(key));
                    self.node(
                        additional,
                        additional_map,
                        child_value,
                        child_old,
                        &join(path, key),
                        None,
                    );
                }
            }
        }
        if let (Some(items), Some(items_map), Some(list)) = (
            compiled.items.as_deref(),
            map.items.as_deref(),
            value.as_array(),
        ) {
            for (index, item) in list.iter().enumerate() {
                let item_old = old.and_then(Value::as_array).and_then(|old| old.get(index));
                self.node(
                    items,
                    items_map,
                    item,
                    item_old,
                    &format!("{path}[{index}]"),
                    None,
                );
            }
        }
    }

    /// kube-cel on one subtree, its error paths made relative to the root.
    fn evaluate(
        &mut self,
        compiled: &cel::CompiledSchema,
        value: &Value,
        old: Option<&Value>,
        path: &str,
        root: Option<&cel::RootContext>,
    ) {
        let Err(errors) = self
            .validator
            .validate_compiled_with_context(compiled, value, old, root)
        else {
            return;
        };
        self.errors.extend(errors.into_iter().map(|mut error| {
            error.field_path = prefixed(path, &error.field_path);
            error
        }));
    }
}

/// Whether a node carries a transition rule (or a rule that did not compile: always reported).
fn own_transition(compiled: &cel::CompiledSchema) -> bool {
    compiled
        .validations
        .iter()
        .any(|rule| rule.as_ref().map_or(true, |rule| rule.is_transition_rule))
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// A kube-cel path within a subtree at `base`, as a path from the root.
fn prefixed(base: &str, within: &str) -> String {
    if base.is_empty() {
        within.to_owned()
    } else if within.is_empty() {
        base.to_owned()
    } else if within.starts_with('[') {
        format!("{base}{within}")
    } else {
        format!("{base}.{}", within.trim_start_matches('.'))
    }
}

/// The root schema with only its own rules and the properties a root rule can see, when every
/// root rule reads only `self.apiVersion`, `self.kind` or `self.metadata` (and the same of
/// `oldSelf`). `None` otherwise: the root is evaluated whole.
fn root_only_schema(schema: &Value) -> Option<Value> {
    let rules = schema.get("x-kubernetes-validations")?.as_array()?;
    let reads_only_identity = rules.iter().all(|rule| {
        ["rule", "messageExpression"].iter().all(|field| {
            rule.get(*field)
                .and_then(Value::as_str)
                .is_none_or(reads_only_root_identity)
        })
    });
    if !reads_only_identity {
        return None;
    }
    let mut root = schema.as_object()?.clone();
    for keyword in ["allOf", "oneOf", "anyOf", "additionalProperties"] {
        root.remove(keyword);
    }
    let properties: Map<String, Value> = schema
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(name, _)| ROOT_IDENTITY.contains(&name.as_str()))
        .map(|(name, property)| {
            let mut property = property.clone();
            strip_rules(&mut property);
            (name.clone(), property)
        })
        .collect();
    root.insert("properties".to_owned(), Value::Object(properties));
    Some(Value::Object(root))
}

/// Removes every `x-kubernetes-validations` in a schema subtree.
fn strip_rules(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            map.remove("x-kubernetes-validations");
            map.values_mut().for_each(strip_rules);
        }
        Value::Array(list) => list.iter_mut().for_each(strip_rules),
        _ => {}
    }
}

/// Whether every `self` and `oldSelf` in a CEL expression is followed by `.apiVersion`, `.kind` or
/// `.metadata`. Conservative: any other use (a bare `self`, a macro on it, a string that happens
/// to contain the word) answers false.
fn reads_only_root_identity(expression: &str) -> bool {
    let bytes = expression.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut at = 0;
    while at < bytes.len() {
        let rest = &expression[at..];
        let word = ["oldSelf", "self"]
            .into_iter()
            .find(|word| rest.starts_with(word));
        let starts_word = at == 0 || !is_ident(bytes[at - 1]);
        match word {
            Some(word)
                if starts_word
                    && !rest[word.len()..]
                        .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') =>
            {
                let after = &rest[word.len()..];
                let reads_identity = ROOT_IDENTITY.iter().any(|field| {
                    after
                        .strip_prefix('.')
                        .and_then(|after| after.strip_prefix(field))
                        .is_some_and(|tail| {
                            !tail.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                        })
                });
                if !reads_identity {
                    return false;
                }
                at += word.len();
            }
            _ => at += rest.chars().next().map_or(1, char::len_utf8),
        }
    }
    true
}

/// What a root rule sees of an object: `apiVersion`, `kind` and `metadata.name`/`generateName`.
fn visible_to_root_rules(object: &Value) -> Value {
    let mut visible = Map::new();
    for field in ["apiVersion", "kind"] {
        if let Some(value) = object.get(field) {
            visible.insert(field.to_owned(), value.clone());
        }
    }
    if let Some(metadata) = object.get("metadata").and_then(Value::as_object) {
        let metadata: Map<String, Value> = metadata
            .iter()
            .filter(|(name, _)| VISIBLE_METADATA.contains(&name.as_str()))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        visible.insert("metadata".to_owned(), Value::Object(metadata));
    }
    Value::Object(visible)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_identity_reads_are_recognised_and_anything_else_is_not() {
        for only_identity in [
            "self.metadata.name.matches('^[a-z]+$')",
            "size(self.metadata.name) <= 40",
            "self.kind == 'KumikoApp' && oldSelf.metadata.name == self.metadata.name",
            "has(self.metadata.generateName)",
        ] {
            assert!(reads_only_root_identity(only_identity), "{only_identity}");
        }
        for reads_more in [
            "self.spec.replicas > 0",
            "has(self.status)",
            "self == oldSelf",
            "self.all(k, k != 'x')",
            "size(self) > 1",
            "oldSelf.spec == self.spec",
            "self.metadataX == 1",
        ] {
            assert!(!reads_only_root_identity(reads_more), "{reads_more}");
        }
        // Identifiers that merely contain the words are not `self`.
        assert!(reads_only_root_identity("myself.x == 1 || selfish == 2"));
    }

    #[test]
    fn subtree_paths_are_made_relative_to_the_root() {
        assert_eq!(prefixed("", ".size"), ".size");
        assert_eq!(prefixed("spec.database", ""), "spec.database");
        assert_eq!(prefixed("spec.database", ".size"), "spec.database.size");
        assert_eq!(prefixed("spec.env", "[2].name"), "spec.env[2].name");
        assert_eq!(prefixed("spec", "quota.cpu"), "spec.quota.cpu");
    }
}
