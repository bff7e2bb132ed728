//! `cache.remote`: putting the remote shared tier behind a local one.
//!
//! hg-coord: its disk tier (`<cache.dir>/coordinator`) in front of the
//! remote tier, so several coordinators (offices, CI fleets) share results.
//! hgbuild without a coordinator (a CI machine on its own): its local disk
//! tier in front of the remote tier, around a local compile. With a
//! coordinator, hgbuild leaves the remote tier to the coordinator.
//!
//! A remote tier that cannot be set up (a secret file missing, a backend
//! left out of the build) is logged and left out: the build goes on with
//! the local tiers. The tiers themselves are built in
//! [`hybridgrid_cache::tiers`] (re-exported here at their old paths).

use std::sync::Arc;

pub use hybridgrid_cache::tiers::{Remote, flush, report, with_remote};

/// hgbuild with no coordinator but a `cache.remote`: the local disk tier
/// (`local`, the caller's store) and the remote tier around a compile on
/// this machine, so a CI machine
/// on its own shares results with its fleet. `None` when no remote tier is
/// configured (or it cannot be set up): hgbuild then compiles as before.
pub fn local_stack(
    cfg: &hybridgrid_core::config::Config,
    compiler: &hybridgrid_core::worker::CompilerInfo,
    local: &hybridgrid_cache::DiskStore,
) -> Option<(hybridgrid_net::coordinator::BoxCompile, Remote)> {
    use hybridgrid_core::task::CompileOutput;
    use hybridgrid_core::worker::WorkerId;
    use tower::{Layer, ServiceBuilder};

    if !cfg.cache.enabled || !cfg.cache.remote.is_configured() {
        return None;
    }
    let local = Arc::new(local.clone());
    // One warning per outage for the whole build, not one per hgbuild.
    let marker = cfg.cache.dir_path().join("remote-down");
    let (store, remote) = with_remote(&cfg.cache, local, Some(marker));
    let remote = remote?;
    // The user's own compiler on the user's own code: no sandbox.
    let opts = hybridgrid_exec::native::NativeOptions::default()
        .with_timeout(cfg.client.request_timeout)
        .with_isolation(hybridgrid_core::config::IsolationMode::Off);
    let exec = hybridgrid_exec::native::NativeExecutor::new(vec![compiler.clone()], opts);
    let here = ServiceBuilder::new()
        .map_response(|mut o: CompileOutput| {
            o.worker_id.get_or_insert_with(|| WorkerId("local".into()));
            o
        })
        .service(exec);
    let svc = hybridgrid_cache::CacheLayer::from_arc(store).layer(here);
    Some((tower::util::BoxCloneSyncService::new(svc), remote))
}
