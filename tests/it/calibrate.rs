//! `mpsearch calibrate`'s measuring core on tiny shapes: what it measures, what it skips, the profile
//! it writes, and that the timed kernels compute the right thing.

use mpsearch::cost::calibrate::{
    measure, operands, table, to_profile, CalibrateOptions, Kernel, MatrixShape, Measurement,
    Prepared,
};
use mpsearch::cost::profile::Provenance;
use mpsearch::cost::{CostModel, HardwareProfile, KernelPath, Precision};
use mpsearch::space::{Choice, GgmlFormat, LayerInfo, LayerKind};

use candle_core::quantized::GgmlDType;

/// `[overhead] per_layer_us` is written rounded to two decimals.
const ROUNDED_US_TOL: f64 = 0.01;
/// The timed f32 kernel against a dot product summed in another order (f32).
const F32_DOT_TOL: f32 = 1e-4;
/// Largest relative error of the Q8_0 kernel's product against f32.
const Q8_0_MAX_REL_ERR: f32 = 0.02;

fn tiny(shapes: Vec<MatrixShape>) -> CalibrateOptions {
    CalibrateOptions {
        shapes,
        batches: vec![1, 4],
        warmup: 1,
        warmup_seconds: 0.0,
        repetitions: 6,
        max_seconds: 0.05,
        rounds: 2,
        ..CalibrateOptions::default()
    }
}

fn run(opts: &CalibrateOptions) -> Vec<Measurement> {
    let mut calls = 0;
    let mut last = (0, 0);
    let ms = measure(opts, &mut |done, total, _what| {
        calls += 1;
        last = (done, total);
    })
    .unwrap();
    assert!(calls > 0);
    assert_eq!(last.0, last.1, "progress ends at done == total");
    ms
}

#[test]
fn measures_every_runnable_type_and_batch() {
    let opts = tiny(vec![
        MatrixShape::linear(64, 256),
        MatrixShape::linear(32, 256),
    ]);
    let ms = run(&opts);
    for shape in &opts.shapes {
        for &batch in &opts.batches {
            for k in Kernel::all() {
                let m = ms
                    .iter()
                    .find(|m| &m.shape == shape && m.batch == batch && m.kernel == k.name())
                    .unwrap_or_else(|| panic!("no {} at {shape:?} batch {batch}", k.name()));
                assert!(m.median_us > 0.0 && m.median_us.is_finite(), "{m:?}");
                assert!(m.spread_us >= 0.0, "{m:?}");
                assert_eq!(m.repetitions, 6);
                assert_eq!(m.round_medians_us.len(), 2);
                assert!(m.round_medians_us.iter().all(|r| *r >= m.median_us));
                assert!(m.fastest_us > 0.0 && m.fastest_us <= m.median_us, "{m:?}");
                assert_eq!(m.bits, k.bits());
            }
        }
    }
    // plus the overhead probe: F32, Q8_0 and Q4K on a 16x256 weight at batch 1
    assert_eq!(ms.len(), 2 * 2 * Kernel::all().len() + 3);
    let probes: Vec<&Measurement> = ms.iter().filter(|m| m.probe).collect();
    let names: Vec<&str> = probes.iter().map(|m| m.kernel.as_str()).collect();
    assert_eq!(names, ["F32", "Q8_0", "Q4K"]);
    assert!(probes
        .iter()
        .all(|m| m.batch == 1 && m.shape == MatrixShape::linear(16, 256)));
    let t = table(&ms);
    assert!(
        t.contains("Q4K") && t.contains("64x256") && t.contains("× f32"),
        "{t}"
    );
}

