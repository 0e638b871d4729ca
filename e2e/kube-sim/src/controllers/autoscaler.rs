//! The HorizontalPodAutoscaler controller (`autoscaling/v2`), as kube-controller-manager's
//! `pkg/controller/podautoscaler` runs it, on the resource metrics of `metrics.k8s.io`.
//!
//! Rules followed (`horizontal.go`, `replica_calculator.go`, and the HPA documentation's
//! "Algorithm details"):
//!
//! - every sync period (15 s by default) each autoscaler reads its target's `scale` subresource
//!   (`spec.replicas`, `status.selector`), the pods of that selector and their metrics;
//! - a target at 0 replicas is not scaled (`ScalingActive=False`, `ScalingDisabled`); above
//!   `maxReplicas` or below `minReplicas` it is brought back within them first;
//! - per `Resource` metric with a `Utilization` target: the utilisation is the sum of the pods'
//!   use over the sum of their requests; the proposal is `ceil(ratio × ready pods)`, or the
//!   current count when the ratio is within the tolerance (0.1) of 1. Pods being deleted or
//!   failed are left out; pending pods, and for CPU pods not yet ready or sampled too soon after
//!   their readiness changed (within the CPU initialisation period of 5 minutes), are set aside
//!   and count as 0% on a scale-up; pods without metrics count as 100% on a scale-down and 0% on a
//!   scale-up; a change of direction by those assumptions keeps the current count;
//! - the largest proposal of all metrics wins;
//! - stabilisation: the recommendation is held between the lowest of the scale-up window and the
//!   highest of the scale-down window (`behavior.*.stabilizationWindowSeconds`; scale-down 300 s
//!   by default), and then limited by the rate policies (`Pods`/`Percent` per period, `Max` or
//!   `Min` select, `Disabled`), measured from the scale events of each policy's period;
//! - a change is written to the target's `scale` subresource (an update by
//!   `kube-controller-manager`), recorded as a `SuccessfulRescale` Event ("New size: N; reason:
//!   ..."), and the status gets `currentReplicas`, `desiredReplicas`, `currentMetrics`,
//!   `lastScaleTime` and the `AbleToScale`, `ScalingActive` and `ScalingLimited` conditions:
//!   `ScalingActive` True (`ValidMetricFound`) when the metrics gave a replica count, False with
//!   `FailedGetResourceMetric` and "the HPA was unable to compute the replica count: ..." when
//!   they did not (`getUnableComputeReplicaCountCondition`), and left as it was while the
//!   replicas are brought back within min and max (no metric is read then).
//!
//! Differences: only `Resource` metrics with `Utilization` targets are evaluated (`Pods`,
//! `Object`, `External` and `ContainerResource` metrics make `ScalingActive=False`); an
//! autoscaler without `behavior` uses the v2 default behavior (the legacy limit of Kubernetes,
//! twice the replicas or 4 pods, is close but not the same).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::autoscaling::v2::{
    HPAScalingRules, HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition,
    HorizontalPodAutoscalerStatus, MetricStatus, MetricValueStatus, ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, PostParams};
use kube::core::{DynamicObject, GroupVersionKind};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::ControllersConfig;
use super::recorder::{EventType, Involved, Recorder, Source};

/// The tolerance within which a utilisation ratio changes nothing (kube-controller-manager's
/// `--horizontal-pod-autoscaler-tolerance`).
pub const TOLERANCE: f64 = 0.1;
/// `--horizontal-pod-autoscaler-cpu-initialization-period`.
pub const CPU_INITIALIZATION_PERIOD: Duration = Duration::from_secs(300);
/// `--horizontal-pod-autoscaler-initial-readiness-delay`.
pub const INITIAL_READINESS_DELAY: Duration = Duration::from_secs(30);
/// The scale-down stabilisation window when the autoscaler names none.
pub const DEFAULT_SCALE_DOWN_WINDOW: Duration = Duration::from_secs(300);
/// The `ScalingActive` reason when a resource metric cannot be computed (`horizontal.go`,
/// `computeStatusForResourceMetric`).
pub const FAILED_GET_RESOURCE_METRIC: &str = "FailedGetResourceMetric";
/// The field manager of the controller's writes.
pub const MANAGER: &str = "kube-controller-manager";

/// What the calculation knows of one pod matched by the target's selector.
#[derive(Clone, Debug, PartialEq)]
pub struct PodFacts {
    /// The pod's name.
    pub name: String,
    /// Being deleted, or `Failed`.
    pub gone: bool,
    /// `Pending`.
    pub pending: bool,
    /// The `Ready` condition: its status and last transition, if the pod has one.
    pub ready: Option<(bool, Timestamp)>,
    /// `status.startTime`.
    pub started: Option<Timestamp>,
    /// The sum of the containers' requests of the resource, in milli-units (`None`: a container
    /// requests none).
    pub request_milli: Option<i64>,
    /// The metric: use in milli-units, its timestamp and window.
    pub usage: Option<(i64, Timestamp, Duration)>,
}

