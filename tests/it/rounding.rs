//! Rounding and clipping from the layer input statistics: GPTQ against round-to-nearest (equal with
//! `H = I`, better with correlated inputs), against an independent numpy transcription of the published
//! algorithm (`scripts/gptq-reference.py`), output-error scales against MSE scales, the sensitivity
//! model's cheap errors following the rounding, and the rounding stored with a run.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use candle_core::{Device, Tensor};
use faer::Mat;
use mpsearch::compress::{
    compress_with, CompressSettings, GptqOptions, InputAccumulator, InputStats, QuantizedWeight,
    Rounding, ScaleMethod,
};
use mpsearch::eval::{load, CandleEvaluator, EvalSettings};
use mpsearch::export::safetensors::{load_compressed, max_difference};
use mpsearch::model::ModelSource;
use mpsearch::sensitivity::{cheap_errors, LayerStats};
use mpsearch::space::{Choice, LayerInfo, LayerKind};
use mpsearch::store::{RunConfig, SledStore, Store};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::util::{choice, demo_evaluator, fails, ok, trials_json, Dir, FEW};

/// Entries of the numpy reference that may differ from ours (by one quantization step at most).
const REFERENCE_MISMATCH_FRACTION: f64 = 0.001;
/// Relative agreement of group scales with the numpy reference.
const REFERENCE_SCALE_RTOL: f32 = 1e-4;
/// Relative slack when comparing two output errors computed through different f32 products.
const ENERGY_RTOL: f64 = 1e-5;

fn linear(rows: usize, cols: usize) -> LayerInfo {
    LayerInfo {
        name: "layer".into(),
        kind: LayerKind::Linear,
        shape: vec![rows, cols],
        macs: 0,
        bias: false,
    }
}

fn gaussian(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

/// A `rows × cols` weight with a few large outliers.
fn weight(rng: &mut ChaCha8Rng, rows: usize, cols: usize) -> Tensor {
    let mut w = gaussian(rng, rows * cols);
    for v in w.iter_mut() {
        if rng.random_bool(0.01) {
            *v *= 6.0;
        }
    }
    Tensor::from_vec(w, (rows, cols), &Device::Cpu).unwrap()
}

/// Statistics of `n` correlated inputs: `x = z M` with `M` mixing neighbouring features and per-feature
/// energies spread over two orders of magnitude (as activations are); `dead` inputs are always zero.
fn correlated(rng: &mut ChaCha8Rng, n: usize, cols: usize, dead: &[usize]) -> InputStats {
    let z = gaussian(rng, n * cols);
    let gain: Vec<f32> = (0..cols)
        .map(|_| 10f32.powf(rng.random_range(-1.0..1.0)))
        .collect();
    let mut x = vec![0.0f32; n * cols];
    for i in 0..n {
        let row = &z[i * cols..(i + 1) * cols];
        for j in 0..cols {
            // Each feature shares half its signal with the next two and with a common factor.
            let v = row[j] + 0.7 * row[(j + 1) % cols] + 0.5 * row[(j + 2) % cols] + 0.8 * row[0];
            x[i * cols + j] = if dead.contains(&j) { 0.0 } else { v * gain[j] };
        }
    }
    let x = Tensor::from_vec(x, (n, cols), &Device::Cpu).unwrap();
    let mut a = InputAccumulator::new(&linear(1, cols)).unwrap();
    a.add(&x).unwrap();
    a.finish().unwrap()
}

fn identity(cols: usize) -> InputStats {
    InputStats::from_hessian(Mat::identity(cols, cols), 1).unwrap()
}

fn settings(scale: ScaleMethod, rounding: Rounding) -> CompressSettings {
    CompressSettings {
        scale,
        rounding,
        ..CompressSettings::default()
    }
}

fn gptq(act_order: bool) -> Rounding {
    Rounding::Gptq(GptqOptions::new(0.01, act_order).unwrap())
}

/// The integer form of `w` under `c` (one factor).
fn quantized(w: &Tensor, c: &Choice, s: CompressSettings, h: &InputStats) -> QuantizedWeight {
    compress_with(w, c, &s, Some(h), None).unwrap().quantized()[0]
        .clone()
        .unwrap()
}

/// `trace(ΔW H ΔWᵀ)` of the compressed weight.
fn output_error(w: &Tensor, c: &Choice, s: CompressSettings, h: &InputStats) -> f64 {
    let (rows, cols) = w.dims2().unwrap();
    let w2 = compress_with(w, c, &s, Some(h), None)
        .unwrap()
        .to_tensor()
        .unwrap();
    let d: Vec<f32> = (w - w2).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    h.energy(&d, rows, cols)
}

#[test]
fn gptq_with_identity_statistics_is_round_to_nearest() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    // 300 columns: three blocks, the last one ragged; groups of 32 and 128 ragged at the row end.
    let (rows, cols) = (24, 300);
    let w = weight(&mut rng, rows, cols);
    let h = identity(cols);
    for c in [
        "int4-sym-channel",
        "int3-asym-g32",
        "int2-sym-g128",
        "int8-asym-tensor",
        "int4-asym-g32+sparse50",
        "int3-sym-channel+2:4",
    ] {
        for scale in [ScaleMethod::MinMax, ScaleMethod::Mse, ScaleMethod::Output] {
            let rtn = quantized(&w, &choice(c), settings(scale, Rounding::Rtn), &h);
            for act_order in [false, true] {
                let g = quantized(&w, &choice(c), settings(scale, gptq(act_order)), &h);
                assert_eq!(
                    g.scales(),
                    rtn.scales(),
                    "{c}, {scale} scales, act-order {act_order}: scales"
                );
                assert_eq!(
                    g.codes(),
                    rtn.codes(),
                    "{c}, {scale} scales, act-order {act_order}: codes"
                );
            }
        }
    }
    // With H = I the output error is the squared error: output-error scales are the MSE ones.
    for c in ["int4-sym-channel", "int3-asym-g32", "int4-sym-tensor"] {
        let out = quantized(&w, &choice(c), ScaleMethod::Output.into(), &h);
        let mse = quantized(&w, &choice(c), ScaleMethod::Mse.into(), &h);
        assert_eq!(out, mse, "{c}: output-error scales with H = I");
    }
}

