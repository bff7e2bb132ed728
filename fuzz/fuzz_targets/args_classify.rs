//! Compiler command lines (NUL-separated) through the client's classifier
//! and the worker's allow list: no panic, and the remote arguments of a
//! distributable plan always pass the workers' allow list (as
//! `CompilePlan::remote_args` promises; otherwise every such compile would
//! be refused remotely and fall back to a local build).
#![no_main]

use std::ffi::OsString;

use hybridgrid_core::task::{CompilerFamily, DriverKind};
use hybridgrid_exec::args::{Classification, classify, validate_remote_args};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    // `@file` would read files of the machine running the fuzzer.
    let args: Vec<String> = text
        .split('\0')
        .filter(|a| !a.starts_with('@'))
        .map(str::to_owned)
        .collect();
    let _ = validate_remote_args(&args);
    let family = if mode & 1 == 0 {
        CompilerFamily::Gcc
    } else {
        CompilerFamily::Clang
    };
    let driver = if mode & 2 == 0 {
        DriverKind::C
    } else {
        DriverKind::Cxx
    };
    let os: Vec<OsString> = args.iter().map(OsString::from).collect();
    if let Classification::Distributable(plan) = classify(family, driver, &os) {
        let _ = plan.preprocess_args();
        let remote = plan.remote_args();
        if let Err(e) = validate_remote_args(&remote) {
            panic!("a distributable plan's remote arguments are refused: {e}; {remote:?}");
        }
    }
});
