//! Components (features) declare themselves in phase 5; phase 6 checks the whole graph together
//! with the configuration and reports every error at once.
//!
//! A component says what it is called, which components it requires, and which `KUMIKO_*`
//! settings it reads (with a parser for each). Validation is a pure function over the
//! declarations and the environment: missing dependencies, cycles, duplicate names, settings that
//! do not parse, and `KUMIKO_*` variables nobody declared (typos) all become boot errors.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::app::Context;
use crate::config::{ConfigError, Env, ProcessKind, RUNTIME_SETTINGS};
use crate::error::Error;

/// A setting a component reads from the environment.
#[derive(Debug, Clone)]
pub struct Setting {
    /// The environment variable (`KUMIKO_...`).
    pub variable: &'static str,
    /// Checks a present value; the error says what is wrong and how to fix it.
    pub validate: fn(&str) -> Result<(), String>,
}

/// A component's long-running task: it gets the app's [`Context`] and a token that is cancelled
/// at shutdown, and should return soon after the token fires.
pub(crate) type StartFn =
    Box<dyn FnOnce(Context, CancellationToken) -> BoxFuture<'static, Result<(), Error>> + Send>;
/// A component's task that may be started again after it ended.
pub(crate) type RestartFn = std::sync::Arc<
    dyn Fn(Context, CancellationToken) -> BoxFuture<'static, Result<(), Error>> + Send + Sync,
>;

/// How a component's task starts: once, or again (up to a number of times) when it ends early.
pub(crate) enum Starter {
    /// Started once; ending before shutdown shuts the process down.
    Once(StartFn),
    /// Started again when it ends before shutdown, up to `max_restarts` times.
    Restarting {
        /// Makes one run of the task.
        start: RestartFn,
        /// How many restarts are allowed.
        max_restarts: u32,
    },
}

/// A component's readiness probe.
pub(crate) type ProbeFn =
    std::sync::Arc<dyn Fn() -> BoxFuture<'static, Result<String, String>> + Send + Sync>;
/// A component's stop hook.
pub(crate) type StopFn = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// Default budget of a component's shutdown (its task stopping, then its stop hook); clamped at
/// shutdown to what is left of `KUMIKO_SHUTDOWN_TIMEOUT`.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A component's declaration and, optionally, its lifecycle: a task started at boot (phase 14),
/// a readiness probe, and a stop hook, registered together.
pub struct Component {
    /// A unique name (`status-page`, `jobs`); the name of its readiness check.
    pub name: &'static str,
    /// Components this one needs.
    pub requires: Vec<&'static str>,
    /// Settings it reads.
    pub settings: Vec<Setting>,
    /// The processes it runs in; empty means every process (`serve` and `worker`).
    pub processes: Vec<ProcessKind>,
    pub(crate) start: Option<Starter>,
    pub(crate) probe: Option<ProbeFn>,
    pub(crate) stop: Option<StopFn>,
    pub(crate) stop_timeout: Duration,
}

impl std::fmt::Debug for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Component")
            .field("name", &self.name)
            .field("requires", &self.requires)
            .field("settings", &self.settings)
            .field("processes", &self.processes)
            .field("start", &self.start.is_some())
            .field("probe", &self.probe.is_some())
            .field("stop", &self.stop.is_some())
            .field("stop_timeout", &self.stop_timeout)
            .finish()
    }
}

