//! Conversions between the core model and the `hybridgrid.v1` messages.
//!
//! Messages from the network are untrusted: every conversion from a message
//! checks what it needs and fails with [`GridError::InvalidTask`].

use std::time::Duration;

use hybridgrid_core::GridError;
use hybridgrid_core::payload::{Encoding, Payload};
use hybridgrid_core::task::{
    CompileOutput, CompileTask, CompilerFamily, CompilerIdentity, ContextFile, DriverKind,
    Language, OutputFile, OutputKind, SourceFile, SourceMode, TaskId, Timings,
};
use hybridgrid_core::worker::{
    Arch, Capabilities, CompilerInfo, DockerImage, WorkerId, WorkerInfo, WorkerSource,
};

use crate::proto;

fn invalid(msg: impl Into<String>) -> GridError {
    GridError::InvalidTask(msg.into())
}

/// Payload -> message.
pub fn payload_to_proto(p: &Payload) -> proto::Payload {
    proto::Payload {
        encoding: match p.encoding() {
            Encoding::Identity => proto::Encoding::Identity,
            Encoding::Zstd => proto::Encoding::Zstd,
        } as i32,
        data: p.encoded().clone(),
        raw_size: p.raw_len(),
    }
}

/// Message -> payload (not decoded yet).
pub fn payload_from_proto(p: proto::Payload) -> Result<Payload, GridError> {
    let enc = match proto::Encoding::try_from(p.encoding) {
        Ok(proto::Encoding::Identity) => Encoding::Identity,
        Ok(proto::Encoding::Zstd) => Encoding::Zstd,
        Err(_) => return Err(invalid(format!("unknown payload encoding {}", p.encoding))),
    };
    if enc == Encoding::Identity && p.data.len() as u64 != p.raw_size {
        return Err(invalid("payload size does not match its data"));
    }
    Ok(Payload::from_parts(enc, p.data, p.raw_size))
}

/// Compiler identity -> message.
pub fn identity_to_proto(c: &CompilerIdentity) -> proto::CompilerIdentity {
    proto::CompilerIdentity {
        family: match c.family {
            CompilerFamily::Gcc => proto::CompilerFamily::Gcc,
            CompilerFamily::Clang => proto::CompilerFamily::Clang,
            _ => proto::CompilerFamily::Unspecified,
        } as i32,
        driver: match c.driver {
            DriverKind::C => proto::DriverKind::C,
            DriverKind::Cxx => proto::DriverKind::Cxx,
        } as i32,
        version: c.version.clone(),
        target: c.target.clone(),
    }
}

/// Message -> compiler identity.
pub fn identity_from_proto(c: proto::CompilerIdentity) -> Result<CompilerIdentity, GridError> {
    let family = match proto::CompilerFamily::try_from(c.family) {
        Ok(proto::CompilerFamily::Gcc) => CompilerFamily::Gcc,
        Ok(proto::CompilerFamily::Clang) => CompilerFamily::Clang,
        _ => return Err(invalid("compiler family missing or unknown")),
    };
    let driver = match proto::DriverKind::try_from(c.driver) {
        Ok(proto::DriverKind::C) => DriverKind::C,
        Ok(proto::DriverKind::Cxx) => DriverKind::Cxx,
        Err(_) => return Err(invalid("unknown compiler driver kind")),
    };
    if c.version.is_empty() || c.version.len() > 128 || c.target.is_empty() || c.target.len() > 128
    {
        return Err(invalid(
            "compiler version and target must be 1-128 characters",
        ));
    }
    Ok(CompilerIdentity {
        family,
        driver,
        version: c.version,
        target: c.target,
    })
}

fn language_to_proto(l: Language) -> proto::Language {
    match l {
        Language::C => proto::Language::C,
        Language::Cxx => proto::Language::Cxx,
        Language::PreprocessedC => proto::Language::PreprocessedC,
        Language::PreprocessedCxx => proto::Language::PreprocessedCxx,
        Language::Assembler => proto::Language::Assembler,
        _ => proto::Language::Unspecified,
    }
}

fn language_from_proto(v: i32) -> Result<Language, GridError> {
    Ok(match proto::Language::try_from(v) {
        Ok(proto::Language::C) => Language::C,
        Ok(proto::Language::Cxx) => Language::Cxx,
        Ok(proto::Language::PreprocessedC) => Language::PreprocessedC,
        Ok(proto::Language::PreprocessedCxx) => Language::PreprocessedCxx,
        Ok(proto::Language::Assembler) => Language::Assembler,
        _ => return Err(invalid("language missing or unknown")),
    })
}

fn output_kind_to_proto(k: OutputKind) -> proto::OutputKind {
    match k {
        OutputKind::SplitDwarf => proto::OutputKind::SplitDwarf,
        _ => proto::OutputKind::Object,
    }
}