/// The proposal of one utilisation metric.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// Replicas.
    pub replicas: i32,
    /// The current average utilisation, percent of the request.
    pub utilization: i32,
    /// The current average use per pod, milli-units.
    pub average_milli: i64,
}

/// `GetResourceReplicas`: the replicas that bring the pods' average utilisation of `cpu` (if
/// `is_cpu`) or memory to `target` percent.
pub fn resource_replicas(
    current: i32,
    target: i32,
    is_cpu: bool,
    pods: &[PodFacts],
    now: Timestamp,
) -> Result<Proposal, String> {
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".to_owned());
    }
    let mut ready_count = 0_i64;
    let mut ignored = Vec::new();
    let mut missing = Vec::new();
    let mut metrics: HashMap<&str, i64> = HashMap::new();
    let mut requests: HashMap<&str, i64> = HashMap::new();
    for pod in pods {
        let Some(request) = pod.request_milli else {
            return Err(format!(
                "missing request for {}",
                if is_cpu { "cpu" } else { "memory" }
            ));
        };
        requests.insert(&pod.name, request);
        if pod.gone {
            continue;
        }
        if pod.pending {
            ignored.push(pod.name.as_str());
            continue;
        }
        let Some((usage, sampled, window)) = pod.usage else {
            missing.push(pod.name.as_str());
            continue;
        };
        if is_cpu && cpu_sample_is_ignored(pod, sampled, window, now) {
            ignored.push(pod.name.as_str());
            continue;
        }
        metrics.insert(&pod.name, usage);
        ready_count += 1;
    }
    if metrics.is_empty() {
        return Err("did not receive metrics for any ready pods".to_owned());
    }
    let (ratio, utilization, average) = utilization_ratio(&metrics, &requests, target)?;
    let rebalance_ignored = !ignored.is_empty() && ratio > 1.0;
    if !rebalance_ignored && missing.is_empty() {
        let replicas = if (1.0 - ratio).abs() <= TOLERANCE {
            current
        } else {
            (ratio * ready_count as f64).ceil() as i32
        };
        return Ok(Proposal {
            replicas,
            utilization,
            average_milli: average,
        });
    }
    for name in &missing {
        if ratio < 1.0 {
            metrics.insert(name, requests.get(name).copied().unwrap_or(0));
        } else if ratio > 1.0 {
            metrics.insert(name, 0);
        }
    }
    if rebalance_ignored {
        for name in &ignored {
            metrics.insert(name, 0);
        }
    }
    let (new_ratio, _, _) = utilization_ratio(&metrics, &requests, target)?;
    let keep = |replicas| Proposal {
        replicas,
        utilization,
        average_milli: average,
    };
    if (1.0 - new_ratio).abs() <= TOLERANCE
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(keep(current));
    }
    let replicas = (new_ratio * metrics.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(keep(current));
    }
    Ok(keep(replicas))
}

/// `groupPods`' CPU rule: a sample is set aside while the pod is in its initialisation period and
/// unready or sampled before a full window after its readiness changed; after that period, only
/// while it is unready and has never been ready.
fn cpu_sample_is_ignored(
    pod: &PodFacts,
    sampled: Timestamp,
    window: Duration,
    now: Timestamp,
) -> bool {
    let (Some((ready, transition)), Some(started)) = (pod.ready, pod.started) else {
        return true;
    };
    let plus = |at: Timestamp, by: Duration| {
        at.checked_add(jiff::SignedDuration::try_from(by).unwrap_or_default())
            .unwrap_or(at)
    };
    if plus(started, CPU_INITIALIZATION_PERIOD) > now {
        !ready || sampled < plus(transition, window)
    } else {
        !ready && plus(started, INITIAL_READINESS_DELAY) > transition
    }
}

/// `GetResourceUtilizationRatio`: (use / target utilisation ratio, utilisation %, average use).
fn utilization_ratio(
    metrics: &HashMap<&str, i64>,
    requests: &HashMap<&str, i64>,
    target: i32,
) -> Result<(f64, i32, i64), String> {
    let mut used = 0_i64;
    let mut requested = 0_i64;
    for (name, usage) in metrics {
        if let Some(request) = requests.get(name) {
            used += usage;
            requested += request;
        }
    }
    if requested == 0 {
        return Err("no metrics returned matched known pods".to_owned());
    }
    let utilization = (used * 100 / requested) as i32;
    let average = used / metrics.len() as i64;
    Ok((
        f64::from(utilization) / f64::from(target.max(1)),
        utilization,
        average,
    ))
}

/// A change of the target's replicas, kept for the rate policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScaleEvent {
    /// When.
    pub at: Timestamp,
    /// How many pods it added (or removed).
    pub change: i32,
}

/// One policy of a direction's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// At most this many pods per period.
    Pods {
        /// Pods.
        value: i32,
        /// Period, seconds.
        period: i64,
    },
    /// At most this percentage of the replicas per period.
    Percent {
        /// Percent.
        value: i32,
        /// Period, seconds.
        period: i64,
    },
}

