//! `kube-sim`: serves a local Kubernetes API on a loopback port until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kube_sim::{ClusterConfig, Config, Server};

/// Every request builds and drops JSON trees; jemalloc serves that pattern far faster than the
/// system allocator (see `make bench`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A local Kubernetes API server for tests and demos where no cluster runs.
#[derive(Debug, Parser)]
#[command(name = "kube-sim", version)]
struct Args {
    /// Write a kubeconfig for the server here.
    #[arg(long, value_name = "FILE")]
    kubeconfig: PathBuf,
    /// The loopback port (0: a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Watch events kept for resuming watches; older resourceVersions answer 410 Gone.
    #[arg(long, default_value_t = 10_000)]
    event_history: usize,
    /// Interval of watch bookmarks, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    bookmark_interval_ms: u64,
    /// Do not preload the CNPG `postgresql.cnpg.io/v1` Cluster CRD.
    #[arg(long)]
    no_cnpg_crd: bool,
    /// Install the Gateway API (`gateway.networking.k8s.io/v1` GatewayClass, Gateway and
    /// HTTPRoute CRDs, written for kube-sim) and the GatewayClass `kube-sim` of its gateway
    /// controller.
    #[arg(long)]
    gateway_api: bool,
    /// The simulated controllers (kubelet, Deployments, Jobs, CNPG, Services, quotas).
    #[command(flatten)]
    controllers: kube_sim::controllers::ControllerArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = Config {
        kubeconfig: Some(args.kubeconfig.clone()),
        port: args.port,
        cluster: ClusterConfig {
            event_history: args.event_history,
            bookmark_interval: Duration::from_millis(args.bookmark_interval_ms.max(1)),
        },
        preload_cnpg: !args.no_cnpg_crd,
        preload_gateway_api: args.gateway_api,
    };
    let server = match Server::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kube-sim: {e}");
            return ExitCode::FAILURE;
        }
    };
    let controllers = match start_controllers(&server, &args.controllers).await {
        Ok(controllers) => controllers,
        Err(e) => {
            eprintln!("kube-sim: {e}");
            server.shutdown().await;
            return ExitCode::FAILURE;
        }
    };
    println!(
        "kube-sim ready at {} (kubeconfig {})",
        server.url(),
        args.kubeconfig.display()
    );
    wait_for_signal().await;
    if let Some(controllers) = controllers {
        controllers.shutdown().await;
    }
    server.shutdown().await;
    ExitCode::SUCCESS
}

/// Starts the simulated controllers unless `--no-controllers`.
async fn start_controllers(
    server: &kube_sim::ServerHandle,
    args: &kube_sim::controllers::ControllerArgs,
) -> Result<Option<kube_sim::controllers::Controllers>, kube_sim::controllers::Error> {
    if args.no_controllers {
        return Ok(None);
    }
    let config = args.to_config(std::sync::Arc::new(kube_sim::controllers::DiscardLogs))?;
    kube_sim::controllers::Controllers::start_for(server, config)
        .await
        .map(Some)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
