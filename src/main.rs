//! skiff: Kubernetes as one executable.

mod agent;
mod api;
mod cli;
mod controllers;
mod dns;
mod pki;
mod proxy;
mod quantity;
mod scheduler;
mod server;
mod sim;
mod store;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiff: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
