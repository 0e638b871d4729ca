//! The command line: parsing, and dispatch to the subcommands.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

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

fn print_crd() -> Result<(), crate::Error> {
    let yaml = kumiko_crds::crd_yaml().map_err(crate::Error::SerializeYaml)?;
    std::io::stdout()
        .write_all(yaml.as_bytes())
        .map_err(crate::Error::Stdout)
}