fn output_kind_from_proto(v: i32) -> Result<OutputKind, GridError> {
    match proto::OutputKind::try_from(v) {
        Ok(proto::OutputKind::Object) => Ok(OutputKind::Object),
        Ok(proto::OutputKind::SplitDwarf) => Ok(OutputKind::SplitDwarf),
        Err(_) => Err(invalid(format!("unknown output kind {v}"))),
    }
}

/// Limits applied to requests from the network.
#[derive(Clone, Copy, Debug)]
pub struct RequestLimits {
    /// Most arguments.
    pub max_args: usize,
    /// Longest argument, in bytes.
    pub max_arg_len: usize,
    /// Most context files.
    pub max_context_files: usize,
    /// Largest request: both the encoded gRPC message and the decoded size
    /// of its input and context files together, in bytes
    /// (`coordinator.max_request_bytes`, `worker.max_request_bytes`).
    pub max_request_bytes: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_args: 4096,
            max_arg_len: 64 * 1024,
            max_context_files: 4096,
            max_request_bytes: 256 * 1024 * 1024,
        }
    }
}

impl RequestLimits {
    /// The default limits with another request size.
    pub fn with_max_request_bytes(mut self, n: usize) -> Self {
        self.max_request_bytes = n;
        self
    }
}

/// A check a server runs on every task it receives, before anything runs
/// or is queued (the binaries plug in the workers' argument allow list).
pub type TaskCheck = std::sync::Arc<dyn Fn(&CompileTask) -> Result<(), GridError> + Send + Sync>;

/// Longest path-like strings (source name, working directory) accepted.
const MAX_PATH_LEN: usize = 4096;

/// Task -> request.
pub fn task_to_proto(t: &CompileTask) -> proto::CompileRequest {
    proto::CompileRequest {
        task_id: t.id.0.clone(),
        compiler: Some(identity_to_proto(&t.compiler)),
        language: language_to_proto(t.language) as i32,
        args: t.args.clone(),
        source_name: t.source_name.clone(),
        input: Some(payload_to_proto(&t.input)),
        target_arch: t.target_arch.to_string(),
        extra_outputs: t
            .extra_outputs
            .iter()
            .map(|k| output_kind_to_proto(*k) as i32)
            .collect(),
        cwd: t.cwd.clone(),
        context_files: t
            .context_files
            .iter()
            .map(|f| input_file(&f.path, &f.data))
            .collect(),
        source_mode: t.source_mode.as_ref().map(|m| proto::SourceMode {
            files: m.files.iter().map(source_file).collect(),
            output_paths: m.output_paths.clone(),
        }),
    }
}

fn input_file(path: &str, data: &Payload) -> proto::InputFile {
    proto::InputFile {
        path: path.to_owned(),
        data: Some(payload_to_proto(data)),
        digest: Default::default(),
    }
}

fn source_file(f: &SourceFile) -> proto::InputFile {
    proto::InputFile {
        path: f.path.clone(),
        data: f.data.as_ref().map(payload_to_proto),
        digest: bytes::Bytes::copy_from_slice(&f.digest),
    }
}

