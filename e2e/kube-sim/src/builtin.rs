//! Built-in types: decoding through the `k8s-openapi` types (type errors answer 400 as a decode
//! error does in kube-apiserver; fields the type does not know are dropped and reported), the
//! defaults Kubernetes applies that clients depend on, and the validations that matter here.
//!
//! Defaults applied (from the Kubernetes API reference): pod specs (restartPolicy, dnsPolicy,
//! terminationGracePeriodSeconds, schedulerName, container terminationMessage*, imagePullPolicy,
//! port protocol, probe timings), Deployment (replicas, strategy 25%/25%, revisionHistoryLimit,
//! progressDeadlineSeconds), ReplicaSet (replicas), Job (parallelism, completions, backoffLimit, completionMode, suspend,
//! podReplacementPolicy, the generated selector and pod labels), Service (type, ClusterIP
//! allocation, ipFamilies, sessionAffinity, internalTrafficPolicy, port protocol and targetPort),
//! Namespace (the `kubernetes` finalizer, phase Active, the `kubernetes.io/metadata.name` label),
//! Secret (type Opaque, stringData folded into data), NetworkPolicy (policyTypes),
//! PersistentVolumeClaim (volumeMode Filesystem, status Pending), and the CRD
//! (conversion None, names.singular/listKind). Ingress is validated as `ValidateIngressSpec` does
//! (see `ingress_causes`), NetworkPolicy as `ValidateNetworkPolicySpec` does (see
//! `crate::network_policy`).

use std::collections::BTreeSet;

use base64::Engine;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::cluster::State;
use crate::meta;
use crate::registry::ResourceType;
use crate::status::{ApiError, Cause};
use crate::strategy::cause;

fn roundtrip<T: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

/// Decodes an object through its typed form: returns the canonical JSON and the unknown fields.
pub(crate) fn decode(rt: &ResourceType, obj: &Value) -> Result<(Value, Vec<String>), ApiError> {
    use k8s_openapi::api;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
    let result = match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Namespace") => roundtrip::<api::core::v1::Namespace>(obj),
        ("", "Secret") => roundtrip::<api::core::v1::Secret>(obj),
        ("", "ConfigMap") => roundtrip::<api::core::v1::ConfigMap>(obj),
        ("", "Service") => roundtrip::<api::core::v1::Service>(obj),
        ("", "ServiceAccount") => roundtrip::<api::core::v1::ServiceAccount>(obj),
        ("", "Pod") => roundtrip::<api::core::v1::Pod>(obj),
        ("", "Event") => roundtrip::<api::core::v1::Event>(obj),
        ("", "ResourceQuota") => roundtrip::<api::core::v1::ResourceQuota>(obj),
        ("", "LimitRange") => roundtrip::<api::core::v1::LimitRange>(obj),
        ("", "PersistentVolumeClaim") => roundtrip::<api::core::v1::PersistentVolumeClaim>(obj),
        ("apps", "Deployment") => roundtrip::<api::apps::v1::Deployment>(obj),
        ("apps", "ReplicaSet") => roundtrip::<api::apps::v1::ReplicaSet>(obj),
        ("batch", "Job") => roundtrip::<api::batch::v1::Job>(obj),
        ("policy", "PodDisruptionBudget") => roundtrip::<api::policy::v1::PodDisruptionBudget>(obj),
        ("autoscaling", "HorizontalPodAutoscaler") => {
            roundtrip::<api::autoscaling::v2::HorizontalPodAutoscaler>(obj)
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            roundtrip::<api::networking::v1::NetworkPolicy>(obj)
        }
        ("networking.k8s.io", "Ingress") => roundtrip::<api::networking::v1::Ingress>(obj),
        ("coordination.k8s.io", "Lease") => roundtrip::<api::coordination::v1::Lease>(obj),
        ("events.k8s.io", "Event") => roundtrip::<api::events::v1::Event>(obj),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            roundtrip::<apiext::CustomResourceDefinition>(obj)
        }
        _ => Ok(obj.clone()),
    };
    let canonical = result.map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            rt.kind, rt.version, rt.kind
        ))
    })?;
    let mut unknown = Vec::new();
    unknown_fields(obj, &canonical, "", &mut unknown);
    Ok((canonical, unknown))
}

