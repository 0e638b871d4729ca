//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!`) and field selectors
//! (`metadata.name`, `metadata.namespace`, plus the few per-kind fields kube-apiserver supports).

use serde_json::Value;

use crate::status::ApiError;

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq)]
pub enum Requirement {
    /// `key=value` / `key==value`.
    Equals(String, String),
    /// `key!=value` (also matches when the label is absent).
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)` (also matches when the label is absent).
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
}

/// A parsed label selector: all requirements must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector {
    /// The requirements, ANDed.
    pub requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter syntax.
    pub fn parse(input: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for part in split_top_level(input) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(part)?);
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether `labels` (an object of string values, or null) satisfies the selector.
    pub fn matches(&self, labels: Option<&Value>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
        })
    }

    /// Converts a `metav1.LabelSelector` object (matchLabels + matchExpressions) into requirements.
    pub fn from_label_selector_object(sel: &Value) -> Result<Self, String> {
        let mut requirements = Vec::new();
        if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in ml {
                let v = v
                    .as_str()
                    .ok_or_else(|| format!("matchLabels[{k}] must be a string"))?;
                requirements.push(Requirement::Equals(k.clone(), v.to_string()));
            }
        }
        if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e
                    .get("key")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                let op = e
                    .get("operator")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                requirements.push(match op {
                    "In" => Requirement::In(key, values),
                    "NotIn" => Requirement::NotIn(key, values),
                    "Exists" => Requirement::Exists(key),
                    "DoesNotExist" => Requirement::DoesNotExist(key),
                    other => {
                        return Err(format!("{other:?} is not a valid label selector operator"));
                    }
                });
            }
        }
        Ok(LabelSelector { requirements })
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(input: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&input[start..]);
    parts
}

fn bad_selector(input: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!("unable to parse requirement: {why}: {input:?}"))
}

fn parse_requirement(part: &str) -> Result<Requirement, ApiError> {
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        check_key(key, part)?;
        return Ok(Requirement::DoesNotExist(key.to_string()));
    }
    if let Some((k, v)) = part.split_once("!=") {
        let (k, v) = (k.trim(), v.trim());
        check_key(k, part)?;
        check_value(v, part)?;
        return Ok(Requirement::NotEquals(k.into(), v.into()));
    }
    if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
        let (k, v) = (k.trim(), v.trim());
        check_key(k, part)?;
        check_value(v, part)?;
        return Ok(Requirement::Equals(k.into(), v.into()));
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let key = words[0].trim();
        let rest = words[1].trim();
        let (op, list) = if let Some(l) = rest.strip_prefix("notin") {
            ("notin", l)
        } else if let Some(l) = rest.strip_prefix("in") {
            ("in", l)
        } else {
            return Err(bad_selector(part, "found unknown operator"));
        };
        check_key(key, part)?;
        let list = list.trim();
        let inner = list
            .strip_prefix('(')
            .and_then(|l| l.strip_suffix(')'))
            .ok_or_else(|| bad_selector(part, "expected a parenthesised set of values"))?;
        let values: Vec<String> = inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        for v in &values {
            check_value(v, part)?;
        }
        if values.is_empty() {
            return Err(bad_selector(
                part,
                "for 'in', 'notin' operators, values set can't be empty",
            ));
        }
        return Ok(if op == "in" {
            Requirement::In(key.into(), values)
        } else {
            Requirement::NotIn(key.into(), values)
        });
    }
    check_key(part, part)?;
    Ok(Requirement::Exists(part.to_string()))
}

fn check_key(key: &str, part: &str) -> Result<(), ApiError> {
    crate::names::validate_qualified_name(key)
        .map_err(|why| bad_selector(part, &format!("invalid label key {key:?}: {why}")))
}

fn check_value(value: &str, part: &str) -> Result<(), ApiError> {
    crate::names::validate_label_value(value)
        .map_err(|why| bad_selector(part, &format!("invalid label value: {value:?}: {why}")))
}

/// One field selector term.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldTerm {
    /// The field, e.g. `metadata.name`.
    pub field: String,
    /// Whether the term is `!=`.
    pub negated: bool,
    /// The value compared against.
    pub value: String,
}

/// A parsed field selector.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelector {
    /// The terms, ANDed.
    pub terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// Parses a field selector; `kind` decides which fields are supported (as kube-apiserver does).
    pub fn parse(input: &str, kind: &str, namespaced: bool) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for part in input.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (field, negated, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, false, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{input}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            if !field_supported(field, kind, namespaced) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            terms.push(FieldTerm {
                field: field.to_string(),
                negated,
                value: value.trim().to_string(),
            });
        }
        Ok(FieldSelector { terms })
    }

    /// Whether the object satisfies every term.
    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|t| {
            let actual = field_value(obj, &t.field);
            (actual == t.value) != t.negated
        })
    }

    /// The value of a `metadata.name=` term, if any (for watches on one object).
    pub fn name(&self) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == "metadata.name" && !t.negated)
            .map(|t| t.value.as_str())
    }
}

fn field_supported(field: &str, kind: &str, namespaced: bool) -> bool {
    if field == "metadata.name" || (field == "metadata.namespace" && namespaced) {
        return true;
    }
    match kind {
        "Pod" => matches!(
            field,
            "spec.nodeName"
                | "spec.restartPolicy"
                | "spec.schedulerName"
                | "spec.serviceAccountName"
                | "spec.hostNetwork"
                | "status.phase"
                | "status.podIP"
                | "status.nominatedNodeName"
        ),
        "Event" => matches!(
            field,
            "involvedObject.kind"
                | "involvedObject.namespace"
                | "involvedObject.name"
                | "involvedObject.uid"
                | "involvedObject.apiVersion"
                | "involvedObject.resourceVersion"
                | "involvedObject.fieldPath"
                | "reason"
                | "reportingComponent"
                | "reportingController"
                | "source"
                | "type"
                | "regarding.kind"
                | "regarding.namespace"
                | "regarding.name"
                | "regarding.uid"
        ),
        "Secret" => field == "type",
        "Namespace" => field == "status.phase",
        "Job" => field == "status.successful",
        _ => false,
    }
}

fn field_value(obj: &Value, field: &str) -> String {
    let mut cur = obj;
    for seg in field.split('.') {
        match cur.get(seg) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_based_and_equality_requirements_combine() {
        let sel = LabelSelector::parse("app in (web, worker),tier!=db,env,!legacy").unwrap();
        assert!(sel.matches(Some(&json!({"app": "web", "env": "prod"}))));
        assert!(!sel.matches(Some(&json!({"app": "web"}))));
        assert!(!sel.matches(Some(&json!({"app": "web", "env": "x", "legacy": "1"}))));
        assert!(!sel.matches(Some(&json!({"app": "api", "env": "x"}))));
        assert!(!sel.matches(Some(&json!({"app": "web", "env": "x", "tier": "db"}))));
    }

    #[test]
    fn notin_matches_absent_label() {
        let sel = LabelSelector::parse("app notin (web)").unwrap();
        assert!(sel.matches(None));
        assert!(!sel.matches(Some(&json!({"app": "web"}))));
    }

    #[test]
    fn double_equals_is_equality() {
        let sel = LabelSelector::parse("app==web").unwrap();
        assert_eq!(
            sel.requirements,
            vec![Requirement::Equals("app".into(), "web".into())]
        );
    }

    #[test]
    fn bad_label_key_is_rejected() {
        assert!(LabelSelector::parse("-bad=1").is_err());
    }

    #[test]
    fn unsupported_field_is_a_bad_request() {
        let err = FieldSelector::parse("spec.replicas=1", "Deployment", true).unwrap_err();
        assert_eq!(err.code, 400);
        assert_eq!(err.message, "field label not supported: spec.replicas");
    }

    #[test]
    fn field_selector_matches_name_and_namespace() {
        let sel = FieldSelector::parse("metadata.name=a,metadata.namespace!=b", "ConfigMap", true)
            .unwrap();
        assert!(sel.matches(&json!({"metadata": {"name": "a", "namespace": "c"}})));
        assert!(!sel.matches(&json!({"metadata": {"name": "a", "namespace": "b"}})));
    }
}
