//! `hgbuild status` (the grid's workers), `hgbuild stats` and `hgbuild cache`.

use hybridgrid_cache::DiskStore;
use hybridgrid_core::config::Config;

use crate::dial::connect;

/// Prints the grid's workers as a table; returns the exit code.
pub async fn status(cfg: &Config) -> i32 {
    let mut c = match connect(cfg).await {
        None => {
            eprintln!(
                "hgbuild: no coordinator configured and none found by mDNS: pass --coordinator HOST:PORT or set HG_COORDINATOR"
            );
            return 2;
        }
        Some(Err(e)) => {
            eprintln!("hgbuild: {e}");
            return 1;
        }
        Some(Ok(c)) => c,
    };
    let ws = match c.workers().await {
        Ok(w) => w,
        Err(e) => {
            eprintln!("hgbuild: {e}");
            return 1;
        }
    };
    println!("coordinator {}: {} worker(s)", c.address(), ws.len());
    println!(
        "{:<24} {:<22} {:<7} {:>5} {:>7} {:>9} {:>10} {:<9} {:<9} compilers; docker images",
        "WORKER", "ADDRESS", "ARCH", "CORES", "ACTIVE", "COMPLETED", "LATENCY", "CIRCUIT", "SOURCE"
    );
    for w in ws {
        let info = w.info.unwrap_or_default();
        let caps = info.capabilities.unwrap_or_default();
        let mut compilers: Vec<String> = caps
            .compilers
            .iter()
            .map(|c| {
                format!(
                    "{} {}",
                    c.name,
                    c.identity
                        .as_ref()
                        .map(|i| i.version.as_str())
                        .unwrap_or("")
                )
            })
            .collect();
        compilers.sort();
        compilers.dedup();
        let mut images: Vec<String> = caps
            .docker_images
            .iter()
            .map(|d| format!("{}={}", d.arch, d.image))
            .collect();
        images.sort();
        let docker = if images.is_empty() {
            String::new()
        } else {
            format!("; docker {}", images.join(", "))
        };
        let source = match hybridgrid_net::proto::WorkerSource::try_from(info.source) {
            Ok(hybridgrid_net::proto::WorkerSource::Static) => "static",
            Ok(hybridgrid_net::proto::WorkerSource::Mdns) => "mdns",
            _ => "handshake",
        };
        println!(
            "{:<24} {:<22} {:<7} {:>5} {:>7} {:>9} {:>8.1}ms {:<9} {:<9} {}{}",
            info.id,
            info.address,
            caps.arch,
            caps.cores,
            w.active_tasks,
            w.completed_tasks,
            w.avg_latency_ms,
            w.circuit_state,
            source,
            compilers.join(", "),
            docker
        );
    }
    0
}

/// `hgbuild cache stats|clear|evict`: the local cache.
pub fn cache_command(cfg: &Config, action: CacheAction) -> i32 {
    let store = DiskStore::from_config(&cfg.cache);
    match action {
        CacheAction::Stats => {
            store.rescan();
            let s = store.stats_blocking();
            println!("cache directory   {}", store.dir().display());
            println!("enabled           {}", cfg.cache.enabled);
            println!("entries           {}", s.entries);
            println!(
                "size              {:.1} MB of {:.1} MB",
                s.size_bytes as f64 / 1e6,
                store.max_bytes() as f64 / 1e6
            );
            println!("hits              {}", s.hits);
            println!("misses            {}", s.misses);
            println!("hit rate          {:.1}%", s.hit_rate() * 100.0);
            let (direct_hits, direct_misses) = store.direct_stats_blocking();
            println!(
                "direct mode       {} ({direct_hits} hits, {direct_misses} misses)",
                if cfg.cache.direct_mode { "on" } else { "off" }
            );
            println!("evictions         {}", s.evictions);
            println!("errors            {}", s.errors);
        }
        CacheAction::Clear => {
            let out = store.clear();
            println!(
                "removed {} entries ({:.1} MB) from {}",
                out.evicted,
                out.freed_bytes as f64 / 1e6,
                store.dir().display()
            );
        }
        CacheAction::Evict { max_size_gb } => {
            if !(max_size_gb.is_finite() && max_size_gb >= 0.0) {
                eprintln!("hgbuild: --max-size must be a number of GB >= 0, got {max_size_gb}");
                return 2;
            }
            let out = store.evict_to((max_size_gb * 1e9) as u64);
            println!(
                "evicted {} entries ({:.1} MB)",
                out.evicted,
                out.freed_bytes as f64 / 1e6
            );
        }
    }
    0
}

/// What `hgbuild cache` does.
#[derive(Clone, Copy, Debug)]
pub enum CacheAction {
    /// Print statistics.
    Stats,
    /// Remove every entry.
    Clear,
    /// Evict least recently used entries down to a size.
    Evict {
        /// The size to evict to, in GB.
        max_size_gb: f64,
    },
}

/// `hgbuild stats`: the local cache and the coordinator's counters.
pub async fn stats(cfg: &Config) -> i32 {
    let code = cache_command(cfg, CacheAction::Stats);
    match connect(cfg).await {
        None => println!("coordinator       not configured"),
        Some(Err(e)) => println!("coordinator       {e}"),
        Some(Ok(mut c)) => match c.stats().await {
            Ok(s) => {
                let lookups = s.cache_hits + s.cache_misses;
                println!("coordinator       {}", c.address());
                println!(
                    "workers           {} ({} healthy)",
                    s.workers_total, s.workers_healthy
                );
                println!(
                    "tasks             {} total, {} ok, {} failed, {} active, {} queued",
                    s.tasks_total,
                    s.tasks_successful,
                    s.tasks_failed,
                    s.tasks_active,
                    s.tasks_queued
                );
                println!(
                    "shared cache      {} hits, {} misses ({:.1}%)",
                    s.cache_hits,
                    s.cache_misses,
                    if lookups == 0 {
                        0.0
                    } else {
                        s.cache_hits as f64 * 100.0 / lookups as f64
                    }
                );
            }
            Err(e) => println!("coordinator       {e}"),
        },
    }
    code
}