/// Request -> task, checking shapes and limits.
pub fn task_from_proto(
    r: proto::CompileRequest,
    limits: &RequestLimits,
) -> Result<CompileTask, GridError> {
    let compiler = identity_from_proto(r.compiler.ok_or_else(|| invalid("compiler missing"))?)?;
    let language = language_from_proto(r.language)?;
    if r.args.len() > limits.max_args {
        return Err(invalid(format!(
            "{} arguments exceed the limit of {}",
            r.args.len(),
            limits.max_args
        )));
    }
    if let Some(a) = r.args.iter().find(|a| a.len() > limits.max_arg_len) {
        return Err(invalid(format!(
            "an argument of {} bytes exceeds the limit of {}",
            a.len(),
            limits.max_arg_len
        )));
    }
    if r.args.iter().any(|a| a.contains('\0')) {
        return Err(invalid("an argument contains a NUL byte"));
    }
    if r.source_name.len() > MAX_PATH_LEN || r.source_name.contains('\0') {
        return Err(invalid(format!(
            "source name longer than {MAX_PATH_LEN} bytes or with a NUL byte"
        )));
    }
    if r.cwd.len() > MAX_PATH_LEN || r.cwd.contains('\0') {
        return Err(invalid(format!(
            "working directory longer than {MAX_PATH_LEN} bytes or with a NUL byte"
        )));
    }
    if r.target_arch.len() > 64 {
        return Err(invalid("target architecture longer than 64 characters"));
    }
    // The decoded size of everything the worker would write, bounded before
    // anything is decompressed (a small message may announce a huge input).
    let announced = r
        .input
        .as_ref()
        .map(|p| p.raw_size)
        .unwrap_or(0)
        .saturating_add(
            r.context_files
                .iter()
                .chain(r.source_mode.iter().flat_map(|m| m.files.iter()))
                .map(|f| f.data.as_ref().map(|p| p.raw_size).unwrap_or(0))
                .fold(0u64, u64::saturating_add),
        );
    if announced > limits.max_request_bytes as u64 {
        return Err(invalid(format!(
            "the request's files come to {announced} bytes decoded, over the limit of {} \
             (max_request_bytes)",
            limits.max_request_bytes
        )));
    }
    let input = payload_from_proto(r.input.ok_or_else(|| invalid("input missing"))?)?;
    let mut t = CompileTask::new(compiler, language, r.args, r.source_name, input);
    t.id = if r.task_id.is_empty() {
        TaskId::random()
    } else if r.task_id.len() > 128 {
        return Err(invalid("task id longer than 128 characters"));
    } else {
        TaskId(r.task_id)
    };
    if !r.target_arch.is_empty() {
        t.target_arch = Arch::parse(&r.target_arch);
    }
    t.extra_outputs = r
        .extra_outputs
        .into_iter()
        .map(output_kind_from_proto)
        .collect::<Result<_, _>>()?;
    t.cwd = r.cwd;
    if r.context_files.len() > limits.max_context_files {
        return Err(invalid(format!(
            "{} context files exceed the limit of {}",
            r.context_files.len(),
            limits.max_context_files
        )));
    }
    for f in r.context_files {
        if ContextFile::parent_depth(&f.path).is_none_or(|d| d > 16) {
            return Err(invalid(format!(
                "context file path `{}` must be relative, without `.` or inner `..`",
                f.path
            )));
        }
        t.context_files.push(ContextFile {
            path: f.path,
            data: payload_from_proto(f.data.ok_or_else(|| invalid("context file without data"))?)?,
        });
    }
    if let Some(m) = r.source_mode {
        t.source_mode = Some(source_mode_from_proto(m, t.extra_outputs.len(), limits)?);
    }
    Ok(t)
}

fn source_mode_from_proto(
    m: proto::SourceMode,
    extra_outputs: usize,
    limits: &RequestLimits,
) -> Result<SourceMode, GridError> {
    if m.files.len() > limits.max_context_files {
        return Err(invalid(format!(
            "{} source files exceed the limit of {}",
            m.files.len(),
            limits.max_context_files
        )));
    }
    if m.output_paths.len() != 1 + extra_outputs {
        return Err(invalid(format!(
            "source mode names {} output paths for {} outputs",
            m.output_paths.len(),
            1 + extra_outputs
        )));
    }
    for p in &m.output_paths {
        if p.is_empty() || p.len() > MAX_PATH_LEN || p.contains('\0') {
            return Err(invalid(
                "an output path is empty, too long or holds a NUL byte",
            ));
        }
    }
    let mut files = Vec::with_capacity(m.files.len());
    for f in m.files {
        if SourceMode::relative_path(&f.path).is_none() {
            return Err(invalid(format!(
                "source file path `{}` must be absolute and stay below the root",
                f.path.chars().take(200).collect::<String>()
            )));
        }
        let data = f.data.map(payload_from_proto).transpose()?;
        let digest = match (<[u8; 32]>::try_from(&f.digest[..]), &data) {
            (Ok(d), _) => d,
            // An older client sends no digest: hash the content.
            (Err(_), Some(p)) if f.digest.is_empty() => SourceFile::digest_of(
                &p.decode_limited(limits.max_request_bytes as u64)
                    .map_err(|e| invalid(format!("source file {}: {e}", f.path)))?,
            ),
            (Err(_), None) if f.digest.is_empty() => {
                return Err(invalid(format!(
                    "source file {} has neither content nor digest",
                    f.path
                )));
            }
            (Err(_), _) => {
                return Err(invalid(format!(
                    "source file {}: a digest is 32 bytes (BLAKE3), not {}",
                    f.path,
                    f.digest.len()
                )));
            }
        };
        files.push(SourceFile::from_parts(f.path, digest, data));
    }
    Ok(SourceMode {
        files,
        output_paths: m.output_paths,
    })
}

/// Output -> response.
pub fn output_to_proto(o: &CompileOutput) -> proto::CompileResponse {
    proto::CompileResponse {
        exit_code: o.exit_code,
        stdout: o.stdout.clone(),
        stderr: o.stderr.clone(),
        outputs: o
            .outputs
            .iter()
            .map(|f| proto::OutputFile {
                kind: output_kind_to_proto(f.kind) as i32,
                data: Some(payload_to_proto(&f.data)),
            })
            .collect(),
        worker_id: o
            .worker_id
            .as_ref()
            .map(|w| w.0.clone())
            .unwrap_or_default(),
        from_cache: o.from_cache,
        queue_time_us: o.timings.queue.as_micros() as u64,
        compile_time_us: o.timings.compile.as_micros() as u64,
    }
}

