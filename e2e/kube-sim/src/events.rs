//! core/v1 Events and events.k8s.io/v1 Events are the same objects seen through two versions, as
//! in Kubernetes: they are stored in the core form and converted field by field.

use serde_json::{Map, Value, json};

/// (core/v1 field, events.k8s.io/v1 field).
const RENAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

fn rename(obj: &Value, forward: bool, api_version: &str) -> Value {
    let Some(map) = obj.as_object() else {
        return obj.clone();
    };
    let mut out = Map::new();
    for (k, v) in map {
        let renamed = RENAMES
            .iter()
            .find(|(core, events)| if forward { core == k } else { events == k })
            .map(|(core, events)| if forward { *events } else { *core });
        out.insert(renamed.unwrap_or(k).to_string(), v.clone());
    }
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!("Event"));
    Value::Object(out)
}

/// A stored (core/v1) Event as events.k8s.io/v1.
pub fn core_to_events(obj: &Value) -> Value {
    rename(obj, true, "events.k8s.io/v1")
}

/// An events.k8s.io/v1 Event in the stored core/v1 form.
pub fn events_to_core(obj: &Value) -> Value {
    rename(obj, false, "v1")
}

/// A field selector field of events.k8s.io/v1 in the core form (`regarding.name` →
/// `involvedObject.name`).
pub fn core_field(field: &str) -> String {
    for (core, events) in RENAMES {
        if field == *events {
            return (*core).to_string();
        }
        if let Some(rest) = field.strip_prefix(&format!("{events}.")) {
            return format!("{core}.{rest}");
        }
    }
    field.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_between_versions() {
        let core = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"}, "involvedObject": {"name": "x"}, "message": "hi", "reportingComponent": "op", "reason": "R"});
        let ev = core_to_events(&core);
        assert_eq!(ev["regarding"]["name"], "x");
        assert_eq!(ev["note"], "hi");
        assert_eq!(ev["reportingController"], "op");
        assert_eq!(events_to_core(&ev), core);
        assert_eq!(core_field("regarding.name"), "involvedObject.name");
    }
}
