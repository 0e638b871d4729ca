//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Every write of the Lease is a create or a replace carrying the resourceVersion that was read, so
//! two replicas racing for it cannot both win: the loser gets a 409 Conflict and stays a follower.
//! The leader renews the Lease every [`LeaseTimings::retry_period`]; a follower takes it over once
//! it has seen the Lease unchanged for its `leaseDurationSeconds`, timed on the follower's own
//! monotonic clock from the moment it first saw that version ([`Observation`]), never from the
//! `renewTime` another node's clock wrote — client-go's rule (`observedTime`, "tolerant to arbitrary
//! clock skew"), so that nodes whose clocks disagree still never lead at once.
//!
//! The leader stops reconciling once it has not renewed within [`LeaseTimings::renew_deadline`],
//! which is shorter than the lease duration, so that it has stopped before any follower may take
//! over — even when a renewal hangs on a half-open connection: every call to the Lease runs under
//! that deadline ([`hold`]). This is client-go's rule (`tools/leaderelection/leaderelection.go`:
//! `NewLeaderElector` refuses `LeaseDuration <= RenewDeadline`, and `renew` runs its retries under
//! `context.WithTimeout(ctx, RenewDeadline)`, stopping to lead when it expires).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::time::Instant;

use crate::Error;

/// How long a Lease lasts, how soon its holder must renew it, and how often replicas try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTimings {
    /// How long a Lease stays valid without a renewal (`--lease-duration`, whole seconds: it is
    /// the Lease's `leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// How long the leader may go without a successful renewal, counted from the start of its
    /// last successful one, before it stops reconciling (`--lease-renew-deadline`). Shorter than
    /// the lease duration: the difference is the margin by which the old leader has stopped
    /// before a follower may take over.
    pub renew_deadline: Duration,
    /// How often the leader renews and a follower retries (`--lease-retry-period`).
    pub retry_period: Duration,
}

impl Default for LeaseTimings {
    /// client-go's defaults for core components: 15 s, 10 s, 2 s.
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl LeaseTimings {
    /// Every rule the timings break, each naming the flag and the fix (empty: they are valid).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let Self {
            lease_duration,
            renew_deadline,
            retry_period,
        } = *self;
        if lease_duration.subsec_nanos() != 0
            || lease_duration.is_zero()
            || i32::try_from(lease_duration.as_secs()).is_err()
        {
            problems.push(format!(
                "--lease-duration ({lease_duration:?}) must be a whole number of seconds, at least 1: \
                 it is the Lease's leaseDurationSeconds"
            ));
        }
        if renew_deadline >= lease_duration {
            problems.push(format!(
                "--lease-renew-deadline ({renew_deadline:?}) must be shorter than --lease-duration \
                 ({lease_duration:?}), so that a leader that cannot renew stops before its Lease \
                 expires; e.g. two thirds of it"
            ));
        }
        if retry_period.is_zero() || retry_period >= renew_deadline {
            problems.push(format!(
                "--lease-retry-period ({retry_period:?}) must be above zero and shorter than \
                 --lease-renew-deadline ({renew_deadline:?}), so that the leader tries to renew \
                 before its deadline; e.g. a fifth of the lease duration"
            ));
        }
        problems
    }

    /// The timings, or [`Error::Leader`] listing every problem.
    pub fn checked(self) -> Result<Self, Error> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(Error::Leader(format!(
                "invalid lease timings: {}",
                problems.join("; ")
            )))
        }
    }

    /// The Lease's `leaseDurationSeconds`.
    fn lease_duration_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// Where and as whom to campaign.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// The Lease's namespace (`POD_NAMESPACE`).
    pub namespace: String,
    /// The Lease's name (`--lease-name`).
    pub name: String,
    /// This replica's identity (`POD_NAME`).
    pub identity: String,
    /// The Lease's timings.
    pub timings: LeaseTimings,
}

/// Why a leader stopped leading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseLost {
    /// Another replica holds the Lease (a renewal found it taken, or was refused with a conflict).
    TakenOver,
    /// No renewal succeeded within the renew deadline (the API unreachable, or a call hung).
    NotRenewedInTime,
}

