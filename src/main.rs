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
    // glibc gives every thread that allocates its own arena (up to 8 per
    // core), each keeping freed pages: two arenas bound resident memory
    // with no measurable cost to a server that is mostly I/O-bound.
    // SAFETY: mallopt only tunes the allocator; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiff: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
