//! How hgbuild was invoked (as a compiler, as a launcher, in front of
//! ccache, or as a command), and one compiler command as the program runs
//! it.

use std::ffi::OsString;
use std::path::Path;

use hybridgrid_core::config::{Config, LoggingConfig};

use crate::client::find_real_compiler;
use crate::{Client, masquerade};

use super::MASQUERADE_NAMES;

/// True for a first argument that names a compiler (`/usr/bin/cc`,
/// `gcc-12`, `aarch64-linux-gnu-g++`) rather than an hgbuild command.
pub fn looks_like_compiler(arg: &str) -> bool {
    // `hgbuild cc ...` and `hgbuild c++ ...` are commands (they honour HG_CC/HG_CXX).
    if matches!(arg, "cc" | "gcc" | "c++" | "g++" | "cxx") {
        return false;
    }
    let base = arg.rsplit('/').next().unwrap_or(arg);
    let stem = base.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.' || c == '-');
    let named = MASQUERADE_NAMES.contains(&stem)
        || stem.ends_with("-gcc")
        || stem.ends_with("-g++")
        || stem.ends_with("-clang")
        || stem.ends_with("-clang++");
    named && (arg.contains('/') || find_real_compiler(arg).is_some())
}

/// How the `hgbuild` program was invoked, from its whole argument vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// As a compiler: through a link named `cc`, `g++`... (`compiler` is
    /// that name), or as a launcher, `hgbuild /usr/bin/cc -c x.c` (as
    /// `CMAKE_C_COMPILER_LAUNCHER=hgbuild` runs it).
    Compiler {
        /// The compiler's name or path.
        compiler: String,
        /// Its arguments.
        args: Vec<OsString>,
    },
    /// `hgbuild ccache CC ARGS`: ccache in front, hgbuild as its prefix.
    Ccache {
        /// How ccache was named.
        ccache: String,
        /// The compiler and its arguments.
        args: Vec<OsString>,
    },
    /// An hgbuild command (`make`, `status`...): parse the flags.
    Command,
}

impl Invocation {
    /// The form of `argv` (with the program name first).
    pub fn of(argv: &[OsString]) -> Self {
        let name = argv
            .first()
            .and_then(|a| Path::new(a).file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let rest = argv.get(1..).unwrap_or_default().to_vec();
        if MASQUERADE_NAMES.contains(&name.as_str()) {
            return Invocation::Compiler {
                compiler: name,
                args: rest,
            };
        }
        let Some(first) = argv.get(1).map(|a| a.to_string_lossy().into_owned()) else {
            return Invocation::Command;
        };
        let args = rest[1..].to_vec();
        if masquerade::is_ccache(&first) {
            Invocation::Ccache {
                ccache: first,
                args,
            }
        } else if looks_like_compiler(&first) {
            Invocation::Compiler {
                compiler: first,
                args,
            }
        } else {
            Invocation::Command
        }
    }
}

/// `hgbuild ccache CC ARGS`: runs ccache with this program as its
/// `CCACHE_PREFIX` ([`masquerade::run_behind_ccache`]); returns the exit
/// code.
pub fn run_ccache(ccache: &str, args: &[OsString]) -> i32 {
    let exe = std::env::current_exe().unwrap_or_else(|_| "hgbuild".into());
    masquerade::run_behind_ccache(ccache, args, &exe)
}

/// Sets up hgbuild's logging: as a compiler it is quiet (only warnings)
/// unless `HG_LOG_LEVEL` asks otherwise; format and file as configured.
pub fn init_logging(cfg: &Config) {
    let mut l = LoggingConfig::default();
    l.level = if std::env::var_os("HG_LOG_LEVEL").is_some() {
        cfg.logging.level.clone()
    } else {
        "warn".into()
    };
    l.format = cfg.logging.format;
    l.file = cfg.logging.file.clone();
    let _ = hybridgrid_core::logging::init(&l);
}

/// The compiler `hgbuild cc` (or `hgbuild c++` when `cxx`) runs:
/// `client.cc`/`client.cxx` (`HG_CC`, `HG_CXX`), else `cc`/`c++`.
pub fn configured_compiler(cfg: &Config, cxx: bool) -> &str {
    match (cxx, cfg.client.cc.as_str(), cfg.client.cxx.as_str()) {
        (false, "", _) => "cc",
        (false, cc, _) => cc,
        (true, _, "") => "c++",
        (true, _, cxx) => cxx,
    }
}

/// Compiles as `name ARGS` would, through the grid when it can, as one
/// hgbuild process does: its event goes to the wrapped build's stream, or
/// to a trace of its own when one was asked for. Returns the exit code.
///
/// With [`RunOptions::replace_process`](crate::RunOptions::replace_process)
/// (as the hgbuild program sets it), a command that runs here as it is (a
/// configure probe, a link, `--version`) replaces this process with the
/// compiler: the build tool then waits on the compiler, with no hgbuild
/// process around it.
pub async fn compile(client: &Client, name: &str, args: &[OsString]) -> i32 {
    let outcome = client.compile(name, args).await;
    let opts = client.options();
    if opts.events_file.is_none()
        && let Some(path) = &opts.trace
        && let Err(e) = crate::trace::write_build_trace(path, &client.events(), None)
    {
        eprintln!("hgbuild: warning: cannot write the trace: {e}");
    }
    outcome.exit_code
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn invocation_forms() {
        let compiler = |c: &str, a: &[&str]| Invocation::Compiler {
            compiler: c.into(),
            args: argv(a),
        };
        assert_eq!(
            Invocation::of(&argv(&["/home/u/.hybridgrid/bin/c++", "-c", "x.cc"])),
            compiler("c++", &["-c", "x.cc"])
        );
        assert_eq!(
            Invocation::of(&argv(&["hgbuild", "/usr/bin/cc", "-c", "x.c"])),
            compiler("/usr/bin/cc", &["-c", "x.c"])
        );
        assert_eq!(
            Invocation::of(&argv(&["hgbuild", "ccache", "cc", "-c", "x.c"])),
            Invocation::Ccache {
                ccache: "ccache".into(),
                args: argv(&["cc", "-c", "x.c"])
            }
        );
        for cmd in [
            &["hgbuild"][..],
            &["hgbuild", "make", "-j2"],
            &["hgbuild", "cc", "-c", "x.c"],
        ] {
            assert_eq!(Invocation::of(&argv(cmd)), Invocation::Command, "{cmd:?}");
        }
    }

    #[test]
    fn configured_compilers() {
        let mut cfg = Config::default();
        assert_eq!(configured_compiler(&cfg, false), "cc");
        assert_eq!(configured_compiler(&cfg, true), "c++");
        cfg.client.cc = "clang".into();
        cfg.client.cxx = "clang++".into();
        assert_eq!(configured_compiler(&cfg, false), "clang");
        assert_eq!(configured_compiler(&cfg, true), "clang++");
    }
}
