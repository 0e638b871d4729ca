//! The command line: parsing, and dispatch to the subcommands.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// The Kumiko operator.
#[derive(Debug, Parser)]
#[command(name = "kumiko-operator", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the KumikoApp CustomResourceDefinition as YAML (what crds/kumikoapp.yaml holds).
    Crd,
    /// Print, offline, every object a KumikoApp produces, as multi-document YAML.
    Render(RenderArgs),
    /// Run the controller: reconcile every KumikoApp in the cluster.
    Run(RunArgs),
}

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Where `/metrics`, `/healthz` and `/readyz` listen.
    #[arg(long, env = "KUMIKO_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: std::net::SocketAddr,

    /// The coordination.k8s.io/v1 Lease the replicas campaign for.
    #[arg(long, env = "KUMIKO_LEASE_NAME", default_value = "kumiko-operator")]
    pub lease_name: String,

    /// The namespace of the Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,

    /// The namespace CloudNativePG's operator runs in: a dedicated database's NetworkPolicy lets it
    /// reach the instances (ports 8000 and 5432).
    #[arg(long, env = "KUMIKO_CNPG_NAMESPACE", default_value = crate::observed::DEFAULT_CNPG_NAMESPACE)]
    pub cnpg_namespace: String,

    /// This replica's identity in the Lease (its pod name); default: host name and process id.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// The most KumikoApps reconciled at once.
    #[arg(long, env = "KUMIKO_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,

    /// Reconcile without campaigning for the Lease (only for a single replica).
    #[arg(long)]
    pub no_leader_election: bool,

    /// Seconds a Lease stays valid without a renewal; a follower takes over after that (whole
    /// seconds).
    #[arg(long, env = "KUMIKO_LEASE_DURATION", default_value = "15", value_parser = seconds)]
    pub lease_duration: Duration,

    /// Seconds the leader may go without renewing before it stops reconciling; shorter than
    /// --lease-duration, so that it has stopped before a follower may take over.
    #[arg(long, env = "KUMIKO_LEASE_RENEW_DEADLINE", default_value = "10", value_parser = seconds)]
    pub lease_renew_deadline: Duration,

    /// Seconds between the leader's renewals and a follower's attempts; shorter than
    /// --lease-renew-deadline.
    #[arg(long, env = "KUMIKO_LEASE_RETRY_PERIOD", default_value = "2", value_parser = seconds)]
    pub lease_retry_period: Duration,
}

/// A duration given in seconds, decimals allowed (`2`, `0.5`).
fn seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds (e.g. 2 or 0.5)"))?;
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("`{text}` is not a number of seconds from 0 up (e.g. 2 or 0.5)"))
}

/// Arguments of `render`.
#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// The KumikoApp manifest (YAML). `-` reads standard input.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,

    /// What the cluster holds, as YAML (see `examples/observed/`). Default: the database is ready
    /// and the app's image is not yet migrated.
    #[arg(long)]
    pub observed: Option<PathBuf>,

    /// Also print the rolled-out state: the Deployments as they are once the migrate Job succeeded.
    #[arg(long)]
    pub rolled_out: bool,
}

/// Runs a parsed command line and returns the process exit code.
pub fn execute(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Crd => print_crd(),
        Command::Render(args) => crate::render::run(&args),
        Command::Run(args) => run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let mut message = format!("error: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(&format!("\n  caused by: {cause}"));
                source = cause.source();
            }
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> Result<(), crate::Error> {
    let identity = args.identity.unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "kumiko-operator".to_owned());
        format!("{host}-{}", std::process::id())
    });
    let settings = crate::controller::run::RunSettings {
        http_addr: args.http_addr,
        lease_name: args.lease_name,
        lease_namespace: args.lease_namespace,
        cnpg_namespace: args.cnpg_namespace,
        identity,
        concurrency: args.concurrency.max(1),
        leader_election: !args.no_leader_election,
        lease_timings: crate::controller::leader::LeaseTimings {
            lease_duration: args.lease_duration,
            renew_deadline: args.lease_renew_deadline,
            retry_period: args.lease_retry_period,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(crate::Error::Runtime)?;
    runtime.block_on(crate::controller::run::run(settings))
}

fn print_crd() -> Result<(), crate::Error> {
    let yaml = kumiko_crds::crd_yaml().map_err(crate::Error::SerializeYaml)?;
    std::io::stdout()
        .write_all(yaml.as_bytes())
        .map_err(crate::Error::Stdout)
}
