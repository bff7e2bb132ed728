//! Links `hgbuild` as a position-dependent executable on Linux.
//!
//! hgbuild starts once for every compiler call of a build: a configure step
//! runs it for each of its hundreds of probes, and Meson for every check.
//! As a position-independent executable its ~27,000 relative relocations
//! are applied at every start, which writes (and so copies) every page of
//! its relocated data: about 190 page faults and 0.5 ms of a 1.8 ms start on
//! the 2-core benchmark machine. Linked at a fixed address it starts with
//! half the page faults. Shared libraries keep their randomised addresses;
//! hg-coord and hg-worker, the long-running network servers, stay PIE.
//!
//! `HG_HGBUILD_PIE=1` at build time keeps hgbuild PIE too.

fn main() {
    println!("cargo:rerun-if-env-changed=HG_HGBUILD_PIE");
    let linux_gnu = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    let keep_pie = std::env::var_os("HG_HGBUILD_PIE").is_some_and(|v| !v.is_empty() && v != "0");
    if linux_gnu && !keep_pie {
        println!("cargo:rustc-link-arg-bin=hgbuild=-no-pie");
    }
}
