//! `kumiko-operator`: the controller (`run`), the CRD (`crd`), and an offline preview of every
//! object a KumikoApp produces (`render`).

use std::process::ExitCode;

use clap::Parser;

use kumiko_operator::cli::{Cli, execute};

fn main() -> ExitCode {
    execute(Cli::parse())
}
