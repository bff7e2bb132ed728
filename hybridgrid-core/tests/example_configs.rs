//! Every example configuration under docs/config parses and validates.

use std::path::Path;

use hybridgrid_core::config::ConfigLoader;

#[test]
fn every_example_config_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("docs/config exists") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let cfg = ConfigLoader::new()
            .no_search()
            .file(&path)
            .load()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(cfg.cache.max_size_gb > 0.0, "{}", path.display());
        seen += 1;
    }
    assert!(seen >= 3, "expected an example per binary, found {seen}");
}
