//! The pod template every process type shares: the operator/app contract of DESIGN §4.
//!
//! Environment, commands, probes on `/health/ready` and `/health` plus a startup probe, a grace
//! period longer than the shutdown timeout, and restricted Pod Security.

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec, Probe, ResourceRequirements,
    SeccompProfile, SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kumiko_contract::duration::format_duration;
use kumiko_contract::{LIVENESS_PATH, READINESS_PATH, env, migrations_mode};

use super::Context;
use crate::validate::Database;

/// The pod-template annotation holding a checksum of the database credentials: a rotation changes
/// it, and so rolls the pods.
pub const CREDENTIALS_CHECKSUM_ANNOTATION: &str = "kumiko.so/credentials-checksum";

/// The numeric user and group every Kumiko container runs as (the images' non-root user).
pub const RUN_AS_USER: i64 = 65532;

/// The name of the container port (and the probes' target).
pub const HTTP_PORT_NAME: &str = "http";

/// How often the startup probe asks while the process boots.
const STARTUP_PROBE_PERIOD_SECONDS: i32 = 2;

/// Which process a container runs; decides its arguments, environment and database role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Process {
    Api,
    Worker,
    Migrate,
}

impl Process {
    /// The contract's process type.
    fn contract(self) -> kumiko_contract::Process {
        match self {
            Self::Api => kumiko_contract::Process::Api,
            Self::Worker => kumiko_contract::Process::Worker,
            Self::Migrate => kumiko_contract::Process::Migrate,
        }
    }

    /// `KUMIKO_PROCESS`, and the component label.
    pub(super) fn name(self) -> &'static str {
        self.contract().name()
    }

    fn default_args(self) -> Vec<String> {
        self.contract()
            .args()
            .iter()
            .map(|arg| (*arg).to_owned())
            .collect()
    }
}

/// The environment of a process: the spec's variables, then the contract's.
pub(super) fn environment(context: &Context<'_>, process: Process) -> Vec<EnvVar> {
    let spec = context.app.spec;
    let lifecycle = &context.app.lifecycle;
    let mut vars = spec.env.clone();
    let plain = |name: &str, value: String| EnvVar {
        name: name.to_owned(),
        value: Some(value),
        value_from: None,
    };
    let from_secret = |name: &str, secret: &str, key: &str| EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    };
    vars.push(plain(env::PORT, spec.api.port.to_string()));
    vars.push(plain(env::PROCESS, process.name().to_owned()));
    vars.push(EnvVar {
        name: env::INSTANCE_ID.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".to_owned(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        }),
    });
    for (name, value) in [
        (env::STARTUP_TIMEOUT, lifecycle.startup_timeout),
        (env::SHUTDOWN_TIMEOUT, lifecycle.shutdown_timeout),
        (env::LINGER, lifecycle.linger),
        (env::DRAIN_TIMEOUT, lifecycle.drain_timeout),
    ] {
        vars.push(plain(name, format_duration(value)));
    }
    // Serving processes refuse to boot on pending migrations; the migrate Job applies them.
    if process != Process::Migrate {
        vars.push(plain(
            env::MIGRATIONS_MODE,
            migrations_mode::EXIT.to_owned(),
        ));
    }
    match &context.app.database {
        Database::External { spec: external } => {
            vars.push(from_secret(
                env::DATABASE_URL,
                &external.uri_secret.name,
                &external.uri_secret.key,
            ));
        }
        Database::Cluster { .. } | Database::Shared { .. } => {
            let secret = match process {
                Process::Migrate => &context.names().owner_secret,
                Process::Api | Process::Worker => &context.names().runtime_secret,
            };
            vars.push(from_secret(env::DATABASE_URL, secret, "uri"));
        }
    }
    if let Some(redis) = &spec.redis {
        vars.push(from_secret(
            env::REDIS_URL,
            &redis.url_secret.name,
            &redis.url_secret.key,
        ));
    }
    vars
}

fn http_probe(path: &str, period: i32, failures: i32, timeout: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(HTTP_PORT_NAME.to_owned()),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(timeout),
        success_threshold: Some(1),
        ..Probe::default()
    }
}

/// A container running `process` of the app's image (`image`).
pub(super) fn container(
    context: &Context<'_>,
    process: Process,
    image: &str,
    command: Option<&Vec<String>>,
    args: Option<&Vec<String>>,
    resources: &ResourceRequirements,
) -> Container {
    let spec = context.app.spec;
    let serves_health = process != Process::Migrate;
    let startup_seconds =
        i32::try_from(context.app.lifecycle.startup_seconds()).unwrap_or(i32::MAX);
    let startup_failures = (startup_seconds.saturating_add(STARTUP_PROBE_PERIOD_SECONDS - 1)
        / STARTUP_PROBE_PERIOD_SECONDS)
        .max(1)
        + 1;
    Container {
        name: process.name().to_owned(),
        image: Some(image.to_owned()),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_owned()),
        command: command.cloned(),
        args: Some(args.cloned().unwrap_or_else(|| process.default_args())),
        env: Some(environment(context, process)),
        env_from: (!spec.env_from.is_empty()).then(|| spec.env_from.clone()),
        ports: serves_health.then(|| {
            vec![ContainerPort {
                name: Some(HTTP_PORT_NAME.to_owned()),
                container_port: spec.api.port,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            }]
        }),
        resources: Some(resources.clone()),
        // Startup covers the whole boot (KUMIKO_STARTUP_TIMEOUT) before liveness takes over.
        startup_probe: serves_health.then(|| {
            http_probe(
                READINESS_PATH,
                STARTUP_PROBE_PERIOD_SECONDS,
                startup_failures,
                1,
            )
        }),
        readiness_probe: serves_health.then(|| http_probe(READINESS_PATH, 2, 2, 1)),
        liveness_probe: serves_health.then(|| http_probe(LIVENESS_PATH, 10, 3, 2)),
        security_context: Some(container_security_context()),
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".to_owned(),
            mount_path: "/tmp".to_owned(),
            ..VolumeMount::default()
        }]),
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    }
}

/// Restricted Pod Security for a container.
pub(super) fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_USER),
        run_as_group: Some(RUN_AS_USER),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

/// The pod spec around one container: restricted Pod Security, no API token, `/tmp` writable.
pub(super) fn pod_spec(context: &Context<'_>, container: Container, restart: &str) -> PodSpec {
    let spec = context.app.spec;
    PodSpec {
        containers: vec![container],
        service_account_name: Some(context.names().service_account.clone()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        restart_policy: Some(restart.to_owned()),
        termination_grace_period_seconds: Some(context.app.lifecycle.grace_period_seconds()),
        image_pull_secrets: (!spec.image_pull_secrets.is_empty())
            .then(|| spec.image_pull_secrets.clone()),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            run_as_group: Some(RUN_AS_USER),
            fs_group: Some(RUN_AS_USER),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        }),
        volumes: Some(vec![Volume {
            name: "tmp".to_owned(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("64Mi".to_owned())),
                medium: None,
            }),
            ..Volume::default()
        }]),
        ..PodSpec::default()
    }
}
