//! A configuration file and `HG_*` environment variables through the
//! configuration loader: a configuration or an error naming a key, a
//! variable or the file, never a panic.
//!
//! Input: the YAML file, then optionally a NUL byte and `NAME=value` lines
//! (the environment).
#![no_main]

use std::io::Write;

use hybridgrid_core::config::ConfigLoader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (yaml, env) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let env: Vec<(String, String)> = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let Ok(mut f) = tempfile::Builder::new().suffix(".yaml").tempfile() else {
        return;
    };
    if f.write_all(yaml).is_err() {
        return;
    }
    let loaded = ConfigLoader::new()
        .no_search()
        .file(f.path())
        .env_vars(env)
        .load();
    if let Ok(cfg) = loaded {
        // What the loader accepts passes its own validation.
        cfg.validate().expect("a loaded configuration is valid");
    }
});
