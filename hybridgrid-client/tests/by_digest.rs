//! A compile with debug info through [`compile`] and a real native executor
//! with real gcc: the system's headers go by digest only; when the worker
//! answers that it lacks them, the client sends the task once more with
//! their content, and the object equals a local compile's.
#![allow(clippy::unwrap_used)] // test

use std::ffi::OsString;
use std::sync::{Arc, Mutex};

use hybridgrid_client::{ClientOptions, Route, compile};
use hybridgrid_core::task::CompileTask;
use hybridgrid_core::{BoxError, GridError};
use hybridgrid_exec::detect;
use hybridgrid_exec::native::{NativeExecutor, NativeOptions};

#[tokio::test]
async fn lacked_system_headers_are_sent_again_with_their_content() {
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

    // Each call records how many files came by digest only; the first is
    // answered as a worker that has none of them would answer.
    let calls: Arc<Mutex<Vec<usize>>> = Arc::default();
    let exec = NativeExecutor::new(vec![cc.clone()], NativeOptions::default());
    let seen = calls.clone();
    let service = tower::service_fn(move |t: CompileTask| {
        let (exec, seen) = (exec.clone(), seen.clone());
        async move {
            let lacked: Vec<String> = t
                .source_mode
                .as_ref()
                .map(|m| m.files.iter().filter(|f| f.data.is_none()))
                .into_iter()
                .flatten()
                .map(|f| f.path.clone())
                .collect();
            let first = {
                let mut s = seen.lock().unwrap();
                s.push(lacked.len());
                s.len() == 1
            };
            if first {
                return Err(Box::new(GridError::MissingInputs(lacked)) as BoxError);
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
        2,
        "one answer naming the files, then the compile"
    );
    assert!(calls[0] > 0, "stdio.h and its headers go by digest only");
    assert_eq!(calls[1], 0, "every file named came back with its content");
    assert!(
        std::fs::read(&local).unwrap() == std::fs::read(&remote).unwrap(),
        "the object differs from the local compile's"
    );
}