/// How a direction's policies combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Select {
    /// The largest change allowed.
    Max,
    /// The smallest change allowed.
    Min,
    /// No change in this direction.
    Disabled,
}

/// A direction's rules, defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// The stabilisation window.
    pub window: Duration,
    /// How policies combine.
    pub select: Select,
    /// The policies.
    pub policies: Vec<Policy>,
}

impl Rules {
    /// The rules of `rules` with the v2 defaults for what is unset (`up`: the scale-up ones).
    pub fn from_spec(rules: Option<&HPAScalingRules>, up: bool) -> Self {
        let window = rules
            .and_then(|rules| rules.stabilization_window_seconds)
            .map_or(
                if up {
                    Duration::ZERO
                } else {
                    DEFAULT_SCALE_DOWN_WINDOW
                },
                |seconds| Duration::from_secs(u64::try_from(seconds).unwrap_or(0)),
            );
        let select = match rules.and_then(|rules| rules.select_policy.as_deref()) {
            Some("Min") => Select::Min,
            Some("Disabled") => Select::Disabled,
            Some(_) | None => Select::Max,
        };
        let policies = match rules.and_then(|rules| rules.policies.as_ref()) {
            Some(policies) => policies
                .iter()
                .map(|policy| {
                    let period = i64::from(policy.period_seconds);
                    match policy.type_.as_str() {
                        "Pods" => Policy::Pods {
                            value: policy.value,
                            period,
                        },
                        _ => Policy::Percent {
                            value: policy.value,
                            period,
                        },
                    }
                })
                .collect(),
            None if up => vec![
                Policy::Pods {
                    value: 4,
                    period: 15,
                },
                Policy::Percent {
                    value: 100,
                    period: 15,
                },
            ],
            None => vec![Policy::Percent {
                value: 100,
                period: 15,
            }],
        };
        Rules {
            window,
            select,
            policies,
        }
    }
}

/// An unstabilised recommendation, kept for the windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recommendation {
    /// When.
    pub at: Timestamp,
    /// Replicas.
    pub replicas: i32,
}

/// What the normalisation decided, with the `ScalingLimited` reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Normalized {
    /// The replicas to set.
    pub replicas: i32,
    /// `ScalingLimited` reason.
    pub reason: &'static str,
    /// `ScalingLimited` message.
    pub message: &'static str,
}

/// The history of one autoscaler: its recommendations and scale events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// Unstabilised recommendations.
    pub recommendations: Vec<Recommendation>,
    /// Scale-ups.
    pub ups: Vec<ScaleEvent>,
    /// Scale-downs.
    pub downs: Vec<ScaleEvent>,
}

fn seconds_between(earlier: Timestamp, later: Timestamp) -> i64 {
    later.as_second() - earlier.as_second()
}

/// `stabilizeRecommendationWithBehaviors` then `convertDesiredReplicasWithBehaviorRate`: the
/// recommendation `desired` held by the windows, then limited by the rate policies and by
/// `min`/`max`. Records `desired` in `history`.
#[allow(clippy::too_many_arguments)]
pub fn normalize(
    history: &mut History,
    desired: i32,
    current: i32,
    (min, max): (i32, i32),
    up: &Rules,
    down: &Rules,
    now: Timestamp,
) -> Normalized {
    let within = |at: Timestamp, window: Duration| {
        seconds_between(at, now) < i64::try_from(window.as_secs()).unwrap_or(i64::MAX)
    };
    let mut up_recommendation = desired;
    let mut down_recommendation = desired;
    for recommendation in &history.recommendations {
        if within(recommendation.at, up.window) {
            up_recommendation = up_recommendation.min(recommendation.replicas);
        }
        if within(recommendation.at, down.window) {
            down_recommendation = down_recommendation.max(recommendation.replicas);
        }
    }
    let longest = up.window.max(down.window);
    history
        .recommendations
        .retain(|recommendation| within(recommendation.at, longest));
    history.recommendations.push(Recommendation {
        at: now,
        replicas: desired,
    });
    let stabilized = current.max(up_recommendation).min(down_recommendation);
    rate_limited(history, stabilized, current, (min, max), up, down, now)
}

fn change_in_period(events: &[ScaleEvent], period: i64, now: Timestamp) -> i32 {
    events
        .iter()
        .filter(|event| seconds_between(event.at, now) < period)
        .map(|event| event.change)
        .sum()
}

/// Which way a rate limit applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Up,
    Down,
}

