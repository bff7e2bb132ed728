//! `hgbuild`: compile through the hybridgrid grid.
//!
//! `hgbuild cc -c x.c`, `hgbuild make -j16`, or invoked through a link named
//! `gcc`/`cc`/`g++`/`c++`/`clang`/`clang++` it acts as that compiler.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use hybridgrid::cli::{self, CommonFlags};
use hybridgrid::hgbuild::{
    self, CacheAction, ENV_NO_FALLBACK, ENV_VERBOSE, MASQUERADE_NAMES, RunOptions,
};
use hybridgrid_core::config::{Config, LoggingConfig};

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

/// Parsed once at start: the size difference of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Cmd {
    /// Compile like cc (gcc): hgbuild cc -c foo.c -o foo.o
    #[command(name = "cc", alias = "gcc")]
    Cc {
        /// Compiler arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Compile like c++ (g++).
    #[command(name = "c++", alias = "g++", alias = "cxx")]
    Cxx {
        /// Compiler arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Run make with every compile going through the grid.
    Make {
        /// make's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Run ninja with every compile going through the grid.
    Ninja {
        /// ninja's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Run cmake (e.g. `cmake --build build`) with every compile going through the grid.
    Cmake {
        /// cmake's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
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

fn env_flag(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0")
}

fn init_logging(cfg: &Config, verbose: bool) {
    // As a compiler hgbuild is quiet: only warnings, unless asked.
    let mut l = LoggingConfig::default();
    l.level = if std::env::var_os("HG_LOG_LEVEL").is_some() {
        cfg.logging.level.clone()
    } else if verbose {
        "info".into()
    } else {
        "warn".into()
    };
    l.format = cfg.logging.format;
    l.file = cfg.logging.file.clone();
    let _ = hybridgrid_core::logging::init(&l);
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let name = std::path::Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if MASQUERADE_NAMES.contains(&name.as_str()) {
        let cfg = cli::load_or_exit(
            hybridgrid_core::config::ConfigLoader::new().process_env(),
            "hgbuild",
        );
        let opts = RunOptions {
            verbose: env_flag(ENV_VERBOSE),
            no_fallback: env_flag(ENV_NO_FALLBACK),
            trace: hybridgrid::trace::requested(None),
            config_file: None,
        };
        init_logging(&cfg, false);
        let args: Vec<OsString> = std::env::args_os().skip(1).collect();
        return exit(hgbuild::compile(&cfg, &name, &args, &opts).await);
    }

    // Launcher form, as ccache takes it: `hgbuild /usr/bin/cc -c x.c`
    // (CMAKE_C_COMPILER_LAUNCHER=hgbuild).
    let argv: Vec<OsString> = std::env::args_os().collect();
    // `hgbuild ccache cc ...`: ccache goes in front, hgbuild in its prefix.
    if let Some(first) = argv.get(1).and_then(|a| a.to_str())
        && hybridgrid::masquerade::is_ccache(first)
    {
        let exe = std::env::current_exe().unwrap_or_else(|_| "hgbuild".into());
        return exit(hybridgrid::masquerade::run_behind_ccache(
            first,
            &argv[2..],
            &exe,
        ));
    }
    if let Some(first) = argv.get(1).map(|a| a.to_string_lossy().into_owned())
        && hgbuild::looks_like_compiler(&first)
    {
        let cfg = cli::load_or_exit(
            hybridgrid_core::config::ConfigLoader::new().process_env(),
            "hgbuild",
        );
        let opts = RunOptions {
            verbose: env_flag(ENV_VERBOSE),
            no_fallback: env_flag(ENV_NO_FALLBACK),
            trace: hybridgrid::trace::requested(None),
            config_file: None,
        };
        init_logging(&cfg, false);
        return exit(hgbuild::compile(&cfg, &first, &argv[2..], &opts).await);
    }

    let cli = Cli::parse();
    if let Cmd::Completions { shell } = cli.cmd {
        cli::print_completions(Cli::command(), shell);
        return ExitCode::SUCCESS;
    }
    let loader = cli
        .common
        .loader()
        .set_opt("client.coordinator", cli.coordinator.clone());
    let config_file = loader.resolved_file();
    let cfg = cli::load_or_exit(loader, "hgbuild");
    let opts = RunOptions {
        verbose: cli.verbose || env_flag(ENV_VERBOSE),
        no_fallback: cli.no_fallback || env_flag(ENV_NO_FALLBACK),
        trace: hybridgrid::trace::requested(cli.trace.clone()),
        config_file,
    };
    init_logging(&cfg, false);
    let code = match cli.cmd {
        Cmd::Cc { args } => {
            let cc = if cfg.client.cc.is_empty() {
                "cc"
            } else {
                cfg.client.cc.as_str()
            };
            hgbuild::compile(&cfg, cc, &args, &opts).await
        }
        Cmd::Cxx { args } => {
            let cxx = if cfg.client.cxx.is_empty() {
                "c++"
            } else {
                cfg.client.cxx.as_str()
            };
            hgbuild::compile(&cfg, cxx, &args, &opts).await
        }
        Cmd::Make { args } => hgbuild::wrap(&cfg, "make", &args, &opts).await,
        Cmd::Ninja { args } => hgbuild::wrap(&cfg, "ninja", &args, &opts).await,
        Cmd::Cmake { args } => hgbuild::wrap(&cfg, "cmake", &args, &opts).await,
        Cmd::Status => hgbuild::status(&cfg).await,
        Cmd::Completions { .. } => 0,
        Cmd::Stats => hgbuild::stats(&cfg).await,
        Cmd::Cache { action } => hgbuild::cache_command(
            &cfg,
            match action {
                CacheCmd::Stats => CacheAction::Stats,
                CacheCmd::Clear => CacheAction::Clear,
                CacheCmd::Evict { max_size } => CacheAction::Evict {
                    max_size_gb: max_size,
                },
            },
        ),
    };
    exit(code)
}