impl std::fmt::Display for LeaseLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::TakenOver => "another replica holds the Lease",
            Self::NotRenewedInTime => "no renewal succeeded within the renew deadline",
        })
    }
}

/// The instant by which the leader must have renewed again, after a successful take-over or
/// renewal that started at `started`.
///
/// `started` is read before the request whose write a follower then sees, and a follower counts
/// the lease duration from when it saw that write ([`Observation`]): the deadline falls at least
/// `lease_duration - renew_deadline` before any follower may take over.
pub fn renewal_deadline(started: Instant, timings: &LeaseTimings) -> Instant {
    started + timings.renew_deadline
}

/// What this replica has seen of the Lease, on its own clock: its resourceVersion and when this
/// replica first saw that version (client-go's `observedRecord` and `observedTime`).
#[derive(Clone, Debug, Default)]
pub struct Observation {
    seen: Option<(String, Instant)>,
}

impl Observation {
    /// Records that the Lease is at `version` at `now`, and returns since when this replica has
    /// seen it unchanged. Any write changes the version, so this errs towards waiting longer.
    pub fn unchanged_since(&mut self, version: &str, now: Instant) -> Instant {
        match &self.seen {
            Some((seen, since)) if seen == version => *since,
            _ => {
                self.seen = Some((version.to_owned(), now));
                now
            }
        }
    }
}

/// Whether `identity` may take or keep a Lease described by `spec`, which this replica has seen
/// unchanged since `unchanged_since`, at `now`: a Lease held by another replica only once it has
/// gone unrenewed for its whole `leaseDurationSeconds` as this replica's clock measures it.
pub fn may_hold(
    spec: Option<&LeaseSpec>,
    identity: &str,
    unchanged_since: Instant,
    now: Instant,
) -> bool {
    let Some(spec) = spec else {
        return true;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => return true,
        Some(holder) if holder == identity => return true,
        Some(_) => {}
    }
    let seconds = spec.lease_duration_seconds.unwrap_or(15);
    let duration = Duration::from_secs(u64::try_from(seconds).unwrap_or(0));
    now.saturating_duration_since(unchanged_since) > duration
}

fn lease_error(action: &str, config: &LeaderConfig) -> impl FnOnce(kube::Error) -> Error {
    let action = format!("{action} Lease {}/{}", config.namespace, config.name);
    move |source| Error::Kube { action, source }
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// The outcome of one attempt to take or renew the Lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// This replica holds the Lease (it took or renewed it).
    Held,
    /// Another replica holds the Lease, and it has not expired.
    HeldByAnother,
    /// Another write came between this replica's read and its write (409 Conflict): the next
    /// attempt reads the Lease again. client-go retries such a failed update too, until the
    /// renew deadline (`renew`: `wait.PollImmediateUntil` under the `RenewDeadline` timeout).
    Conflict,
}

/// One attempt to take or renew the Lease. `observation` carries what earlier attempts saw of it.
pub async fn try_acquire(
    client: &Client,
    config: &LeaderConfig,
    observation: &mut Observation,
) -> Result<Attempt, Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    let now = Timestamp::now();
    let duration_seconds = config.timings.lease_duration_seconds();
    match api
        .get_opt(&config.name)
        .await
        .map_err(lease_error("reading", config))?
    {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(config.name.clone()),
                    namespace: Some(config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(config.identity.clone()),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(error) if is_conflict(&error) => Ok(Attempt::Conflict),
                Err(error) => Err(lease_error("creating", config)(error)),
            }
        }
        Some(mut lease) => {
            let seen_at = Instant::now();
            let version = lease.metadata.resource_version.clone().unwrap_or_default();
            let since = observation.unchanged_since(&version, seen_at);
            if !may_hold(lease.spec.as_ref(), &config.identity, since, seen_at) {
                return Ok(Attempt::HeldByAnother);
            }
            let mut spec = lease.spec.take().unwrap_or_default();
            if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
                spec.holder_identity = Some(config.identity.clone());
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.renew_time = Some(MicroTime(now));
            spec.lease_duration_seconds = Some(duration_seconds);
            lease.spec = Some(spec);
            // `replace` sends the resourceVersion that was read: a concurrent writer makes it 409.
            match api
                .replace(&config.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => Ok(Attempt::Held),
                Err(error) if is_conflict(&error) => Ok(Attempt::Conflict),
                Err(error) => Err(lease_error("renewing", config)(error)),
            }
        }
    }
}