/// `calculateScaleUpLimitWithScalingRules` / `calculateScaleDownLimitWithBehaviors`: the most
/// (up) or fewest (down) replicas `rules` allow now, each policy measured from the replicas at
/// the start of its period.
fn rate_limit(
    history: &History,
    rules: &Rules,
    current: i32,
    now: Timestamp,
    direction: Direction,
) -> i32 {
    let proposals = rules.policies.iter().map(|policy| {
        let (period, value) = match policy {
            Policy::Pods { value, period } | Policy::Percent { value, period } => (*period, *value),
        };
        let start = current - change_in_period(&history.ups, period, now)
            + change_in_period(&history.downs, period, now);
        let percent = f64::from(value) / 100.0;
        match (policy, direction) {
            (Policy::Pods { .. }, Direction::Up) => start + value,
            (Policy::Pods { .. }, Direction::Down) => start - value,
            // Rounded up on the way up, or a small target would never grow.
            (Policy::Percent { .. }, Direction::Up) => {
                (f64::from(start) * (1.0 + percent)).ceil() as i32
            }
            (Policy::Percent { .. }, Direction::Down) => {
                (f64::from(start) * (1.0 - percent)) as i32
            }
        }
    });
    // `Max` allows the largest change: the most replicas up, the fewest down.
    match (rules.select, direction) {
        (Select::Disabled, Direction::Up | Direction::Down) => current,
        (Select::Max, Direction::Up) | (Select::Min, Direction::Down) => {
            proposals.max().unwrap_or(current)
        }
        (Select::Min, Direction::Up) | (Select::Max, Direction::Down) => {
            proposals.min().unwrap_or(current)
        }
    }
}

fn rate_limited(
    history: &History,
    desired: i32,
    current: i32,
    (min, max): (i32, i32),
    up: &Rules,
    down: &Rules,
    now: Timestamp,
) -> Normalized {
    if desired > current {
        let limit = rate_limit(history, up, current, now, Direction::Up).max(current);
        let (allowed, reason, message) = if max > limit {
            (
                limit,
                "ScaleUpLimit",
                "the desired replica count is increasing faster than the maximum scale rate",
            )
        } else {
            (
                max,
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count",
            )
        };
        if desired > allowed {
            return Normalized {
                replicas: allowed,
                reason,
                message,
            };
        }
    } else if desired < current {
        let limit = rate_limit(history, down, current, now, Direction::Down).min(current);
        let (allowed, reason, message) = if min < limit {
            (
                limit,
                "ScaleDownLimit",
                "the desired replica count is decreasing faster than the maximum scale rate",
            )
        } else {
            (
                min,
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count",
            )
        };
        if desired < allowed {
            return Normalized {
                replicas: allowed,
                reason,
                message,
            };
        }
    }
    Normalized {
        replicas: desired,
        reason: "DesiredWithinRange",
        message: "the desired count is within the acceptable range",
    }
}

/// Runs the controller until `shutdown`.
pub async fn run(
    client: kube::Client,
    config: Arc<ControllersConfig>,
    recorder: Recorder,
    shutdown: CancellationToken,
) {
    let mut histories: HashMap<(String, String), History> = HashMap::new();
    let mut tick = tokio::time::interval(config.autoscaler_sync_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let autoscalers: Api<HorizontalPodAutoscaler> = Api::all(client.clone());
        let Ok(list) = autoscalers.list(&ListParams::default()).await else {
            continue;
        };
        let mut seen = Vec::new();
        for autoscaler in list.items {
            let key = (
                autoscaler.metadata.namespace.clone().unwrap_or_default(),
                autoscaler.metadata.name.clone().unwrap_or_default(),
            );
            let history = histories.entry(key.clone()).or_default();
            if let Err(error) = reconcile(&client, &recorder, &autoscaler, history).await {
                tracing::debug!(autoscaler = ?key, %error, "autoscaler not reconciled");
            }
            seen.push(key);
        }
        histories.retain(|key, _| seen.contains(key));
    }
}

