//! Pod admission as the `LimitRanger` and `ResourceQuota` admission plugins do it: defaults from
//! LimitRanges, their min/max checks, and rejection of pods whose requests exceed a quota.
//!
//! Everything here is pure: the caller passes the namespace's LimitRanges, ResourceQuotas and
//! pods. Rules followed (Kubernetes documentation, "Limit Ranges" and "Resource Quotas"):
//! - a container with limits but no requests for a resource gets requests equal to the limits;
//! - `default` fills missing limits and `defaultRequest` missing requests (a missing
//!   `defaultRequest` is `default`, a missing `default` is `max`), and the pod is annotated
//!   `kubernetes.io/limit-ranger`;
//! - a limit above `max` or a request below `min` of a `Container` item is forbidden;
//! - pods in phase Succeeded or Failed use no quota; each other pod uses `pods`/`count/pods` 1
//!   and the sum of its containers' requests and limits (the larger of that and any single init
//!   container's);
//! - a quota that limits a compute resource requires every pod to specify it
//!   (`failed quota: NAME: must specify ...`);
//! - a pod whose usage would take any quota over its `hard` figure is forbidden with
//!   `exceeded quota: NAME, requested: ..., used: ..., limited: ...`.
//!
//! PersistentVolumeClaims count too ("Storage Resource Quota"): each claim uses
//! `persistentvolumeclaims`/`count/persistentvolumeclaims` 1 and its requested `storage` as
//! `requests.storage`, and the same under `<class>.storageclass.storage.k8s.io/` for its storage
//! class; a claim that would take a quota over its `hard` figure is forbidden with the same
//! message ([`check_claim_quotas`]).
//!
//! Quota scopes and scope selectors are not evaluated: every quota applies to every pod, which
//! errs on the strict side.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, LimitRange, PersistentVolumeClaim, Pod, ResourceQuota, ResourceQuotaStatus,
    ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

use super::quantity::Quantity;

/// The annotation the LimitRanger sets on pods it defaulted.
pub const LIMIT_RANGER_ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// Why a pod was not admitted: the API answers 403 Forbidden with
/// `pods "NAME" is forbidden: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The message after `is forbidden: `.
    pub message: String,
}

/// The compute resources a quota can limit for pods.
const COMPUTE_RESOURCES: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];

/// Mutates `pod` with LimitRange defaults, then checks LimitRange bounds and every quota.
pub fn admit_pod(
    pod: &mut Pod,
    limit_ranges: &[LimitRange],
    quotas: &[ResourceQuota],
    existing_pods: &[Pod],
    now: jiff::Timestamp,
) -> Result<(), Rejection> {
    default_requests_to_limits(pod);
    apply_limit_range_defaults(pod, limit_ranges)?;
    check_limit_range_bounds(pod, limit_ranges)?;
    check_quotas(pod, quotas, existing_pods, now)
}

fn quantity(value: &ApiQuantity) -> Option<Quantity> {
    Quantity::parse(&value.0).ok()
}

fn all_containers_mut(pod: &mut Pod) -> Vec<&mut Container> {
    let Some(spec) = pod.spec.as_mut() else {
        return Vec::new();
    };
    let mut containers: Vec<&mut Container> = spec.containers.iter_mut().collect();
    if let Some(init) = spec.init_containers.as_mut() {
        containers.extend(init.iter_mut());
    }
    containers
}

/// API defaulting of pods: requests default to limits for each resource that has a limit only.
pub fn default_requests_to_limits(pod: &mut Pod) {
    for container in all_containers_mut(pod) {
        let Some(resources) = container.resources.as_mut() else {
            continue;
        };
        let Some(limits) = resources.limits.clone() else {
            continue;
        };
        let requests = resources.requests.get_or_insert_with(BTreeMap::new);
        for (name, value) in limits {
            requests.entry(name).or_insert(value);
        }
    }
}

