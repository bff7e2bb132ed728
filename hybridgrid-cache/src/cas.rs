//! The content-addressable storage of the Remote Execution API, on any
//! [`CacheStore`] the grid already has (the coordinator's packs, a remote
//! tier, memory in tests).
//!
//! A blob is named by its REAPI digest: the SHA-256 of its content and its
//! size ([`BlobDigest`]). It is kept as a cache entry under a key derived
//! from that digest in a namespace of its own, so it can never be taken for
//! a compile's result, and it shares the store's size bound and eviction.
//! Integrity both ways: content whose hash or size does not match its
//! digest is refused and never stored ([`CasError::Mismatch`]), and a
//! stored blob is hashed again when read; one that no longer matches is
//! removed and reported missing, never served.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use hybridgrid_cache::cas::{BlobDigest, Cas};
//! use hybridgrid_cache::MemoryStore;
//!
//! let cas = Cas::new(Arc::new(MemoryStore::new(1 << 20)), 1 << 20);
//! let d = BlobDigest::of(b"int x;");
//! assert_eq!(cas.find_missing(&[d]).await, vec![d]);
//! cas.put(&d, b"int x;".to_vec().into()).await.unwrap();
//! assert!(cas.find_missing(&[d]).await.is_empty());
//! assert_eq!(&cas.get(&d).await.unwrap().unwrap()[..], b"int x;");
//! # });
//! ```

use std::sync::Arc;

use bytes::Bytes;
use hybridgrid_core::payload::Payload;
use sha2::{Digest as _, Sha256};

use crate::entry::CacheEntry;
use crate::key::CacheKey;
use crate::store::{CacheStore, Lookup};

/// A REAPI digest: the SHA-256 of a blob's content and its size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobDigest {
    /// The SHA-256 of the content.
    pub hash: [u8; 32],
    /// The content's size in bytes.
    pub size_bytes: u64,
}

impl BlobDigest {
    /// The digest of `content`.
    pub fn of(content: &[u8]) -> Self {
        BlobDigest {
            hash: Sha256::digest(content).into(),
            size_bytes: content.len() as u64,
        }
    }

    /// A digest as REAPI messages carry it: 64 lower-case hexadecimal
    /// digits and a size that is not negative.
    pub fn parse(hash: &str, size_bytes: i64) -> Result<Self, CasError> {
        let malformed = |why: &str| {
            CasError::MalformedDigest(format!(
                "{}/{size_bytes}: {why}",
                hash.chars().take(80).collect::<String>()
            ))
        };
        if hash.len() != 64 {
            return Err(malformed("a SHA-256 hash is 64 hexadecimal digits"));
        }
        if hash.bytes().any(|c| c.is_ascii_uppercase()) {
            return Err(malformed("hexadecimal digits are lower case"));
        }
        let out = hybridgrid_core::hex::decode(hash).ok_or_else(|| malformed("not hexadecimal"))?;
        let size_bytes =
            u64::try_from(size_bytes).map_err(|_| malformed("a size is not negative"))?;
        Ok(BlobDigest {
            hash: out,
            size_bytes,
        })
    }

    /// The hash in lower-case hexadecimal.
    pub fn hex(&self) -> String {
        hybridgrid_core::hex::encode(&self.hash)
    }

    /// Whether this is the digest of the empty blob, which every CAS has.
    pub fn is_empty_blob(&self) -> bool {
        *self == BlobDigest::of(b"")
    }

    /// The store key: in a namespace of its own, apart from compile keys.
    fn key(&self) -> CacheKey {
        let mut h = blake3::Hasher::new();
        h.update(b"hybridgrid-reapi-cas-v1\0");
        h.update(&self.hash);
        h.update(&self.size_bytes.to_le_bytes());
        CacheKey::from_bytes(*h.finalize().as_bytes())
    }
}

impl std::fmt::Display for BlobDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.hex(), self.size_bytes)
    }
}

/// Why a blob was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CasError {
    /// The digest is not a SHA-256 hash and a size.
    #[error("malformed digest {0}")]
    MalformedDigest(String),
    /// The content does not hash to its digest, or is of another size.
    #[error("content does not match digest {digest}: it is {size} bytes with SHA-256 {actual}")]
    Mismatch {
        /// The digest given.
        digest: BlobDigest,
        /// The content's size.
        size: u64,
        /// The content's hash, in hexadecimal.
        actual: String,
    },
    /// The blob is larger than this CAS takes.
    #[error("blob {digest} is over the limit of {limit} bytes")]
    TooLarge {
        /// The digest given.
        digest: BlobDigest,
        /// The limit.
        limit: u64,
    },
    /// The store could not take it (full, unwritable).
    #[error("the store did not take blob {0}")]
    NotStored(BlobDigest),
}

/// The content-addressable storage (see the module docs).
#[derive(Clone)]
pub struct Cas {
    store: Arc<dyn CacheStore>,
    max_blob_bytes: u64,
}

impl std::fmt::Debug for Cas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cas")
            .field("max_blob_bytes", &self.max_blob_bytes)
            .finish_non_exhaustive()
    }
}

impl Cas {
    /// A CAS on `store`, taking blobs of at most `max_blob_bytes`.
    pub fn new(store: Arc<dyn CacheStore>, max_blob_bytes: u64) -> Self {
        Cas {
            store,
            max_blob_bytes,
        }
    }

    /// The largest blob it takes.
    pub fn max_blob_bytes(&self) -> u64 {
        self.max_blob_bytes
    }

