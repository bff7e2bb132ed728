//! The sorted static option tables of the gcc/clang driver and their lookup.
//!
//! Every option the model knows is listed here with how it takes its
//! argument ([`ArgKind`]) and what it means for a distributed compile
//! ([`Role`]). An option that is in no table is unsupported: the compile runs
//! locally. Lookups are binary searches for the longest matching name, so the
//! tables must stay sorted by byte order (a test checks that).

/// How an option takes its argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ArgKind {
    /// The option is exactly its name (`-c`).
    Flag,
    /// The name is a prefix; the rest of the word is the value (`-O2`, `-std=c11`).
    Joined,
    /// The option is exactly its name and the next word is its value (`-Xclang X`).
    Separate,
    /// Either `-Idir` or `-I dir`.
    JoinedOrSeparate,
}

/// Why an option keeps a compile on the local machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LocalKind {
    /// `-save-temps` writes intermediate files.
    SaveTemps,
    /// Reads or writes profile data on the local machine.
    Profile,
    /// Writes coverage notes (`.gcno`) next to the object.
    Coverage,
    /// Loads code or specs from the local machine.
    LoadsCode,
    /// Writes an extra file besides the object.
    WritesFile,
    /// Reads a local file during compilation (not preprocessing).
    ReadsFile,
    /// Recognized but not supported remotely.
    Unsupported,
}

/// Options handled by dedicated code in the parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Special {
    /// `-c`
    C,
    /// `-S`
    S,
    /// `-E`
    E,
    /// `-M`, `-MM`: dependency output only.
    M,
    /// `-MD`
    Md,
    /// `-MMD`
    Mmd,
    /// `-MF file`
    Mf,
    /// `-MT target`
    Mt,
    /// `-MQ target`
    Mq,
    /// `-o file`
    O,
    /// `-x language`
    X,
    /// `-v`
    V,
    /// `-Wp,...`
    Wp,
    /// `-Wa,...`
    Wa,
    /// `-Xassembler arg`
    Xassembler,
    /// `-Xclang arg`
    Xclang,
    /// `-g...`
    G,
    /// `-f...`: looked up again in [`F_TABLE`].
    F,
}

/// What an option means for a distributed compile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Affects only preprocessing: passed to the local preprocessor only.
    Preproc,
    /// Affects compilation (and maybe preprocessing): passed to both.
    Common,
    /// A linker option: meaningless with `-c`/`-S`, passed to neither.
    Ignored,
    /// Asks the driver a question; the command line is not a compile.
    Query,
    /// Forces a local compile.
    Local(LocalKind),
    /// Handled by dedicated code.
    Special(Special),
    /// `-fdiagnostics-color*`, `-fcolor-diagnostics`: common, and recorded.
    Color,
    /// `-fdiagnostics-format=`: common only for formats that write to stderr.
    DiagFormat,
    /// `-frandom-seed=`: common unless it names a file (`@file`).
    RandomSeed,
}

/// One option of a table.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OptSpec {
    /// The option's name (a prefix for joined kinds).
    pub(crate) name: &'static str,
    /// How it takes its argument.
    pub(crate) kind: ArgKind,
    /// What it means.
    pub(crate) role: Role,
}

const fn o(name: &'static str, kind: ArgKind, role: Role) -> OptSpec {
    OptSpec { name, kind, role }
}

use ArgKind::{Flag, Joined, JoinedOrSeparate as JoS, Separate};
use LocalKind as L;
use Role::{Common, Ignored, Preproc, Query};
use Special as Sp;

const fn local(kind: LocalKind) -> Role {
    Role::Local(kind)
}
const fn sp(s: Special) -> Role {
    Role::Special(s)
}

