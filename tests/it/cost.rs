//! The cost model: roofline against hand computation, measured overrides, additivity, exact
//! feasibility against brute force, and every shipped profile on the baselines.

use mpsearch::cost::{CostModel, CostTable, HardwareProfile, KernelPath, Objective, Precision};
use mpsearch::model::{inventory, ModelSource};
use mpsearch::space::{file, Choice, GgmlFormat, LayerInfo, LayerKind, SearchSpace, WeightQuant};
use rand::{Rng, SeedableRng};

use crate::util::{choice, close, toy_layers, Dir};

/// Relative tolerance for sums taken in different orders.
const SUM_TOL: f64 = 1e-9;

const SIMPLE: &str = r#"
[profile]
name = "simple"
description = "round numbers"
device = "cpu"
[provenance]
sources = ["test"]
date = "2026-11-25"
method = "made up"
[compute]
f32 = 1.0
int8 = 4.0
[memory]
bandwidth_gbs = 1.0
[overhead]
per_layer_us = 0.0
"#;

fn simple(extra: &str) -> CostModel {
    let p = HardwareProfile::from_toml(&format!("{SIMPLE}{extra}"), "simple.toml").unwrap();
    CostModel::new(p, 1).unwrap()
}

fn linear(name: &str, rows: usize, cols: usize) -> LayerInfo {
    LayerInfo {
        name: name.into(),
        kind: LayerKind::Linear,
        shape: vec![rows, cols],
        macs: (rows * cols) as u64,
        bias: false,
    }
}

#[test]
fn roofline_matches_hand_computation() {
    let m = simple("");
    let l = linear("l", 1000, 1000);
    // f32: compute 1e6 MAC / (1 GMAC/s) = 1000 µs; memory (4e6 weight + 2000 × 4 activation bytes)
    // / 1 GB/s = 4008 µs: memory-bound.
    let f = m.layer(&l, &Choice::F32);
    assert_eq!(f.cost.latency_us, 4008.0);
    assert_eq!(f.cost.bytes, 4_000_000);
    assert_eq!(f.cost.bops, 1e6 * 32.0 * 32.0);
    // int8 with int8 activations: compute 250 µs; memory 1e6 + 4000 scale bytes + 2000 activation
    // bytes = 1006 µs.
    let q = m.layer(&l, &choice("int8-sym-channel+act8-static"));
    assert_eq!(q.cost.latency_us, 1006.0);
    assert_eq!(q.cost.bytes, 1_004_000);
    // int4 has no kernel here: it runs as int8 and is read as int8.
    let q4 = m.layer(&l, &choice("int4-sym-channel+act8-static"));
    assert_eq!(q4.runs_as.to_string(), "int8");
    assert_eq!(q4.cost.latency_us, q.cost.latency_us);
    assert!(q4.cost.bytes < q.cost.bytes, "storage is still 4-bit");
    // Unstructured sparsity saves nothing here (efficiency 0) but shrinks storage.
    let s = m.layer(&l, &choice("f32+sparse90"));
    assert_eq!(s.cost.latency_us, f.cost.latency_us);
    assert!(s.cost.bytes < f.cost.bytes / 5);
    // Removing half the output channels halves the weights read and the outputs written.
    let ch = m.layer(&l, &choice("f32+channels50"));
    assert_eq!(ch.cost.latency_us, (2_000_000.0 + 1500.0 * 4.0) / 1e3);
    // Rank 10%: k = 100, two kernels (1000×100 and 100×1000).
    let r = m.layer(&l, &choice("f32+rank10"));
    assert_eq!(r.cost.bytes, 2 * 100 * 1000 * 4);
    assert_eq!(r.macs, 200_000.0);
}

#[test]
fn devices_that_accelerate_sparsity_and_bit_serial_compute() {
    let m = simple("[sparsity]\nnm = [\"2:4\"]\nunstructured_efficiency = 0.5\n");
    let l = linear("l", 1000, 1000);
    let dense = m.layer(&l, &choice("int8-sym-channel+act8-static"));
    let nm = m.layer(&l, &choice("int8-sym-channel+act8-static+2:4"));
    let s = m.layer(&l, &choice("int8-sym-channel+act8-static+sparse50"));
    assert!(nm.cost.latency_us < dense.cost.latency_us);
    assert!(s.cost.latency_us < dense.cost.latency_us);
    assert_eq!(nm.macs, 500_000.0);
    assert_eq!(s.macs, 750_000.0);
    // Bit-serial: an int layer of w-bit weights and 8-bit activations runs at gbops / (8 w).
    let b = CostModel::new(
        HardwareProfile::from_toml(
            &SIMPLE.replace("int8 = 4.0", "bit_serial_gbops = 64.0"),
            "b.toml",
        )
        .unwrap(),
        1,
    )
    .unwrap();
    let big = LayerInfo {
        macs: 1000 * 1000 * 1000,
        ..linear("conv", 1000, 1000)
    };
    let t = |s: &str| b.layer(&big, &choice(s)).cost.latency_us;
    let (t2, t4, t8) = (
        t("int2-sym-channel+act8-static"),
        t("int4-sym-channel+act8-static"),
        t("int8-sym-channel+act8-static"),
    );
    assert!(
        close(t4 / t2, 2.0, SUM_TOL) && close(t8 / t4, 2.0, SUM_TOL),
        "{t2} {t4} {t8}"
    );
}

