//! Components (features) declare themselves in phase 5; phase 6 checks the whole graph together
//! with the configuration and reports every error at once.
//!
//! A component says what it is called, which components it requires, and which `KUMIKO_*`
//! settings it reads (with a parser for each). Validation is a pure function over the
//! declarations and the environment: missing dependencies, cycles, duplicate names, settings that
//! do not parse, and `KUMIKO_*` variables nobody declared (typos) all become boot errors.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{ConfigError, Env, RUNTIME_SETTINGS};

/// A setting a component reads from the environment.
#[derive(Debug, Clone)]
pub struct Setting {
    /// The environment variable (`KUMIKO_...`).
    pub variable: &'static str,
    /// Checks a present value; the error says what is wrong and how to fix it.
    pub validate: fn(&str) -> Result<(), String>,
}

/// A component's declaration.
#[derive(Debug, Clone)]
pub struct Component {
    /// A unique name (`status-page`, `jobs`).
    pub name: &'static str,
    /// Components this one needs.
    pub requires: Vec<&'static str>,
    /// Settings it reads.
    pub settings: Vec<Setting>,
}

impl Component {
    /// A component with no requirements and no settings.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            requires: Vec::new(),
            settings: Vec::new(),
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
