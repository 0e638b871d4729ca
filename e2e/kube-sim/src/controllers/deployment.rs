//! Deployments, through ReplicaSets: the controller owns one ReplicaSet per pod template and
//! rolls out by scaling them; the ReplicaSet controller ([`super::replicaset`]) owns the pods.
//!
//! Rules followed (Kubernetes documentation, "Deployments"; kube-controller-manager's
//! `pkg/controller/deployment/` `sync.go`, `rolling.go`, `recreate.go`, `progress.go` and
//! `util/deployment_util.go`):
//! - ReplicaSets: the Deployment's are those of its namespace matching its selector with an owner
//!   reference to it (`controller: true`). The new one is the oldest whose template equals the
//!   Deployment's, ignoring the `pod-template-hash` label; when none does it is created as
//!   `<deployment>-<pod-template-hash>`, the `pod-template-hash` label added to its labels,
//!   selector and template, with the Deployment's annotations (except `last-applied-configuration`
//!   and the controller's own) and `minReadySeconds`;
//! - revisions: `deployment.kubernetes.io/revision` on the new ReplicaSet is one more than the
//!   highest of the old ones (so going back to an older template, as `kubectl rollout undo` does,
//!   bumps that ReplicaSet's revision, the old number going into
//!   `deployment.kubernetes.io/revision-history`); the Deployment carries its new ReplicaSet's
//!   revision; every scaled ReplicaSet carries `deployment.kubernetes.io/desired-replicas`
//!   (`spec.replicas`) and `deployment.kubernetes.io/max-replicas` (`spec.replicas + maxSurge`);
//! - `RollingUpdate`: the new ReplicaSet grows while the sum of every ReplicaSet's
//!   `spec.replicas` stays within `replicas + maxSurge` (rounded up from a percentage); old
//!   ReplicaSets shrink only while at least `replicas - maxUnavailable` (rounded down) pods stay
//!   available, counting the new ReplicaSet's unavailable pods against the budget; old
//!   ReplicaSets with unavailable pods shrink first, oldest first (and the ReplicaSet controller
//!   deletes not-Ready pods first); when both are 0, maxUnavailable is 1 (the API forbids both 0;
//!   kube-sim stays live);
//! - `Recreate`: every old ReplicaSet goes to 0, and the new one is created (or scaled up) only
//!   once no pod of an old one is left, terminating ones included;
//! - a pod is available once Ready for `minReadySeconds`; terminating pods are left out of every
//!   count; pods that ended (Succeeded or Failed) are removed and replaced (by the ReplicaSet
//!   controller);
//! - scaling (`spec.replicas` changed while no rollout is under way, seen by the
//!   `desired-replicas` annotation) and `paused`: nothing rolls out and no new ReplicaSet is
//!   created; the one active ReplicaSet is scaled, or, with several active, each proportionally
//!   to its size (leftovers to the largest), within `replicas + maxSurge`;
//! - `revisionHistoryLimit`: old ReplicaSets beyond the limit that have no pods are deleted,
//!   lowest revision first, once the rollout is complete (or when scaling or paused);
//! - status, aggregated from the ReplicaSets: `replicas`, `readyReplicas`, `availableReplicas`
//!   (sums of theirs), `updatedReplicas` (the new one's), `unavailableReplicas`
//!   (`spec.replicas` summed, less available, never negative), `observedGeneration`, and the
//!   conditions `Available` (`MinimumReplicasAvailable`/`MinimumReplicasUnavailable`),
//!   `Progressing` (`NewReplicaSetCreated`, `FoundNewReplicaSet`, `ReplicaSetUpdated`,
//!   `NewReplicaSetAvailable`, `ProgressDeadlineExceeded`, `DeploymentPaused`,
//!   `DeploymentResumed`, the messages naming the real ReplicaSet) and `ReplicaFailure` (copied
//!   from a ReplicaSet's, e.g. `FailedCreate` when the API refuses a pod over quota). A
//!   condition keeps its times while its status and reason stay.
//!
//! Not simulated: hash collisions (`status.collisionCount`), adopting orphan ReplicaSets, and
//! the Events the controller records.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::error::{Error, Result, kube_error};
use super::names::pod_template_hash;
use super::pods::{controller_reference, controller_uid, is_terminating, now, object_key};
use super::{ControllersConfig, FIELD_MANAGER, selector_string};

/// The label that tells a Deployment's ReplicaSets (and their pods) of different templates apart.
pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// The revision of a ReplicaSet, and of its Deployment (the new ReplicaSet's).
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions of a ReplicaSet that became the new one again (comma-separated).
pub const REVISION_HISTORY_ANNOTATION: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's `spec.replicas` when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
/// The Deployment's `spec.replicas + maxSurge` when the ReplicaSet was last scaled.
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";
/// Annotations of the Deployment not copied to its ReplicaSets.
const ANNOTATIONS_NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    REVISION_HISTORY_ANNOTATION,
    DESIRED_REPLICAS_ANNOTATION,
    MAX_REPLICAS_ANNOTATION,
    "deprecated.deployment.rollback.to",
];

/// How far an int-or-percent value goes for `total` replicas.
pub fn resolve_int_or_percent(
    value: Option<&IntOrString>,
    default: &str,
    total: i32,
    round_up: bool,
) -> std::result::Result<i32, String> {
    let value = value
        .cloned()
        .unwrap_or_else(|| IntOrString::String(default.to_owned()));
    match value {
        IntOrString::Int(number) => Ok(number),
        IntOrString::String(text) => {
            let percent: i64 = text
                .strip_suffix('%')
                .and_then(|number| number.parse().ok())
                .ok_or_else(|| format!("{text:?} is neither an integer nor a percentage"))?;
            let scaled = percent * i64::from(total);
            let result = if round_up {
                (scaled + 99).div_euclid(100)
            } else {
                scaled.div_euclid(100)
            };
            i32::try_from(result).map_err(|_| format!("{text:?} is out of range"))
        }
    }
}

/// The rollout parameters of a Deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollout {
    /// `spec.replicas`.
    pub desired: i32,
    /// Resolved maxSurge (0 for Recreate).
    pub max_surge: i32,
    /// Resolved maxUnavailable (0 for Recreate).
    pub max_unavailable: i32,
    /// Whether the strategy is Recreate.
    pub recreate: bool,
    /// `spec.minReadySeconds`.
    pub min_ready_seconds: i32,
    /// `spec.paused`.
    pub paused: bool,
    /// `spec.revisionHistoryLimit` (10 by default).
    pub revision_history_limit: i32,
    /// `spec.progressDeadlineSeconds` (600 by default).
    pub progress_deadline_seconds: i32,
}

