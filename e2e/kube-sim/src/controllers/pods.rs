//! Facts about pods that several controllers need: readiness, availability, termination,
//! ownership.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// The current time, in the type Kubernetes timestamps use.
pub fn now() -> Timestamp {
    Timestamp::now()
}

/// Whether the object is being deleted (`metadata.deletionTimestamp` is set).
pub fn is_terminating(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

/// The pod's phase, `Pending` when none is set yet.
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .unwrap_or("Pending")
}

/// Whether the pod has finished (phase Succeeded or Failed).
pub fn is_finished(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// Since when the pod has been Ready, if it is.
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    let condition = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|condition| condition.type_ == "Ready")?;
    if condition.status != "True" {
        return None;
    }
    Some(
        condition
            .last_transition_time
            .as_ref()
            .map_or(Timestamp::UNIX_EPOCH, |time| time.0),
    )
}

/// Whether the pod is Ready and not terminating.
pub fn is_ready(pod: &Pod) -> bool {
    !is_terminating(&pod.metadata) && ready_since(pod).is_some()
}

/// Whether the pod is available: Ready, not terminating, for at least `min_ready_seconds`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    available_in(pod, min_ready_seconds, now) == Some(SignedDuration::ZERO)
}

/// How long until the pod becomes available: `Some(0)` when it is, `None` when it is not Ready.
pub fn available_in(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> Option<SignedDuration> {
    if is_terminating(&pod.metadata) {
        return None;
    }
    let since = ready_since(pod)?;
    let due = since
        .saturating_add(SignedDuration::from_secs(i64::from(
            min_ready_seconds.max(0),
        )))
        .unwrap_or(Timestamp::MAX);
    Some(if due <= now {
        SignedDuration::ZERO
    } else {
        due.duration_since(now)
    })
}

/// The UID of the object's controller (the owner reference with `controller: true`).
pub fn controller_uid(meta: &ObjectMeta) -> Option<&str> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|reference| reference.controller == Some(true))
        .map(|reference| reference.uid.as_str())
}

/// An owner reference that makes the owner the controller of the object, blocking its deletion
/// (as the built-in controllers set them).
pub fn controller_reference(
    api_version: &str,
    kind: &str,
    owner: &ObjectMeta,
) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        name: owner.name.clone()?,
        uid: owner.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// `namespace/name` of an object, for messages.
pub fn object_key(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

/// A duration as `std`'s, negative ones as zero.
pub fn to_std(duration: SignedDuration) -> std::time::Duration {
    std::time::Duration::try_from(duration).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ready_pod(since: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": since}]}
        }))
        .expect("pod")
    }

    #[test]
    fn pod_is_available_only_after_min_ready_seconds() {
        let pod = ready_pod("2025-01-01T00:00:00Z");
        let at = |text: &str| text.parse::<Timestamp>().expect("time");
        assert!(!is_available(&pod, 10, at("2025-01-01T00:00:05Z")));
        assert_eq!(
            available_in(&pod, 10, at("2025-01-01T00:00:05Z")),
            Some(SignedDuration::from_secs(5))
        );
        assert!(is_available(&pod, 10, at("2025-01-01T00:00:10Z")));
        assert!(is_available(&pod, 0, at("2025-01-01T00:00:00Z")));
    }

    #[test]
    fn terminating_pod_is_neither_ready_nor_available() {
        let mut pod = ready_pod("2025-01-01T00:00:00Z");
        pod.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH),
        );
        assert!(!is_ready(&pod));
        assert_eq!(available_in(&pod, 0, now()), None);
    }
}
