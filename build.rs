//! Embeds the shipped search spaces and hardware profiles, so that a bare name such as
//! `--profile cortex-a76` works wherever the binary runs.

use std::fmt::Write;
use std::path::Path;

fn main() {
    let root = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let mut out = String::new();
    for (konst, dir) in [
        ("SPACES", "search-spaces"),
        ("PROFILES", "hardware-profiles"),
    ] {
        let path = Path::new(&root).join(dir);
        println!("cargo:rerun-if-changed={}", path.display());
        let mut files: Vec<_> = std::fs::read_dir(&path)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|p: &std::path::PathBuf| p.extension().is_some_and(|e| e == "toml"));
        files.sort();
        writeln!(out, "pub const {konst}: &[(&str, &str)] = &[").unwrap();
        for f in files {
            let name = f.file_stem().unwrap().to_string_lossy();
            writeln!(
                out,
                "    ({name:?}, include_str!({:?})),",
                f.display().to_string()
            )
            .unwrap();
        }
        writeln!(out, "];").unwrap();
    }
    let dest = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("shipped.rs");
    std::fs::write(dest, out).expect("write shipped.rs");
}