impl Component {
    /// A component with no requirements, no settings and nothing to run.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            requires: Vec::new(),
            settings: Vec::new(),
            processes: Vec::new(),
            start: None,
            probe: None,
            stop: None,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
        }
    }

    /// Adds a required component.
    pub fn requires(mut self, name: &'static str) -> Self {
        self.requires.push(name);
        self
    }

    /// Adds a setting.
    pub fn setting(
        mut self,
        variable: &'static str,
        validate: fn(&str) -> Result<(), String>,
    ) -> Self {
        self.settings.push(Setting { variable, validate });
        self
    }

    /// Runs the component only in processes of `kind` (call once per kind; by default it runs in
    /// every process).
    pub fn only_in(mut self, kind: ProcessKind) -> Self {
        self.processes.push(kind);
        self
    }

    /// Whether the component runs in a process of `kind`.
    pub fn runs_in(&self, kind: ProcessKind) -> bool {
        self.processes.is_empty() || self.processes.contains(&kind)
    }

    /// The task started in boot phase 14. The closure may capture anything; it gets the app's
    /// [`Context`] and a token cancelled at shutdown. The runtime supervises the task: if it ends
    /// before shutdown (returning, failing or panicking), the component's readiness check fails
    /// naming it and the process shuts down cleanly.
    pub fn start<F, Fut>(mut self, start: F) -> Self
    where
        F: FnOnce(Context, CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        self.start = Some(Starter::Once(Box::new(move |context, stop| {
            Box::pin(start(context, stop))
        })));
        self
    }

    /// Like [`Component::start`], but a task that ends before shutdown (returning, failing or
    /// panicking) is started again, after a backoff (1 s, 2 s, 4 s, ... at most 30 s), up to
    /// `max_restarts` times; only then does the process shut down. Each restart is logged.
    pub fn start_restarting<F, Fut>(mut self, max_restarts: u32, start: F) -> Self
    where
        F: Fn(Context, CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        self.start = Some(Starter::Restarting {
            start: std::sync::Arc::new(move |context, stop| Box::pin(start(context, stop))),
            max_restarts,
        });
        self
    }

    /// A readiness probe, run in the background like every check: `Ok(message)` when healthy,
    /// `Err(message)` when not. The check carries the component's name.
    pub fn health<F, Fut>(mut self, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        self.probe = Some(std::sync::Arc::new(move || Box::pin(probe())));
        self
    }

    /// A hook run at shutdown after the task (if any) has stopped, in reverse start order.
    pub fn on_stop<F, Fut>(mut self, stop: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.stop = Some(Box::new(move || Box::pin(stop())));
        self
    }

    /// The budget for stopping the task and running the stop hook (default
    /// [`DEFAULT_STOP_TIMEOUT`]); clamped to what is left of `KUMIKO_SHUTDOWN_TIMEOUT`.
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Whether the component has anything to run (a task, a probe or a stop hook).
    pub fn has_lifecycle(&self) -> bool {
        self.start.is_some() || self.probe.is_some() || self.stop.is_some()
    }
}

/// One validation error, for the boot's single list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// Where it was found: a variable or a component.
    pub subject: String,
    /// What is wrong and the fix.
    pub problem: String,
}

impl std::fmt::Display for ValidationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.subject, self.problem)
    }
}

impl From<ConfigError> for ValidationError {
    fn from(error: ConfigError) -> Self {
        Self {
            subject: error.variable,
            problem: error.problem,
        }
    }
}

/// Checks configuration errors, the component graph and every declared setting together.
/// Returns every error found (empty when the boot may go on).
pub fn validate(
    config_errors: &[ConfigError],
    components: &[Component],
    env: &Env,
) -> Vec<ValidationError> {
    let mut errors: Vec<ValidationError> = config_errors.iter().cloned().map(Into::into).collect();

    let mut names = BTreeMap::new();
    for component in components {
        if names.insert(component.name, component).is_some() {
            errors.push(ValidationError {
                subject: format!("component {}", component.name),
                problem: "is registered twice; register each component once".to_owned(),
            });
        }
    }
    for component in components {
        for required in &component.requires {
            if !names.contains_key(required) {
                errors.push(ValidationError {
                    subject: format!("component {}", component.name),
                    problem: format!(
                        "requires `{required}`, which is not registered; register it or drop \
                         the requirement"
                    ),
                });
            }
        }
    }
    if let Some(cycle) = find_cycle(components) {
        errors.push(ValidationError {
            subject: format!("component {}", cycle[0]),
            problem: format!(
                "circular requirement {}; break the cycle",
                cycle.join(" -> ")
            ),
        });
    }

    let mut known: BTreeSet<&str> = RUNTIME_SETTINGS.iter().copied().collect();
    for component in components {
        for setting in &component.settings {
            known.insert(setting.variable);
            if let Some(value) = env.get(setting.variable).filter(|v| !v.trim().is_empty())
                && let Err(problem) = (setting.validate)(value.trim())
            {
                errors.push(ValidationError {
                    subject: setting.variable.to_owned(),
                    problem,
                });
            }
        }
    }
    for variable in env.keys().filter(|key| key.starts_with("KUMIKO_")) {
        if !known.contains(variable.as_str()) {
            let hint = closest(variable, &known)
                .map(|name| format!("did you mean {name}?"))
                .unwrap_or_else(|| "remove it".to_owned());
            errors.push(ValidationError {
                subject: variable.clone(),
                problem: format!("is not a setting of this process; {hint}"),
            });
        }
    }
    errors
}

