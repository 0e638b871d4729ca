//! The status page's types and the pure rules over them: statuses, input validation, the overall
//! status and the uptime ratio.

use serde::{Deserialize, Serialize};

use kumiko_runtime::error::FieldError;

/// How a component is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentStatus {
    /// Working normally.
    Operational,
    /// Working, but slow or with errors.
    Degraded,
    /// Down for some users.
    PartialOutage,
    /// Down.
    MajorOutage,
}

impl ComponentStatus {
    /// Every status, best first.
    pub const ALL: [ComponentStatus; 4] = [
        Self::Operational,
        Self::Degraded,
        Self::PartialOutage,
        Self::MajorOutage,
    ];

    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operational => "operational",
            Self::Degraded => "degraded",
            Self::PartialOutage => "partial_outage",
            Self::MajorOutage => "major_outage",
        }
    }

    /// Parses a stored or wire name.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
    }

    /// Whether a sample in this status counts as "up" for the uptime: operational or degraded
    /// (serving, if slowly). The roll-up's SQL implements the same rule; this states it.
    #[cfg(test)]
    pub fn counts_as_up(self) -> bool {
        matches!(self, Self::Operational | Self::Degraded)
    }
}

/// An incident's impact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Impact {
    /// Minor.
    Minor,
    /// Major.
    Major,
    /// Critical.
    Critical,
}

impl Impact {
    /// Every impact.
    pub const ALL: [Impact; 3] = [Self::Minor, Self::Major, Self::Critical];

    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minor => "minor",
            Self::Major => "major",
            Self::Critical => "critical",
        }
    }

    /// Parses a stored or wire name.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|impact| impact.as_str() == value)
    }
}

/// A component of the service, as shown on the page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Component {
    /// Its id.
    pub id: i64,
    /// Its unique name.
    pub name: String,
    /// A sentence for readers.
    pub description: String,
    /// Its current status.
    pub status: ComponentStatus,
    /// When it was created (ms since the epoch).
    pub created_at_ms: i64,
    /// When its status or text last changed (ms since the epoch).
    pub updated_at_ms: i64,
}

/// An incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Incident {
    /// Its id.
    pub id: i64,
    /// The affected component, if one.
    pub component_id: Option<i64>,
    /// The headline.
    pub title: String,
    /// The latest message.
    pub message: String,
    /// Its impact.
    pub impact: Impact,
    /// `investigating`, `identified`, `monitoring` or `resolved`.
    pub state: String,
    /// When it started (ms since the epoch).
    pub started_at_ms: i64,
    /// When it was resolved (ms since the epoch), if it was.
    pub resolved_at_ms: Option<i64>,
}

/// A component's rolled-up uptime.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Uptime {
    /// The component.
    pub component_id: i64,
    /// Its name.
    pub component_name: String,
    /// The trailing window the figures cover (ms).
    pub window_ms: i64,
    /// Samples in the window.
    pub samples_total: i64,
    /// Samples that counted as up.
    pub samples_up: i64,
    /// `samples_up / samples_total`, or `None` before the first sample.
    pub ratio: Option<f64>,
    /// When the figures were computed (ms since the epoch).
    pub computed_at_ms: i64,
}

/// The page at a glance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusSummary {
    /// The worst status of any component (`operational` with no components).
    pub overall: ComponentStatus,
    /// Every component.
    pub components: Vec<Component>,
    /// Incidents not resolved yet, newest first.
    pub open_incidents: Vec<Incident>,
}

/// The body of "create a component".
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct NewComponent {
    /// Its unique name (1 to 100 characters).
    #[serde(default)]
    pub name: String,
    /// A sentence for readers (at most 500 characters).
    #[serde(default)]
    pub description: Option<String>,
}

/// The body of "set a component's status".
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct StatusChange {
    /// One of `operational`, `degraded`, `partial_outage`, `major_outage`.
    #[serde(default)]
    pub status: String,
}

/// The body of "open an incident".
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct NewIncident {
    /// The headline (1 to 200 characters).
    #[serde(default)]
    pub title: String,
    /// A message (at most 5000 characters).
    #[serde(default)]
    pub message: Option<String>,
    /// `minor`, `major` or `critical`.
    #[serde(default)]
    pub impact: String,
    /// The affected component, if one.
    #[serde(default)]
    pub component_id: Option<i64>,
}

/// A validated [`NewComponent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidComponent {
    /// The trimmed name.
    pub name: String,
    /// The trimmed description.
    pub description: String,
}

/// A validated [`NewIncident`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidIncident {
    /// The trimmed title.
    pub title: String,
    /// The trimmed message.
    pub message: String,
    /// The impact.
    pub impact: Impact,
    /// The component.
    pub component_id: Option<i64>,
}

fn check_length(
    errors: &mut Vec<FieldError>,
    field: &'static str,
    value: &str,
    min: usize,
    max: usize,
) {
    let length = value.chars().count();
    if length < min {
        errors.push(FieldError {
            field,
            message: "is required; give a non-empty value".to_owned(),
        });
    } else if length > max {
        errors.push(FieldError {
            field,
            message: format!("is {length} characters long; shorten it to at most {max}"),
        });
    }
}