/// Paths present (non-null) in `input` but absent from the typed round trip.
fn unknown_fields(input: &Value, canonical: &Value, path: &str, out: &mut Vec<String>) {
    match (input, canonical) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(cv) => unknown_fields(v, cv, &p, out),
                    None if !v.is_null()
                        && !(path.is_empty() && (k == "apiVersion" || k == "kind")) =>
                    {
                        out.push(p)
                    }
                    None => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, cv)) in a.iter().zip(b).enumerate() {
                unknown_fields(v, cv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    v.get_mut(key).and_then(Value::as_object_mut)
}

fn set_default(m: &mut Map<String, Value>, key: &str, value: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.into(), value);
    }
}

/// Applies the defaults Kubernetes applies for the type.
pub(crate) fn default(state: &mut State, rt: &ResourceType, obj: &mut Value, old: Option<&Value>) {
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Pod") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                default_pod_spec(spec);
                set_default(spec, "serviceAccountName", json!("default"));
                set_default(spec, "serviceAccount", json!("default"));
            }
            if old.is_none() {
                let qos = qos_class(obj.get("spec"));
                if let Some(m) = obj.as_object_mut() {
                    m.insert(
                        "status".into(),
                        json!({"phase": "Pending", "qosClass": qos}),
                    );
                }
            }
        }
        ("apps", "Deployment") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(spec, "progressDeadlineSeconds", json!(600));
                let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
                if let Some(s) = strategy.as_object_mut() {
                    set_default(s, "type", json!("RollingUpdate"));
                    if s.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                        let ru = s.entry("rollingUpdate").or_insert_with(|| json!({}));
                        if let Some(ru) = ru.as_object_mut() {
                            set_default(ru, "maxSurge", json!("25%"));
                            set_default(ru, "maxUnavailable", json!("25%"));
                        }
                    }
                }
                if let Some(tspec) = spec
                    .get_mut("template")
                    .and_then(|t| t.get_mut("spec"))
                    .and_then(Value::as_object_mut)
                {
                    default_pod_spec(tspec);
                }
            }
        }
        ("apps", "ReplicaSet") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "replicas", json!(1));
                if let Some(tspec) = spec
                    .get_mut("template")
                    .and_then(|t| t.get_mut("spec"))
                    .and_then(Value::as_object_mut)
                {
                    default_pod_spec(tspec);
                }
            }
        }
        ("batch", "Job") => default_job(obj, old),
        // SetDefaults_PersistentVolumeClaimSpec (volumeMode Filesystem); a new claim is Pending
        // until it is bound.
        ("", "PersistentVolumeClaim") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "volumeMode", json!("Filesystem"));
            }
            if old.is_none()
                && let Some(m) = obj.as_object_mut()
            {
                m.insert("status".into(), json!({"phase": "Pending"}));
            }
        }
        ("", "Service") => default_service(state, obj, old),
        ("", "Namespace") => {
            let name = meta::name(obj).to_string();
            let labels = meta::meta_mut(obj)
                .entry("labels")
                .or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
            if let Some(m) = obj.as_object_mut() {
                if old.is_none() {
                    let spec = m.entry("spec").or_insert_with(|| json!({}));
                    if let Some(s) = spec.as_object_mut() {
                        set_default(s, "finalizers", json!(["kubernetes"]));
                    }
                }
                let status = m.entry("status").or_insert_with(|| json!({}));
                if let Some(s) = status.as_object_mut() {
                    set_default(s, "phase", json!("Active"));
                }
            }
        }
        ("", "Secret") => {
            if let Some(m) = obj.as_object_mut() {
                set_default(m, "type", json!("Opaque"));
                if let Some(Value::Object(sd)) = m.remove("stringData") {
                    let data = m.entry("data").or_insert_with(|| json!({}));
                    if let Some(d) = data.as_object_mut() {
                        for (k, v) in sd {
                            let s = v.as_str().unwrap_or_default();
                            d.insert(
                                k,
                                json!(base64::engine::general_purpose::STANDARD.encode(s)),
                            );
                        }
                    }
                }
            }
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                default_autoscaler(spec);
            }
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                if spec
                    .get("policyTypes")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty)
                {
                    let mut types = vec![json!("Ingress")];
                    if spec
                        .get("egress")
                        .and_then(Value::as_array)
                        .is_some_and(|e| !e.is_empty())
                    {
                        types.push(json!("Egress"));
                    }
                    spec.insert("policyTypes".into(), Value::Array(types));
                }
                for dir in ["ingress", "egress"] {
                    if let Some(rules) = spec.get_mut(dir).and_then(Value::as_array_mut) {
                        for rule in rules {
                            if let Some(ports) = rule.get_mut("ports").and_then(Value::as_array_mut)
                            {
                                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                                    set_default(p, "protocol", json!("TCP"));
                                }
                            }
                        }
                    }
                }
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            if let Some(spec) = obj_mut(obj, "spec") {
                set_default(spec, "conversion", json!({"strategy": "None"}));
                if let Some(names) = spec.get_mut("names").and_then(Value::as_object_mut) {
                    let kind = names
                        .get("kind")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    set_default(names, "singular", json!(kind.to_lowercase()));
                    set_default(names, "listKind", json!(format!("{kind}List")));
                }
            }
            if old.is_none() {
                let mut fins = meta::finalizers(obj);
                if !fins.iter().any(|f| f == crate::crd::CLEANUP_FINALIZER) {
                    fins.push(crate::crd::CLEANUP_FINALIZER.into());
                }
                meta::set_finalizers(obj, &fins);
            }
        }
        _ => {}
    }
}

