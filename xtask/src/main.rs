//! Project automation for Wflo: `cargo xtask <command>`.
//!
//! * `services up|down|status [SERVICE...] [--install]` — PostgreSQL, Redis, the Docker engine,
//!   the Temporal dev server and a Kafka-API broker, all on loopback; the optional `litellm`
//!   (LiteLLM's proxy with mock models) when named.
//! * `db setup` — role, databases and migrations.
//! * `itest [CRATE...]` — the service-backed integration suites.
//! * `ci` — everything CI checks, in order.
//! * `bench [CRATE...]` — criterion benches, printed beside their same-run baselines.

mod bench;
mod browser;
mod db;
mod itest;
mod kafka_probe;
mod litellm;
mod sandbox_image;
mod services;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "cargo xtask", about = "Wflo project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start, stop or inspect the services the integration suites need.
    Services {
        #[command(subcommand)]
        action: ServicesAction,
    },
    /// Databases: create the role and databases, run migrations.
    Db {
        #[command(subcommand)]
        action: DbAction,
    },
    /// Run the integration suites of the given crates (all crates with an `integration`
    /// feature when none is named), after starting what they need.
    Itest {
        /// Crates to test, e.g. `wflo-db`.
        crates: Vec<String>,
        /// Install missing packages (apt, pip) before starting services.
        #[arg(long)]
        install: bool,
        /// Extra arguments passed to the test binaries (after `--`).
        #[arg(last = true)]
        test_args: Vec<String>,
    },
    /// fmt, clippy, unit tests, then every integration suite.
    Ci {
        /// Install missing packages (apt, pip) before starting services.
        #[arg(long)]
        install: bool,
    },
    /// Run criterion benches and print each figure beside its same-run baseline.
    Bench {
        /// Crates (or short names such as `db`, `sandbox`) to bench; all when empty.
        crates: Vec<String>,
    },
    /// Build the sandbox image offline (debootstrap + docker import) when no registry answers.
    SandboxImage {
        /// Image tag to build.
        #[arg(long, default_value = sandbox_image::DEFAULT_TAG)]
        tag: String,
        /// Rebuild even when the image exists.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ServicesAction {
    /// Start services (all when none is named) and wait until each answers a real request.
    Up {
        services: Vec<String>,
        /// Install missing packages (apt, pip) first.
        #[arg(long)]
        install: bool,
    },
    /// Stop services started by `up`.
    Down { services: Vec<String> },
    /// One line per service: its version, or what is wrong.
    Status { services: Vec<String> },
}

#[derive(Subcommand, Debug)]
enum DbAction {
    /// Role `wflo_user`, databases `wflo` and `wflo_test`, migrations on both.
    Setup {
        /// Install missing packages first.
        #[arg(long)]
        install: bool,
    },
}

fn main() -> std::process::ExitCode {
    match dispatch(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Services { action } => match action {
            ServicesAction::Up { services, install } => {
                services::up(&services::select(&services)?, install)
            }
            ServicesAction::Down { services } => services::down(&services::select(&services)?),
            ServicesAction::Status { services } => services::status(&services::select(&services)?),
        },
        Command::Db { action } => match action {
            DbAction::Setup { install } => {
                services::up(&[services::Service::Postgres], install)?;
                db::setup()
            }
        },
        Command::Itest {
            crates,
            install,
            test_args,
        } => itest::run(&crates, install, &test_args),
        Command::Ci { install } => itest::ci(install),
        Command::Bench { crates } => bench::run(&crates),
        Command::SandboxImage { tag, force } => sandbox_image::build(&tag, force),
    }
}