#[test]
fn k_types_are_skipped_with_a_note_when_in_features_are_not_a_multiple_of_256() {
    // 192 = 6 x 32: the legacy 32-blocks fit, the 256-element K-blocks do not.
    let opts = tiny(vec![MatrixShape::linear(32, 192)]);
    let ms = run(&opts);
    let kernels: Vec<&str> = ms
        .iter()
        .filter(|m| m.batch == 1 && !m.probe)
        .map(|m| m.kernel.as_str())
        .collect();
    for k in [
        "F32",
        "F16",
        "BF16",
        "QMatMul-F16",
        "Q8_0",
        "Q4_0",
        "Q4_1",
        "Q5_0",
        "Q5_1",
    ] {
        assert!(kernels.contains(&k), "{k} missing from {kernels:?}");
    }
    for k in ["Q2K", "Q3K", "Q4K", "Q5K", "Q6K"] {
        assert!(!kernels.contains(&k), "{k} ran on 192 in-features");
    }
    let profile = to_profile(&ms, &[], &opts, "tiny").unwrap();
    let cal = profile.calibration.as_ref().unwrap();
    for k in ["Q2K", "Q3K", "Q4K", "Q5K", "Q6K"] {
        assert!(
            cal.notes
                .iter()
                .any(|n| n.starts_with(&format!("{k} skipped")) && n.contains("192")),
            "no note for {k}: {:?}",
            cal.notes
        );
    }
    // The legacy formats ran and have a rate; the K-types ran nowhere: no rate, and a note says they
    // are charged as a dequantized copy.
    let rates: Vec<&str> = profile.ggml.keys().map(String::as_str).collect();
    assert_eq!(rates, ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0"]);
    assert!(
        cal.notes
            .iter()
            .any(|n| n.starts_with("no [ggml] rate for q2_k, q3_k, q4_k, q5_k, q6_k")),
        "{:?}",
        cal.notes
    );
    assert!(cal.bit_types.is_empty());
    let text = toml::to_string_pretty(&profile).unwrap();
    let hp = HardwareProfile::from_toml(&text, "tiny.toml").unwrap();
    assert_eq!(hp.ggml_kernel(GgmlFormat::Q4K), Err(Precision::F32));
    assert!(hp.ggml_kernel(GgmlFormat::Q4_0).is_ok_and(|r| r > 0.0));

    // 160 = 5 x 32: candle's Q4_1/Q5_0/Q5_1 dot products take 32-blocks in pairs (and assert it).
    let odd = MatrixShape::linear(32, 160);
    for t in [
        GgmlDType::Q4_1,
        GgmlDType::Q5_0,
        GgmlDType::Q5_1,
        GgmlDType::Q4K,
    ] {
        assert!(
            Kernel::Quant(t)
                .skip_reason(&odd)
                .is_some_and(|r| r.contains("160")),
            "{t:?}"
        );
    }
    for t in [GgmlDType::Q4_0, GgmlDType::Q8_0, GgmlDType::Q8_1] {
        assert_eq!(Kernel::Quant(t).skip_reason(&odd), None, "{t:?}");
    }
}

#[test]
fn profile_round_trips_through_toml() {
    let opts = tiny(vec![
        MatrixShape::linear(64, 256),
        MatrixShape::linear(32, 256),
    ]);
    let ms = run(&opts);
    let file = to_profile(&ms, &[], &opts, "this-machine").unwrap();
    let text = toml::to_string_pretty(&file).unwrap();
    let hp = HardwareProfile::from_toml(&text, "calibrated.toml")
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(hp.name(), "this-machine");
    assert_headline_figures(&hp, &ms, &text);
    assert_provenance(&hp.file.provenance);
    assert_measured_entries(&hp, &ms, &opts);
    // the text written again parses to the same entries
    assert_eq!(
        HardwareProfile::from_toml(&hp.to_toml(), "again.toml")
            .unwrap()
            .measured,
        hp.measured
    );
}

/// `[compute]` has f32 and f16 (candle's kernels), `[ggml]` every format, bf16 and the integer widths
/// fall back to f32 copies, `[memory]` and `[overhead]` are positive, `per_layer_us` is the fastest
/// probe kernel, and the probe has no `[[measured]]` entry (`text` is the profile's TOML).
fn assert_headline_figures(hp: &HardwareProfile, ms: &[Measurement], text: &str) {
    for p in [Precision::F32, Precision::F16]
        .into_iter()
        .chain(GgmlFormat::ALL.map(Precision::Ggml))
    {
        assert!(
            hp.gmacs.get(&p).is_some_and(|g| *g > 0.0),
            "no {p} rate:\n{text}"
        );
    }
    // No bf16 gemm and no integer kernel in candle: what `measure` runs is an f32 copy.
    assert!(!hp.gmacs.contains_key(&Precision::Bf16), "{text}");
    for b in 2..=8 {
        assert!(!hp.gmacs.contains_key(&Precision::Int(b)), "{text}");
        assert_eq!(hp.runs_as(Precision::Int(b)), Precision::F32, "int{b}");
    }
    assert_eq!(hp.runs_as(Precision::Bf16), Precision::F32);
    assert!(hp.copies(Precision::Bf16) && !hp.copies(Precision::F16));
    assert!(hp.weight_only.is_none());
    assert!(hp.bandwidth_gbs > 0.0 && hp.per_layer_us > 0.0);
    let fastest = ms
        .iter()
        .filter(|m| m.probe)
        .map(|m| m.fastest_us)
        .fold(f64::INFINITY, f64::min);
    assert!(
        (hp.per_layer_us - fastest).abs() < ROUNDED_US_TOL,
        "{} vs {fastest}",
        hp.per_layer_us
    );
    // the probe is not a requested shape
    assert!(!hp.measured.keys().any(|k| k.shape == [16, 256]));
}

/// The provenance names this candle, today and this machine.
fn assert_provenance(prov: &Provenance) {
    assert_eq!(prov.candle_version.as_deref(), Some("0.11.1"));
    assert_eq!(prov.date.len(), 10);
    assert!(prov.cores.is_some_and(|c| c >= 1) && prov.cpu.is_some());
    assert!(prov
        .sources
        .iter()
        .any(|s| s.contains("candle-core 0.11.1")));
}

/// Every requested shape and batch has an f32, an f16 and one entry per GGML format, each the time of
/// the kernel `measure` runs for it (f16: the plain F16 matmul, not QMatMul-F16), with float
/// activations in the key (a GGML kernel quantizes its own); no bf16 or integer entries.
fn assert_measured_entries(hp: &HardwareProfile, ms: &[Measurement], opts: &CalibrateOptions) {
    let kernel_of = |p: Precision| match p {
        Precision::F32 => "F32".to_string(),
        Precision::F16 => "F16".to_string(),
        Precision::Ggml(g) => Kernel::Quant(mpsearch::compress::ggml::dtype(g)).name(),
        other => panic!("no kernel is charged for {other}"),
    };
    for shape in &opts.shapes {
        for &batch in &opts.batches {
            for p in [Precision::F32, Precision::F16]
                .into_iter()
                .chain(GgmlFormat::ALL.map(Precision::Ggml))
            {
                let entry = hp
                    .file
                    .measured
                    .iter()
                    .find(|e| e.shape == shape.shape && e.batch == batch && e.weights == p)
                    .unwrap_or_else(|| panic!("no {p} entry for {shape:?} batch {batch}"));
                let name = kernel_of(p);
                let timed = ms
                    .iter()
                    .find(|m| m.shape == *shape && m.batch == batch && m.kernel == name)
                    .unwrap();
                assert_eq!(entry.kernel.as_deref(), Some(name.as_str()));
                assert!((entry.us - timed.fastest_us).abs() < ROUNDED_US_TOL, "{p}");
                assert_eq!(entry.act, "none", "{p}");
            }
        }
    }
    assert!(hp
        .measured
        .keys()
        .all(|k| !matches!(k.weights, Precision::Int(_) | Precision::Bf16)));
    assert!(hp.file.calibration.as_ref().unwrap().bit_types.is_empty());
}

#[test]
fn for_layers_takes_distinct_matrices_and_skips_embeddings() {
    let layer = |name: &str, kind, shape: Vec<usize>, macs| LayerInfo {
        name: name.into(),
        kind,
        shape,
        macs,
        bias: true,
    };
    let layers = [
        layer("emb", LayerKind::Embedding, vec![30522, 768], 0),
        layer("q", LayerKind::Linear, vec![768, 768], 768 * 768),
        layer("k", LayerKind::Linear, vec![768, 768], 768 * 768),
        layer("up", LayerKind::Linear, vec![3072, 768], 3072 * 768),
        layer(
            "conv",
            LayerKind::Conv2d,
            vec![64, 64, 3, 3],
            64 * 576 * 56 * 56,
        ),
    ];
    let opts = CalibrateOptions::for_layers(&layers);
    assert_eq!(opts.shapes.len(), 3, "{:?}", opts.shapes);
    let conv = &opts.shapes[2];
    assert_eq!((conv.rows, conv.cols, conv.applications), (64, 576, 3136));
    assert_eq!(conv.shape, vec![64, 64, 3, 3]);
    assert_eq!(opts.shapes[0], MatrixShape::linear(768, 768));
}

#[test]
fn convolutions_are_timed_as_im2col_products_and_ambiguous_keys_are_left_out() {
    let conv = |applications| MatrixShape {
        kind: LayerKind::Conv2d,
        shape: vec![8, 8, 2, 2],
        rows: 8,
        cols: 32,
        applications,
    };
    let mut opts = tiny(vec![conv(4), conv(9), MatrixShape::linear(16, 64)]);
    opts.batches = vec![1];
    opts.overhead_probe = false;
    opts.kernels = vec![Kernel::F32, Kernel::Quant(GgmlDType::Q8_0)];
    let ms = run(&opts);
    assert_eq!(ms.len(), 6);
    assert_eq!(ms[0].shape.macs(1), 8 * 32 * 4);
    let file = to_profile(&ms, &[], &opts, "conv").unwrap();
    let text = toml::to_string_pretty(&file).unwrap();
    let hp = HardwareProfile::from_toml(&text, "conv.toml").unwrap();
    assert!(
        hp.measured.keys().all(|k| k.kind == LayerKind::Linear),
        "{text}"
    );
    assert_eq!(hp.measured.len(), 2, "{text}");
    let notes = &hp.file.calibration.as_ref().unwrap().notes;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("conv2d 8x8x2x2") && n.contains("4 pixels, 9 pixels")),
        "{notes:?}"
    );

    opts.batches = vec![0];
    assert!(measure(&opts, &mut |_, _, _| {}).is_err());
    opts.batches = vec![1];
    opts.shapes = vec![MatrixShape {
        cols: 33,
        ..conv(1)
    }];
    assert!(measure(&opts, &mut |_, _, _| {}).is_err());
}