#[test]
fn gptq_has_less_output_error_than_round_to_nearest_on_correlated_inputs() {
    let (rows, cols) = (32, 256);
    for seed in 0..4 {
        let mut rng = ChaCha8Rng::seed_from_u64(100 + seed);
        let w = weight(&mut rng, rows, cols);
        let h = correlated(&mut rng, 1024, cols, &[]);
        for c in [
            "int4-sym-channel",
            "int3-asym-g32",
            "int2-sym-g128",
            "int4-sym-tensor",
            "int4-asym-g32+sparse50",
            "int4-sym-channel+rank50",
        ] {
            for scale in [ScaleMethod::MinMax, ScaleMethod::Mse] {
                let rtn = output_error(&w, &choice(c), settings(scale, Rounding::Rtn), &h);
                for act_order in [false, true] {
                    let g = output_error(&w, &choice(c), settings(scale, gptq(act_order)), &h);
                    assert!(
                        g < rtn,
                        "seed {seed}, {c}, {scale} scales, act-order {act_order}: GPTQ output error \
                         {g:.4e} is not below round-to-nearest's {rtn:.4e}"
                    );
                }
            }
        }
    }
}

#[test]
fn gptq_keeps_pruned_weights_at_zero_and_embeddings_round_to_nearest() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (rows, cols) = (16, 96);
    let w = weight(&mut rng, rows, cols);
    let h = correlated(&mut rng, 400, cols, &[3, 40]);
    let s = settings(ScaleMethod::Mse, gptq(false));
    for c in [
        "int4-sym-g32+2:4",
        "int3-asym-channel+sparse50",
        "int4-sym-channel+channels25",
    ] {
        let cw = compress_with(&w, &choice(c), &s, Some(&h), None).unwrap();
        for (f, keep) in cw.factors().iter().zip(cw.masks()) {
            for (v, &k) in f.data().iter().zip(keep) {
                assert!(k || *v == 0.0, "{c}: a pruned weight is {v}");
            }
        }
    }
    // Dead inputs: their weights are zeroed, as the reference does.
    let cw = compress_with(&w, &choice("int4-sym-channel"), &s, Some(&h), None).unwrap();
    for r in 0..rows {
        assert_eq!(cw.factors()[0].row(r)[3], 0.0);
        assert_eq!(cw.factors()[0].row(r)[40], 0.0);
    }
    // An embedding's statistics are diagonal (look-up counts): GPTQ moves no error.
    let counts: Vec<f64> = (0..rows).map(|r| (r % 5) as f64).collect();
    let e = InputStats::from_row_counts(counts).unwrap();
    for c in ["int4-sym-channel", "int3-asym-g32"] {
        let g = quantized(&w, &choice(c), settings(ScaleMethod::Mse, gptq(false)), &e);
        let r = quantized(
            &w,
            &choice(c),
            settings(ScaleMethod::Mse, Rounding::Rtn),
            &e,
        );
        assert_eq!(g, r, "{c} on an embedding");
    }
}