/// The rollout parameters, or what is wrong with the spec.
pub fn rollout(deployment: &Deployment) -> std::result::Result<Rollout, Error> {
    let spec = deployment.spec.clone().unwrap_or_default();
    let desired = spec.replicas.unwrap_or(1).max(0);
    let strategy = spec.strategy.unwrap_or_default();
    let recreate = strategy.type_.as_deref() == Some("Recreate");
    let rolling = strategy.rolling_update.unwrap_or_default();
    let invalid = |field: &str, message: String| Error::InvalidObject {
        object: format!("Deployment {}", object_key(&deployment.metadata)),
        field: field.to_owned(),
        message,
    };
    let (max_surge, mut max_unavailable) = if recreate {
        (0, 0)
    } else {
        (
            resolve_int_or_percent(rolling.max_surge.as_ref(), "25%", desired, true)
                .map_err(|m| invalid("spec.strategy.rollingUpdate.maxSurge", m))?,
            resolve_int_or_percent(rolling.max_unavailable.as_ref(), "25%", desired, false)
                .map_err(|m| invalid("spec.strategy.rollingUpdate.maxUnavailable", m))?,
        )
    };
    if !recreate && max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    Ok(Rollout {
        desired,
        max_surge: max_surge.max(0),
        max_unavailable: max_unavailable.clamp(0, desired.max(0)),
        recreate,
        min_ready_seconds: spec.min_ready_seconds.unwrap_or(0),
        paused: spec.paused.unwrap_or(false),
        revision_history_limit: spec.revision_history_limit.unwrap_or(10),
        progress_deadline_seconds: spec.progress_deadline_seconds.unwrap_or(600),
    })
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|spec| spec.replicas).unwrap_or(1)
}

fn status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |status| status.replicas)
}

fn ready_replicas(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|status| status.ready_replicas)
        .unwrap_or(0)
}

fn available_replicas(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|status| status.available_replicas)
        .unwrap_or(0)
}

fn annotation<'a>(rs: &'a ReplicaSet, key: &str) -> Option<&'a str> {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(key))
        .map(String::as_str)
}

/// The revision of a ReplicaSet (0 when it has none).
pub fn revision(rs: &ReplicaSet) -> i64 {
    annotation(rs, REVISION_ANNOTATION)
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

fn created(rs: &ReplicaSet) -> Timestamp {
    rs.metadata
        .creation_timestamp
        .as_ref()
        .map_or(Timestamp::UNIX_EPOCH, |time| time.0)
}

/// A pod template without the `pod-template-hash` label, for comparing templates.
fn without_hash(template: Option<&PodTemplateSpec>) -> serde_json::Value {
    let mut template = template.cloned().unwrap_or_default();
    if let Some(meta) = template.metadata.as_mut()
        && let Some(labels) = meta.labels.as_mut()
    {
        labels.remove(TEMPLATE_HASH_LABEL);
        if labels.is_empty() {
            meta.labels = None;
        }
    }
    serde_json::to_value(template).unwrap_or_default()
}

/// The pod-template-hash of a Deployment's template.
pub fn template_hash(deployment: &Deployment) -> String {
    let template = deployment
        .spec
        .as_ref()
        .map(|spec| serde_json::to_value(&spec.template).unwrap_or_default())
        .unwrap_or_default();
    pod_template_hash(&template)
}

/// Splits a Deployment's ReplicaSets into the new one (the oldest whose template equals the
/// Deployment's, ignoring the hash label) and the old ones: indexes into `replica_sets`.
pub fn find_new(deployment: &Deployment, replica_sets: &[ReplicaSet]) -> Option<usize> {
    let wanted = without_hash(deployment.spec.as_ref().map(|spec| &spec.template));
    let mut candidates: Vec<usize> = (0..replica_sets.len())
        .filter(|&index| {
            without_hash(
                replica_sets[index]
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.template.as_ref()),
            ) == wanted
        })
        .collect();
    candidates.sort_by_key(|&index| {
        (
            created(&replica_sets[index]),
            replica_sets[index].name_any(),
        )
    });
    candidates.first().copied()
}

/// What to change this round.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// A new ReplicaSet to create.
    pub create: Option<ReplicaSet>,
    /// ReplicaSets to write (scaled, or with new annotations or `minReadySeconds`), whole.
    pub update: Vec<ReplicaSet>,
    /// Old ReplicaSets to delete (beyond `revisionHistoryLimit`), by name.
    pub delete: Vec<String>,
    /// The Deployment's revision annotation, when it changes.
    pub revision: Option<String>,
    /// The Deployment's status after this round.
    pub status: DeploymentStatus,
}

impl Plan {
    /// Whether the plan changes no ReplicaSet.
    pub fn scales_nothing(&self) -> bool {
        self.create.is_none() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// The inputs of a plan besides the Deployment and its ReplicaSets.
#[derive(Debug, Clone, Copy)]
pub struct Observed {
    /// Whether a pod of an old ReplicaSet still runs or terminates (Recreate waits for none).
    pub old_pods_running: bool,
    /// The current time.
    pub now: Timestamp,
}

/// The working state of one round: every ReplicaSet as it will be.
struct Round<'a> {
    deployment: &'a Deployment,
    rollout: Rollout,
    sets: Vec<ReplicaSet>,
    new: Option<usize>,
    created: bool,
}

impl Round<'_> {
    fn old(&self) -> Vec<usize> {
        (0..self.sets.len())
            .filter(|&index| Some(index) != self.new)
            .collect()
    }

    fn all(&self) -> Vec<usize> {
        (0..self.sets.len()).collect()
    }

    fn replicas_sum(&self, indexes: &[usize]) -> i32 {
        indexes.iter().map(|&i| spec_replicas(&self.sets[i])).sum()
    }

    fn available_sum(&self, indexes: &[usize]) -> i32 {
        indexes
            .iter()
            .map(|&i| available_replicas(&self.sets[i]))
            .sum()
    }