/// The outcome of computing one autoscaler.
struct Computed {
    desired: i32,
    metrics: Vec<MetricStatus>,
    /// `ScalingActive`: `None` keeps the condition the autoscaler has (kube-controller-manager
    /// sets it only when it evaluates the metrics or finds the target at 0 replicas, not when it
    /// brings the replicas back within min and max).
    active: Option<(bool, &'static str, String)>,
    limited: Option<Normalized>,
    reason: String,
}

async fn reconcile(
    client: &kube::Client,
    recorder: &Recorder,
    autoscaler: &HorizontalPodAutoscaler,
    history: &mut History,
) -> Result<(), kube::Error> {
    let namespace = autoscaler.metadata.namespace.clone().unwrap_or_default();
    let name = autoscaler.metadata.name.clone().unwrap_or_default();
    let Some(spec) = autoscaler.spec.as_ref() else {
        return Ok(());
    };
    let target = &spec.scale_target_ref;
    let (group, version) = match target
        .api_version
        .as_deref()
        .unwrap_or("v1")
        .split_once('/')
    {
        Some((group, version)) => (group.to_owned(), version.to_owned()),
        None => (
            String::new(),
            target.api_version.clone().unwrap_or_default(),
        ),
    };
    let now = Timestamp::now();
    let gvk = GroupVersionKind::gvk(&group, &version, &target.kind);
    let scales = match kube::discovery::pinned_kind(client, &gvk).await {
        Ok((resource, _)) => {
            Api::<DynamicObject>::namespaced_with(client.clone(), &namespace, &resource)
        }
        Err(error) => {
            write_status(
                client,
                autoscaler,
                None,
                failure("FailedGetScale", error.to_string()),
                now,
            )
            .await?;
            return Ok(());
        }
    };
    let scale = match scales.get_scale(&target.name).await {
        Ok(scale) => scale,
        Err(error) => {
            write_status(
                client,
                autoscaler,
                None,
                failure("FailedGetScale", error.to_string()),
                now,
            )
            .await?;
            return Ok(());
        }
    };
    let current = scale
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(0);
    let status_replicas = scale.status.as_ref().map_or(0, |status| status.replicas);
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    let computed = if current == 0 && min != 0 {
        Computed {
            desired: 0,
            metrics: Vec::new(),
            active: Some((
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero".to_owned(),
            )),
            limited: None,
            reason: String::new(),
        }
    } else if current > max {
        bounded(max, "Current number of replicas above Spec.MaxReplicas")
    } else if current < min {
        bounded(min, "Current number of replicas below Spec.MinReplicas")
    } else {
        let selector = scale
            .status
            .as_ref()
            .and_then(|status| status.selector.clone())
            .unwrap_or_default();
        match proposals(client, &namespace, &selector, spec, current, now).await {
            Ok((desired, metrics, reason, metric)) => {
                let up = Rules::from_spec(
                    spec.behavior.as_ref().and_then(|b| b.scale_up.as_ref()),
                    true,
                );
                let down = Rules::from_spec(
                    spec.behavior.as_ref().and_then(|b| b.scale_down.as_ref()),
                    false,
                );
                let normalized = normalize(history, desired, current, (min, max), &up, &down, now);
                Computed {
                    desired: normalized.replicas,
                    metrics,
                    active: Some((
                        true,
                        "ValidMetricFound",
                        format!(
                            "the HPA was able to successfully calculate a replica count from {metric}"
                        ),
                    )),
                    limited: Some(normalized),
                    reason,
                }
            }
            // `getUnableComputeReplicaCountCondition`: the reason of the metric source, and the
            // error after a fixed prefix.
            Err((reason, message)) => Computed {
                desired: current,
                metrics: Vec::new(),
                active: Some((
                    false,
                    reason,
                    format!("the HPA was unable to compute the replica count: {message}"),
                )),
                limited: None,
                reason: String::new(),
            },
        }
    };
    let mut last_scale = autoscaler
        .status
        .as_ref()
        .and_then(|status| status.last_scale_time.clone());
    let rescale = computed.desired != current;
    if rescale {
        let mut updated: Scale = scale.clone();
        if let Some(scale_spec) = updated.spec.as_mut() {
            scale_spec.replicas = Some(computed.desired);
        }
        let params = PostParams {
            field_manager: Some(MANAGER.to_owned()),
            ..PostParams::default()
        };
        scales
            .replace_scale(&target.name, &params, &updated)
            .await?;
        let event = ScaleEvent {
            at: now,
            change: (computed.desired - current).abs(),
        };
        if computed.desired > current {
            history.ups.push(event);
        } else {
            history.downs.push(event);
        }
        let horizon = 3600;
        history
            .ups
            .retain(|event| seconds_between(event.at, now) < horizon);
        history
            .downs
            .retain(|event| seconds_between(event.at, now) < horizon);
        last_scale = Some(Time(now));
        recorder.record(
            &Source {
                component: "horizontal-pod-autoscaler".to_owned(),
                host: String::new(),
                instance: String::new(),
            },
            &Involved {
                kind: "HorizontalPodAutoscaler".to_owned(),
                api_version: "autoscaling/v2".to_owned(),
                namespace: namespace.clone(),
                name: name.clone(),
                uid: autoscaler.metadata.uid.clone().unwrap_or_default(),
                field_path: String::new(),
            },
            EventType::Normal,
            "SuccessfulRescale",
            format!(
                "New size: {}; reason: {}",
                computed.desired, computed.reason
            ),
        );
    }
    let status = HorizontalPodAutoscalerStatus {
        current_replicas: Some(status_replicas),
        desired_replicas: computed.desired,
        current_metrics: (!computed.metrics.is_empty()).then(|| computed.metrics.clone()),
        last_scale_time: last_scale,
        observed_generation: autoscaler.metadata.generation,
        conditions: None,
    };
    write_status(
        client,
        autoscaler,
        Some(status),
        conditions(
            &computed,
            rescale,
            autoscaler
                .status
                .as_ref()
                .and_then(|status| status.conditions.as_deref())
                .unwrap_or_default(),
        ),
        now,
    )
    .await
}

fn bounded(replicas: i32, reason: &str) -> Computed {
    Computed {
        desired: replicas,
        metrics: Vec::new(),
        active: None,
        limited: Some(Normalized {
            replicas,
            reason: if reason.contains("above") {
                "TooManyReplicas"
            } else {
                "TooFewReplicas"
            },
            message: if reason.contains("above") {
                "the desired replica count is more than the maximum replica count"
            } else {
                "the desired replica count is less than the minimum replica count"
            },
        }),
        reason: reason.to_owned(),
    }
}

fn failure(reason: &'static str, message: String) -> Vec<(String, bool, &'static str, String)> {
    vec![(
        "AbleToScale".to_owned(),
        false,
        reason,
        format!("the HPA controller was unable to get the target's current scale: {message}"),
    )]
}

fn conditions(
    computed: &Computed,
    rescaled: bool,
    previous: &[HorizontalPodAutoscalerCondition],
) -> Vec<(String, bool, &'static str, String)> {
    let mut conditions = vec![(
        "AbleToScale".to_owned(),
        true,
        if rescaled {
            "SucceededRescale"
        } else {
            "ReadyForNewScale"
        },
        if rescaled {
            format!(
                "the HPA controller was able to update the target scale to {}",
                computed.desired
            )
        } else {
            "recommended size matches current size".to_owned()
        },
    )];
    match &computed.active {
        Some((holds, reason, message)) => {
            conditions.push(("ScalingActive".to_owned(), *holds, *reason, message.clone()))
        }
        None => conditions.extend(
            previous
                .iter()
                .filter(|condition| condition.type_ == "ScalingActive")
                .map(|condition| {
                    (
                        condition.type_.clone(),
                        condition.status == "True",
                        known_reason(condition.reason.as_deref().unwrap_or_default()),
                        condition.message.clone().unwrap_or_default(),
                    )
                }),
        ),
    }
    if let Some(limited) = &computed.limited {
        conditions.push((
            "ScalingLimited".to_owned(),
            limited.reason != "DesiredWithinRange",
            limited.reason,
            limited.message.to_owned(),
        ));
    }
    conditions
}

/// A `ScalingActive` reason this controller writes, kept when the condition is carried over.
fn known_reason(reason: &str) -> &'static str {
    [
        "ValidMetricFound",
        "ScalingDisabled",
        "FailedGetResourceMetric",
        "InvalidMetricSourceType",
    ]
    .into_iter()
    .find(|known| *known == reason)
    .unwrap_or("Unknown")
}

