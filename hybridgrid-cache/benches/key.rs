//! The cost of a result cache key (`CacheKey::for_task`: decoding the
//! task's input and hashing it with the compiler, arguments and target),
//! for raw and zstd-compressed inputs of typical preprocessed sizes.
//!
//! `cargo bench -p hybridgrid-cache --bench key`

// criterion's macros generate undocumented public items.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hybridgrid_cache::CacheKey;
use hybridgrid_core::payload::{Encoding, Payload};
use hybridgrid_core::task::{CompileTask, CompilerFamily, CompilerIdentity, DriverKind, Language};

/// Preprocessed-looking C of `len` bytes (declarations with varying names,
/// so it compresses like real preprocessed code rather than a repeat).
fn source(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 128);
    let mut i = 0u64;
    while v.len() < len {
        let line = match i % 4 {
            0 => format!(
                "# {} \"/usr/include/x86_64-linux-gnu/bits/types_{}.h\" 3 4\n",
                i,
                i % 37
            ),
            1 => format!("extern int func_{i}(const char *__restrict __s, unsigned long __n);\n"),
            2 => format!("typedef struct {{ int f_{i}; long g_{i}; }} type_{i}_t;\n"),
            _ => format!(
                "static inline int inl_{i}(int x) {{ return x * {} + {}; }}\n",
                i % 13,
                i % 7
            ),
        };
        v.extend_from_slice(line.as_bytes());
        i += 1;
    }
    v.truncate(len);
    v
}

fn bench(c: &mut Criterion) {
    let gcc = CompilerIdentity {
        family: CompilerFamily::Gcc,
        driver: DriverKind::C,
        version: "12.2.0".into(),
        target: "x86_64-linux-gnu".into(),
    };
    let args: Vec<String> = "-O2 -g -fPIC -Wall -std=gnu11 -DNDEBUG"
        .split(' ')
        .map(str::to_owned)
        .collect();
    let mut group = c.benchmark_group("cache_key");
    for (len, label) in [
        (1usize << 10, "1 KiB"),
        (100 << 10, "100 KiB"),
        (1 << 20, "1 MiB"),
    ] {
        let text = source(len);
        for (enc, payload) in [
            ("raw", Payload::raw(text.clone())),
            ("zstd", Payload::compress(text.clone())),
        ] {
            if enc == "zstd" && payload.encoding() != Encoding::Zstd {
                continue;
            }
            let task = CompileTask::new(
                gcc.clone(),
                Language::PreprocessedC,
                args.clone(),
                "x.c",
                payload,
            );
            group.throughput(Throughput::Bytes(len as u64));
            group.bench_with_input(BenchmarkId::new(enc, label), &task, |b, t| {
                b.iter(|| CacheKey::for_task(black_box(t)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
