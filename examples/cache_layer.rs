//! A client that puts hybridgrid's `CacheLayer` in front of its own compile
//! service: the tool keeps its way of compiling (here the local gcc through
//! the native executor; it could be any remote-execution client) and gets a
//! content-addressed disk cache by adding one layer. The second compile of
//! the same task is answered by the cache without calling the service; a
//! changed source is a miss.
//!
//! Run it (needs gcc): `cargo run -p hybridgrid-examples --example cache_layer`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hybridgrid_cache::{CacheLayer, CacheStore, DiskStore};
use hybridgrid_core::payload::Payload;
use hybridgrid_core::task::{CompileTask, Language, OutputKind};
use hybridgrid_exec::detect::{DetectOptions, find_and_identify};
use hybridgrid_exec::native::{NativeExecutor, NativeOptions};
use tower::{Layer, ServiceExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let gcc = find_and_identify("gcc", &DetectOptions::default().path_dirs).await?;
    let dir = tempfile::tempdir()?;

    // The tool's own compile service, counting its calls.
    let calls = Arc::new(AtomicUsize::new(0));
    let native = NativeExecutor::new(vec![gcc.clone()], NativeOptions::default());
    let own = {
        let calls = calls.clone();
        tower::service_fn(move |task: CompileTask| {
            calls.fetch_add(1, Ordering::Relaxed);
            native.clone().oneshot(task)
        })
    };

    // One layer adds the cache (1 GB limit, under our temp dir).
    let store = DiskStore::new(dir.path().join("cache"), 1_000_000_000);
    let cached = CacheLayer::new(store.clone()).layer(own);

    let task = |src: &str| {
        CompileTask::new(
            gcc.identity.clone(),
            Language::C,
            vec!["-O2".into()],
            "unit.c",
            Payload::compress(src.as_bytes().to_vec()),
        )
    };
    let mut objects = Vec::new();
    for src in [
        "int unit(int x) { return x + 1; }\n",
        "int unit(int x) { return x + 1; }\n",
        "int unit(int x) { return x + 2; }\n",
    ] {
        let out = cached
            .clone()
            .oneshot(task(src))
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        let obj = out
            .output(OutputKind::Object)
            .ok_or_else(|| anyhow::anyhow!("no object"))?
            .data
            .decode()?;
        objects.push(obj);
    }
    let stats = store.stats().await;
    println!(
        "3 compiles, {} reached the compile service; cache: {} hits, {} misses",
        calls.load(Ordering::Relaxed),
        stats.hits,
        stats.misses
    );
    anyhow::ensure!(
        calls.load(Ordering::Relaxed) == 2,
        "the repeat must be a hit"
    );
    anyhow::ensure!(objects[0] == objects[1], "a hit returns the same object");
    anyhow::ensure!(
        objects[0] != objects[2],
        "a changed source is compiled anew"
    );
    Ok(())
}
