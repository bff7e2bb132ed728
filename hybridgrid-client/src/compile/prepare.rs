//! Preparing a remote task (preprocessed here, or from source with every file
//! it reads) and writing a remote result's outputs where the command line
//! asked.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::Path;
use std::process::Stdio;

use hybridgrid_core::payload::Payload;
use hybridgrid_core::task::{CompileOutput, CompileTask, ContextFile, OutputKind, SourceFile};
use hybridgrid_core::worker::CompilerInfo;
use hybridgrid_exec::args::{self, CompilePlan, DiagnosticsColor};
use tokio::process::Command;

use super::*;

/// What the local half of a distributable compile produced.
#[derive(Debug)]
pub struct Prepared {
    /// The task to send.
    pub task: CompileTask,
    /// The plan it came from.
    pub plan: CompilePlan,
    /// What the preprocessor printed on standard error (not yet shown);
    /// empty for a compile from source, which prints it with its own.
    pub preprocessor_stderr: Vec<u8>,
    /// The files the preprocessor read, from its line markers.
    pub includes: Vec<String>,
    /// Whether `-fdiagnostics-color=always` was added to the task.
    pub color_added: bool,
}

/// Whether the remote compile of `plan` gets `-fdiagnostics-color=always`
/// (standard error is a terminal and the command leaves colors to it).
pub fn adds_color(plan: &CompilePlan, opts: &ClientOptions) -> bool {
    opts.color
        && matches!(
            plan.diagnostics_color(),
            DiagnosticsColor::Unspecified | DiagnosticsColor::Auto
        )
}

