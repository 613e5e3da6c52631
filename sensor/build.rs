//! Builds the eBPF object (sensor-ebpf's binary) with the nightly toolchain and bpf-linker, and
//! places it in OUT_DIR where `src/capture/loader.rs` embeds it.
//!
//! `AYA_BUILD_SKIP=1` builds user space alone (for machines without the eBPF toolchain); an empty
//! placeholder object is embedded then, and loading it at run time fails with a clear error.

use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    let manifest_dir = PathBuf::from(
        env::var_os("CARGO_MANIFEST_DIR").ok_or_else(|| anyhow!("CARGO_MANIFEST_DIR not set"))?,
    );
    let ebpf_dir = manifest_dir
        .parent()
        .ok_or_else(|| anyhow!("sensor/ has no parent directory"))?
        .join("sensor-ebpf");
    let ebpf_dir = ebpf_dir.to_str().context("sensor-ebpf path is not UTF-8")?;

    let skipped =
        env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let object = out_dir.join("sensor-ebpf");
    if skipped && !object.exists() {
        fs::write(&object, b"").context("writing the placeholder eBPF object")?;
    }
    // `cargo xtask setup` sets this when the machine's nightly is not called `nightly`.
    println!("cargo:rerun-if-env-changed=APISESSIONS_EBPF_TOOLCHAIN");
    let toolchain = env::var("APISESSIONS_EBPF_TOOLCHAIN").unwrap_or_else(|_| "nightly".to_owned());
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "sensor-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
    .context(
        "building the eBPF programs failed; run `cargo xtask setup` (nightly rust-src and \
         bpf-linker), or set AYA_BUILD_SKIP=1 to build user space alone",
    )
}