    fn set_replicas_annotations(&mut self, index: usize) {
        let desired = self.rollout.desired;
        let max = desired + self.rollout.max_surge;
        let annotations = self.sets[index]
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new);
        annotations.insert(DESIRED_REPLICAS_ANNOTATION.to_owned(), desired.to_string());
        annotations.insert(MAX_REPLICAS_ANNOTATION.to_owned(), max.to_string());
    }

    fn annotations_need_update(&self, index: usize) -> bool {
        let desired = self.rollout.desired.to_string();
        let max = (self.rollout.desired + self.rollout.max_surge).to_string();
        annotation(&self.sets[index], DESIRED_REPLICAS_ANNOTATION) != Some(desired.as_str())
            || annotation(&self.sets[index], MAX_REPLICAS_ANNOTATION) != Some(max.as_str())
    }

    fn write_replicas(&mut self, index: usize, replicas: i32) {
        self.sets[index]
            .spec
            .get_or_insert_with(ReplicaSetSpec::default)
            .replicas = Some(replicas);
        self.set_replicas_annotations(index);
    }

    /// `scaleReplicaSetAndRecordEvent`: scales when the size differs.
    fn scale_if_needed(&mut self, index: usize, replicas: i32) -> bool {
        if spec_replicas(&self.sets[index]) == replicas {
            return false;
        }
        self.write_replicas(index, replicas);
        true
    }

    /// `scaleReplicaSet`: scales, or refreshes the replicas annotations.
    fn scale(&mut self, index: usize, replicas: i32) {
        if spec_replicas(&self.sets[index]) != replicas || self.annotations_need_update(index) {
            self.write_replicas(index, replicas);
        }
    }

    /// `NewRSNewReplicas`: how far the new ReplicaSet may grow now.
    fn new_replicas(&self, new: usize) -> i32 {
        let desired = self.rollout.desired;
        let current = spec_replicas(&self.sets[new]);
        if self.rollout.recreate {
            return desired;
        }
        let max_total = desired + self.rollout.max_surge;
        let total = self.replicas_sum(&self.all());
        if total >= max_total {
            return current;
        }
        current + (max_total - total).min(desired - current).max(0)
    }

    /// The ReplicaSet created for the Deployment's current template.
    fn create_new(&mut self, hash: &str, revision: i64) -> Result<usize> {
        let deployment = self.deployment;
        let spec = deployment.spec.clone().unwrap_or_default();
        let mut template = spec.template.clone();
        template
            .metadata
            .get_or_insert_with(ObjectMeta::default)
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(TEMPLATE_HASH_LABEL.to_owned(), hash.to_owned());
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(TEMPLATE_HASH_LABEL.to_owned(), hash.to_owned());
        let labels = template
            .metadata
            .as_ref()
            .and_then(|meta| meta.labels.clone());
        let owner = controller_reference("apps/v1", "Deployment", &deployment.metadata)
            .ok_or_else(|| Error::InvalidObject {
                object: format!("Deployment {}", object_key(&deployment.metadata)),
                field: "metadata.uid".to_owned(),
                message: "the Deployment has no name or uid yet".to_owned(),
            })?;
        let mut annotations = copied_annotations(deployment);
        annotations.insert(REVISION_ANNOTATION.to_owned(), revision.to_string());
        let replica_set = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{}-{hash}", deployment.name_any())),
                namespace: deployment.metadata.namespace.clone(),
                labels,
                annotations: Some(annotations),
                owner_references: Some(vec![owner]),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: Some(spec.min_ready_seconds.unwrap_or(0)),
                selector,
                template: Some(template),
            }),
            status: None,
        };
        self.sets.push(replica_set);
        let index = self.sets.len() - 1;
        self.new = Some(index);
        self.created = true;
        let replicas = self.new_replicas(index);
        self.write_replicas(index, replicas);
        Ok(index)
    }

    /// `reconcileNewReplicaSet`.
    fn reconcile_new(&mut self) -> bool {
        let Some(new) = self.new else { return false };
        let desired = self.rollout.desired;
        let current = spec_replicas(&self.sets[new]);
        if current == desired {
            return false;
        }
        if current > desired {
            return self.scale_if_needed(new, desired);
        }
        let target = self.new_replicas(new);
        self.scale_if_needed(new, target)
    }

    /// `reconcileOldReplicaSets`: unhealthy replicas first, then within maxUnavailable.
    fn reconcile_old(&mut self) -> bool {
        let mut old: Vec<usize> = self
            .old()
            .into_iter()
            .filter(|&i| spec_replicas(&self.sets[i]) > 0)
            .collect();
        if self.replicas_sum(&old) == 0 {
            return false;
        }
        let all_pods = self.replicas_sum(&self.all());
        let min_available = self.rollout.desired - self.rollout.max_unavailable;
        let new_unavailable = self.new.map_or(0, |new| {
            spec_replicas(&self.sets[new]) - available_replicas(&self.sets[new])
        });
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return false;
        }
        old.sort_by_key(|&i| (created(&self.sets[i]), self.sets[i].name_any()));
        // Old ReplicaSets' unavailable pods first: that does not lower availability.
        let mut cleaned = 0;
        for &index in &old {
            if cleaned >= max_scaled_down {
                break;
            }
            let replicas = spec_replicas(&self.sets[index]);
            let unhealthy = replicas - available_replicas(&self.sets[index]);
            if replicas == 0 || unhealthy <= 0 {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(unhealthy);
            self.scale_if_needed(index, replicas - down);
            cleaned += down;
        }
        // Then as far as availability allows.
        let available = self.available_sum(&self.all());
        let mut scaled = 0;
        if available > min_available {
            let budget = available - min_available;
            for &index in &old {
                if scaled >= budget {
                    break;
                }
                let replicas = spec_replicas(&self.sets[index]);
                if replicas == 0 {
                    continue;
                }
                let down = replicas.min(budget - scaled);
                self.scale_if_needed(index, replicas - down);
                scaled += down;
            }
        }
        cleaned + scaled > 0
    }

    /// `scale`: a scaling event or a paused Deployment.
    fn scale_event(&mut self) {
        let desired = self.rollout.desired;
        let active: Vec<usize> = self
            .all()
            .into_iter()
            .filter(|&i| spec_replicas(&self.sets[i]) > 0)
            .collect();
        let active_or_latest = match active.as_slice() {
            [] => self.new.or_else(|| {
                self.old()
                    .into_iter()
                    .max_by_key(|&i| (created(&self.sets[i]), self.sets[i].name_any()))
            }),
            [only] => Some(*only),
            [_, _, ..] => None,
        };
        if let Some(index) = active_or_latest {
            self.scale_if_needed(index, desired);
            return;
        }
        if let Some(new) = self.new
            && annotation(&self.sets[new], DESIRED_REPLICAS_ANNOTATION)
                == Some(desired.to_string().as_str())
            && spec_replicas(&self.sets[new]) == desired
            && available_replicas(&self.sets[new]) == desired
        {
            for index in self.old() {
                if spec_replicas(&self.sets[index]) > 0 {
                    self.scale_if_needed(index, 0);
                }
            }
            return;
        }
        if self.rollout.recreate {
            return;
        }
        let allowed = if desired > 0 {
            desired + self.rollout.max_surge
        } else {
            0
        };
        let to_add = allowed - self.replicas_sum(&active);
        let mut order = active;
        // Larger first; on a tie, newer first when adding, older first when removing.
        order.sort_by(|&a, &b| {
            let by_size = spec_replicas(&self.sets[b]).cmp(&spec_replicas(&self.sets[a]));
            let by_age = created(&self.sets[a]).cmp(&created(&self.sets[b]));
            by_size.then(if to_add > 0 { by_age.reverse() } else { by_age })
        });
        let mut added = 0;
        let mut sizes = Vec::new();
        for &index in &order {
            let replicas = spec_replicas(&self.sets[index]);
            let proportion = if to_add == 0 || to_add == added || replicas == 0 {
                0
            } else {
                let fraction = self.fraction(index);
                let allowed = to_add - added;
                if to_add > 0 {
                    fraction.min(allowed)
                } else {
                    fraction.max(allowed)
                }
            };
            sizes.push(replicas + proportion);
            added += proportion;
        }
        for (position, &index) in order.iter().enumerate() {
            let mut size = sizes[position];
            if position == 0 && to_add != 0 {
                size = (size + to_add - added).max(0);
            }
            self.scale(index, size);
        }
    }

    /// `getReplicaSetFraction`: how much a ReplicaSet grows or shrinks in proportion.
    fn fraction(&self, index: usize) -> i32 {
        let rs = &self.sets[index];
        let replicas = spec_replicas(rs);
        if self.rollout.desired == 0 {
            return -replicas;
        }
        let max_now = self.rollout.desired + self.rollout.max_surge;
        let before = annotation(rs, MAX_REPLICAS_ANNOTATION)
            .and_then(|value| value.parse::<i32>().ok())
            .filter(|value| *value > 0)
            .or_else(|| {
                self.deployment
                    .status
                    .as_ref()
                    .and_then(|status| status.replicas)
                    .filter(|value| *value > 0)
            });
        let Some(before) = before else { return 0 };
        let scaled = f64::from(replicas) * f64::from(max_now) / f64::from(before);
        #[allow(clippy::cast_possible_truncation)]
        let rounded = scaled.round() as i32;
        rounded - replicas
    }

    /// `cleanupDeployment`: old ReplicaSets without pods beyond the history limit.
    fn cleanup(&self) -> Vec<String> {
        let mut cleanable: Vec<usize> = self
            .old()
            .into_iter()
            .filter(|&i| !is_terminating(&self.sets[i].metadata))
            .collect();
        let limit = usize::try_from(self.rollout.revision_history_limit.max(0)).unwrap_or(0);
        if cleanable.len() <= limit {
            return Vec::new();
        }
        let surplus = cleanable.len() - limit;
        cleanable.sort_by_key(|&i| (revision(&self.sets[i]), created(&self.sets[i])));
        cleanable[..surplus]
            .iter()
            .map(|&i| &self.sets[i])
            .filter(|rs| {
                status_replicas(rs) == 0
                    && spec_replicas(rs) == 0
                    && rs.metadata.generation.unwrap_or(0)
                        <= rs
                            .status
                            .as_ref()
                            .and_then(|status| status.observed_generation)
                            .unwrap_or(0)
            })
            .map(ResourceExt::name_any)
            .collect()
    }
}

