//! The loader: built-in defaults, then the YAML file, the environment and
//! flags, in that order; and where the file is searched for.

use std::path::{Path, PathBuf};

use super::error::tidy_message;
use super::{Config, ConfigError};

/// Environment variable naming the configuration file, as `--config` does
/// (the flag wins). `hgbuild make` sets it for the compiles of the build,
/// so that every compile, in whatever directory make runs it, reads the
/// file the wrapper read.
pub const ENV_CONFIG_FILE: &str = "HG_CONFIG";

/// The files searched when no `--config` is given, in order.
pub fn default_search_paths() -> Vec<PathBuf> {
    vec![
        PathBuf::from("hybridgrid.yaml"),
        expand_home("~/.hybridgrid/config.yaml"),
        PathBuf::from("/etc/hybridgrid/config.yaml"),
    ]
}

/// Expands a leading `~` to the home directory.
pub fn expand_home(p: &str) -> PathBuf {
    if let Some(rest) = p
        .strip_prefix("~/")
        .or(if p == "~" { Some("") } else { None })
        && let Some(home) = std::env::var_os("HOME")
    {
        return Path::new(&home).join(rest);
    }
    PathBuf::from(p)
}

pub(super) const SECTIONS: &[&str] = &[
    "coordinator",
    "worker",
    "client",
    "cache",
    "discovery",
    "scheduler",
    "resilience",
    "tls",
    "auth",
    "logging",
    "metrics",
];

pub(super) const LIST_KEYS: &[&str] = &["coordinator.static_workers", "discovery.mdns.interfaces"];

/// Short environment variables and the keys they set.
pub const ENV_ALIASES: &[(&str, &[&str])] = &[
    ("HG_LOG_LEVEL", &["logging.level"]),
    ("HG_LOG_FORMAT", &["logging.format"]),
    (
        "HG_COORDINATOR",
        &["client.coordinator", "worker.coordinator"],
    ),
    ("HG_CC", &["client.cc"]),
    ("HG_CXX", &["client.cxx"]),
];

/// Builds a [`Config`] from defaults, a file, environment and overrides.
#[derive(Clone, Debug, Default)]
pub struct ConfigLoader {
    file: Option<PathBuf>,
    search: Option<Vec<PathBuf>>,
    env: Vec<(String, String)>,
    overrides: Vec<(String, config::Value)>,
}

impl ConfigLoader {
    /// A loader that searches the default paths and reads no environment.
    pub fn new() -> Self {
        ConfigLoader::default()
    }

    /// Reads this file (it must exist) instead of searching.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// Reads this file if given, else searches the default paths.
    pub fn file_opt(self, path: Option<impl Into<PathBuf>>) -> Self {
        match path {
            Some(p) => self.file(p),
            None => self,
        }
    }

    /// Searches these paths instead of the default ones.
    pub fn search_paths(mut self, paths: Vec<PathBuf>) -> Self {
        self.search = Some(paths);
        self
    }

    /// Searches no file (only `file` is read, if set).
    pub fn no_search(self) -> Self {
        self.search_paths(Vec::new())
    }