#[test]
fn output_scales_have_less_output_error_than_mse_scales() {
    let (rows, cols) = (32, 256);
    let mut total = [0.0f64; 2];
    for seed in 0..4 {
        let mut rng = ChaCha8Rng::seed_from_u64(200 + seed);
        let w = weight(&mut rng, rows, cols);
        let h = correlated(&mut rng, 1024, cols, &[]);
        // Per channel and per tensor the output error is minimised exactly over the clip ratios, and
        // the MSE ratio is one of them.
        for c in ["int4-sym-channel", "int3-asym-channel", "int4-sym-tensor"] {
            let out = output_error(&w, &choice(c), ScaleMethod::Output.into(), &h);
            let mse = output_error(&w, &choice(c), ScaleMethod::Mse.into(), &h);
            assert!(
                out <= mse * (1.0 + ENERGY_RTOL),
                "seed {seed}, {c}: output-error scales {out:.4e} > MSE scales {mse:.4e}"
            );
        }
        // Per group each group's own block of H is used (cross-group terms left out): better in total.
        let c = choice("int3-sym-g32");
        total[0] += output_error(&w, &c, ScaleMethod::Output.into(), &h);
        total[1] += output_error(&w, &c, ScaleMethod::Mse.into(), &h);
    }
    assert!(
        total[0] < total[1],
        "int3-sym-g32 over four seeds: output-error scales {:.4e}, MSE scales {:.4e}",
        total[0],
        total[1]
    );
}

#[test]
fn output_scales_and_gptq_need_input_statistics() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let w = weight(&mut rng, 4, 8);
    for s in [
        settings(ScaleMethod::Output, Rounding::Rtn),
        settings(ScaleMethod::Mse, gptq(false)),
    ] {
        let err = compress_with(&w, &choice("int4-sym-channel"), &s, None, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("input statistics"), "{err}");
        // Float formats do not round to a grid: they need nothing.
        compress_with(&w, &choice("f16+2:4"), &s, None, None).unwrap();
    }
    // Statistics of the wrong size are refused.
    let err = compress_with(
        &w,
        &choice("int4-sym-channel"),
        &settings(ScaleMethod::Mse, gptq(false)),
        Some(&identity(9)),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("do not fit"), "{err}");
    assert!(GptqOptions::new(0.0, false).is_err());
    assert!(GptqOptions::new(1.5, false).is_err());
}

/// `python3` with numpy, or `None` (a loud skip) — a failure under `CI=true`, where it is installed.
fn python_with_numpy() -> Option<&'static str> {
    let found = Command::new("python3")
        .args(["-c", "import numpy"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some("python3");
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("python3 with numpy is needed by the GPTQ reference test under CI=true (.ci/run installs it)");
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: python3 with numpy not found; the GPTQ reference test needs it \
         (python3 -m pip install numpy)"
    );
    None
}