/// Waits until this replica holds the Lease, and returns the instant at which the successful
/// attempt started (what [`hold`] counts its first deadline from). Each attempt is bounded by the
/// renew deadline, so a hung connection delays the campaign but cannot stall it.
pub async fn acquire(client: &Client, config: &LeaderConfig) -> Instant {
    let mut observation = Observation::default();
    loop {
        let started = Instant::now();
        let attempt = try_acquire(client, config, &mut observation);
        match tokio::time::timeout(config.timings.renew_deadline, attempt).await {
            Ok(Ok(Attempt::Held)) => return started,
            Ok(Ok(Attempt::HeldByAnother | Attempt::Conflict)) => {}
            Ok(Err(error)) => tracing::warn!(error = %error.chain(), "leader election"),
            Err(_) => tracing::warn!(
                deadline = ?config.timings.renew_deadline,
                "leader election: no answer from the API within the renew deadline"
            ),
        }
        tokio::time::sleep(config.timings.retry_period).await;
    }
}

/// Renews the Lease every retry period until it is lost, and returns why; `acquired` is what
/// [`acquire`] returned.
///
/// The Lease is lost when a renewal finds it held by another replica (a write refused with a
/// conflict is retried: it may be any other write to the Lease), or when no renewal has
/// succeeded by the [`renewal_deadline`] of the last successful one. That deadline bounds every
/// request too: a renewal that hangs (a half-open connection) is abandoned when it passes, so this
/// returns by then whatever the API does — before the Lease can expire for a follower.
pub async fn hold(client: &Client, config: &LeaderConfig, acquired: Instant) -> LeaseLost {
    let mut deadline = renewal_deadline(acquired, &config.timings);
    let mut observation = Observation::default();
    loop {
        let next_try = Instant::now() + config.timings.retry_period;
        if next_try >= deadline {
            tokio::time::sleep_until(deadline).await;
            return LeaseLost::NotRenewedInTime;
        }
        tokio::time::sleep_until(next_try).await;
        let started = Instant::now();
        let attempt = try_acquire(client, config, &mut observation);
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(Attempt::Held)) => deadline = renewal_deadline(started, &config.timings),
            Ok(Ok(Attempt::HeldByAnother)) => return LeaseLost::TakenOver,
            // Retried: if another replica did take the Lease, the next read says so.
            Ok(Ok(Attempt::Conflict)) => tracing::warn!("renewing the lease: conflict, retrying"),
            Ok(Err(error)) => tracing::warn!(error = %error.chain(), "renewing the lease failed"),
            Err(_) => return LeaseLost::NotRenewedInTime,
        }
    }
}

