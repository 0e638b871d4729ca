//! The pre-deploy migrate Job: `<app>-migrate-<hash of image + command + env>`, run once.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kumiko_crds::KumikoApp;
use sha2::{Digest, Sha256};

use super::Context;
use super::pod::{self, Process};

/// The Job annotation naming the image it migrates to.
pub const MIGRATION_IMAGE_ANNOTATION: &str = "kumiko.so/image";

/// The KumikoApp annotation whose change starts a new attempt after a failed migration.
pub const RETRY_MIGRATION_ANNOTATION: &str = "kumiko.so/retry-migration";

/// The hash that names a migrate Job: the image, the migrate command and arguments, the shared
/// environment, and the retry annotation. Same inputs, same Job: a migration runs once.
pub fn migration_hash(app: &KumikoApp) -> String {
    let spec = &app.spec;
    let retry = app
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(RETRY_MIGRATION_ANNOTATION));
    let inputs = serde_json::json!({
        "image": spec.image,
        "command": spec.migrate.command,
        "args": spec.migrate.args,
        "env": spec.env,
        "envFrom": spec.env_from,
        "retry": retry,
    });
    let digest = Sha256::digest(inputs.to_string().as_bytes());
    hex::encode(digest)[..10].to_owned()
}

/// The migrate Job for the spec's image: `restartPolicy: Never`, the spec's backoff limit and
/// deadline, no TTL (the controller keeps the last three and reads their outcome).
pub(super) fn migrate_job(context: &Context<'_>) -> Job {
    let spec = context.app.spec;
    let name = context.names().migrate_job.clone();
    let container = pod::container(
        context,
        Process::Migrate,
        &spec.image,
        spec.migrate.command.as_ref(),
        spec.migrate.args.as_ref(),
        &context.app.resources.migrate.requirements,
    );
    let mut metadata = context.metadata(name, Process::Migrate.name());
    metadata.annotations = Some(BTreeMap::from([(
        MIGRATION_IMAGE_ANNOTATION.to_owned(),
        spec.image.clone(),
    )]));
    Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(spec.migrate.backoff_limit),
            active_deadline_seconds: Some(spec.migrate.active_deadline_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(context.labels(Process::Migrate.name())),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod::pod_spec(context, container, "Never")),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}
