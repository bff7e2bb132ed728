//! A compile with debug info through [`compile`] and a real native executor
//! with real gcc: the headers go by digest only; when a worker answers that
//! it lacks one, the client sends the task again with its content, and when
//! the next one lacks another, with the content of every file; the object
//! equals a local compile's.
#![allow(clippy::unwrap_used)] // test

use std::ffi::OsString;
use std::sync::{Arc, Mutex};

use hybridgrid_client::{ClientOptions, Route, compile};
use hybridgrid_core::task::CompileTask;
use hybridgrid_core::{BoxError, GridError};
use hybridgrid_exec::detect;
use hybridgrid_exec::native::{NativeExecutor, NativeOptions};

#[tokio::test]
async fn lacked_headers_are_sent_again_with_their_content() {
    let dirs = detect::DetectOptions::default().path_dirs;
    let cc = match detect::find_and_identify("gcc", &dirs).await {
        Ok(c) => c,
        Err(e) if std::env::var("HG_TEST_REQUIRE_ALL").as_deref() != Ok("1") => {
            eprintln!("skipping: gcc not usable: {e}");
            return;
        }
        Err(e) => panic!("gcc is required: {e}"),
    };
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("a.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\nint main(void) { printf(\"%s\\n\", __FILE__); return 0; }\n",
    )
    .unwrap();
    let (local, remote) = (tmp.path().join("local.o"), tmp.path().join("remote.o"));
    // The working directory is recorded with -g: both compile in this one.
    let status = std::process::Command::new(&cc.path)
        .args(["-g", "-O1", "-c"])
        .arg(&src)
        .arg("-o")
        .arg(&local)
        .status()
        .unwrap();
    assert!(status.success());

    // Each call records which files came by digest only. The first is
    // answered as a worker that lacks one of them, the second as another
    // worker that lacks another; the third goes to the real executor.
    let calls: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let exec = NativeExecutor::new(vec![cc.clone()], NativeOptions::default());
    let seen = calls.clone();
    let service = tower::service_fn(move |t: CompileTask| {
        let (exec, seen) = (exec.clone(), seen.clone());
        async move {
            let by_digest: Vec<String> = t
                .source_mode
                .as_ref()
                .map(|m| m.files.iter().filter(|f| f.data.is_none()))
                .into_iter()
                .flatten()
                .map(|f| f.path.clone())
                .collect();
            let n = {
                let mut s = seen.lock().unwrap();
                s.push(by_digest.clone());
                s.len()
            };
            if n < 3 {
                let one = by_digest[by_digest.len() - 1].clone();
                return Err(Box::new(GridError::MissingInputs(vec![one])) as BoxError);
            }
            exec.run(t).await.map_err(|e| Box::new(e) as BoxError)
        }
    });
    let args: Vec<OsString> = vec![
        "-g".into(),
        "-O1".into(),
        "-c".into(),
        src.clone().into(),
        "-o".into(),
        remote.clone().into(),
    ];
    let out = compile(&cc, &args, Some(Ok(service)), &ClientOptions::default()).await;
    assert_eq!(out.exit_code, 0);
    assert!(matches!(out.route, Route::Remote(_)), "{:?}", out.route);
    let calls = calls.lock().unwrap().clone();
    assert_eq!(
        calls.len(),
        3,
        "two answers naming a file, then the compile"
    );
    assert!(
        calls[0].len() > 2,
        "stdio.h and its headers go by digest only"
    );
    assert_eq!(
        calls[1],
        calls[0][..calls[0].len() - 1],
        "the second time, the file named came with its content"
    );
    assert!(calls[2].is_empty(), "the third time, every file did");
    assert!(
        std::fs::read(&local).unwrap() == std::fs::read(&remote).unwrap(),
        "the object differs from the local compile's"
    );
}