/// Effective defaults of the `Container` items of the namespace's LimitRanges.
struct ContainerDefaults {
    limits: BTreeMap<String, ApiQuantity>,
    requests: BTreeMap<String, ApiQuantity>,
}

fn container_defaults(limit_ranges: &[LimitRange]) -> ContainerDefaults {
    let mut defaults = ContainerDefaults {
        limits: BTreeMap::new(),
        requests: BTreeMap::new(),
    };
    for range in limit_ranges {
        let Some(spec) = &range.spec else { continue };
        for item in spec.limits.iter().filter(|item| item.type_ == "Container") {
            // The API server's defaulting of LimitRange items, per resource: `default` from
            // `max`, then `defaultRequest` from `default`.
            let mut limits = item.default.clone().unwrap_or_default();
            for (name, value) in item.max.iter().flatten() {
                limits.entry(name.clone()).or_insert_with(|| value.clone());
            }
            let mut requests = item.default_request.clone().unwrap_or_default();
            for (name, value) in &limits {
                requests
                    .entry(name.clone())
                    .or_insert_with(|| value.clone());
            }
            for (name, value) in limits {
                defaults.limits.entry(name).or_insert(value);
            }
            for (name, value) in requests {
                defaults.requests.entry(name).or_insert(value);
            }
        }
    }
    defaults
}

fn apply_limit_range_defaults(pod: &mut Pod, limit_ranges: &[LimitRange]) -> Result<(), Rejection> {
    let defaults = container_defaults(limit_ranges);
    if defaults.limits.is_empty() && defaults.requests.is_empty() {
        return Ok(());
    }
    let mut notes = Vec::new();
    for container in all_containers_mut(pod) {
        let resources = container
            .resources
            .get_or_insert_with(ResourceRequirements::default);
        let mut set_requests = Vec::new();
        let mut set_limits = Vec::new();
        for (name, value) in &defaults.requests {
            let requests = resources.requests.get_or_insert_with(BTreeMap::new);
            if !requests.contains_key(name) {
                requests.insert(name.clone(), value.clone());
                set_requests.push(name.clone());
            }
        }
        for (name, value) in &defaults.limits {
            let limits = resources.limits.get_or_insert_with(BTreeMap::new);
            if !limits.contains_key(name) {
                limits.insert(name.clone(), value.clone());
                set_limits.push(name.clone());
            }
        }
        if !set_requests.is_empty() {
            notes.push(format!(
                "{} request for container {}",
                set_requests.join(", "),
                container.name
            ));
        }
        if !set_limits.is_empty() {
            notes.push(format!(
                "{} limit for container {}",
                set_limits.join(", "),
                container.name
            ));
        }
    }
    if !notes.is_empty() {
        pod.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(
                LIMIT_RANGER_ANNOTATION.to_owned(),
                format!("LimitRanger plugin set: {}", notes.join("; ")),
            );
    }
    Ok(())
}

