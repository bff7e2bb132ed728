//! Bytes read from a cache store through the entry decoder: an error or an
//! entry that re-encodes to the same bytes, never a panic.
#![no_main]

use hybridgrid_cache::entry::CacheEntry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = CacheEntry::decode(data) {
        let _ = e.to_output();
        let again = CacheEntry::decode(&e.encode()).expect("an entry re-decodes");
        assert_eq!(again.encode(), e.encode());
    }
});
