//! `weir`: the agent and its tools.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "weir",
    version,
    about = "Kubernetes networking with a userspace dataplane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the in-memory demo: a node with three pods, scripted frames through the real
    /// pipeline, expected versus seen. Exits non-zero if any frame misbehaves.
    Demo,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Demo => match weir_control::demo::run() {
            Ok((report, ok)) => {
                print!("{report}");
                if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("weir demo: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