/// Response -> output.
pub fn output_from_proto(r: proto::CompileResponse) -> Result<CompileOutput, GridError> {
    let mut o = CompileOutput::default();
    o.exit_code = r.exit_code;
    o.stdout = r.stdout;
    o.stderr = r.stderr;
    for f in r.outputs {
        o.outputs.push(OutputFile {
            kind: output_kind_from_proto(f.kind)?,
            data: payload_from_proto(f.data.ok_or_else(|| invalid("output without data"))?)?,
        });
    }
    o.worker_id = (!r.worker_id.is_empty()).then_some(WorkerId(r.worker_id));
    o.from_cache = r.from_cache;
    o.timings = Timings {
        queue: Duration::from_micros(r.queue_time_us),
        compile: Duration::from_micros(r.compile_time_us),
    };
    Ok(o)
}

/// Worker source -> message.
pub fn source_to_proto(s: WorkerSource) -> proto::WorkerSource {
    match s {
        WorkerSource::Handshake => proto::WorkerSource::Handshake,
        WorkerSource::Static => proto::WorkerSource::Static,
        WorkerSource::Mdns => proto::WorkerSource::Mdns,
    }
}

/// Worker info -> message.
pub fn worker_to_proto(w: &WorkerInfo) -> proto::WorkerInfo {
    let c = &w.capabilities;
    proto::WorkerInfo {
        id: w.id.0.clone(),
        address: w.address.clone(),
        http_port: u32::from(w.http_port),
        source: source_to_proto(w.source) as i32,
        capabilities: Some(proto::Capabilities {
            arch: c.arch.as_ref().map(|a| a.to_string()).unwrap_or_default(),
            os: c.os.clone(),
            cores: c.cores,
            memory_bytes: c.memory_bytes,
            compilers: c
                .compilers
                .iter()
                .map(|ci| proto::CompilerInfo {
                    name: ci.name.clone(),
                    path: ci.path.clone(),
                    identity: Some(identity_to_proto(&ci.identity)),
                })
                .collect(),
            docker_images: c
                .docker_images
                .iter()
                .map(|d| proto::DockerImage {
                    arch: d.arch.to_string(),
                    image: d.image.clone(),
                })
                .collect(),
            max_parallel_tasks: c.max_parallel_tasks,
        }),
        version: w.version.clone(),
    }
}

/// Message -> worker info.
pub fn worker_from_proto(w: proto::WorkerInfo) -> Result<WorkerInfo, GridError> {
    if w.id.is_empty() || w.id.len() > 253 {
        return Err(invalid("worker id must be 1-253 characters"));
    }
    if w.address.len() > 1024 || w.version.len() > 128 {
        return Err(invalid(
            "worker address (at most 1024 characters) or version (128) too long",
        ));
    }
    let source = match proto::WorkerSource::try_from(w.source) {
        Ok(proto::WorkerSource::Static) => WorkerSource::Static,
        Ok(proto::WorkerSource::Mdns) => WorkerSource::Mdns,
        _ => WorkerSource::Handshake,
    };
    let c = w.capabilities.unwrap_or_default();
    let mut caps = Capabilities::new(if c.arch.is_empty() {
        Arch::Other("unknown".into())
    } else {
        Arch::parse(&c.arch)
    });
    caps.os = c.os.chars().take(64).collect();
    caps.cores = c.cores;
    caps.memory_bytes = c.memory_bytes;
    caps.max_parallel_tasks = c.max_parallel_tasks.max(1);
    for ci in c.compilers.into_iter().take(256) {
        if ci.name.len() > 1024 || ci.path.len() > MAX_PATH_LEN {
            continue;
        }
        let Some(id) = ci.identity else { continue };
        let Ok(identity) = identity_from_proto(id) else {
            continue;
        };
        caps.compilers.push(CompilerInfo {
            name: ci.name,
            path: ci.path,
            identity,
        });
    }
    caps.docker_images = c
        .docker_images
        .into_iter()
        .take(256)
        .filter(|d| d.arch.len() <= 64 && d.image.len() <= 1024)
        .map(|d| DockerImage {
            arch: Arch::parse(&d.arch),
            image: d.image,
        })
        .collect();
    let mut info = WorkerInfo::new(WorkerId(w.id), w.address, source, caps);
    info.http_port = u16::try_from(w.http_port).unwrap_or(0);
    info.version = w.version;
    Ok(info)
}

#[cfg(test)]
mod tests;
