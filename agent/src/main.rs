//! `nodemesh`: the node agent and the operator CLI.

use clap::Parser as _;
use nodemesh_agent::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    nodemesh_agent::logging::init(&cli.log);
    nodemesh_proxy::tls::install_default_provider();
    let result = match cli.command {
        Command::Agent(args) => nodemesh_agent::app::run(args),
        Command::Check(args) => nodemesh_agent::check::run(&args),
        Command::Ca(nodemesh_agent::cli::CaCommand::Init(args)) => nodemesh_agent::ca::init(&args),
        Command::Ca(nodemesh_agent::cli::CaCommand::Rotate(args)) => {
            nodemesh_agent::ca::rotate(&args)
        }
        Command::Install(args) => nodemesh_agent::install::install(&args),
        Command::Uninstall(args) => nodemesh_agent::install::uninstall(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::from(nodemesh_agent::cli::EXIT_FAILURE)
        }
    }
}