/// The Deployment's annotations that its ReplicaSets carry.
fn copied_annotations(deployment: &Deployment) -> BTreeMap<String, String> {
    deployment
        .metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(key, _)| !ANNOTATIONS_NOT_COPIED.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// Whether `spec.replicas` changed since the active ReplicaSets were last scaled.
fn is_scaling_event(deployment_replicas: i32, sets: &[ReplicaSet]) -> bool {
    sets.iter()
        .filter(|rs| spec_replicas(rs) > 0)
        .filter_map(|rs| annotation(rs, DESIRED_REPLICAS_ANNOTATION))
        .filter_map(|value| value.parse::<i32>().ok())
        .any(|desired| desired != deployment_replicas)
}

/// Decides the next step of the rollout: which ReplicaSets to create, scale and delete, and the
/// Deployment's status.
pub fn plan(
    deployment: &Deployment,
    rollout: &Rollout,
    replica_sets: &[ReplicaSet],
    observed: Observed,
) -> Result<Plan> {
    let hash = template_hash(deployment);
    let mut round = Round {
        deployment,
        rollout: *rollout,
        sets: replica_sets.to_vec(),
        new: find_new(deployment, replica_sets),
        created: false,
    };
    let max_old_revision = round
        .old()
        .iter()
        .map(|&i| revision(&round.sets[i]))
        .max()
        .unwrap_or(0);
    let new_revision = max_old_revision + 1;

    // The new ReplicaSet's annotations and minReadySeconds follow the Deployment.
    if let Some(new) = round.new {
        let rs = &mut round.sets[new];
        let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
        for (key, value) in copied_annotations(deployment) {
            annotations.insert(key, value);
        }
        let old_revision = annotations
            .get(REVISION_ANNOTATION)
            .and_then(|value| value.parse::<i64>().ok())
            .unwrap_or(0);
        if old_revision < new_revision {
            annotations.insert(REVISION_ANNOTATION.to_owned(), new_revision.to_string());
            if old_revision > 0 {
                let history = annotations
                    .get(REVISION_HISTORY_ANNOTATION)
                    .filter(|history| !history.is_empty())
                    .map_or_else(
                        || old_revision.to_string(),
                        |history| format!("{history},{old_revision}"),
                    );
                annotations.insert(REVISION_HISTORY_ANNOTATION.to_owned(), history);
            }
        }
        if let Some(spec) = rs.spec.as_mut()
            && spec.min_ready_seconds.unwrap_or(0) != rollout.min_ready_seconds
        {
            spec.min_ready_seconds = Some(rollout.min_ready_seconds);
        }
    }

    let previous = deployment.status.clone().unwrap_or_default();
    let mut conditions = previous.conditions.clone().unwrap_or_default();
    paused_conditions(&mut conditions, rollout.paused, observed.now);

    let mut delete = Vec::new();
    let rolling_out = !rollout.paused && !is_scaling_event(rollout.desired, &round.sets);
    if !rolling_out {
        round.scale_event();
        delete = round.cleanup();
    } else if rollout.recreate {
        let mut scaled_down = false;
        for index in round.old() {
            if spec_replicas(&round.sets[index]) > 0 {
                scaled_down |= round.scale_if_needed(index, 0);
            }
        }
        let old_running = round
            .old()
            .iter()
            .any(|&i| status_replicas(&round.sets[i]) > 0)
            || observed.old_pods_running;
        if !scaled_down && !old_running {
            let new = match round.new {
                Some(new) => new,
                None => round.create_new(&hash, new_revision)?,
            };
            round.scale_if_needed(new, rollout.desired);
            if complete(deployment, &previous) {
                delete = round.cleanup();
            }
        }
    } else {
        if round.new.is_none() {
            round.create_new(&hash, new_revision)?;
        }
        if !round.reconcile_new() && !round.reconcile_old() && complete(deployment, &previous) {
            delete = round.cleanup();
        }
    }

    let new_name = round.new.map(|new| round.sets[new].name_any());
    if let Some(name) = &new_name {
        if round.created {
            set_condition(
                &mut conditions,
                new_condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetCreated",
                    format!("Created new replica set \"{name}\""),
                    observed.now,
                ),
            );
        } else if !conditions.iter().any(|c| c.type_ == "Progressing") {
            set_condition(
                &mut conditions,
                new_condition(
                    "Progressing",
                    "True",
                    "FoundNewReplicaSet",
                    format!("Found new replica set \"{name}\""),
                    observed.now,
                ),
            );
        }
    }

    let mut status = calculate_status(deployment, &round, conditions, observed.now);
    if rolling_out {
        rollout_conditions(
            deployment,
            &previous,
            &mut status,
            &round,
            new_name.as_deref(),
            observed.now,
        );
    }

    let revision_now = round
        .new
        .and_then(|new| annotation(&round.sets[new], REVISION_ANNOTATION))
        .map(str::to_owned);
    let deployment_revision = deployment
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(REVISION_ANNOTATION));
    let revision = revision_now.filter(|now| Some(now) != deployment_revision);

    let mut create = None;
    let mut update = Vec::new();
    for (index, rs) in round.sets.iter().enumerate() {
        if index >= replica_sets.len() {
            create = Some(rs.clone());
        } else if rs != &replica_sets[index] {
            update.push(rs.clone());
        }
    }
    Ok(Plan {
        create,
        update,
        delete,
        revision,
        status,
    })
}

/// `DeploymentComplete`: every replica updated and available, the generation observed.
fn complete(deployment: &Deployment, status: &DeploymentStatus) -> bool {
    let desired = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1);
    status.updated_replicas == Some(desired)
        && status.replicas == Some(desired)
        && status.available_replicas == Some(desired)
        && status.observed_generation >= deployment.metadata.generation
}

fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message),
        last_transition_time: Some(Time(now)),
        last_update_time: Some(Time(now)),
    }
}

