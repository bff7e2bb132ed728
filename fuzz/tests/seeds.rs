//! The seed inputs in `fuzz/seeds/` that the product code writes (compile
//! requests, worker registrations, cache entries) are made here, by the
//! product code itself, so that they stay real:
//!
//! ```text
//! cargo test --manifest-path fuzz/Cargo.toml --test seeds               # check them
//! HG_WRITE_FUZZ_SEEDS=1 cargo test --manifest-path fuzz/Cargo.toml --test seeds
//! ```
//!
//! Without `HG_WRITE_FUZZ_SEEDS` the test checks that every committed seed
//! is still accepted by the decoder its target fuzzes (a format change
//! makes it fail: regenerate the seeds then).

use std::path::{Path, PathBuf};

use hybridgrid_cache::entry::CacheEntry;
use hybridgrid_core::config::ConfigLoader;
use hybridgrid_core::payload::Payload;
use hybridgrid_core::task::{
    CompileOutput, CompileTask, CompilerFamily, CompilerIdentity, ContextFile, DriverKind,
    Language, OutputFile, OutputKind, TaskId,
};
use hybridgrid_core::worker::{
    Arch, Capabilities, CompilerInfo, DockerImage, WorkerId, WorkerInfo, WorkerSource,
};
use hybridgrid_net::convert::{
    RequestLimits, task_from_proto, task_to_proto, worker_from_proto, worker_to_proto,
};
use hybridgrid_net::proto;
use prost::Message;

fn seeds(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target)
}

fn writing() -> bool {
    std::env::var_os("HG_WRITE_FUZZ_SEEDS").is_some()
}

