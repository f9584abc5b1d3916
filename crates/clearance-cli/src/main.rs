use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    clearance_cli::run(clearance_cli::Cli::parse())
}
