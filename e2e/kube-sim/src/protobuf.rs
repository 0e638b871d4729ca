//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`), read with the Kubernetes
//! protobuf types of `k8s-pb`, for the kinds clients send that way: kubectl sends every built-in
//! kind it creates by a typed client as protobuf (`kubectl create namespace|secret|configmap|
//! serviceaccount`, the `SelfSubjectAccessReview` of `kubectl auth can-i`), and so does Helm for
//! its release Secrets and the DeleteOptions with which it purges them.
//!
//! The wire format ("Kubernetes Protobuf encoding", the API concepts documentation): the 4-byte
//! magic `k8s\0`, then a `runtime.Unknown` whose `typeMeta` names the apiVersion and kind and
//! whose `raw` holds the object's own message. The object is turned into the JSON the rest of the
//! server works with; a kind not listed here is 415, as before, and clients fall back to JSON.
//! Answers are JSON, which clients accept (they ask for protobuf with `*/*` as a fallback).

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_pb::api::authorization::v1 as authorization;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1::{DeleteOptions, ObjectMeta};
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;
use serde_json::{Map, Value, json};

use crate::status::ApiError;

/// The magic prefix of every Kubernetes protobuf message.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// The content type of protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

fn unsupported(what: impl std::fmt::Display) -> ApiError {
    ApiError::unsupported_media_type(format!(
        "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf ({what})"
    ))
}

fn malformed(error: prost::DecodeError) -> ApiError {
    ApiError::bad_request(format!(
        "the body of the request could not be decoded as protobuf: {error}"
    ))
}

/// The object a protobuf body holds, as JSON.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| ApiError::bad_request("the protobuf body lacks the k8s magic prefix"))?;
    let unknown = Unknown::decode(envelope).map_err(malformed)?;
    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let mut object = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => {
            namespace(core::Namespace::decode(raw.as_slice()).map_err(malformed)?)
        }
        ("v1", "Secret") => secret(core::Secret::decode(raw.as_slice()).map_err(malformed)?),
        ("v1", "ConfigMap") => {
            config_map(core::ConfigMap::decode(raw.as_slice()).map_err(malformed)?)
        }
        ("v1", "ServiceAccount") => {
            service_account(core::ServiceAccount::decode(raw.as_slice()).map_err(malformed)?)
        }
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => {
            let review = authorization::SelfSubjectAccessReview::decode(raw.as_slice())
                .map_err(malformed)?;
            let spec = review.spec.unwrap_or_default();
            json!({
                "metadata": metadata(review.metadata),
                "spec": attributes(spec.resource_attributes, spec.non_resource_attributes),
            })
        }
        ("authorization.k8s.io/v1", "SubjectAccessReview") => {
            let review =
                authorization::SubjectAccessReview::decode(raw.as_slice()).map_err(malformed)?;
            let spec = review.spec.unwrap_or_default();
            let mut attributes = attributes(spec.resource_attributes, spec.non_resource_attributes);
            attributes["user"] = json!(spec.user.unwrap_or_default());
            attributes["groups"] = json!(spec.groups);
            if let Some(uid) = spec.uid {
                attributes["uid"] = json!(uid);
            }
            json!({"metadata": metadata(review.metadata), "spec": attributes})
        }
        // The body of a delete (Helm purges its release Secrets so); clients send it as `v1` or
        // `meta.k8s.io/v1`.
        ("v1" | "meta.k8s.io/v1", "DeleteOptions") => {
            delete_options(DeleteOptions::decode(raw.as_slice()).map_err(malformed)?)
        }
        _ => return Err(unsupported(format!("a protobuf {api_version} {kind}"))),
    };
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    Ok(object)
}

/// Inserts `key: value` when `value` is not empty.
fn put(map: &mut Map<String, Value>, key: &str, value: Value) {
    let empty = match &value {
        Value::Null => true,
        Value::String(text) => text.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => fields.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    };
    if !empty {
        map.insert(key.to_owned(), value);
    }
}

