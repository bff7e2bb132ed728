//! The coordinator `hgbuild` uses when none is configured: found by mDNS
//! and remembered in a small file, so that the many compiles of one build
//! (`make -j32`) do not each browse.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use hybridgrid_core::config::Config;

/// How long `hgbuild` browses for a coordinator.
pub const CLIENT_BROWSE_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a coordinator found by mDNS is remembered.
pub const FOUND_TTL: Duration = Duration::from_secs(60);
/// How long "no coordinator answered" is remembered (compiles stay local
/// without waiting for a browse each).
pub const NOT_FOUND_TTL: Duration = Duration::from_secs(10);

fn cache_file(cfg: &Config) -> PathBuf {
    cfg.cache.dir_path().join("mdns-coordinator")
}

/// What the file says, if it is fresh: `Some(Some(addr))` found,
/// `Some(None)` nothing answered, `None` stale or absent.
fn read_cached(cfg: &Config) -> Option<Option<String>> {
    let path = cache_file(cfg);
    let meta = std::fs::metadata(&path).ok()?;
    let age = SystemTime::now()
        .duration_since(meta.modified().ok()?)
        .unwrap_or(Duration::MAX);
    let text = std::fs::read_to_string(&path).ok()?;
    let addr = text.trim();
    if addr.is_empty() {
        (age < NOT_FOUND_TTL).then_some(None)
    } else {
        (age < FOUND_TTL).then(|| Some(addr.to_owned()))
    }
}

fn write_cached(cfg: &Config, addr: Option<&str>) {
    let path = cache_file(cfg);
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp = dir.join(format!("mdns-coordinator.{}", std::process::id()));
    if std::fs::write(&tmp, addr.unwrap_or_default()).is_ok()
        && std::fs::rename(&tmp, &path).is_err()
    {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// The coordinator `hgbuild` should use: `client.coordinator` when set;
/// else, with mDNS enabled, one found by mDNS (browsing at most
/// [`CLIENT_BROWSE_TIMEOUT`], the answer remembered in
/// `<cache.dir>/mdns-coordinator` for [`FOUND_TTL`], or [`NOT_FOUND_TTL`]
/// when none answered); else `None` (compile locally).
pub async fn coordinator_for_client(cfg: &Config) -> Option<String> {
    let configured = cfg.client.coordinator.trim();
    if !configured.is_empty() {
        return Some(configured.to_owned());
    }
    if !cfg.discovery.mdns.enabled {
        return None;
    }
    if let Some(cached) = read_cached(cfg) {
        tracing::debug!(coordinator = ?cached, "coordinator from the mDNS cache file");
        return cached;
    }
    let found = browse(cfg).await;
    write_cached(cfg, found.as_deref());
    found
}

#[cfg(feature = "mdns")]
async fn browse(cfg: &Config) -> Option<String> {
    let m = match super::mdns::Mdns::start(&cfg.discovery.mdns) {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(error = %e, "cannot browse for a coordinator");
            return None;
        }
    };
    let found = m.find_coordinator(CLIENT_BROWSE_TIMEOUT).await;
    tracing::info!(coordinator = ?found, "browsed for a coordinator by mDNS");
    m.shutdown().await;
    found
}

#[cfg(not(feature = "mdns"))]
async fn browse(_cfg: &Config) -> Option<String> {
    None
}

/// Forgets a coordinator found by mDNS (it did not answer), so the next
/// compile browses again.
pub fn forget_discovered_coordinator(cfg: &Config) {
    if cfg.client.coordinator.trim().is_empty() {
        let _ = std::fs::remove_file(cache_file(cfg));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn configured_coordinator_wins_and_cache_is_read() {
        let dir = tempfile_dir();
        let mut cfg = Config::default();
        cfg.cache.dir = dir.display().to_string();
        cfg.client.coordinator = "c:9000".into();
        assert_eq!(
            coordinator_for_client(&cfg).await.as_deref(),
            Some("c:9000")
        );
        cfg.client.coordinator.clear();
        cfg.discovery.mdns.enabled = false;
        assert_eq!(coordinator_for_client(&cfg).await, None);
        // A fresh cache file answers without browsing.
        cfg.discovery.mdns.enabled = true;
        write_cached(&cfg, Some("10.0.0.1:9000"));
        assert_eq!(
            coordinator_for_client(&cfg).await.as_deref(),
            Some("10.0.0.1:9000")
        );
        write_cached(&cfg, None);
        assert_eq!(read_cached(&cfg), Some(None));
        forget_discovered_coordinator(&cfg);
        assert_eq!(read_cached(&cfg), None);
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("hg-disco-cache-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&d);
        d
    }
}