/// `SetDefaults_HorizontalPodAutoscaler` of `autoscaling/v2` (pkg/apis/autoscaling/v2/defaults.go):
/// `minReplicas` 1; no metrics means CPU at 80% of the request; a `behavior` that is set gets every
/// unset part of both directions from the defaults (scale up: no stabilisation window, the larger
/// of 4 pods or 100% per 15 s; scale down: 100% per 15 s, the window left unset, which the
/// controller reads as its 300 s default).
fn default_autoscaler(spec: &mut Map<String, Value>) {
    set_default(spec, "minReplicas", json!(1));
    if spec
        .get("metrics")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        spec.insert(
            "metrics".into(),
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]),
        );
    }
    let Some(behavior) = spec.get_mut("behavior").and_then(Value::as_object_mut) else {
        return;
    };
    let up = behavior.entry("scaleUp").or_insert_with(|| json!({}));
    if let Some(up) = up.as_object_mut() {
        set_default(up, "stabilizationWindowSeconds", json!(0));
        set_default(up, "selectPolicy", json!("Max"));
        set_default(
            up,
            "policies",
            json!([{"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}]),
        );
    }
    let down = behavior.entry("scaleDown").or_insert_with(|| json!({}));
    if let Some(down) = down.as_object_mut() {
        set_default(down, "selectPolicy", json!("Max"));
        set_default(
            down,
            "policies",
            json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]),
        );
    }
}

fn default_probe(p: &mut Map<String, Value>) {
    set_default(p, "timeoutSeconds", json!(1));
    set_default(p, "periodSeconds", json!(10));
    set_default(p, "successThreshold", json!(1));
    set_default(p, "failureThreshold", json!(3));
    if let Some(h) = p.get_mut("httpGet").and_then(Value::as_object_mut) {
        set_default(h, "scheme", json!("HTTP"));
        set_default(h, "path", json!("/"));
    }
}

fn default_container(c: &mut Map<String, Value>) {
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
    let last = image.rsplit('/').next().unwrap_or_default();
    let tag_latest = !last.contains(':') && !image.contains('@') || last.ends_with(":latest");
    let policy = if tag_latest { "Always" } else { "IfNotPresent" };
    set_default(c, "imagePullPolicy", json!(policy));
    set_default(c, "resources", json!({}));
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).and_then(Value::as_object_mut) {
            default_probe(p);
        }
    }
    if let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) {
        for e in env {
            if let Some(fr) = e
                .get_mut("valueFrom")
                .and_then(|v| v.get_mut("fieldRef"))
                .and_then(Value::as_object_mut)
            {
                set_default(fr, "apiVersion", json!("v1"));
            }
        }
    }
}

fn default_pod_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                default_container(c);
            }
        }
    }
}

