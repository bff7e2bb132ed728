//! The hexadecimal spelling of 32-byte digests: cache keys, the digests of
//! a compile's files, REAPI blob hashes. One spelling everywhere: 64
//! lower-case digits written, either case read.
//!
//! ```
//! use hybridgrid_core::hex;
//!
//! let d = [0xab; 32];
//! let s = hex::encode(&d);
//! assert_eq!(&s[..4], "abab");
//! assert_eq!(hex::decode(&s), Some(d));
//! assert_eq!(hex::decode(&s.to_uppercase()), Some(d));
//! assert_eq!(hex::decode("abab"), None);
//! ```

/// The 64 lower-case hexadecimal digits of `bytes`.
pub fn encode(bytes: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// The 32 bytes that `s` spells, if it is exactly 64 hexadecimal digits
/// (either case).
pub fn decode(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}
