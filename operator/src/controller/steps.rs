//! Pure judgements of single steps from observed objects: a migrate Job's outcome, a Deployment's
//! availability, and which old Jobs to delete.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use kumiko_crds::ProcessStatus;

use super::status::Check;
use crate::desired::MIGRATION_IMAGE_ANNOTATION;

/// What became of a migrate Job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// Not created yet.
    Absent,
    /// Created, not finished.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Failed for good (backoff limit or deadline reached).
    Failed {
        /// The Job's own reason and message.
        message: String,
    },
}

/// The outcome of the Job named `name` among `jobs`.
pub fn job_outcome(jobs: &[Job], name: &str) -> JobOutcome {
    let Some(job) = jobs
        .iter()
        .find(|job| job.metadata.name.as_deref() == Some(name))
    else {
        return JobOutcome::Absent;
    };
    let Some(status) = &job.status else {
        return JobOutcome::Running;
    };
    let condition = |kind: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|condition| condition.type_ == kind && condition.status == "True")
    };
    if condition("Complete").is_some() || status.succeeded.unwrap_or(0) > 0 {
        return JobOutcome::Succeeded;
    }
    if let Some(failed) = condition("Failed") {
        return JobOutcome::Failed {
            message: format!(
                "{}: {}",
                failed.reason.clone().unwrap_or_else(|| "Failed".to_owned()),
                failed.message.clone().unwrap_or_default()
            ),
        };
    }
    JobOutcome::Running
}

/// The image a Job migrates to (its `kumiko.so/image` annotation).
pub fn job_image(job: &Job) -> Option<&str> {
    job.metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(MIGRATION_IMAGE_ANNOTATION))
        .map(String::as_str)
}

/// How many migrate Jobs are kept.
pub const KEPT_JOBS: usize = 3;

/// The Jobs to delete: all but the newest [`KEPT_JOBS`] (`jobs` oldest first), never `current`.
pub fn jobs_to_delete<'a>(jobs: &'a [Job], current: &str) -> Vec<&'a str> {
    let excess = jobs.len().saturating_sub(KEPT_JOBS);
    jobs.iter()
        .take(excess)
        .filter_map(|job| job.metadata.name.as_deref())
        .filter(|name| *name != current)
        .collect()
}

/// How many pods a process type must have to be available.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wanted {
    /// Exactly this many, all at the current template (the operator sets the replicas).
    Exactly(i32),
    /// At least this many available (an autoscaler's `minReplicas`), every pod at the current
    /// template: an autoscaler scaling up or down is not a rollout.
    AtLeast(i32),
}

/// Whether a Deployment has rolled out `image` with the `wanted` available pods, and its counts.
pub fn availability(
    deployment: Option<&Deployment>,
    image: &str,
    wanted: Wanted,
) -> (Check, Option<ProcessStatus>) {
    let Some(deployment) = deployment else {
        return (
            Check::not_yet("NotCreated", "waiting for the migration before creating it"),
            None,
        );
    };
    let status = deployment.status.clone().unwrap_or_default();
    let counts = ProcessStatus::new(
        status.replicas.unwrap_or(0),
        status.ready_replicas.unwrap_or(0),
        status.updated_replicas.unwrap_or(0),
        status.available_replicas.unwrap_or(0),
    );
    let running_image = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .and_then(|pod| pod.containers.first())
        .and_then(|container| container.image.as_deref());
    let observed_current =
        status.observed_generation.unwrap_or(0) >= deployment.metadata.generation.unwrap_or(0);
    let check = if running_image != Some(image) {
        Check::not_yet(
            "OldImage",
            format!(
                "running {}, waiting to roll out {image}",
                running_image.unwrap_or("nothing")
            ),
        )
    } else if observed_current && wanted.met_by(&counts) {
        Check::done("Available", format!("{} ready", counts.summary))
    } else {
        Check::not_yet(
            "RollingOut",
            format!(
                "{} ready, {} updated of {}",
                counts.summary,
                counts.updated_replicas,
                wanted.replicas()
            ),
        )
    };
    (check, Some(counts))
}

impl Wanted {
    fn met_by(self, counts: &ProcessStatus) -> bool {
        match self {
            Self::Exactly(replicas) => {
                counts.updated_replicas >= replicas
                    && counts.available_replicas >= replicas
                    && counts.replicas == replicas
            }
            Self::AtLeast(replicas) => {
                counts.updated_replicas >= counts.replicas && counts.available_replicas >= replicas
            }
        }
    }

    fn replicas(self) -> i32 {
        match self {
            Self::Exactly(replicas) | Self::AtLeast(replicas) => replicas,
        }
    }
}

