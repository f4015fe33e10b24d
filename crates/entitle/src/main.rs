//! `entitle`: the one binary. It runs the server (`serve`, `demo`), drives every
//! admin API resource as a client, and measures itself (`bench`).

mod agent;
mod agent_install;
mod bench;
mod client;
mod demo;
mod oidc_args;
mod serve;
mod tls_args;

use clap::{Parser, Subcommand};

/// Service entitlement control plane: decide which users and devices get
/// Internet & SaaS, Private Applications and Digital Experience Monitoring.
#[derive(Parser)]
#[command(name = "entitle", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(serve::ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate(serve::MigrateArgs),
    /// Run the server with a seeded demo tenant (`acme`) on a fresh SQLite file.
    Demo(demo::DemoArgs),
    /// The agent on this device: run it, or talk to the running one.
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// Many simulated agents in one process, to load a server and measure propagation.
    Fleet(agent::FleetArgs),
    /// Measure evaluate() per decision and sync requests per second.
    Bench(bench::BenchArgs),
    #[command(flatten)]
    Client(client::ClientCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Migrate(args) => serve::migrate(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Agent(command) => agent::run(command).await,
            Command::Fleet(args) => agent::fleet(args).await,
            Command::Client(command) => client::run(command).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