/// A dependency cycle as the list of names along it (first name repeated at the end), if any.
fn find_cycle(components: &[Component]) -> Option<Vec<&'static str>> {
    let graph: BTreeMap<&str, &Component> = components.iter().map(|c| (c.name, c)).collect();
    let mut done = BTreeSet::new();
    for component in components {
        let mut path = Vec::new();
        if let Some(cycle) = visit(component.name, &graph, &mut path, &mut done) {
            return Some(cycle);
        }
    }
    None
}

fn visit(
    name: &'static str,
    graph: &BTreeMap<&str, &Component>,
    path: &mut Vec<&'static str>,
    done: &mut BTreeSet<&'static str>,
) -> Option<Vec<&'static str>> {
    if let Some(start) = path.iter().position(|n| *n == name) {
        let mut cycle = path[start..].to_vec();
        cycle.push(name);
        return Some(cycle);
    }
    if done.contains(name) {
        return None;
    }
    path.push(name);
    if let Some(component) = graph.get(name) {
        for required in &component.requires {
            if let Some(cycle) = visit(required, graph, path, done) {
                return Some(cycle);
            }
        }
    }
    path.pop();
    done.insert(name);
    None
}

/// The known name closest to `name` by edit distance, when it is close enough to be a typo.
fn closest<'a>(name: &str, known: &BTreeSet<&'a str>) -> Option<&'a str> {
    known
        .iter()
        .map(|candidate| (edit_distance(name, candidate), *candidate))
        .filter(|(distance, _)| *distance <= 3)
        .min()
        .map(|(_, candidate)| candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn positive(value: &str) -> Result<(), String> {
        match value.parse::<u32>() {
            Ok(n) if n > 0 => Ok(()),
            _ => Err(format!("`{value}` is not a positive whole number")),
        }
    }

    #[test]
    fn a_sound_graph_has_no_errors() {
        let components = [
            Component::new("db"),
            Component::new("status-page")
                .requires("db")
                .setting("KUMIKO_UPTIME_DAYS", positive),
        ];
        let errors = validate(&[], &components, &env(&[("KUMIKO_UPTIME_DAYS", "30")]));
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn every_graph_and_setting_error_is_listed_together() {
        let components = [
            Component::new("a").requires("b"),
            Component::new("b").requires("a"),
            Component::new("c")
                .requires("missing")
                .setting("KUMIKO_UPTIME_DAYS", positive),
            Component::new("c"),
        ];
        let errors = validate(
            &[ConfigError::new("PORT", "bad")],
            &components,
            &env(&[("KUMIKO_UPTIME_DAYS", "zero"), ("KUMIKO_LINGR", "3s")]),
        );
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 6, "{text:#?}");
        assert!(text.iter().any(|e| e.starts_with("PORT")));
        assert!(text.iter().any(|e| e.contains("registered twice")));
        assert!(text.iter().any(|e| e.contains("requires `missing`")));
        assert!(
            text.iter()
                .any(|e| e.contains("circular requirement a -> b -> a"))
        );
        assert!(text.iter().any(|e| e.starts_with("KUMIKO_UPTIME_DAYS")));
        assert!(
            text.iter()
                .any(|e| e.contains("did you mean KUMIKO_LINGER?"))
        );
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("KUMIKO_LINGR", "KUMIKO_LINGER"), 1);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("", "ab"), 2);
    }
}