#[test]
fn gptq_matches_the_numpy_transcription_of_the_published_algorithm() {
    let Some(python) = python_with_numpy() else {
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gptq-reference.py");
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let (rows, cols) = (48, 300);
    let w = weight(&mut rng, rows, cols);
    let h = correlated(&mut rng, 800, cols, &[7]);
    let hm = h.hessian().unwrap();
    let h_values: Vec<f32> = (0..cols * cols).map(|k| hm[(k / cols, k % cols)]).collect();
    let w_values: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
    for (c, act_order, granularity) in [
        ("int4-sym-channel", false, serde_json::json!("channel")),
        ("int3-asym-g32", false, serde_json::json!(32)),
        ("int4-sym-g64", false, serde_json::json!(64)),
        ("int4-asym-g64", true, serde_json::json!(64)),
        ("int3-sym-channel", true, serde_json::json!("channel")),
        ("int4-asym-tensor", false, serde_json::json!("tensor")),
    ] {
        let ch = choice(c);
        let mpsearch::space::WeightQuant::Int { bits, scheme, .. } = ch.weights else {
            unreachable!()
        };
        let problem = serde_json::json!({
            "rows": rows, "cols": cols, "w": w_values, "h": h_values, "bits": bits,
            "sym": scheme == mpsearch::space::QuantScheme::Symmetric,
            "granularity": granularity, "actorder": act_order, "percdamp": 0.01, "blocksize": 128,
        });
        let mut child = Command::new(python)
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(problem.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{c}: the reference failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let codes: Vec<i64> = serde_json::from_value(answer["codes"].clone()).unwrap();
        let scales: Vec<f32> = serde_json::from_value(answer["scales"].clone()).unwrap();

        let q = quantized(&w, &ch, settings(ScaleMethod::MinMax, gptq(act_order)), &h);
        let offset = match scheme {
            mpsearch::space::QuantScheme::Symmetric => 1i64 << (bits - 1),
            mpsearch::space::QuantScheme::Asymmetric => 0,
        };
        let mut differ = 0;
        for (k, (&ours, &theirs)) in q.codes().iter().zip(&codes).enumerate() {
            let d = (i64::from(ours) - (theirs + offset)).abs();
            assert!(
                d <= 1,
                "{c}, act-order {act_order}: entry ({}, {}) is code {ours}, the reference's {} \
                 (more than one step apart)",
                k / cols,
                k % cols,
                theirs + offset
            );
            differ += usize::from(d == 1);
        }
        assert!(
            differ as f64 <= REFERENCE_MISMATCH_FRACTION * (rows * cols) as f64,
            "{c}, act-order {act_order}: {differ} of {} codes differ from the reference by one step",
            rows * cols
        );
        assert_eq!(q.scales().len(), scales.len(), "{c}: number of scales");
        for (g, (a, b)) in q.scales().iter().zip(&scales).enumerate() {
            assert!(
                (a - b).abs() <= REFERENCE_SCALE_RTOL * b.abs(),
                "{c}, act-order {act_order}: scale {g} is {a}, the reference's {b}"
            );
        }
    }
}

#[test]
fn cheap_errors_follow_the_rounding() {
    let ev = demo_evaluator(ScaleMethod::Mse);
    let model = ev.model();
    let space = mpsearch::shipped::space("demo", &model.inventory().layers).unwrap();
    let stats = LayerStats::for_model(model.as_ref(), ev.input_stats().unwrap()).unwrap();
    // The demo space offers act8 twins: their activation term is the same under either rounding.
    let stats = LayerStats::with_activation(
        stats,
        model.as_ref(),
        &ev.data().calibration,
        ev.ranges().unwrap(),
    )
    .unwrap();
    let rtn = cheap_errors(&space, &stats, ScaleMethod::Mse).unwrap();
    let gq = cheap_errors(&space, &stats, settings(ScaleMethod::Mse, gptq(false))).unwrap();
    let (mut lower, mut compared) = (0, 0);
    for (g, group) in space.groups.iter().enumerate() {
        for (i, c) in group.choices.iter().enumerate() {
            let is_int =
                matches!(c.weights, mpsearch::space::WeightQuant::Int { bits, .. } if bits <= 4);
            // tucker<P> / cp<P> factors are rounded to nearest whatever the setting (no inputs).
            let plain = c.sparsity == mpsearch::space::Sparsity::None
                && c.rank.is_none()
                && c.conv.is_none();
            if is_int && plain {
                compared += 1;
                lower += usize::from(gq[g][i] < rtn[g][i]);
            }
            if !matches!(c.weights, mpsearch::space::WeightQuant::Int { .. }) {
                assert_eq!(
                    gq[g][i], rtn[g][i],
                    "{c}: float formats do not depend on rounding"
                );
            }
        }
    }
    assert!(compared > 0);
    assert_eq!(
        lower, compared,
        "GPTQ's cheap error is below round-to-nearest's for every dense int2..int4 choice"
    );
}

/// `export --format safetensors` of a trial with integer weights in run `r` of store `s` holds the
/// weights an evaluator with `rounding` runs (GPTQ's from the same calibration statistics).
fn exported_weights_are_the_evaluated_ones(cwd: &Path, rounding: Rounding) {
    let trials = trials_json(cwd, "s", "r");
    let is_int = |c: &serde_json::Value| c.as_str().is_some_and(|c| c.starts_with("int"));
    let trial = trials
        .iter()
        .find(|t| {
            let a = &t["assignment"];
            is_int(&a["default"])
                || a["layers"]
                    .as_object()
                    .is_some_and(|m| m.values().any(is_int))
        })
        .expect("a trial with integer weights");
    let n = trial["trial"].to_string();
    ok(
        cwd,
        &[
            "export",
            "r",
            "--store",
            "s",
            "--trial",
            &n,
            "--format",
            "safetensors",
            "--out",
            "w.safetensors",
        ],
    );
    let (model, data) = load(&ModelSource::Demo, None).unwrap();
    let settings = EvalSettings {
        rounding,
        ..EvalSettings::default()
    };
    let ev = CandleEvaluator::new(model, data, settings).unwrap();
    let space = mpsearch::shipped::space("demo", &ev.model().inventory().layers).unwrap();
    let asg = space
        .assignment_from_json(&serde_json::from_value(trial["assignment"].clone()).unwrap())
        .unwrap();
    let loaded = load_compressed(&cwd.join("w.safetensors")).unwrap();
    let (mut compared, mut integer) = (0, 0);
    for (name, o) in &ev.overrides(&asg).unwrap() {
        if let (Some(w), Some(l)) = (o.dense_weight(), loaded.get(name)) {
            assert_eq!(max_difference(w, l).unwrap(), 0.0, "layer {name}");
            compared += 1;
            integer += usize::from(is_int(&serde_json::json!(asg
                .get(name)
                .unwrap()
                .to_string())));
        }
    }
    assert!(
        integer > 0 && compared == loaded.len(),
        "{compared} layers, {integer} integer"
    );
}

#[test]
fn the_run_records_its_rounding_and_resume_refuses_another() {
    let d = Dir::new();
    ok(
        d.path(),
        &[
            "search",
            "--store",
            "s",
            "--run",
            "r",
            "--trials",
            "8",
            "--pairs",
            "8",
            FEW[0],
            FEW[1],
            "--rounding",
            "gptq",
            "--gptq-damp",
            "0.02",
        ],
    );
    {
        let store = SledStore::open(&d.path().join("s")).unwrap();
        let mut m = store.run("r").unwrap().unwrap();
        assert_eq!(
            m.config.rounding,
            Rounding::Gptq(GptqOptions::new(0.02, false).unwrap()),
            "the manifest records the rounding"
        );
        drop(store);
        exported_weights_are_the_evaluated_ones(d.path(), m.config.rounding);
        let store = SledStore::open(&d.path().join("s")).unwrap();
        // Pretend the run had been made with round-to-nearest: resuming it now is another evaluator.
        m.config.rounding = Rounding::Rtn;
        store.put_run(&m).unwrap();
    }
    let err = fails(d.path(), &["resume", "r", "--store", "s", "--trials", "2"]);
    assert!(err.contains("evaluator settings changed"), "{err}");
    // Flags that only GPTQ reads are refused without it.
    let err = fails(
        d.path(),
        &["eval", "--stdin", "--rounding", "rtn", "--act-order"],
    );
    assert!(err.contains("--rounding gptq"), "{err}");
    // A manifest written before rounding was a setting reads as round-to-nearest.
    let mut old = serde_json::to_value(RunConfig::default()).unwrap();
    old.as_object_mut().unwrap().remove("rounding");
    let config: RunConfig = serde_json::from_value(old).unwrap();
    assert_eq!(config.rounding, Rounding::Rtn);
}
