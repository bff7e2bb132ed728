//! The worker model: identity, capabilities and where a worker was learned from.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::task::CompilerIdentity;

/// The id a worker goes by (its host name by default).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkerId(pub String);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for WorkerId {
    fn from(s: &str) -> Self {
        WorkerId(s.to_owned())
    }
}

/// A CPU architecture, named as the configuration names it
/// (`amd64`, `arm64`, `armv7`, ...).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum Arch {
    /// x86-64.
    Amd64,
    /// 64-bit ARM (aarch64).
    Arm64,
    /// 32-bit ARM v7 (hard float).
    Armv7,
    /// 32-bit x86.
    I386,
    /// RISC-V 64.
    Riscv64,
    /// Anything else, by name.
    Other(String),
}

impl Arch {
    /// Parses an architecture name or alias (`x86_64`, `aarch64`, `armhf`...).
    pub fn parse(s: &str) -> Arch {
        match s.trim().to_ascii_lowercase().as_str() {
            "amd64" | "x86_64" | "x86-64" | "x64" => Arch::Amd64,
            "arm64" | "aarch64" => Arch::Arm64,
            "armv7" | "armv7l" | "armhf" | "arm" | "armv7hf" => Arch::Armv7,
            "i386" | "i686" | "x86" | "386" => Arch::I386,
            "riscv64" => Arch::Riscv64,
            other => Arch::Other(other.to_owned()),
        }
    }

    /// The architecture of a target triple such as `aarch64-linux-gnu`.
    pub fn from_triple(triple: &str) -> Arch {
        let first = triple.split('-').next().unwrap_or(triple);
        if first.starts_with("arm") && first != "arm64" {
            return Arch::Armv7;
        }
        Arch::parse(first)
    }

    /// The architecture this program runs on.
    pub fn host() -> Arch {
        Arch::parse(std::env::consts::ARCH)
    }

    /// The canonical name.
    pub fn as_str(&self) -> &str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
            Arch::Armv7 => "armv7",
            Arch::I386 => "i386",
            Arch::Riscv64 => "riscv64",
            Arch::Other(s) => s,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for Arch {
    fn from(s: String) -> Self {
        Arch::parse(&s)
    }
}

impl From<Arch> for String {
    fn from(a: Arch) -> Self {
        a.as_str().to_owned()
    }
}

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
    use crate::task::{CompilerFamily, DriverKind};

    fn gcc(version: &str, target: &str) -> CompilerIdentity {
        CompilerIdentity {
            family: CompilerFamily::Gcc,
            driver: DriverKind::C,
            version: version.into(),
            target: target.into(),
        }
    }

    #[test]
    fn arch_aliases() {
        assert_eq!(Arch::parse("x86_64"), Arch::Amd64);
        assert_eq!(Arch::parse("aarch64"), Arch::Arm64);
        assert_eq!(Arch::from_triple("aarch64-linux-gnu"), Arch::Arm64);
        assert_eq!(Arch::from_triple("arm-linux-gnueabihf"), Arch::Armv7);
        assert_eq!(Arch::from_triple("x86_64-pc-linux-gnu"), Arch::Amd64);
        assert_eq!(Arch::parse("sparc").as_str(), "sparc");
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
