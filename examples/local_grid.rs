//! An in-process grid: one coordinator and two workers started as library
//! services on loopback, compiling the multi-file C project in
//! `examples/sample-c` file by file, then linking and running it.
//!
//! ```text
//! cargo run --release --example local_grid
//! ```

use std::ffi::OsString;
use std::time::Duration;

use anyhow::{Context, bail};
use hybridgrid_client::{self as client, ClientOptions, Route};
use hybridgrid_exec::detect;
use hybridgrid_net::client::{ChannelOptions, CoordinatorClient};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let base = hybridgrid_examples::loopback_config("unused", "")?;
    let _ = hybridgrid_core::logging::init(&base.logging);

    // 1. The grid: a coordinator and two workers, all in this process.
    let grid = hybridgrid_examples::LoopbackGrid::start(2).await?;
    let coord_addr = grid.address();
    let opts = ChannelOptions::new(Duration::from_secs(2), Duration::from_secs(120));
    println!(
        "grid: coordinator {coord_addr} (dashboard http://{}), {} workers",
        grid.coord.http_addr,
        grid.workers.len()
    );

    // 2. A copy of the sample project to build in.
    let build = hybridgrid_examples::copy_sample_c()?;
    std::env::set_current_dir(build.path())?;

    // 3. Compile each file through the grid, as `hgbuild cc -c` does.
    let dirs = detect::DetectOptions::default().path_dirs;
    let cc = detect::find_and_identify("cc", &dirs).await?;
    let copts = ClientOptions::default();
    let mut sources: Vec<String> = std::fs::read_dir(".")?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".c"))
        .collect();
    sources.sort();
    // All files at once, as `make -j` would run them.
    let mut jobs = tokio::task::JoinSet::new();
    for s in sources.clone() {
        let (cc, copts, coord_addr, opts) =
            (cc.clone(), copts.clone(), coord_addr.clone(), opts.clone());
        jobs.spawn(async move {
            let obj = s.replace(".c", ".o");
            let args: Vec<OsString> = ["-O2", "-Wall", "-c", &s, "-o", &obj]
                .iter()
                .map(OsString::from)
                .collect();
            let remote = CoordinatorClient::connect(&coord_addr, &opts).await;
            let out = client::compile(&cc, &args, Some(remote), &copts).await;
            (s, obj, out)
        });
    }
    let mut objects = Vec::new();
    while let Some(done) = jobs.join_next().await {
        let (s, obj, out) = done?;
        if out.exit_code != 0 {
            bail!("{s} failed to compile");
        }
        let route = match &out.route {
            Route::Remote(w) => format!("remote {w}"),
            other => other.to_string(),
        };
        println!("  {s:<10} -> {route:<18} {:>4} ms", out.elapsed.as_millis());
        objects.push(obj);
    }
    objects.sort();

    // 4. Link locally and run the program.
    let link = tokio::process::Command::new(&cc.path)
        .args(&objects)
        .args(["-o", "demo", "-lm"])
        .status()
        .await?;
    if !link.success() {
        bail!("link failed");
    }
    let run = tokio::process::Command::new("./demo")
        .output()
        .await
        .context("run demo")?;
    print!("demo says:\n{}", String::from_utf8_lossy(&run.stdout));

    std::env::set_current_dir("/")?;
    grid.shutdown().await;
    Ok(())
}