#[test]
fn the_timed_quantized_matmul_computes_x_times_w_transposed() {
    let (rows, cols, m) = (64, 256, 4);
    let (w, x) = operands(rows, cols, m, 7).unwrap();
    let run = |k: Kernel| {
        let p = Prepared::new(k, &w).unwrap();
        p.forward(&p.input(&x).unwrap()).unwrap()
    };
    let reference = run(Kernel::F32);
    assert_eq!(reference.dims(), &[m, rows]);
    // F32 against a plain triple loop
    let wv: Vec<Vec<f32>> = w.to_vec2().unwrap();
    let xv: Vec<Vec<f32>> = x.to_vec2().unwrap();
    let rv: Vec<Vec<f32>> = reference.to_vec2().unwrap();
    for i in 0..m {
        for j in 0..rows {
            let dot: f32 = (0..cols).map(|c| xv[i][c] * wv[j][c]).sum();
            assert!(
                (dot - rv[i][j]).abs() < F32_DOT_TOL,
                "f32 [{i},{j}] {dot} vs {}",
                rv[i][j]
            );
        }
    }
    let rel_err = |k: Kernel| {
        let y = run(k);
        let y = y.to_dtype(candle_core::DType::F32).unwrap();
        assert_eq!(y.dims(), &[m, rows]);
        let diff = (&y - &reference)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let norm = reference
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        (diff / norm).sqrt()
    };
    let q8 = rel_err(Kernel::Quant(GgmlDType::Q8_0));
    println!("Q8_0: relative error {q8:.5}");
    assert!(q8 < Q8_0_MAX_REL_ERR, "Q8_0 relative error {q8}");
    for (k, bound) in [
        (Kernel::F16, 0.01),
        (Kernel::QMatMulF16, 0.01),
        (Kernel::Bf16, 0.02),
        (Kernel::Quant(GgmlDType::Q8K), 0.02),
        (Kernel::Quant(GgmlDType::Q6K), 0.05),
        (Kernel::Quant(GgmlDType::Q4K), 0.15),
        (Kernel::Quant(GgmlDType::Q4_0), 0.15),
    ] {
        let e = rel_err(k);
        println!("{}: relative error {e:.5}", k.name());
        assert!(e < bound, "{} relative error {e}", k.name());
    }
}

