//! Byte payloads that may travel compressed.
//!
//! Sources and objects are compressed once, by whoever produces them, and
//! travel through the coordinator unchanged: only the final consumer pays for
//! decompression.

use std::cell::RefCell;

use bytes::Bytes;

/// Payloads smaller than this are not worth compressing.
pub const COMPRESS_MIN_LEN: usize = 512;

/// The zstd level used for payloads: fast, with a good ratio on source code.
pub const ZSTD_LEVEL: i32 = 1;

/// Payloads up to this size are (de)compressed with a context kept per
/// thread: creating a zstd context costs more than compressing a few KB.
/// Bigger ones use a fresh context, so no thread keeps a large one.
const REUSE_CONTEXT_MAX: usize = 1 << 20;

thread_local! {
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

fn zstd_compress(data: &[u8]) -> std::io::Result<Vec<u8>> {
    if data.len() <= REUSE_CONTEXT_MAX {
        let reused = COMPRESSOR.try_with(|c| {
            let mut c = c.try_borrow_mut().ok()?;
            if c.is_none() {
                *c = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
            }
            c.as_mut().map(|c| c.compress(data))
        });
        if let Ok(Some(r)) = reused {
            return r;
        }
    }
    zstd::bulk::compress(data, ZSTD_LEVEL)
}

fn zstd_decompress(data: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    if capacity <= REUSE_CONTEXT_MAX {
        let reused = DECOMPRESSOR.try_with(|d| {
            let mut d = d.try_borrow_mut().ok()?;
            if d.is_none() {
                *d = zstd::bulk::Decompressor::new().ok();
            }
            d.as_mut().map(|d| d.decompress(data, capacity))
        });
        if let Ok(Some(r)) = reused {
            return r;
        }
    }
    zstd::bulk::decompress(data, capacity)
}

/// How a payload's bytes are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// The bytes as they are.
    Identity,
    /// zstd-compressed.
    Zstd,
}

/// An error decoding a payload.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The compressed data is corrupt.
    #[error("corrupt compressed payload: {0}")]
    Corrupt(#[source] std::io::Error),
    /// The payload decodes to a different length than it announced.
    #[error("payload length mismatch: announced {announced} bytes, decoded {actual}")]
    LengthMismatch {
        /// The length announced with the payload.
        announced: u64,
        /// The length actually decoded.
        actual: u64,
    },
    /// The payload is bigger than the limit the receiver accepts.
    #[error("payload of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// Receiver's limit.
        limit: u64,
    },
}

/// A byte payload, possibly compressed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    encoding: Encoding,
    data: Bytes,
    raw_len: u64,
}

impl Default for Payload {
    fn default() -> Self {
        Payload::raw(Bytes::new())
    }
}

impl Payload {
    /// A payload of uncompressed bytes.
    pub fn raw(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        Payload {
            encoding: Encoding::Identity,
            raw_len: data.len() as u64,
            data,
        }
    }

    /// Compresses `data` with zstd if that is worth it.
    pub fn compress(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        if data.len() < COMPRESS_MIN_LEN {
            return Payload::raw(data);
        }
        match zstd_compress(&data) {
            Ok(c) if c.len() < data.len() => Payload {
                encoding: Encoding::Zstd,
                raw_len: data.len() as u64,
                data: Bytes::from(c),
            },
            _ => Payload::raw(data),
        }
    }

    /// A payload from its parts, as received from the network. Nothing is
    /// checked until [`Payload::decode`].
    pub fn from_parts(encoding: Encoding, data: Bytes, raw_len: u64) -> Self {
        Payload {
            encoding,
            data,
            raw_len,
        }
    }

    /// The encoding of [`Payload::encoded`].
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The bytes as they travel.
    pub fn encoded(&self) -> &Bytes {
        &self.data
    }

    /// The length of the decoded bytes.
    pub fn raw_len(&self) -> u64 {
        self.raw_len
    }

    /// Decodes the payload, refusing anything that would decode to more than
    /// `limit` bytes.
    pub fn decode_limited(&self, limit: u64) -> Result<Bytes, PayloadError> {
        if self.raw_len > limit {
            return Err(PayloadError::TooLarge {
                len: self.raw_len,
                limit,
            });
        }
        let out = match self.encoding {
            Encoding::Identity => self.data.clone(),
            Encoding::Zstd => {
                // The capacity bounds the output: zstd refuses to write more.
                let v = zstd_decompress(&self.data, self.raw_len as usize)
                    .map_err(PayloadError::Corrupt)?;
                Bytes::from(v)
            }
        };
        if out.len() as u64 != self.raw_len {
            return Err(PayloadError::LengthMismatch {
                announced: self.raw_len,
                actual: out.len() as u64,
            });
        }
        Ok(out)
    }

    /// Decodes the payload (no size limit beyond the announced length).
    pub fn decode(&self) -> Result<Bytes, PayloadError> {
        self.decode_limited(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_payloads_stay_raw() {
        let p = Payload::compress(&b"int x;"[..]);
        assert_eq!(p.encoding(), Encoding::Identity);
        assert_eq!(p.decode().unwrap(), &b"int x;"[..]);
    }

    #[test]
    fn large_payloads_roundtrip_compressed() {
        let text = "int f(int x) { return x * 2; }\n".repeat(1000);
        let p = Payload::compress(text.clone().into_bytes());
        assert_eq!(p.encoding(), Encoding::Zstd);
        assert!(p.encoded().len() < text.len() / 10);
        assert_eq!(p.decode().unwrap(), text.as_bytes());
    }

    #[test]
    fn lying_length_is_an_error() {
        let text = "x".repeat(4096);
        let p = Payload::compress(text.into_bytes());
        let bad = Payload::from_parts(p.encoding(), p.encoded().clone(), 10);
        assert!(bad.decode().is_err());
        let bigger = Payload::from_parts(p.encoding(), p.encoded().clone(), 8192);
        assert!(matches!(
            bigger.decode(),
            Err(PayloadError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let p = Payload::from_parts(Encoding::Zstd, Bytes::from_static(b"not zstd at all"), 100);
        assert!(matches!(p.decode(), Err(PayloadError::Corrupt(_))));
    }

    #[test]
    fn limit_is_enforced_before_decoding() {
        let p = Payload::compress(vec![0u8; 100_000]);
        assert!(matches!(
            p.decode_limited(1000),
            Err(PayloadError::TooLarge { .. })
        ));
    }
}