/// `SetDeploymentCondition`: nothing changes while status and reason stay; the transition time
/// stays while the status does.
fn set_condition(conditions: &mut Vec<DeploymentCondition>, mut condition: DeploymentCondition) {
    if let Some(current) = conditions.iter().find(|c| c.type_ == condition.type_) {
        if current.status == condition.status && current.reason == condition.reason {
            return;
        }
        if current.status == condition.status {
            condition
                .last_transition_time
                .clone_from(&current.last_transition_time);
        }
    }
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(slot) => *slot = condition,
        None => conditions.push(condition),
    }
}

/// `checkPausedConditions`.
fn paused_conditions(conditions: &mut Vec<DeploymentCondition>, paused: bool, now: Timestamp) {
    let reason = conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .and_then(|c| c.reason.clone());
    if reason.as_deref() == Some("ProgressDeadlineExceeded") {
        return;
    }
    let paused_now = reason.as_deref() == Some("DeploymentPaused");
    if paused && !paused_now {
        set_condition(
            conditions,
            new_condition(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".to_owned(),
                now,
            ),
        );
    } else if !paused && paused_now {
        set_condition(
            conditions,
            new_condition(
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed".to_owned(),
                now,
            ),
        );
    }
}

/// `calculateStatus`: the counts from the ReplicaSets, and `Available`.
fn calculate_status(
    deployment: &Deployment,
    round: &Round<'_>,
    mut conditions: Vec<DeploymentCondition>,
    now: Timestamp,
) -> DeploymentStatus {
    let all = round.all();
    let available = round.available_sum(&all);
    let total = round.replicas_sum(&all);
    let min_available = round.rollout.desired - round.rollout.max_unavailable;
    let condition = if available >= min_available {
        new_condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".to_owned(),
            now,
        )
    } else {
        new_condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".to_owned(),
            now,
        )
    };
    set_condition(&mut conditions, condition);
    DeploymentStatus {
        observed_generation: deployment.metadata.generation,
        replicas: Some(all.iter().map(|&i| status_replicas(&round.sets[i])).sum()),
        updated_replicas: Some(round.new.map_or(0, |new| status_replicas(&round.sets[new]))),
        ready_replicas: Some(all.iter().map(|&i| ready_replicas(&round.sets[i])).sum()),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        conditions: Some(conditions),
        collision_count: deployment
            .status
            .as_ref()
            .and_then(|status| status.collision_count),
        terminating_replicas: None,
    }
}

/// `syncRolloutStatus`: `Progressing` by progress and the deadline, and `ReplicaFailure`.
fn rollout_conditions(
    deployment: &Deployment,
    previous: &DeploymentStatus,
    status: &mut DeploymentStatus,
    round: &Round<'_>,
    new_name: Option<&str>,
    now: Timestamp,
) {
    let mut conditions = status.conditions.take().unwrap_or_default();
    let current = previous
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing")
        .cloned();
    let already_complete = status.replicas == status.updated_replicas
        && current
            .as_ref()
            .is_some_and(|c| c.reason.as_deref() == Some("NewReplicaSetAvailable"));
    let name = new_name.unwrap_or_default();
    if !already_complete {
        let n = |value: Option<i32>| value.unwrap_or(0);
        let progressed = n(status.updated_replicas) > n(previous.updated_replicas)
            || n(status.replicas) - n(status.updated_replicas)
                < n(previous.replicas) - n(previous.updated_replicas)
            || n(status.ready_replicas) > n(previous.ready_replicas)
            || n(status.available_replicas) > n(previous.available_replicas);
        let timed_out = current.as_ref().is_some_and(|c| match c.reason.as_deref() {
            Some("ProgressDeadlineExceeded") => true,
            Some("NewReplicaSetAvailable") => false,
            _ => {
                let from = c
                    .last_update_time
                    .as_ref()
                    .map_or(Timestamp::UNIX_EPOCH, |time| time.0);
                from.saturating_add(SignedDuration::from_secs(i64::from(
                    round.rollout.progress_deadline_seconds,
                )))
                .is_ok_and(|deadline| now > deadline)
            }
        });
        if complete(deployment, status) {
            set_condition(
                &mut conditions,
                new_condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetAvailable",
                    format!("ReplicaSet \"{name}\" has successfully progressed."),
                    now,
                ),
            );
        } else if progressed {
            let mut condition = new_condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{name}\" is progressing."),
                now,
            );
            // Progress refreshes lastUpdateTime, even with the same reason.
            if let Some(current) = conditions.iter().find(|c| c.type_ == "Progressing")
                && current.status == "True"
            {
                condition
                    .last_transition_time
                    .clone_from(&current.last_transition_time);
            }
            conditions.retain(|c| c.type_ != "Progressing");
            conditions.push(condition);
        } else if timed_out {
            set_condition(
                &mut conditions,
                new_condition(
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    format!("ReplicaSet \"{name}\" has timed out progressing."),
                    now,
                ),
            );
        }
    }
    // The new ReplicaSet's failure first, then an old one's.
    let failure = round
        .new
        .into_iter()
        .chain(round.old())
        .filter_map(|index| {
            round.sets[index]
                .status
                .as_ref()
                .and_then(|status| status.conditions.as_ref())
                .and_then(|conditions| {
                    conditions
                        .iter()
                        .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
                })
        })
        .next();
    match failure {
        Some(failure) => set_condition(
            &mut conditions,
            DeploymentCondition {
                type_: "ReplicaFailure".to_owned(),
                status: failure.status.clone(),
                reason: failure.reason.clone(),
                message: failure.message.clone(),
                last_transition_time: failure.last_transition_time.clone(),
                last_update_time: failure.last_transition_time.clone(),
            },
        ),
        None => conditions.retain(|c| c.type_ != "ReplicaFailure"),
    }
    status.conditions = Some(conditions);
}

/// When a rollout in progress runs out of time (`lastUpdateTime + progressDeadlineSeconds`).
fn progress_deadline(status: &DeploymentStatus, seconds: i32) -> Option<Timestamp> {
    let progressing = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing" && c.status == "True")?;
    if progressing.reason.as_deref() == Some("NewReplicaSetAvailable") {
        return None;
    }
    progressing
        .last_update_time
        .as_ref()?
        .0
        .saturating_add(SignedDuration::from_secs(i64::from(seconds)))
        .ok()
}

struct Context {
    client: kube::Client,
}

fn match_labels(deployment: &Deployment) -> String {
    selector_string(
        &deployment
            .spec
            .as_ref()
            .and_then(|spec| spec.selector.match_labels.clone())
            .unwrap_or_default(),
    )
}