/// Writes the status with `conditions` (each keeps its transition time while its status holds).
async fn write_status(
    client: &kube::Client,
    autoscaler: &HorizontalPodAutoscaler,
    status: Option<HorizontalPodAutoscalerStatus>,
    conditions: Vec<(String, bool, &'static str, String)>,
    now: Timestamp,
) -> Result<(), kube::Error> {
    let previous = autoscaler.status.clone().unwrap_or_default();
    let mut status = status.unwrap_or_else(|| previous.clone());
    let conditions = conditions
        .into_iter()
        .map(|(type_, holds, reason, message)| {
            let status_text = if holds { "True" } else { "False" };
            let since = previous
                .conditions
                .iter()
                .flatten()
                .find(|condition| condition.type_ == type_ && condition.status == status_text)
                .and_then(|condition| condition.last_transition_time.clone())
                .unwrap_or(Time(now));
            HorizontalPodAutoscalerCondition {
                type_,
                status: status_text.to_owned(),
                reason: Some(reason.to_owned()),
                message: Some(message),
                last_transition_time: Some(since),
            }
        })
        .collect();
    status.conditions = Some(conditions);
    if autoscaler.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let namespace = autoscaler.metadata.namespace.clone().unwrap_or_default();
    let name = autoscaler.metadata.name.clone().unwrap_or_default();
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &namespace);
    let mut updated = autoscaler.clone();
    updated.status = Some(status);
    let params = PostParams {
        field_manager: Some(MANAGER.to_owned()),
        ..PostParams::default()
    };
    api.replace_status(&name, &params, &updated)
        .await
        .map(|_| ())
}

/// Each `Resource` utilisation metric's proposal; the largest wins.
async fn proposals(
    client: &kube::Client,
    namespace: &str,
    selector: &str,
    spec: &k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerSpec,
    current: i32,
    now: Timestamp,
) -> Result<(i32, Vec<MetricStatus>, String, String), (&'static str, String)> {
    let failed = |message: String| (FAILED_GET_RESOURCE_METRIC, message);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pods = pods
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|error| {
            failed(format!(
                "unable to get pods while calculating replica count: {error}"
            ))
        })?
        .items;
    let usage = pod_usage(client, namespace, selector)
        .await
        .map_err(|error| failed(format!("unable to get metrics for resource: {error}")))?;
    let mut best: Option<(i32, String, String)> = None;
    let mut statuses = Vec::new();
    for metric in spec.metrics.iter().flatten() {
        let resource = match (metric.type_.as_str(), metric.resource.as_ref()) {
            ("Resource", Some(resource)) if resource.target.type_ == "Utilization" => resource,
            _ => {
                return Err((
                    "InvalidMetricSourceType",
                    format!(
                        "kube-sim evaluates only Resource metrics with a Utilization target, not {}",
                        metric.type_
                    ),
                ));
            }
        };
        let is_cpu = resource.name == "cpu";
        let target = resource.target.average_utilization.unwrap_or(80);
        let facts: Vec<PodFacts> = pods
            .iter()
            .map(|pod| pod_facts(pod, &resource.name, &usage))
            .collect();
        let proposal = resource_replicas(current, target, is_cpu, &facts, now).map_err(failed)?;
        statuses.push(MetricStatus {
            type_: "Resource".to_owned(),
            resource: Some(ResourceMetricStatus {
                name: resource.name.clone(),
                current: MetricValueStatus {
                    average_utilization: Some(proposal.utilization),
                    average_value: Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                        if is_cpu {
                            format!("{}m", proposal.average_milli)
                        } else {
                            format!("{}", proposal.average_milli / 1000)
                        },
                    )),
                    value: None,
                },
            }),
            ..MetricStatus::default()
        });
        let direction = if proposal.replicas > current {
            "above"
        } else {
            "below"
        };
        let reason = format!(
            "{} resource utilization (percentage of request) {direction} target",
            resource.name
        );
        let metric = format!(
            "{} resource utilization (percentage of request)",
            resource.name
        );
        if best
            .as_ref()
            .is_none_or(|(replicas, _, _)| proposal.replicas > *replicas)
        {
            best = Some((proposal.replicas, reason, metric));
        }
    }
    let (desired, reason, metric) =
        best.ok_or_else(|| failed("the autoscaler has no metrics".to_owned()))?;
    let reason = if desired < current {
        "All metrics below target".to_owned()
    } else {
        reason
    };
    Ok((desired, statuses, reason, metric))
}