#[test]
fn measured_entries_override_the_analytic_model() {
    let extra = r#"
[[measured]]
kind = "linear"
shape = [64, 512]
batch = 1
weights = "int8"
us = 7.5
[[measured]]
kind = "linear"
shape = [64, 32]
batch = 1
weights = "f32"
us = 1.25
"#;
    let plain = simple("");
    let m = simple(extra);
    let l = linear("fc1", 64, 512);
    // Any int8 scheme and granularity of this shape with float activations at batch 1.
    assert_eq!(
        m.layer(&l, &choice("int8-sym-channel")).cost.latency_us,
        7.5
    );
    assert!(m.layer(&l, &choice("int8-asym-g32")).measured);
    // Not matching: other precision, other activations, other batch, other shape.
    for ch in ["int4-sym-channel", "int8-sym-channel+act8-static", "f32"] {
        assert_eq!(
            m.layer(&l, &choice(ch)).cost,
            plain.layer(&l, &choice(ch)).cost,
            "{ch}"
        );
    }
    let b2 = CostModel::new(m.profile.clone(), 2).unwrap();
    assert!(!b2.layer(&l, &choice("int8-sym-channel")).measured);
    assert!(
        !m.layer(&linear("x", 64, 256), &choice("int8-sym-channel"))
            .measured
    );
    // A factorized layer looks up each factor: rank 50% of 64×512 is k = 32: 64×32 is measured, 32×512
    // is not.
    let r = m.layer(&l, &choice("f32+rank50"));
    let analytic = plain.layer(&l, &choice("f32+rank50")).cost.latency_us;
    let first_factor = plain
        .layer(&linear("a", 64, 32), &Choice::F32)
        .cost
        .latency_us;
    assert!(close(
        r.cost.latency_us,
        analytic - first_factor + 1.25,
        SUM_TOL
    ));
    assert!(!r.measured, "one factor was analytic");
}

/// Small space for brute force: 9 layers, 5 groups, 3–8 choices each.
fn small_space() -> SearchSpace {
    file::parse(
        "[space]\nname = \"small\"\nexclude = ['^head$']\n[defaults]\nfloat = [\"f32\", \"f16\"]\nbits = [8, 4]\n\
         nm = [\"2:4\"]\n[[group]]\nmatch = '^block\\.(\\d+)\\.[qkv]$'\n\
         [[layer]]\nmatch = 'block\\.1\\.ffn'\nfloat = []\nnm = []\nrank = [1.0, 0.25]\n",
        "small.toml",
        &toy_layers(),
    )
    .unwrap()
}

fn all_points(space: &SearchSpace) -> Vec<Vec<u16>> {
    let mut points = vec![vec![]];
    for g in &space.groups {
        points = points
            .into_iter()
            .flat_map(|p| {
                (0..g.choices.len() as u16).map(move |i| {
                    let mut q = p.clone();
                    q.push(i);
                    q
                })
            })
            .collect();
    }
    points
}

#[test]
fn feasibility_range_equals_brute_force() {
    let space = small_space();
    let points = all_points(&space);
    assert!(points.len() > 1000, "{} points", points.len());
    for name in ["cortex-a76", "jetson-orin-nano", "edgetpu", "bismo-edge"] {
        let m = CostModel::new(mpsearch::shipped::profile(name).unwrap(), 1).unwrap();
        let table = CostTable::new(&m, &space);
        let layers: Vec<LayerInfo> = space.layers.iter().map(|l| l.info.clone()).collect();
        for o in Objective::ALL {
            let f = table.feasibility(o);
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for p in &points {
                let (_, total) = m.assignment(&layers, &space.assignment(p));
                lo = lo.min(o.of(&total));
                hi = hi.max(o.of(&total));
            }
            assert!(
                close(f.min, lo, SUM_TOL) && close(f.max, hi, SUM_TOL),
                "{name} {o}: table {}..{} brute {lo}..{hi}",
                f.min,
                f.max
            );
            assert!(close(o.of(&table.cost(&f.cheapest)), lo, SUM_TOL));
            // A budget below the cheapest total is refused with the reachable range.
            let e = f
                .check_max(lo * 0.99, "small", name)
                .unwrap_err()
                .to_string();
            assert!(e.contains("impossible") && e.contains("reachable"), "{e}");
            assert!(f.check_max(lo * 1.0001, "small", name).is_ok());
        }
    }
}

#[test]
fn totals_are_sums_of_per_layer_figures() {
    let dir = Dir::new();
    let minilm = crate::util::minilm_folder(&dir);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for (model, space_name) in [
        (ModelSource::Demo, "demo"),
        (ModelSource::Folder(minilm), "bert-base"),
    ] {
        let inv = inventory(&model).unwrap();
        let space = mpsearch::shipped::space(space_name, &inv.layers).unwrap();
        for (name, _) in mpsearch::shipped::Kind::Profile.embedded() {
            let m = CostModel::new(mpsearch::shipped::profile(name).unwrap(), 8).unwrap();
            let table = CostTable::new(&m, &space);
            for _ in 0..20 {
                let p: Vec<u16> = space
                    .groups
                    .iter()
                    .map(|g| rng.random_range(0..g.choices.len()) as u16)
                    .collect();
                let a = space.assignment(&p);
                let (per, total) = m.assignment(&inv.layers, &a);
                let lat: f64 = per.iter().map(|c| c.cost.latency_us).sum();
                let bytes: u64 = per.iter().map(|c| c.cost.bytes).sum();
                let bops: f64 = per.iter().map(|c| c.cost.bops).sum();
                assert_eq!(total.latency_us, lat);
                assert_eq!(total.bytes, bytes);
                assert_eq!(total.bops, bops);
                let t = table.cost(&p);
                assert!(
                    close(t.latency_us, lat, SUM_TOL)
                        && t.bytes == bytes
                        && close(t.bops, bops, SUM_TOL),
                    "{name} {space_name}"
                );
            }
        }
    }
}

