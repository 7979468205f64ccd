//! The `torrent-actors` binary: the only place that prints a fatal error or picks an exit
//! code. Each failure class has its own code, listed in README.md.

mod cli;
mod info;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

/// A failure with the exit code that tells scripts which kind it was.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

/// Exit codes: 0 is success, 1 an error of no other class, 2 a usage error (clap's).
mod exit {
    /// The torrent file could not be read.
    pub const UNREADABLE: u8 = 3;
    /// The torrent file was read but is not a valid torrent.
    pub const INVALID_TORRENT: u8 = 4;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, error }) => {
            eprintln!("error: {error:#}");
            ExitCode::from(code)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Info { torrent } => info::run(&torrent),
    }
}