/// The measurement reported for the BERT FFN matrices: `cargo test --release --test calibrate -- --ignored --nocapture`.
#[test]
#[ignore]
fn bert_ffn_on_this_machine() {
    let opts = CalibrateOptions {
        shapes: vec![
            MatrixShape::linear(3072, 768),
            MatrixShape::linear(768, 3072),
        ],
        ..CalibrateOptions::default()
    };
    let started = std::time::Instant::now();
    let ms = measure(&opts, &mut |_, _, _| {}).unwrap();
    println!("{}", table(&ms));
    println!("took {:.1} s", started.elapsed().as_secs_f64());
    let file = to_profile(&ms, &[], &opts, "this-machine").unwrap();
    println!("{}", toml::to_string_pretty(&file).unwrap());
}

/// The whole standard grid, timed: `cargo test --release --test calibrate -- --ignored --nocapture standard`.
#[test]
#[ignore]
fn standard_grid_on_this_machine() {
    let opts = CalibrateOptions::standard_grid();
    let started = std::time::Instant::now();
    let ms = measure(&opts, &mut |done, total, what| {
        eprintln!("[{done}/{total}] {what}")
    })
    .unwrap();
    println!("{}", table(&ms));
    println!("took {:.1} s", started.elapsed().as_secs_f64());
    let file = to_profile(&ms, &[], &opts, "this-machine").unwrap();
    let text = toml::to_string_pretty(&file).unwrap();
    HardwareProfile::from_toml(&text, "standard.toml").unwrap();
    println!("{text}");
}

