//! `hg-coord`: the hybridgrid coordinator.

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use hybridgrid::cli::{self, CommonFlags};

hybridgrid::heap_profiling_allocator!();

#[derive(Parser, Debug)]
#[command(
    name = "hg-coord",
    version = cli::version(),
    about = "hybridgrid coordinator: places compiles on workers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print a shell completion script: `hg-coord completions bash > /etc/bash_completion.d/hg-coord`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Serve gRPC (clients and workers) and HTTP (health, metrics, API, dashboard).
    Serve(Box<Serve>),
}

#[derive(clap::Args, Debug)]
struct Serve {
    #[command(flatten)]
    common: CommonFlags,
    /// gRPC port (default 9000; 0 picks a free port).
    #[arg(long)]
    grpc_port: Option<u16>,
    /// HTTP port (default 8080; 0 picks a free port).
    #[arg(long)]
    http_port: Option<u16>,
    /// Address to bind (default 0.0.0.0).
    #[arg(long)]
    bind: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    hybridgrid::heap::install(heap_profiler());
    let cli = Cli::parse();
    let f = match cli.cmd {
        Cmd::Completions { shell } => {
            cli::print_completions(Cli::command(), shell);
            return ExitCode::SUCCESS;
        }
        Cmd::Serve(f) => f,
    };
    let loader = f
        .common
        .loader()
        .set_opt("coordinator.grpc_port", f.grpc_port)
        .set_opt("coordinator.http_port", f.http_port)
        .set_opt("coordinator.bind_address", f.bind);
    let cfg = cli::load_or_exit(loader, "hg-coord");
    let admin = cli::logging_or_exit(&cfg, "hg-coord");
    let started = hybridgrid::coord::start_with(&cfg, admin).await;
    cli::serve_until_signal("hg-coord", started, "shutting down", async |r| {
        r.shutdown(Duration::from_secs(30)).await
    })
    .await
}
