//! Packs the daemon's relative relocations (`-z pack-relative-relocs`, DT_RELR) when the C
//! library it is built against can load them.
//!
//! A position-independent Rust binary carries tens of thousands of relative relocations:
//! as plain `Elf64_Rela` records that is about 2 MB the loader reads, and keeps resident, on
//! every start. Packed, they take a few kilobytes. glibc loads packed relocations from 2.36
//! on (musl from 1.2.4); a binary that uses them refuses to start on an older glibc. So they
//! are packed only for a native glibc build on a glibc new enough, where the binary already
//! needs a recent glibc anyway. `PROPLET_PACK_RELOCS=0` turns it off, `=1` forces it on
//! (cross builds for a known-new target).
//!
//! Lays out the daemon's start-up code together (`link/startup.ld`, made by `just
//! startup-layout`). The kernel maps a binary's code 64 KB around each page a fault touches,
//! and the functions a start runs are otherwise spread over the whole of the code: an idle
//! worker kept 6.8 MB of it resident and 13 MB in all; with them together (1,400
//! functions, 1.7 MB), 2.9 MB of code and 8.4 MB in all (x86_64, December 2026). The
//! script names functions by their v0 symbols without crate hashes (`.cargo/config.toml`
//! asks for v0), so it holds for any profile and feature set; a function it names that a
//! build does not have is skipped. Linux only (GNU ld and LLD read it; gold does not):
//! `PROPLET_STARTUP_LAYOUT=0` turns it off.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PROPLET_PACK_RELOCS");
    let wanted = match std::env::var("PROPLET_PACK_RELOCS").as_deref() {
        Ok("0") => false,
        Ok("1") => true,
        _ => native_glibc_at_least(2, 36),
    };
    if wanted {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    startup_layout();
}

/// Links the daemon with `link/startup.ld` on Linux, unless `PROPLET_STARTUP_LAYOUT=0`.
fn startup_layout() {
    println!("cargo:rerun-if-env-changed=PROPLET_STARTUP_LAYOUT");
    println!("cargo:rerun-if-changed=link/startup.ld");
    let off = std::env::var("PROPLET_STARTUP_LAYOUT").as_deref() == Ok("0");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    if off || !linux {
        return;
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    println!("cargo:rustc-link-arg-bin=proplet=-Wl,-T,{dir}/link/startup.ld");
}

/// Whether this is a native build for linux-gnu on a glibc of at least `major.minor`.
fn native_glibc_at_least(major: u32, minor: u32) -> bool {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let native_linux_gnu = var("HOST") == var("TARGET")
        && var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu";
    if !native_linux_gnu {
        return false;
    }
    // `getconf GNU_LIBC_VERSION` prints e.g. "glibc 2.36".
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.trim().strip_prefix("glibc ") else {
        return false;
    };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}
