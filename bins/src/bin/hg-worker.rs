//! `hg-worker`: the hybridgrid worker.

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use hybridgrid::cli::{self, CommonFlags};

hybridgrid::heap_profiling_allocator!();

#[derive(Parser, Debug)]
#[command(
    name = "hg-worker",
    version = cli::version(),
    about = "hybridgrid worker: compiles for the grid"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print a shell completion script: `hg-worker completions bash > /etc/bash_completion.d/hg-worker`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Serve compiles and register with the coordinator.
    Serve(Box<Serve>),
}

#[derive(clap::Args, Debug)]
struct Serve {
    #[command(flatten)]
    common: CommonFlags,
    /// The coordinator to register with (HOST:PORT); else found by mDNS.
    #[arg(long)]
    coordinator: Option<String>,
    /// gRPC port (default 50052; 0 picks a free port).
    #[arg(long)]
    grpc_port: Option<u16>,
    /// HTTP port (default 9090; 0 picks a free port).
    #[arg(long)]
    http_port: Option<u16>,
    /// Compiles run at once (default 4).
    #[arg(long)]
    max_tasks: Option<u32>,
    /// The HOST:PORT the coordinator dials back (NAT, containers).
    #[arg(long)]
    advertise_address: Option<String>,
    /// The worker's id (default: the host name).
    #[arg(long)]
    id: Option<String>,
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
        .set_opt("worker.coordinator", f.coordinator)
        .set_opt("worker.grpc_port", f.grpc_port)
        .set_opt("worker.http_port", f.http_port)
        .set_opt("worker.max_concurrent_tasks", f.max_tasks)
        .set_opt("worker.advertise_address", f.advertise_address)
        .set_opt("worker.id", f.id)
        .set_opt("worker.bind_address", f.bind);
    let cfg = cli::load_or_exit(loader, "hg-worker");
    let admin = cli::logging_or_exit(&cfg, "hg-worker");
    let started = hybridgrid::worker::start_with(&cfg, admin).await;
    let grace = cfg.worker.task_timeout.min(Duration::from_secs(60));
    let stopping = "shutting down: finishing running compiles";
    cli::serve_until_signal("hg-worker", started, stopping, async |r| {
        r.shutdown(grace).await
    })
    .await
}