/// What a calibrated profile charges is what `measure` runs on candle: a GGML format its own entry;
/// bf16 the f32 entry (a dense f32 copy); an `int<b>` choice the f32 entry of its dequantized copy,
/// plus the quantize–dequantize pass with `act8-*`.
#[test]
fn a_calibrated_profile_charges_what_candle_runs() {
    let opts = tiny(vec![MatrixShape::linear(64, 256)]);
    let ms = run(&opts);
    let text =
        toml::to_string_pretty(&to_profile(&ms, &[], &opts, "this-machine").unwrap()).unwrap();
    let hp = HardwareProfile::from_toml(&text, "calibrated.toml").unwrap();
    let entry = |p: Precision, batch: u32| {
        hp.file
            .measured
            .iter()
            .find(|e| e.weights == p && e.batch == batch)
            .unwrap()
            .us
    };
    let layer = LayerInfo {
        name: "fc".into(),
        kind: LayerKind::Linear,
        shape: vec![64, 256],
        macs: 64 * 256,
        bias: false,
    };
    for batch in [1, 4] {
        let m = CostModel::new(hp.clone(), batch).unwrap();
        let cost = |c: &str| m.layer(&layer, &c.parse::<Choice>().unwrap());
        let f32_us = entry(Precision::F32, batch);
        for g in GgmlFormat::ALL {
            let c = cost(g.name());
            assert_eq!(c.cost.latency_us, entry(Precision::Ggml(g), batch), "{g}");
            assert!(c.measured && c.kernel.path == KernelPath::Ggml(g), "{g}");
            assert_eq!(
                c.kernel.arithmetic(),
                format!("{g}×{}", g.act_blocks()),
                "{g}"
            );
        }
        let bf16 = cost("bf16");
        assert_eq!(bf16.cost.latency_us, f32_us);
        assert_eq!(bf16.kernel.to_string(), "f32 copy → f32 kernel");
        let weight_only = cost("int4-sym-g32");
        assert_eq!(weight_only.cost.latency_us, f32_us);
        assert_eq!(
            weight_only.kernel.path,
            KernelPath::Dequantized(Precision::F32)
        );
        let w8a8 = cost("int8-sym-channel+act8-dynamic");
        assert!(w8a8.measured && w8a8.cost.latency_us > f32_us);
        assert_eq!(
            w8a8.kernel.to_string(),
            "dequantized → f32 + act8 quantize–dequantize"
        );
        assert_eq!(cost("f16").cost.latency_us, entry(Precision::F16, batch));
    }
}

