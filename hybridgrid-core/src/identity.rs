//! The small types that name things across the grid: a worker's id, a CPU
//! architecture, and a compiler's identity (family, driver, version and
//! target). The task and worker models above both use them.

use std::fmt;

use serde::{Deserialize, Serialize};

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

/// The family of a compiler driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum CompilerFamily {
    /// GNU gcc / g++.
    Gcc,
    /// LLVM clang / clang++.
    Clang,
}

impl CompilerFamily {
    /// A short lowercase name (`gcc`, `clang`).
    pub fn as_str(self) -> &'static str {
        match self {
            CompilerFamily::Gcc => "gcc",
            CompilerFamily::Clang => "clang",
        }
    }
}

impl fmt::Display for CompilerFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a driver is the C driver (`gcc`, `clang`) or the C++ one
/// (`g++`, `clang++`). They differ in how they treat `.c` files and in what
/// they link, so a task keeps the driver kind it was invoked with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    /// `gcc`, `cc`, `clang`.
    C,
    /// `g++`, `c++`, `clang++`.
    Cxx,
}

impl DriverKind {
    /// `c` or `c++`.
    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::C => "c",
            DriverKind::Cxx => "c++",
        }
    }
}

/// What identifies a compiler for the purpose of producing the same output:
/// its family, driver kind, full version and target triple.
///
/// Two compilers with equal identities produce the same object from the same
/// input and arguments; a task only runs on a worker with an equal identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CompilerIdentity {
    /// gcc or clang.
    pub family: CompilerFamily,
    /// C or C++ driver.
    pub driver: DriverKind,
    /// The exact version, e.g. `12.2.0` (from `-dumpfullversion` or `--version`).
    pub version: String,
    /// The target triple the compiler produces code for (`-dumpmachine`),
    /// e.g. `x86_64-linux-gnu`.
    pub target: String,
}

impl CompilerIdentity {
    /// The architecture of the code this compiler produces.
    pub fn target_arch(&self) -> Arch {
        Arch::from_triple(&self.target)
    }
}

impl fmt::Display for CompilerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match (self.family, self.driver) {
            (CompilerFamily::Gcc, DriverKind::C) => "gcc",
            (CompilerFamily::Gcc, DriverKind::Cxx) => "g++",
            (CompilerFamily::Clang, DriverKind::C) => "clang",
            (CompilerFamily::Clang, DriverKind::Cxx) => "clang++",
        };
        write!(f, "{name} {} ({})", self.version, self.target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_aliases() {
        assert_eq!(Arch::parse("x86_64"), Arch::Amd64);
        assert_eq!(Arch::parse("aarch64"), Arch::Arm64);
        assert_eq!(Arch::from_triple("aarch64-linux-gnu"), Arch::Arm64);
        assert_eq!(Arch::from_triple("arm-linux-gnueabihf"), Arch::Armv7);
        assert_eq!(Arch::from_triple("x86_64-pc-linux-gnu"), Arch::Amd64);
        assert_eq!(Arch::parse("sparc").as_str(), "sparc");
    }
}