async fn reconcile(deployment: Arc<Deployment>, context: Arc<Context>) -> Result<Action> {
    if is_terminating(&deployment.metadata) {
        return Ok(Action::await_change());
    }
    let namespace = deployment
        .namespace()
        .unwrap_or_else(|| "default".to_owned());
    let name = deployment.name_any();
    let uid = deployment.uid().unwrap_or_default();
    // Instant mode needs nothing here: the ReplicaSet controller makes Ready pods available.
    let rollout = rollout(&deployment)?;
    let selector = match_labels(&deployment);
    let rs_api: Api<ReplicaSet> = Api::namespaced(context.client.clone(), &namespace);
    let replica_sets: Vec<ReplicaSet> = rs_api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(kube_error(format!(
            "listing the ReplicaSets of Deployment {namespace}/{name}"
        )))?
        .items
        .into_iter()
        .filter(|rs| controller_uid(&rs.metadata) == Some(uid.as_str()))
        .collect();

    // Recreate waits for every pod of an old ReplicaSet to be gone, terminating ones included.
    let mut old_pods_running = false;
    if rollout.recreate {
        let new_uid = find_new(&deployment, &replica_sets).and_then(|i| replica_sets[i].uid());
        let old_uids: Vec<String> = replica_sets
            .iter()
            .filter_map(ResourceExt::uid)
            .filter(|rs_uid| Some(rs_uid) != new_uid.as_ref())
            .collect();
        let pods: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
        old_pods_running = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(kube_error(format!(
                "listing the pods of Deployment {namespace}/{name}"
            )))?
            .items
            .iter()
            .any(|pod| {
                controller_uid(&pod.metadata)
                    .is_some_and(|owner| old_uids.iter().any(|u| u == owner))
                    && !super::pods::is_finished(pod)
            });
    }

    let now = now();
    let plan = plan(
        &deployment,
        &rollout,
        &replica_sets,
        Observed {
            old_pods_running,
            now,
        },
    )?;

    if let Some(replica_set) = &plan.create {
        rs_api
            .create(&PostParams::default(), replica_set)
            .await
            .map_err(kube_error(format!(
                "creating ReplicaSet {namespace}/{} for Deployment {name}",
                replica_set.name_any()
            )))?;
    }
    for replica_set in &plan.update {
        rs_api
            .replace(&replica_set.name_any(), &PostParams::default(), replica_set)
            .await
            .map_err(kube_error(format!(
                "updating ReplicaSet {namespace}/{}",
                replica_set.name_any()
            )))?;
    }
    for rs_name in &plan.delete {
        let rs_uid = replica_sets
            .iter()
            .find(|rs| &rs.name_any() == rs_name)
            .and_then(ResourceExt::uid);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: rs_uid,
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        if let Err(error) = rs_api.delete(rs_name, &params).await {
            tracing::debug!(%error, replica_set = %rs_name, "deployment: deleting an old ReplicaSet failed");
        }
    }

    let api: Api<Deployment> = Api::namespaced(context.client.clone(), &namespace);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    if let Some(revision) = &plan.revision {
        api.patch(
            &name,
            &params,
            &Patch::Merge(json!({"metadata": {"annotations": {REVISION_ANNOTATION: revision}}})),
        )
        .await
        .map_err(kube_error(format!(
            "setting the revision of Deployment {namespace}/{name}"
        )))?;
    }
    if deployment.status.as_ref() != Some(&plan.status) {
        api.patch_status(
            &name,
            &params,
            &Patch::Merge(json!({ "status": plan.status })),
        )
        .await
        .map_err(kube_error(format!(
            "updating the status of Deployment {namespace}/{name}"
        )))?;
    }

    // ReplicaSet changes wake this controller; Recreate also waits on pods, and a rollout on its
    // progress deadline.
    let deadline = progress_deadline(&plan.status, rollout.progress_deadline_seconds)
        .map(|at| super::pods::to_std(at.duration_since(now)) + Duration::from_millis(50));
    let requeue = if old_pods_running {
        Duration::from_secs(1)
    } else if plan.scales_nothing() {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(5)
    };
    let requeue = deadline.map_or(requeue, |deadline| requeue.min(deadline));
    Ok(Action::requeue(requeue))
}

fn error_policy(_deployment: Arc<Deployment>, error: &Error, _context: Arc<Context>) -> Action {
    tracing::debug!(%error, "deployment controller");
    Action::requeue(Duration::from_millis(500))
}