/// The fields of ObjectMeta a client sets on create.
fn metadata(meta: Option<ObjectMeta>) -> Value {
    let meta = meta.unwrap_or_default();
    let mut map = Map::new();
    put(&mut map, "name", json!(meta.name));
    put(&mut map, "generateName", json!(meta.generate_name));
    put(&mut map, "namespace", json!(meta.namespace));
    put(&mut map, "labels", json!(meta.labels));
    put(&mut map, "annotations", json!(meta.annotations));
    put(&mut map, "finalizers", json!(meta.finalizers));
    put(&mut map, "resourceVersion", json!(meta.resource_version));
    put(
        &mut map,
        "ownerReferences",
        Value::Array(
            meta.owner_references
                .into_iter()
                .map(|owner| {
                    let mut map = Map::new();
                    put(&mut map, "apiVersion", json!(owner.api_version));
                    put(&mut map, "kind", json!(owner.kind));
                    put(&mut map, "name", json!(owner.name));
                    put(&mut map, "uid", json!(owner.uid));
                    if let Some(controller) = owner.controller {
                        map.insert("controller".to_owned(), json!(controller));
                    }
                    if let Some(block) = owner.block_owner_deletion {
                        map.insert("blockOwnerDeletion".to_owned(), json!(block));
                    }
                    Value::Object(map)
                })
                .collect(),
        ),
    );
    Value::Object(map)
}

fn namespace(object: core::Namespace) -> Value {
    let mut map = Map::new();
    map.insert("metadata".to_owned(), metadata(object.metadata));
    if let Some(spec) = object.spec
        && !spec.finalizers.is_empty()
    {
        map.insert("spec".to_owned(), json!({"finalizers": spec.finalizers}));
    }
    Value::Object(map)
}

