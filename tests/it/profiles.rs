//! Every shipped hardware profile (`hardware-profiles/*.toml`) loads, names itself after its file, says
//! where its numbers come from, and describes the device it claims to (int8-only NPU, 2:4-sparse GPU,
//! bit-serial accelerator, ...).

use std::path::{Path, PathBuf};

use mpsearch::cost::profile::DeviceClass;
use mpsearch::cost::{HardwareProfile, Precision};

fn profile_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("hardware-profiles")
}

/// (file stem, loaded profile) for every `*.toml` in the folder, sorted by stem.
fn shipped() -> Vec<(String, HardwareProfile)> {
    let dir = profile_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            let profile = HardwareProfile::load(&path)
                .unwrap_or_else(|e| panic!("{}: does not load: {e}", path.display()));
            (stem, profile)
        })
        .collect()
}

fn by_name<'a>(all: &'a [(String, HardwareProfile)], name: &str) -> &'a HardwareProfile {
    &all.iter()
        .find(|(stem, _)| stem == name)
        .unwrap_or_else(|| panic!("hardware-profiles/{name}.toml is not shipped"))
        .1
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

#[test]
fn at_least_six_profiles_are_shipped() {
    let all = shipped();
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        all.len() >= 6,
        "only {} shipped profiles: {names:?}",
        all.len()
    );
}

#[test]
fn every_profile_is_named_after_its_file_and_has_provenance() {
    for (stem, p) in shipped() {
        let file = format!("hardware-profiles/{stem}.toml");
        assert_eq!(
            p.name(),
            stem,
            "{file}: [profile] name differs from the file name"
        );
        assert!(
            !p.file.profile.description.trim().is_empty(),
            "{file}: empty description"
        );
        let prov = &p.file.provenance;
        assert!(
            !prov.sources.is_empty(),
            "{file}: [provenance] sources is empty"
        );
        assert!(
            prov.sources.iter().all(|s| !s.trim().is_empty()),
            "{file}: [provenance] has an empty source"
        );
        assert!(
            is_date(&prov.date),
            "{file}: [provenance] date `{}` is not YYYY-MM-DD",
            prov.date
        );
        assert!(
            !prov.method.trim().is_empty(),
            "{file}: [provenance] method is empty"
        );
    }
}

#[test]
fn every_profile_is_physically_plausible() {
    for (stem, p) in shipped() {
        let file = format!("hardware-profiles/{stem}.toml");
        let f32 = p.gmacs[&Precision::F32];
        for (prec, g) in &p.gmacs {
            assert!(g.is_finite() && *g > 0.0, "{file}: {prec} = {g} GMAC/s");
            // On every shipped device a narrower kernel is at least as fast as f32 (for accelerators, f32 is
            // the host fallback, which is the slowest path of all).
            assert!(
                *g >= f32,
                "{file}: {prec} ({g} GMAC/s) is slower than f32 ({f32} GMAC/s)"
            );
        }
        assert!(
            p.bandwidth_gbs > 0.0,
            "{file}: bandwidth_gbs = {}",
            p.bandwidth_gbs
        );
        assert!(
            p.per_layer_us >= 0.0,
            "{file}: per_layer_us = {}",
            p.per_layer_us
        );
        assert!(
            (0.0..=1.0).contains(&p.unstructured_efficiency),
            "{file}: unstructured_efficiency = {}",
            p.unstructured_efficiency
        );
        if p.bit_serial_gbops.is_some() {
            assert_eq!(
                p.file.profile.device,
                DeviceClass::Accelerator,
                "{file}: has bit_serial_gbops but is not device = \"accelerator\""
            );
        }
    }
}

#[test]
fn the_int8_only_npu_runs_int4_as_int8_and_float_on_the_host() {
    let all = shipped();
    let npus: Vec<&(String, HardwareProfile)> = all
        .iter()
        .filter(|(_, p)| p.file.profile.device == DeviceClass::Npu)
        .collect();
    assert!(!npus.is_empty(), "no shipped profile has device = \"npu\"");
    for (stem, p) in npus {
        let file = format!("hardware-profiles/{stem}.toml");
        assert_eq!(
            p.runs_as(Precision::Int(4)),
            Precision::Int(8),
            "{file}: int4 should run as int8"
        );
        assert_eq!(
            p.runs_as(Precision::Int(2)),
            Precision::Int(8),
            "{file}: int2 should run as int8"
        );
        assert!(
            !p.gmacs.contains_key(&Precision::Int(4)),
            "{file}: an int8-only NPU has no int4 kernel"
        );
    }
    let tpu = by_name(&all, "edgetpu");
    assert_eq!(
        tpu.runs_as(Precision::F16),
        Precision::F32,
        "edgetpu.toml: f16 should run on the host as f32"
    );
    assert!(
        tpu.gmacs[&Precision::Int(8)] > 10.0 * tpu.gmacs[&Precision::F32],
        "edgetpu.toml: the Edge TPU's int8 should be far faster than the host's f32"
    );
}

#[test]
fn the_edge_gpu_accelerates_2_4_sparsity_and_runs_weight_only_in_f16() {
    let all = shipped();
    let gpu = by_name(&all, "jetson-orin-nano");
    assert!(
        gpu.accelerates_nm(2, 4),
        "jetson-orin-nano.toml: 2:4 sparsity should be accelerated"
    );
    assert!(
        !gpu.accelerates_nm(1, 4),
        "jetson-orin-nano.toml: only 2:4 is accelerated"
    );
    for (bits, kernel) in [(8, 8), (6, 8), (4, 4), (3, 4), (2, 4)] {
        assert_eq!(
            gpu.weight_only_kernel(bits),
            Some((kernel, Precision::F16)),
            "jetson-orin-nano.toml: int{bits} weight-only should run W{kernel}A16"
        );
    }
    for p in [Precision::Int(8), Precision::F16, Precision::Bf16] {
        assert!(
            gpu.accelerates_nm_at(2, 4, p),
            "jetson-orin-nano.toml: the {p} tensor-core kernels compute 2:4 sparsely"
        );
    }
    assert!(
        !gpu.accelerates_nm_at(2, 4, Precision::F32),
        "jetson-orin-nano.toml: the f32 CUDA-core path has no sparse acceleration"
    );
    assert_eq!(
        gpu.runs_as(Precision::Int(4)),
        Precision::Int(8),
        "jetson-orin-nano.toml: int4 as int8"
    );
}