/// The QoS class of a pod spec: Guaranteed when every container has equal cpu and memory
/// requests and limits, BestEffort when none has any, Burstable otherwise.
fn qos_class(spec: Option<&Value>) -> &'static str {
    let containers: Vec<&Value> = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in containers {
        let req = c.get("resources").and_then(|r| r.get("requests"));
        let lim = c.get("resources").and_then(|r| r.get("limits"));
        let has = |v: Option<&Value>| v.and_then(Value::as_object).is_some_and(|m| !m.is_empty());
        if has(req) || has(lim) {
            any = true;
        }
        for res in ["cpu", "memory"] {
            let l = lim.and_then(|l| l.get(res));
            let r = req.and_then(|r| r.get(res)).or(l);
            if l.is_none() || r != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn default_job(obj: &mut Value, old: Option<&Value>) {
    let uid = meta::uid(obj).to_string();
    let name = meta::name(obj).to_string();
    let Some(spec) = obj_mut(obj, "spec") else {
        return;
    };
    if spec.get("completions").is_none_or(Value::is_null)
        && spec.get("parallelism").is_none_or(Value::is_null)
    {
        spec.insert("completions".into(), json!(1));
    }
    set_default(spec, "parallelism", json!(1));
    set_default(spec, "backoffLimit", json!(6));
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    if spec.get("podFailurePolicy").is_none_or(Value::is_null) {
        set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    }
    if let Some(tspec) = spec
        .get_mut("template")
        .and_then(|t| t.get_mut("spec"))
        .and_then(Value::as_object_mut)
    {
        default_pod_spec(tspec);
    }
    // The Job controller's selector: generated on create, kept after.
    let manual = spec.get("manualSelector").and_then(Value::as_bool) == Some(true);
    if old.is_none() && !manual {
        spec.insert(
            "selector".into(),
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
        );
        if let Some(tmeta) = spec
            .get_mut("template")
            .and_then(Value::as_object_mut)
            .map(|t| t.entry("metadata").or_insert_with(|| json!({})))
            .and_then(Value::as_object_mut)
        {
            let labels = tmeta.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("batch.kubernetes.io/controller-uid".into(), json!(uid));
                l.insert("batch.kubernetes.io/job-name".into(), json!(name));
                l.insert("controller-uid".into(), json!(uid));
                l.insert("job-name".into(), json!(name));
            }
        }
    }
}

fn default_service(state: &mut State, obj: &mut Value, old: Option<&Value>) {
    let old_spec = old.and_then(|o| o.get("spec")).cloned();
    let Some(spec) = obj_mut(obj, "spec") else {
        return;
    };
    set_default(spec, "type", json!("ClusterIP"));
    let svc_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    set_default(spec, "sessionAffinity", json!("None"));
    if svc_type != "ExternalName" {
        // Allocated values carry over from the stored object when an update leaves them out.
        if let Some(os) = &old_spec {
            for f in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
                if spec.get(f).is_none_or(|v| v.is_null() || v == "")
                    && let Some(v) = os.get(f)
                {
                    spec.insert(f.into(), v.clone());
                }
            }
        }
        let ip = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if ip.is_empty() {
            let ip = state.allocate_cluster_ip();
            spec.insert("clusterIP".into(), json!(ip));
            spec.insert("clusterIPs".into(), json!([ip]));
        } else {
            set_default(spec, "clusterIPs", json!([ip]));
        }
        set_default(spec, "ipFamilies", json!(["IPv4"]));
        set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                set_default(p, "targetPort", port);
            }
        }
    }
    if let Some(m) = obj.as_object_mut() {
        let status = m.entry("status").or_insert_with(|| json!({}));
        if let Some(s) = status.as_object_mut() {
            set_default(s, "loadBalancer", json!({}));
        }
    }
}

/// A container's requests may not exceed its limits, as kube-apiserver's
/// `ValidateResourceRequirements` (pkg/apis/core/validation/validation.go) rules for every
/// container of a Pod or pod template: `<path>.resources.requests: Invalid value: "250m": must be
/// less than or equal to cpu limit of 100m`, the quantities in their canonical form. Requests are
/// checked in name order (Go's map order is random; each error is the same).
fn resource_causes(container: &Value, path: &str, out: &mut Vec<Cause>) {
    use crate::controllers::quantity::Quantity;
    let resources = container.get("resources");
    let section = |name: &str| {
        resources
            .and_then(|r| r.get(name))
            .and_then(Value::as_object)
    };
    let (Some(requests), Some(limits)) = (section("requests"), section("limits")) else {
        return;
    };
    let quantity = |v: &Value| v.as_str().and_then(|s| Quantity::parse(s).ok());
    let mut names: Vec<&String> = requests.keys().collect();
    names.sort();
    for name in names {
        let (Some(request), Some(limit)) = (
            requests.get(name).and_then(quantity),
            limits.get(name).and_then(quantity),
        ) else {
            continue;
        };
        if request > limit {
            out.push(cause(
                "FieldValueInvalid",
                &format!("{path}.resources.requests"),
                format!(
                    "Invalid value: {:?}: must be less than or equal to {name} limit of {}",
                    request.canonical(),
                    limit.canonical()
                ),
            ));
        }
    }
}

