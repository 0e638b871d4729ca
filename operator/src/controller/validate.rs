//! Validate: what the CRD schema cannot reject, decided from the app and its namespace's other apps.
//!
//! Pure: the caller passes what it observed. A problem found here is permanent: the app stalls
//! (`Stalled=True`) until its spec or its namespace changes.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::ResourceRequirements;
use kumiko_crds::{KumikoApp, KumikoAppSpec, duration::parse_duration};

use crate::quantity::parse_quantity;

/// Why an app cannot be reconciled, as a condition reason and a message naming the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// The condition reason (`DuplicateApp`, `InvalidSpec`).
    pub reason: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// The reason of a second KumikoApp in a namespace.
pub const DUPLICATE_APP: &str = "DuplicateApp";
/// The reason of a spec the operator cannot act on.
pub const INVALID_SPEC: &str = "InvalidSpec";

/// Checks `app` against the other KumikoApps of its namespace (`neighbours` may include `app`
/// itself; it is skipped) and the rules the schema cannot express.
pub fn validate(app: &KumikoApp, neighbours: &[&KumikoApp]) -> Result<(), Invalid> {
    if let Some(first) = first_app_of_namespace(app, neighbours) {
        let namespace = app.metadata.namespace.as_deref().unwrap_or("default");
        return Err(Invalid {
            reason: DUPLICATE_APP,
            message: format!(
                "namespace {namespace} already holds KumikoApp {first}; only one KumikoApp per \
                 namespace is reconciled: delete this one or move it to its own namespace"
            ),
        });
    }
    let mut problems = Vec::new();
    if app.spec.database.mode().is_none() {
        problems
            .push("spec.database: set exactly one of `cluster`, `shared` or `external`".to_owned());
    }
    let lifecycle = &app.spec.lifecycle;
    for (field, value) in [
        ("spec.lifecycle.startupTimeout", &lifecycle.startup_timeout),
        (
            "spec.lifecycle.shutdownTimeout",
            &lifecycle.shutdown_timeout,
        ),
        ("spec.lifecycle.linger", &lifecycle.linger),
        ("spec.lifecycle.drainTimeout", &lifecycle.drain_timeout),
    ] {
        if let Err(error) = parse_duration(value) {
            problems.push(format!("{field}: {error}"));
        }
    }
    problems.extend(duplicate_keys(&app.spec));
    problems.extend(requests_above_limits(&app.spec));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Invalid {
            reason: INVALID_SPEC,
            message: problems.join("; "),
        })
    }
}

/// Repeated keys of the lists the operator copies into every pod template. The CRD declares them
/// list-maps and the API server refuses a duplicate, but an app stored under an older CRD keeps
/// one (validation ratcheting), and server-side apply of its Deployments would fail on it.
fn duplicate_keys(spec: &KumikoAppSpec) -> Vec<String> {
    let mut problems = Vec::new();
    let mut check = |field: &str, keys: Vec<String>, what: &str| {
        let mut seen = BTreeSet::new();
        for (index, key) in keys.into_iter().enumerate() {
            if !seen.insert(key.clone()) {
                problems.push(format!(
                    "{field}[{index}]: {key} appears twice: {what}; remove or rename the repeat"
                ));
            }
        }
    };
    check(
        "spec.env",
        spec.env
            .iter()
            .map(|e| format!("name {:?}", e.name))
            .collect(),
        "env is keyed by name",
    );
    check(
        "spec.imagePullSecrets",
        spec.image_pull_secrets
            .iter()
            .map(|s| format!("name {:?}", s.name))
            .collect(),
        "imagePullSecrets is keyed by name",
    );
    let spread = [
        ("spec.api", Some(&spec.api.scheduling)),
        ("spec.worker", spec.worker.as_ref().map(|w| &w.scheduling)),
    ];
    for (process, scheduling) in spread {
        let Some(scheduling) = scheduling else {
            continue;
        };
        check(
            &format!("{process}.scheduling.topologySpreadConstraints"),
            scheduling
                .topology_spread_constraints
                .iter()
                .map(|c| {
                    format!(
                        "topologyKey {:?} with whenUnsatisfiable {:?}",
                        c.topology_key, c.when_unsatisfiable
                    )
                })
                .collect(),
            "topologySpreadConstraints is keyed by topologyKey and whenUnsatisfiable",
        );
    }
    problems
}

/// Requests above their limits, which kube-apiserver refuses in every pod template and CNPG's
/// webhook in the Cluster (the CRD refuses them too; see [`duplicate_keys`] for why this repeats it).
fn requests_above_limits(spec: &KumikoAppSpec) -> Vec<String> {
    let resources: [(&str, Option<&ResourceRequirements>); 4] = [
        ("spec.api.resources", spec.api.resources.as_ref()),
        (
            "spec.worker.resources",
            spec.worker.as_ref().and_then(|w| w.resources.as_ref()),
        ),
        ("spec.migrate.resources", spec.migrate.resources.as_ref()),
        (
            "spec.database.cluster.resources",
            spec.database
                .cluster
                .as_ref()
                .and_then(|c| c.resources.as_ref()),
        ),
    ];
    let mut problems = Vec::new();
    for (field, resources) in resources {
        let Some(resources) = resources else { continue };
        let (Some(requests), Some(limits)) = (&resources.requests, &resources.limits) else {
            continue;
        };
        for (name, request) in requests {
            let Some(limit) = limits.get(name) else {
                continue;
            };
            if let (Some(r), Some(l)) = (parse_quantity(&request.0), parse_quantity(&limit.0))
                && r > l
            {
                problems.push(format!(
                    "{field}.requests.{name}: {} is above {field}.limits.{name} ({}): lower the request or raise the limit",
                    request.0, limit.0
                ));
            }
        }
    }
    problems
}