/// Per pod: each resource's use in milli-units, the sample's timestamp and window.
type Usage = HashMap<String, (HashMap<String, i64>, Timestamp, Duration)>;

async fn pod_usage(
    client: &kube::Client,
    namespace: &str,
    selector: &str,
) -> Result<Usage, String> {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("labelSelector", selector)
        .finish();
    let request = http::Request::get(format!(
        "/apis/{}/{}/namespaces/{namespace}/pods?{query}",
        crate::pod_metrics::GROUP,
        crate::pod_metrics::VERSION
    ))
    .body(Vec::new())
    .map_err(|error| error.to_string())?;
    let list: Value = client
        .request(request)
        .await
        .map_err(|error| error.to_string())?;
    let mut usage = Usage::new();
    for item in list
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = item
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let timestamp = item
            .get("timestamp")
            .and_then(Value::as_str)
            .and_then(|text| text.parse().ok())
            .unwrap_or_else(Timestamp::now);
        let window = item
            .get("window")
            .and_then(Value::as_str)
            .and_then(|text| text.strip_suffix('s'))
            .and_then(|seconds| seconds.parse::<u64>().ok())
            .map_or(Duration::ZERO, Duration::from_secs);
        let mut totals: HashMap<String, i64> = HashMap::new();
        for container in item
            .get("containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for (resource, quantity) in container
                .get("usage")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                let milli = quantity.as_str().map_or(0, milli_units);
                *totals.entry(resource.clone()).or_default() += milli;
            }
        }
        usage.insert(name, (totals, timestamp, window));
    }
    Ok(usage)
}