/// An older calibrated profile keeps the meaning it had: its integer entries timed candle's quantized
/// kernels, which quantize the activations on the fly, so an entry written with `act = "none"` is
/// read as `act8-dynamic`, and its integer rates stay in `[compute]`.
#[test]
fn older_calibrated_profiles_keep_their_integer_entries() {
    let old = r#"
[profile]
name = "calibrated-old"
description = "written by an older mpsearch calibrate"
device = "cpu"
[provenance]
sources = ["candle-core 0.11.1"]
date = "2026-11-20"
method = "measured"
[compute]
f32 = 10.0
bf16 = 9.0
int8 = 30.0
int4 = 40.0
[memory]
bandwidth_gbs = 10.0
[sparsity]
nm_precisions = []
[[measured]]
kind = "linear"
shape = [64, 256]
batch = 1
weights = "int4"
act = "none"
us = 3.0
kernel = "Q4K"
[calibration]
bit_types = { "4" = "Q4K", "8" = "Q8_0" }
"#;
    let hp = HardwareProfile::from_toml(old, "calibrated-old.toml").unwrap();
    assert!(hp
        .measured
        .keys()
        .all(|k| k.act == mpsearch::space::ActQuant::Int8Dynamic));
    assert_eq!(hp.runs_as(Precision::Int(4)), Precision::Int(4));
    assert_eq!(hp.runs_as(Precision::Bf16), Precision::Bf16);
    assert_eq!(hp.file.calibration.as_ref().unwrap().bit_types.len(), 2);
    // It says nothing about GGML formats: they are charged as a dequantized f32 copy.
    assert_eq!(hp.ggml_kernel(GgmlFormat::Q4K), Err(Precision::F32));
    assert!(!hp.accelerates_nm(2, 4));
}

/// The demo model at 1 and 3 images, calibrated inside its forward passes with f32 and Q8_0.
fn demo_in_model() -> (
    mpsearch::model::DemoModel,
    mpsearch::cost::calibrate::in_model::InModel,
    CalibrateOptions,
) {
    use mpsearch::cost::calibrate::in_model::{self, ModelInput};
    use mpsearch::model::Model;
    let model = mpsearch::model::DemoModel::embedded().unwrap();
    let data = mpsearch::eval::EvalData::demo().unwrap();
    let inputs: Vec<ModelInput> = [1, 3]
        .into_iter()
        .map(|n| {
            let i = mpsearch::measure::input::from_search_split(&data, n, None).unwrap();
            ModelInput {
                batch: i.batch,
                cost_batch: i.cost_batch,
                description: i.description,
            }
        })
        .collect();
    let mut opts = CalibrateOptions::for_layers(&model.inventory().layers);
    opts.batches = vec![1, 3];
    opts.kernels = vec![Kernel::F32, Kernel::Bf16, Kernel::Quant(GgmlDType::Q8_0)];
    opts.repetitions = 6;
    opts.rounds = 2;
    opts.warmup_seconds = 0.0;
    // Structured variants: f16 alone is a plain kernel; int8 weights run as the f32 path.
    let variants = in_model::variants(&[
        crate::util::choice("f16"),
        crate::util::choice("f32+act8-dynamic"),
        crate::util::choice("int8-sym-channel+rank50"),
        crate::util::choice("int4-sym-channel+rank50"),
        crate::util::choice("int4-sym-channel+tucker25"),
        crate::util::choice("f16+tucker25"),
    ]);
    // A chain runs its factors' values in f32 whatever their format: one variant for both.
    assert_eq!(
        variants.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
        vec!["f32+act8-dynamic", "f32+rank50", "f32+tucker25"]
    );
    let mut last = (0, 0);
    let m = in_model::measure(&model, &inputs, &opts, &variants, &mut |d, t, _| {
        last = (d, t)
    })
    .unwrap();
    assert_eq!(last.0, last.1, "progress ends at done == total");
    (model, m, opts)
}

