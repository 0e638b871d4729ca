//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Every write of the Lease is a create or a replace carrying the resourceVersion that was read, so
//! two replicas racing for it cannot both win: the loser gets a 409 Conflict and stays a follower.
//! The leader renews the Lease every [`LeaseTimings::retry_period`]; a follower takes it over once
//! its `renewTime` is older than its `leaseDurationSeconds`.
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
use k8s_openapi::jiff::{SignedDuration, Timestamp};
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
/// `started` is read before the request that wrote `renewTime`, so the deadline falls at least
/// `lease_duration - renew_deadline` before the instant a follower sees the Lease expire.
pub fn renewal_deadline(started: Instant, timings: &LeaseTimings) -> Instant {
    started + timings.renew_deadline
}

/// Whether `identity` may take or keep a Lease described by `spec` at `now`.
pub fn may_hold(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> bool {
    let Some(spec) = spec else {
        return true;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => return true,
        Some(holder) if holder == identity => return true,
        Some(_) => {}
    }
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    renewed
        .0
        .saturating_add(duration)
        .is_ok_and(|expiry| expiry < now)
}

fn lease_error(action: &str, config: &LeaderConfig) -> impl FnOnce(kube::Error) -> Error {
    let action = format!("{action} Lease {}/{}", config.namespace, config.name);
    move |source| Error::Kube { action, source }
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// One attempt to take or renew the Lease: `Ok(true)` when this replica holds it afterwards.
pub async fn try_acquire(client: &Client, config: &LeaderConfig) -> Result<bool, Error> {
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
                Ok(_) => Ok(true),
                Err(error) if is_conflict(&error) => Ok(false),
                Err(error) => Err(lease_error("creating", config)(error)),
            }
        }
        Some(mut lease) => {
            if !may_hold(lease.spec.as_ref(), &config.identity, now) {
                return Ok(false);
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
                Ok(_) => Ok(true),
                Err(error) if is_conflict(&error) => Ok(false),
                Err(error) => Err(lease_error("renewing", config)(error)),
            }
        }
    }
}

/// Waits until this replica holds the Lease, and returns the instant at which the successful
/// attempt started (what [`hold`] counts its first deadline from). Each attempt is bounded by the
/// renew deadline, so a hung connection delays the campaign but cannot stall it.
pub async fn acquire(client: &Client, config: &LeaderConfig) -> Instant {
    loop {
        let started = Instant::now();
        match tokio::time::timeout(config.timings.renew_deadline, try_acquire(client, config)).await
        {
            Ok(Ok(true)) => return started,
            Ok(Ok(false)) => {}
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
/// The Lease is lost when a renewal finds it held by another replica, or when no renewal has
/// succeeded by the [`renewal_deadline`] of the last successful one. That deadline bounds every
/// request too: a renewal that hangs (a half-open connection) is abandoned when it passes, so this
/// returns by then whatever the API does — before the Lease can expire for a follower.
pub async fn hold(client: &Client, config: &LeaderConfig, acquired: Instant) -> LeaseLost {
    let mut deadline = renewal_deadline(acquired, &config.timings);
    loop {
        let next_try = Instant::now() + config.timings.retry_period;
        if next_try >= deadline {
            tokio::time::sleep_until(deadline).await;
            return LeaseLost::NotRenewedInTime;
        }
        tokio::time::sleep_until(next_try).await;
        let started = Instant::now();
        match tokio::time::timeout_at(deadline, try_acquire(client, config)).await {
            Ok(Ok(true)) => deadline = renewal_deadline(started, &config.timings),
            Ok(Ok(false)) => return LeaseLost::TakenOver,
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

    fn spec(holder: &str, renewed_second: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed_second).unwrap())),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_fresh_lease_of_another_replica_is_respected() {
        let now = Timestamp::from_second(1_010).unwrap();
        assert!(!may_hold(Some(&spec("other", 1_000)), "me", now));
    }

    #[test]
    fn an_expired_lease_is_taken_over() {
        let now = Timestamp::from_second(1_016).unwrap();
        assert!(may_hold(Some(&spec("other", 1_000)), "me", now));
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
        let now = Timestamp::from_second(1_001).unwrap();
        assert!(may_hold(Some(&spec("me", 1_000)), "me", now));
        assert!(may_hold(Some(&spec("", 1_000)), "me", now));
        assert!(may_hold(None, "me", now));
    }
}