/// Checks a new component, reporting every problem.
pub fn validate_component(input: &NewComponent) -> Result<ValidComponent, Vec<FieldError>> {
    let name = input.name.trim().to_owned();
    let description = input.description.as_deref().unwrap_or("").trim().to_owned();
    let mut errors = Vec::new();
    check_length(&mut errors, "name", &name, 1, 100);
    check_length(&mut errors, "description", &description, 0, 500);
    if errors.is_empty() {
        Ok(ValidComponent { name, description })
    } else {
        Err(errors)
    }
}

/// Parses a status change.
pub fn validate_status(input: &StatusChange) -> Result<ComponentStatus, Vec<FieldError>> {
    ComponentStatus::parse(input.status.trim()).ok_or_else(|| {
        vec![FieldError {
            field: "status",
            message: format!(
                "`{}` is not a status; use operational, degraded, partial_outage or major_outage",
                input.status
            ),
        }]
    })
}

/// Checks a new incident, reporting every problem.
pub fn validate_incident(input: &NewIncident) -> Result<ValidIncident, Vec<FieldError>> {
    let title = input.title.trim().to_owned();
    let message = input.message.as_deref().unwrap_or("").trim().to_owned();
    let mut errors = Vec::new();
    check_length(&mut errors, "title", &title, 1, 200);
    check_length(&mut errors, "message", &message, 0, 5000);
    let impact = Impact::parse(input.impact.trim());
    if impact.is_none() {
        errors.push(FieldError {
            field: "impact",
            message: format!(
                "`{}` is not an impact; use minor, major or critical",
                input.impact
            ),
        });
    }
    if let Some(id) = input.component_id
        && id <= 0
    {
        errors.push(FieldError {
            field: "component_id",
            message: format!("{id} is not a component id; use the id of an existing component"),
        });
    }
    match impact {
        Some(impact) if errors.is_empty() => Ok(ValidIncident {
            title,
            message,
            impact,
            component_id: input.component_id,
        }),
        _ => Err(errors),
    }
}

/// The worst status among `statuses` (`operational` when there are none).
pub fn overall_status(statuses: impl IntoIterator<Item = ComponentStatus>) -> ComponentStatus {
    statuses
        .into_iter()
        .max()
        .unwrap_or(ComponentStatus::Operational)
}

/// `up / total`, or `None` without samples.
pub fn uptime_ratio(samples_up: i64, samples_total: i64) -> Option<f64> {
    if samples_total <= 0 {
        return None;
    }
    // Counts of samples are far below 2^52: the conversion is exact.
    #[allow(clippy::cast_precision_loss)]
    let ratio = samples_up as f64 / samples_total as f64;
    Some(ratio.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_order_from_best_to_worst() {
        for status in ComponentStatus::ALL {
            assert_eq!(ComponentStatus::parse(status.as_str()), Some(status));
        }
        assert!(ComponentStatus::Operational < ComponentStatus::MajorOutage);
        assert!(ComponentStatus::Degraded.counts_as_up());
        assert!(!ComponentStatus::PartialOutage.counts_as_up());
    }

    #[test]
    fn overall_status_is_the_worst_component() {
        assert_eq!(overall_status([]), ComponentStatus::Operational);
        assert_eq!(
            overall_status([ComponentStatus::Degraded, ComponentStatus::Operational]),
            ComponentStatus::Degraded
        );
        assert_eq!(
            overall_status([ComponentStatus::MajorOutage, ComponentStatus::Degraded]),
            ComponentStatus::MajorOutage
        );
    }

    #[test]
    fn uptime_ratio_is_none_without_samples() {
        assert_eq!(uptime_ratio(0, 0), None);
        assert_eq!(uptime_ratio(3, 4), Some(0.75));
        assert_eq!(uptime_ratio(4, 4), Some(1.0));
    }

    #[test]
    fn component_validation_trims_and_reports_every_problem() {
        let valid = validate_component(&NewComponent {
            name: "  API  ".to_owned(),
            description: None,
        })
        .unwrap();
        assert_eq!(valid.name, "API");
        assert_eq!(valid.description, "");
        let errors = validate_component(&NewComponent {
            name: " ".to_owned(),
            description: Some("x".repeat(501)),
        })
        .unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["name", "description"]);
        assert!(errors[1].message.contains("at most 500"));
    }

    #[test]
    fn incident_validation_reports_title_impact_and_component_together() {
        let errors = validate_incident(&NewIncident {
            title: String::new(),
            message: None,
            impact: "huge".to_owned(),
            component_id: Some(0),
        })
        .unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["title", "impact", "component_id"]);
        assert!(errors[1].message.contains("minor, major or critical"));
        let valid = validate_incident(&NewIncident {
            title: "Slow logins".to_owned(),
            message: Some("Looking into it".to_owned()),
            impact: "minor".to_owned(),
            component_id: Some(1),
        })
        .unwrap();
        assert_eq!(valid.impact, Impact::Minor);
    }

    #[test]
    fn status_change_names_the_allowed_values() {
        assert_eq!(
            validate_status(&StatusChange {
                status: "degraded".to_owned()
            }),
            Ok(ComponentStatus::Degraded)
        );
        let errors = validate_status(&StatusChange {
            status: "meh".to_owned(),
        })
        .unwrap_err();
        assert!(errors[0].message.contains("partial_outage"));
    }
}
