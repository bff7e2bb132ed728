//! Bytes read from a cache store through the entry decoder: an error or an
//! entry that re-encodes to the same bytes, never a panic.
//!
//! Each input is decoded twice: as it is (the checksum check, which random
//! bytes nearly never pass), and with a correct blake3 checksum appended,
//! so that the fuzzer reaches the section parser behind the checksum.
#![no_main]

use hybridgrid_cache::entry::CacheEntry;
use libfuzzer_sys::fuzz_target;

fn check(data: &[u8]) {
    if let Ok(e) = CacheEntry::decode(data) {
        let _ = e.to_output();
        let bytes = e.encode();
        assert_eq!(
            bytes.len(),
            e.encoded_len(),
            "encoded_len is the encoding's length"
        );
        let again = CacheEntry::decode(&bytes).expect("an entry re-decodes");
        assert_eq!(again.encode(), bytes);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut sealed = Vec::with_capacity(data.len() + 32);
    sealed.extend_from_slice(data);
    sealed.extend_from_slice(blake3::hash(data).as_bytes());
    check(&sealed);
});
