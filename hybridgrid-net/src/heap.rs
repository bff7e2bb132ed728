//! Heap profiling for the servers: jemalloc with sampling heap profiles
//! (cargo feature `heap-profile`, which the binaries turn on), exposed to
//! the admin endpoints through a hook, so that only a program that chooses
//! jemalloc as its allocator links it.
//!
//! A binary opts in with [`heap_profiling_allocator!`](crate::heap_profiling_allocator)
//! and hands its profiler to [`install`] first thing in `main`;
//! `/debug/pprof/heap` then answers a gzip'd pprof protobuf that
//! `go tool pprof` reads. Without the feature, or in a process that did not
//! install one, the endpoint answers `501 Not Implemented`.
//!
//! Only the opting binaries reference jemalloc: `hgbuild`, which starts once
//! per compile, links none of it (jemalloc's constructor alone costs a
//! process about 0.2 ms).

use std::sync::OnceLock;

use crate::http::admin::{AdminHooks, HeapProfileFn};
use hybridgrid_core::logging::LogHandle;

/// Whether this build has heap profiling.
pub const ENABLED: bool = cfg!(all(
    feature = "heap-profile",
    unix,
    not(target_env = "msvc")
));

static PROFILER: OnceLock<HeapProfileFn> = OnceLock::new();

/// Makes `profiler` (from [`heap_profiling_allocator!`](crate::heap_profiling_allocator)'s
/// `heap_profiler()`) the one the admin endpoints of this process use; a
/// second call, or `None`, changes nothing.
pub fn install(profiler: Option<HeapProfileFn>) {
    if let Some(p) = profiler {
        let _ = PROFILER.set(p);
    }
}

/// The admin hooks of a server process: its log handle and, when
/// installed, the heap profiler.
pub fn admin_hooks(log: LogHandle) -> AdminHooks {
    AdminHooks::new(log, hook())
}

/// The heap profile hook, when this process installed one.
pub fn hook() -> Option<HeapProfileFn> {
    PROFILER.get().cloned()
}

#[doc(hidden)]
pub mod __private {
    #[cfg(all(feature = "heap-profile", unix, not(target_env = "msvc")))]
    pub use {jemalloc_pprof, tikv_jemallocator::Jemalloc, tokio};

    pub use crate::http::admin::{HeapProfileFn, HeapProfileFuture};

    /// The message of a dump from a binary whose jemalloc has no
    /// profiling.
    pub const NOT_AVAILABLE: &str = "jemalloc heap profiling is not available: this binary does \
        not use jemalloc with `prof:true` (see heap_profiling_allocator!)";
}

/// Declares jemalloc as the global allocator with heap profiling on
/// (sampling every 2^19 bytes = 512 KiB on average), when the
/// `heap-profile` feature is on, and a `fn heap_profiler() ->
/// Option<HeapProfileFn>` (`None` without the feature) to pass to
/// [`heap::install`](crate::heap::install). Use once, in a binary's main
/// file.
#[cfg(all(feature = "heap-profile", unix, not(target_env = "msvc")))]
#[macro_export]
macro_rules! heap_profiling_allocator {
    () => {
        #[global_allocator]
        static GLOBAL: $crate::heap::__private::Jemalloc = $crate::heap::__private::Jemalloc;

        /// jemalloc reads its options from this symbol at start:
        /// profiling compiled in, active from the start, one sample per
        /// 512 KiB allocated on average (cheap enough to leave on). It is
        /// built with the `_rjem_` prefix, so it serves Rust's allocations
        /// here and never replaces the C `malloc` of a binary that does not
        /// choose it (hgbuild starts faster on glibc's).
        // Exporting a symbol under a fixed name is `unsafe` (it could
        // clash with another definition); this is the only one and it is
        // the documented way to configure jemalloc, so the lint is allowed
        // here and nowhere else.
        #[allow(unsafe_code, non_upper_case_globals)]
        #[unsafe(export_name = "_rjem_malloc_conf")]
        #[used]
        static malloc_conf: &[u8] = b"prof:true,prof_active:true,lg_prof_sample:19\0";

        /// This binary's heap profiler, for `heap::install`.
        fn heap_profiler() -> Option<$crate::heap::__private::HeapProfileFn> {
            {
                use $crate::heap::__private::{HeapProfileFuture, jemalloc_pprof, tokio};
                Some(std::sync::Arc::new(|| -> HeapProfileFuture {
                    Box::pin(async {
                        tokio::task::spawn_blocking(|| {
                            let ctl = jemalloc_pprof::PROF_CTL
                                .as_ref()
                                .ok_or($crate::heap::__private::NOT_AVAILABLE)?;
                            let mut ctl = ctl.blocking_lock();
                            if !ctl.activated() {
                                return Err(
                                    "jemalloc heap profiling is not active (prof_active is false)"
                                        .to_owned(),
                                );
                            }
                            ctl.dump_pprof().map_err(|e| e.to_string())
                        })
                        .await
                        .map_err(|e| format!("profiling task failed: {e}"))?
                    })
                }))
            }
        }
    };
}

/// Declares jemalloc as the global allocator with heap profiling on
/// (sampling every 2^19 bytes = 512 KiB on average), when the
/// `heap-profile` feature is on, and a `fn heap_profiler() ->
/// Option<HeapProfileFn>` (`None` without the feature) to pass to
/// [`heap::install`](crate::heap::install). Use once, in a binary's main
/// file.
#[cfg(not(all(feature = "heap-profile", unix, not(target_env = "msvc"))))]
#[macro_export]
macro_rules! heap_profiling_allocator {
    () => {
        /// This binary's heap profiler: none (built without the
        /// `heap-profile` feature of hybridgrid-net).
        fn heap_profiler() -> Option<$crate::heap::__private::HeapProfileFn> {
            None
        }
    };
}