#[test]
fn the_bit_serial_accelerators_have_bit_serial_throughput() {
    let all = shipped();
    let bismo: Vec<&(String, HardwareProfile)> = all
        .iter()
        .filter(|(stem, _)| stem.starts_with("bismo"))
        .collect();
    assert!(!bismo.is_empty(), "no bismo-*.toml profile is shipped");
    by_name(&all, "bismo-edge");
    for (stem, p) in bismo {
        let file = format!("hardware-profiles/{stem}.toml");
        let gbops = p
            .bit_serial_gbops
            .unwrap_or_else(|| panic!("{file}: no bit_serial_gbops"));
        // An 8-bit x 8-bit layer on the overlay must still beat the host's f32 fallback, or the profile
        // would describe a pointless accelerator.
        assert!(
            gbops / 64.0 > p.gmacs[&Precision::F32],
            "{file}: w8a8 on the overlay ({} GMAC/s) is slower than the host f32",
            gbops / 64.0
        );
        assert_eq!(
            p.weight_only, None,
            "{file}: BISMO has no weight-only kernel; weight-only layers are dequantized on the host"
        );
    }
}

#[test]
fn the_cpu_profiles_compute_f16_only_where_the_core_has_fp16_arithmetic() {
    let all = shipped();
    let a76 = by_name(&all, "cortex-a76");
    assert_eq!(
        a76.runs_as(Precision::F16),
        Precision::F16,
        "cortex-a76.toml: FEAT_FP16 computes f16"
    );
    assert_eq!(
        a76.runs_as(Precision::Int(4)),
        Precision::Int(8),
        "cortex-a76.toml: int4 unpacks to SDOT int8"
    );
    for name in ["cortex-a72", "x86-avx2"] {
        let p = by_name(&all, name);
        assert_eq!(
            p.runs_as(Precision::F16),
            Precision::F32,
            "{name}.toml: no fp16 arithmetic, f16 runs as f32"
        );
        assert_eq!(
            p.runs_as(Precision::Int(4)),
            Precision::Int(8),
            "{name}.toml: int4 should run as int8"
        );
    }
    for name in ["cortex-a76", "cortex-a72", "x86-avx2"] {
        let p = by_name(&all, name);
        for (bits, kernel) in [(8, 8), (4, 4), (2, 4), (5, 8)] {
            assert_eq!(
                p.weight_only_kernel(bits),
                Some((kernel, Precision::F32)),
                "{name}.toml: XNNPACK's f32-qc8w/qc4w GEMMs run int{bits} weights with f32 activations"
            );
        }
        assert!(
            p.nm.is_empty(),
            "{name}.toml: this CPU has no N:M sparse instructions"
        );
    }
}

#[test]
fn every_profile_declares_its_kernels_in_the_current_form() {
    for (stem, p) in shipped() {
        let file = format!("hardware-profiles/{stem}.toml");
        assert!(
            !p.file.compute.contains_key("weight_only"),
            "{file}: the weight-only kernels go in a [weight_only] table (precision, bits)"
        );
        assert!(
            p.file.sparsity.nm_precisions.is_some(),
            "{file}: [sparsity] nm_precisions must say which kernels compute N:M (empty for none)"
        );
        if let Some(w) = &p.weight_only {
            assert!(
                matches!(
                    w.precision,
                    Precision::F32 | Precision::F16 | Precision::Bf16
                ),
                "{file}: weight-only kernels multiply float activations"
            );
        }
    }
}

/// Every shipped profile says what it does with each GGML block format, with a source: the CPUs
/// (llama.cpp's AVX2 / NEON dot products) and the edge GPU (llama.cpp's CUDA MMQ) run them at their
/// own int8 rate, derived like the rest of the file; the Edge TPU and the bit-serial overlays have no
/// such kernel and charge a dequantized f32 copy on their host.
#[test]
fn every_profile_states_what_it_does_with_the_ggml_formats() {
    use mpsearch::space::GgmlFormat;
    for (stem, p) in shipped() {
        let file = format!("hardware-profiles/{stem}.toml");
        assert_eq!(p.file.ggml.len(), GgmlFormat::ALL.len(), "{file}");
        let runs = matches!(
            stem.as_str(),
            "cortex-a72" | "cortex-a76" | "x86-avx2" | "jetson-orin-nano"
        );
        for g in GgmlFormat::ALL {
            match p.ggml_kernel(g) {
                Ok(rate) => {
                    assert!(runs, "{file}: {g} has a kernel");
                    assert_eq!(Some(&rate), p.gmacs.get(&Precision::Int(8)), "{file}: {g}");
                }
                Err(fallback) => {
                    assert!(!runs, "{file}: {g} falls back to {fallback}");
                    assert_eq!(fallback, Precision::F32, "{file}: {g}");
                }
            }
        }
        let sources = p.file.provenance.sources.join("\n") + &p.file.provenance.method;
        if runs {
            assert!(sources.contains("llama.cpp"), "{file}: no llama.cpp source");
        } else {
            assert!(
                sources.contains("GGML block formats"),
                "{file}: no reason given"
            );
        }
    }
}