    /// Of `digests`, those it does not have (in their order; the empty
    /// blob is never missing). A stored blob that no longer matches its
    /// digest counts as missing.
    pub async fn find_missing(&self, digests: &[BlobDigest]) -> Vec<BlobDigest> {
        let mut missing = Vec::new();
        for d in digests {
            if !d.is_empty_blob() && !matches!(self.get(d).await, Ok(Some(_))) {
                missing.push(*d);
            }
        }
        missing
    }

    /// Stores `content` under `digest` after checking it: its size and
    /// SHA-256 must be the digest's, and it must fit the limit.
    pub async fn put(&self, digest: &BlobDigest, content: Bytes) -> Result<(), CasError> {
        self.check(digest, &content)?;
        if digest.is_empty_blob() {
            return Ok(());
        }
        let entry = CacheEntry {
            object: Some(Payload::compress(content)),
            ..CacheEntry::default()
        };
        if self.store.put(&digest.key(), &entry).await.stored {
            Ok(())
        } else {
            Err(CasError::NotStored(*digest))
        }
    }

    /// Checks `content` against `digest` and the size limit, storing
    /// nothing.
    pub fn check(&self, digest: &BlobDigest, content: &[u8]) -> Result<(), CasError> {
        if digest.size_bytes > self.max_blob_bytes {
            return Err(CasError::TooLarge {
                digest: *digest,
                limit: self.max_blob_bytes,
            });
        }
        let actual = BlobDigest::of(content);
        if actual != *digest {
            return Err(CasError::Mismatch {
                digest: *digest,
                size: actual.size_bytes,
                actual: actual.hex(),
            });
        }
        Ok(())
    }

    /// The content stored under `digest`, checked again; `Ok(None)` when it
    /// has none (or had one that no longer matches: it is then removed).
    pub async fn get(&self, digest: &BlobDigest) -> Result<Option<Bytes>, CasError> {
        if digest.is_empty_blob() {
            return Ok(Some(Bytes::new()));
        }
        let key = digest.key();
        let Lookup::Hit(entry) = self.store.get(&key).await else {
            return Ok(None);
        };
        let content = entry.object.as_ref().map(Payload::decode);
        match content {
            Some(Ok(c)) if BlobDigest::of(&c) == *digest => Ok(Some(c)),
            _ => {
                tracing::warn!(blob = %digest, "CAS: a stored blob no longer matches its digest; removed");
                self.store.remove(&key).await;
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    fn cas(limit: u64) -> Cas {
        Cas::new(Arc::new(MemoryStore::new(1 << 20)), limit)
    }

    #[test]
    fn digests_parse_as_reapi_writes_them() {
        let d = BlobDigest::of(b"abc");
        assert_eq!(
            d.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(BlobDigest::parse(&d.hex(), 3), Ok(d));
        for (hash, size, why) in [
            ("ba78", 3, "64 hexadecimal digits"),
            (&d.hex().to_uppercase()[..], 3, "lower case"),
            (&d.hex().replace('b', "g")[..], 3, "not hexadecimal"),
            (&d.hex()[..], -1, "not negative"),
        ] {
            let e = BlobDigest::parse(hash, size).expect_err("malformed");
            assert!(e.to_string().contains(why), "{e}");
        }
        assert!(BlobDigest::of(b"").is_empty_blob());
    }

    #[tokio::test]
    async fn blobs_that_do_not_match_are_never_stored() {
        let c = cas(1 << 10);
        let d = BlobDigest::of(b"int x;");
        let e = c
            .put(&d, Bytes::from_static(b"int y;"))
            .await
            .expect_err("mismatch");
        assert!(matches!(e, CasError::Mismatch { .. }), "{e}");
        let short = BlobDigest { size_bytes: 5, ..d };
        assert!(matches!(
            c.put(&short, Bytes::from_static(b"int x;")).await,
            Err(CasError::Mismatch { .. })
        ));
        assert_eq!(c.find_missing(&[d]).await, vec![d]);
        let big = vec![7u8; 2000];
        let bd = BlobDigest::of(&big);
        assert!(matches!(
            c.put(&bd, big.into()).await,
            Err(CasError::TooLarge { limit: 1024, .. })
        ));
        assert_eq!(c.get(&bd).await, Ok(None));
    }

    #[tokio::test]
    async fn stored_blobs_are_found_and_read_back() {
        let c = cas(1 << 10);
        let (a, b) = (BlobDigest::of(b"a"), BlobDigest::of(b"b"));
        c.put(&a, Bytes::from_static(b"a")).await.expect("put");
        let empty = BlobDigest::of(b"");
        assert_eq!(c.find_missing(&[a, b, empty]).await, vec![b]);
        assert_eq!(c.get(&a).await, Ok(Some(Bytes::from_static(b"a"))));
        assert_eq!(c.get(&empty).await, Ok(Some(Bytes::new())));
        // Not a compile's key: a compile key of the same bytes finds nothing.
        assert_ne!(a.key(), CacheKey::from_bytes(a.hash));
    }

    #[tokio::test]
    async fn a_blob_changed_in_the_store_is_removed_not_served() {
        let store = Arc::new(MemoryStore::new(1 << 20));
        let c = Cas::new(store.clone(), 1 << 10);
        let d = BlobDigest::of(b"good");
        let forged = CacheEntry {
            object: Some(Payload::raw(&b"evil"[..])),
            ..CacheEntry::default()
        };
        store.put(&d.key(), &forged).await;
        assert_eq!(c.get(&d).await, Ok(None));
        assert!(!store.get(&d.key()).await.is_hit(), "removed");
        assert_eq!(c.find_missing(&[d]).await, vec![d]);
    }
}