#[test]
fn every_shipped_profile_costs_the_baselines() {
    let inv = inventory(&ModelSource::Demo).unwrap();
    let space = mpsearch::shipped::space("demo", &inv.layers).unwrap();
    for (name, _) in mpsearch::shipped::Kind::Profile.embedded() {
        let m = CostModel::new(mpsearch::shipped::profile(name).unwrap(), 1).unwrap();
        let cost = |s: &str| m.assignment(&inv.layers, &space.baseline(&choice(s))).1;
        let (f, i8, i4) = (cost("f32"), cost("int8-sym-channel"), cost("int4-asym-g32"));
        for (what, x) in [("f32", f), ("int8", i8), ("int4", i4)] {
            assert!(
                x.latency_us.is_finite() && x.latency_us > 0.0,
                "{name} {what}: {x:?}"
            );
            assert!(x.bops > 0.0 && x.bytes > 0, "{name} {what}: {x:?}");
        }
        assert!(
            i4.bytes < i8.bytes && i8.bytes < f.bytes,
            "{name}: sizes {} {} {}",
            i4.bytes,
            i8.bytes,
            f.bytes
        );
        assert!(i8.bops < f.bops, "{name}");
    }
}

fn conv(name: &str, out: usize, inp: usize, k: usize, pixels: u64) -> LayerInfo {
    LayerInfo {
        name: name.into(),
        kind: LayerKind::Conv2d,
        shape: vec![out, inp, k, k],
        macs: (out * inp * k * k) as u64 * pixels,
        bias: false,
    }
}

/// A weight-only choice (int weights, float activations) is charged for that arithmetic: the
/// profile's weight-only kernel if it has one for the width (int weights read as stored, float rate),
/// else a dequantized f32 copy read by the f32 kernel — never the int8 rate.
#[test]
fn weight_only_choices_are_charged_float_arithmetic() {
    let l = linear("l", 1000, 1000);
    // No weight-only kernel: exactly the f32 layer (dequantized copy), though stored in 8 bits.
    let plain = simple("");
    let f = plain.layer(&l, &Choice::F32);
    let q = plain.layer(&l, &choice("int8-sym-channel"));
    assert_eq!(q.cost.latency_us, f.cost.latency_us, "{}", q.kernel);
    assert_eq!(q.kernel.to_string(), "dequantized → f32");
    assert_eq!(q.kernel.arithmetic(), "int8×f32");
    assert_eq!(q.cost.bytes, 1_004_000);
    // A weight-only f32 kernel for int8 and int4: compute 1000 µs at the f32 rate; memory 1e6 int8
    // values + 4000 scale bytes + 2000 × 4 activation bytes = 1012 µs.
    let wo = simple("[weight_only]\nprecision = \"f32\"\nbits = [4, 8]\n");
    let q = wo.layer(&l, &choice("int8-sym-channel"));
    assert_eq!(q.cost.latency_us, 1012.0, "{}", q.kernel);
    assert_eq!(q.kernel.to_string(), "weight-only f32 kernel");
    // int4 reads 5e5 + 4000 + 8000 bytes: compute-bound at 1000 µs; int3 is unpacked to int4.
    assert_eq!(
        wo.layer(&l, &choice("int4-sym-channel")).cost.latency_us,
        1000.0
    );
    let i3 = wo.layer(&l, &choice("int3-sym-channel"));
    assert_eq!(
        i3.kernel.to_string(),
        "weight-only f32 kernel (int3 unpacked to int4)"
    );
    // The int8 kernel is what `+act8-*` buys: 250 µs of compute, 1006 µs of memory.
    let a8 = wo.layer(&l, &choice("int8-sym-channel+act8-dynamic"));
    assert_eq!(a8.cost.latency_us, 1006.0);
    assert_eq!(a8.kernel.arithmetic(), "int8×int8");
    // Batch 8: compute-bound, so the two differ by the kernel rates (f32 1, int8 4 GMAC/s).
    let b8 = CostModel::new(wo.profile.clone(), 8).unwrap();
    let ratio = b8.layer(&l, &choice("int8-sym-channel")).cost.latency_us
        / b8.layer(&l, &choice("int8-sym-channel+act8-dynamic"))
            .cost
            .latency_us;
    assert!(close(ratio, 4.0, SUM_TOL), "{ratio}");
}

/// f32 weights with int8 activations: no integer kernel takes float weights, so the f32 kernel runs
/// after a quantize–dequantize pass over the input (read and written once more at 4 bytes).
#[test]
fn act8_on_float_weights_runs_the_float_kernel_with_a_qdq_pass() {
    let m = simple("");
    let l = linear("l", 1000, 1000);
    let f = m.layer(&l, &Choice::F32);
    let q = m.layer(&l, &choice("f32+act8-static"));
    assert_eq!(q.cost.latency_us, f.cost.latency_us + 8.0);
    assert_eq!(q.kernel.arithmetic(), "f32×int8");
    assert_eq!(
        q.kernel.to_string(),
        "f32 kernel + act8 quantize–dequantize"
    );
}