/// The driver options, sorted by name in byte order.
pub(crate) static ARGS: &[OptSpec] = &[
    o("-###", Flag, Query),
    o("--coverage", Flag, local(L::Coverage)),
    o("--help", Flag, Query),
    o("--help=", Joined, Query),
    o("--param", Separate, Common),
    o("--param=", Joined, Common),
    o("--specs", Separate, local(L::LoadsCode)),
    o("--specs=", Joined, local(L::LoadsCode)),
    o("--sysroot", Separate, Preproc),
    o("--sysroot=", Joined, Preproc),
    o("--target=", Joined, Common),
    o("--version", Flag, Query),
    o("-A", JoS, Preproc),
    o("-B", JoS, local(L::LoadsCode)),
    o("-D", JoS, Preproc),
    o("-E", Flag, sp(Sp::E)),
    o("-H", Flag, Preproc),
    o("-I", JoS, Preproc),
    o("-L", JoS, Ignored),
    o("-M", Flag, sp(Sp::M)),
    o("-MD", Flag, sp(Sp::Md)),
    o("-MF", JoS, sp(Sp::Mf)),
    o("-MG", Flag, Preproc),
    o("-MM", Flag, sp(Sp::M)),
    o("-MMD", Flag, sp(Sp::Mmd)),
    o("-MP", Flag, Preproc),
    o("-MQ", JoS, sp(Sp::Mq)),
    o("-MT", JoS, sp(Sp::Mt)),
    o("-O", Joined, Common),
    o("-S", Flag, sp(Sp::S)),
    o("-T", JoS, Ignored),
    o("-U", JoS, Preproc),
    o("-W", Joined, Common),
    o("-Wa,", Joined, sp(Sp::Wa)),
    o("-Wl,", Joined, Ignored),
    o("-Wp,", Joined, sp(Sp::Wp)),
    o("-Xassembler", Separate, sp(Sp::Xassembler)),
    o("-Xclang", Separate, sp(Sp::Xclang)),
    o("-Xlinker", Separate, Ignored),
    o("-Xpreprocessor", Separate, Preproc),
    o("-ansi", Flag, Common),
    o("-arch", Separate, Common),
    o("-aux-info", Separate, local(L::WritesFile)),
    o("-c", Flag, sp(Sp::C)),
    o("-dumpfullversion", Flag, Query),
    o("-dumpmachine", Flag, Query),
    o("-dumpversion", Flag, Query),
    o("-f", Joined, sp(Sp::F)),
    o("-g", Joined, sp(Sp::G)),
    o("-gcc-toolchain", Separate, Preproc),
    o("-idirafter", JoS, Preproc),
    o("-imacros", JoS, Preproc),
    o("-imultiarch", JoS, Preproc),
    o("-imultilib", JoS, Preproc),
    o("-include", JoS, Preproc),
    o("-iprefix", JoS, Preproc),
    o("-iquote", JoS, Preproc),
    o("-isysroot", JoS, Preproc),
    o("-isystem", JoS, Preproc),
    o("-iwithprefix", JoS, Preproc),
    o("-iwithprefixbefore", JoS, Preproc),
    o("-l", JoS, Ignored),
    o("-m", Joined, Common),
    o("-mllvm", Separate, local(L::Unsupported)),
    o("-no-pie", Flag, Common),
    o("-nodefaultlibs", Flag, Ignored),
    o("-nostartfiles", Flag, Ignored),
    o("-nostdinc", Flag, Preproc),
    o("-nostdinc++", Flag, Preproc),
    o("-nostdlib", Flag, Ignored),
    o("-o", JoS, sp(Sp::O)),
    o("-pedantic", Flag, Common),
    o("-pedantic-errors", Flag, Common),
    o("-pie", Flag, Common),
    o("-pipe", Flag, Ignored),
    o("-print-", Joined, Query),
    o("-pthread", Flag, Common),
    o("-rdynamic", Flag, Ignored),
    o("-s", Flag, Ignored),
    o("-save-temps", Flag, local(L::SaveTemps)),
    o("-save-temps=", Joined, local(L::SaveTemps)),
    o("-shared", Flag, Ignored),
    o("-specs=", Joined, local(L::LoadsCode)),
    o("-static", Flag, Ignored),
    o("-static-libgcc", Flag, Ignored),
    o("-static-libstdc++", Flag, Ignored),
    o("-std=", Joined, Common),
    o("-target", Separate, Common),
    o("-trigraphs", Flag, Preproc),
    o("-u", JoS, Ignored),
    o("-undef", Flag, Preproc),
    o("-v", Flag, sp(Sp::V)),
    o("-w", Flag, Common),
    o("-wrapper", Separate, local(L::LoadsCode)),
    o("-x", JoS, sp(Sp::X)),
    o("-z", JoS, Ignored),
];