/// A Deployment as the API server holds it right after creating it from `desired`: generation 1,
/// no status yet.
pub fn just_created(desired: &Deployment) -> Deployment {
    let mut created = desired.clone();
    created.metadata.generation = Some(1);
    created.status = None;
    created
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};

    fn job(name: &str, condition: Option<&str>) -> Job {
        let mut job = Job::default();
        job.metadata.name = Some(name.to_owned());
        job.status = condition.map(|kind| JobStatus {
            conditions: Some(vec![JobCondition {
                type_: kind.to_owned(),
                status: "True".to_owned(),
                reason: Some("BackoffLimitExceeded".to_owned()),
                ..JobCondition::default()
            }]),
            ..JobStatus::default()
        });
        job
    }

    #[test]
    fn job_outcomes_follow_the_job_conditions() {
        let jobs = [
            job("done", Some("Complete")),
            job("broken", Some("Failed")),
            job("busy", None),
        ];
        assert_eq!(job_outcome(&jobs, "done"), JobOutcome::Succeeded);
        assert!(
            matches!(job_outcome(&jobs, "broken"), JobOutcome::Failed { message } if message.contains("BackoffLimitExceeded"))
        );
        assert_eq!(job_outcome(&jobs, "busy"), JobOutcome::Running);
        assert_eq!(job_outcome(&jobs, "missing"), JobOutcome::Absent);
    }

    #[test]
    fn only_the_newest_three_jobs_are_kept() {
        let jobs: Vec<Job> = (0..5)
            .map(|i| job(&format!("j{i}"), Some("Complete")))
            .collect();
        assert_eq!(jobs_to_delete(&jobs, "j4"), vec!["j0", "j1"]);
        assert_eq!(jobs_to_delete(&jobs[..3], "j2"), Vec::<&str>::new());
        assert_eq!(jobs_to_delete(&jobs, "j0"), vec!["j1"]);
    }

    fn deployment(image: &str, replicas: i32, available: i32) -> Deployment {
        Deployment {
            metadata: kube::api::ObjectMeta {
                generation: Some(2),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            image: Some(image.to_owned()),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(2),
                replicas: Some(replicas),
                ready_replicas: Some(available),
                updated_replicas: Some(available),
                available_replicas: Some(available),
                ..DeploymentStatus::default()
            }),
        }
    }

    #[test]
    fn available_only_at_the_desired_image_with_every_replica() {
        let exactly = Wanted::Exactly(2);
        let (check, counts) = availability(Some(&deployment("app:2", 2, 2)), "app:2", exactly);
        assert_eq!(check.status, "True");
        assert_eq!(counts.unwrap().summary, "2/2");
        assert_eq!(
            availability(Some(&deployment("app:1", 2, 2)), "app:2", exactly)
                .0
                .reason,
            "OldImage"
        );
        assert_eq!(
            availability(Some(&deployment("app:2", 2, 1)), "app:2", exactly)
                .0
                .status,
            "False"
        );
        assert_eq!(availability(None, "app:2", exactly).0.status, "False");
    }

    /// An autoscaler adding or removing pods is not a rollout: the process type stays available
    /// while `minReplicas` pods are, as long as every pod runs the current template.
    #[test]
    fn an_autoscaled_process_is_available_with_its_minimum_at_the_current_template() {
        let at_least = Wanted::AtLeast(2);
        // Scaling up from 2 to 5: 2 available, the new ones starting.
        let mut scaling_up = deployment("app:2", 5, 2);
        if let Some(status) = scaling_up.status.as_mut() {
            status.updated_replicas = Some(5);
        }
        assert_eq!(
            availability(Some(&scaling_up), "app:2", at_least).0.reason,
            "Available"
        );
        // Below the minimum.
        assert_eq!(
            availability(Some(&deployment("app:2", 1, 1)), "app:2", at_least)
                .0
                .status,
            "False"
        );
        // An image rollout: pods of the old template remain.
        let mut rolling = deployment("app:2", 4, 4);
        if let Some(status) = rolling.status.as_mut() {
            status.updated_replicas = Some(2);
        }
        assert_eq!(
            availability(Some(&rolling), "app:2", at_least).0.reason,
            "RollingOut"
        );
    }

    #[test]
    fn a_deployment_created_now_is_judged_as_its_first_observation_will_be() {
        for replicas in [0, 1, 3] {
            let mut desired = deployment("app:2", replicas, 0);
            desired.metadata.generation = None;
            desired.status = None;
            // What the next reconcile reads: the API server's object, not yet seen by the
            // Deployment controller.
            let mut stored = desired.clone();
            stored.metadata.generation = Some(1);
            stored.metadata.uid = Some("uid".to_owned());
            let wanted = Wanted::Exactly(replicas);
            let now = availability(Some(&just_created(&desired)), "app:2", wanted);
            assert_eq!(now, availability(Some(&stored), "app:2", wanted));
            assert_eq!(now.0.reason, "RollingOut", "{replicas} replicas");
        }
    }
}