fn secret(object: core::Secret) -> Value {
    let mut map = Map::new();
    map.insert("metadata".to_owned(), metadata(object.metadata));
    let data: BTreeMap<String, String> = object
        .data
        .into_iter()
        .map(|(key, value)| (key, base64::engine::general_purpose::STANDARD.encode(value)))
        .collect();
    put(&mut map, "data", json!(data));
    put(&mut map, "stringData", json!(object.string_data));
    put(&mut map, "type", json!(object.r#type));
    if let Some(immutable) = object.immutable {
        map.insert("immutable".to_owned(), json!(immutable));
    }
    Value::Object(map)
}

fn config_map(object: core::ConfigMap) -> Value {
    let mut map = Map::new();
    map.insert("metadata".to_owned(), metadata(object.metadata));
    put(&mut map, "data", json!(object.data));
    let binary: BTreeMap<String, String> = object
        .binary_data
        .into_iter()
        .map(|(key, value)| (key, base64::engine::general_purpose::STANDARD.encode(value)))
        .collect();
    put(&mut map, "binaryData", json!(binary));
    if let Some(immutable) = object.immutable {
        map.insert("immutable".to_owned(), json!(immutable));
    }
    Value::Object(map)
}

fn service_account(object: core::ServiceAccount) -> Value {
    let mut map = Map::new();
    map.insert("metadata".to_owned(), metadata(object.metadata));
    put(
        &mut map,
        "imagePullSecrets",
        Value::Array(
            object
                .image_pull_secrets
                .into_iter()
                .map(|reference| json!({"name": reference.name.unwrap_or_default()}))
                .collect(),
        ),
    );
    if let Some(automount) = object.automount_service_account_token {
        map.insert("automountServiceAccountToken".to_owned(), json!(automount));
    }
    Value::Object(map)
}

fn delete_options(options: DeleteOptions) -> Value {
    let mut map = Map::new();
    if let Some(grace) = options.grace_period_seconds {
        map.insert("gracePeriodSeconds".to_owned(), json!(grace));
    }
    if let Some(preconditions) = options.preconditions {
        let mut conditions = Map::new();
        put(&mut conditions, "uid", json!(preconditions.uid));
        put(
            &mut conditions,
            "resourceVersion",
            json!(preconditions.resource_version),
        );
        map.insert("preconditions".to_owned(), Value::Object(conditions));
    }
    if let Some(orphan) = options.orphan_dependents {
        map.insert("orphanDependents".to_owned(), json!(orphan));
    }
    put(
        &mut map,
        "propagationPolicy",
        json!(options.propagation_policy),
    );
    put(&mut map, "dryRun", json!(options.dry_run));
    Value::Object(map)
}

/// An access review's attributes, as the JSON spec has them.
fn attributes(
    resource: Option<authorization::ResourceAttributes>,
    non_resource: Option<authorization::NonResourceAttributes>,
) -> Value {
    let mut spec = Map::new();
    if let Some(attributes) = resource {
        let mut map = Map::new();
        put(&mut map, "namespace", json!(attributes.namespace));
        put(&mut map, "verb", json!(attributes.verb));
        put(&mut map, "group", json!(attributes.group));
        put(&mut map, "version", json!(attributes.version));
        put(&mut map, "resource", json!(attributes.resource));
        put(&mut map, "subresource", json!(attributes.subresource));
        put(&mut map, "name", json!(attributes.name));
        spec.insert("resourceAttributes".to_owned(), Value::Object(map));
    }
    if let Some(attributes) = non_resource {
        let mut map = Map::new();
        put(&mut map, "path", json!(attributes.path));
        put(&mut map, "verb", json!(attributes.verb));
        spec.insert("nonResourceAttributes".to_owned(), Value::Object(map));
    }
    Value::Object(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_pb::apimachinery::pkg::runtime::TypeMeta;

    /// `message` in the Kubernetes envelope, as client-go writes it.
    fn envelope(api_version: &str, kind: &str, message: &impl Message) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some(api_version.to_owned()),
                kind: Some(kind.to_owned()),
            }),
            raw: Some(message.encode_to_vec()),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut body = MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        body
    }

    #[test]
    fn a_secret_decodes_with_its_data_base64_encoded() {
        let secret = core::Secret {
            metadata: Some(ObjectMeta {
                name: Some("db".to_owned()),
                labels: BTreeMap::from([("app".to_owned(), "shop".to_owned())]),
                ..ObjectMeta::default()
            }),
            data: BTreeMap::from([("password".to_owned(), b"s3cret".to_vec())]),
            r#type: Some("Opaque".to_owned()),
            ..core::Secret::default()
        };
        let object = decode(&envelope("v1", "Secret", &secret)).unwrap();
        assert_eq!(
            object,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "labels": {"app": "shop"}}, "data": {"password": "czNjcmV0"}, "type": "Opaque"})
        );
    }

    #[test]
    fn a_self_subject_access_review_decodes_with_its_attributes() {
        let review = authorization::SelfSubjectAccessReview {
            spec: Some(authorization::SelfSubjectAccessReviewSpec {
                resource_attributes: Some(authorization::ResourceAttributes {
                    verb: Some("list".to_owned()),
                    resource: Some("secrets".to_owned()),
                    ..authorization::ResourceAttributes::default()
                }),
                non_resource_attributes: None,
            }),
            ..authorization::SelfSubjectAccessReview::default()
        };
        let object = decode(&envelope(
            "authorization.k8s.io/v1",
            "SelfSubjectAccessReview",
            &review,
        ))
        .unwrap();
        assert_eq!(
            object["spec"],
            json!({"resourceAttributes": {"verb": "list", "resource": "secrets"}})
        );
    }

    #[test]
    fn delete_options_decode_with_their_policy_and_preconditions() {
        let options = DeleteOptions {
            propagation_policy: Some("Background".to_owned()),
            grace_period_seconds: Some(0),
            ..DeleteOptions::default()
        };
        let object = decode(&envelope("v1", "DeleteOptions", &options)).unwrap();
        assert_eq!(object["propagationPolicy"], "Background");
        assert_eq!(object["gracePeriodSeconds"], 0);
        assert_eq!(object["kind"], "DeleteOptions");
    }

    #[test]
    fn other_kinds_and_bodies_without_the_magic_are_refused() {
        let pod = core::Pod::default();
        assert_eq!(decode(&envelope("v1", "Pod", &pod)).unwrap_err().code, 415);
        assert_eq!(decode(b"{}").unwrap_err().code, 400);
    }
}
