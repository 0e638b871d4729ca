//! Scheduler leader election: which process of the cluster runs the cron jobs.
//!
//! With `REDIS_URL`, every worker tries to hold one Redis key:
//!
//! - **acquire** with `SET key token NX PX ttl` and a random token per process;
//! - **renew** every `renew_interval` with a compare-and-extend script (extend only while the key
//!   still holds our token);
//! - **step down** when a renewal finds another token, or when the *renew deadline* passes
//!   without a confirmed renewal (Redis unreachable or slow): the lease is counted from the moment
//!   the command was *sent*, and the deadline is `ttl - renew_interval` after it, so a leader that
//!   cannot renew stops scheduling a full renew interval before the key can expire and another
//!   process can take over;
//! - **release** with a compare-and-delete script on shutdown, after the scheduler has stopped.
//!
//! Without `REDIS_URL` the process is its own leader ([`LeaderElection::standalone`]).
//!
//! Leadership is published on a watch channel ([`LeaderHandle`]); the health check reports it
//! and the cron scheduler reads it before every tick. A leader whose deadline has passed is not a
//! leader, even before the election task has noticed ([`Leadership::is_leader_at`]).

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::SecretUrl;
use crate::error::Error;
use crate::health::Check;

/// The lock's time to live (15 s).
pub const DEFAULT_TTL: Duration = Duration::from_secs(15);
/// How often the leader renews, and how often a follower tries to acquire (5 s).
pub const DEFAULT_RENEW_INTERVAL: Duration = Duration::from_secs(5);
/// The key when `KUMIKO_LEADER_KEY` is not set.
pub const DEFAULT_KEY: &str = "kumiko:kumiko-app:scheduler-leader";
/// The setting that names the key (apps sharing one Redis need different keys).
pub const KEY_SETTING: &str = "KUMIKO_LEADER_KEY";

/// Extends the key's TTL only while it still holds our token. Returns 1 when extended.
const RENEW_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Deletes the key only while it still holds our token. Returns 1 when deleted.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Timing and naming of the election.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// The Redis key.
    pub key: String,
    /// The key's TTL.
    pub ttl: Duration,
    /// How often to renew (leader) or try to acquire (follower).
    pub renew_interval: Duration,
    /// The bound on each Redis command.
    pub command_timeout: Duration,
}

impl Default for LeaderConfig {
    fn default() -> Self {
        Self {
            key: DEFAULT_KEY.to_owned(),
            ttl: DEFAULT_TTL,
            renew_interval: DEFAULT_RENEW_INTERVAL,
            command_timeout: Duration::from_secs(2),
        }
    }
}

impl LeaderConfig {
    /// How long after a confirmed acquire or renewal (counted from when it was sent) the process
    /// may still act as leader: `ttl - renew_interval`, but never more than the TTL.
    pub fn lease(&self) -> Duration {
        self.ttl
            .checked_sub(self.renew_interval)
            .filter(|lease| !lease.is_zero())
            .unwrap_or(self.ttl / 2)
    }
}

/// Checks a `KUMIKO_LEADER_KEY` value (for boot validation).
pub fn validate_key(value: &str) -> Result<(), String> {
    if value.chars().any(char::is_whitespace) {
        return Err(format!(
            "`{value}` contains whitespace; use a plain Redis key such as {DEFAULT_KEY}"
        ));
    }
    Ok(())
}

/// This process's view of the election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leadership {
    /// Not the leader (or not yet).
    Follower,
    /// The leader until `deadline`, unless a renewal moves it.
    Leader {
        /// The renew deadline: past it, without a renewal, this process is no longer leader.
        deadline: Instant,
    },
    /// No Redis: the only process, always the leader.
    Standalone,
}

impl Leadership {
    /// Whether this process may schedule cron work at `now`.
    pub fn is_leader_at(self, now: Instant) -> bool {
        match self {
            Self::Follower => false,
            Self::Leader { deadline } => now < deadline,
            Self::Standalone => true,
        }
    }

    /// A short word for logs and the health check.
    pub fn describe_at(self, now: Instant) -> &'static str {
        match self {
            Self::Standalone => "leader (standalone, no REDIS_URL)",
            leadership if leadership.is_leader_at(now) => "leader",
            _ => "follower",
        }
    }
}

/// The outcome of one election step, as the pure transition sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// `SET NX` stored our token, or the renewal extended it.
    Confirmed,
    /// `SET NX` found the key held by someone else, or the renewal found another token.
    HeldByOther,
    /// The command failed or timed out: nothing is known.
    Unknown,
}