/// A quantity in milli-units (0 when it does not parse).
fn milli_units(text: &str) -> i64 {
    super::quantity::Quantity::parse(text)
        .map(|quantity| i64::try_from(quantity.millis_ceil()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn pod_facts(pod: &Pod, resource: &str, usage: &Usage) -> PodFacts {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.clone().unwrap_or_default();
    let request_milli = pod.spec.as_ref().and_then(|spec| {
        spec.containers
            .iter()
            .map(|container| {
                container
                    .resources
                    .as_ref()
                    .and_then(|resources| resources.requests.as_ref())
                    .and_then(|requests| requests.get(resource))
                    .map(|quantity| milli_units(&quantity.0))
            })
            .sum::<Option<i64>>()
    });
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|condition| condition.type_ == "Ready")
        .map(|condition| {
            (
                condition.status == "True",
                condition
                    .last_transition_time
                    .as_ref()
                    .map_or(Timestamp::UNIX_EPOCH, |time| time.0),
            )
        });
    PodFacts {
        usage: usage.get(&name).and_then(|(totals, at, window)| {
            totals.get(resource).map(|value| (*value, *at, *window))
        }),
        name,
        gone: pod.metadata.deletion_timestamp.is_some() || phase == "Failed",
        pending: phase == "Pending",
        ready,
        started: status.start_time.map(|time| time.0),
        request_milli,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).expect("in range")
    }

    /// A pod started long ago, ready, requesting 100m, using `usage` millicores.
    fn pod(name: &str, usage: Option<i64>) -> PodFacts {
        PodFacts {
            name: name.to_owned(),
            gone: false,
            pending: false,
            ready: Some((true, at(0))),
            started: Some(at(0)),
            request_milli: Some(100),
            usage: usage.map(|usage| (usage, at(1000), Duration::from_secs(15))),
        }
    }

    /// kube-controller-manager sets `ScalingActive` only where it reads the metrics (or finds
    /// the target at 0 replicas): bringing the replicas back within min and max keeps the
    /// condition the autoscaler had, and a metric that cannot be read says why after the
    /// controller's prefix.
    #[test]
    fn scaling_active_is_kept_while_replicas_are_brought_within_bounds_and_explains_a_failure() {
        let previous = [HorizontalPodAutoscalerCondition {
            type_: "ScalingActive".to_owned(),
            status: "False".to_owned(),
            reason: Some("FailedGetResourceMetric".to_owned()),
            message: Some("the HPA was unable to compute the replica count: none".to_owned()),
            last_transition_time: None,
        }];
        let bounded = conditions(
            &bounded(2, "Current number of replicas below Spec.MinReplicas"),
            true,
            &previous,
        );
        let active: Vec<_> = bounded
            .iter()
            .filter(|(kind, ..)| kind == "ScalingActive")
            .collect();
        assert_eq!(active.len(), 1);
        assert_eq!(
            (active[0].1, active[0].2),
            (false, "FailedGetResourceMetric")
        );
        assert!(
            conditions(&bounded_fresh(), true, &[])
                .iter()
                .all(|(kind, ..)| kind != "ScalingActive"),
            "no ScalingActive is invented"
        );
    }

    fn bounded_fresh() -> Computed {
        bounded(5, "Current number of replicas above Spec.MaxReplicas")
    }

    #[test]
    fn load_above_target_scales_by_the_ratio_of_use_to_target() {
        // Two pods at 100% of their request against a 25% target: ratio 4, ceil(4 × 2) = 8.
        let pods = [pod("a", Some(100)), pod("b", Some(100))];
        let proposal = resource_replicas(2, 25, true, &pods, at(1000)).expect("a proposal");
        assert_eq!(proposal.replicas, 8);
        assert_eq!(proposal.utilization, 100);
    }

    #[test]
    fn a_ratio_within_the_tolerance_keeps_the_replicas() {
        // 54% against 50%: ratio 1.08, within 0.1.
        let pods = [pod("a", Some(54)), pod("b", Some(54))];
        let proposal = resource_replicas(2, 50, true, &pods, at(1000)).expect("a proposal");
        assert_eq!(proposal.replicas, 2);
    }

    #[test]
    fn missing_metrics_count_as_full_on_a_scale_down_and_hold_the_direction() {
        // One idle pod, one without metrics: as 100% it would be a scale-up, so nothing changes.
        let pods = [pod("a", Some(1)), pod("b", None)];
        let proposal = resource_replicas(2, 50, true, &pods, at(1000)).expect("a proposal");
        assert_eq!(proposal.replicas, 2);
    }

    #[test]
    fn unready_pods_in_their_initialization_count_as_idle_on_a_scale_up() {
        let mut fresh = pod("b", Some(100));
        fresh.started = Some(at(990));
        fresh.ready = Some((false, at(990)));
        // a at 100% of target 50 = ratio 2; b set aside then counted as 0: (100+0)/200 = 50% →
        // ratio 1.0: within the tolerance, no change.
        let proposal =
            resource_replicas(2, 50, true, &[pod("a", Some(100)), fresh], at(1000)).unwrap();
        assert_eq!(proposal.replicas, 2);
    }

    #[test]
    fn pods_without_a_request_are_an_error() {
        let mut pod = pod("a", Some(10));
        pod.request_milli = None;
        assert_eq!(
            resource_replicas(1, 50, true, &[pod], at(1000)),
            Err("missing request for cpu".to_owned())
        );
    }

    fn default_rules() -> (Rules, Rules) {
        (Rules::from_spec(None, true), Rules::from_spec(None, false))
    }

    #[test]
    fn scale_up_is_limited_to_four_pods_or_double_per_period() {
        let (up, down) = default_rules();
        let mut history = History::default();
        let normalized = normalize(&mut history, 20, 2, (1, 30), &up, &down, at(0));
        assert_eq!(normalized.replicas, 6, "2 + 4 pods beats 2 × 2");
        assert_eq!(normalized.reason, "ScaleUpLimit");
    }

    #[test]
    fn scale_down_waits_for_the_stabilization_window() {
        let (up, mut down) = default_rules();
        down.window = Duration::from_secs(60);
        let mut history = History::default();
        assert_eq!(
            normalize(&mut history, 6, 6, (1, 10), &up, &down, at(0)).replicas,
            6
        );
        // The load ends: the recommendation falls to 1, but the window still holds 6.
        assert_eq!(
            normalize(&mut history, 1, 6, (1, 10), &up, &down, at(30)).replicas,
            6
        );
        // Once the 6 of second 0 left the window, the highest in it is 1.
        assert_eq!(
            normalize(&mut history, 1, 6, (1, 10), &up, &down, at(61)).replicas,
            1
        );
    }

    #[test]
    fn the_bounds_and_a_disabled_direction_hold() {
        let (mut up, down) = default_rules();
        let mut history = History::default();
        let normalized = normalize(&mut history, 50, 8, (1, 10), &up, &down, at(0));
        assert_eq!(
            (normalized.replicas, normalized.reason),
            (10, "TooManyReplicas")
        );
        up.select = Select::Disabled;
        let mut history = History::default();
        assert_eq!(
            normalize(&mut history, 9, 8, (1, 10), &up, &down, at(0)).replicas,
            8
        );
    }
}