    /// Takes environment variables from this list (tests inject here).
    pub fn env_vars<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Takes the process environment's `HG_*` variables.
    pub fn process_env(self) -> Self {
        let vars: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("HG_"))
            .collect();
        self.env_vars(vars)
    }

    /// Sets a key (a flag); flags win over everything else.
    pub fn set(mut self, key: &str, value: impl Into<config::Value>) -> Self {
        self.overrides.push((key.to_owned(), value.into()));
        self
    }

    /// Sets a key if the value is present.
    pub fn set_opt<V: Into<config::Value>>(self, key: &str, value: Option<V>) -> Self {
        match value {
            Some(v) => self.set(key, v),
            None => self,
        }
    }

    /// The file that [`ConfigLoader::load`] would read, if any.
    pub fn resolved_file(&self) -> Option<PathBuf> {
        if let Some(f) = &self.file {
            return Some(f.clone());
        }
        if let Some((_, f)) = self.env.iter().find(|(k, _)| k == ENV_CONFIG_FILE)
            && !f.is_empty()
        {
            return Some(PathBuf::from(f));
        }
        let search = self.search.clone().unwrap_or_else(default_search_paths);
        search.into_iter().find(|p| p.is_file())
    }

    fn env_overrides(&self) -> Result<Vec<(String, String, String)>, ConfigError> {
        let mut out = Vec::new();
        for (name, value) in &self.env {
            if let Some((_, keys)) = ENV_ALIASES.iter().find(|(n, _)| n == name) {
                for k in keys.iter() {
                    out.push((k.to_string(), value.clone(), name.clone()));
                }
                continue;
            }
            let Some(rest) = name.strip_prefix("HG_") else {
                continue;
            };
            if !rest.contains("__") {
                continue;
            }
            let key = rest.to_ascii_lowercase().replace("__", ".");
            let section = key.split('.').next().unwrap_or_default().to_owned();
            if !SECTIONS.contains(&section.as_str()) {
                return Err(ConfigError::Key {
                    key,
                    origin: format!(" (from {name})"),
                    message: format!(
                        "unknown section `{section}`; expected one of {}",
                        SECTIONS.join(", ")
                    ),
                });
            }
            out.push((key, value.clone(), name.clone()));
        }
        Ok(out)
    }

    /// Loads and validates the configuration.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        let file = self.resolved_file();
        if let Some(path) = &file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
                path: path.clone(),
                source,
            })?;
            if !text.trim().is_empty() {
                builder =
                    builder.add_source(config::File::from_str(&text, config::FileFormat::Yaml));
            }
        }
        let env = self.env_overrides()?;
        for (key, value, _) in &env {
            let v: config::Value = if LIST_KEYS.contains(&key.as_str()) {
                let items: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                items.into()
            } else {
                value.clone().into()
            };
            builder = builder
                .set_override(key.as_str(), v)
                .map_err(|e| ConfigError::key(key.clone(), e.to_string()))?;
        }
        for (key, value) in &self.overrides {
            builder = builder
                .set_override(key.as_str(), value.clone())
                .map_err(|e| ConfigError::key(key.clone(), e.to_string()))?;
        }
        let built = builder.build().map_err(|e| match &file {
            Some(path) => ConfigError::Syntax {
                path: path.clone(),
                message: e.to_string(),
            },
            None => ConfigError::key("", e.to_string()),
        })?;
        let root: config::Value = built
            .try_deserialize()
            .map_err(|e| ConfigError::key("", e.to_string()))?;
        let cfg: Config = serde_path_to_error::deserialize(root).map_err(|e| {
            let key = e.path().to_string();
            let origin = origin_of(&key, &env, self, file.as_deref());
            ConfigError::Key {
                key,
                origin,
                message: tidy_message(e.into_inner().to_string()),
            }
        })?;
        cfg.validate().map_err(|e| match e {
            ConfigError::Key { key, message, .. } => {
                let origin = origin_of(&key, &env, self, file.as_deref());
                ConfigError::Key {
                    key,
                    origin,
                    message,
                }
            }
            other => other,
        })?;
        Ok(cfg)
    }
}

pub(super) fn origin_of(
    key: &str,
    env: &[(String, String, String)],
    loader: &ConfigLoader,
    file: Option<&Path>,
) -> String {
    if loader
        .overrides
        .iter()
        .any(|(k, _)| key.starts_with(k.as_str()))
    {
        return " (from the command line)".into();
    }
    if let Some((_, _, name)) = env
        .iter()
        .rev()
        .find(|(k, _, _)| key.starts_with(k.as_str()))
    {
        return format!(" (from {name})");
    }
    match file {
        Some(f) => format!(" (in {})", f.display()),
        None => String::new(),
    }
}
