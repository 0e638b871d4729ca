//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`) of every built-in kind kube-sim
//! serves: kubectl sends the kinds it creates by a typed client as protobuf (`kubectl create
//! deployment|job|service|role|quota|secret|configmap|namespace|...`, the `SelfSubjectAccessReview`
//! of `kubectl auth can-i`), and so does Helm for its release Secrets and the DeleteOptions with
//! which it purges them.
//!
//! The wire format ("Kubernetes Protobuf encoding", the API concepts documentation): the 4-byte
//! magic `k8s\0`, then a `runtime.Unknown` whose `typeMeta` names the apiVersion and kind and
//! whose `raw` holds the object's own message. The messages are read through the descriptors of
//! the Kubernetes `.proto` files (`protos/`, compiled by `build.rs`), and turned into the JSON the
//! rest of the server works with, field by field: Kubernetes names its proto fields as its JSON
//! fields, and the few types whose JSON is not their message's shape (Quantity, IntOrString, Time,
//! MicroTime, Duration, FieldsV1, RawExtension, the apiextensions JSON and its either-or schema
//! types) are written as their Go `MarshalJSON` writes them. A kind with no message here (a custom
//! resource: clients send those as JSON) is 415.
//!
//! Go's protobuf code writes every non-pointer field, zero or not, and reads a zero back as unset;
//! only pointer fields are written when set. The proto cannot tell the two apart, so empty strings
//! are read as unset (defaulting then applies, as it does in Go: `restartPolicy`, `protocol`),
//! while zero numbers and `false` are kept: a pointer's 0 (`replicas: 0`) means something, a
//! non-pointer's 0 (`hostPort: 0`) is the value Go would default to anyway, and only shows in
//! the stored object where kube-apiserver's JSON leaves it out.
//!
//! Answers: [`encode`] writes built-in objects, lists and Status errors the same way, for clients
//! whose first choice is protobuf (see `api::protobuf_responses`).

use std::sync::OnceLock;

use base64::Engine as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, MapKey, MessageDescriptor, ReflectMessage as _, Value as Field,
};
use serde_json::{Map, Value, json};

use crate::status::ApiError;

/// The magic prefix of every Kubernetes protobuf message.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// The content type of protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The descriptors of `protos/`, compiled by `build.rs`.
static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kubernetes-protos.bin"));

/// The descriptor pool, decoded once. `None` only if the build wrote a broken set, which the
/// tests would catch; requests then get 415 rather than a panic.
fn pool() -> Option<&'static DescriptorPool> {
    static POOL: OnceLock<Option<DescriptorPool>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(DESCRIPTORS).ok())
        .as_ref()
}

fn unsupported(what: impl std::fmt::Display) -> ApiError {
    ApiError::unsupported_media_type(format!(
        "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf ({what})"
    ))
}

fn malformed(error: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!(
        "the body of the request could not be decoded as protobuf: {error}"
    ))
}

/// The proto package of an API group's version, as `protos/` names them.
fn package(group: &str, version: &str) -> Option<String> {
    let short = match group {
        "" => "core",
        "meta.k8s.io" => return Some(format!("apimachinery.pkg.apis.meta.{version}")),
        "apiextensions.k8s.io" => {
            return Some(format!(
                "apiextensions_apiserver.pkg.apis.apiextensions.{version}"
            ));
        }
        "rbac.authorization.k8s.io" => "rbac",
        "apps" | "batch" | "policy" | "autoscaling" => group,
        other => other.strip_suffix(".k8s.io")?,
    };
    Some(format!("api.{short}.{version}"))
}

/// The message of `kind` in `apiVersion`. DeleteOptions (and the other meta options) come as
/// `v1` or `meta.k8s.io/v1`.
fn message_of(pool: &DescriptorPool, api_version: &str, kind: &str) -> Option<MessageDescriptor> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let own = package(group, version)
        .and_then(|package| pool.get_message_by_name(&format!("{package}.{kind}")));
    // The meta kinds (DeleteOptions, Status, ...) come as `v1` or `meta.k8s.io/v1`.
    own.or_else(|| {
        group
            .is_empty()
            .then(|| {
                pool.get_message_by_name(&format!("apimachinery.pkg.apis.meta.{version}.{kind}"))
            })
            .flatten()
    })
}

/// The object a protobuf body holds, as JSON.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| ApiError::bad_request("the protobuf body lacks the k8s magic prefix"))?;
    let pool = pool().ok_or_else(|| unsupported("kube-sim has no protobuf descriptors"))?;
    let unknown_type = pool
        .get_message_by_name("apimachinery.pkg.runtime.Unknown")
        .ok_or_else(|| unsupported("kube-sim has no runtime.Unknown descriptor"))?;
    let unknown = DynamicMessage::decode(unknown_type, envelope).map_err(malformed)?;
    let text = |message: &DynamicMessage, name: &str| {
        message
            .get_field_by_name(name)
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let type_meta = unknown
        .get_field_by_name("typeMeta")
        .and_then(|value| value.as_message().cloned());
    let (api_version, kind) = type_meta
        .map(|meta| (text(&meta, "apiVersion"), text(&meta, "kind")))
        .unwrap_or_default();
    let raw = unknown
        .get_field_by_name("raw")
        .and_then(|value| value.as_bytes().cloned())
        .unwrap_or_default();
    let descriptor = message_of(pool, &api_version, &kind)
        .ok_or_else(|| unsupported(format!("a protobuf {api_version} {kind}")))?;
    let message = DynamicMessage::decode(descriptor, raw).map_err(malformed)?;
    let mut object = to_json(&message)?;
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    Ok(object)
}