/// The `-f` options, by the name after `-f` (and after `no-`), sorted in
/// byte order. A [`ArgKind::Joined`] entry matches every name it prefixes
/// (`visibility=` matches `-fvisibility=hidden`); a [`ArgKind::Flag`] entry
/// matches only itself.
pub(crate) static F_TABLE: &[OptSpec] = &[
    o("PIC", Flag, Common),
    o("PIE", Flag, Common),
    o("align-functions", Flag, Common),
    o("align-functions=", Joined, Common),
    o("align-jumps", Flag, Common),
    o("align-jumps=", Joined, Common),
    o("align-labels", Flag, Common),
    o("align-labels=", Joined, Common),
    o("align-loops", Flag, Common),
    o("align-loops=", Joined, Common),
    o("aligned-new", Flag, Common),
    o("aligned-new=", Joined, Common),
    o("ansi-escape-codes", Flag, Common),
    o("asm", Flag, Common),
    o("associative-math", Flag, Common),
    o("asynchronous-unwind-tables", Flag, Common),
    o("auto-profile", Joined, local(L::Profile)),
    o("branch-probabilities", Flag, local(L::Profile)),
    o("builtin", Flag, Common),
    o("builtin-", Joined, Common),
    o("caller-saves", Flag, Common),
    o("callgraph-info", Joined, local(L::WritesFile)),
    o("canonical-system-headers", Flag, Preproc),
    o("caret-diagnostics", Flag, Common),
    o("cf-protection", Flag, Common),
    o("cf-protection=", Joined, Common),
    o("char8_t", Flag, Common),
    o("color-diagnostics", Flag, Role::Color),
    o("common", Flag, Common),
    o("compare-debug", Joined, local(L::WritesFile)),
    o("concepts", Flag, Common),
    o("constexpr-depth=", Joined, Common),
    o("constexpr-loop-limit=", Joined, Common),
    o("constexpr-ops-limit=", Joined, Common),
    o("constexpr-steps=", Joined, Common),
    o("coroutines", Flag, Common),
    o("coverage-mapping", Flag, local(L::Profile)),
    o("crash-diagnostics", Joined, local(L::WritesFile)),
    o("cs-profile-generate", Joined, local(L::Profile)),
    o("cse-follow-jumps", Flag, Common),
    o("cxx-exceptions", Flag, Common),
    o("data-sections", Flag, Common),
    o("debug-prefix-map=", Joined, Common),
    o("debug-types-section", Flag, Common),
    o("delete-null-pointer-checks", Flag, Common),
    o("devirtualize", Flag, Common),
    o("devirtualize-speculatively", Flag, Common),
    o("diagnostics-color", Flag, Role::Color),
    o("diagnostics-color=", Joined, Role::Color),
    o("diagnostics-column-unit=", Joined, Common),
    o("diagnostics-format=", Joined, Role::DiagFormat),
    o("diagnostics-minimum-margin-width=", Joined, Common),
    o("diagnostics-parseable-fixits", Flag, Common),
    o("diagnostics-path-format=", Joined, Common),
    o("diagnostics-show-caret", Flag, Common),
    o("diagnostics-show-cwe", Flag, Common),
    o("diagnostics-show-labels", Flag, Common),
    o("diagnostics-show-line-numbers", Flag, Common),
    o("diagnostics-show-option", Flag, Common),
    o("diagnostics-show-template-tree", Flag, Common),
    o("diagnostics-urls=", Joined, Common),
    o("directives-only", Flag, local(L::Unsupported)),
    o("dollars-in-identifiers", Flag, Common),
    o("dump-", Joined, local(L::WritesFile)),
    o("elide-type", Flag, Common),
    o("emulated-tls", Flag, Common),
    o("exceptions", Flag, Common),
    o("excess-precision=", Joined, Common),
    o("exec-charset=", Joined, Common),
    o("expensive-optimizations", Flag, Common),
    o("extended-identifiers", Flag, Common),
    o("fast-math", Flag, Common),
    o("fat-lto-objects", Flag, Common),
    o("file-prefix-map=", Joined, Common),
    o("finite-math-only", Flag, Common),
    o("float-store", Flag, Common),
    o("fp-contract=", Joined, Common),
    o("freestanding", Flag, Common),
    o("function-sections", Flag, Common),
    o("gcse", Flag, Common),
    o("gnu-keywords", Flag, Common),
    o("gnu-unique", Flag, Common),
    o("gnu89-inline", Flag, Common),
    o("hosted", Flag, Common),
    o("ident", Flag, Common),
    o("implicit-inline-templates", Flag, Common),
    o("implicit-templates", Flag, Common),
    o("inline", Flag, Common),
    o("inline-functions", Flag, Common),
    o("inline-functions-called-once", Flag, Common),
    o("inline-limit=", Joined, Common),
    o("inline-small-functions", Flag, Common),
    o("input-charset=", Joined, Preproc),
    o("instrument-functions", Flag, Common),
    o("instrument-functions-exclude-file-list=", Joined, Common),
    o(
        "instrument-functions-exclude-function-list=",
        Joined,
        Common,
    ),
    o("integrated-as", Flag, Common),
    o("ipa-", Joined, Common),
    o("isolate-erroneous-paths-dereference", Flag, Common),
    o("jump-tables", Flag, Common),
    o("keep-inline-functions", Flag, Common),
    o("keep-static-consts", Flag, Common),
    o("lifetime-dse", Flag, Common),
    o("lifetime-dse=", Joined, Common),
    o("limit-debug-info", Flag, Common),
    o("lto", Flag, Common),
    o("lto=", Joined, Common),
    o("macro-prefix-map=", Joined, Preproc),
    o("math-errno", Flag, Common),
    o("max-errors=", Joined, Common),
    o("merge-all-constants", Flag, Common),
    o("merge-constants", Flag, Common),
    o("message-length=", Joined, Common),
    o("module", Joined, local(L::Unsupported)),
    o("ms-extensions", Flag, Common),
    o("omit-frame-pointer", Flag, Common),
    o("openacc", Flag, Common),
    o("openmp", Flag, Common),
    o("openmp-simd", Flag, Common),
    o("operator-names", Flag, Common),
    o("opt-info", Joined, local(L::WritesFile)),
    o("optimize-sibling-calls", Flag, Common),
    o("pack-struct", Flag, Common),
    o("pack-struct=", Joined, Common),
    o("partial-inlining", Flag, Common),
    o("patchable-function-entry=", Joined, Common),
    o("pch-", Joined, local(L::Unsupported)),
    o("peel-loops", Flag, Common),
    o("peephole2", Flag, Common),
    o("permissive", Flag, Common),
    o("pic", Flag, Common),
    o("pie", Flag, Common),
    o("plt", Flag, Common),
    o("plugin", Joined, local(L::LoadsCode)),
    o("predictive-commoning", Flag, Common),
    o("prefetch-loop-arrays", Flag, Common),
    o("preprocessed", Flag, local(L::Unsupported)),
    o("pretty-templates", Flag, Common),
    o("profile", Joined, local(L::Profile)),
    o("random-seed=", Joined, Role::RandomSeed),
    o("reciprocal-math", Flag, Common),
    o("record-gcc-switches", Flag, Common),
    o("reorder-blocks", Flag, Common),
    o("reorder-blocks-and-partition", Flag, Common),
    o("reorder-functions", Flag, Common),
    o("rounding-math", Flag, Common),
    o("rtti", Flag, Common),
    o("sanitize-address-use-after-scope", Flag, Common),
    o("sanitize-blacklist=", Joined, local(L::ReadsFile)),
    o("sanitize-coverage-allowlist=", Joined, local(L::ReadsFile)),
    o("sanitize-coverage-ignorelist=", Joined, local(L::ReadsFile)),
    o("sanitize-ignorelist=", Joined, local(L::ReadsFile)),
    o("sanitize-recover", Flag, Common),
    o("sanitize-recover=", Joined, Common),
    o("sanitize-trap", Flag, Common),
    o("sanitize-trap=", Joined, Common),
    o("sanitize-undefined-trap-on-error", Flag, Common),
    o("sanitize=", Joined, Common),
    o("save-optimization-record", Joined, local(L::WritesFile)),
    o("schedule-insns", Flag, Common),
    o("schedule-insns2", Flag, Common),
    o("semantic-interposition", Flag, Common),
    o("short-enums", Flag, Common),
    o("short-wchar", Flag, Common),
    o("show-column", Flag, Common),
    o("signed-char", Flag, Common),
    o("signed-zeros", Flag, Common),
    o("sized-deallocation", Flag, Common),
    o("split-lto-unit", Flag, Common),
    o("split-stack", Flag, Common),
    o("stack-check", Flag, Common),
    o("stack-clash-protection", Flag, Common),
    o("stack-protector", Flag, Common),
    o("stack-protector-all", Flag, Common),
    o("stack-protector-explicit", Flag, Common),
    o("stack-protector-strong", Flag, Common),
    o("stack-usage", Flag, local(L::WritesFile)),
    o("standalone-debug", Flag, Common),
    o("strict-aliasing", Flag, Common),
    o("strict-enums", Flag, Common),
    o("strict-flex-arrays", Flag, Common),
    o("strict-flex-arrays=", Joined, Common),
    o("strict-overflow", Flag, Common),
    o("strict-volatile-bitfields", Flag, Common),
    o("tabstop=", Joined, Common),
    o("template-backtrace-limit=", Joined, Common),
    o("template-depth=", Joined, Common),
    o("test-coverage", Flag, local(L::Coverage)),
    o("threadsafe-statics", Flag, Common),
    o("time-report", Flag, Common),
    o("time-trace", Joined, local(L::WritesFile)),
    o("tls-model=", Joined, Common),
    o("track-macro-expansion", Flag, Common),
    o("track-macro-expansion=", Joined, Common),
    o("trapping-math", Flag, Common),
    o("trapv", Flag, Common),
    o("tree-", Joined, Common),
    o("trivial-auto-var-init=", Joined, Common),
    o("unroll-all-loops", Flag, Common),
    o("unroll-loops", Flag, Common),
    o("unsafe-math-optimizations", Flag, Common),
    o("unsigned-char", Flag, Common),
    o("unwind-tables", Flag, Common),
    o("use-cxa-atexit", Flag, Common),
    o("use-init-array", Flag, Common),
    o("var-tracking", Flag, Common),
    o("var-tracking-assignments", Flag, Common),
    o("vect-cost-model=", Joined, Common),
    o("verbose-asm", Flag, Common),
    o("visibility-inlines-hidden", Flag, Common),
    o("visibility=", Joined, Common),
    o("working-directory", Flag, Preproc),
    o("wrapv", Flag, Common),
    o("xray-", Joined, local(L::Unsupported)),
    o("zero-call-used-regs=", Joined, Common),
    o("zero-initialized-in-bss", Flag, Common),
];

