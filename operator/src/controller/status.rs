//! Status: the KumikoApp's status computed from what one reconcile found, by pure functions.
//!
//! kstatus-compliant: top-level `observedGeneration`, every condition with its own, `Ready`
//! (Unknown while the app progresses, True only when the current generation is fully rolled out),
//! `Reconciling` and `Stalled`, and one condition per step. `lastTransitionTime` is kept unless a
//! condition's status flips, so an unchanged app computes a status equal to the one it has, and
//! the caller writes nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kumiko_crds::{KumikoAppStatus, ProcessStatus, condition};

/// The state of one condition: its status, reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    /// A CamelCase reason.
    pub reason: &'static str,
    /// A human-readable message.
    pub message: String,
}

impl Check {
    /// The step is done.
    pub fn done(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: "True",
            reason,
            message: message.into(),
        }
    }

    /// The step is in progress, or failed.
    pub fn not_yet(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: "False",
            reason,
            message: message.into(),
        }
    }

    /// The step cannot be judged because an earlier one is not done.
    pub fn unknown(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: "Unknown",
            reason,
            message: message.into(),
        }
    }

    fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// The condition reason of a step waiting for the one before.
pub const WAITING: &str = "Waiting";
/// The reason of a failed migration.
pub const MIGRATION_FAILED: &str = "MigrationFailed";

/// What one reconcile found, step by step.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// The app's `metadata.generation`.
    pub generation: Option<i64>,
    /// Why the app cannot progress until its spec changes (reason, message), if so.
    pub stalled: Option<(&'static str, String)>,
    /// A failure that is being retried, if any (shown on `Reconciling`).
    pub retrying: Option<String>,
    /// `spec.paused`.
    pub paused: bool,
    /// `DatabaseReady`.
    pub database: Check,
    /// `RolesReady`.
    pub roles: Check,
    /// `Migrated`.
    pub migrated: Check,
    /// `ApiAvailable`.
    pub api: Check,
    /// `WorkerAvailable`.
    pub worker: Check,
    /// `RouteAccepted`.
    pub route: Check,
    /// `AutoscalerActive`, while some process type autoscales (informative: not part of
    /// [`Progress::is_ready`]).
    pub autoscaler: Option<Check>,
    /// `MonitoringAvailable`, while `spec.monitoring` is enabled (informative: not part of
    /// [`Progress::is_ready`]).
    pub monitoring: Option<Check>,
    /// The URLs the app answers on (`spec.api.expose`).
    pub urls: Vec<String>,
    /// The image the Deployments run.
    pub image: Option<String>,
    /// The image whose migrations last succeeded.
    pub migrated_image: Option<String>,
    /// The latest migrate Job.
    pub migration_job: Option<String>,
    /// The API's replica counts.
    pub api_replicas: Option<ProcessStatus>,
    /// The worker's replica counts.
    pub worker_replicas: Option<ProcessStatus>,
    /// The rotation annotation value handled.
    pub rotated_credentials_for: Option<String>,
}

impl Progress {
    /// Nothing known yet: every step Unknown (the first sight of an app).
    pub fn unknown(generation: Option<i64>) -> Self {
        let unknown = || Check::unknown(WAITING, "not yet observed");
        Self {
            generation,
            stalled: None,
            retrying: None,
            paused: false,
            database: unknown(),
            roles: unknown(),
            migrated: unknown(),
            api: unknown(),
            worker: unknown(),
            route: unknown(),
            autoscaler: None,
            monitoring: None,
            urls: Vec::new(),
            image: None,
            migrated_image: None,
            migration_job: None,
            api_replicas: None,
            worker_replicas: None,
            rotated_credentials_for: None,
        }
    }

    /// Whether every step is done and nothing blocks: the generation is fully rolled out. The
    /// autoscalers' activity and the PodMonitor do not count: the pods serve without them.
    pub fn is_ready(&self) -> bool {
        self.stalled.is_none()
            && [
                &self.database,
                &self.roles,
                &self.migrated,
                &self.api,
                &self.worker,
                &self.route,
            ]
            .iter()
            .all(|check| check.is_true())
    }
}

