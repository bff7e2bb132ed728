//! The worker model: identity, capabilities and where a worker was learned from.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::identity::CompilerIdentity;
pub use crate::identity::{Arch, WorkerId};

/// How the coordinator learned of a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerSource {
    /// The worker registered itself (`hg-worker serve --coordinator`).
    Handshake,
    /// Listed in `coordinator.static_workers`.
    Static,
    /// Found by mDNS.
    Mdns,
}

impl WorkerSource {
    /// `handshake`, `static` or `mdns`.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerSource::Handshake => "handshake",
            WorkerSource::Static => "static",
            WorkerSource::Mdns => "mdns",
        }
    }
}

impl fmt::Display for WorkerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A compiler a worker can run.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CompilerInfo {
    /// The name it was found under (`gcc`, `aarch64-linux-gnu-g++`...).
    pub name: String,
    /// The resolved path of the binary.
    pub path: String,
    /// What it is.
    pub identity: CompilerIdentity,
}

/// A Docker image a worker can compile in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DockerImage {
    /// The architecture the image's compiler targets.
    pub arch: Arch,
    /// The image reference.
    pub image: String,
}

/// What a worker can do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Capabilities {
    /// The worker's native architecture.
    pub arch: Option<Arch>,
    /// Operating system (`linux`, `macos`...).
    pub os: String,
    /// Logical CPUs.
    pub cores: u32,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// Compilers it detected, native and cross.
    pub compilers: Vec<CompilerInfo>,
    /// Docker images it can compile in (empty without a usable daemon).
    pub docker_images: Vec<DockerImage>,
    /// How many compiles it runs at once.
    pub max_parallel_tasks: u32,
}

impl Capabilities {
    /// An empty capability set for the given architecture.
    pub fn new(arch: Arch) -> Self {
        Capabilities {
            arch: Some(arch),
            os: std::env::consts::OS.to_owned(),
            ..Default::default()
        }
    }

    /// The compiler matching `identity` exactly, if the worker has one.
    pub fn compiler_for(&self, identity: &CompilerIdentity) -> Option<&CompilerInfo> {
        self.compilers.iter().find(|c| &c.identity == identity)
    }

    /// True if the worker can compile for `identity`: it has that exact
    /// compiler (same family, driver, version and target).
    pub fn can_compile(&self, identity: &CompilerIdentity) -> bool {
        self.compiler_for(identity).is_some()
    }

    /// True if the worker can produce code for `arch` natively, with a cross
    /// compiler or through a Docker image.
    pub fn can_target(&self, arch: &Arch) -> bool {
        self.arch.as_ref() == Some(arch)
            || self
                .compilers
                .iter()
                .any(|c| &c.identity.target_arch() == arch)
            || self.docker_images.iter().any(|d| &d.arch == arch)
    }

    /// Compiler names for display, e.g. `gcc 12.2.0`.
    pub fn compiler_summary(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .compilers
            .iter()
            .map(|c| format!("{} {}", c.name, c.identity.version))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// A worker as the coordinator knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// Its id.
    pub id: WorkerId,
    /// The `host:port` its gRPC service is reached at.
    pub address: String,
    /// The port of its HTTP endpoints (0 if unknown).
    pub http_port: u16,
    /// How it was learned of.
    pub source: WorkerSource,
    /// What it can do.
    pub capabilities: Capabilities,
    /// Its hybridgrid version.
    pub version: String,
}

impl WorkerInfo {
    /// A worker with the given id, address, source and capabilities.
    pub fn new(
        id: WorkerId,
        address: impl Into<String>,
        source: WorkerSource,
        capabilities: Capabilities,
    ) -> Self {
        WorkerInfo {
            id,
            address: address.into(),
            http_port: 0,
            source,
            capabilities,
            version: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{CompilerFamily, DriverKind};

    fn gcc(version: &str, target: &str) -> CompilerIdentity {
        CompilerIdentity {
            family: CompilerFamily::Gcc,
            driver: DriverKind::C,
            version: version.into(),
            target: target.into(),
        }
    }

    #[test]
    fn compiler_match_is_exact() {
        let mut caps = Capabilities::new(Arch::Amd64);
        caps.compilers.push(CompilerInfo {
            name: "gcc".into(),
            path: "/usr/bin/gcc".into(),
            identity: gcc("12.2.0", "x86_64-linux-gnu"),
        });
        assert!(caps.can_compile(&gcc("12.2.0", "x86_64-linux-gnu")));
        assert!(!caps.can_compile(&gcc("13.1.0", "x86_64-linux-gnu")));
        assert!(!caps.can_compile(&gcc("12.2.0", "aarch64-linux-gnu")));
        assert!(caps.can_target(&Arch::Amd64));
        assert!(!caps.can_target(&Arch::Arm64));
    }
}
