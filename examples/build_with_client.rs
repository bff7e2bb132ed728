//! An embedding build tool builds `examples/sample-c` through
//! `hybridgrid_client::Client` (all compiles at once on one connection, with
//! local fallback), links and runs it; summary and trace come from the
//! client's events. `cargo run -p hybridgrid-examples --example build_with_client`

use std::ffi::OsString;
use std::sync::Arc;

use anyhow::ensure;
use hybridgrid_client::Client;
use hybridgrid_core::config::ConfigLoader;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let grid = hybridgrid_examples::LoopbackGrid::start(2).await?;
    let dir = hybridgrid_examples::copy_sample_c()?;
    std::env::set_current_dir(dir.path())?; // compile commands are relative

    // The client, from configuration: the grid, and a cache of our own.
    let cfg = ConfigLoader::new()
        .no_search()
        .set("client.coordinator", grid.address())
        .set("cache.dir", dir.path().join("cache").display().to_string())
        .load()?;
    let client = Arc::new(Client::new(cfg));

    let mut objects = Vec::new();
    let mut jobs = tokio::task::JoinSet::new();
    for src in ["main.c", "vec.c", "stats.c", "strutil.c"] {
        let obj = src.replace(".c", ".o");
        let args = ["-O2", "-Wall", "-MMD", "-c", src, "-o", &obj].map(OsString::from);
        objects.push(OsString::from(obj));
        let client = client.clone();
        jobs.spawn(async move { client.compile("cc", &args).await });
    }
    while let Some(outcome) = jobs.join_next().await {
        let outcome = outcome?;
        ensure!(outcome.exit_code == 0, "{:?} failed", outcome.source);
    }
    let link = [&objects[..], &["-o", "demo", "-lm"].map(OsString::from)].concat();
    ensure!(
        client.compile("cc", &link).await.exit_code == 0,
        "link failed"
    );
    let run = std::process::Command::new("./demo").output()?;
    ensure!(run.status.success(), "demo failed");
    print!("demo says:\n{}", String::from_utf8_lossy(&run.stdout));

    let summary = client.summary();
    println!("{}", summary.line());
    ensure!(
        summary.remote == 4,
        "every compile should have run on the grid"
    );
    client.write_trace(&dir.path().join("trace.json"), "sample-c")?;
    std::env::set_current_dir("/")?;
    grid.shutdown().await;
    Ok(())
}