/// The next leadership after a step that was sent at `sent_at` and ended at `now`.
///
/// Pure: this is the whole decision of the election.
pub fn transition(
    current: Leadership,
    outcome: StepOutcome,
    sent_at: Instant,
    now: Instant,
    config: &LeaderConfig,
) -> Leadership {
    match (current, outcome) {
        (Leadership::Standalone, _) => Leadership::Standalone,
        (_, StepOutcome::Confirmed) => {
            let deadline = sent_at + config.lease();
            if now < deadline {
                Leadership::Leader { deadline }
            } else {
                // The answer came so late that the lease is already spent.
                Leadership::Follower
            }
        }
        (_, StepOutcome::HeldByOther) => Leadership::Follower,
        (Leadership::Leader { deadline }, StepOutcome::Unknown) if now < deadline => {
            Leadership::Leader { deadline }
        }
        (_, StepOutcome::Unknown) => Leadership::Follower,
    }
}

/// A read-only view of this process's leadership, for the scheduler and the health check.
#[derive(Debug, Clone)]
pub struct LeaderHandle {
    receiver: watch::Receiver<Leadership>,
}

impl LeaderHandle {
    /// A handle that never changes (for tests of the scheduler).
    #[cfg(test)]
    pub(crate) fn fixed(leadership: Leadership) -> Self {
        let (_sender, receiver) = watch::channel(leadership);
        Self { receiver }
    }

    /// The latest published leadership.
    pub fn current(&self) -> Leadership {
        *self.receiver.borrow()
    }

    /// Whether this process may schedule cron work now (checks the deadline itself).
    pub fn is_leader(&self) -> bool {
        self.current().is_leader_at(Instant::now())
    }

    /// A receiver that sees every change.
    pub fn subscribe(&self) -> watch::Receiver<Leadership> {
        self.receiver.clone()
    }

    /// The informational readiness check `scheduler-leader`: reports `leader` or `follower` and
    /// never makes a follower unready.
    pub fn health_check(&self) -> Check {
        let handle = self.clone();
        Check::new("scheduler-leader", move || {
            let leadership = handle.current();
            async move { Ok(leadership.describe_at(Instant::now()).to_owned()) }
        })
        .informational()
    }
}

/// Opens a Redis connection (reconnecting by itself) with bounded commands, and proves it with a
/// `PING`. The URL is never part of an error.
pub async fn connect_redis(
    url: &SecretUrl,
    command_timeout: Duration,
) -> Result<ConnectionManager, Error> {
    let client = redis::Client::open(url.expose()).map_err(|source| Error::Redis {
        action: "parsing REDIS_URL",
        source,
    })?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(command_timeout))
        .set_response_timeout(Some(command_timeout))
        .set_number_of_retries(2);
    let mut connection = ConnectionManager::new_with_config(client, config)
        .await
        .map_err(|source| Error::Redis {
            action: "connecting to REDIS_URL",
            source,
        })?;
    ping(&mut connection, command_timeout).await?;
    Ok(connection)
}

/// One `PING`, bounded by `timeout`.
pub async fn ping(connection: &mut ConnectionManager, timeout: Duration) -> Result<(), Error> {
    bounded(
        "PING",
        timeout,
        redis::cmd("PING").query_async::<String>(connection),
    )
    .await
    .map(drop)
}

/// The readiness check `redis`: a `PING` on the shared connection.
pub fn redis_health_check(connection: ConnectionManager) -> Check {
    Check::new("redis", move || {
        let mut connection = connection.clone();
        async move {
            ping(&mut connection, Duration::from_secs(2))
                .await
                .map(|()| String::new())
                .map_err(|error| error.to_string())
        }
    })
}

async fn bounded<T>(
    action: &'static str,
    timeout: Duration,
    command: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, Error> {
    match tokio::time::timeout(timeout, command).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(Error::Redis { action, source }),
        Err(_) => Err(Error::RedisTimeout {
            action,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        }),
    }
}

/// A random token for one process's claim on the key.
fn new_token(instance_id: &str) -> String {
    let random: u128 = rand::random();
    format!("{instance_id}:{random:032x}")
}

/// The running election: a background task and the channel it publishes on.
pub struct LeaderElection {
    handle: LeaderHandle,
    task: Option<ElectionTask>,
}

struct ElectionTask {
    cancel: CancellationToken,
    join: JoinHandle<Leadership>,
    connection: ConnectionManager,
    config: LeaderConfig,
    token: String,
}