/// Preprocesses the plan's source here and builds the task. `Err(code)`
/// means preprocessing failed (its diagnostics were printed): the compile
/// fails with that exit code, as the plain compiler's would. On success the
/// preprocessor's diagnostics are in [`Prepared::preprocessor_stderr`], for
/// the caller to show.
pub async fn prepare(
    compiler: &CompilerInfo,
    plan: CompilePlan,
    opts: &ClientOptions,
) -> Result<Prepared, PrepareError> {
    let mut preprocessor_stderr = Vec::new();
    let input = match plan.preprocess_args() {
        Some(pp_args) => {
            let out = Command::new(&compiler.path)
                .args(&pp_args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .output()
                .await
                .map_err(|e| PrepareError::Io(format!("cannot run the preprocessor: {e}")))?;
            if !out.status.success() {
                let _ = std::io::stderr().write_all(&out.stderr);
                return Err(PrepareError::Failed(exit_code_of(out.status)));
            }
            preprocessor_stderr = out.stderr;
            out.stdout
        }
        None => tokio::fs::read(plan.source()).await.map_err(|e| {
            PrepareError::Io(format!("cannot read {}: {e}", plan.source().display()))
        })?,
    };
    if plan.debug_info() && source_mode_refusal(&plan, opts).is_none() {
        let color = adds_color(&plan, opts);
        // The compile from source preprocesses again and prints the
        // preprocessor's diagnostics (`#warning`) with its own: shown from
        // here as well, they would appear twice.
        return prepare_from_source(compiler, plan, input, color).await;
    }
    let mut remote_args = plan.remote_args();
    let color_added = adds_color(&plan, opts);
    if color_added {
        remote_args.push("-fdiagnostics-color=always".into());
    }
    // Read from the preprocessed text before it is compressed.
    let (context, includes) = if plan.needs_preprocessing() {
        (
            context_files(&input),
            hybridgrid_core::preprocessed::included_files(&input),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let mut task = CompileTask::new(
        compiler.identity.clone(),
        plan.remote_language(),
        remote_args,
        plan.source().display().to_string(),
        Payload::compress(input),
    );
    task.extra_outputs = plan.extra_output_kinds();
    task.context_files = context;
    task.cwd = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    Ok(Prepared {
        task,
        plan,
        preprocessor_stderr,
        includes,
        color_added,
    })
}

/// Most bytes of source files sent with one compile from source.
const SOURCE_BUDGET: u64 = 128 * 1024 * 1024;

/// Why a compile with debug info cannot go to the grid (it then compiles
/// locally), or `None` when it can, compiled from source.
pub fn source_mode_refusal(plan: &CompilePlan, opts: &ClientOptions) -> Option<String> {
    if !opts.remote_debug_info {
        return Some(
            "debug info (-g) is compiled locally (client.remote_debug_info: false)".into(),
        );
    }
    if !matches!(
        plan.source_language(),
        args::SourceLanguage::C | args::SourceLanguage::Cxx
    ) {
        return Some("debug info (-g) for assembler is compiled locally".into());
    }
    if let Err(e) = args::validate_source_args(&plan.source_args()) {
        return Some(format!("debug info (-g) with {e}"));
    }
    let split = plan
        .outputs()
        .iter()
        .any(|o| o.kind == OutputKind::SplitDwarf);
    if split && plan.object_path().is_absolute() {
        // gcc records the .dwo's absolute name without mapping it.
        return Some("split DWARF with an absolute output path is compiled locally".into());
    }
    if split && plan.records_macros() {
        // gcc leaves the macro section's file names in the .dwo unmapped.
        return Some("split DWARF with macro information (-g3) is compiled locally".into());
    }
    None
}

/// The task for a compile with debug info: the original source, compiled
/// on the worker with every file the preprocessor read (`preprocessed`
/// names them) laid out at this machine's paths. A compile of the
/// preprocessed text would differ in the line table's columns.
async fn prepare_from_source(
    compiler: &CompilerInfo,
    plan: CompilePlan,
    preprocessed: Vec<u8>,
    color: bool,
) -> Result<Prepared, PrepareError> {
    let cwd = std::env::current_dir()
        .map_err(|e| PrepareError::Io(format!("cannot read the working directory: {e}")))?;
    let includes = hybridgrid_core::preprocessed::included_files(&preprocessed);
    let source = plan.source().to_path_buf();
    let names = hybridgrid_core::preprocessed::line_marker_files(&preprocessed);
    let task_cwd = cwd.display().to_string();
    let files = tokio::task::spawn_blocking(move || read_tree(&cwd, &names, &source))
        .await
        .map_err(|e| PrepareError::Io(format!("cannot read the sources: {e}")))??;
    let language = match plan.source_language() {
        args::SourceLanguage::Cxx => hybridgrid_core::task::Language::Cxx,
        _ => hybridgrid_core::task::Language::C,
    };
    let mut args = plan.source_args();
    if color {
        // Colors do not change the object.
        args.push("-fdiagnostics-color=always".into());
    }
    let mut task = CompileTask::new(
        compiler.identity.clone(),
        language,
        args,
        plan.source().display().to_string(),
        // The source is the first file, always sent with its content:
        // compressed once, shared.
        files[0].data.clone().unwrap_or_default(),
    );
    task.extra_outputs = plan.extra_output_kinds();
    task.cwd = task_cwd;
    task.source_mode = Some(hybridgrid_core::task::SourceMode {
        files,
        output_paths: plan
            .outputs()
            .iter()
            .map(|o| o.path.display().to_string())
            .collect(),
    });
    Ok(Prepared {
        task,
        plan,
        preprocessor_stderr: Vec::new(),
        includes,
        color_added: color,
    })
}

/// Puts the content of the files a worker lacked (`paths`, sent by digest
/// only; `None`: every file sent so) into `task`, read again from this
/// machine. A file that changed since it was hashed, or cannot be read, is
/// an error: the compile then runs here.
pub(super) fn fill_missing(task: &mut CompileTask, paths: Option<&[String]>) -> Result<(), String> {
    let Some(mode) = task.source_mode.as_mut() else {
        return Err("the worker asked for files of a compile that sent none".into());
    };
    let named: Option<HashSet<&str>> = paths.map(|p| p.iter().map(String::as_str).collect());
    if let Some(named) = &named {
        let by_digest: HashSet<&str> = mode
            .files
            .iter()
            .filter(|f| f.data.is_none())
            .map(|f| f.path.as_str())
            .collect();
        if let Some(p) = named.iter().find(|p| !by_digest.contains(*p)) {
            return Err(format!(
                "the worker asked for {p}, which was not sent by digest"
            ));
        }
    }
    for f in mode.files.iter_mut().filter(|f| f.data.is_none()) {
        if named.as_ref().is_some_and(|n| !n.contains(f.path.as_str())) {
            continue;
        }
        let p = &f.path;
        let data = std::fs::read(p).map_err(|e| format!("cannot read {p}: {e}"))?;
        if SourceFile::digest_of(&data) != f.digest {
            return Err(format!("{p} changed during the compile"));
        }
        *f = SourceFile::with_data(p.clone(), data);
    }
    Ok(())
}

/// Reads the source and every other regular file among `names`
/// (line-marker paths, relative to `cwd` or absolute; the source first, each
/// file once), within [`SOURCE_BUDGET`]; every file but the source goes by
/// digest only (a worker has the system's headers itself, and keeps the
/// project's from earlier compiles; it names those it lacks, and
/// [`fill_missing`] adds them). Names that are not regular files
/// (gcc's `"/dir//"` marker of the working directory) are skipped; a file
/// that cannot be read fails the preparation.
fn read_tree(cwd: &Path, names: &[String], source: &Path) -> Result<Vec<SourceFile>, PrepareError> {
    let mut files = Vec::with_capacity(names.len() + 1);
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let source = cwd.join(source);
    let others = names
        .iter()
        .map(|n| cwd.join(n))
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file()));
    for (i, abs) in std::iter::once(source).chain(others).enumerate() {
        let path = abs.display().to_string();
        if !seen.insert(path.clone()) {
            continue;
        }
        if hybridgrid_core::task::SourceMode::relative_path(&path).is_none() {
            return Err(PrepareError::Io(format!(
                "cannot send {path}: not a plain absolute path"
            )));
        }
        let data = std::fs::read(&abs)
            .map_err(|e| PrepareError::Io(format!("cannot read {path}: {e}")))?;
        // Counted whether or not it travels now: a worker may ask for it.
        total += data.len() as u64;
        if total > SOURCE_BUDGET {
            return Err(PrepareError::Io(format!(
                "the sources and headers exceed {} MiB",
                SOURCE_BUDGET >> 20
            )));
        }
        files.push(if i == 0 {
            SourceFile::with_data(path, data)
        } else {
            SourceFile::by_digest(path, SourceFile::digest_of(&data))
        });
    }
    Ok(files)
}

/// Most bytes of context files sent with one task.
const CONTEXT_BUDGET: u64 = 8 * 1024 * 1024;
/// Largest single context file.
const CONTEXT_FILE_MAX: u64 = 1024 * 1024;

/// The source files of a translation unit that the remote compiler may
/// quote in diagnostics: those named by relative paths in the line markers
/// (the project's own files), within a size budget.
pub fn context_files(preprocessed: &[u8]) -> Vec<ContextFile> {
    let mut out = Vec::new();
    let mut budget = CONTEXT_BUDGET;
    for path in hybridgrid_core::preprocessed::line_marker_files(preprocessed) {
        if ContextFile::parent_depth(&path).is_none_or(|d| d > 16) {
            continue;
        }
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if !meta.is_file() || meta.len() > CONTEXT_FILE_MAX || meta.len() > budget {
            continue;
        }
        let Ok(data) = std::fs::read(&path) else {
            continue;
        };
        budget -= data.len() as u64;
        out.push(ContextFile {
            path,
            data: Payload::compress(data),
        });
    }
    out
}

/// Why a task could not be prepared.
#[derive(Debug)]
pub enum PrepareError {
    /// The preprocessor failed with this exit code (diagnostics printed).
    Failed(i32),
    /// Something else failed (the compile can still run locally).
    Io(String),
}

/// Writes a remote result: diagnostics, then (on success) every output
/// file atomically; on failure removes stale outputs, as the compiler does.
pub fn apply_output(plan: &CompilePlan, out: &CompileOutput) -> std::io::Result<i32> {
    if !out.stdout.is_empty() {
        std::io::stdout().write_all(&out.stdout)?;
        std::io::stdout().flush()?;
    }
    if !out.stderr.is_empty() {
        std::io::stderr().write_all(&out.stderr)?;
    }
    if out.exit_code != 0 {
        for o in plan.outputs() {
            let _ = std::fs::remove_file(&o.path);
        }
        return Ok(out.exit_code);
    }
    // Decode everything first: nothing is written unless all of it is good.
    let mut files = Vec::new();
    for o in plan.outputs() {
        let f = out.output(o.kind).ok_or_else(|| {
            std::io::Error::other(format!(
                "the worker returned no {} file",
                match o.kind {
                    OutputKind::SplitDwarf => "split DWARF",
                    _ => "object",
                }
            ))
        })?;
        let data = f.data.decode().map_err(std::io::Error::other)?;
        files.push((o.path.clone(), data));
    }
    for (path, data) in files {
        write_atomic(&path, &data)?;
    }
    Ok(0)
}