fn container_causes(spec: &Value, base: &str, out: &mut Vec<Cause>) {
    let containers = spec.get("containers").and_then(Value::as_array);
    match containers {
        None => out.push(cause(
            "FieldValueRequired",
            &format!("{base}.containers"),
            "Required value",
        )),
        Some(cs) if cs.is_empty() => out.push(cause(
            "FieldValueRequired",
            &format!("{base}.containers"),
            "Required value",
        )),
        Some(cs) => {
            let mut seen = BTreeSet::new();
            for (i, c) in cs.iter().enumerate() {
                let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
                let path = format!("{base}.containers[{i}]");
                if let Err(msg) = crate::names::validate_dns1123_label(name) {
                    out.push(cause(
                        "FieldValueInvalid",
                        &format!("{path}.name"),
                        format!("Invalid value: {name:?}: {msg}"),
                    ));
                }
                if !seen.insert(name.to_string()) {
                    out.push(cause(
                        "FieldValueDuplicate",
                        &format!("{path}.name"),
                        format!("Duplicate value: {name:?}"),
                    ));
                }
                resource_causes(c, &path, out);
                if c.get("image")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    out.push(cause(
                        "FieldValueRequired",
                        &format!("{path}.image"),
                        "Required value",
                    ));
                }
                if let Some(ports) = c.get("ports").and_then(Value::as_array) {
                    for (j, p) in ports.iter().enumerate() {
                        let n = p.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
                        if !(1..=65535).contains(&n) {
                            out.push(cause(
                                "FieldValueInvalid",
                                &format!("{path}.ports[{j}].containerPort"),
                                format!(
                                    "Invalid value: {n}: must be between 1 and 65535, inclusive"
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }
    if let Some(init) = spec.get("initContainers").and_then(Value::as_array) {
        for (i, c) in init.iter().enumerate() {
            resource_causes(c, &format!("{base}.initContainers[{i}]"), out);
        }
    }
    let restart = spec
        .get("restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Always");
    if !matches!(restart, "Always" | "OnFailure" | "Never") {
        out.push(cause(
            "FieldValueNotSupported",
            &format!("{base}.restartPolicy"),
            format!("Unsupported value: {restart:?}: supported values: \"Always\", \"OnFailure\", \"Never\""),
        ));
    }
}

fn selector_matches_template(spec: &Value) -> bool {
    let Some(sel) = spec.get("selector") else {
        return false;
    };
    let Ok(sel) = crate::selectors::LabelSelector::from_label_selector_object(sel) else {
        return false;
    };
    if sel.requirements.is_empty() {
        return false;
    }
    sel.matches(
        spec.get("template")
            .and_then(|t| t.get("metadata"))
            .and_then(|m| m.get("labels")),
    )
}

/// The validations of the type (beyond ObjectMeta, checked for every kind).
pub(crate) fn validate(
    rt: &ResourceType,
    obj: &Value,
    old: Option<&Value>,
    subresource: Option<&str>,
) -> Vec<Cause> {
    let mut out = Vec::new();
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Pod") => {
            container_causes(&spec, "spec", &mut out);
            if let (Some(old), None) = (old, subresource) {
                // Pod updates may change only images and a few scheduling fields.
                let strip = |s: Option<&Value>| {
                    let mut s = s.cloned().unwrap_or(Value::Null);
                    for list in ["containers", "initContainers"] {
                        if let Some(cs) = s.get_mut(list).and_then(Value::as_array_mut) {
                            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                                c.remove("image");
                            }
                        }
                    }
                    if let Some(m) = s.as_object_mut() {
                        m.remove("activeDeadlineSeconds");
                        m.remove("tolerations");
                        m.remove("terminationGracePeriodSeconds");
                    }
                    s
                };
                if strip(old.get("spec")) != strip(obj.get("spec")) {
                    out.push(cause("FieldValueForbidden", "spec", "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"));
                }
            }
        }
        // ReplicaSets validate their selector, replicas and template as Deployments do
        // (`ValidateReplicaSetSpec`), and their selector is immutable in apps/v1.
        ("apps", "Deployment" | "ReplicaSet") => {
            if spec.get("selector").is_none_or(Value::is_null) {
                out.push(cause(
                    "FieldValueRequired",
                    "spec.selector",
                    "Required value",
                ));
            } else if !selector_matches_template(&spec) {
                out.push(cause("FieldValueInvalid", "spec.template.metadata.labels", "Invalid value: the template labels: `selector` does not match template `labels`"));
            }
            if let Some(r) = spec.get("replicas").and_then(Value::as_i64)
                && r < 0
            {
                out.push(cause(
                    "FieldValueInvalid",
                    "spec.replicas",
                    format!("Invalid value: {r}: must be greater than or equal to 0"),
                ));
            }
            let tspec = spec
                .get("template")
                .and_then(|t| t.get("spec"))
                .cloned()
                .unwrap_or(Value::Null);
            container_causes(&tspec, "spec.template.spec", &mut out);
            let restart = tspec
                .get("restartPolicy")
                .and_then(Value::as_str)
                .unwrap_or("Always");
            if restart != "Always" {
                out.push(cause(
                    "FieldValueNotSupported",
                    "spec.template.spec.restartPolicy",
                    format!("Unsupported value: {restart:?}: supported values: \"Always\""),
                ));
            }
            if let Some(old) = old
                && old.get("spec").and_then(|s| s.get("selector")) != spec.get("selector")
            {
                out.push(cause(
                    "FieldValueInvalid",
                    "spec.selector",
                    "Invalid value: field is immutable",
                ));
            }
        }
        ("batch", "Job") => {
            let tspec = spec
                .get("template")
                .and_then(|t| t.get("spec"))
                .cloned()
                .unwrap_or(Value::Null);
            container_causes(&tspec, "spec.template.spec", &mut out);
            let restart = tspec
                .get("restartPolicy")
                .and_then(Value::as_str)
                .unwrap_or("Always");
            if !matches!(restart, "OnFailure" | "Never") {
                out.push(cause(
                    "FieldValueNotSupported",
                    "spec.template.spec.restartPolicy",
                    format!(
                        "Unsupported value: {restart:?}: supported values: \"OnFailure\", \"Never\""
                    ),
                ));
            }
            for f in [
                "parallelism",
                "completions",
                "backoffLimit",
                "activeDeadlineSeconds",
            ] {
                if let Some(n) = spec.get(f).and_then(Value::as_i64)
                    && n < 0
                {
                    out.push(cause(
                        "FieldValueInvalid",
                        &format!("spec.{f}"),
                        format!("Invalid value: {n}: must be greater than or equal to 0"),
                    ));
                }
            }
            if let Some(old) = old
                && subresource.is_none()
            {
                let os = old.get("spec").cloned().unwrap_or(Value::Null);
                for f in ["template", "selector", "completions", "completionMode"] {
                    if os.get(f) != spec.get(f) {
                        out.push(cause(
                            "FieldValueInvalid",
                            &format!("spec.{f}"),
                            "Invalid value: field is immutable",
                        ));
                    }
                }
            }
        }
        ("", "Service") => {
            let svc_type = spec
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP");
            let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
            let ports = spec
                .get("ports")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if ports.is_empty() && svc_type != "ExternalName" && !headless {
                out.push(cause("FieldValueRequired", "spec.ports", "Required value"));
            }
            let mut names = BTreeSet::new();
            for (i, p) in ports.iter().enumerate() {
                let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                if !(1..=65535).contains(&port) {
                    out.push(cause(
                        "FieldValueInvalid",
                        &format!("spec.ports[{i}].port"),
                        format!("Invalid value: {port}: must be between 1 and 65535, inclusive"),
                    ));
                }
                let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
                if ports.len() > 1 && name.is_empty() {
                    out.push(cause(
                        "FieldValueRequired",
                        &format!("spec.ports[{i}].name"),
                        "Required value",
                    ));
                }
                if !name.is_empty() && !names.insert(name.to_string()) {
                    out.push(cause(
                        "FieldValueDuplicate",
                        &format!("spec.ports[{i}].name"),
                        format!("Duplicate value: {name:?}"),
                    ));
                }
            }
            if let Some(old) = old {
                let oip = old.get("spec").and_then(|s| s.get("clusterIP"));
                if oip.is_some() && oip != spec.get("clusterIP") {
                    out.push(cause(
                        "FieldValueInvalid",
                        "spec.clusterIPs[0]",
                        "Invalid value: may not change once set",
                    ));
                }
            }
        }
        ("", "ConfigMap") | ("", "Secret") => {
            let mut size = 0usize;
            for field in ["data", "binaryData"] {
                if let Some(d) = obj.get(field).and_then(Value::as_object) {
                    for (k, v) in d {
                        size += v.as_str().map_or(0, str::len);
                        if let Err(msg) = crate::names::validate_config_key(k) {
                            out.push(cause(
                                "FieldValueInvalid",
                                &format!("{field}[{k}]"),
                                format!("Invalid value: {k:?}: {msg}"),
                            ));
                        }
                    }
                }
            }
            if size > 1024 * 1024 {
                out.push(cause(
                    "FieldValueTooLong",
                    "data",
                    "Too long: must have at most 1048576 bytes",
                ));
            }
            if let Some(old) = old
                && old.get("immutable").and_then(Value::as_bool) == Some(true)
            {
                if old.get("data") != obj.get("data")
                    || old.get("binaryData") != obj.get("binaryData")
                {
                    out.push(cause(
                        "FieldValueForbidden",
                        "data",
                        "Forbidden: field is immutable when `immutable` is set",
                    ));
                }
                if obj.get("immutable").and_then(Value::as_bool) != Some(true) {
                    out.push(cause(
                        "FieldValueForbidden",
                        "immutable",
                        "Forbidden: field is immutable when `immutable` is set",
                    ));
                }
            }
            if rt.kind == "Secret"
                && let Some(old) = old
                && old.get("type") != obj.get("type")
            {
                out.push(cause(
                    "FieldValueInvalid",
                    "type",
                    "Invalid value: field is immutable",
                ));
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            out.extend(crate::crd::validate(obj, old));
        }
        // `ValidateHorizontalPodAutoscalerSpec` (pkg/apis/autoscaling/validation): minReplicas at
        // least 1 (scale to zero is an alpha feature gate), maxReplicas at least minReplicas, a
        // scale target with a kind and a name.
        ("autoscaling", "HorizontalPodAutoscaler") => {
            let min = spec.get("minReplicas").and_then(Value::as_i64).unwrap_or(1);
            let max = spec.get("maxReplicas").and_then(Value::as_i64).unwrap_or(0);
            if min < 1 {
                out.push(cause(
                    "FieldValueInvalid",
                    "spec.minReplicas",
                    format!("Invalid value: {min}: must be greater than or equal to 1"),
                ));
            }
            if max < min {
                out.push(cause(
                    "FieldValueInvalid",
                    "spec.maxReplicas",
                    format!("Invalid value: {max}: must be greater than or equal to `minReplicas`"),
                ));
            }
            for field in ["kind", "name"] {
                if spec
                    .pointer(&format!("/scaleTargetRef/{field}"))
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    out.push(cause(
                        "FieldValueRequired",
                        &format!("spec.scaleTargetRef.{field}"),
                        "Required value",
                    ));
                }
            }
        }
        ("networking.k8s.io", "Ingress") => ingress_causes(&spec, &mut out),
        ("networking.k8s.io", "NetworkPolicy") => {
            crate::network_policy::network_policy_causes(&spec, &mut out);
        }
        ("policy", "PodDisruptionBudget")
            if spec.get("minAvailable").is_some() && spec.get("maxUnavailable").is_some() =>
        {
            out.push(cause(
                "FieldValueInvalid",
                "spec",
                "Invalid value: minAvailable and maxUnavailable cannot be both set",
            ));
        }
        _ => {}
    }
    out
}

/// The Ingress rules of kube-apiserver's `ValidateIngressSpec` and `validateHTTPIngressPath`
/// (`pkg/apis/networking/validation/validation.go`) that a client can break: rules or a default
/// backend; each path with a `pathType` among `Exact`, `Prefix`, `ImplementationSpecific`, and an
/// absolute path for `Exact` and `Prefix`; a service backend's port by name or number, not both.
fn ingress_causes(spec: &Value, out: &mut Vec<Cause>) {
    let rules = spec.get("rules").and_then(Value::as_array);
    if rules.is_none_or(Vec::is_empty) && spec.get("defaultBackend").is_none() {
        out.push(cause(
            "FieldValueInvalid",
            "spec",
            "Invalid value: null: either `defaultBackend` or `rules` must be specified",
        ));
    }
    for (i, rule) in rules.into_iter().flatten().enumerate() {
        let paths = rule
            .pointer("/http/paths")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for (j, path) in paths.enumerate() {
            let at = format!("spec.rules[{i}].http.paths[{j}]");
            let value = path.get("path").and_then(Value::as_str).unwrap_or("");
            match path.get("pathType").and_then(Value::as_str) {
                None => out.push(cause(
                    "FieldValueRequired",
                    &format!("{at}.pathType"),
                    "Required value: pathType must be specified",
                )),
                Some("Exact" | "Prefix") if !value.starts_with('/') => out.push(cause(
                    "FieldValueInvalid",
                    &format!("{at}.path"),
                    format!("Invalid value: \"{value}\": must be an absolute path"),
                )),
                Some("Exact" | "Prefix" | "ImplementationSpecific") => {}
                Some(other) => out.push(cause(
                    "FieldValueNotSupported",
                    &format!("{at}.pathType"),
                    format!("Unsupported value: \"{other}\": supported values: \"Exact\", \"ImplementationSpecific\", \"Prefix\""),
                )),
            }
            if let Some(port) = path.pointer("/backend/service/port")
                && port.get("name").is_some()
                && port.get("number").is_some()
            {
                out.push(cause(
                    "FieldValueInvalid",
                    &format!("{at}.backend.service.port"),
                    "Invalid value: cannot set both port name & port number",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn rt(group: &str, plural: &str) -> ResourceType {
        let version = "v1";
        Registry::with_builtins()
            .get(group, version, plural)
            .cloned()
            .unwrap()
    }

    #[test]
    fn type_errors_are_decode_errors() {
        let err = decode(
            &rt("apps", "deployments"),
            &json!({"spec": {"replicas": "three"}}),
        )
        .unwrap_err();
        assert_eq!(err.code, 400);
        assert!(
            err.message
                .starts_with("Deployment in version \"v1\" cannot be handled as a Deployment"),
            "{}",
            err.message
        );
    }

    #[test]
    fn unknown_fields_are_reported_with_paths() {
        let (canon, unknown) = decode(
            &rt("", "configmaps"),
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}, "bogus": 1}),
        )
        .unwrap();
        assert_eq!(unknown, vec!["bogus"]);
        assert!(canon.get("bogus").is_none());
    }

    #[test]
    fn deployment_defaults_strategy_and_replicas() {
        let mut state_registry = Registry::with_builtins();
        let _ = &mut state_registry;
        let mut obj = json!({"spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "img:1"}]}}}});
        let mut state = crate::cluster::Cluster::new(Default::default());
        let cl = std::sync::Arc::get_mut(&mut state).unwrap();
        let mut st = cl.state.lock().unwrap();
        default(&mut st, &rt("apps", "deployments"), &mut obj, None);
        assert_eq!(obj["spec"]["replicas"], 1);
        assert_eq!(obj["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(
            obj["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert!(validate(&rt("apps", "deployments"), &obj, None, None).is_empty());
    }

    #[test]
    fn job_with_restart_always_is_invalid() {
        let obj = json!({"spec": {"template": {"spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "i"}]}}}});
        let causes = validate(&rt("batch", "jobs"), &obj, None, None);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.template.spec.restartPolicy");
    }

    #[test]
    fn an_ingress_path_needs_a_path_type_and_a_prefix_an_absolute_path() {
        let registry = Registry::with_builtins();
        let rt = registry
            .get("networking.k8s.io", "v1", "ingresses")
            .expect("Ingress is served");
        let ingress = |path: Value| json!({"spec": {"rules": [{"http": {"paths": [path]}}]}});
        let backend = json!({"service": {"name": "web", "port": {"name": "http"}}});
        let fields = |obj: &Value| -> Vec<String> {
            validate(rt, obj, None, None)
                .into_iter()
                .map(|c| c.field)
                .collect()
        };
        assert_eq!(
            fields(&ingress(json!({"path": "/", "backend": backend}))),
            ["spec.rules[0].http.paths[0].pathType"]
        );
        assert_eq!(
            fields(&ingress(
                json!({"path": "api", "pathType": "Prefix", "backend": backend})
            )),
            ["spec.rules[0].http.paths[0].path"]
        );
        assert!(
            fields(&ingress(
                json!({"path": "/", "pathType": "Prefix", "backend": backend})
            ))
            .is_empty()
        );
        assert_eq!(fields(&json!({"spec": {}})), ["spec"]);
    }

    #[test]
    fn qos_classes() {
        assert_eq!(
            qos_class(Some(&json!({"containers": [{"name": "a"}]}))),
            "BestEffort"
        );
        assert_eq!(
            qos_class(Some(
                &json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]})
            )),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(Some(
                &json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]})
            )),
            "Burstable"
        );
    }
}