/// The three top-level conditions, from the steps.
fn summary(progress: &Progress) -> (Check, Check, Check) {
    if let Some((reason, message)) = &progress.stalled {
        return (
            Check::not_yet(reason, message.clone()),
            Check::not_yet("Stalled", "progress needs a change of the spec"),
            Check::done(reason, message.clone()),
        );
    }
    let not_stalled = Check::not_yet("Progressing", "");
    if progress.is_ready() {
        return (
            Check::done(
                "Available",
                "the current generation is rolled out and available",
            ),
            Check::not_yet("Available", ""),
            not_stalled,
        );
    }
    let steps = [
        (condition::DATABASE_READY, &progress.database),
        (condition::ROLES_READY, &progress.roles),
        (condition::MIGRATED, &progress.migrated),
        (condition::API_AVAILABLE, &progress.api),
        (condition::WORKER_AVAILABLE, &progress.worker),
        (condition::ROUTE_ACCEPTED, &progress.route),
    ];
    let (pending_type, pending) = steps
        .iter()
        .find(|(_, check)| !check.is_true())
        .map(|(kind, check)| (*kind, (*check).clone()))
        .unwrap_or((condition::READY, Check::unknown("Progressing", "")));
    let waiting_on = format!("waiting for {pending_type}: {}", pending.message);
    let reconciling = if progress.paused {
        Check::not_yet(
            "Paused",
            "spec.paused is true: the operator writes nothing but status",
        )
    } else if let Some(error) = &progress.retrying {
        Check::done("Retrying", error.clone())
    } else {
        Check::done(pending.reason, waiting_on.clone())
    };
    (
        Check::unknown(pending.reason, waiting_on),
        reconciling,
        not_stalled,
    )
}

/// The status `progress` describes, keeping each condition's `lastTransitionTime` from `previous`
/// unless its status flipped (`now` stamps the flips).
pub fn compute_status(
    previous: Option<&KumikoAppStatus>,
    progress: &Progress,
    now: &Time,
) -> KumikoAppStatus {
    let (ready, reconciling, stalled) = summary(progress);
    let checks = [
        (condition::READY, ready),
        (condition::RECONCILING, reconciling),
        (condition::STALLED, stalled),
        (condition::DATABASE_READY, progress.database.clone()),
        (condition::ROLES_READY, progress.roles.clone()),
        (condition::MIGRATED, progress.migrated.clone()),
        (condition::API_AVAILABLE, progress.api.clone()),
        (condition::WORKER_AVAILABLE, progress.worker.clone()),
        (condition::ROUTE_ACCEPTED, progress.route.clone()),
    ];
    // The informative conditions, present only while their feature is on.
    let informative = [
        (condition::AUTOSCALER_ACTIVE, progress.autoscaler.clone()),
        (condition::MONITORING_AVAILABLE, progress.monitoring.clone()),
    ]
    .into_iter()
    .filter_map(|(kind, check)| Some((kind, check?)));
    let previous_conditions = previous
        .map(|status| status.conditions.as_slice())
        .unwrap_or(&[]);
    let conditions = checks
        .into_iter()
        .chain(informative)
        .map(|(kind, check)| {
            let last_transition_time = previous_conditions
                .iter()
                .find(|condition| condition.type_ == kind && condition.status == check.status)
                .map(|condition| condition.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: kind.to_owned(),
                status: check.status.to_owned(),
                reason: check.reason.to_owned(),
                message: bounded(&check.message, MAX_MESSAGE),
                observed_generation: progress.generation,
                last_transition_time,
            }
        })
        .collect();
    KumikoAppStatus {
        observed_generation: progress.generation,
        conditions,
        image: progress.image.clone(),
        migrated_image: progress.migrated_image.clone(),
        migration_job: progress.migration_job.clone(),
        api: progress.api_replicas.clone(),
        worker: progress.worker_replicas.clone(),
        rotated_credentials_for: progress.rotated_credentials_for.clone(),
        urls: progress.urls.clone(),
    }
}

/// The longest condition message written (the API allows 32768 bytes; people read less).
pub const MAX_MESSAGE: usize = 2048;

/// `text` cut to at most `max` bytes on a character boundary, keeping the end (a log's tail
/// matters most).
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

