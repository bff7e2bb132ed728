//! The `Client` API with a real compiler and no grid: a compile runs
//! locally, the same compile again is a local cache hit, a link runs here,
//! a missing compiler is exit 127, and the summary and the trace are drawn
//! from the client's events.

use std::ffi::OsString;

use hybridgrid_client::{Client, Route};
use hybridgrid_core::config::ConfigLoader;

fn args(a: &[&str]) -> Vec<OsString> {
    a.iter().map(OsString::from).collect()
}

#[tokio::test]
async fn compiles_caches_links_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("hello.c");
    std::fs::write(&src, "int main(void) { return 0; }\n").unwrap();
    let obj = dir.path().join("hello.o");
    let cfg = ConfigLoader::new()
        .no_search()
        .set("discovery.mdns.enabled", false)
        .set("cache.dir", dir.path().join("cache").display().to_string())
        .load()
        .unwrap();
    let client = Client::new(cfg);
    let (s, o) = (src.to_str().unwrap(), obj.to_str().unwrap());

    let first = client
        .compile("cc", &args(&["-O2", "-c", s, "-o", o]))
        .await;
    assert_eq!(first.exit_code, 0);
    assert!(matches!(first.route, Route::Local(_)), "{:?}", first.route);
    let built = std::fs::read(&obj).unwrap();
    std::fs::remove_file(&obj).unwrap();

    let again = client
        .compile("cc", &args(&["-O2", "-c", s, "-o", o]))
        .await;
    assert_eq!(again.exit_code, 0);
    assert!(
        matches!(again.route, Route::Cache | Route::DirectCache),
        "{:?}",
        again.route
    );
    assert_eq!(std::fs::read(&obj).unwrap(), built, "the replayed object");

    let exe = dir.path().join("hello");
    let link = client
        .compile("cc", &args(&[o, "-o", exe.to_str().unwrap()]))
        .await;
    assert_eq!(link.exit_code, 0);
    assert!(matches!(link.route, Route::Local(_)), "{:?}", link.route);
    let missing = client
        .compile("no-such-compiler-hg", &args(&["-c", s]))
        .await;
    assert_eq!(missing.exit_code, 127);

    let summary = client.summary();
    assert_eq!(
        (summary.total, summary.cached, summary.local, summary.failed),
        (4, 1, 3, 1),
        "{}",
        summary.line()
    );
    let trace = dir.path().join("trace.json");
    client.write_trace(&trace, "hello").unwrap();
    let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let slices: Vec<&str> = trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X")
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        slices.len(),
        5,
        "the build and its 4 compiler calls: {slices:?}"
    );
    assert!(slices.contains(&"hello"), "{slices:?}");
    assert!(slices.contains(&s), "{slices:?}");
}
