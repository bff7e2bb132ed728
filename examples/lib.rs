//! Shared helpers for the examples.

use std::time::Duration;

use hybridgrid::coord::RunningCoordinator;
use hybridgrid::worker::RunningWorker;
use hybridgrid_core::config::{Config, ConfigLoader};
use hybridgrid_net::client::{ChannelOptions, CoordinatorClient};

/// The configuration of a grid member on free loopback ports, mDNS off.
pub fn loopback_config(worker_id: &str, coordinator: &str) -> anyhow::Result<Config> {
    Ok(ConfigLoader::new()
        .no_search()
        .set("coordinator.bind_address", "127.0.0.1")
        .set("coordinator.grpc_port", 0)
        .set("coordinator.http_port", 0)
        .set("worker.bind_address", "127.0.0.1")
        .set("worker.grpc_port", 0)
        .set("worker.http_port", 0)
        .set("worker.id", worker_id)
        .set("worker.coordinator", coordinator)
        .set("worker.heartbeat_interval", "1s")
        .set("discovery.mdns.enabled", false)
        .set("logging.level", "warn")
        .load()?)
}

/// A coordinator and its workers on loopback, in this process, with
/// their caches and task directories in a temporary directory.
pub struct LoopbackGrid {
    /// The coordinator.
    pub coord: RunningCoordinator,
    /// The workers, registered.
    pub workers: Vec<RunningWorker>,
    dir: tempfile::TempDir,
}

impl LoopbackGrid {
    /// Starts a coordinator and `n` workers and waits until all have
    /// registered.
    pub async fn start(n: usize) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("hg-grid-").tempdir()?;
        let config = |id: &str, coordinator: &str| -> anyhow::Result<Config> {
            let mut cfg = loopback_config(id, coordinator)?;
            cfg.cache.dir = dir.path().join(id).display().to_string();
            // Task directories and the input store too (not /dev/shm).
            cfg.worker.work_dir = dir.path().join(id).join("work").display().to_string();
            Ok(cfg)
        };
        let coord = hybridgrid::coord::start(&config("coordinator", "")?).await?;
        let addr = coord.grpc_addr.to_string();
        let mut workers = Vec::new();
        for i in 0..n {
            let cfg = config(&format!("worker-{i}"), &addr)?;
            workers.push(hybridgrid::worker::start(&cfg).await?);
        }
        let opts = ChannelOptions::new(Duration::from_secs(2), Duration::from_secs(10));
        let mut status = CoordinatorClient::connect(&addr, &opts).await?;
        for _ in 0..200 {
            if status.workers().await?.len() == n {
                return Ok(LoopbackGrid {
                    coord,
                    workers,
                    dir,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("the workers did not register with the coordinator within 10 s")
    }

    /// The coordinator's gRPC address (`HOST:PORT`).
    pub fn address(&self) -> String {
        self.coord.grpc_addr.to_string()
    }

    /// Stops the workers, then the coordinator, and removes their caches.
    pub async fn shutdown(self) {
        for w in self.workers {
            w.shutdown(Duration::from_secs(5)).await;
        }
        self.coord.shutdown(Duration::from_secs(5)).await;
        drop(self.dir);
    }
}

/// A copy of the sample C project (`examples/sample-c`) in a new temporary
/// directory, to build in.
pub fn copy_sample_c() -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix("hg-sample-").tempdir()?;
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-c");
    for e in std::fs::read_dir(sample)? {
        let e = e?;
        std::fs::copy(e.path(), dir.path().join(e.file_name()))?;
    }
    Ok(dir)
}