/// The `-Wa,` / `-Xassembler` arguments that are safe to pass to a remote
/// assembler: they only change how the object is produced. Sorted; an entry
/// ending in `=` is a prefix.
pub(crate) static ASSEMBLER_ARGS: &[&str] = &[
    "--32",
    "--64",
    "--compress-debug-sections",
    "--compress-debug-sections=",
    "--fatal-warnings",
    "--gdwarf-5",
    "--generate-missing-build-notes=",
    "--nocompress-debug-sections",
    "--noexecstack",
    "--x32",
    "-mrelax-relocations=",
    "-mx86-used-note=",
];

/// The `-Xclang` arguments that are safe to pass to a remote clang. Sorted.
pub(crate) static XCLANG_ARGS: &[&str] = &[
    "-disable-O0-optnone",
    "-disable-llvm-passes",
    "-fcolor-diagnostics",
    "-fno-color-diagnostics",
];

/// The longest name in [`ARGS`] or [`F_TABLE`]: no longer prefix can match.
const MAX_NAME: usize = 48;

/// Finds the entry of `table` for `word`: an exact match of any kind, else
/// the longest joined entry that prefixes `word`.
pub(crate) fn lookup(table: &'static [OptSpec], word: &str) -> Option<&'static OptSpec> {
    let longest = word.len().min(MAX_NAME);
    for len in (1..=longest).rev() {
        if !word.is_char_boundary(len) {
            continue;
        }
        let prefix = &word[..len];
        if let Ok(i) = table.binary_search_by(|e| e.name.cmp(prefix)) {
            let entry = &table[i];
            let exact = len == word.len();
            let fits = match entry.kind {
                ArgKind::Flag | ArgKind::Separate => exact,
                ArgKind::Joined | ArgKind::JoinedOrSeparate => true,
            };
            if fits {
                return Some(entry);
            }
        }
    }
    None
}

/// Looks up the name of a `-f` option (the word without `-f`), ignoring a
/// `no-` prefix. Returns the entry and whether the option was negated.
pub(crate) fn lookup_f(rest: &str) -> Option<(&'static OptSpec, bool)> {
    if let Some(found) = lookup(F_TABLE, rest) {
        return Some((found, false));
    }
    let positive = rest.strip_prefix("no-")?;
    lookup(F_TABLE, positive).map(|e| (e, true))
}

/// Whether a `-Wa,`/`-Xassembler` argument is in [`ASSEMBLER_ARGS`].
pub(crate) fn assembler_arg_allowed(arg: &str) -> bool {
    ASSEMBLER_ARGS
        .iter()
        .any(|a| arg == *a || (a.ends_with('=') && arg.starts_with(a)))
}

/// Whether an `-Xclang` argument is in [`XCLANG_ARGS`].
pub(crate) fn xclang_arg_allowed(arg: &str) -> bool {
    XCLANG_ARGS.binary_search(&arg).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_sorted(names: &[&str]) {
        for pair in names.windows(2) {
            assert!(
                pair[0] < pair[1],
                "not sorted: {:?} >= {:?}",
                pair[0],
                pair[1]
            );
        }
    }

    #[test]
    fn tables_are_sorted_and_unique() {
        assert_sorted(&ARGS.iter().map(|e| e.name).collect::<Vec<_>>());
        assert_sorted(&F_TABLE.iter().map(|e| e.name).collect::<Vec<_>>());
        assert_sorted(ASSEMBLER_ARGS);
        assert_sorted(XCLANG_ARGS);
    }

    #[test]
    fn names_fit_the_search_window() {
        for e in ARGS.iter().chain(F_TABLE) {
            assert!(
                e.name.len() <= MAX_NAME,
                "{} is longer than MAX_NAME",
                e.name
            );
        }
    }

    #[test]
    fn longest_match_wins() {
        let find = |w| lookup(ARGS, w).map(|e| e.name);
        assert_eq!(find("-include"), Some("-include"));
        assert_eq!(find("-includefoo.h"), Some("-include"));
        assert_eq!(find("-Ifoo"), Some("-I"));
        assert_eq!(find("-Wall"), Some("-W"));
        assert_eq!(find("-Wa,--noexecstack"), Some("-Wa,"));
        assert_eq!(find("-Wl,-z,now"), Some("-Wl,"));
        assert_eq!(find("-mllvm"), Some("-mllvm"));
        assert_eq!(find("-mllvmx"), Some("-m"));
        assert_eq!(find("-MMD"), Some("-MMD"));
        assert_eq!(find("-MFdeps.d"), Some("-MF"));
        assert_eq!(find("-Mfoo"), None);
        assert_eq!(find("-cfoo"), None);
        assert_eq!(find("-save-temps=obj"), Some("-save-temps="));
        assert_eq!(find("-gcc-toolchain"), Some("-gcc-toolchain"));
        assert_eq!(find("-gdwarf-4"), Some("-g"));
        assert_eq!(find("-zzz"), Some("-z"));
        assert_eq!(find("-q"), None);
    }

    #[test]
    fn f_lookup_handles_negation_and_values() {
        let find = |w| lookup_f(w).map(|(e, neg)| (e.name, neg));
        assert_eq!(find("PIC"), Some(("PIC", false)));
        assert_eq!(find("no-common"), Some(("common", true)));
        assert_eq!(find("visibility=hidden"), Some(("visibility=", false)));
        assert_eq!(find("dump-tree-all"), Some(("dump-", false)));
        assert_eq!(find("profile-arcs"), Some(("profile", false)));
        assert_eq!(find("plugin=x.so"), Some(("plugin", false)));
        assert_eq!(find("no-such-flag"), None);
        assert_eq!(find("commonx"), None);
    }
}
