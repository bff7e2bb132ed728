//! `hgbuild`: compile through the hybridgrid grid.
//!
//! `hgbuild cc -c x.c`, `hgbuild make -j16`, or invoked through a link named
//! `gcc`/`cc`/`g++`/`c++`/`clang`/`clang++` it acts as that compiler.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use hybridgrid::cli::{self, CommonFlags};
use hybridgrid_client::hgbuild::{self, CacheAction, Invocation};
use hybridgrid_client::{Client, RunOptions};
use hybridgrid_core::config::ConfigLoader;

#[derive(Parser, Debug)]
#[command(
    name = "hgbuild",
    version = cli::version(),
    about = "Compile C/C++ on the hybridgrid grid",
    after_help = "Examples:\n  hgbuild make -j32\n  hgbuild --trace build.json make -j32\n  hgbuild cc -c foo.c -o foo.o\n  CC=\"hgbuild cc\" ./configure\n  hgbuild status"
)]
struct Cli {
    /// The coordinator (HOST:PORT); also HG_COORDINATOR.
    #[arg(long)]
    coordinator: Option<String>,
    /// Fail instead of compiling locally when the grid cannot compile a file.
    #[arg(long)]
    no_fallback: bool,
    /// Print where each file was compiled.
    #[arg(short, long)]
    verbose: bool,
    /// Write a Chrome/Perfetto trace (JSON) of the build to FILE: one slice
    /// per compile, where it ran and how long it queued and compiled; also
    /// HG_TRACE.
    #[arg(long, value_name = "FILE")]
    trace: Option<std::path::PathBuf>,
    #[command(flatten)]
    common: CommonFlags,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Compile like cc (gcc): hgbuild cc -c foo.c -o foo.o
    #[command(name = "cc", alias = "gcc")]
    Cc(Passed),
    /// Compile like c++ (g++).
    #[command(name = "c++", alias = "g++", alias = "cxx")]
    Cxx(Passed),
    /// Run make with every compile going through the grid.
    Make(Passed),
    /// Run ninja with every compile going through the grid.
    Ninja(Passed),
    /// Run cmake (e.g. `cmake --build build`) with every compile going through the grid.
    Cmake(Passed),
    /// Show the grid's workers.
    Status,
    /// Print a shell completion script: `hgbuild completions bash > /etc/bash_completion.d/hgbuild`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Show local cache and coordinator statistics.
    Stats,
    /// Manage the local cache.
    Cache {
        #[command(subcommand)]
        action: CacheCmd,
    },
}

/// What a command passes on to the compiler or build tool.
#[derive(clap::Args, Debug)]
struct Passed {
    /// Its arguments, passed on as they are.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

#[derive(Subcommand, Debug)]
enum CacheCmd {
    /// Print cache statistics.
    Stats,
    /// Remove every cached entry.
    Clear,
    /// Evict least recently used entries until the cache is at most --max-size GB.
    Evict {
        /// Size in GB (10^9 bytes).
        #[arg(long, value_name = "GB")]
        max_size: f64,
    },
}

/// `hgbuild cc ARGS` / `hgbuild c++ ARGS`: the configured compiler.
async fn compile_as(client: &Client, cxx: bool, p: &Passed) -> i32 {
    let compiler = hgbuild::configured_compiler(client.config(), cxx);
    hgbuild::compile(client, compiler, &p.args).await
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    match Invocation::of(&argv) {
        Invocation::Compiler { compiler, args } => {
            let cfg = cli::load_or_exit(ConfigLoader::new().process_env(), "hgbuild");
            hgbuild::init_logging(&cfg);
            let mut opts = RunOptions::from_env();
            opts.replace_process = true;
            let client = Client::new(cfg).with_options(opts);
            return exit(hgbuild::compile(&client, &compiler, &args).await);
        }
        Invocation::Ccache { ccache, args } => return exit(hgbuild::run_ccache(&ccache, &args)),
        Invocation::Command => {}
    }

    let cli = Cli::parse();
    if let Cmd::Completions { shell } = cli.cmd {
        cli::print_completions(Cli::command(), shell);
        return ExitCode::SUCCESS;
    }
    let loader = cli
        .common
        .loader()
        .set_opt("client.coordinator", cli.coordinator);
    let mut opts = RunOptions::from_env();
    opts.config_file = loader.resolved_file();
    opts.verbose |= cli.verbose;
    opts.no_fallback |= cli.no_fallback;
    // `hgbuild cc ...` is one compiler command (a wrapped build execs none).
    opts.replace_process = true;
    if cli.trace.is_some() {
        opts.trace = cli.trace;
    }
    let cfg = cli::load_or_exit(loader, "hgbuild");
    hgbuild::init_logging(&cfg);
    let client = Client::new(cfg).with_options(opts);
    let cfg = client.config();
    exit(match cli.cmd {
        Cmd::Cc(p) => compile_as(&client, false, &p).await,
        Cmd::Cxx(p) => compile_as(&client, true, &p).await,
        Cmd::Make(p) => client.run_build("make", &p.args).await,
        Cmd::Ninja(p) => client.run_build("ninja", &p.args).await,
        Cmd::Cmake(p) => client.run_build("cmake", &p.args).await,
        Cmd::Status => hgbuild::status(cfg).await,
        Cmd::Completions { .. } => 0,
        Cmd::Stats => hgbuild::stats(cfg).await,
        Cmd::Cache { action } => hgbuild::cache_command(
            cfg,
            match action {
                CacheCmd::Stats => CacheAction::Stats,
                CacheCmd::Clear => CacheAction::Clear,
                CacheCmd::Evict { max_size } => CacheAction::Evict {
                    max_size_gb: max_size,
                },
            },
        ),
    })
}
