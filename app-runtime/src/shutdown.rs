//! Shutdown hooks: background components register a hook when they start; at shutdown the hooks
//! run in reverse start order (LIFO), each bounded by its own timeout.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

/// A hook gets the time it may take (its timeout, clamped to what is left of the budget).
type Hook = Box<dyn FnOnce(Duration) -> BoxFuture<'static, ()> + Send>;

struct Registered {
    name: String,
    timeout: Duration,
    hook: Hook,
}

/// The shutdown hooks of one process. Clones share the list.
#[derive(Clone, Default)]
pub struct ShutdownHooks {
    hooks: Arc<Mutex<Vec<Registered>>>,
}

impl std::fmt::Debug for ShutdownHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = lock(&self.hooks).iter().map(|h| h.name.clone()).collect();
        f.debug_struct("ShutdownHooks")
            .field("hooks", &names)
            .finish()
    }
}

/// How one hook ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookOutcome {
    /// The hook's name.
    pub name: String,
    /// Whether it finished within its timeout.
    pub finished: bool,
}

impl ShutdownHooks {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a hook. Hooks run last-registered first, each for at most `timeout`.
    pub fn register<F, Fut>(&self, name: impl Into<String>, timeout: Duration, hook: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.register_bounded(name, timeout, move |_budget| hook());
    }

    /// Registers a hook that is told the time it may take when it runs: its `timeout`, clamped
    /// to what is left of the shutdown budget at that moment (see
    /// [`ShutdownHooks::run_lifo_until`]). A hook that shares its time with work of its own (the
    /// jobs worker giving a running job a grace) divides this budget, not a figure fixed at boot.
    pub fn register_bounded<F, Fut>(&self, name: impl Into<String>, timeout: Duration, hook: F)
    where
        F: FnOnce(Duration) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        lock(&self.hooks).push(Registered {
            name: name.into(),
            timeout,
            hook: Box::new(move |budget| Box::pin(hook(budget))),
        });
    }

    /// Spawns a background component and registers the hook that stops it: the hook cancels the
    /// component's token and waits for its task, bounded by `timeout`. The component should stop
    /// promptly when its token is cancelled (finishing the current unit of work first).
    pub fn spawn_component<F, Fut>(&self, name: impl Into<String>, timeout: Duration, component: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stop = CancellationToken::new();
        let task = tokio::spawn(component(stop.clone()));
        self.register(name, timeout, move || async move {
            stop.cancel();
            let _ = task.await;
        });
    }

    /// How many hooks are registered.
    pub fn len(&self) -> usize {
        lock(&self.hooks).len()
    }

    /// Whether none are registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs every hook, last registered first, each bounded by its timeout; a hook that overruns
    /// is abandoned with a warning and the next one runs. Empties the list.
    pub async fn run_lifo(&self) -> Vec<HookOutcome> {
        self.run_lifo_until(None).await
    }

    /// Like [`ShutdownHooks::run_lifo`], with every hook's timeout clamped to what is left until
    /// `deadline` (the end of `KUMIKO_SHUTDOWN_TIMEOUT`), so no hook can spend the budget of the
    /// ones after it past the watchdog.
    pub async fn run_lifo_until(&self, deadline: Option<Instant>) -> Vec<HookOutcome> {
        let hooks = std::mem::take(&mut *lock(&self.hooks));
        let mut outcomes = Vec::with_capacity(hooks.len());
        for registered in hooks.into_iter().rev() {
            let started = Instant::now();
            let timeout = clamp_timeout(registered.timeout, deadline, started);
            let finished = tokio::time::timeout(timeout, (registered.hook)(timeout))
                .await
                .is_ok();
            let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
            if finished {
                tracing::info!(component = %registered.name, duration_ms, "stopped");
            } else {
                tracing::warn!(
                    component = %registered.name,
                    timeout_ms = timeout.as_millis() as u64,
                    "did not stop within its timeout; moving on"
                );
            }
            outcomes.push(HookOutcome {
                name: registered.name,
                finished,
            });
        }
        outcomes
    }
}