fn check_limit_range_bounds(pod: &Pod, limit_ranges: &[LimitRange]) -> Result<(), Rejection> {
    let Some(spec) = &pod.spec else { return Ok(()) };
    let mut problems = Vec::new();
    for range in limit_ranges {
        let Some(range_spec) = &range.spec else {
            continue;
        };
        for item in range_spec
            .limits
            .iter()
            .filter(|item| item.type_ == "Container")
        {
            for container in spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
            {
                let resources = container.resources.clone().unwrap_or_default();
                for (name, max) in item.max.iter().flatten() {
                    let Some(max_q) = quantity(max) else { continue };
                    match resources.limits.as_ref().and_then(|l| l.get(name)) {
                        None => problems.push(format!(
                            "maximum {name} usage per Container is {}.  No limit is specified",
                            max_q.canonical()
                        )),
                        Some(limit) => {
                            if let Some(limit_q) = quantity(limit)
                                && limit_q > max_q
                            {
                                problems.push(format!(
                                    "maximum {name} usage per Container is {}, but limit is {}",
                                    max_q.canonical(),
                                    limit_q.canonical()
                                ));
                            }
                        }
                    }
                }
                for (name, min) in item.min.iter().flatten() {
                    let Some(min_q) = quantity(min) else { continue };
                    match resources.requests.as_ref().and_then(|r| r.get(name)) {
                        None => problems.push(format!(
                            "minimum {name} usage per Container is {}.  No request is specified",
                            min_q.canonical()
                        )),
                        Some(request) => {
                            if let Some(request_q) = quantity(request)
                                && request_q < min_q
                            {
                                problems.push(format!(
                                    "minimum {name} usage per Container is {}, but request is {}",
                                    min_q.canonical(),
                                    request_q.canonical()
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Rejection {
            message: problems.join(", "),
        })
    }
}

/// Whether a pod uses quota at `now`, as the quota evaluator decides (kubernetes
/// `pkg/quota/v1/evaluator/core/pods.go`, `QuotaV1Pod`): pods in a terminal phase do not; a
/// terminating pod does until its `deletionTimestamp` plus its `deletionGracePeriodSeconds` has
/// passed (a pod stuck terminating, say on a lost node, stops counting then), so a rollout's old
/// pods hold quota while they drain.
pub fn pod_counts_against_quota(pod: &Pod, now: jiff::Timestamp) -> bool {
    let terminal = matches!(
        pod.status
            .as_ref()
            .and_then(|status| status.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    if terminal {
        return false;
    }
    match (
        &pod.metadata.deletion_timestamp,
        pod.metadata.deletion_grace_period_seconds,
    ) {
        (Some(deleted_at), Some(grace)) => {
            let expires = deleted_at
                .0
                .checked_add(jiff::SignedDuration::from_secs(grace))
                .unwrap_or(deleted_at.0);
            now <= expires
        }
        _ => true,
    }
}

fn container_amount(container: &Container, kind: &str, resource: &str) -> Option<Quantity> {
    let resources = container.resources.as_ref()?;
    let map = if kind == "requests" {
        resources.requests.as_ref()
    } else {
        resources.limits.as_ref()
    }?;
    map.get(resource).and_then(quantity)
}

/// What one pod uses of each quota resource (`pods`, `requests.cpu`, `limits.memory`, …).
pub fn pod_usage(pod: &Pod) -> BTreeMap<String, Quantity> {
    let mut usage = BTreeMap::new();
    usage.insert("pods".to_owned(), Quantity::from_units(1));
    usage.insert("count/pods".to_owned(), Quantity::from_units(1));
    let Some(spec) = &pod.spec else { return usage };
    for kind in ["requests", "limits"] {
        for resource in COMPUTE_RESOURCES {
            let mut sum: Option<Quantity> = None;
            for container in &spec.containers {
                if let Some(amount) = container_amount(container, kind, resource) {
                    sum = Some(sum.map_or(amount, |total| total.plus(amount)));
                }
            }
            for container in spec.init_containers.iter().flatten() {
                if let Some(amount) = container_amount(container, kind, resource)
                    && sum.is_none_or(|total| amount > total)
                {
                    sum = Some(amount);
                }
            }
            if let Some(total) = sum {
                usage.insert(format!("{kind}.{resource}"), total);
                if kind == "requests" {
                    usage.insert(resource.to_owned(), total);
                }
            }
        }
    }
    usage
}

/// Whether every container of the pod specifies `resource` (e.g. `limits.cpu`, `cpu`).
fn pod_specifies(pod: &Pod, resource: &str) -> bool {
    let (kind, name) = match resource.split_once('.') {
        Some((kind @ ("requests" | "limits"), name)) => (kind, name),
        _ => ("requests", resource),
    };
    let Some(spec) = &pod.spec else { return false };
    spec.containers
        .iter()
        .all(|container| container_amount(container, kind, name).is_some())
}

fn is_compute_resource(resource: &str) -> bool {
    let name = resource
        .strip_prefix("requests.")
        .or_else(|| resource.strip_prefix("limits."))
        .unwrap_or(resource);
    COMPUTE_RESOURCES.contains(&name)
}

/// The usage of the quota resources in `hard` by the pods that count against quota.
pub fn quota_usage<'a>(
    hard: &BTreeMap<String, ApiQuantity>,
    pods: impl IntoIterator<Item = &'a Pod>,
    now: jiff::Timestamp,
) -> BTreeMap<String, Quantity> {
    let mut used: BTreeMap<String, Quantity> = hard
        .keys()
        .filter(|resource| tracked_resource(resource))
        .map(|resource| (resource.clone(), Quantity::ZERO))
        .collect();
    for pod in pods
        .into_iter()
        .filter(|pod| pod_counts_against_quota(pod, now))
    {
        for (resource, amount) in pod_usage(pod) {
            if let Some(total) = used.get_mut(&resource) {
                *total = if total.is_zero() {
                    amount
                } else {
                    total.plus(amount)
                };
            }
        }
    }
    used
}

/// Whether kube-sim counts this quota resource (pods and their compute resources, claims and
/// their storage).
pub fn tracked_resource(resource: &str) -> bool {
    resource == "pods"
        || resource == "count/pods"
        || is_compute_resource(resource)
        || is_storage_resource(resource)
}

fn is_storage_resource(resource: &str) -> bool {
    let per_class = resource
        .split_once(".storageclass.storage.k8s.io/")
        .map(|(_, rest)| rest);
    matches!(
        per_class.unwrap_or(resource),
        "persistentvolumeclaims" | "requests.storage"
    ) || resource == "count/persistentvolumeclaims"
}

/// What a claim uses of quota resources.
pub fn claim_usage(claim: &PersistentVolumeClaim) -> BTreeMap<String, Quantity> {
    let spec = claim.spec.as_ref();
    let storage = spec
        .and_then(|spec| spec.resources.as_ref())
        .and_then(|resources| resources.requests.as_ref())
        .and_then(|requests| requests.get("storage"))
        .and_then(quantity)
        .unwrap_or(Quantity::ZERO);
    let one = Quantity::parse("1").unwrap_or(Quantity::ZERO);
    let mut usage = BTreeMap::from([
        ("persistentvolumeclaims".to_owned(), one),
        ("count/persistentvolumeclaims".to_owned(), one),
        ("requests.storage".to_owned(), storage),
    ]);
    if let Some(class) = spec
        .and_then(|spec| spec.storage_class_name.as_deref())
        .filter(|class| !class.is_empty())
    {
        let prefix = format!("{class}.storageclass.storage.k8s.io/");
        usage.insert(format!("{prefix}persistentvolumeclaims"), one);
        usage.insert(format!("{prefix}requests.storage"), storage);
    }
    usage
}

/// The usage of the quota resources in `hard` by claims.
fn claims_usage<'a>(
    hard: &BTreeMap<String, ApiQuantity>,
    claims: impl IntoIterator<Item = &'a PersistentVolumeClaim>,
) -> BTreeMap<String, Quantity> {
    let mut used: BTreeMap<String, Quantity> = hard
        .keys()
        .filter(|resource| is_storage_resource(resource))
        .map(|resource| (resource.clone(), Quantity::ZERO))
        .collect();
    for claim in claims {
        for (resource, amount) in claim_usage(claim) {
            if let Some(total) = used.get_mut(&resource) {
                *total = if total.is_zero() {
                    amount
                } else {
                    total.plus(amount)
                };
            }
        }
    }
    used
}

/// A claim is forbidden when it would take a quota over its `hard` figure (`existing`: the
/// namespace's claims).
pub fn check_claim_quotas(
    claim: &PersistentVolumeClaim,
    quotas: &[ResourceQuota],
    existing: &[PersistentVolumeClaim],
) -> Result<(), Rejection> {
    let requested = claim_usage(claim);
    let name = claim.metadata.name.as_deref();
    let others: Vec<&PersistentVolumeClaim> = existing
        .iter()
        .filter(|other| name.is_none() || other.metadata.name.as_deref() != name)
        .collect();
    for quota in quotas {
        let quota_name = quota.metadata.name.clone().unwrap_or_default();
        let hard = quota
            .spec
            .as_ref()
            .and_then(|spec| spec.hard.clone())
            .unwrap_or_default();
        let used = claims_usage(&hard, others.iter().copied());
        let mut exceeded = (Vec::new(), Vec::new(), Vec::new());
        for (resource, limit) in &hard {
            let (Some(amount), Some(limit)) = (requested.get(resource), quantity(limit)) else {
                continue;
            };
            let in_use = used.get(resource).copied().unwrap_or(Quantity::ZERO);
            if in_use.plus(*amount) > limit {
                exceeded.0.push((resource.clone(), *amount));
                exceeded.1.push((resource.clone(), in_use));
                exceeded.2.push((resource.clone(), limit));
            }
        }
        if !exceeded.0.is_empty() {
            return Err(Rejection {
                message: format!(
                    "exceeded quota: {quota_name}, requested: {}, used: {}, limited: {}",
                    print_list(&exceeded.0),
                    print_list(&exceeded.1),
                    print_list(&exceeded.2)
                ),
            });
        }
    }
    Ok(())
}

/// The `status` a quota should have: `hard` copied from the spec, `used` from the pods and the
/// claims.
pub fn quota_status<'a>(
    quota: &ResourceQuota,
    pods: impl IntoIterator<Item = &'a Pod>,
    claims: impl IntoIterator<Item = &'a PersistentVolumeClaim>,
    now: jiff::Timestamp,
) -> ResourceQuotaStatus {
    let hard = quota
        .spec
        .as_ref()
        .and_then(|spec| spec.hard.clone())
        .unwrap_or_default();
    let mut used = quota_usage(&hard, pods, now);
    used.extend(claims_usage(&hard, claims));
    let used = used
        .into_iter()
        .map(|(resource, amount)| (resource, ApiQuantity(amount.canonical())))
        .collect();
    ResourceQuotaStatus {
        hard: Some(hard),
        used: Some(used),
    }
}

fn print_list(entries: &[(String, Quantity)]) -> String {
    entries
        .iter()
        .map(|(name, amount)| format!("{name}={}", amount.canonical()))
        .collect::<Vec<_>>()
        .join(",")
}

fn check_quotas(
    pod: &Pod,
    quotas: &[ResourceQuota],
    existing: &[Pod],
    now: jiff::Timestamp,
) -> Result<(), Rejection> {
    let requested = pod_usage(pod);
    let pod_name = pod.metadata.name.as_deref();
    let others = existing
        .iter()
        .filter(|other| pod_name.is_none() || other.metadata.name.as_deref() != pod_name);
    let others: Vec<&Pod> = others.collect();
    for quota in quotas {
        let name = quota.metadata.name.clone().unwrap_or_default();
        let hard = quota
            .spec
            .as_ref()
            .and_then(|spec| spec.hard.clone())
            .unwrap_or_default();
        let missing: Vec<&str> = hard
            .keys()
            .filter(|resource| is_compute_resource(resource) && !pod_specifies(pod, resource))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(Rejection {
                message: format!("failed quota: {name}: must specify {}", missing.join(",")),
            });
        }
        let used = quota_usage(&hard, others.iter().copied(), now);
        let mut exceeded_requested = Vec::new();
        let mut exceeded_used = Vec::new();
        let mut exceeded_limited = Vec::new();
        for (resource, limit) in &hard {
            let (Some(amount), Some(limit_q)) = (requested.get(resource), quantity(limit)) else {
                continue;
            };
            let in_use = used.get(resource).copied().unwrap_or(Quantity::ZERO);
            if in_use.plus(*amount) > limit_q {
                exceeded_requested.push((resource.clone(), *amount));
                exceeded_used.push((resource.clone(), in_use));
                exceeded_limited.push((resource.clone(), limit_q));
            }
        }
        if !exceeded_requested.is_empty() {
            return Err(Rejection {
                message: format!(
                    "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
                    print_list(&exceeded_requested),
                    print_list(&exceeded_used),
                    print_list(&exceeded_limited)
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> jiff::Timestamp {
        jiff::Timestamp::now()
    }

    fn pod(name: &str, requests: serde_json::Value, limits: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "x",
                "resources": {"requests": requests, "limits": limits}}]}
        }))
        .expect("pod")
    }

    fn quota(hard: serde_json::Value) -> ResourceQuota {
        serde_json::from_value(json!({
            "metadata": {"name": "compute", "namespace": "default"},
            "spec": {"hard": hard}
        }))
        .expect("quota")
    }

    #[test]
    fn pod_over_memory_quota_is_rejected_with_the_kubernetes_message() {
        let quota = quota(json!({"requests.memory": "1Gi", "pods": "10"}));
        let existing = vec![pod("a", json!({"memory": "768Mi"}), json!({}))];
        let mut new = pod("b", json!({"memory": "512Mi"}), json!({}));
        let rejection =
            admit_pod(&mut new, &[], &[quota], &existing, now()).expect_err("over quota");
        assert_eq!(
            rejection.message,
            "exceeded quota: compute, requested: requests.memory=512Mi, \
             used: requests.memory=768Mi, limited: requests.memory=1Gi"
        );
    }

    #[test]
    fn pod_within_quota_is_admitted_and_terminal_pods_use_nothing() {
        let quota = quota(json!({"pods": "1"}));
        let mut finished = pod("done", json!({}), json!({}));
        finished.status =
            Some(serde_json::from_value(json!({"phase": "Succeeded"})).expect("status"));
        let mut new = pod("b", json!({}), json!({}));
        assert_eq!(
            admit_pod(
                &mut new,
                &[],
                std::slice::from_ref(&quota),
                &[finished],
                now()
            ),
            Ok(())
        );
        let running = pod("a", json!({}), json!({}));
        let rejection =
            admit_pod(&mut new, &[], &[quota], &[running], now()).expect_err("pod count exceeded");
        assert!(
            rejection
                .message
                .contains("requested: pods=1, used: pods=1, limited: pods=1")
        );
    }

    #[test]
    fn quota_on_cpu_requires_pods_to_specify_it() {
        let quota = quota(json!({"limits.cpu": "2"}));
        let mut new = pod("b", json!({}), json!({}));
        let rejection = admit_pod(&mut new, &[], &[quota], &[], now()).expect_err("must specify");
        assert_eq!(
            rejection.message,
            "failed quota: compute: must specify limits.cpu"
        );
    }

    #[test]
    fn limit_range_defaults_fill_missing_requests_and_limits_and_annotate() {
        let range: LimitRange = serde_json::from_value(json!({
            "metadata": {"name": "defaults"},
            "spec": {"limits": [{"type": "Container",
                "default": {"cpu": "500m", "memory": "256Mi"},
                "defaultRequest": {"cpu": "100m"}}]}
        }))
        .expect("range");
        let mut new = pod("b", json!({}), json!({}));
        admit_pod(&mut new, &[range], &[], &[], now()).expect("admitted");
        let resources = new.spec.as_ref().expect("spec").containers[0]
            .resources
            .clone()
            .expect("resources");
        let requests = resources.requests.expect("requests");
        let limits = resources.limits.expect("limits");
        assert_eq!(requests["cpu"].0, "100m");
        assert_eq!(
            requests["memory"].0, "256Mi",
            "defaultRequest falls back to default"
        );
        assert_eq!(limits["cpu"].0, "500m");
        assert!(
            new.metadata.annotations.expect("annotations")[LIMIT_RANGER_ANNOTATION]
                .starts_with("LimitRanger plugin set: cpu, memory request for container app")
        );
    }

    #[test]
    fn limit_above_limit_range_max_is_forbidden() {
        let range: LimitRange = serde_json::from_value(json!({
            "metadata": {"name": "bounds"},
            "spec": {"limits": [{"type": "Container", "max": {"cpu": "1"}}]}
        }))
        .expect("range");
        let mut new = pod("b", json!({"cpu": "2"}), json!({"cpu": "2"}));
        let rejection = admit_pod(&mut new, &[range], &[], &[], now()).expect_err("over max");
        assert_eq!(
            rejection.message,
            "maximum cpu usage per Container is 1, but limit is 2"
        );
    }

    /// "Storage Resource Quota": a claim counts its storage request and itself, overall and for
    /// its storage class; one that would exceed the quota is forbidden with the quota's message.
    #[test]
    fn a_claim_over_the_storage_quota_is_forbidden_and_claims_are_counted() {
        let claim = |name: &str, storage: &str| -> PersistentVolumeClaim {
            serde_json::from_value(json!({"metadata": {"name": name},
                "spec": {"storageClassName": "standard",
                    "resources": {"requests": {"storage": storage}}}}))
            .expect("claim")
        };
        let budget = quota(
            json!({"requests.storage": "2Gi", "persistentvolumeclaims": "2",
            "standard.storageclass.storage.k8s.io/requests.storage": "10Gi"}),
        );
        let first = claim("db-1", "1Gi");
        assert_eq!(
            check_claim_quotas(&first, std::slice::from_ref(&budget), &[]),
            Ok(())
        );
        let rejection = check_claim_quotas(
            &claim("db-2", "2Gi"),
            std::slice::from_ref(&budget),
            std::slice::from_ref(&first),
        )
        .expect_err("over quota");
        assert_eq!(
            rejection.message,
            "exceeded quota: compute, requested: requests.storage=2Gi, used: requests.storage=1Gi, limited: requests.storage=2Gi"
        );
        let status = quota_status(&budget, [], [&first], now());
        let used = status.used.expect("used");
        assert_eq!(used["requests.storage"].0, "1Gi");
        assert_eq!(used["persistentvolumeclaims"].0, "1");
        assert_eq!(
            used["standard.storageclass.storage.k8s.io/requests.storage"].0,
            "1Gi"
        );
    }

    #[test]
    fn quota_status_sums_requests_of_live_pods() {
        let quota = quota(json!({"requests.cpu": "4", "pods": "5", "services": "2"}));
        let pods = [
            pod("a", json!({"cpu": "250m"}), json!({})),
            pod("b", json!({"cpu": "750m"}), json!({})),
        ];
        let status = quota_status(&quota, pods.iter(), [], now());
        let used = status.used.expect("used");
        assert_eq!(used["requests.cpu"].0, "1");
        assert_eq!(used["pods"].0, "2");
        assert!(
            !used.contains_key("services"),
            "untracked resources are not reported"
        );
    }

    /// `QuotaV1Pod`: a terminating pod holds quota until `deletionTimestamp` plus its grace
    /// period has passed, then it no longer counts.
    #[test]
    fn terminating_pods_hold_quota_until_their_grace_period_has_passed() {
        let quota = quota(json!({"pods": "1"}));
        let mut draining = pod("old", json!({}), json!({}));
        let deleted_at = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        draining.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(deleted_at),
        );
        draining.metadata.deletion_grace_period_seconds = Some(30);
        let during = deleted_at + jiff::SignedDuration::from_secs(29);
        let after = deleted_at + jiff::SignedDuration::from_secs(31);
        assert!(pod_counts_against_quota(&draining, during));
        assert!(!pod_counts_against_quota(&draining, after));
        let mut new = pod("new", json!({}), json!({}));
        let rejection = admit_pod(
            &mut new,
            &[],
            std::slice::from_ref(&quota),
            std::slice::from_ref(&draining),
            during,
        )
        .expect_err("the draining pod still counts");
        assert!(
            rejection.message.contains("used: pods=1"),
            "{}",
            rejection.message
        );
        assert_eq!(
            admit_pod(&mut new, &[], &[quota], &[draining], after),
            Ok(())
        );
    }
}
