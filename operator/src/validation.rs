//! Checks a KumikoApp manifest as the API server would (with `fieldValidation=Strict`) before the
//! operator builds anything from it: unknown fields, types, bounds and patterns of the structural
//! schema, defaults applied, then every CEL rule of the CRD. All problems are reported at once.

use kube::CustomResourceExt;
use kumiko_crds::KumikoApp;
use serde_json::Value;

/// The KumikoApp CRD's `openAPIV3Schema`, as JSON (an error, never a `null` schema that would
/// accept anything, when it is missing or does not serialize).
pub fn app_schema() -> Result<Value, String> {
    let crd = KumikoApp::crd();
    let schema = crd
        .spec
        .versions
        .first()
        .and_then(|version| version.schema.as_ref())
        .and_then(|schema| schema.open_api_v3_schema.as_ref())
        .ok_or_else(|| "the KumikoApp CRD has no openAPIV3Schema".to_owned())?;
    serde_json::to_value(schema)
        .map_err(|error| format!("the KumikoApp CRD's schema does not serialize: {error}"))
}

/// Validates `object` (a KumikoApp as JSON) and returns it with the schema's defaults applied, or
/// every problem found, each naming the field.
pub fn validate_app(object: &Value) -> Result<Value, Vec<String>> {
    let schema = app_schema().map_err(|problem| vec![problem])?;
    let validated =
        kumiko_crds::validate::validate(&schema, object, None, "kumiko.so/v1alpha1", "KumikoApp");
    let mut problems: Vec<String> = validated
        .unknown_fields
        .iter()
        .map(|field| format!("{field}: unknown field (not in the KumikoApp schema; check the spelling with `kubectl explain kumikoapp.spec`)"))
        .collect();
    problems.extend(validated.errors.iter().map(ToString::to_string));
    if problems.is_empty() {
        Ok(validated.object)
    } else {
        Err(problems)
    }
}
