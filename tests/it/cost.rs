//! The cost model: roofline against hand computation, measured overrides, additivity, exact
//! feasibility against brute force, and every shipped profile on the baselines.

use mpsearch::cost::{CostModel, CostTable, HardwareProfile, Objective};
use mpsearch::model::{inventory, ModelSource};
use mpsearch::space::{file, Choice, LayerInfo, LayerKind, SearchSpace};
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