/// Writes the seeds when asked, then returns every committed seed.
fn sync(target: &str, made: &[(&str, Vec<u8>)]) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = seeds(target);
    if writing() {
        std::fs::create_dir_all(&dir).expect("seed directory");
        for (name, bytes) in made {
            std::fs::write(dir.join(name), bytes).expect("seed written");
        }
    }
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("seed directory")
        .map(|e| {
            let p = e.expect("seed entry").path();
            let b = std::fs::read(&p).expect("seed readable");
            (p, b)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

fn gcc(driver: DriverKind) -> CompilerIdentity {
    CompilerIdentity {
        family: CompilerFamily::Gcc,
        driver,
        version: "12.2.0".into(),
        target: "x86_64-linux-gnu".into(),
    }
}

const PREPROCESSED: &str = "# 0 \"src/twice.c\"\n# 1 \"<built-in>\"\n# 1 \"src/twice.c\"\n\
    int twice(int x) { return 2 * x; }\n";

fn requests() -> Vec<(&'static str, Vec<u8>)> {
    // What hgbuild sends for `gcc -O2 -g -Wall -c src/twice.c -o twice.o`.
    let plain = CompileTask::new(
        gcc(DriverKind::C),
        Language::PreprocessedC,
        ["-O2", "-g", "-Wall", "-fPIC"].map(String::from).to_vec(),
        "src/twice.c",
        Payload::compress(PREPROCESSED.as_bytes().to_vec()),
    );
    // A C++ compile in direct mode: the source and its headers, a
    // split-DWARF output.
    let mut direct = CompileTask::new(
        gcc(DriverKind::Cxx),
        Language::Cxx,
        ["-std=c++17", "-O1", "-gsplit-dwarf", "-Iinclude"]
            .map(String::from)
            .to_vec(),
        "lib/w.cpp",
        Payload::raw(b"#include \"w.h\"\nint w() { return W; }\n".to_vec()),
    );
    direct.extra_outputs = vec![OutputKind::SplitDwarf];
    direct.cwd = "/home/dev/project/lib".into();
    direct.context_files = vec![
        ContextFile {
            path: "../include/w.h".into(),
            data: Payload::raw(b"#define W 3\n".to_vec()),
        },
        ContextFile {
            path: "w.h".into(),
            data: Payload::compress(b"#include \"../include/w.h\"\n".to_vec()),
        },
    ];
    [("preprocessed-c", plain), ("direct-cxx", direct)]
        .into_iter()
        .map(|(n, mut t)| {
            // A fixed id: the seeds do not change when rewritten.
            t.id = TaskId(format!("seed-{n}"));
            (n, task_to_proto(&t).encode_to_vec())
        })
        .collect()
}

#[test]
fn compile_request_seeds_are_accepted() {
    for (path, bytes) in sync("compile_request", &requests()) {
        let req = proto::CompileRequest::decode(&bytes[..]).expect("decodes");
        task_from_proto(req, &RequestLimits::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

fn workers() -> Vec<(&'static str, Vec<u8>)> {
    let mut caps = Capabilities::new(Arch::parse("x86_64"));
    caps.cores = 8;
    caps.memory_bytes = 16 << 30;
    caps.max_parallel_tasks = 8;
    caps.compilers = vec![
        CompilerInfo {
            name: "gcc".into(),
            path: "/usr/bin/gcc".into(),
            identity: gcc(DriverKind::C),
        },
        CompilerInfo {
            name: "aarch64-linux-gnu-g++".into(),
            path: "/usr/bin/aarch64-linux-gnu-g++".into(),
            identity: CompilerIdentity {
                family: CompilerFamily::Gcc,
                driver: DriverKind::Cxx,
                version: "12.2.0".into(),
                target: "aarch64-linux-gnu".into(),
            },
        },
    ];
    caps.docker_images = vec![DockerImage {
        arch: Arch::parse("armv7"),
        image: "dockcross/linux-armv7".into(),
    }];
    let mut w = WorkerInfo::new(
        WorkerId("worker-1".into()),
        "10.0.0.7:50052",
        WorkerSource::Handshake,
        caps,
    );
    w.http_port = 9090;
    w.version = "0.1.0".into();
    vec![("handshake-x86_64", worker_to_proto(&w).encode_to_vec())]
}

#[test]
fn worker_info_seeds_are_accepted() {
    for (path, bytes) in sync("worker_info", &workers()) {
        let w = proto::WorkerInfo::decode(&bytes[..]).expect("decodes");
        worker_from_proto(w).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

fn entries() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = CompileOutput::default();
    out.stderr = b"src/twice.c:3:5: warning: unused variable 'y' [-Wunused-variable]\n"
        .to_vec()
        .into();
    out.outputs = vec![
        OutputFile {
            kind: OutputKind::Object,
            data: Payload::compress(b"\x7fELF\x02\x01\x01\0object code".to_vec()),
        },
        OutputFile {
            kind: OutputKind::SplitDwarf,
            data: Payload::compress(b"\x7fELF\x02\x01\x01\0dwarf".to_vec()),
        },
    ];
    let entry = CacheEntry::from_output(&out).with_dep_file(Payload::raw(
        b"twice.o: src/twice.c include/twice.h\n".to_vec(),
    ));
    let bytes = entry.encode();
    // The target also decodes its input with a checksum appended: the
    // entry without its checksum lets the fuzzer start behind it.
    let body = bytes[..bytes.len() - 32].to_vec();
    vec![
        ("object-dwo-deps", bytes),
        ("object-dwo-deps.unsealed", body),
    ]
}

#[test]
fn cache_entry_seeds_decode() {
    for (path, bytes) in sync("cache_entry", &entries()) {
        let sealed = [&bytes[..], blake3::hash(&bytes).as_bytes()].concat();
        if let Err(e) = CacheEntry::decode(&bytes) {
            CacheEntry::decode(&sealed)
                .unwrap_or_else(|e2| panic!("{}: {e}; with a checksum: {e2}", path.display()));
        }
    }
}

#[test]
fn config_seeds_load() {
    for (path, bytes) in sync("config_yaml", &[]) {
        let (yaml, env) = match bytes.iter().position(|&b| b == 0) {
            Some(i) => (&bytes[..i], &bytes[i + 1..]),
            None => (&bytes[..], &[][..]),
        };
        let env: Vec<(String, String)> = String::from_utf8_lossy(env)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("seed.yaml");
        std::fs::write(&file, yaml).expect("written");
        ConfigLoader::new()
            .no_search()
            .file(&file)
            .env_vars(env)
            .load()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}
