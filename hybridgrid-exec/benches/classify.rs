//! The cost of classifying a compiler command line (what `hgbuild` does
//! before every compile): a short line, a typical CMake line and a long
//! line with many `-D`/`-I`, plus one that must stay local.
//!
//! `cargo bench -p hybridgrid-exec --bench classify`

// criterion's macros generate undocumented public items.
#![allow(missing_docs)]

use std::ffi::OsString;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hybridgrid_core::task::{CompilerFamily, DriverKind};
use hybridgrid_exec::args::{Classification, classify};

fn argv(words: &[String]) -> Vec<OsString> {
    words.iter().map(OsString::from).collect()
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

fn bench(c: &mut Criterion) {
    let short = words("-O2 -c foo.c -o foo.o");
    let cmake = words(
        "-DHAVE_CONFIG_H -DNDEBUG -I/build/src -I/src/include -I/src/lib \
         -isystem /usr/include/openssl -O2 -g -fPIC -Wall -Wextra -Wno-unused-parameter \
         -std=gnu11 -MD -MT src/CMakeFiles/lib.dir/util/strbuf.c.o \
         -MF src/CMakeFiles/lib.dir/util/strbuf.c.o.d \
         -o src/CMakeFiles/lib.dir/util/strbuf.c.o -c /src/lib/util/strbuf.c",
    );
    let mut long = cmake.clone();
    for i in 0..100 {
        long.insert(0, format!("-DFEATURE_{i}=1"));
        long.insert(0, format!("-I/src/third_party/module{i}/include"));
    }
    let local = words("-O2 -c foo.c -o foo.o -v");
    let cases = [
        ("short", short),
        ("cmake", cmake),
        ("long", long),
        ("local -v", local),
    ];
    let mut group = c.benchmark_group("classify");
    for (name, w) in &cases {
        let args = argv(w);
        // Check the cases are what they claim before timing them.
        let distributable = matches!(
            classify(CompilerFamily::Gcc, DriverKind::C, &args),
            Classification::Distributable(_)
        );
        assert_eq!(distributable, !name.starts_with("local"), "{name}");
        let id = format!("{name}, {} args", args.len());
        group.bench_with_input(BenchmarkId::from_parameter(id), &args, |b, args| {
            b.iter(|| classify(CompilerFamily::Gcc, DriverKind::C, black_box(args)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