impl fmt::Debug for LeaderElection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaderElection")
            .field("leadership", &self.handle.current())
            .field("redis", &self.task.is_some())
            .finish()
    }
}

impl LeaderElection {
    /// No Redis: this process is the leader for its whole life.
    pub fn standalone() -> Self {
        let (_sender, receiver) = watch::channel(Leadership::Standalone);
        Self {
            handle: LeaderHandle { receiver },
            task: None,
        }
    }

    /// Starts the election on `connection`. The first acquire attempt runs at once.
    pub fn start(connection: ConnectionManager, instance_id: &str, config: LeaderConfig) -> Self {
        let (sender, receiver) = watch::channel(Leadership::Follower);
        let cancel = CancellationToken::new();
        let token = new_token(instance_id);
        let join = tokio::spawn(run_election(
            connection.clone(),
            config.clone(),
            token.clone(),
            sender,
            cancel.clone(),
        ));
        Self {
            handle: LeaderHandle { receiver },
            task: Some(ElectionTask {
                cancel,
                join,
                connection,
                config,
                token,
            }),
        }
    }

    /// The view for the scheduler and the health check.
    pub fn handle(&self) -> LeaderHandle {
        self.handle.clone()
    }

    /// Stops the election and releases the key if this process holds it. Call it after the
    /// scheduler has stopped. Returns whether the key was released by this call.
    pub async fn shutdown(self) -> Result<bool, Error> {
        let Some(task) = self.task else {
            return Ok(false);
        };
        task.cancel.cancel();
        // The task ends at its next await point; its last state says whether we held the key.
        let last = task.join.await.unwrap_or(Leadership::Follower);
        if last == Leadership::Follower {
            // We may still own the key (a renewal whose answer was lost): the compare-and-delete
            // is harmless when we do not, so release anyway.
            tracing::debug!("releasing the leader key as a follower (no-op unless it is ours)");
        }
        let mut connection = task.connection;
        let release = redis::Script::new(RELEASE_SCRIPT);
        let mut invocation = release.key(&task.config.key);
        invocation.arg(&task.token);
        let released: i64 = bounded(
            "releasing the leader key",
            task.config.command_timeout,
            invocation.invoke_async(&mut connection),
        )
        .await?;
        if released == 1 {
            tracing::info!(key = %task.config.key, "released scheduler leadership");
        }
        Ok(released == 1)
    }
}

async fn run_election(
    mut connection: ConnectionManager,
    config: LeaderConfig,
    token: String,
    sender: watch::Sender<Leadership>,
    cancel: CancellationToken,
) -> Leadership {
    let renew = redis::Script::new(RENEW_SCRIPT);
    let ttl_ms = u64::try_from(config.ttl.as_millis()).unwrap_or(u64::MAX);
    let mut leadership = Leadership::Follower;
    loop {
        let sent_at = Instant::now();
        let outcome = match leadership {
            Leadership::Leader { .. } => {
                let mut invocation = renew.key(&config.key);
                invocation.arg(&token).arg(ttl_ms);
                let step = invocation.invoke_async::<i64>(&mut connection);
                match bounded("renewing the leader key", config.command_timeout, step).await {
                    Ok(1) => StepOutcome::Confirmed,
                    Ok(_) => StepOutcome::HeldByOther,
                    Err(error) => {
                        tracing::warn!(%error, "renewing scheduler leadership failed");
                        StepOutcome::Unknown
                    }
                }
            }
            _ => {
                let mut set = redis::cmd("SET");
                set.arg(&config.key)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms);
                let step = set.query_async::<Option<String>>(&mut connection);
                match bounded("acquiring the leader key", config.command_timeout, step).await {
                    Ok(Some(_)) => StepOutcome::Confirmed,
                    Ok(None) => StepOutcome::HeldByOther,
                    Err(error) => {
                        tracing::warn!(%error, "acquiring scheduler leadership failed");
                        StepOutcome::Unknown
                    }
                }
            }
        };
        let next = transition(leadership, outcome, sent_at, Instant::now(), &config);
        publish(&sender, leadership, next, &config);
        leadership = next;

        let next_attempt = sent_at + config.renew_interval;
        let sleep_until = match leadership {
            Leadership::Leader { deadline } => next_attempt.min(deadline),
            _ => next_attempt,
        };
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(sleep_until) => {}
        }
        // A deadline reached while waiting (a slow renewal loop) ends leadership at once.
        if let Leadership::Leader { deadline } = leadership
            && Instant::now() >= deadline
        {
            let next = Leadership::Follower;
            publish(&sender, leadership, next, &config);
            leadership = next;
        }
    }
    // Stop scheduling before anything else happens during shutdown.
    let _ = sender.send(Leadership::Follower);
    leadership
}