#[test]
fn calibrating_inside_the_model_times_every_layer_and_the_work_outside_them() {
    use mpsearch::cost::profile::{layers_key, ModelTerm};
    use mpsearch::model::Model;
    let (model, m, opts) = demo_in_model();
    let layers = &model.inventory().layers;
    // BF16 is timed for the table only: not a kernel a profile charges, so not deployed.
    assert!(m.measurements.iter().all(|x| x.kernel != "BF16"));
    // Every matrix layer's shape gets an f32 figure at both batches; Q8_0 wherever its block fits.
    for l in layers {
        let Some(shape) = MatrixShape::of_layer(l) else {
            continue;
        };
        for batch in [1, 3] {
            let f32 = m
                .measurements
                .iter()
                .find(|x| x.shape == shape && x.batch == batch && x.kernel == "F32");
            assert!(
                f32.is_some_and(|x| x.fastest_us > 0.0),
                "{} at {batch}",
                l.name
            );
            let q = m
                .measurements
                .iter()
                .any(|x| x.shape == shape && x.batch == batch && x.kernel == "Q8_0");
            assert_eq!(q, shape.cols % 32 == 0, "{} at {batch}", l.name);
        }
    }
    // The work outside the layers is positive, part of the forward pass, and grows with the batch.
    assert_eq!(m.non_matmul.len(), 2);
    for n in &m.non_matmul {
        assert!(n.us > 0.0 && n.us < n.forward_us, "{n:?}");
    }
    assert!(m.non_matmul[1].forward_us > m.non_matmul[0].forward_us);
    // Each variant has an entry per layer shape and batch: act8-dynamic on every matrix layer, and a
    // whole rank<50> layer keyed by the layer's own shape.
    let matrices = layers.iter().filter_map(MatrixShape::of_layer).count();
    for (act, rank) in [("act8-dynamic", None), ("none", Some(50))] {
        let n = m
            .variants
            .iter()
            .filter(|e| e.act == act && e.rank == rank && e.us > 0.0)
            .count();
        assert_eq!(n, 2 * matrices, "{act} {rank:?}: {:?}", m.variants);
    }
    // tucker25: a whole chain per convolution it applies to (not a 1-input-channel one), none for
    // the linear layers.
    let tucker = mpsearch::space::ConvFactor::Tucker(25);
    for l in layers {
        let fits = mpsearch::space::ConvDims::of(l).is_some_and(|d| tucker.misfit(d).is_none());
        for batch in [1, 3] {
            let e = m.variants.iter().find(|e| {
                e.shape == l.shape && e.batch == batch && e.conv.as_deref() == Some("tucker25")
            });
            assert_eq!(e.is_some_and(|e| e.us > 0.0), fits, "{} at {batch}", l.name);
        }
    }

    // Written as a profile: the measured entries and the [[model]] terms load back, and the cost
    // model adds the term to this model's assignments (and only this model's).
    let q8 = Precision::Ggml(GgmlFormat::Q8_0);
    let terms: Vec<ModelTerm> = m
        .non_matmul
        .iter()
        .map(|n| ModelTerm {
            name: "demo".into(),
            layers: layers_key(layers),
            batch: n.cost_batch,
            us: n.us,
            spread_us: Some(n.spread_us),
            input: Some(n.description.clone()),
            // Six passes cannot tell a spill from noise (below), so every spill written is 0; a
            // known one for q8_0, as more rounds would write, shows how it is charged.
            spill_us: n
                .spill_us
                .iter()
                .map(|(&p, &us)| (p, if p == q8 { 12.5 } else { us }))
                .collect(),
        })
        .collect();
    let mut file = to_profile(&m.measurements, &terms, &opts, "demo-inside").unwrap();
    file.measured.extend(m.variants.iter().cloned());
    let text = toml::to_string_pretty(&file).unwrap();
    let hp = HardwareProfile::from_toml(&text, "demo-inside.toml")
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(hp
        .file
        .provenance
        .method
        .contains("inside whole forward passes"));
    let all_f32 = mpsearch::space::Assignment::default();
    for n in &m.non_matmul {
        let bare = CostModel::new(hp.clone(), n.cost_batch).unwrap();
        let with = bare.clone().for_model(layers);
        let (_, a) = bare.assignment(layers, &all_f32);
        let (_, b) = with.assignment(layers, &all_f32);
        assert!((b.latency_us - a.latency_us - n.us).abs() < 1e-9);
        // The model's f32 forward as predicted: every layer's measured figure plus the term.
        let per_layer: f64 = layers
            .iter()
            .filter_map(MatrixShape::of_layer)
            .map(|s| {
                m.measurements
                    .iter()
                    .find(|x| x.shape == s && x.batch == n.cost_batch && x.kernel == "F32")
                    .unwrap()
                    .fastest_us
            })
            .sum();
        // The profile keeps figures to 0.01 µs: allow half of that per layer.
        let matrices = layers.iter().filter_map(MatrixShape::of_layer).count();
        let embeddings = b.latency_us - n.us - per_layer;
        assert!(
            embeddings.abs() <= 0.005 * matrices as f64 + 1e-9,
            "the demo has no look-up: {embeddings}"
        );
    }
    // Every block format deployed gets a spill (what a layer on it adds to the rest of the pass),
    // which the cost model charges once per layer on that kernel, to this model only; f32 has none.
    // With fewer passes than the rank test needs each is written as 0, what was measured kept for
    // the term's description.
    let fits = layers
        .iter()
        .find(|l| MatrixShape::of_layer(l).is_some_and(|s| s.cols % 32 == 0))
        .expect("a layer q8_0 fits");
    assert!(opts.repetitions < mpsearch::cost::calibrate::in_model::SPILL_LEAST_PASSES);
    for n in &m.non_matmul {
        assert!(n.spill_us.contains_key(&q8), "{n:?}");
        assert!(
            n.spill_us
                .iter()
                .all(|(p, us)| *p != Precision::F32 && *us == 0.0),
            "{n:?}"
        );
        assert!(
            n.spill_within_noise
                .iter()
                .all(|(p, s)| n.spill_us[p] == 0.0
                    && s.measured_us.is_finite()
                    && s.measured_us != 0.0
                    && s.rank_z.is_none()),
            "{n:?}"
        );
        let term = hp.spill_us(&layers_key(layers), n.cost_batch)[&q8];
        assert_eq!(term, 12.5, "{n:?}");
        let bare = CostModel::new(hp.clone(), n.cost_batch).unwrap();
        let with = bare.clone().for_model(layers);
        let q = crate::util::choice("q8_0");
        let charged = with.layer(fits, &q).cost.latency_us - bare.layer(fits, &q).cost.latency_us;
        assert!((charged - term).abs() < 1e-9, "{charged} {term}");
        assert_eq!(
            with.layer(fits, &Choice::F32).cost.latency_us,
            bare.layer(fits, &Choice::F32).cost.latency_us
        );
    }
    // The cost model takes a whole rank<50> layer's entry, and the f32 path's act8-dynamic entry for
    // integer weights with dynamic activations (a dequantized copy here).
    let model1 = CostModel::new(hp.clone(), 3).unwrap();
    for (notation, act, rank) in [
        ("int8-sym-channel+rank50", "none", Some(50)),
        ("int8-sym-channel+act8-dynamic", "act8-dynamic", None),
    ] {
        let fc1 = layers.iter().find(|l| l.name == "fc1").unwrap();
        let c = model1.layer(fc1, &crate::util::choice(notation));
        let e = m
            .variants
            .iter()
            .find(|e| e.shape == fc1.shape && e.batch == 3 && e.act == act && e.rank == rank)
            .unwrap();
        assert!(c.measured, "{notation}");
        assert!(
            (c.cost.latency_us - e.us).abs() < 1e-9,
            "{notation}: {c:?} {e:?}"
        );
    }
    // … and a whole chain's, for an int8 chain too.
    let conv3 = layers.iter().find(|l| l.name == "conv3").unwrap();
    let c = model1.layer(conv3, &crate::util::choice("int8-sym-channel+tucker25"));
    let e = m
        .variants
        .iter()
        .find(|e| e.shape == conv3.shape && e.batch == 3 && e.conv.as_deref() == Some("tucker25"))
        .unwrap();
    assert!(
        c.measured && (c.cost.latency_us - e.us).abs() < 1e-9,
        "{c:?} {e:?}"
    );
    let mut other = layers.to_vec();
    other[0].name.push_str("-renamed");
    let (_, c) = CostModel::new(hp.clone(), 1)
        .unwrap()
        .for_model(&other)
        .assignment(&other, &all_f32);
    let (_, d) = CostModel::new(hp, 1).unwrap().assignment(layers, &all_f32);
    assert_eq!(
        c.latency_us, d.latency_us,
        "another model's layers get no term"
    );
}

/// [`MIN_PASSES`](mpsearch::timing::MIN_PASSES) timed runs are shared by the rounds
/// (at least one a round), and a round never does more than its share of the repetitions.
#[test]
fn the_least_runs_are_shared_by_the_rounds() {
    let o = |rounds, repetitions| CalibrateOptions {
        rounds,
        repetitions,
        ..CalibrateOptions::default()
    };
    assert_eq!(o(9, 270).reps_per_round(), 30);
    assert_eq!(o(9, 270).least_per_round(), 1);
    assert_eq!(o(1, 30).least_per_round(), 3);
    assert_eq!(o(2, 30).least_per_round(), 2);
    assert_eq!(o(3, 3).least_per_round(), 1);
    assert_eq!(
        (o(1, 2).reps_per_round(), o(1, 2).least_per_round()),
        (2, 2)
    );
    assert_eq!(
        o(0, 0).least_per_round(),
        1,
        "zero rounds and repetitions count as one"
    );
}