/// A message as the Kubernetes JSON of its Go type.
fn to_json(message: &DynamicMessage) -> Result<Value, ApiError> {
    let field = |name: &str| message.get_field_by_name(name);
    let full_name = message.descriptor().full_name().to_owned();
    let short = full_name.rsplit('.').next().unwrap_or_default();
    let special = match (full_name.as_str(), short) {
        ("apimachinery.pkg.api.resource.Quantity", _) => Some(json!(
            field("string")
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        )),
        ("apimachinery.pkg.util.intstr.IntOrString", _) => {
            let is_string = field("type").and_then(|v| v.as_i64()).unwrap_or(0) == 1;
            Some(if is_string {
                json!(
                    field("strVal")
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                )
            } else {
                json!(field("intVal").and_then(|v| v.as_i32()).unwrap_or(0))
            })
        }
        // Go writes a zero time as an empty message (apimachinery
        // `pkg/apis/meta/v1/time_proto.go`: size 0), read back as the zero time, whose JSON is null.
        ("apimachinery.pkg.apis.meta.v1.Time" | "apimachinery.pkg.apis.meta.v1.MicroTime", _)
            if message.fields().next().is_none() =>
        {
            Some(Value::Null)
        }
        ("apimachinery.pkg.apis.meta.v1.Time", _) => {
            let seconds = field("seconds").and_then(|v| v.as_i64()).unwrap_or(0);
            Some(json!(timestamp(seconds, 0, false)?))
        }
        ("apimachinery.pkg.apis.meta.v1.MicroTime", _) => {
            let seconds = field("seconds").and_then(|v| v.as_i64()).unwrap_or(0);
            let nanos = field("nanos").and_then(|v| v.as_i32()).unwrap_or(0);
            Some(json!(timestamp(seconds, nanos, true)?))
        }
        ("apimachinery.pkg.apis.meta.v1.Duration", _) => Some(json!(go_duration(
            field("duration").and_then(|v| v.as_i64()).unwrap_or(0)
        ))),
        ("apimachinery.pkg.apis.meta.v1.Verbs", _) => Some(
            field("items")
                .map(|items| field_to_json(&items))
                .transpose()?
                .unwrap_or_else(|| json!([])),
        ),
        ("apimachinery.pkg.apis.meta.v1.FieldsV1", _) => Some(raw_json(field("Raw").as_deref())?),
        ("apimachinery.pkg.runtime.RawExtension", _) => Some(raw_json(field("raw").as_deref())?),
        (name, "JSON") if name.starts_with("apiextensions_apiserver.") => {
            Some(raw_json(field("raw").as_deref())?)
        }
        (name, "JSONSchemaPropsOrBool") if name.starts_with("apiextensions_apiserver.") => {
            match field("schema").filter(|_| message.has_field_by_name("schema")) {
                Some(schema) => Some(field_to_json(&schema)?),
                None => Some(json!(
                    field("allows").and_then(|v| v.as_bool()).unwrap_or(false)
                )),
            }
        }
        (name, "JSONSchemaPropsOrArray") if name.starts_with("apiextensions_apiserver.") => {
            if message.has_field_by_name("jSONSchemas") {
                field("jSONSchemas")
                    .map(|v| field_to_json(&v))
                    .transpose()?
            } else {
                field("schema").map(|v| field_to_json(&v)).transpose()?
            }
        }
        (name, "JSONSchemaPropsOrStringArray") if name.starts_with("apiextensions_apiserver.") => {
            if message.has_field_by_name("property") {
                field("property").map(|v| field_to_json(&v)).transpose()?
            } else {
                field("schema").map(|v| field_to_json(&v)).transpose()?
            }
        }
        _ => None,
    };
    if let Some(value) = special {
        return Ok(value);
    }
    let schema_props =
        full_name.starts_with("apiextensions_apiserver.") && short == "JSONSchemaProps";
    let inline = inline_fields(&message.descriptor());
    let mut map = Map::new();
    for (descriptor, value) in message.fields() {
        if inline.contains(&descriptor) {
            if let Value::Object(fields) = field_to_json(value)? {
                map.extend(fields);
            }
            continue;
        }
        // Go's protobuf code writes every non-pointer string, empty or not, and Go reads an empty
        // one back as unset: the defaulting that follows (`restartPolicy: Always`, `protocol:
        // TCP`, ...) sees no value. Its JSON leaves such a field out, so this does too.
        if matches!(value, Field::String(text) if text.is_empty()) {
            continue;
        }
        let name = descriptor.name();
        let key = if schema_props {
            schema_props_key(name)
        } else {
            name.to_owned()
        };
        map.insert(key, field_to_json(value)?);
    }
    Ok(Value::Object(map))
}

/// The JSON names of `JSONSchemaProps` that are not its proto names (`$ref`, `$schema`,
/// `x-kubernetes-*`).
fn schema_props_key(name: &str) -> String {
    match name {
        "ref" => "$ref".to_owned(),
        "schema" => "$schema".to_owned(),
        _ => match name.strip_prefix("xKubernetes") {
            Some(rest) => {
                let mut key = String::from("x-kubernetes");
                for c in rest.chars() {
                    if c.is_ascii_uppercase() {
                        key.push('-');
                        key.push(c.to_ascii_lowercase());
                    } else {
                        key.push(c);
                    }
                }
                key
            }
            None => name.to_owned(),
        },
    }
}

fn field_to_json(value: &Field) -> Result<Value, ApiError> {
    Ok(match value {
        Field::Bool(b) => json!(b),
        Field::I32(n) => json!(n),
        Field::I64(n) => json!(n),
        Field::U32(n) => json!(n),
        Field::U64(n) => json!(n),
        Field::F32(n) => json!(n),
        Field::F64(n) => json!(n),
        Field::String(text) => json!(text),
        Field::Bytes(bytes) => json!(base64::engine::general_purpose::STANDARD.encode(bytes)),
        Field::EnumNumber(n) => json!(n),
        Field::Message(message) => to_json(message)?,
        Field::List(items) => {
            Value::Array(items.iter().map(field_to_json).collect::<Result<_, _>>()?)
        }
        Field::Map(entries) => {
            let mut map = Map::new();
            for (key, value) in entries {
                let key = match key {
                    MapKey::String(text) => text.clone(),
                    MapKey::Bool(b) => b.to_string(),
                    MapKey::I32(n) => n.to_string(),
                    MapKey::I64(n) => n.to_string(),
                    MapKey::U32(n) => n.to_string(),
                    MapKey::U64(n) => n.to_string(),
                };
                map.insert(key, field_to_json(value)?);
            }
            Value::Object(map)
        }
    })
}

