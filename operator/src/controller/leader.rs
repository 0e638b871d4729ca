//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Every write of the Lease is a create or a replace carrying the resourceVersion that was read, so
//! two replicas racing for it cannot both win: the loser gets a 409 Conflict and stays a follower.
//! The leader renews the Lease every [`LeaderConfig::renew_every`]; a follower takes it over once
//! its `renewTime` is older than its `leaseDurationSeconds`.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::Error;

/// Where and as whom to campaign.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// The Lease's namespace (`POD_NAMESPACE`).
    pub namespace: String,
    /// The Lease's name (`--lease-name`).
    pub name: String,
    /// This replica's identity (`POD_NAME`).
    pub identity: String,
    /// How long a Lease stays valid without a renewal.
    pub lease_duration: Duration,
    /// How often the leader renews, and a follower retries.
    pub renew_every: Duration,
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
    let duration_seconds = i32::try_from(config.lease_duration.as_secs()).unwrap_or(15);
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

/// Waits until this replica holds the Lease.
pub async fn acquire(client: &Client, config: &LeaderConfig) {
    loop {
        match try_acquire(client, config).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(error) => tracing::warn!(error = %error.chain(), "leader election"),
        }
        tokio::time::sleep(config.renew_every).await;
    }
}

/// Renews the Lease until it is lost (returns then): a renewal that is refused, or no successful
/// renewal for a whole lease duration.
pub async fn hold(client: &Client, config: &LeaderConfig) {
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(config.renew_every).await;
        match try_acquire(client, config).await {
            Ok(true) => last_renewed = tokio::time::Instant::now(),
            Ok(false) => return,
            Err(error) => {
                tracing::warn!(error = %error.chain(), "renewing the lease failed");
                if last_renewed.elapsed() >= config.lease_duration {
                    return;
                }
            }
        }
    }
}

/// Gives the Lease up (on shutdown), so a follower takes over at once.
pub async fn release(client: &Client, config: &LeaderConfig) {
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
    fn the_holder_keeps_its_lease_and_a_released_one_is_free() {
        let now = Timestamp::from_second(1_001).unwrap();
        assert!(may_hold(Some(&spec("me", 1_000)), "me", now));
        assert!(may_hold(Some(&spec("", 1_000)), "me", now));
        assert!(may_hold(None, "me", now));
    }
}
