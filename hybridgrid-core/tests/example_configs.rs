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

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
    match v {
        serde_json::Value::Object(m) if !m.is_empty() && !prefix.ends_with("images") => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => out.push((prefix.to_owned(), other.clone())),
    }
}

/// docs/configuration.md documents every key the code knows, so the
/// reference cannot drift from the code.
#[test]
fn configuration_reference_lists_every_key() {
    let cfg = hybridgrid_core::config::Config::default();
    let v = serde_json::to_value(&cfg).expect("serialize");
    let mut keys = Vec::new();
    flatten("", &v, &mut keys);
    if std::env::var_os("HG_PRINT_CONFIG_KEYS").is_some() {
        for (k, v) in &keys {
            println!("{k} = {v}");
        }
    }
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let doc = std::fs::read_to_string(&doc_path).expect("docs/configuration.md");
    let missing: Vec<String> = keys
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|k| !doc.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks: {missing:?}"
    );
}