fn publish(
    sender: &watch::Sender<Leadership>,
    previous: Leadership,
    next: Leadership,
    config: &LeaderConfig,
) {
    let was_leader = matches!(previous, Leadership::Leader { .. });
    let is_leader = matches!(next, Leadership::Leader { .. });
    match (was_leader, is_leader) {
        (false, true) => tracing::info!(key = %config.key, "acquired scheduler leadership"),
        (true, false) => {
            tracing::warn!(key = %config.key, "lost scheduler leadership; cron scheduling stops")
        }
        _ => {}
    }
    let _ = sender.send(next);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LeaderConfig {
        LeaderConfig {
            ttl: Duration::from_secs(15),
            renew_interval: Duration::from_secs(5),
            ..LeaderConfig::default()
        }
    }

    #[test]
    fn lease_ends_one_renew_interval_before_the_key_expires() {
        assert_eq!(config().lease(), Duration::from_secs(10));
        let odd = LeaderConfig {
            ttl: Duration::from_secs(4),
            renew_interval: Duration::from_secs(5),
            ..LeaderConfig::default()
        };
        assert_eq!(odd.lease(), Duration::from_secs(2));
    }

    #[test]
    fn confirmed_acquire_makes_a_leader_with_a_deadline_from_the_send_time() {
        let sent = Instant::now();
        let next = transition(
            Leadership::Follower,
            StepOutcome::Confirmed,
            sent,
            sent,
            &config(),
        );
        assert_eq!(
            next,
            Leadership::Leader {
                deadline: sent + Duration::from_secs(10)
            }
        );
    }

    #[test]
    fn an_answer_later_than_the_lease_does_not_make_a_leader() {
        let sent = Instant::now();
        let next = transition(
            Leadership::Follower,
            StepOutcome::Confirmed,
            sent,
            sent + Duration::from_secs(11),
            &config(),
        );
        assert_eq!(next, Leadership::Follower);
    }

    #[test]
    fn a_failed_renewal_keeps_leadership_only_until_the_deadline() {
        let start = Instant::now();
        let leader = Leadership::Leader {
            deadline: start + Duration::from_secs(10),
        };
        let at_five = start + Duration::from_secs(5);
        assert_eq!(
            transition(leader, StepOutcome::Unknown, at_five, at_five, &config()),
            leader
        );
        let at_ten = start + Duration::from_secs(10);
        assert_eq!(
            transition(leader, StepOutcome::Unknown, at_ten, at_ten, &config()),
            Leadership::Follower
        );
    }

    #[test]
    fn a_renewal_finding_another_token_steps_down_at_once() {
        let start = Instant::now();
        let leader = Leadership::Leader {
            deadline: start + Duration::from_secs(10),
        };
        assert_eq!(
            transition(leader, StepOutcome::HeldByOther, start, start, &config()),
            Leadership::Follower
        );
    }

    #[test]
    fn leadership_past_its_deadline_is_not_leadership() {
        let start = Instant::now();
        let leader = Leadership::Leader {
            deadline: start + Duration::from_secs(1),
        };
        assert!(leader.is_leader_at(start));
        assert!(!leader.is_leader_at(start + Duration::from_secs(1)));
        assert!(Leadership::Standalone.is_leader_at(start + Duration::from_secs(3600)));
        assert!(!Leadership::Follower.is_leader_at(start));
    }

    #[test]
    fn standalone_never_changes() {
        let now = Instant::now();
        for outcome in [
            StepOutcome::Confirmed,
            StepOutcome::HeldByOther,
            StepOutcome::Unknown,
        ] {
            assert_eq!(
                transition(Leadership::Standalone, outcome, now, now, &config()),
                Leadership::Standalone
            );
        }
    }

    #[test]
    fn leader_key_with_whitespace_is_rejected_with_the_fix() {
        assert!(validate_key("kumiko:shop:leader").is_ok());
        let error = validate_key("my key").unwrap_err();
        assert!(error.contains(DEFAULT_KEY), "{error}");
    }

    fn fast_config(key: &str) -> LeaderConfig {
        LeaderConfig {
            key: key.to_owned(),
            ttl: Duration::from_millis(1500),
            renew_interval: Duration::from_millis(300),
            command_timeout: Duration::from_millis(500),
        }
    }

    async fn wait_for(handle: &LeaderHandle, leader: bool, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if handle.is_leader() == leader {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn exactly_one_of_two_processes_leads_on_one_redis() {
        let redis = kumiko_testkit::TempRedis::start().unwrap();
        let url = SecretUrl::new(redis.url());
        // A lease far longer than any scheduling delay on a loaded machine: the test is about
        // mutual exclusion, not about timing.
        let config = LeaderConfig {
            ttl: Duration::from_secs(6),
            renew_interval: Duration::from_millis(300),
            ..fast_config("k")
        };
        let a = LeaderElection::start(
            connect_redis(&url, Duration::from_secs(1)).await.unwrap(),
            "a",
            config.clone(),
        );
        let b = LeaderElection::start(
            connect_redis(&url, Duration::from_secs(1)).await.unwrap(),
            "b",
            config,
        );
        let (ha, hb) = (a.handle(), b.handle());
        assert!(
            wait_for(&ha, true, Duration::from_secs(3)).await
                || wait_for(&hb, true, Duration::from_secs(3)).await
        );
        // Over several renew intervals, never both, always one.
        for _ in 0..20 {
            assert!(ha.is_leader() ^ hb.is_leader(), "exactly one leader");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn release_on_shutdown_lets_the_follower_take_over_before_the_ttl() {
        let redis = kumiko_testkit::TempRedis::start().unwrap();
        let url = SecretUrl::new(redis.url());
        let config = LeaderConfig {
            ttl: Duration::from_secs(30),
            renew_interval: Duration::from_millis(200),
            ..fast_config("k")
        };
        let first = LeaderElection::start(
            connect_redis(&url, Duration::from_secs(1)).await.unwrap(),
            "first",
            config.clone(),
        );
        assert!(wait_for(&first.handle(), true, Duration::from_secs(3)).await);
        let second = LeaderElection::start(
            connect_redis(&url, Duration::from_secs(1)).await.unwrap(),
            "second",
            config,
        );
        let first_handle = first.handle();
        assert!(
            first.shutdown().await.unwrap(),
            "the leader released its key"
        );
        assert!(
            !first_handle.is_leader(),
            "a stopped election is not leader"
        );
        // Far sooner than the 30 s TTL: the key was deleted, not left to expire.
        assert!(wait_for(&second.handle(), true, Duration::from_secs(3)).await);
        second.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn leader_steps_down_when_its_token_is_replaced() {
        let redis = kumiko_testkit::TempRedis::start().unwrap();
        let url = SecretUrl::new(redis.url());
        let election = LeaderElection::start(
            connect_redis(&url, Duration::from_secs(1)).await.unwrap(),
            "a",
            fast_config("k"),
        );
        let handle = election.handle();
        assert!(wait_for(&handle, true, Duration::from_secs(3)).await);
        let mut intruder = connect_redis(&url, Duration::from_secs(1)).await.unwrap();
        redis::cmd("SET")
            .arg("k")
            .arg("someone-else")
            .arg("PX")
            .arg(60_000)
            .query_async::<()>(&mut intruder)
            .await
            .unwrap();
        assert!(wait_for(&handle, false, Duration::from_secs(2)).await);
        // The release must not delete the other holder's key.
        assert!(!election.shutdown().await.unwrap());
        let holder: Option<String> = redis::cmd("GET")
            .arg("k")
            .query_async(&mut intruder)
            .await
            .unwrap();
        assert_eq!(holder.as_deref(), Some("someone-else"));
    }

    #[tokio::test]
    async fn leader_stops_scheduling_when_redis_is_gone_before_the_key_expires() {
        let redis = kumiko_testkit::TempRedis::start().unwrap();
        let url = SecretUrl::new(redis.url());
        let config = fast_config("k");
        let election = LeaderElection::start(
            connect_redis(&url, Duration::from_millis(300))
                .await
                .unwrap(),
            "a",
            config.clone(),
        );
        let handle = election.handle();
        assert!(wait_for(&handle, true, Duration::from_secs(3)).await);
        drop(redis);
        // Renewals now fail; leadership ends at the renew deadline, at most one lease after the
        // last confirmed renewal (the pure tests prove the deadline comes before the key expires).
        assert!(wait_for(&handle, false, config.lease() + Duration::from_secs(2)).await);
        assert!(
            election.shutdown().await.is_err(),
            "the release cannot reach Redis"
        );
    }
}
