//! Cache entries: everything needed to replay a compile without running it.
//!
//! A [`CacheEntry`] holds the object, the dependency file, the split-DWARF
//! (`.dwo`) file, the compiler's stdout and stderr and its exit code. Files
//! keep their [`Payload`] encoding (zstd, usually), so a hit in the
//! coordinator's tier goes back on the wire without recompressing.
//!
//! # What is cached
//!
//! Only successful compiles are stored ([`CacheEntry::is_cacheable`]), as
//! ccache does by default: a failing translation unit is normally being
//! edited, so its entry would rarely be reused, and a non-zero exit can come
//! from the environment (a compiler killed for memory, a signal) rather than
//! from the source, and replaying such a failure would be wrong until the
//! entry was evicted. Warnings on stderr of a successful compile are stored
//! and replayed. The format itself can hold any exit code, so this policy
//! can change without a format change.
//!
//! # Encoding
//!
//! ```text
//! magic  "HGCE"          4 bytes
//! version u16 LE         ENTRY_VERSION
//! exit code i32 LE
//! section count u16 LE
//! sections: tag u8, encoding u8, raw length u64 LE, length u64 LE, bytes
//! blake3 of everything above, 32 bytes
//! ```
//!
//! [`CacheEntry::decode`] checks the checksum first, then every length
//! against the remaining input; anything wrong is an [`EntryError`], never
//! a panic.

use bytes::Bytes;
use hybridgrid_core::payload::{Encoding, Payload};
use hybridgrid_core::task::{CompileOutput, OutputFile, OutputKind};

/// The first bytes of every encoded entry.
pub const MAGIC: [u8; 4] = *b"HGCE";

/// The version of the entry encoding.
pub const ENTRY_VERSION: u16 = 1;

/// The largest decoded size a section may announce (4 GiB).
pub const MAX_SECTION_LEN: u64 = 4 << 30;

const HEADER_LEN: usize = 4 + 2 + 4 + 2;
const SECTION_HEADER_LEN: usize = 1 + 1 + 8 + 8;
const CHECKSUM_LEN: usize = 32;

const TAG_STDOUT: u8 = 1;
const TAG_STDERR: u8 = 2;
const TAG_OBJECT: u8 = 3;
const TAG_DEP_FILE: u8 = 4;
const TAG_SPLIT_DWARF: u8 = 5;

/// Why bytes are not a valid entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// Fewer bytes than the fixed header and checksum.
    #[error("cache entry truncated: {0} bytes")]
    Truncated(usize),
    /// The magic is wrong: not an entry.
    #[error("not a cache entry (bad magic)")]
    BadMagic,
    /// An entry written by another version of the format.
    #[error("unsupported cache entry version {0}")]
    UnsupportedVersion(u16),
    /// The checksum does not match the content.
    #[error("cache entry checksum mismatch")]
    Checksum,
    /// A section runs past the end, repeats, or is otherwise malformed.
    #[error("malformed cache entry: {0}")]
    Malformed(&'static str),
}

/// A stored compile result.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CacheEntry {
    /// The compiler's exit code.
    pub exit_code: i32,
    /// The compiler's standard output.
    pub stdout: Bytes,
    /// The compiler's standard error (warnings).
    pub stderr: Bytes,
    /// The object file.
    pub object: Option<Payload>,
    /// The dependency file (`-MD`/`-MF`), needed to replay a direct-mode hit.
    pub dep_file: Option<Payload>,
    /// The split-DWARF file (`-gsplit-dwarf`).
    pub split_dwarf: Option<Payload>,
}

impl CacheEntry {
    /// True when a compile's result should be stored: the compiler exited
    /// with 0 and produced an object (see the module docs).
    pub fn is_cacheable(output: &CompileOutput) -> bool {
        output.success() && output.output(OutputKind::Object).is_some()
    }

