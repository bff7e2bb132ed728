//! Arbitrary YAML through the configuration loader: an error naming a key
//! or the file, never a panic.
#![no_main]

use std::io::Write;

use hybridgrid_core::config::ConfigLoader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut f) = tempfile::Builder::new().suffix(".yaml").tempfile() else {
        return;
    };
    if f.write_all(data).is_err() {
        return;
    }
    let _ = ConfigLoader::new().no_search().file(f.path()).load();
});