/// Raw JSON bytes (FieldsV1, RawExtension, apiextensions JSON) as the value they hold.
fn raw_json(raw: Option<&Field>) -> Result<Value, ApiError> {
    match raw.and_then(Field::as_bytes) {
        None => Ok(Value::Null),
        Some(bytes) if bytes.is_empty() => Ok(Value::Null),
        Some(bytes) => serde_json::from_slice(bytes).map_err(malformed),
    }
}

/// `metav1.Time` (RFC 3339, seconds) or `metav1.MicroTime` (RFC 3339, microseconds), in UTC.
fn timestamp(seconds: i64, nanos: i32, micro: bool) -> Result<String, ApiError> {
    let time = jiff::Timestamp::new(seconds, if micro { nanos } else { 0 }).map_err(malformed)?;
    Ok(if micro {
        time.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
    } else {
        time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    })
}

/// A `metav1.Duration` as Go's `time.Duration.String()` writes it (`1h2m3.5s`, `250ms`).
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".to_owned();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    if n < 1_000_000 {
        return format!("{sign}{}µs", trim(n as f64 / 1e3));
    }
    if n < 1_000_000_000 {
        return format!("{sign}{}ms", trim(n as f64 / 1e6));
    }
    let hours = n / 3_600_000_000_000;
    let minutes = (n / 60_000_000_000) % 60;
    let seconds = (n % 60_000_000_000) as f64 / 1e9;
    let mut out = sign.to_owned();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&format!("{}s", trim(seconds)));
    out
}

