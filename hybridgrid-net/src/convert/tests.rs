use super::*;

fn gcc() -> CompilerIdentity {
    CompilerIdentity {
        family: CompilerFamily::Gcc,
        driver: DriverKind::Cxx,
        version: "12.2.0".into(),
        target: "x86_64-linux-gnu".into(),
    }
}

#[test]
fn task_roundtrip() {
    let mut t = CompileTask::new(
        gcc(),
        Language::PreprocessedCxx,
        vec!["-O2".into(), "-g".into()],
        "a/b.cc",
        Payload::compress("int x;\n".repeat(1000).into_bytes()),
    );
    t.extra_outputs = vec![OutputKind::SplitDwarf];
    t.cwd = "/home/u/p".into();
    t.context_files = vec![ContextFile {
        path: "../inc/a.h".into(),
        data: Payload::raw(&b"int a;"[..]),
    }];
    let back = task_from_proto(task_to_proto(&t), &RequestLimits::default()).unwrap();
    assert_eq!(back, t);
}

#[test]
fn source_mode_roundtrip_and_refusals() {
    let mut t = CompileTask::new(
        gcc(),
        Language::Cxx,
        vec!["-g".into(), "-Iinclude".into()],
        "src/b.cc",
        Payload::raw(&b"int b;"[..]),
    );
    t.cwd = "/home/u/p".into();
    t.source_mode = Some(SourceMode {
        files: vec![SourceFile::with_data(
            "/home/u/p/include/a.h",
            &b"int a;"[..],
        )],
        output_paths: vec!["out/b.o".into()],
    });
    let lim = RequestLimits::default();
    assert_eq!(task_from_proto(task_to_proto(&t), &lim).unwrap(), t);

    let mut r = task_to_proto(&t);
    r.source_mode.as_mut().unwrap().files[0].path = "include/a.h".into();
    let e = task_from_proto(r, &lim).unwrap_err().to_string();
    assert!(e.contains("must be absolute"), "{e}");
    let mut r = task_to_proto(&t);
    r.source_mode.as_mut().unwrap().files[0].path = "/../etc/passwd".into();
    assert!(task_from_proto(r, &lim).is_err());
    let mut r = task_to_proto(&t);
    r.source_mode
        .as_mut()
        .unwrap()
        .output_paths
        .push("x.dwo".into());
    let e = task_from_proto(r, &lim).unwrap_err().to_string();
    assert!(e.contains("output paths"), "{e}");
    // Source files count towards the decoded size limit.
    let mut r = task_to_proto(&t);
    r.source_mode.as_mut().unwrap().files[0]
        .data
        .as_mut()
        .unwrap()
        .raw_size = 1 << 40;
    let e = task_from_proto(r, &lim).unwrap_err().to_string();
    assert!(e.contains("max_request_bytes"), "{e}");
    // A file sent by digest only travels as one.
    let mut d = t.clone();
    let f = &mut d.source_mode.as_mut().unwrap().files[0];
    *f = SourceFile::by_digest(f.path.clone(), f.digest);
    assert_eq!(task_from_proto(task_to_proto(&d), &lim).unwrap(), d);
    // An older client's file without a digest gets its content's.
    let mut r = task_to_proto(&t);
    r.source_mode.as_mut().unwrap().files[0].digest = Default::default();
    assert_eq!(task_from_proto(r, &lim).unwrap(), t);
    // A digest of another length, or neither content nor digest.
    let mut r = task_to_proto(&t);
    r.source_mode.as_mut().unwrap().files[0].digest = vec![1u8; 20].into();
    let e = task_from_proto(r, &lim).unwrap_err().to_string();
    assert!(e.contains("a digest is 32 bytes"), "{e}");
    let mut r = task_to_proto(&d);
    r.source_mode.as_mut().unwrap().files[0].digest = Default::default();
    let e = task_from_proto(r, &lim).unwrap_err().to_string();
    assert!(e.contains("neither content nor digest"), "{e}");
}

#[test]
fn output_roundtrip() {
    let mut o = CompileOutput::default();
    o.exit_code = 1;
    o.stderr = bytes::Bytes::from_static(b"x.c:1:1: error");
    o.outputs.push(OutputFile {
        kind: OutputKind::Object,
        data: Payload::raw(&b"\x7fELF"[..]),
    });
    o.worker_id = Some(WorkerId("w1".into()));
    o.timings.compile = Duration::from_millis(12);
    assert_eq!(output_from_proto(output_to_proto(&o)).unwrap(), o);
}

#[test]
fn malformed_requests_are_refused() {
    let base = task_to_proto(&CompileTask::new(
        gcc(),
        Language::PreprocessedC,
        vec![],
        "x.c",
        Payload::raw(&b"int x;"[..]),
    ));
    let lim = RequestLimits::default();
    let mut r = base.clone();
    r.compiler = None;
    assert!(task_from_proto(r, &lim).is_err());
    let mut r = base.clone();
    r.language = 99;
    assert!(task_from_proto(r, &lim).is_err());
    let mut r = base.clone();
    r.args = vec!["x".into(); 5000];
    assert!(task_from_proto(r, &lim).is_err());
    let mut r = base.clone();
    if let Some(p) = r.input.as_mut() {
        p.raw_size = 1;
    }
    assert!(task_from_proto(r, &lim).is_err());
    let mut r = base.clone();
    r.input = None;
    assert!(task_from_proto(r, &lim).is_err());
    for bad in ["/etc/passwd", "a/../../x", "./a", ""] {
        let mut r = base.clone();
        r.context_files = vec![proto::InputFile {
            path: bad.into(),
            data: Some(payload_to_proto(&Payload::raw(&b"x"[..]))),
            digest: Default::default(),
        }];
        assert!(task_from_proto(r, &lim).is_err(), "{bad}");
    }
}

#[test]
fn worker_roundtrip() {
    let mut caps = Capabilities::new(Arch::Amd64);
    caps.cores = 8;
    caps.max_parallel_tasks = 4;
    caps.compilers.push(CompilerInfo {
        name: "gcc".into(),
        path: "/usr/bin/gcc".into(),
        identity: gcc(),
    });
    let mut w = WorkerInfo::new(
        WorkerId("w1".into()),
        "10.0.0.2:50052",
        WorkerSource::Static,
        caps,
    );
    w.http_port = 9090;
    w.version = "0.1.0".into();
    assert_eq!(worker_from_proto(worker_to_proto(&w)).unwrap(), w);
}