/// Whether `computed` differs from `previous` in anything a reader cares about (it never differs in
/// time alone, see [`compute_status`]).
pub fn needs_write(previous: Option<&KumikoAppStatus>, computed: &KumikoAppStatus) -> bool {
    previous != Some(computed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + second).unwrap())
    }

    fn condition<'a>(status: &'a KumikoAppStatus, kind: &str) -> &'a Condition {
        status
            .conditions
            .iter()
            .find(|condition| condition.type_ == kind)
            .unwrap()
    }

    fn rolled_out() -> Progress {
        let mut progress = Progress::unknown(Some(3));
        progress.database = Check::done("ClusterReady", "ok");
        progress.roles = Check::done("RolesReady", "ok");
        progress.migrated = Check::done("Succeeded", "ok");
        progress.api = Check::done("Available", "1/1");
        progress.worker = Check::done("Available", "1/1");
        progress.route = Check::done("NotExposed", "ok");
        progress
    }

    #[test]
    fn first_sight_is_ready_unknown_and_reconciling() {
        let status = compute_status(None, &Progress::unknown(Some(1)), &at(0));
        assert_eq!(condition(&status, condition::READY).status, "Unknown");
        assert_eq!(condition(&status, condition::RECONCILING).status, "True");
        assert_eq!(condition(&status, condition::STALLED).status, "False");
        assert_eq!(status.observed_generation, Some(1));
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(1))
        );
    }

    #[test]
    fn ready_only_when_every_step_is_done() {
        let status = compute_status(None, &rolled_out(), &at(0));
        assert_eq!(condition(&status, condition::READY).status, "True");
        assert_eq!(condition(&status, condition::RECONCILING).status, "False");
        let mut progress = rolled_out();
        progress.worker = Check::not_yet("Progressing", "0/1 ready");
        let status = compute_status(None, &progress, &at(0));
        assert_eq!(condition(&status, condition::READY).status, "Unknown");
        assert!(
            condition(&status, condition::READY)
                .message
                .contains("WorkerAvailable")
        );
    }

    #[test]
    fn unchanged_progress_keeps_transition_times_and_needs_no_write() {
        let first = compute_status(None, &rolled_out(), &at(0));
        let again = compute_status(Some(&first), &rolled_out(), &at(600));
        assert_eq!(first, again);
        assert!(!needs_write(Some(&first), &again));
    }

    #[test]
    fn a_flip_stamps_a_new_transition_time_only_on_the_flipped_condition() {
        let mut progress = rolled_out();
        progress.api = Check::not_yet("Progressing", "0/1");
        let before = compute_status(None, &progress, &at(0));
        let after = compute_status(Some(&before), &rolled_out(), &at(60));
        assert_eq!(
            condition(&after, condition::API_AVAILABLE).last_transition_time,
            at(60)
        );
        assert_eq!(
            condition(&after, condition::DATABASE_READY).last_transition_time,
            at(0)
        );
        assert!(needs_write(Some(&before), &after));
    }

    #[test]
    fn stalled_app_is_not_ready_and_not_reconciling() {
        let mut progress = rolled_out();
        progress.stalled = Some((
            "DuplicateApp",
            "namespace shop already holds KumikoApp first".into(),
        ));
        let status = compute_status(None, &progress, &at(0));
        assert_eq!(condition(&status, condition::STALLED).status, "True");
        assert!(
            condition(&status, condition::STALLED)
                .message
                .contains("first")
        );
        assert_eq!(condition(&status, condition::READY).status, "False");
        assert_eq!(condition(&status, condition::RECONCILING).status, "False");
    }

    #[test]
    fn a_failed_migration_shows_its_reason_on_ready() {
        let mut progress = rolled_out();
        progress.migrated = Check::not_yet(MIGRATION_FAILED, "log tail");
        let status = compute_status(None, &progress, &at(0));
        assert_eq!(
            condition(&status, condition::READY).reason,
            MIGRATION_FAILED
        );
    }

    #[test]
    fn an_inactive_autoscaler_or_a_missing_pod_monitor_does_not_hold_ready_back() {
        let mut progress = rolled_out();
        progress.autoscaler = Some(Check::not_yet(
            "FailedGetResourceMetric",
            "no metrics for any ready pods",
        ));
        progress.monitoring = Some(Check::not_yet("PodMonitorCrdMissing", "install it"));
        let status = compute_status(None, &progress, &at(0));
        assert_eq!(condition(&status, condition::READY).status, "True");
        let autoscaler = condition(&status, condition::AUTOSCALER_ACTIVE);
        assert_eq!(
            (autoscaler.status.as_str(), autoscaler.reason.as_str()),
            ("False", "FailedGetResourceMetric")
        );
        let monitoring = condition(&status, condition::MONITORING_AVAILABLE);
        assert_eq!(
            (monitoring.status.as_str(), monitoring.reason.as_str()),
            ("False", "PodMonitorCrdMissing")
        );
    }

    #[test]
    fn the_informative_conditions_are_absent_while_their_feature_is_off() {
        let status = compute_status(None, &rolled_out(), &at(0));
        for kind in [
            condition::AUTOSCALER_ACTIVE,
            condition::MONITORING_AVAILABLE,
        ] {
            assert!(
                status.conditions.iter().all(|c| c.type_ != kind),
                "{kind} is present"
            );
        }
    }

    #[test]
    fn long_messages_keep_their_end() {
        let text = format!("{}END", "x".repeat(5000));
        let cut = bounded(&text, 100);
        assert!(cut.ends_with("END"));
        assert!(cut.len() <= 100 + '…'.len_utf8());
    }
}