/// A hook's timeout, clamped to what is left until `deadline` at `now`.
pub fn clamp_timeout(timeout: Duration, deadline: Option<Instant>, now: Instant) -> Duration {
    match deadline {
        Some(deadline) => timeout.min(deadline.saturating_duration_since(now)),
        None => timeout,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_timeout_is_clamped_to_what_is_left_of_the_shutdown_budget() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(3);
        assert_eq!(
            clamp_timeout(Duration::from_secs(30), Some(deadline), now),
            Duration::from_secs(3)
        );
        assert_eq!(
            clamp_timeout(Duration::from_secs(1), Some(deadline), now),
            Duration::from_secs(1)
        );
        assert_eq!(
            clamp_timeout(
                Duration::from_secs(1),
                Some(now),
                now + Duration::from_secs(1)
            ),
            Duration::ZERO
        );
        assert_eq!(
            clamp_timeout(Duration::from_secs(30), None, now),
            Duration::from_secs(30)
        );
    }

    #[tokio::test]
    async fn a_bounded_hook_is_told_what_is_left_of_the_budget_when_it_runs() {
        let hooks = ShutdownHooks::new();
        let told = Arc::new(Mutex::new(None));
        {
            let told = told.clone();
            hooks.register_bounded(
                "jobs worker",
                Duration::from_secs(30),
                move |budget| async move {
                    *told.lock().unwrap() = Some(budget);
                },
            );
        }
        // Registered last, runs first: it spends 300 ms of a 1 s budget.
        hooks.register("slow", Duration::from_secs(5), || {
            tokio::time::sleep(Duration::from_millis(300))
        });
        hooks
            .run_lifo_until(Some(Instant::now() + Duration::from_secs(1)))
            .await;
        let budget = told.lock().unwrap().expect("the hook ran");
        assert!(
            budget <= Duration::from_millis(700),
            "told {budget:?}, not what was left of the budget"
        );
    }

    #[tokio::test]
    async fn hooks_run_in_reverse_start_order() {
        let hooks = ShutdownHooks::new();
        let order = Arc::new(Mutex::new(Vec::new()));
        for name in ["outbox", "jobs", "leader"] {
            let order = order.clone();
            hooks.register(name, Duration::from_secs(1), move || async move {
                order.lock().unwrap().push(name);
            });
        }
        hooks.run_lifo().await;
        assert_eq!(*order.lock().unwrap(), ["leader", "jobs", "outbox"]);
        assert!(hooks.is_empty());
    }

    #[tokio::test]
    async fn a_hook_that_hangs_is_abandoned_and_the_rest_still_run() {
        let hooks = ShutdownHooks::new();
        let ran = Arc::new(Mutex::new(false));
        {
            let ran = ran.clone();
            hooks.register(
                "first-started",
                Duration::from_secs(1),
                move || async move {
                    *ran.lock().unwrap() = true;
                },
            );
        }
        hooks.register("stuck", Duration::from_millis(20), || {
            std::future::pending()
        });
        let outcomes = hooks.run_lifo().await;
        assert_eq!(
            outcomes[0],
            HookOutcome {
                name: "stuck".into(),
                finished: false
            }
        );
        assert!(outcomes[1].finished);
        assert!(*ran.lock().unwrap());
    }

    #[tokio::test]
    async fn a_spawned_component_is_cancelled_by_its_hook() {
        let hooks = ShutdownHooks::new();
        let stopped = Arc::new(Mutex::new(false));
        {
            let stopped = stopped.clone();
            hooks.spawn_component("ticker", Duration::from_secs(1), move |stop| async move {
                stop.cancelled().await;
                *stopped.lock().unwrap() = true;
            });
        }
        let outcomes = hooks.run_lifo().await;
        assert!(outcomes[0].finished);
        assert!(*stopped.lock().unwrap());
    }
}
