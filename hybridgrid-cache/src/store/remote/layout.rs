//! Where a key's entry lives on the backend: ccache's subdirectories, flat, or
//! Bazel's `ac/` and `cas/`.

use crate::key::CacheKey;

/// Where an entry lives on the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `ab/cdef…` (ccache's HTTP storage).
    Subdirs,
    /// `abcdef…`.
    Flat,
    /// `ac/abcdef…` (a Bazel HTTP cache's action cache).
    Bazel,
}

impl Layout {
    /// Parses `cache.remote.layout`.
    pub fn parse(s: &str) -> Option<Layout> {
        match s {
            "subdirs" => Some(Layout::Subdirs),
            "flat" => Some(Layout::Flat),
            "bazel" => Some(Layout::Bazel),
            _ => None,
        }
    }

    /// The path of `key` (relative to the prefix).
    pub fn path(self, key: &CacheKey) -> String {
        let hex = key.to_hex();
        match self {
            Layout::Subdirs => format!("{}/{}", &hex[..2], &hex[2..]),
            Layout::Flat => hex,
            Layout::Bazel => format!("ac/{hex}"),
        }
    }
}
