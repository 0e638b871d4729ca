//! The process lifecycle: `starting → ready → draining → stopped`, monotonic and observable.

use std::fmt;
use std::sync::Arc;

use tokio::sync::watch;

/// A lifecycle state. The order of the variants is the only order the process moves in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Booting: the phases are running.
    Starting,
    /// Every boot phase finished; traffic is welcome.
    Ready,
    /// A shutdown signal arrived: readiness is 503, in-flight work finishes.
    Draining,
    /// Shutdown finished; the process is about to exit.
    Stopped,
}

impl State {
    /// The state's name as shown on the health endpoints.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Draining => "draining",
            Self::Stopped => "stopped",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decides a transition: `Some(requested)` when it moves forward, `None` when it would stay or
/// go back (the lifecycle never reverses).
pub fn transition(current: State, requested: State) -> Option<State> {
    (requested > current).then_some(requested)
}

/// The shared lifecycle of one process. Clones share the state.
#[derive(Clone)]
pub struct Lifecycle {
    sender: Arc<watch::Sender<State>>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lifecycle")
            .field("state", &self.state())
            .finish()
    }
}

impl Lifecycle {
    /// A new lifecycle in `starting`.
    pub fn new() -> Self {
        let (sender, _receiver) = watch::channel(State::Starting);
        Self {
            sender: Arc::new(sender),
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        *self.sender.borrow()
    }

    /// Moves to `to` if that is forward; returns whether the state changed. Never goes back.
    pub fn advance(&self, to: State) -> bool {
        self.sender
            .send_if_modified(|current| match transition(*current, to) {
                Some(next) => {
                    *current = next;
                    true
                }
                None => false,
            })
    }

    /// A receiver that sees every change, for components that react to the state.
    pub fn subscribe(&self) -> watch::Receiver<State> {
        self.sender.subscribe()
    }

    /// Waits until the state is `state` or later.
    pub async fn reached(&self, state: State) {
        let mut receiver = self.subscribe();
        // The sender lives as long as `self`, so `wait_for` cannot fail while we hold it.
        let _ = receiver.wait_for(|current| *current >= state).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_only_move_forward() {
        assert_eq!(
            transition(State::Starting, State::Ready),
            Some(State::Ready)
        );
        assert_eq!(
            transition(State::Starting, State::Draining),
            Some(State::Draining)
        );
        assert_eq!(transition(State::Draining, State::Ready), None);
        assert_eq!(transition(State::Ready, State::Ready), None);
    }

    #[test]
    fn lifecycle_never_reverses() {
        let lifecycle = Lifecycle::new();
        assert_eq!(lifecycle.state(), State::Starting);
        assert!(lifecycle.advance(State::Ready));
        assert!(lifecycle.advance(State::Draining));
        assert!(!lifecycle.advance(State::Ready));
        assert_eq!(lifecycle.state(), State::Draining);
    }

    #[tokio::test]
    async fn a_component_can_await_a_state() {
        let lifecycle = Lifecycle::new();
        let waiter = {
            let lifecycle = lifecycle.clone();
            tokio::spawn(async move { lifecycle.reached(State::Draining).await })
        };
        lifecycle.advance(State::Ready);
        assert!(!waiter.is_finished());
        lifecycle.advance(State::Draining);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the waiter wakes")
            .expect("the task did not panic");
    }
}