/// Gives the Lease up (on shutdown), so a follower takes over at once. Bounded by the renew
/// deadline: a hung API delays shutdown by no more than that.
pub async fn release(client: &Client, config: &LeaderConfig) {
    let released = tokio::time::timeout(config.timings.renew_deadline, async {
        let api: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
        let Ok(Some(mut lease)) = api.get_opt(&config.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        if let Err(error) = api
            .replace(&config.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(%error, "releasing the lease failed");
        }
    })
    .await;
    if released.is_err() {
        tracing::warn!("releasing the lease: no answer from the API within the renew deadline");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Lease held by `holder` for 15 s, renewed at `renewed_second` by the holder's clock.
    fn spec(holder: &str, renewed_second: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed_second).unwrap())),
            ..LeaseSpec::default()
        }
    }

    fn secs(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    #[test]
    fn a_lease_of_another_replica_seen_unchanged_for_less_than_its_duration_is_respected() {
        let seen = Instant::now();
        assert!(!may_hold(
            Some(&spec("other", 1_000)),
            "me",
            seen,
            seen + secs(10)
        ));
    }

    #[test]
    fn a_lease_seen_unchanged_for_longer_than_its_duration_is_taken_over() {
        let seen = Instant::now();
        assert!(may_hold(
            Some(&spec("other", 1_000)),
            "me",
            seen,
            seen + secs(16)
        ));
    }

    /// The follower's clock runs an hour ahead of the leader's: the Lease's `renewTime` looks an
    /// hour old, yet the follower waits a full lease duration from when it saw it, as client-go does.
    #[test]
    fn a_renew_time_from_a_skewed_clock_does_not_expire_a_lease_just_seen() {
        let mut observation = Observation::default();
        let first = Instant::now();
        let since = observation.unchanged_since("41", first);
        assert!(!may_hold(Some(&spec("other", 0)), "me", since, first));
        let later = first + secs(5);
        assert_eq!(observation.unchanged_since("41", later), first);
        assert!(!may_hold(Some(&spec("other", 0)), "me", first, later));
        // A renewal (a new resourceVersion) restarts the count.
        let renewed = first + secs(14);
        assert_eq!(observation.unchanged_since("42", renewed), renewed);
        assert!(!may_hold(
            Some(&spec("other", 0)),
            "me",
            renewed,
            first + secs(20)
        ));
        assert!(may_hold(
            Some(&spec("other", 0)),
            "me",
            renewed,
            first + secs(30)
        ));
    }

    #[test]
    fn client_go_default_timings_are_valid() {
        assert_eq!(LeaseTimings::default().problems(), Vec::<String>::new());
    }

    #[test]
    fn a_renew_deadline_not_shorter_than_the_lease_is_refused_naming_the_flags() {
        let timings = LeaseTimings {
            renew_deadline: Duration::from_secs(15),
            ..LeaseTimings::default()
        };
        let problems = timings.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("--lease-renew-deadline")
                && problems[0].contains("--lease-duration"),
            "{problems:?}"
        );
        assert!(timings.checked().is_err());
    }

    #[test]
    fn a_fractional_lease_or_a_retry_period_past_the_deadline_is_refused() {
        let timings = LeaseTimings {
            lease_duration: Duration::from_millis(1_500),
            renew_deadline: Duration::from_secs(1),
            retry_period: Duration::from_secs(1),
        };
        let problems = timings.problems().join("\n");
        assert!(
            problems.contains("--lease-duration (1.5s) must be a whole number"),
            "{problems}"
        );
        assert!(problems.contains("--lease-retry-period (1s)"), "{problems}");
    }

    /// The API accepts connections and never answers: a half-open connection, as after a network
    /// partition. The renewal must be abandoned at the renew deadline, not after the HTTP client's
    /// own read timeout (minutes), so that the leader stops before a follower can take over.
    #[tokio::test]
    async fn a_renewal_that_hangs_loses_the_lease_at_the_renew_deadline() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let client = Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        let timings = LeaseTimings {
            lease_duration: Duration::from_secs(3),
            renew_deadline: Duration::from_secs(1),
            retry_period: Duration::from_millis(200),
        };
        let config = LeaderConfig {
            namespace: "default".to_owned(),
            name: "kumiko-operator".to_owned(),
            identity: "me".to_owned(),
            timings,
        };
        let acquired = Instant::now();
        let lost = tokio::time::timeout(timings.lease_duration, hold(&client, &config, acquired))
            .await
            .expect("hold returns before the Lease could expire");
        assert_eq!(lost, LeaseLost::NotRenewedInTime);
        assert!(acquired.elapsed() >= timings.renew_deadline);
        silent.abort();
    }

    #[test]
    fn the_holder_keeps_its_lease_and_a_released_one_is_free() {
        let now = Instant::now();
        assert!(may_hold(Some(&spec("me", 1_000)), "me", now, now));
        assert!(may_hold(Some(&spec("", 1_000)), "me", now, now));
        assert!(may_hold(None, "me", now, now));
    }
}