/// The app that owns the namespace when it is not `app`: the oldest other app (by creation time,
/// then name) that is not being deleted.
fn first_app_of_namespace(app: &KumikoApp, neighbours: &[&KumikoApp]) -> Option<String> {
    let key = |candidate: &KumikoApp| {
        (
            candidate
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|time| time.0),
            candidate.metadata.name.clone().unwrap_or_default(),
        )
    };
    let own_key = key(app);
    neighbours
        .iter()
        .filter(|other| {
            other.metadata.namespace == app.metadata.namespace
                && other.metadata.name != app.metadata.name
                && other.metadata.deletion_timestamp.is_none()
        })
        .map(|other| key(other))
        .filter(|other_key| match (&other_key.0, &own_key.0) {
            // An object without a timestamp has not been persisted: it never owns the namespace.
            (None, _) => false,
            (Some(_), None) => true,
            (Some(_), Some(_)) => *other_key < own_key,
        })
        .min()
        .map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn app(name: &str, created_second: i64) -> KumikoApp {
        let mut app: KumikoApp = serde_json::from_value(serde_json::json!({
            "apiVersion": "kumiko.so/v1alpha1",
            "kind": "KumikoApp",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {
                "image": "ghcr.io/kumiko/app:1",
                "api": {"replicas": 1},
                "database": {"cluster": {"instances": 1, "storage": {"size": "1Gi"}}}
            }
        }))
        .unwrap();
        app.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + created_second).unwrap(),
        ));
        app
    }

    #[test]
    fn a_lone_app_is_valid() {
        let first = app("first", 0);
        assert_eq!(validate(&first, &[&first]), Ok(()));
    }

    #[test]
    fn second_app_in_namespace_stalls_naming_the_first() {
        let first = app("first", 0);
        let second = app("second", 10);
        let invalid = validate(&second, &[&first, &second]).unwrap_err();
        assert_eq!(invalid.reason, DUPLICATE_APP);
        assert!(
            invalid.message.contains("KumikoApp first"),
            "{}",
            invalid.message
        );
        assert_eq!(validate(&first, &[&first, &second]), Ok(()));
    }

    #[test]
    fn apps_created_in_the_same_second_are_ordered_by_name() {
        let alpha = app("alpha", 0);
        let beta = app("beta", 0);
        assert!(validate(&beta, &[&alpha, &beta]).is_err());
        assert!(validate(&alpha, &[&alpha, &beta]).is_ok());
    }

    #[test]
    fn an_app_being_deleted_frees_the_namespace() {
        let mut first = app("first", 0);
        first.metadata.deletion_timestamp = first.metadata.creation_timestamp.clone();
        let second = app("second", 10);
        assert_eq!(validate(&second, &[&first, &second]), Ok(()));
    }

    #[test]
    fn apps_in_other_namespaces_do_not_count() {
        let mut other = app("other", 0);
        other.metadata.namespace = Some("elsewhere".to_owned());
        let second = app("second", 10);
        assert_eq!(validate(&second, &[&other, &second]), Ok(()));
    }

    /// An app stored before the CRD declared these lists (validation ratcheting keeps it) stalls
    /// naming the repeated key, instead of failing every Deployment apply.
    #[test]
    fn repeated_list_keys_stall_naming_the_field() {
        let mut broken = app("first", 0);
        broken.spec.env = serde_json::from_value(serde_json::json!([
            {"name": "A", "value": "1"}, {"name": "B"}, {"name": "A", "value": "2"}
        ]))
        .unwrap();
        broken.spec.image_pull_secrets =
            serde_json::from_value(serde_json::json!([{"name": "ghcr"}, {"name": "ghcr"}]))
                .unwrap();
        broken.spec.api.scheduling.topology_spread_constraints =
            serde_json::from_value(serde_json::json!([
                {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"},
                {"maxSkew": 2, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}
            ]))
            .unwrap();
        let invalid = validate(&broken, &[]).unwrap_err();
        assert_eq!(invalid.reason, INVALID_SPEC);
        for needle in [
            "spec.env[2]: name \"A\" appears twice",
            "spec.imagePullSecrets[1]: name \"ghcr\" appears twice",
            "spec.api.scheduling.topologySpreadConstraints[1]: topologyKey \"zone\"",
        ] {
            assert!(
                invalid.message.contains(needle),
                "{needle}: {}",
                invalid.message
            );
        }
    }

    #[test]
    fn a_request_above_its_limit_stalls_naming_the_field() {
        let mut broken = app("first", 0);
        broken.spec.migrate.resources = serde_json::from_value(serde_json::json!({
            "requests": {"memory": "1Gi"}, "limits": {"memory": "512Mi"}
        }))
        .unwrap();
        let invalid = validate(&broken, &[]).unwrap_err();
        assert_eq!(
            invalid.message,
            "spec.migrate.resources.requests.memory: 1Gi is above spec.migrate.resources.limits.memory (512Mi): lower the request or raise the limit"
        );
        broken.spec.migrate.resources = serde_json::from_value(serde_json::json!({
            "requests": {"memory": "512Mi"}, "limits": {"memory": "0.5Gi"}
        }))
        .unwrap();
        assert_eq!(validate(&broken, &[]), Ok(()));
    }

    #[test]
    fn unparsable_durations_name_the_field() {
        let mut broken = app("first", 0);
        broken.spec.lifecycle.linger = "soon".to_owned();
        let invalid = validate(&broken, &[]).unwrap_err();
        assert_eq!(invalid.reason, INVALID_SPEC);
        assert!(
            invalid.message.contains("spec.lifecycle.linger"),
            "{}",
            invalid.message
        );
    }
}