    /// An entry from a compile's result. Uncompressed files are compressed
    /// when that pays.
    pub fn from_output(output: &CompileOutput) -> Self {
        let file = |kind| output.output(kind).map(|f| compress_raw(&f.data));
        CacheEntry {
            exit_code: output.exit_code,
            stdout: output.stdout.clone(),
            stderr: output.stderr.clone(),
            object: file(OutputKind::Object),
            dep_file: None,
            split_dwarf: file(OutputKind::SplitDwarf),
        }
    }

    /// Adds a dependency file.
    pub fn with_dep_file(mut self, dep_file: Payload) -> Self {
        self.dep_file = Some(compress_raw(&dep_file));
        self
    }

    /// The compile result this entry replays, marked `from_cache`. The
    /// dependency file is not part of a [`CompileOutput`]; take it from
    /// [`CacheEntry::dep_file`] first if needed.
    pub fn to_output(&self) -> CompileOutput {
        let mut out = CompileOutput::default();
        out.exit_code = self.exit_code;
        out.stdout = self.stdout.clone();
        out.stderr = self.stderr.clone();
        if let Some(o) = &self.object {
            out.outputs.push(OutputFile {
                kind: OutputKind::Object,
                data: o.clone(),
            });
        }
        if let Some(d) = &self.split_dwarf {
            out.outputs.push(OutputFile {
                kind: OutputKind::SplitDwarf,
                data: d.clone(),
            });
        }
        out.from_cache = true;
        out
    }

    fn sections(&self) -> Vec<(u8, Payload)> {
        let mut v = Vec::with_capacity(5);
        if !self.stdout.is_empty() {
            v.push((TAG_STDOUT, Payload::raw(self.stdout.clone())));
        }
        if !self.stderr.is_empty() {
            v.push((TAG_STDERR, Payload::raw(self.stderr.clone())));
        }
        for (tag, p) in [
            (TAG_OBJECT, &self.object),
            (TAG_DEP_FILE, &self.dep_file),
            (TAG_SPLIT_DWARF, &self.split_dwarf),
        ] {
            if let Some(p) = p {
                v.push((tag, p.clone()));
            }
        }
        v
    }

    /// The length of [`CacheEntry::encode`]'s output, without encoding.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN
            + self
                .sections()
                .iter()
                .map(|(_, p)| SECTION_HEADER_LEN + p.encoded().len())
                .sum::<usize>()
            + CHECKSUM_LEN
    }

    /// The binary encoding (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let sections = self.sections();
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&ENTRY_VERSION.to_le_bytes());
        out.extend_from_slice(&self.exit_code.to_le_bytes());
        out.extend_from_slice(&(sections.len() as u16).to_le_bytes());
        for (tag, p) in &sections {
            out.push(*tag);
            out.push(match p.encoding() {
                Encoding::Identity => 0,
                Encoding::Zstd => 1,
            });
            out.extend_from_slice(&p.raw_len().to_le_bytes());
            out.extend_from_slice(&(p.encoded().len() as u64).to_le_bytes());
            out.extend_from_slice(p.encoded());
        }
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    /// Decodes and validates an entry.
    pub fn decode(data: &[u8]) -> Result<Self, EntryError> {
        Self::decode_bytes(Bytes::copy_from_slice(data))
    }

    /// Decodes and validates an entry, sharing `data`'s buffer for the
    /// file contents.
    pub fn decode_bytes(data: Bytes) -> Result<Self, EntryError> {
        if data.len() < HEADER_LEN + CHECKSUM_LEN {
            return Err(EntryError::Truncated(data.len()));
        }
        if data[..4] != MAGIC {
            return Err(EntryError::BadMagic);
        }
        let version = u16::from_le_bytes([data[4], data[5]]);
        if version != ENTRY_VERSION {
            return Err(EntryError::UnsupportedVersion(version));
        }
        let body_len = data.len() - CHECKSUM_LEN;
        if blake3::hash(&data[..body_len]).as_bytes()[..] != data[body_len..] {
            return Err(EntryError::Checksum);
        }
        let mut r = Reader {
            data: data.slice(..body_len),
            pos: 6,
        };
        let exit_code = i32::from_le_bytes(r.array()?);
        let count = u16::from_le_bytes(r.array()?);
        let mut entry = CacheEntry {
            exit_code,
            ..CacheEntry::default()
        };
        let mut seen = 0u32;
        for _ in 0..count {
            let [tag] = r.array::<1>()?;
            let [enc] = r.array::<1>()?;
            let raw_len = u64::from_le_bytes(r.array()?);
            let len = u64::from_le_bytes(r.array()?);
            let bytes = r.take(len)?;
            let encoding = match enc {
                0 => Encoding::Identity,
                1 => Encoding::Zstd,
                _ => return Err(EntryError::Malformed("unknown section encoding")),
            };
            if raw_len > MAX_SECTION_LEN {
                return Err(EntryError::Malformed("section too large"));
            }
            if encoding == Encoding::Identity && raw_len != len {
                return Err(EntryError::Malformed("raw section length mismatch"));
            }
            if !(1..=5).contains(&tag) {
                return Err(EntryError::Malformed("unknown section tag"));
            }
            if seen & (1 << tag) != 0 {
                return Err(EntryError::Malformed("repeated section"));
            }
            seen |= 1 << tag;
            let payload = Payload::from_parts(encoding, bytes, raw_len);
            match tag {
                TAG_STDOUT | TAG_STDERR => {
                    if encoding != Encoding::Identity {
                        return Err(EntryError::Malformed("compressed diagnostics"));
                    }
                    let b = payload.encoded().clone();
                    if tag == TAG_STDOUT {
                        entry.stdout = b;
                    } else {
                        entry.stderr = b;
                    }
                }
                TAG_OBJECT => entry.object = Some(payload),
                TAG_DEP_FILE => entry.dep_file = Some(payload),
                _ => entry.split_dwarf = Some(payload),
            }
        }
        if r.pos != r.data.len() {
            return Err(EntryError::Malformed("trailing bytes"));
        }
        Ok(entry)
    }
}

