//! Direct mode: finding a result without running the preprocessor.
//!
//! Like ccache's direct mode, a *manifest* keyed by what is known before
//! preprocessing (compiler identity, arguments, source path, source content,
//! working directory: [`DirectParams::manifest_key`]) lists, for each result
//! recorded under it, every file the preprocessor read with its content
//! hash, and the result's [`CacheKey`](crate::CacheKey). A lookup re-hashes the listed files
//! (hashes are remembered per process by path, size and modification time)
//! and answers the result key only if every one still matches.
//!
//! # Never a stale result
//!
//! * **Edited headers** change a content hash: no hit.
//! * **Changed defines or include paths** are arguments, so a different
//!   manifest.
//! * **A new header shadowing an old one.** We record, for every included
//!   file `D/name` found under an include search directory `D` (the caller
//!   passes the ordered search list, spelled as on the command line and as
//!   the preprocessor prints it), the paths `E/name` for every directory `E`
//!   searched before `D`, and for every directory holding a file of the
//!   translation unit (where a quoted `#include` looks first), that did
//!   **not** exist when the result was recorded. A lookup refuses a hit if
//!   any of them exists now. This is a superset of the places that could
//!   shadow (we do not know whether an include was quoted or angled), so it
//!   may refuse a hit that would have been valid, never the reverse.
//! * **`__DATE__`, `__TIME__`, `__TIMESTAMP__`** make the output depend on
//!   the clock: a source or header containing any of these tokens is never
//!   recorded, and a source containing them is never looked up.
//! * **`__has_include(<x.h>)`** (and `__has_include_next`) depends on files
//!   that need not exist. Every name tested in the source or a header is
//!   resolved against every search directory and every includer's
//!   directory: the candidates that exist are recorded with their content
//!   hashes like included files, the others as paths that must not appear.
//!   A test through a macro (`__has_include(HEADER)`) cannot be resolved
//!   without preprocessing: such a translation unit is never recorded.
//! * **Files modified during the compile** (modification or status change
//!   time within [`TOO_NEW`] of recording) are not recorded: the hash might
//!   not match what the preprocessor read. The per-process hash memo skips
//!   such files too, so a second edit within the file system's timestamp
//!   granularity cannot be missed.
//!
//! # Use (hgbuild)
//!
//! ```no_run
//! use hybridgrid_cache::direct::{included_files, DirectMode, DirectParams};
//! use hybridgrid_cache::DiskStore;
//! # fn demo(gcc: hybridgrid_core::task::CompilerIdentity, args: Vec<String>,
//! #         source: Vec<u8>, preprocessed: Vec<u8>,
//! #         result_key: hybridgrid_cache::CacheKey) {
//! let store = DiskStore::new("/home/me/.hybridgrid/cache", 10_000_000_000);
//! let direct = DirectMode::new(store.clone());
//! let params = DirectParams::new(&gcc, &args, "src/foo.c", &source, "/home/me/proj");
//! if let Some(key) = direct.lookup(&params) {
//!     // store.get_blocking(&key) and replay it (object, .d file, stderr).
//! } else {
//!     // preprocess, compute the result key, compile or hit, then:
//!     let includes = included_files(&preprocessed);
//!     let search = vec!["include".into(), "/usr/include".into()];
//!     let _ = direct.record(&params, &includes, &search, result_key);
//! }
//! # }
//! ```
//!
//! # Parts
//!
//! | file | what |
//! |---|---|
//! | `params.rs` | [`DirectParams`]: what is known before preprocessing, and why a unit is skipped |
//! | `manifest.rs` | [`Manifest`]: the recorded results and their binary format |
//! | `mode.rs` | [`DirectMode`]: lookup and record over a [`DiskStore`](crate::DiskStore) |
//! | `search.rs` | include search lists and the paths that could shadow a header |

mod manifest;
mod mode;
mod params;
mod search;
#[cfg(test)]
mod tests;

pub use manifest::{AbsentGroup, Manifest, ManifestError, ManifestResult, Stamp};
pub use mode::{DirectHit, DirectMode, Recording};
pub use params::{DirectParams, DirectSkip, has_include_names, volatile_token};
pub use search::{SearchList, parse_search_list, shadow_candidates};

use std::time::Duration;

/// Files changed this recently are neither recorded nor memoized.
pub const TOO_NEW: Duration = Duration::from_secs(2);

/// Results kept per manifest (newest first).
pub const MAX_RESULTS: usize = 8;

/// Tokens that make a translation unit unfit for direct mode.
pub const VOLATILE_TOKENS: [&str; 3] = ["__DATE__", "__TIME__", "__TIMESTAMP__"];

/// The token whose answers depend on files that may not exist.
const HAS_INCLUDE: &str = "__has_include";

pub use hybridgrid_core::preprocessed::included_files;
