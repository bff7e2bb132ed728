//! Flags shared by the three programs, and process plumbing (signals).

use std::path::PathBuf;

use clap::Args;
use hybridgrid_core::config::{Config, ConfigLoader};

/// The cargo features this build was compiled with, as `--version` lists
/// them.
pub fn enabled_features() -> Vec<&'static str> {
    let mut f = Vec::new();
    if cfg!(feature = "mdns") {
        f.push("mdns");
    }
    if cfg!(feature = "heap-profile") {
        f.push("heap-profile");
    }
    if cfg!(feature = "docker") {
        f.push("docker");
    }
    f
}

/// `VERSION (features: a, b)`, for every program's `--version`.
pub fn version() -> &'static str {
    static V: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        let f = enabled_features();
        format!(
            "{} (features: {})",
            env!("CARGO_PKG_VERSION"),
            if f.is_empty() {
                "none".to_owned()
            } else {
                f.join(", ")
            }
        )
    })
}

/// Prints `cmd`'s completion script for `shell` to stdout.
pub fn print_completions(mut cmd: clap::Command, shell: clap_complete::Shell) {
    let name = cmd.get_name().to_owned();
    clap_complete::generate(shell, &mut cmd, name, &mut std::io::stdout());
}

/// Flags every program accepts.
#[derive(Args, Debug, Clone, Default)]
pub struct CommonFlags {
    /// Read configuration from FILE instead of searching
    /// ./hybridgrid.yaml, ~/.hybridgrid/config.yaml, /etc/hybridgrid/config.yaml.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log level or filter (error, warn, info, debug, trace); overrides
    /// HG_LOG_LEVEL and logging.level.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format: console or json.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// TLS certificate (PEM); enables TLS.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<String>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<String>,
    /// CA bundle (PEM) to verify peers with.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<String>,
    /// Require client certificates (mTLS).
    #[arg(long)]
    pub tls_require_client_cert: bool,
}

impl CommonFlags {
    /// A loader with the file, the process environment and these flags.
    pub fn loader(&self) -> ConfigLoader {
        let mut l = ConfigLoader::new()
            .file_opt(self.config.clone())
            .process_env()
            .set_opt("logging.level", self.log_level.clone())
            .set_opt("logging.format", self.log_format.clone())
            .set_opt("tls.cert_file", self.tls_cert.clone())
            .set_opt("tls.key_file", self.tls_key.clone())
            .set_opt("tls.ca_file", self.tls_ca.clone());
        if self.tls_cert.is_some() || self.tls_ca.is_some() {
            l = l.set("tls.enabled", true);
        }
        if self.tls_require_client_cert {
            l = l.set("tls.require_client_cert", true);
        }
        l
    }
}

/// Loads the configuration or exits with status 2 and a message naming
/// the bad key or file.
pub fn load_or_exit(loader: ConfigLoader, program: &str) -> Config {
    match loader.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{program}: {e}");
            std::process::exit(2);
        }
    }
}

/// Completes on SIGINT or SIGTERM; serves until then (both in
/// `hybridgrid_net::run`).
pub use hybridgrid_net::run::{serve_until_signal, shutdown_signal};

/// Installs logging for a server and returns its admin hooks (runtime log
/// level, heap profile), or exits with status 2 and the reason.
pub fn logging_or_exit(cfg: &Config, program: &str) -> hybridgrid_net::http::admin::AdminHooks {
    match hybridgrid_core::logging::init_for_server(&cfg.logging) {
        Ok(log) => crate::heap::admin_hooks(log),
        Err(e) => {
            eprintln!("{program}: {e}");
            std::process::exit(2);
        }
    }
}