fn compress_raw(p: &Payload) -> Payload {
    match p.encoding() {
        Encoding::Identity => Payload::compress(p.encoded().clone()),
        _ => p.clone(),
    }
}

struct Reader {
    data: Bytes,
    pos: usize,
}

impl Reader {
    fn take(&mut self, len: u64) -> Result<Bytes, EntryError> {
        let remaining = (self.data.len() - self.pos) as u64;
        if len > remaining {
            return Err(EntryError::Malformed("section runs past the end"));
        }
        let end = self.pos + len as usize;
        let b = self.data.slice(self.pos..end);
        self.pos = end;
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], EntryError> {
        let b = self.take(N as u64)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&b);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> CacheEntry {
        CacheEntry {
            exit_code: 0,
            stdout: Bytes::from_static(b"out"),
            stderr: Bytes::from_static(b"x.c:1: warning: unused\n"),
            object: Some(Payload::compress(vec![7u8; 10_000])),
            dep_file: Some(Payload::raw(&b"x.o: x.c x.h\n"[..])),
            split_dwarf: Some(Payload::raw(&b"dwo"[..])),
        }
    }

    #[test]
    fn roundtrip() {
        let e = sample();
        let enc = e.encode();
        assert_eq!(enc.len(), e.encoded_len());
        assert_eq!(CacheEntry::decode(&enc).unwrap(), e);
        let empty = CacheEntry::default();
        assert_eq!(CacheEntry::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let enc = sample().encode();
        for n in 0..enc.len() {
            assert!(CacheEntry::decode(&enc[..n]).is_err(), "truncated at {n}");
        }
    }

    #[test]
    fn every_byte_flip_is_an_error() {
        let enc = sample().encode();
        for i in 0..enc.len() {
            let mut bad = enc.clone();
            bad[i] ^= 0x40;
            assert!(CacheEntry::decode(&bad).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn typed_errors() {
        let enc = sample().encode();
        assert_eq!(CacheEntry::decode(b"HG"), Err(EntryError::Truncated(2)));
        let mut bad = enc.clone();
        bad[0] = b'X';
        assert_eq!(CacheEntry::decode(&bad), Err(EntryError::BadMagic));
        let mut bad = enc.clone();
        bad[4] = 9;
        assert_eq!(
            CacheEntry::decode(&bad),
            Err(EntryError::UnsupportedVersion(9))
        );
        let mut bad = enc.clone();
        let last = bad.len() - 40;
        bad[last] ^= 1;
        assert_eq!(CacheEntry::decode(&bad), Err(EntryError::Checksum));
    }

    /// A well-checksummed entry whose section lies about its length is
    /// still refused.
    #[test]
    fn lying_lengths_with_valid_checksum() {
        let mut body = Vec::new();
        body.extend_from_slice(&MAGIC);
        body.extend_from_slice(&ENTRY_VERSION.to_le_bytes());
        body.extend_from_slice(&0i32.to_le_bytes());
        body.extend_from_slice(&1u16.to_le_bytes());
        body.push(TAG_OBJECT);
        body.push(0);
        body.extend_from_slice(&u64::MAX.to_le_bytes());
        body.extend_from_slice(&u64::MAX.to_le_bytes());
        let sum = blake3::hash(&body);
        body.extend_from_slice(sum.as_bytes());
        assert!(matches!(
            CacheEntry::decode(&body),
            Err(EntryError::Malformed(_))
        ));
    }

    #[test]
    fn output_conversion() {
        let mut out = CompileOutput::default();
        out.stderr = Bytes::from_static(b"warning");
        out.outputs.push(OutputFile {
            kind: OutputKind::Object,
            data: Payload::raw(vec![1u8; 4096]),
        });
        assert!(CacheEntry::is_cacheable(&out));
        let e = CacheEntry::from_output(&out);
        assert_eq!(
            e.object.as_ref().map(|p| p.encoding()),
            Some(Encoding::Zstd)
        );
        let back = e.to_output();
        assert!(back.from_cache);
        assert_eq!(back.stderr, out.stderr);
        let obj = back.output(OutputKind::Object).map(|o| o.data.decode());
        assert_eq!(obj.and_then(|r| r.ok()).as_deref(), Some(&[1u8; 4096][..]));

        let mut failed = CompileOutput::default();
        failed.exit_code = 1;
        assert!(!CacheEntry::is_cacheable(&failed));
        assert!(!CacheEntry::is_cacheable(&CompileOutput::default()));
    }

    fn payload() -> impl Strategy<Value = Option<Payload>> {
        proptest::option::of(
            (
                proptest::collection::vec(any::<u8>(), 0..2048),
                any::<bool>(),
            )
                .prop_map(|(v, compress)| {
                    if compress {
                        Payload::compress(v)
                    } else {
                        Payload::raw(v)
                    }
                }),
        )
    }

    fn entry() -> impl Strategy<Value = CacheEntry> {
        (
            any::<i32>(),
            proptest::collection::vec(any::<u8>(), 0..256),
            proptest::collection::vec(any::<u8>(), 0..256),
            payload(),
            payload(),
            payload(),
        )
            .prop_map(
                |(exit_code, so, se, object, dep_file, split_dwarf)| CacheEntry {
                    exit_code,
                    stdout: so.into(),
                    stderr: se.into(),
                    object,
                    dep_file,
                    split_dwarf,
                },
            )
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = CacheEntry::decode(&data);
        }

        #[test]
        fn decoding_mutated_entries_never_panics(e in entry(), pos in any::<usize>(), byte in any::<u8>(), cut in any::<usize>()) {
            let mut enc = e.encode();
            let i = pos % enc.len();
            enc[i] = byte;
            enc.truncate(cut % (enc.len() + 1));
            let _ = CacheEntry::decode(&enc);
        }

        #[test]
        fn encode_decode_roundtrips(e in entry()) {
            let enc = e.encode();
            prop_assert_eq!(enc.len(), e.encoded_len());
            prop_assert_eq!(CacheEntry::decode(&enc), Ok(e));
        }
    }
}