/// A number without trailing zeros after its decimal point.
fn trim(number: f64) -> String {
    let text = format!("{number:.9}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// `object` (JSON, as kube-sim stores and answers it) as a protobuf body: the magic, then a
/// `runtime.Unknown` naming its apiVersion and kind around the object's message. `None` when the
/// kind has no message here (custom resources, `Table`, discovery documents: kube-apiserver
/// answers those as JSON too, since a client that asks for protobuf also accepts JSON).
pub fn encode(object: &Value) -> Option<Result<Vec<u8>, ApiError>> {
    let api_version = object.get("apiVersion")?.as_str()?;
    let kind = object.get("kind")?.as_str()?;
    let pool = pool()?;
    let descriptor = message_of(pool, api_version, kind)?;
    let unknown_type = pool.get_message_by_name("apimachinery.pkg.runtime.Unknown")?;
    let type_meta_type = pool.get_message_by_name("apimachinery.pkg.runtime.TypeMeta")?;
    Some((|| {
        let raw = prost::Message::encode_to_vec(&from_json(&descriptor, object)?);
        let mut type_meta = DynamicMessage::new(type_meta_type);
        set_field(
            &mut type_meta,
            "apiVersion",
            Field::String(api_version.to_owned()),
        )?;
        set_field(&mut type_meta, "kind", Field::String(kind.to_owned()))?;
        let mut unknown = DynamicMessage::new(unknown_type);
        set_field(&mut unknown, "typeMeta", Field::Message(type_meta))?;
        set_field(&mut unknown, "raw", Field::Bytes(raw.into()))?;
        set_field(
            &mut unknown,
            "contentEncoding",
            Field::String(String::new()),
        )?;
        set_field(&mut unknown, "contentType", Field::String(String::new()))?;
        let mut body = MAGIC.to_vec();
        body.extend(prost::Message::encode_to_vec(&unknown));
        Ok(body)
    })())
}

/// The content type of a protobuf watch stream.
pub const WATCH_CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf;stream=watch";

/// Whether kube-sim can answer a watch of objects of `api_version`/`kind` in protobuf.
pub fn can_encode(api_version: &str, kind: &str) -> bool {
    pool().is_some_and(|pool| message_of(pool, api_version, kind).is_some())
}

/// One frame of a protobuf watch stream, as kube-apiserver writes it (apimachinery's
/// length-delimited framer around the protobuf serializer): a 4-byte big-endian length, then a
/// `metav1.WatchEvent` in the envelope, whose `object.raw` is the object's own protobuf body
/// (magic and envelope included). `api_version` is the watched resource's group version, under
/// which every group registers `WatchEvent` (apimachinery `pkg/apis/meta/v1/register.go`,
/// `AddToGroupVersion`; the framer is `pkg/util/framer/framer.go`, a big-endian `uint32` length).
pub fn encode_watch_event(event: &Value, api_version: &str) -> Result<Vec<u8>, ApiError> {
    let pool = pool().ok_or_else(|| ApiError::internal("kube-sim has no protobuf descriptors"))?;
    let object = match encode(&event["object"]) {
        Some(result) => result?,
        None => return Err(unencodable("watched object", &event["object"])),
    };
    let named = |name: &str| {
        pool.get_message_by_name(name)
            .ok_or_else(|| ApiError::internal(format!("no descriptor for {name}")))
    };
    let mut raw = DynamicMessage::new(named("apimachinery.pkg.runtime.RawExtension")?);
    set_field(&mut raw, "raw", Field::Bytes(object.into()))?;
    let mut watch_event = DynamicMessage::new(named("apimachinery.pkg.apis.meta.v1.WatchEvent")?);
    let kind = event["type"].as_str().unwrap_or_default().to_owned();
    set_field(&mut watch_event, "type", Field::String(kind))?;
    set_field(&mut watch_event, "object", Field::Message(raw))?;
    let mut type_meta = DynamicMessage::new(named("apimachinery.pkg.runtime.TypeMeta")?);
    set_field(
        &mut type_meta,
        "apiVersion",
        Field::String(api_version.to_owned()),
    )?;
    set_field(
        &mut type_meta,
        "kind",
        Field::String("WatchEvent".to_owned()),
    )?;
    let mut unknown = DynamicMessage::new(named("apimachinery.pkg.runtime.Unknown")?);
    set_field(&mut unknown, "typeMeta", Field::Message(type_meta))?;
    set_field(
        &mut unknown,
        "raw",
        Field::Bytes(prost::Message::encode_to_vec(&watch_event).into()),
    )?;
    set_field(
        &mut unknown,
        "contentEncoding",
        Field::String(String::new()),
    )?;
    set_field(&mut unknown, "contentType", Field::String(String::new()))?;
    let mut body = MAGIC.to_vec();
    body.extend(prost::Message::encode_to_vec(&unknown));
    let length = u32::try_from(body.len())
        .map_err(|_| ApiError::internal("a watch event larger than 4 GiB"))?;
    let mut frame = length.to_be_bytes().to_vec();
    frame.extend(body);
    Ok(frame)
}

fn set_field(message: &mut DynamicMessage, name: &str, value: Field) -> Result<(), ApiError> {
    message.try_set_field_by_name(name, value).map_err(|error| {
        ApiError::internal(format!(
            "encoding {}.{name} as protobuf: {error}",
            message.descriptor().full_name()
        ))
    })
}

fn unencodable(what: &str, value: &Value) -> ApiError {
    ApiError::internal(format!(
        "kube-sim cannot encode {value} as a protobuf {what}"
    ))
}

/// The message `descriptor` holding `value`: the reverse of [`to_json`] (unknown and null fields
/// are left out).
fn from_json(descriptor: &MessageDescriptor, value: &Value) -> Result<DynamicMessage, ApiError> {
    let mut message = DynamicMessage::new(descriptor.clone());
    let full_name = descriptor.full_name().to_owned();
    let short = full_name.rsplit('.').next().unwrap_or_default().to_owned();
    let apiextensions = full_name.starts_with("apiextensions_apiserver.");
    let raw = |value: &Value| Field::Bytes(value.to_string().into_bytes().into());
    match (full_name.as_str(), short.as_str()) {
        ("apimachinery.pkg.api.resource.Quantity", _) => {
            let text = match value {
                Value::String(text) => text.clone(),
                Value::Number(number) => number.to_string(),
                other => return Err(unencodable("Quantity", other)),
            };
            set_field(&mut message, "string", Field::String(text))?;
        }
        ("apimachinery.pkg.util.intstr.IntOrString", _) => match value {
            Value::String(text) => {
                set_field(&mut message, "type", Field::I64(1))?;
                set_field(&mut message, "strVal", Field::String(text.clone()))?;
            }
            Value::Number(number) => {
                let int = number
                    .as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .ok_or_else(|| unencodable("IntOrString", value))?;
                set_field(&mut message, "type", Field::I64(0))?;
                set_field(&mut message, "intVal", Field::I32(int))?;
            }
            other => return Err(unencodable("IntOrString", other)),
        },
        ("apimachinery.pkg.apis.meta.v1.Time" | "apimachinery.pkg.apis.meta.v1.MicroTime", _) => {
            let text = value.as_str().ok_or_else(|| unencodable("Time", value))?;
            let time: jiff::Timestamp = text.parse().map_err(|_| unencodable("Time", value))?;
            set_field(&mut message, "seconds", Field::I64(time.as_second()))?;
            if short == "MicroTime" {
                set_field(&mut message, "nanos", Field::I32(time.subsec_nanosecond()))?;
            }
        }
        ("apimachinery.pkg.apis.meta.v1.Duration", _) => {
            let text = value
                .as_str()
                .ok_or_else(|| unencodable("Duration", value))?;
            let span: jiff::SignedDuration =
                text.parse().map_err(|_| unencodable("Duration", value))?;
            let nanos =
                i64::try_from(span.as_nanos()).map_err(|_| unencodable("Duration", value))?;
            set_field(&mut message, "duration", Field::I64(nanos))?;
        }
        ("apimachinery.pkg.apis.meta.v1.Verbs", _) => {
            let items = value
                .as_array()
                .ok_or_else(|| unencodable("Verbs", value))?
                .iter()
                .map(|verb| Field::String(verb.as_str().unwrap_or_default().to_owned()))
                .collect();
            set_field(&mut message, "items", Field::List(items))?;
        }
        ("apimachinery.pkg.apis.meta.v1.FieldsV1", _) => {
            set_field(&mut message, "Raw", raw(value))?
        }
        ("apimachinery.pkg.runtime.RawExtension", _) => set_field(&mut message, "raw", raw(value))?,
        (_, "JSON") if apiextensions => set_field(&mut message, "raw", raw(value))?,
        (_, "JSONSchemaPropsOrBool") if apiextensions => match value {
            Value::Bool(allows) => set_field(&mut message, "allows", Field::Bool(*allows))?,
            schema => {
                set_field(&mut message, "allows", Field::Bool(true))?;
                let field = message_field(descriptor, "schema")?;
                set_field(
                    &mut message,
                    "schema",
                    Field::Message(from_json(&field, schema)?),
                )?;
            }
        },
        (_, "JSONSchemaPropsOrArray") if apiextensions => {
            let field = message_field(descriptor, "schema")?;
            match value {
                Value::Array(schemas) => {
                    let list = schemas
                        .iter()
                        .map(|schema| from_json(&field, schema).map(Field::Message))
                        .collect::<Result<_, _>>()?;
                    set_field(&mut message, "jSONSchemas", Field::List(list))?;
                }
                schema => set_field(
                    &mut message,
                    "schema",
                    Field::Message(from_json(&field, schema)?),
                )?,
            }
        }
        (_, "JSONSchemaPropsOrStringArray") if apiextensions => match value {
            Value::Array(names) => {
                let list = names
                    .iter()
                    .map(|name| Field::String(name.as_str().unwrap_or_default().to_owned()))
                    .collect();
                set_field(&mut message, "property", Field::List(list))?;
            }
            schema => {
                let field = message_field(descriptor, "schema")?;
                set_field(
                    &mut message,
                    "schema",
                    Field::Message(from_json(&field, schema)?),
                )?;
            }
        },
        _ => {
            let Some(object) = value.as_object() else {
                return Err(unencodable(&full_name, value));
            };
            let schema_props = apiextensions && short == "JSONSchemaProps";
            let inline = inline_fields(descriptor);
            for (key, item) in object {
                if item.is_null() {
                    continue;
                }
                let name = if schema_props {
                    schema_props_field(key)
                } else {
                    key.clone()
                };
                // What the message does not have (apiVersion and kind of the object itself,
                // which the envelope carries) is left out.
                let Some(field) = descriptor.get_field_by_name(&name) else {
                    continue;
                };
                if inline.contains(&field) {
                    continue;
                }
                let encoded = field_from_json(&field, item)?;
                message.set_field(&field, encoded);
            }
            for field in inline {
                if let Some(embedded) = field.kind().as_message() {
                    let part = from_json(embedded, value)?;
                    if part.fields().next().is_some() {
                        message.set_field(&field, Field::Message(part));
                    }
                }
            }
        }
    }
    Ok(message)
}

/// The fields of `descriptor` that Go embeds inline (`json:",inline"`): their own fields are the
/// parent's in JSON, while protobuf nests them under a field of their own (a Probe's `handler`, a
/// Volume's `volumeSource`, the `localObjectReference` of a `secretKeyRef`). They are the message
/// fields the type's OpenAPI schema (the one kube-sim serves) does not list.
fn inline_fields(descriptor: &MessageDescriptor) -> Vec<prost_reflect::FieldDescriptor> {
    let full_name = descriptor.full_name();
    let definition = if let Some(rest) = full_name.strip_prefix("apiextensions_apiserver.") {
        format!("io.k8s.apiextensions-apiserver.{rest}")
    } else {
        format!("io.k8s.{full_name}")
    };
    let Some(properties) = crate::shape::builtin_defs()
        .get(&definition)
        .and_then(|schema| schema.get("properties"))
        .and_then(Value::as_object)
    else {
        return Vec::new();
    };
    descriptor
        .fields()
        .filter(|field| {
            !field.is_list()
                && !field.is_map()
                && field.kind().as_message().is_some()
                && !properties.contains_key(field.name())
        })
        .collect()
}

/// The proto name of a `JSONSchemaProps` JSON key: the reverse of [`schema_props_key`].
fn schema_props_field(key: &str) -> String {
    match key {
        "$ref" => "ref".to_owned(),
        "$schema" => "schema".to_owned(),
        _ => match key.strip_prefix("x-kubernetes-") {
            Some(rest) => {
                let mut name = String::from("xKubernetes");
                let mut upper = true;
                for c in rest.chars() {
                    if c == '-' {
                        upper = true;
                    } else if upper {
                        name.push(c.to_ascii_uppercase());
                        upper = false;
                    } else {
                        name.push(c);
                    }
                }
                name
            }
            None => key.to_owned(),
        },
    }
}

fn message_field(
    descriptor: &MessageDescriptor,
    name: &str,
) -> Result<MessageDescriptor, ApiError> {
    descriptor
        .get_field_by_name(name)
        .and_then(|field| field.kind().as_message().cloned())
        .ok_or_else(|| {
            ApiError::internal(format!(
                "no message field {name} in {}",
                descriptor.full_name()
            ))
        })
}

fn field_from_json(
    field: &prost_reflect::FieldDescriptor,
    value: &Value,
) -> Result<Field, ApiError> {
    if field.is_map() {
        let entry = field
            .kind()
            .as_message()
            .cloned()
            .ok_or_else(|| unencodable(field.full_name(), value))?;
        let value_field = entry.map_entry_value_field();
        let mut map = std::collections::HashMap::new();
        for (key, item) in value
            .as_object()
            .ok_or_else(|| unencodable(field.full_name(), value))?
        {
            if item.is_null() {
                continue;
            }
            map.insert(
                MapKey::String(key.clone()),
                single_from_json(&value_field, item)?,
            );
        }
        return Ok(Field::Map(map));
    }
    if field.is_list() {
        let items = value
            .as_array()
            .ok_or_else(|| unencodable(field.full_name(), value))?
            .iter()
            .map(|item| single_from_json(field, item))
            .collect::<Result<_, _>>()?;
        return Ok(Field::List(items));
    }
    single_from_json(field, value)
}

fn single_from_json(
    field: &prost_reflect::FieldDescriptor,
    value: &Value,
) -> Result<Field, ApiError> {
    use prost_reflect::Kind;
    let bad = || unencodable(field.full_name(), value);
    Ok(match field.kind() {
        Kind::Message(descriptor) => Field::Message(from_json(&descriptor, value)?),
        Kind::String => Field::String(match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        }),
        Kind::Bool => Field::Bool(value.as_bool().ok_or_else(bad)?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Field::I32(
            value
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(bad)?,
        ),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Field::I64(value.as_i64().ok_or_else(bad)?),
        Kind::Uint32 | Kind::Fixed32 => Field::U32(
            value
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(bad)?,
        ),
        Kind::Uint64 | Kind::Fixed64 => Field::U64(value.as_u64().ok_or_else(bad)?),
        Kind::Double => Field::F64(value.as_f64().ok_or_else(bad)?),
        Kind::Float => Field::F32(value.as_f64().ok_or_else(bad)? as f32),
        Kind::Bytes => {
            let text = value.as_str().ok_or_else(bad)?;
            Field::Bytes(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|_| bad())?
                    .into(),
            )
        }
        Kind::Enum(_) => Field::EnumNumber(
            value
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(bad)?,
        ),
    })
}

/// The content type of the OpenAPI v2 document in protobuf (gnostic's `openapi.v2.Document`),
/// which kubectl asks `/openapi/v2` for.
pub const OPENAPI_V2_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// The Swagger 2.0 document `doc` (JSON, as [`crate::discovery::openapi_v2`] writes it) as
/// gnostic's `openapi.v2.Document` message (`protos/openapiv2/OpenAPIv2.proto`): the swagger
/// version, info and definitions. Values that are not schemas (`default`, `example`, `enum`, the
/// vendor extensions) travel as YAML text in gnostic's `Any.yaml`, which is how kube-openapi reads
/// them back.
pub fn encode_openapi_v2(doc: &Value) -> Result<Vec<u8>, ApiError> {
    let pool = pool().ok_or_else(|| ApiError::internal("kube-sim has no protobuf descriptors"))?;
    let encoder = OpenApiV2 { pool };
    let mut document = encoder.message("Document")?;
    encoder.set(
        &mut document,
        "swagger",
        Field::String(text_of(&doc["swagger"])),
    )?;
    let mut info = encoder.message("Info")?;
    encoder.set(
        &mut info,
        "title",
        Field::String(text_of(&doc["info"]["title"])),
    )?;
    encoder.set(
        &mut info,
        "version",
        Field::String(text_of(&doc["info"]["version"])),
    )?;
    encoder.set(&mut document, "info", Field::Message(info))?;
    encoder.set(
        &mut document,
        "paths",
        Field::Message(encoder.message("Paths")?),
    )?;
    let mut named = Vec::new();
    if let Some(definitions) = doc["definitions"].as_object() {
        for (name, schema) in definitions {
            named.push(Field::Message(encoder.named_schema(name, schema)?));
        }
    }
    let mut definitions = encoder.message("Definitions")?;
    encoder.set(
        &mut definitions,
        "additional_properties",
        Field::List(named),
    )?;
    encoder.set(&mut document, "definitions", Field::Message(definitions))?;
    Ok(prost::Message::encode_to_vec(&document))
}

fn text_of(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

/// Builds gnostic's OpenAPI v2 messages from JSON.
struct OpenApiV2<'a> {
    pool: &'a DescriptorPool,
}

impl OpenApiV2<'_> {
    fn message(&self, name: &str) -> Result<DynamicMessage, ApiError> {
        self.pool
            .get_message_by_name(&format!("openapi.v2.{name}"))
            .map(DynamicMessage::new)
            .ok_or_else(|| ApiError::internal(format!("no descriptor for openapi.v2.{name}")))
    }

    fn set(&self, message: &mut DynamicMessage, field: &str, value: Field) -> Result<(), ApiError> {
        message
            .try_set_field_by_name(field, value)
            .map_err(|error| ApiError::internal(format!("openapi.v2 field {field}: {error}")))
    }

    /// gnostic's `Any`: a value as YAML text (JSON is YAML).
    fn any(&self, value: &Value) -> Result<Field, ApiError> {
        let mut any = self.message("Any")?;
        self.set(&mut any, "yaml", Field::String(value.to_string()))?;
        Ok(Field::Message(any))
    }

    fn named_schema(&self, name: &str, schema: &Value) -> Result<DynamicMessage, ApiError> {
        let mut named = self.message("NamedSchema")?;
        self.set(&mut named, "name", Field::String(name.to_owned()))?;
        self.set(&mut named, "value", Field::Message(self.schema(schema)?))?;
        Ok(named)
    }

    fn schema(&self, schema: &Value) -> Result<DynamicMessage, ApiError> {
        let mut message = self.message("Schema")?;
        let Some(map) = schema.as_object() else {
            return Ok(message);
        };
        let mut extensions = Vec::new();
        for (key, value) in map {
            let field = match key.as_str() {
                "$ref" => Some(("_ref", Field::String(text_of(value)))),
                "format" | "title" | "description" | "pattern" | "discriminator" => {
                    Some((key.as_str(), Field::String(text_of(value))))
                }
                "default" | "example" => Some((key.as_str(), self.any(value)?)),
                "multipleOf" | "maximum" | "minimum" => value.as_f64().map(|number| {
                    let name = if key == "multipleOf" {
                        "multiple_of"
                    } else {
                        key.as_str()
                    };
                    (name, Field::F64(number))
                }),
                "exclusiveMaximum" | "exclusiveMinimum" | "uniqueItems" | "readOnly" => {
                    value.as_bool().map(|flag| {
                        let name = match key.as_str() {
                            "exclusiveMaximum" => "exclusive_maximum",
                            "exclusiveMinimum" => "exclusive_minimum",
                            "uniqueItems" => "unique_items",
                            _ => "read_only",
                        };
                        (name, Field::Bool(flag))
                    })
                }
                "maxLength" | "minLength" | "maxItems" | "minItems" | "maxProperties"
                | "minProperties" => value.as_i64().map(|number| {
                    let name = match key.as_str() {
                        "maxLength" => "max_length",
                        "minLength" => "min_length",
                        "maxItems" => "max_items",
                        "minItems" => "min_items",
                        "maxProperties" => "max_properties",
                        _ => "min_properties",
                    };
                    (name, Field::I64(number))
                }),
                "required" => Some((
                    "required",
                    Field::List(
                        value
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|item| Field::String(text_of(item)))
                            .collect(),
                    ),
                )),
                "enum" => Some((
                    "enum",
                    Field::List(
                        value
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|item| self.any(item))
                            .collect::<Result<_, _>>()?,
                    ),
                )),
                "type" => {
                    let mut item = self.message("TypeItem")?;
                    let types = match value {
                        Value::Array(types) => {
                            types.iter().map(|t| Field::String(text_of(t))).collect()
                        }
                        other => vec![Field::String(text_of(other))],
                    };
                    self.set(&mut item, "value", Field::List(types))?;
                    Some(("type", Field::Message(item)))
                }
                "items" => {
                    let mut item = self.message("ItemsItem")?;
                    let schemas = match value {
                        Value::Array(schemas) => schemas
                            .iter()
                            .map(|s| self.schema(s).map(Field::Message))
                            .collect::<Result<_, _>>()?,
                        other => vec![Field::Message(self.schema(other)?)],
                    };
                    self.set(&mut item, "schema", Field::List(schemas))?;
                    Some(("items", Field::Message(item)))
                }
                "allOf" => Some((
                    "all_of",
                    Field::List(
                        value
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|s| self.schema(s).map(Field::Message))
                            .collect::<Result<_, _>>()?,
                    ),
                )),
                "properties" => {
                    let mut properties = self.message("Properties")?;
                    let named = value
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(name, s)| self.named_schema(name, s).map(Field::Message))
                        .collect::<Result<_, _>>()?;
                    self.set(&mut properties, "additional_properties", Field::List(named))?;
                    Some(("properties", Field::Message(properties)))
                }
                "additionalProperties" => {
                    let mut item = self.message("AdditionalPropertiesItem")?;
                    match value {
                        Value::Bool(flag) => self.set(&mut item, "boolean", Field::Bool(*flag))?,
                        other => {
                            self.set(&mut item, "schema", Field::Message(self.schema(other)?))?
                        }
                    }
                    Some(("additional_properties", Field::Message(item)))
                }
                name if name.starts_with("x-") => {
                    let mut extension = self.message("NamedAny")?;
                    self.set(&mut extension, "name", Field::String(name.to_owned()))?;
                    self.set(&mut extension, "value", self.any(value)?)?;
                    extensions.push(Field::Message(extension));
                    None
                }
                _ => None,
            };
            if let Some((name, value)) = field {
                self.set(&mut message, name, value)?;
            }
        }
        if !extensions.is_empty() {
            self.set(&mut message, "vendor_extension", Field::List(extensions))?;
        }
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use k8s_pb::api::apps::v1 as apps;
    use k8s_pb::api::authorization::v1 as authorization;
    use k8s_pb::api::core::v1 as core;
    use k8s_pb::api::rbac::v1 as rbac;
    use k8s_pb::apimachinery::pkg::api::resource::Quantity;
    use k8s_pb::apimachinery::pkg::apis::meta::v1::{
        DeleteOptions, LabelSelector, ObjectMeta, Time,
    };
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
    use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
    use prost::Message;

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

    fn meta(name: &str) -> Option<ObjectMeta> {
        Some(ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        })
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

    /// What `kubectl create deployment web --image=nginx --replicas=2` sends (a typed client:
    /// protobuf), with a rolling update and resources: int-or-string, quantities and times come
    /// out as their JSON forms, and the result is a valid `apps/v1` Deployment.
    #[test]
    fn a_deployment_decodes_with_int_or_strings_quantities_and_times() {
        let container = core::Container {
            name: Some("nginx".to_owned()),
            image: Some("nginx".to_owned()),
            ports: vec![core::ContainerPort {
                container_port: Some(8080),
                ..core::ContainerPort::default()
            }],
            resources: Some(core::ResourceRequirements {
                limits: BTreeMap::from([(
                    "memory".to_owned(),
                    Quantity {
                        string: Some("128Mi".to_owned()),
                    },
                )]),
                ..core::ResourceRequirements::default()
            }),
            ..core::Container::default()
        };
        let deployment = apps::Deployment {
            metadata: Some(ObjectMeta {
                name: Some("web".to_owned()),
                creation_timestamp: Some(Time {
                    seconds: Some(1_700_000_000),
                    nanos: Some(0),
                }),
                ..ObjectMeta::default()
            }),
            spec: Some(apps::DeploymentSpec {
                replicas: Some(2),
                selector: Some(LabelSelector {
                    match_labels: BTreeMap::from([("app".to_owned(), "web".to_owned())]),
                    ..LabelSelector::default()
                }),
                template: Some(core::PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: BTreeMap::from([("app".to_owned(), "web".to_owned())]),
                        creation_timestamp: Some(Time::default()),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(core::PodSpec {
                        containers: vec![container],
                        restart_policy: Some(String::new()),
                        ..core::PodSpec::default()
                    }),
                }),
                strategy: Some(apps::DeploymentStrategy {
                    r#type: Some("RollingUpdate".to_owned()),
                    rolling_update: Some(apps::RollingUpdateDeployment {
                        max_surge: Some(IntOrString {
                            r#type: Some(1),
                            int_val: None,
                            str_val: Some("25%".to_owned()),
                        }),
                        max_unavailable: Some(IntOrString {
                            r#type: Some(0),
                            int_val: Some(0),
                            str_val: None,
                        }),
                    }),
                }),
                ..apps::DeploymentSpec::default()
            }),
            status: None,
        };
        let object = decode(&envelope("apps/v1", "Deployment", &deployment)).unwrap();
        assert_eq!(object["apiVersion"], "apps/v1");
        assert_eq!(
            object["spec"]["template"]["metadata"]["creationTimestamp"],
            Value::Null,
            "an empty Time message is Go's zero time: null"
        );
        assert_eq!(object["kind"], "Deployment");
        assert_eq!(
            object["metadata"]["creationTimestamp"],
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(object["spec"]["replicas"], 2);
        assert_eq!(
            object["spec"]["strategy"]["rollingUpdate"],
            json!({"maxSurge": "25%", "maxUnavailable": 0})
        );
        assert!(
            object["spec"]["template"]["spec"]
                .get("restartPolicy")
                .is_none(),
            "an empty string is unset, as Go reads it, so defaulting applies"
        );
        let container = &object["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            container["resources"],
            json!({"limits": {"memory": "128Mi"}})
        );
        assert_eq!(container["ports"], json!([{"containerPort": 8080}]));
        let typed: k8s_openapi::api::apps::v1::Deployment =
            serde_json::from_value(object).expect("a valid apps/v1 Deployment");
        assert_eq!(typed.metadata.name.as_deref(), Some("web"));
    }

    /// `kubectl create role` / `clusterrole` send RBAC objects as protobuf.
    #[test]
    fn rbac_and_other_groups_decode_from_their_own_packages() {
        let role = rbac::Role {
            metadata: meta("reader"),
            rules: vec![rbac::PolicyRule {
                verbs: vec!["get".to_owned(), "list".to_owned()],
                api_groups: vec![String::new()],
                resources: vec!["pods".to_owned()],
                ..rbac::PolicyRule::default()
            }],
        };
        let object = decode(&envelope("rbac.authorization.k8s.io/v1", "Role", &role)).unwrap();
        assert_eq!(
            object["rules"],
            json!([{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}])
        );
        let service = core::Service {
            metadata: meta("web"),
            spec: Some(core::ServiceSpec {
                ports: vec![core::ServicePort {
                    port: Some(80),
                    target_port: Some(IntOrString {
                        r#type: Some(1),
                        int_val: None,
                        str_val: Some("http".to_owned()),
                    }),
                    ..core::ServicePort::default()
                }],
                ..core::ServiceSpec::default()
            }),
            status: None,
        };
        let object = decode(&envelope("v1", "Service", &service)).unwrap();
        assert_eq!(
            object["spec"]["ports"],
            json!([{"port": 80, "targetPort": "http"}])
        );
    }

    #[test]
    fn kinds_without_a_message_and_bodies_without_the_magic_are_refused() {
        let pod = core::Pod::default();
        assert_eq!(
            decode(&envelope("example.com/v1", "Widget", &pod))
                .unwrap_err()
                .code,
            415
        );
        assert_eq!(decode(b"{}").unwrap_err().code, 400);
        let mut garbage = MAGIC.to_vec();
        garbage.extend([0xff, 0xff, 0xff]);
        assert_eq!(decode(&garbage).unwrap_err().code, 400);
    }

    #[test]
    fn go_durations_read_as_go_writes_them() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(250_000_000), "250ms");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(3_723_000_000_000), "1h2m3s");
        assert_eq!(go_duration(-90_000_000_000), "-1m30s");
    }

    #[test]
    fn schema_props_keys_are_their_json_names() {
        assert_eq!(schema_props_key("ref"), "$ref");
        assert_eq!(
            schema_props_key("xKubernetesPreserveUnknownFields"),
            "x-kubernetes-preserve-unknown-fields"
        );
        assert_eq!(schema_props_key("type"), "type");
    }

    #[test]
    fn the_openapi_v2_document_encodes_as_gnostics_message() {
        let doc = json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": "v1.33.0"},
            "definitions": {
                "io.k8s.api.apps.v1.Deployment": {
                    "type": "object",
                    "required": ["spec"],
                    "properties": {"spec": {"$ref": "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"}},
                    "x-kubernetes-group-version-kind": [{"group": "apps", "version": "v1", "kind": "Deployment"}]
                }
            }
        });
        let bytes = encode_openapi_v2(&doc).unwrap();
        let descriptor = pool()
            .unwrap()
            .get_message_by_name("openapi.v2.Document")
            .unwrap();
        let decoded = DynamicMessage::decode(descriptor, bytes.as_slice()).unwrap();
        let message = |value: &Field| value.as_message().unwrap().clone();
        let list = |message: &DynamicMessage, name: &str| {
            message
                .get_field_by_name(name)
                .unwrap()
                .as_list()
                .unwrap()
                .to_vec()
        };
        let text = |message: &DynamicMessage, name: &str| {
            message
                .get_field_by_name(name)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        };
        let definitions = message(&decoded.get_field_by_name("definitions").unwrap());
        let named = list(&definitions, "additional_properties");
        assert_eq!(named.len(), 1);
        let named = message(&named[0]);
        assert_eq!(text(&named, "name"), "io.k8s.api.apps.v1.Deployment");
        let schema = message(&named.get_field_by_name("value").unwrap());
        let extension = message(&list(&schema, "vendor_extension")[0]);
        assert_eq!(text(&extension, "name"), "x-kubernetes-group-version-kind");
        let any = message(&extension.get_field_by_name("value").unwrap());
        assert_eq!(
            serde_json::from_str::<Value>(&text(&any, "yaml")).unwrap(),
            json!([{"group": "apps", "version": "v1", "kind": "Deployment"}])
        );
        let properties = message(&schema.get_field_by_name("properties").unwrap());
        let spec = message(&list(&properties, "additional_properties")[0]);
        assert_eq!(text(&spec, "name"), "spec");
        let spec = message(&spec.get_field_by_name("value").unwrap());
        assert_eq!(
            text(&spec, "_ref"),
            "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
        );
    }

    /// What kube-sim answers in protobuf reads back as the JSON it holds: int-or-strings,
    /// quantities, times, bytes, maps, lists and nested messages survive the round trip.
    #[test]
    fn an_object_encodes_and_decodes_back_to_the_same_json() {
        let deployment = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "creationTimestamp": "2023-11-14T22:13:20Z",
                "labels": {"app": "web"}, "generation": 3},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "app:1",
                        "resources": {"limits": {"memory": "128Mi"}, "requests": {"cpu": "100m"}},
                        "ports": [{"containerPort": 8080, "protocol": "TCP"}]}]}
                }
            },
            "status": {"conditions": [{"type": "Available", "status": "True",
                "lastTransitionTime": "2023-11-14T22:13:21Z", "reason": "MinimumReplicasAvailable"}]}
        });
        let bytes = encode(&deployment).expect("a message").expect("encodes");
        assert_eq!(decode(&bytes).unwrap(), deployment);
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
            "type": "Opaque", "data": {"password": "czNjcmV0"}});
        let bytes = encode(&secret).expect("a message").expect("encodes");
        assert_eq!(decode(&bytes).unwrap(), secret);
        let widget = json!({"apiVersion": "example.com/v1", "kind": "Widget"});
        assert!(
            encode(&widget).is_none(),
            "custom resources are answered as JSON"
        );
    }

    /// Go embeds a Probe's handler and a selector's LocalObjectReference inline in JSON, while
    /// protobuf nests them: both directions put them where each format has them.
    #[test]
    fn inline_embedded_fields_are_flat_in_json_and_nested_in_protobuf() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i",
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 3000}, "periodSeconds": 1},
                "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]}],
                "volumes": [{"name": "data", "emptyDir": {}}]}
        });
        let bytes = encode(&pod).expect("a message").expect("encodes");
        assert_eq!(decode(&bytes).unwrap(), pod);
        let envelope = Unknown::decode(&bytes[4..]).unwrap();
        let typed = core::Pod::decode(envelope.raw.unwrap().as_slice()).unwrap();
        let container = &typed.spec.unwrap().containers[0];
        let probe = container.readiness_probe.as_ref().unwrap();
        let http_get = probe.handler.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(http_get.path.as_deref(), Some("/ready"));
        let selector = container.env[0]
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            selector
                .local_object_reference
                .as_ref()
                .unwrap()
                .name
                .as_deref(),
            Some("db")
        );
    }
}