/// A profile says at which precisions its N:M kernels run; elsewhere N:M saves bytes only.
#[test]
fn nm_is_credited_only_at_the_declared_precisions() {
    let m = simple("[sparsity]\nnm = [\"2:4\"]\nnm_precisions = [\"int8\"]\n");
    let l = linear("l", 1000, 1000);
    let f = m.layer(&l, &Choice::F32);
    let f24 = m.layer(&l, &choice("f32+2:4"));
    assert_eq!(f24.cost.latency_us, f.cost.latency_us);
    assert_eq!(f24.macs, f.macs);
    assert!(f24.cost.bytes < f.cost.bytes);
    assert_eq!(
        f24.kernel.to_string(),
        "f32 kernel + 2:4 dense (no N:M on f32)"
    );
    let q = m.layer(&l, &choice("int8-sym-channel+act8-static"));
    let q24 = m.layer(&l, &choice("int8-sym-channel+act8-static+2:4"));
    assert_eq!(q24.macs, q.macs / 2.0);
    assert!(q24.cost.latency_us < q.cost.latency_us);
    // Left out, nm_precisions means every precision (the meaning older profiles had).
    let all = simple("[sparsity]\nnm = [\"2:4\"]\n");
    assert_eq!(all.layer(&l, &choice("f32+2:4")).macs, f.macs / 2.0);
    // An unknown precision, or one the device does not compute in, is refused at load.
    for bad in ["\"int9\"", "\"f16\""] {
        let e = HardwareProfile::from_toml(
            &format!("{SIMPLE}[sparsity]\nnm = [\"2:4\"]\nnm_precisions = [{bad}]\n"),
            "p.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("p.toml:") && e.contains("nm_precisions"), "{e}");
    }
}

/// N:M groups run along the input channels at a fixed kernel position; a ragged tail of `in mod M`
/// channels is stored and computed dense.
#[test]
fn nm_groups_run_along_input_channels_with_a_dense_ragged_tail() {
    let m = simple("[sparsity]\nnm = [\"2:4\"]\n");
    // 6 input channels × 3×3: per output and position, one group of 4 keeps 2, the tail of 2 stays.
    let c = conv("c", 8, 6, 3, 16);
    let dense = m.layer(&c, &Choice::F32);
    let s = m.layer(&c, &choice("f32+2:4"));
    assert_eq!(s.macs, dense.macs * 4.0 / 6.0);
    // 8 rows × 9 positions × (2 × (32 + 2) + 2 × 32) bits.
    assert_eq!(s.cost.bytes, 8 * 9 * (2 * 34 + 2 * 32) / 8);
    assert_eq!(
        s.kernel.to_string(),
        "f32 kernel + 2:4 sparse (ragged tail dense)"
    );
    // A whole number of groups: half the work, no ragged tail.
    let even = m.layer(&conv("e", 8, 8, 3, 16), &choice("f32+2:4"));
    assert_eq!(even.kernel.to_string(), "f32 kernel + 2:4 sparse");
    // A linear layer of 10 inputs: 2 groups keep 4, the tail of 2 stays: 6 of 10.
    let l = linear("l", 4, 10);
    let s = m.layer(&l, &choice("f32+2:4"));
    assert_eq!(s.macs, 24.0);
    assert_eq!(s.cost.bytes, (4 * (4 * 34 + 2 * 32) / 8) as u64);
    // A factorized convolution: B (k × in·kh·kw) groups its `in` channels, A (rows × k) its k.
    let r = m.layer(&conv("r", 8, 6, 3, 1), &choice("f32+2:4+rank50"));
    let k = 4.0; // ⌈50% · min(8, 54)⌉
    assert_eq!(r.macs, 8.0 * k / 2.0 + k * 9.0 * 4.0);
}

/// Activation quantization applies to the layer's input: the second factor of a factorized layer
/// multiplies the float intermediate, so it runs the weight-only (or dequantized) kernel.
#[test]
fn the_second_factor_of_a_factorized_layer_multiplies_float_activations() {
    let m = simple("[weight_only]\nprecision = \"f32\"\nbits = [8]\n");
    let l = linear("l", 1000, 1000);
    let r = m.layer(&l, &choice("int8-sym-channel+act8-static+rank10"));
    assert_eq!(r.kernel.arithmetic(), "int8×int8");
    let then = r.then.expect("two kernels");
    assert_eq!(then.arithmetic(), "int8×f32");
    assert_eq!(then.to_string(), "weight-only f32 kernel");
    // B (100 × 1000): int8 kernel, compute 25 µs, memory 1e5 + 400 + 1100 activation bytes;
    // A (1000 × 100): weight-only at f32, compute 100 µs, memory 1e5 + 4000 + 1100 × 4.
    let b: f64 = (100_000.0 + 400.0 + 1100.0) / 1e3;
    let a: f64 = (100_000.0 + 4000.0 + 4400.0) / 1e3;
    assert!(
        close(r.cost.latency_us, b.max(25.0) + a.max(100.0), SUM_TOL),
        "{}",
        r.cost.latency_us
    );
    // BOPs: B at 8×8 bits, A at 8×32.
    assert_eq!(r.cost.bops, 100_000.0 * 64.0 + 100_000.0 * 256.0);
}

/// The weight-only kernels of a profile: the new table, the older `[compute] weight_only` key, both
/// (refused), and kernels that could not take float activations (refused).
#[test]
fn weight_only_kernels_load_in_both_forms() {
    let legacy = simple("").profile.clone();
    assert_eq!(legacy.weight_only, None);
    let old = HardwareProfile::from_toml(
        &SIMPLE.replace("int8 = 4.0", "int8 = 4.0\nf16 = 2.0\nweight_only = \"f16\""),
        "old.toml",
    )
    .unwrap();
    for b in 2..=8 {
        assert_eq!(old.weight_only_kernel(b), Some((b, Precision::F16)));
    }
    let new = simple("[weight_only]\nprecision = \"f32\"\nbits = [8, 4]\n").profile;
    assert_eq!(new.weight_only_kernel(2), Some((4, Precision::F32)));
    assert_eq!(new.weight_only_kernel(5), Some((8, Precision::F32)));
    let refused = |text: String, needle: &str| {
        let e = HardwareProfile::from_toml(&text, "w.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("w.toml:") && e.contains(needle), "{needle}: {e}");
    };
    refused(
        SIMPLE.replace("int8 = 4.0", "int8 = 4.0\nweight_only = \"f32\"")
            + "[weight_only]\nprecision = \"f32\"\nbits = [8]\n",
        "both",
    );
    refused(
        format!("{SIMPLE}[weight_only]\nprecision = \"int8\"\nbits = [8]\n"),
        "float activations",
    );
    refused(
        format!("{SIMPLE}[weight_only]\nprecision = \"f16\"\nbits = [8]\n"),
        "no f16 throughput",
    );
    refused(
        format!("{SIMPLE}[weight_only]\nprecision = \"f32\"\nbits = [9]\n"),
        "2..=8",
    );
}

/// A dequantized copy is the f32 kernel: where the profile measured f32 on the shape, a weight-only
/// choice without a weight-only kernel takes that measurement.
#[test]
fn a_dequantized_copy_takes_the_measured_f32_entry() {
    let m = simple(
        "[[measured]]\nkind = \"linear\"\nshape = [64, 512]\nbatch = 1\nweights = \"f32\"\nus = 9.5\n",
    );
    let l = linear("fc1", 64, 512);
    let q = m.layer(&l, &choice("int4-asym-g32"));
    assert!(q.measured, "{}", q.kernel);
    assert_eq!(q.cost.latency_us, 9.5);
    // With act8, f32 weights run the measured f32 kernel plus the quantize–dequantize pass.
    let f = m.layer(&l, &choice("f32+act8-dynamic"));
    assert!(close(
        f.cost.latency_us,
        9.5 + 512.0 * 2.0 * 4.0 / 1e3,
        SUM_TOL
    ));
    // The int8 kernel is another arithmetic: analytic.
    assert!(!m.layer(&l, &choice("int4-asym-g32+act8-dynamic")).measured);
}

/// `cost --assignment` shows the arithmetic charged and the kernel or fallback, per layer, in the
/// table and in JSON.
#[test]
fn cost_of_an_assignment_shows_the_arithmetic_charged() {
    let d = Dir::new();
    d.write(
        "a.json",
        r#"{"default": "int8-sym-channel", "layers": {"conv1": "int8-sym-channel+act8-dynamic", "fc1": "f32+2:4", "fc2": "f16"}}"#,
    );
    let out = crate::util::ok(
        d.path(),
        &[
            "cost",
            "--profile",
            "jetson-orin-nano",
            "--assignment",
            "a.json",
        ],
    );
    for needle in [
        "arithmetic",
        "kernel",
        "int8×int8",
        "int8 kernel",
        "int8×f16",
        "weight-only f16 kernel",
        "f32×f32",
        "2:4 dense (no N:M on f32)",
        "f16×f16",
    ] {
        assert!(out.contains(needle), "`{needle}` missing:\n{out}");
    }
    let json: serde_json::Value = serde_json::from_str(&crate::util::ok(
        d.path(),
        &[
            "cost",
            "--profile",
            "cortex-a76",
            "--assignment",
            "a.json",
            "--json",
        ],
    ))
    .unwrap();
    let layer = |name: &str| {
        json["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(layer("conv2")["arithmetic"], "int8×f32");
    assert_eq!(layer("conv2")["kernel"], "weight-only f32 kernel");
    assert_eq!(layer("conv2")["acts_charged"], "f32");
    assert_eq!(layer("conv1")["acts_charged"], "int8");
    assert_eq!(
        layer("fc1")["kernel"],
        "f32 kernel + 2:4 dense (no 2:4 on this device)"
    );
    assert_eq!(layer("fc2")["arithmetic"], "f16×f16");
    assert!(
        layer("fc2")["latency_us"].as_f64().unwrap() > 0.0,
        "existing fields stay"
    );
}

/// A GGML block format is stored as its blocks, `rows × (cols / block) × block_bytes`, so its bits per
/// weight are llama.cpp's; removed channels drop rows first, and a factorized layer stores both
/// factors in the format.
#[test]
fn ggml_formats_store_exactly_their_blocks() {
    let m = simple("");
    let l = linear("l", 1000, 1024);
    let values = 1000.0 * 1024.0;
    for g in GgmlFormat::ALL {
        let c = m.layer(&l, &Choice::weights(WeightQuant::Ggml(g)));
        let blocks = 1000 * (1024 / g.block() as u64);
        assert_eq!(c.cost.bytes, blocks * g.block_bytes() as u64, "{g}");
        assert_eq!(
            c.cost.bytes as f64 * 8.0 / values,
            g.bits_per_weight(),
            "{g}"
        );
    }
    // q4_k: 144 bytes per 256 weights.
    assert_eq!(m.layer(&l, &choice("q4_k")).cost.bytes, 1000 * 4 * 144);
    // channels25 keeps 750 rows, plus the 1-bit-per-row mask of 1000 rows.
    assert_eq!(
        m.layer(&l, &choice("q4_k+channels25")).cost.bytes,
        750 * 4 * 144 + 125
    );
    // rank50 of 512 × 1024: k = 256; A is 512 × 256 and B 256 × 1024, both q4_k.
    let r = m.layer(&linear("r", 512, 1024), &choice("q4_k+rank50"));
    assert_eq!(r.cost.bytes, 512 * 144 + 256 * 4 * 144);
    // Both factors multiply Q8_K blocks: the kernel quantizes the intermediate too.
    let then = r.then.unwrap();
    assert_eq!(r.kernel.arithmetic(), "q4_k×q8_k");
    assert_eq!(then.arithmetic(), "q4_k×q8_k");
    assert_eq!(r.cost.bops, (512.0 * 256.0 + 256.0 * 1024.0) * 4.0 * 8.0);
}

/// A q-format with a `[ggml]` rate runs its kernel on its blocks; without one (or with `{ fallback =
/// "f32" }`, the same) it is a dequantized f32 copy plus a quantize–dequantize pass of the input to its
/// activation blocks; with a fallback to a format that holds it exactly, that format's kernel on the
/// converted blocks.
#[test]
fn ggml_formats_are_charged_their_kernel_or_their_fallback() {
    let l = linear("l", 1000, 1024);
    let activations = (1024.0 + 1000.0) * 4.0;
    // q4_k at 8 GMAC/s: compute 1024000 / 8000 = 128 µs; memory (576000 block bytes + f32
    // activations) / 1 GB/s = 584.096 µs.
    let with = simple("[ggml]\nq4_k = 8.0\nq8_0 = 4\nq4_0 = { fallback = \"q8_0\" }\n");
    let k = with.layer(&l, &choice("q4_k"));
    assert_eq!(k.kernel.path, KernelPath::Ggml(GgmlFormat::Q4K));
    assert_eq!(k.kernel.to_string(), "q4_k kernel");
    assert_eq!(k.kernel.arithmetic(), "q4_k×q8_k");
    assert!(close(
        k.cost.latency_us,
        (576_000.0 + activations) / 1e3,
        SUM_TOL
    ));
    assert_eq!(k.cost.bops, 1_024_000.0 * 4.0 * 8.0);
    // Without a kernel: the f32 kernel on an f32 copy (4 bytes per weight), plus the quantize–
    // dequantize pass of the 1024 inputs (read and written once more at 4 bytes).
    let f32_latency = (4_096_000.0 + activations) / 1e3;
    let qdq = 1024.0 * 2.0 * 4.0 / 1e3;
    for (profile, c) in [
        (simple(""), "q4_k"),
        (with.clone(), "q5_0"),
        (simple("[ggml]\nq5_0 = { fallback = \"f32\" }\n"), "q5_0"),
    ] {
        let d = profile.layer(&l, &choice(c));
        assert_eq!(
            d.kernel.path,
            KernelPath::Dequantized(Precision::F32),
            "{c}"
        );
        assert_eq!(
            d.kernel.to_string(),
            format!(
                "dequantized → f32 + {} quantize–dequantize",
                choice(c).weights.ggml().unwrap().act_blocks()
            )
        );
        assert!(close(d.cost.latency_us, f32_latency + qdq, SUM_TOL), "{c}");
    }
    // q4_0 converted to q8_0 at load: the q8_0 kernel (4 GMAC/s: 256 µs) reads 34-byte blocks
    // (1088000 bytes: 1096.096 µs), stores 18-byte ones.
    let q = with.layer(&l, &choice("q4_0"));
    assert_eq!(q.kernel.path, KernelPath::Ggml(GgmlFormat::Q8_0));
    assert_eq!(q.kernel.to_string(), "q8_0 kernel (q4_0 converted at load)");
    assert_eq!(q.kernel.arithmetic(), "q4_0×q8_0");
    assert!(close(
        q.cost.latency_us,
        (1_088_000.0 + activations) / 1e3,
        SUM_TOL
    ));
    assert_eq!(q.cost.bytes, 1000 * 32 * 18);
    // An embedding's lookup reads one row of blocks per sample.
    let table = LayerInfo {
        name: "emb".into(),
        kind: LayerKind::Embedding,
        shape: vec![1000, 1024],
        macs: 0,
        bias: false,
    };
    let e = with.layer(&table, &choice("q4_k"));
    assert_eq!(e.kernel.to_string(), "row lookup");
    assert_eq!(e.kernel.arithmetic(), "q4_k×f32");
    assert!(close(
        e.cost.latency_us,
        (576.0 + 1024.0 * 4.0) / 1e3,
        SUM_TOL
    ));
}

/// The `[ggml]` table is checked like the rest of a profile, at file:line:column.
#[test]
fn ggml_tables_are_validated_where_they_are_wrong() {
    for (extra, line, says) in [
        ("[ggml]\nq4_k = \"fast\"\n", 18, "GMAC/s"),
        ("[ggml]\nq4_k = -2.0\n", 18, "positive number"),
        ("[ggml]\nq8_k = 3.0\n", 18, "not a GGML block format"),
        (
            "[ggml]\nq4_0 = { fallback = \"int8\" }\n",
            18,
            "integer kernel",
        ),
        (
            "[ggml]\nq8_0 = 2.0\nq4_k = { fallback = \"q8_0\" }\n",
            19,
            "exactly",
        ),
        (
            "[ggml]\nq4_0 = { fallback = \"q8_0\" }\n",
            18,
            "no kernel rate",
        ),
        ("[ggml]\nq4_0 = { fallback = \"f16\" }\n", 18, "no f16"),
        ("[ggml]\nq4_0 = { rate = 3.0 }\n", 18, "fallback"),
        ("[fallback]\nq4_k = \"f32\"\n", 18, "[ggml] table"),
        (
            "[fallback]\nbf16 = { copy = \"int8\" }\n",
            18,
            "float precision",
        ),
        (
            "[[measured]]\nkind = \"linear\"\nshape = [4, 256]\nbatch = 1\nweights = \"q4_k\"\n\
             act = \"act8-dynamic\"\nus = 1.0\n",
            0,
            "quantizes its activations itself",
        ),
        (
            "[[measured]]\nkind = \"conv2d\"\nshape = [4, 4, 3, 3]\nbatch = 1\nweights = \"f32\"\n\
             us = 1.0\nconv = \"tucker\"\n",
            0,
            "is not tucker<P> or cp<P>",
        ),
        (
            "[[measured]]\nkind = \"conv2d\"\nshape = [4, 4, 3, 3]\nbatch = 1\nweights = \"f32\"\n\
             us = 1.0\nconv = \"cp25\"\nrank = 50\n",
            0,
            "rank and conv both set",
        ),
    ] {
        let text = format!("{SIMPLE}{extra}");
        let e = HardwareProfile::from_toml(&text, "simple.toml")
            .unwrap_err()
            .to_string();
        let at = if line > 0 {
            format!("simple.toml:{line}:")
        } else {
            "simple.toml".into()
        };
        assert!(e.starts_with(&at) && e.contains(says), "{extra}: {e}");
    }
    let e = HardwareProfile::from_toml(&SIMPLE.replace("int8 = 4.0", "q4_k = 4.0"), "simple.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("[ggml] table"), "{e}");
    // Both forms of [fallback] load; the copy makes bf16 weights an f32 copy the f32 kernel reads.
    let m = simple("[fallback]\nbf16 = { copy = \"f32\" }\nint4 = \"int8\"\n");
    let l = linear("l", 1000, 1000);
    let b = m.layer(&l, &choice("bf16"));
    assert_eq!(b.kernel.to_string(), "f32 copy → f32 kernel");
    assert_eq!(b.cost.latency_us, m.layer(&l, &Choice::F32).cost.latency_us);
    assert_eq!(b.cost.bytes, 2_000_000, "stored as bf16");
    let widened = simple("").layer(&l, &choice("bf16"));
    assert_eq!(
        widened.kernel.to_string(),
        "f32 kernel (bf16 weights widened)"
    );
    assert!(widened.cost.latency_us < b.cost.latency_us);
}

/// `cost --assignment` shows a q-format layer's arithmetic (its weights times its activation blocks)
/// and what runs it: its kernel on a CPU profile, a dequantized f32 copy with the quantize–dequantize
/// pass on the Edge TPU.
#[test]
fn cost_of_an_assignment_shows_the_ggml_kernel_or_its_fallback() {
    let d = Dir::new();
    let m = crate::util::minilm_folder(&d);
    let m = m.to_str().unwrap();
    d.write(
        "a.json",
        r#"{"default": "f32", "layers": {"encoder.layer.0.output.dense": "q4_k", "encoder.layer.0.attention.self.query": "q4_0", "encoder.layer.1.intermediate.dense": "q5_1"}}"#,
    );
    let run = |profile: &str| -> serde_json::Value {
        serde_json::from_str(&crate::util::ok(
            d.path(),
            &[
                "cost",
                "--model",
                m,
                "--space",
                "ggml",
                "--profile",
                profile,
                "--assignment",
                "a.json",
                "--json",
            ],
        ))
        .unwrap()
    };
    let layer = |json: &serde_json::Value, name: &str| {
        json["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == name)
            .unwrap()
            .clone()
    };
    let cpu = run("x86-avx2");
    let tpu = run("edgetpu");
    for (name, arithmetic, kernel) in [
        ("encoder.layer.0.output.dense", "q4_k×q8_k", "q4_k kernel"),
        (
            "encoder.layer.0.attention.self.query",
            "q4_0×q8_0",
            "q4_0 kernel",
        ),
        (
            "encoder.layer.1.intermediate.dense",
            "q5_1×q8_1",
            "q5_1 kernel",
        ),
    ] {
        let c = layer(&cpu, name);
        assert_eq!(c["arithmetic"], arithmetic, "{name}");
        assert_eq!(c["kernel"], kernel, "{name}");
        let t = layer(&tpu, name);
        assert_eq!(t["arithmetic"], arithmetic, "{name}");
        let blocks = arithmetic.split('×').nth(1).unwrap();
        assert_eq!(
            t["kernel"],
            format!("dequantized → f32 + {blocks} quantize–dequantize"),
            "{name}"
        );
    }
    // 384 × 1536 in q4_k: 384 rows × 6 blocks × 144 bytes, plus the f32 bias.
    assert_eq!(
        layer(&cpu, "encoder.layer.0.output.dense")["bytes"],
        384 * 6 * 144 + 384 * 4
    );
    let table = crate::util::ok(
        d.path(),
        &[
            "cost",
            "--model",
            m,
            "--space",
            "ggml",
            "--profile",
            "edgetpu",
            "--assignment",
            "a.json",
        ],
    );
    assert!(
        table.contains("q4_k×q8_k") && table.contains("dequantized → f32 + q8_k"),
        "{table}"
    );
}

/// A profile's `[[model]]` terms: added once to every total of the model they name (tables, ranges,
/// joint checks, assignments), interpolated linearly in the batch, and checked at load.
#[test]
fn a_model_terms_work_is_added_once_to_every_total_of_its_model() {
    use mpsearch::cost::feasibility::{Limit, Within};
    use mpsearch::cost::profile::layers_key;
    let space = small_space();
    let layers: Vec<LayerInfo> = space.layers.iter().map(|l| l.info.clone()).collect();
    let key = layers_key(&layers);
    let term = |batch: u32, us: f64| {
        format!("[[model]]\nname = \"toy\"\nlayers = \"{key}\"\nbatch = {batch}\nus = {us}\n")
    };
    let text = format!("{SIMPLE}{}{}", term(4, 100.0), term(12, 300.0));
    let p = HardwareProfile::from_toml(&text, "terms.toml").unwrap();
    // At a measured batch its figure; between, on the line; beyond, along the nearest two, never < 0.
    for (batch, want) in [(4, 100.0), (12, 300.0), (8, 200.0), (16, 400.0), (1, 25.0)] {
        assert_eq!(p.non_matmul_us(&key, batch), Some(want), "batch {batch}");
    }
    assert_eq!(p.non_matmul_us("0123456789abcdef", 4), None);
    let one =
        HardwareProfile::from_toml(&format!("{SIMPLE}{}", term(4, 100.0)), "one.toml").unwrap();
    assert_eq!(one.non_matmul_us(&key, 64), Some(100.0));

    let bare = CostModel::new(p.clone(), 8).unwrap();
    let with = CostModel::new(p, 8).unwrap().for_model(&layers);
    assert_eq!(with.non_matmul_us(), 200.0);
    let (t0, t1) = (CostTable::new(&bare, &space), CostTable::new(&with, &space));
    for point in all_points(&space).iter().step_by(97) {
        let (per, total) = with.assignment(&layers, &space.assignment(point));
        let layers_sum: f64 = per.iter().map(|c| c.cost.latency_us).sum();
        assert!(close(total.latency_us, layers_sum + 200.0, SUM_TOL));
        assert!(close(t1.cost(point).latency_us, total.latency_us, SUM_TOL));
        assert!(close(
            t1.cost(point).latency_us,
            t0.cost(point).latency_us + 200.0,
            SUM_TOL
        ));
        assert_eq!(t1.cost(point).bytes, t0.cost(point).bytes);
    }
    let (f0, f1) = (
        t0.feasibility(Objective::Latency),
        t1.feasibility(Objective::Latency),
    );
    assert!(close(f1.min, f0.min + 200.0, SUM_TOL) && close(f1.max, f0.max + 200.0, SUM_TOL));
    // A latency limit between the bare and the full cheapest totals: met without the term, not with it.
    let limit = [Limit {
        objective: Objective::Latency,
        max: f0.min + 100.0,
    }];
    assert!(matches!(
        t0.cheapest_within(Objective::Size, &limit),
        Within::Cheapest { .. }
    ));
    assert_eq!(t1.cheapest_within(Objective::Size, &limit), Within::Nothing);

    // A spill: per layer on its kernel, interpolated in the batch as the term, and signed.
    let spill = |batch: u32, us: &str, p: &str| {
        format!("{}spill_us = {{ {p} = {us} }}\n", term(batch, 100.0))
    };
    let s = HardwareProfile::from_toml(
        &format!(
            "{SIMPLE}{}{}",
            spill(4, "10.0", "q8_0"),
            spill(12, "-6.0", "q8_0")
        ),
        "spill.toml",
    )
    .unwrap();
    let q8 = Precision::Ggml(GgmlFormat::Q8_0);
    assert_eq!(s.spill_us(&key, 8).get(&q8), Some(&2.0));
    assert_eq!(s.spill_us(&key, 16).get(&q8), Some(&-14.0));
    assert!(s.spill_us("0123456789abcdef", 8).is_empty());
    assert!(one.spill_us(&key, 8).is_empty(), "no spill measured");

    // Bad terms name the file, the entry and what to fix.
    for (bad, says) in [
        (spill(4, "nan", "q8_0"), "spill_us.q8_0 must be"),
        (spill(4, "3.0", "f32"), "spill_us names f32"),
        (term(0, 1.0), "batch must be at least 1"),
        (term(4, -1.0), "us must be"),
        (term(4, 1.0).replace(&key, "mini"), "16-hex-digit layer key"),
        (format!("{}{}", term(4, 1.0), term(4, 2.0)), "a second term"),
    ] {
        let e = HardwareProfile::from_toml(&format!("{SIMPLE}{bad}"), "bad.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bad.toml") && e.contains("[[model]] entry") && e.contains(says),
            "{e}"
        );
    }
}

/// A factorized convolution is charged per convolution of its chain, by hand on a 32×16×3×3 kernel
/// applied at 64 output pixels (1 GMAC/s, 1 GB/s, no overhead).
#[test]
fn conv_chains_are_charged_per_convolution() {
    let m = simple("");
    let l = LayerInfo {
        name: "conv".into(),
        kind: LayerKind::Conv2d,
        shape: vec![32, 16, 3, 3],
        macs: 4608 * 64,
        bias: true,
    };
    // tucker50: ranks (r_in, r_out) = (9, 18): 1×1 16→9, 3×3 9→18, 1×1 18→32 = 144 + 1458 + 576
    // weights, each applied at 64 pixels; every factor is compute-bound here (1 µs per 1000 MACs).
    let t = m.layer(&l, &choice("f32+tucker50"));
    assert_eq!(t.macs, (144.0 + 1458.0 + 576.0) * 64.0);
    assert_eq!(t.cost.bytes, 2178 * 4 + 32 * 4);
    assert!(
        close(t.cost.latency_us, 139.392, SUM_TOL),
        "{}",
        t.cost.latency_us
    );
    assert!(t.then.is_some());
    // cp25: R = ⌊1152 / 54⌋ = 21: 1×1 16→21 (336), 3×1 and 1×3 depthwise (63 each), 1×1 21→32
    // (672). A depthwise factor reads 21 channels and writes 21 per pixel: memory-bound,
    // (252 weight bytes + 42 × 64 × 4 activation bytes) / 1 GB/s = 11.004 µs each.
    let c = m.layer(&l, &choice("f32+cp25"));
    assert_eq!(c.macs, (336.0 + 63.0 + 63.0 + 672.0) * 64.0);
    assert_eq!(c.cost.bytes, 1134 * 4 + 32 * 4);
    assert!(
        close(c.cost.latency_us, 21.504 + 2.0 * 11.004 + 43.008, SUM_TOL),
        "{}",
        c.cost.latency_us
    );
    // int8 factors: a byte per value plus a scale per row of each factor.
    let q = m.layer(&l, &choice("int8-sym-channel+tucker50"));
    assert_eq!(q.cost.bytes, 2178 + 4 * (32 + 18 + 9) + 32 * 4);
    assert_eq!(q.macs, t.macs);
    assert!(!t.measured && !q.measured);

    // A whole chain measured inside the model (`calibrate --model`) replaces the sum, for every
    // format of the chain's factors (they run in f32), with its activation quantization; another
    // factorization, percent or act keeps the analytic sum.
    let entry = |conv: &str, act: &str, us: f64| {
        format!(
            "[[measured]]\nkind = \"conv2d\"\nshape = [32, 16, 3, 3]\nbatch = 1\nweights = \"f32\"\n\
             act = \"{act}\"\nus = {us}\nconv = \"{conv}\"\n"
        )
    };
    let w = simple(&(entry("tucker50", "none", 250.0) + &entry("cp25", "act8-dynamic", 90.0)));
    for notation in ["f32+tucker50", "int8-sym-channel+tucker50", "f16+tucker50"] {
        let c = w.layer(&l, &choice(notation));
        assert!(c.measured, "{notation}");
        assert_eq!(c.cost.latency_us, 250.0, "{notation}");
        assert_eq!(c.macs, t.macs, "{notation}: the work is still the chain's");
    }
    assert_eq!(
        w.layer(&l, &choice("f32+act8-dynamic+cp25"))
            .cost
            .latency_us,
        90.0
    );
    for (notation, analytic) in [("f32+tucker25", None), ("f32+cp25", Some(&c))] {
        let other = w.layer(&l, &choice(notation));
        assert!(!other.measured, "{notation}");
        if let Some(a) = analytic {
            assert_eq!(other.cost.latency_us, a.cost.latency_us);
        }
    }
}
