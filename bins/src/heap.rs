//! Heap profiling for `hg-coord` and `hg-worker`: jemalloc with sampling
//! heap profiles (cargo feature `heap-profile`, on by default), exposed to
//! the HTTP layer through a hook so the library crates need no allocator.
//!
//! A binary opts in with [`heap_profiling_allocator!`](crate::heap_profiling_allocator); `/debug/pprof/heap`
//! then answers a gzip'd pprof protobuf that `go tool pprof` reads.
//! Without the feature the endpoint answers `501 Not Implemented`.

use hybridgrid_core::logging::LogHandle;
#[cfg(all(feature = "heap-profile", unix, not(target_env = "msvc")))]
use hybridgrid_net::http::admin::HeapProfileFuture;
use hybridgrid_net::http::admin::{AdminHooks, HeapProfileFn};

/// Whether this build has heap profiling.
pub const ENABLED: bool = cfg!(all(
    feature = "heap-profile",
    unix,
    not(target_env = "msvc")
));

/// The admin hooks of a server process: its log handle and, when built in,
/// the heap profiler.
pub fn admin_hooks(log: LogHandle) -> AdminHooks {
    AdminHooks::new(log, hook())
}

/// The heap profile hook, when heap profiling is built in.
#[cfg(all(feature = "heap-profile", unix, not(target_env = "msvc")))]
pub fn hook() -> Option<HeapProfileFn> {
    Some(std::sync::Arc::new(|| -> HeapProfileFuture {
        Box::pin(dump())
    }))
}

/// The heap profile hook, when heap profiling is built in.
#[cfg(not(all(feature = "heap-profile", unix, not(target_env = "msvc"))))]
pub fn hook() -> Option<HeapProfileFn> {
    None
}

#[cfg(all(feature = "heap-profile", unix, not(target_env = "msvc")))]
async fn dump() -> Result<Vec<u8>, String> {
    tokio::task::spawn_blocking(|| {
        let ctl = jemalloc_pprof::PROF_CTL.as_ref().ok_or(
            "jemalloc heap profiling is not available: this binary does not use jemalloc \
             with `prof:true` (see heap_profiling_allocator!)",
        )?;
        let mut ctl = ctl.blocking_lock();
        if !ctl.activated() {
            return Err("jemalloc heap profiling is not active (prof_active is false)".into());
        }
        ctl.dump_pprof().map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("profiling task failed: {e}"))?
}

#[doc(hidden)]
pub mod __private {
    #[cfg(all(feature = "heap-profile", unix, not(target_env = "msvc")))]
    pub use tikv_jemallocator::Jemalloc;
}

/// Declares jemalloc as the global allocator with heap profiling on
/// (sampling every 2^19 bytes = 512 KiB on average), when the
/// `heap-profile` feature is on; nothing otherwise. Use once, in a
/// binary's main file.
#[macro_export]
macro_rules! heap_profiling_allocator {
    () => {
        #[cfg(all(feature = "heap-profile", unix, not(target_env = "msvc")))]
        #[global_allocator]
        static GLOBAL: $crate::heap::__private::Jemalloc = $crate::heap::__private::Jemalloc;

        /// jemalloc reads its options from this symbol at start:
        /// profiling compiled in, active from the start, one sample per
        /// 512 KiB allocated on average (cheap enough to leave on).
        // Exporting a symbol under a fixed name is `unsafe` (it could
        // clash with another definition); this is the only one and it is
        // the documented way to configure jemalloc, so the lint is allowed
        // here and nowhere else.
        #[cfg(all(feature = "heap-profile", unix, not(target_env = "msvc")))]
        #[allow(unsafe_code, non_upper_case_globals)]
        #[unsafe(export_name = "malloc_conf")]
        #[used]
        static malloc_conf: &[u8] = b"prof:true,prof_active:true,lg_prof_sample:19\0";
    };
}
