//! The record format of a segment (header, key, body, checksum) and scanning a
//! segment, resynchronising after damage.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::key::CacheKey;

use super::*;

/// A parsed record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) kind: u8,
    pub(super) key: [u8; 32],
    pub(super) len: u32,
}

fn header_check(h: &[u8]) -> [u8; 4] {
    let sum = blake3::hash(&h[..44]);
    let b = sum.as_bytes();
    [b[0], b[1], b[2], b[3]]
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(&MAGIC);
        h[4] = self.kind;
        h[8..40].copy_from_slice(&self.key);
        h[40..44].copy_from_slice(&self.len.to_le_bytes());
        let check = header_check(&h);
        h[44..].copy_from_slice(&check);
        h
    }

    pub(super) fn parse(h: &[u8]) -> Option<Header> {
        if h.len() < HEADER_LEN || h[..4] != MAGIC || h[44..48] != header_check(h) {
            return None;
        }
        let kind = h[4];
        let len = u32::from_le_bytes([h[40], h[41], h[42], h[43]]);
        let valid = match kind {
            KIND_ENTRY => true,
            KIND_TOMBSTONE => len == 0,
            _ => false,
        };
        if !valid || h[5..8] != [0, 0, 0] {
            return None;
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&h[8..40]);
        Some(Header { kind, key, len })
    }
}

/// A record: header and body.
pub(super) fn record(key: &CacheKey, kind: u8, body: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(body.len()).ok()?;
    let h = Header {
        kind,
        key: *key.as_bytes(),
        len,
    };
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&h.encode());
    out.extend_from_slice(body);
    Some(out)
}

pub(super) fn segment_name(id: u32) -> String {
    format!("{id:08}.pack")
}

pub(super) fn segment_id(name: &str) -> Option<u32> {
    let stem = name.strip_suffix(".pack")?;
    if stem.len() != 8 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// What a scan of a segment's headers found.
#[derive(Default)]
pub(super) struct Scan {
    /// (header, offset) of every record, in order.
    pub(super) records: Vec<(Header, u64)>,
    /// The end of the last whole record.
    pub(super) good_end: u64,
    /// Bytes skipped in the middle (unparseable).
    pub(super) skipped: u64,
}

/// Reads the header at `off` of a segment of `len` bytes; `None` if there
/// is no whole valid record there.
fn read_header(file: &File, off: u64, len: u64) -> Option<Header> {
    if off + HEADER_LEN as u64 > len {
        return None;
    }
    let mut h = [0u8; HEADER_LEN];
    file.read_exact_at(&mut h, off).ok()?;
    let hdr = Header::parse(&h)?;
    (off + HEADER_LEN as u64 + u64::from(hdr.len) <= len).then_some(hdr)
}

/// The offset of the next valid record at or after `from`, if any.
fn resync(file: &File, from: u64, len: u64) -> Option<u64> {
    const CHUNK: usize = 64 << 10;
    let mut buf = vec![0u8; CHUNK + MAGIC.len()];
    let mut at = from;
    while at < len {
        let n = usize::try_from((len - at).min(buf.len() as u64)).ok()?;
        file.read_exact_at(&mut buf[..n], at).ok()?;
        for i in 0..n.saturating_sub(MAGIC.len() - 1) {
            if buf[i..i + MAGIC.len()] == MAGIC && read_header(file, at + i as u64, len).is_some() {
                return Some(at + i as u64);
            }
        }
        // Overlap by the magic's length minus one.
        at += (n.saturating_sub(MAGIC.len() - 1)).max(1) as u64;
    }
    None
}

pub(super) fn scan_segment(file: &File, len: u64) -> Scan {
    let mut out = Scan::default();
    let mut off = 0u64;
    while off < len {
        match read_header(file, off, len) {
            Some(h) => {
                out.records.push((h, off));
                off += HEADER_LEN as u64 + u64::from(h.len);
                out.good_end = off;
            }
            None => match resync(file, off + 1, len) {
                Some(next) => {
                    out.skipped += next - off;
                    off = next;
                }
                None => break,
            },
        }
    }
    out
}
