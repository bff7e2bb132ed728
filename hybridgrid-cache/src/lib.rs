//! # hybridgrid-cache
//!
//! The compile cache: content-addressed [keys](key), replayable
//! [entries](entry), [stores](store) (a [`DiskStore`] shared by every
//! `hgbuild` process of a build, a [`PackStore`] appending to pack files
//! for the coordinator's shared tier, a [`MemoryStore`], a [`TieredStore`] stacking a fast tier over a slow
//! one, and with the `remote-redis`, `remote-webdav` and `remote-s3`
//! features a `RemoteStore` on storage a team already runs), the tower
//! [`CacheLayer`], and ccache-style [direct mode](direct).
//!
//! A cache never fails a compile: unusable directories, full disks and
//! corrupt entries become misses, are logged once and counted.
//!
//! ```
//! use hybridgrid_cache::{CacheLayer, MemoryStore};
//! use hybridgrid_core::BoxError;
//! use hybridgrid_core::payload::Payload;
//! use hybridgrid_core::task::{
//!     CompileOutput, CompileTask, CompilerFamily, CompilerIdentity, DriverKind, Language,
//!     OutputFile, OutputKind,
//! };
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
//! // Any compile service: here one that "compiles" by copying its input.
//! let compiler = tower::service_fn(|task: CompileTask| async move {
//!     let mut out = CompileOutput::default();
//!     out.outputs.push(OutputFile { kind: OutputKind::Object, data: task.input });
//!     Ok::<_, BoxError>(out)
//! });
//! let mut svc = ServiceBuilder::new()
//!     .layer(CacheLayer::new(MemoryStore::new(64 << 20)))
//!     .service(compiler);
//!
//! let gcc = CompilerIdentity {
//!     family: CompilerFamily::Gcc,
//!     driver: DriverKind::C,
//!     version: "12.2.0".into(),
//!     target: "x86_64-linux-gnu".into(),
//! };
//! let task = CompileTask::new(gcc, Language::PreprocessedC, vec!["-O2".into()], "x.c",
//!                             Payload::raw(&b"int x;\n"[..]));
//! let first = svc.ready().await?.call(task.clone()).await?;
//! let second = svc.ready().await?.call(task).await?;
//! assert!(!first.from_cache && second.from_cache);
//! # Ok::<_, BoxError>(())
//! # })?;
//! # Ok::<_, BoxError>(())
//! ```

pub mod cas;
pub mod direct;
pub mod entry;
pub mod key;
pub mod layer;
pub mod store;
pub mod tiers;

pub use entry::CacheEntry;
pub use key::{CacheKey, FORMAT_VERSION, KeyParams};
pub use layer::{Cache, CacheLayer};
pub use store::{
    CacheStats, CacheStore, DiskStore, Lookup, MemoryStore, PackStore, PutOutcome, TieredStore,
};
#[cfg(feature = "remote")]
pub use store::{RemoteStats, RemoteStore};