/// Runs the Deployment controller until `shutdown`.
pub async fn run(
    client: kube::Client,
    _config: Arc<ControllersConfig>,
    shutdown: CancellationToken,
) {
    let deployments: Api<Deployment> = Api::all(client.clone());
    let replica_sets: Api<ReplicaSet> = Api::all(client.clone());
    let stream = Controller::new(deployments, watcher::Config::default())
        .owns(replica_sets, watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(Context { client }))
        .for_each(|_| async {});
    tokio::select! {
        () = stream => {}
        () = shutdown.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(
        replicas: i32,
        surge: serde_json::Value,
        unavailable: serde_json::Value,
    ) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "d-1", "generation": 2,
                "annotations": {"kubernetes.io/change-cause": "image a:2"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
                "strategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "app", "image": "a:2"}]}}}
        }))
        .expect("deployment")
    }

    /// A ReplicaSet of the Deployment for `image`, with its spec and available replicas.
    fn replica_set(image: &str, replicas: i32, available: i32, revision: i64) -> ReplicaSet {
        let hash = format!("h{revision}");
        serde_json::from_value(json!({
            "metadata": {"name": format!("web-{hash}"), "namespace": "default",
                "uid": format!("rs-{revision}"), "generation": 1,
                "creationTimestamp": format!("2025-01-01T00:0{revision}:00Z"),
                "labels": {"app": "web", "pod-template-hash": hash},
                "annotations": {REVISION_ANNOTATION: revision.to_string()},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                    "uid": "d-1", "controller": true, "blockOwnerDeletion": true}]},
            "spec": {"replicas": replicas, "minReadySeconds": 0,
                "selector": {"matchLabels": {"app": "web", "pod-template-hash": hash}},
                "template": {"metadata": {"labels": {"app": "web", "pod-template-hash": hash}},
                    "spec": {"containers": [{"name": "app", "image": image}]}}},
            "status": {"replicas": replicas, "readyReplicas": available,
                "availableReplicas": available, "observedGeneration": 1}
        }))
        .expect("replica set")
    }

    fn at() -> Timestamp {
        "2025-01-01T01:00:00Z".parse().expect("time")
    }

    fn observed() -> Observed {
        Observed {
            old_pods_running: false,
            now: at(),
        }
    }

    fn replicas_of(plan: &Plan, name: &str) -> Option<i32> {
        plan.update
            .iter()
            .chain(plan.create.iter())
            .find(|rs| rs.name_any() == name)
            .map(spec_replicas)
    }

    fn step(deployment: &Deployment, sets: &[ReplicaSet]) -> Plan {
        let rollout = rollout(deployment).expect("rollout");
        plan(deployment, &rollout, sets, observed()).expect("plan")
    }

    #[test]
    fn percentages_round_surge_up_and_unavailable_down() {
        let quarter = IntOrString::String("25%".to_owned());
        assert_eq!(resolve_int_or_percent(Some(&quarter), "", 3, true), Ok(1));
        assert_eq!(resolve_int_or_percent(Some(&quarter), "", 3, false), Ok(0));
        assert_eq!(resolve_int_or_percent(None, "25%", 4, false), Ok(1));
        assert!(
            resolve_int_or_percent(Some(&IntOrString::String("x".into())), "", 3, true).is_err()
        );
    }

    #[test]
    fn new_template_gets_a_replica_set_named_by_its_hash_with_the_next_revision() {
        let mut deployment = deployment(3, json!(1), json!(0));
        deployment.status = Some(
            serde_json::from_value(json!({"observedGeneration": 1, "replicas": 3,
                "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3}))
            .expect("status"),
        );
        let plan = step(&deployment, &[replica_set("a:1", 3, 3, 1)]);
        let created = plan.create.expect("a new ReplicaSet");
        let hash = template_hash(&deployment);
        assert_eq!(created.name_any(), format!("web-{hash}"));
        let labels = created.labels();
        assert_eq!(labels.get(TEMPLATE_HASH_LABEL), Some(&hash));
        let spec = created.spec.as_ref().expect("spec");
        assert_eq!(
            spec.selector
                .match_labels
                .as_ref()
                .and_then(|l| l.get(TEMPLATE_HASH_LABEL)),
            Some(&hash)
        );
        let template_labels = spec
            .template
            .as_ref()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.as_ref())
            .expect("template labels");
        assert_eq!(template_labels.get(TEMPLATE_HASH_LABEL), Some(&hash));
        assert_eq!(annotation(&created, REVISION_ANNOTATION), Some("2"));
        assert_eq!(annotation(&created, DESIRED_REPLICAS_ANNOTATION), Some("3"));
        assert_eq!(annotation(&created, MAX_REPLICAS_ANNOTATION), Some("4"));
        assert_eq!(
            annotation(&created, "kubernetes.io/change-cause"),
            Some("image a:2"),
            "the Deployment's annotations are copied"
        );
        let owner = &created.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("Deployment", Some(true))
        );
        assert_eq!(plan.revision.as_deref(), Some("2"));
        let progressing = plan
            .status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Progressing")
            .expect("Progressing");
        assert_eq!(progressing.reason.as_deref(), Some("NewReplicaSetCreated"));
        assert_eq!(
            progressing.message,
            Some(format!("Created new replica set \"web-{hash}\""))
        );
    }

    #[test]
    fn rolling_update_with_max_unavailable_zero_surges_before_scaling_old_down() {
        let deployment = deployment(3, json!(1), json!(0));
        let hash = template_hash(&deployment);
        let old = replica_set("a:1", 3, 3, 1);
        // First step: a new ReplicaSet of one (the surge); the old one keeps its 3.
        let first = step(&deployment, std::slice::from_ref(&old));
        assert_eq!(replicas_of(&first, &format!("web-{hash}")), Some(1));
        assert_eq!(replicas_of(&first, "web-h1"), None, "old is not scaled yet");

        // The surge pod is not available yet: nothing more happens.
        let mut new = first.create.clone().expect("created");
        new.metadata.creation_timestamp = Some(Time(at()));
        new.status = Some(serde_json::from_value(json!({"replicas": 1})).expect("status"));
        let waiting = step(&deployment, &[old.clone(), new.clone()]);
        assert!(waiting.scales_nothing(), "{waiting:?}");

        // Once it is available, the old ReplicaSet loses one; the new one stays within the surge.
        new.status = Some(
            serde_json::from_value(json!({"replicas": 1, "readyReplicas": 1,
                "availableReplicas": 1}))
            .expect("status"),
        );
        let next = step(&deployment, &[old, new]);
        assert_eq!(replicas_of(&next, "web-h1"), Some(2));
        assert_eq!(replicas_of(&next, &format!("web-{hash}")), None);
    }

    #[test]
    fn rolling_update_with_max_surge_zero_scales_old_down_before_creating_pods() {
        let deployment = deployment(2, json!(0), json!(1));
        let plan = step(&deployment, &[replica_set("a:1", 2, 2, 1)]);
        let hash = template_hash(&deployment);
        assert_eq!(
            replicas_of(&plan, &format!("web-{hash}")),
            Some(0),
            "no room above 2 pods"
        );
        assert_eq!(
            replicas_of(&plan, "web-h1"),
            Some(1),
            "one pod may be unavailable"
        );
    }

    #[test]
    fn old_replica_sets_with_unavailable_pods_shrink_first() {
        let deployment = deployment(2, json!(0), json!(1));
        let healthy = replica_set("a:1", 1, 1, 1);
        let unhealthy = replica_set("a:0", 1, 0, 2);
        let plan = step(&deployment, &[healthy, unhealthy]);
        assert_eq!(replicas_of(&plan, "web-h2"), Some(0));
        assert_eq!(replicas_of(&plan, "web-h1"), None, "the healthy one stays");
    }

    #[test]
    fn recreate_scales_old_to_zero_and_waits_for_their_pods_to_be_gone() {
        let mut deployment = deployment(2, json!(1), json!(0));
        deployment.spec.as_mut().expect("spec").strategy =
            Some(serde_json::from_value(json!({"type": "Recreate"})).expect("strategy"));
        let rollout = rollout(&deployment).expect("rollout");
        let first = plan(
            &deployment,
            &rollout,
            &[replica_set("a:1", 2, 2, 1)],
            observed(),
        )
        .expect("plan");
        assert_eq!(replicas_of(&first, "web-h1"), Some(0));
        assert!(
            first.create.is_none(),
            "no new ReplicaSet while old pods run"
        );

        // Scaled to 0, one pod still terminating.
        let mut emptied = replica_set("a:1", 0, 0, 1);
        emptied.status = Some(serde_json::from_value(json!({"replicas": 0})).expect("status"));
        let terminating = Observed {
            old_pods_running: true,
            now: at(),
        };
        let waiting = plan(
            &deployment,
            &rollout,
            std::slice::from_ref(&emptied),
            terminating,
        )
        .expect("plan");
        assert!(waiting.create.is_none());

        let gone = plan(&deployment, &rollout, &[emptied], observed()).expect("plan");
        let created = gone
            .create
            .expect("the new ReplicaSet once old pods are gone");
        assert_eq!(spec_replicas(&created), 2);
    }

    #[test]
    fn paused_deployment_creates_no_replica_set_and_does_not_roll_out() {
        let mut deployment = deployment(3, json!(1), json!(0));
        deployment.spec.as_mut().expect("spec").paused = Some(true);
        let plan = step(&deployment, &[replica_set("a:1", 3, 3, 1)]);
        assert!(plan.scales_nothing(), "{plan:?}");
        let progressing = plan
            .status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Progressing")
            .expect("Progressing");
        assert_eq!(
            (progressing.status.as_str(), progressing.reason.as_deref()),
            ("Unknown", Some("DeploymentPaused"))
        );
    }

    #[test]
    fn scaling_while_paused_still_applies_to_the_active_replica_set() {
        let mut deployment = deployment(5, json!(1), json!(0));
        deployment.spec.as_mut().expect("spec").paused = Some(true);
        let plan = step(&deployment, &[replica_set("a:1", 3, 3, 1)]);
        assert_eq!(replicas_of(&plan, "web-h1"), Some(5));
    }

    #[test]
    fn scaling_during_a_rollout_is_proportional_within_the_surge() {
        // 10 replicas, surge 2: two active ReplicaSets of 6 each (12 = 10 + 2).
        let mut deployment = deployment(20, json!(2), json!(0));
        let mut old = replica_set("a:1", 6, 6, 1);
        let mut new = replica_set("a:2", 6, 0, 2);
        for rs in [&mut old, &mut new] {
            let annotations = rs.metadata.annotations.as_mut().expect("annotations");
            annotations.insert(DESIRED_REPLICAS_ANNOTATION.into(), "10".into());
            annotations.insert(MAX_REPLICAS_ANNOTATION.into(), "12".into());
        }
        deployment.spec.as_mut().expect("spec").template = new
            .spec
            .as_ref()
            .and_then(|s| s.template.clone())
            .expect("template");
        let plan = step(&deployment, &[old, new]);
        let old_size = replicas_of(&plan, "web-h1").expect("old scaled");
        let new_size = replicas_of(&plan, "web-h2").expect("new scaled");
        assert_eq!(old_size + new_size, 22, "20 + maxSurge 2");
        assert_eq!(
            (old_size, new_size),
            (11, 11),
            "in proportion to their sizes"
        );
        assert!(
            plan.create.is_none(),
            "a scaling event creates no ReplicaSet"
        );
    }

    #[test]
    fn going_back_to_an_old_template_bumps_its_revision_and_keeps_the_history() {
        let mut deployment = deployment(1, json!(1), json!(0));
        let first = replica_set("a:1", 0, 0, 1);
        let second = replica_set("a:2", 1, 1, 2);
        // The template of revision 1 again, as `kubectl rollout undo` writes it.
        deployment.spec.as_mut().expect("spec").template =
            serde_json::from_value(json!({"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "a:1"}]}}))
            .expect("template");
        let plan = step(&deployment, &[first, second]);
        assert!(
            plan.create.is_none(),
            "the old ReplicaSet is the new one again"
        );
        let back = plan
            .update
            .iter()
            .find(|rs| rs.name_any() == "web-h1")
            .expect("web-h1 updated");
        assert_eq!(annotation(back, REVISION_ANNOTATION), Some("3"));
        assert_eq!(annotation(back, REVISION_HISTORY_ANNOTATION), Some("1"));
        assert_eq!(spec_replicas(back), 1, "and it scales up");
        assert_eq!(plan.revision.as_deref(), Some("3"));
    }

    #[test]
    fn old_replica_sets_beyond_the_history_limit_are_deleted_once_complete() {
        let mut deployment = deployment(1, json!(1), json!(0));
        deployment
            .spec
            .as_mut()
            .expect("spec")
            .revision_history_limit = Some(1);
        deployment.spec.as_mut().expect("spec").template =
            serde_json::from_value(json!({"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "a:4"}]}}))
            .expect("template");
        deployment.status = Some(
            serde_json::from_value(json!({"observedGeneration": 2, "replicas": 1,
                "updatedReplicas": 1, "availableReplicas": 1}))
            .expect("status"),
        );
        let sets = [
            replica_set("a:1", 0, 0, 1),
            replica_set("a:2", 0, 0, 2),
            replica_set("a:3", 0, 0, 3),
            replica_set("a:4", 1, 1, 4),
        ];
        let plan = step(&deployment, &sets);
        assert_eq!(plan.delete, vec!["web-h1".to_owned(), "web-h2".to_owned()]);
    }

    #[test]
    fn status_aggregates_the_replica_sets_and_names_the_new_one() {
        let deployment = deployment(2, json!(1), json!(0));
        let current = {
            let mut rs = replica_set("a:2", 2, 2, 1);
            rs.metadata.name = Some("web-abc".to_owned());
            rs
        };
        let plan = step(&deployment, &[current]);
        let status = plan.status;
        assert_eq!(status.observed_generation, Some(2));
        assert_eq!(
            (
                status.replicas,
                status.updated_replicas,
                status.ready_replicas,
                status.available_replicas,
                status.unavailable_replicas
            ),
            (Some(2), Some(2), Some(2), Some(2), Some(0))
        );
        let conditions = status.conditions.expect("conditions");
        let progressing = conditions
            .iter()
            .find(|c| c.type_ == "Progressing")
            .expect("Progressing");
        assert_eq!(
            progressing.reason.as_deref(),
            Some("NewReplicaSetAvailable")
        );
        assert_eq!(
            progressing.message.as_deref(),
            Some("ReplicaSet \"web-abc\" has successfully progressed.")
        );
        let available = conditions
            .iter()
            .find(|c| c.type_ == "Available")
            .expect("Available");
        assert_eq!(
            available.reason.as_deref(),
            Some("MinimumReplicasAvailable")
        );
    }

    #[test]
    fn a_rolled_out_deployment_plans_no_write() {
        let mut deployment = deployment(2, json!(1), json!(0));
        let mut current = replica_set("a:2", 2, 2, 1);
        let annotations = current.metadata.annotations.as_mut().expect("annotations");
        annotations.insert("kubernetes.io/change-cause".into(), "image a:2".into());
        annotations.insert(DESIRED_REPLICAS_ANNOTATION.into(), "2".into());
        annotations.insert(MAX_REPLICAS_ANNOTATION.into(), "3".into());
        deployment
            .metadata
            .annotations
            .as_mut()
            .expect("annotations")
            .insert(REVISION_ANNOTATION.into(), "1".into());
        // The status this state produced last round.
        let first = step(&deployment, std::slice::from_ref(&current));
        deployment.status = Some(first.status.clone());
        let again = step(&deployment, &[current]);
        assert!(again.scales_nothing(), "{again:?}");
        assert_eq!(again.revision, None);
        assert_eq!(
            Some(&again.status),
            deployment.status.as_ref(),
            "no status write"
        );
    }

    #[test]
    fn stalled_rollout_exceeds_its_progress_deadline() {
        let mut deployment = deployment(1, json!(1), json!(0));
        deployment.status = Some(
            serde_json::from_value(json!({"replicas": 1, "updatedReplicas": 1,
                "conditions": [{"type": "Progressing", "status": "True",
                "reason": "ReplicaSetUpdated", "message": "ReplicaSet \"web-h1\" is progressing.",
                "lastUpdateTime": "2025-01-01T00:00:00Z", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}))
            .expect("status"),
        );
        let stuck = replica_set("a:2", 1, 0, 1);
        let plan = step(&deployment, &[stuck]);
        let progressing = plan
            .status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Progressing")
            .expect("Progressing")
            .clone();
        assert_eq!(progressing.status, "False");
        assert_eq!(
            progressing.reason.as_deref(),
            Some("ProgressDeadlineExceeded")
        );
        assert_eq!(
            progressing.message.as_deref(),
            Some("ReplicaSet \"web-h1\" has timed out progressing.")
        );
    }

    #[test]
    fn a_replica_sets_failed_create_becomes_the_deployments_replica_failure() {
        let deployment = deployment(2, json!(1), json!(0));
        let mut rs = replica_set("a:2", 2, 0, 1);
        rs.status = Some(
            serde_json::from_value(
                json!({"replicas": 0, "conditions": [{"type": "ReplicaFailure",
                "status": "True", "reason": "FailedCreate", "message": "exceeded quota: q"}]}),
            )
            .expect("status"),
        );
        let plan = step(&deployment, &[rs]);
        let failure = plan
            .status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "ReplicaFailure")
            .expect("ReplicaFailure");
        assert_eq!(failure.reason.as_deref(), Some("FailedCreate"));
        assert_eq!(failure.message.as_deref(), Some("exceeded quota: q"));
    }
}
