//! `kumiko-app`, the reference app on the Kumiko runtime: a public status page (components,
//! incidents, an uptime roll-up).
//!
//! Commands (DESIGN §4): `serve` (the API), `worker` (background jobs), `migrate apply` (the
//! pre-deploy step) and `migrate status`. Configuration comes from the environment only.

mod api;
mod migrate;
mod phases;
mod serve;
mod worker;

use clap::{Parser, Subcommand};

/// The Kumiko reference app: a public status page.
#[derive(Debug, Parser)]
#[command(name = "kumiko-app", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the JSON API, the SSE stream and the health endpoints on PORT.
    Serve,
    /// Run background jobs (cron on the leader, queued jobs on any worker).
    Worker,
    /// Schema migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
}

#[derive(Debug, Subcommand)]
enum MigrateAction {
    /// Apply pending migrations (the pre-deploy step).
    Apply,
    /// Show applied, pending, unknown, dirty and mismatched migrations; change nothing.
    Status {
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let env = kumiko_runtime::config::env_from_process();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kumiko: starting the async runtime failed: {error}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Serve => serve::run(env).await,
            Command::Worker => worker::run(env).await,
            Command::Migrate {
                action: MigrateAction::Apply,
            } => migrate::apply(env).await,
            Command::Migrate {
                action: MigrateAction::Status { json },
            } => migrate::status(env, json).await,
        }
    });
    // Exit without waiting for tasks that shutdown already abandoned.
    std::process::exit(code);
}
