//! Real kernels: a GGML block-format layer is evaluated with the arithmetic of candle's `QMatMul` on
//! the weight quantized by candle (the same blocks, the input quantized to the same activation blocks;
//! computed densely, so equal to the kernel up to the order of f32 sums), the block formats order by
//! width on real computations, and the deployed model (`deploy_overrides`, what `measure` times)
//! computes what the evaluator measured.

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use mpsearch::compress::{block_kernel, ScaleMethod, WeightMatrix};
use mpsearch::data::Batch;
use mpsearch::eval::{CandleEvaluator, Evaluator};
use mpsearch::model::{ForwardCtx, LayerKernel, Model, Overrides};
use mpsearch::space::{Assignment, GgmlFormat};

use crate::util::{choice, demo_evaluator, demo_model};

/// Largest difference between the deployed model's logits and the evaluator's, relative to the
/// largest logit of the row, when layers run on candle's f16 matmul (the evaluator keeps the f16
/// weights' values in f32): an f16 layer rounds its input and its output to f16 (unit roundoff
/// u = 2⁻¹¹ ≈ 4.9e-4 each; candle accumulates in f32), so each such layer adds at most about 2u of the
/// size of its products, four layers about 8u ≈ 3.9e-3; the margin covers the f32 reassociation of
/// factored and kept-rows kernels (≈1e-6) and ReLU/pooling passing errors on unchanged.
const F16_DEPLOY_REL_TOL: f32 = 1e-2;
/// Largest difference between candle's `QMatMul` and the evaluator's dense emulation of it, relative to
/// the largest output of the row: the same products of integers and scales summed in another order, in
/// f32 (unit roundoff 6e-8) over 1568 or 256 terms and two layers; well below any format's own error
/// (q8_0's is ~1e-3).
const EMULATION_REL_TOL: f32 = 1e-5;
/// Share of logit rows (percent) whose deployed and evaluated values may differ by more than
/// [`EMULATION_REL_TOL`] when quantized layers follow each other: one activation code flipped at a
/// rounding boundary by the other order of f32 sums.
const MAX_FLIPPED_ROWS_PERCENT: usize = 10;
/// What one flipped activation code can change a logit by, relative to the row's largest: a q8 code
/// step is 1/127 of its block's largest input, times a weight, through one or two layers.
const CODE_FLIP_REL_TOL: f32 = 1e-2;
/// Seeds of the random layers whose block-format errors must order by width.
const SEEDS: [u64; 5] = [1, 2, 3, 4, 5];

/// The demo's layers at `choices` (`layer=choice` pairs), the others f32.
fn assignment(choices: &[(&str, &str)]) -> Assignment {
    Assignment::new(choices.iter().map(|(l, c)| (l.to_string(), choice(c))))
}

/// The model's outputs on the search split with `overrides`, and every layer's input in that pass.
fn run(ev: &CandleEvaluator, overrides: &Overrides) -> (Vec<Tensor>, HashMap<String, Vec<Tensor>>) {
    let capture = Mutex::new(
        ev.model()
            .inventory()
            .layers
            .iter()
            .map(|l| (l.name.clone(), Vec::new()))
            .collect::<HashMap<_, _>>(),
    );
    let ctx = ForwardCtx {
        overrides: Some(overrides),
        capture: Some(&capture),
        timer: None,
    };
    let out = ev
        .data()
        .eval
        .iter()
        .map(|b| ev.model().forward(b, &ctx).unwrap())
        .collect();
    (out, capture.into_inner().unwrap())
}

/// candle's quantized matmul of `w` (`[out, in]`) quantized to `dtype` by candle, on `x`.
fn candle_qmatmul(w: &Tensor, dtype: GgmlDType, x: &Tensor) -> Tensor {
    let q = QMatMul::from_qtensor(QTensor::quantize(w, dtype).unwrap()).unwrap();
    q.forward(x).unwrap()
}

/// The same arithmetic written out: `x` quantized to the kernel's activation blocks `act` and back,
/// times the weight's dequantized blocks, in f32 (not for Q8_1 partners, whose kernel multiplies each
/// weight block's min by the input block's f16-rounded sum: checked against the kernel only).
fn by_hand(w: &Tensor, dtype: GgmlDType, act: GgmlDType, x: &Tensor) -> Tensor {
    let wq = QTensor::quantize(w, dtype)
        .unwrap()
        .dequantize(&Device::Cpu)
        .unwrap();
    let xq = QTensor::quantize(x, act)
        .unwrap()
        .dequantize(&Device::Cpu)
        .unwrap();
    xq.matmul(&wq.t().unwrap()).unwrap()
}

/// Largest difference of two lists of `[rows, cols]` outputs, relative to each row's largest value.
fn worst_relative(got: &[Tensor], want: &[Tensor]) -> f32 {
    row_errors(got, want).into_iter().fold(0.0, f32::max)
}

/// Each row's largest difference relative to the row's largest value in `want`.
fn row_errors(got: &[Tensor], want: &[Tensor]) -> Vec<f32> {
    let mut errors = Vec::new();
    for (g, w) in got.iter().zip(want) {
        let (g, w) = (g.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
        for (gr, wr) in g.iter().zip(&w) {
            let scale = wr.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let diff = gr
                .iter()
                .zip(wr)
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            errors.push(diff / scale);
        }
    }
    errors
}

fn assert_bits_equal(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.dims(), want.dims(), "{what}: shapes");
    let (g, w) = (
        got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        want.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    );
    let differ = g
        .iter()
        .zip(&w)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    let first = g.iter().zip(&w).find(|(a, b)| a.to_bits() != b.to_bits());
    assert_eq!(
        differ,
        0,
        "{what}: {differ} of {} values differ (first: {first:?})",
        g.len()
    );
}

#[test]
fn a_q_format_layer_is_candles_qmatmul_arithmetic() {
    let ev = demo_evaluator(ScaleMethod::Mse);
    let demo = demo_model();
    let fc1 = demo.weight("fc1").unwrap();
    let (b1, b2) = (demo.bias("fc1").unwrap(), demo.bias("fc2").unwrap());
    let fc2 = demo.weight("fc2").unwrap();
    // fc2 [10, 256] takes every format; fc1 [256, 1568] (49 blocks of 32 a row) those whose blocks
    // candle takes singly, q8_0 and q4_0 (the others take them in pairs: 1568 is not a multiple of 64).
    for (f1, f2, d1, d2, a1, a2) in [
        (
            "q8_0",
            "q4_k",
            GgmlDType::Q8_0,
            GgmlDType::Q4K,
            GgmlDType::Q8_0,
            GgmlDType::Q8K,
        ),
        (
            "q4_0",
            "q2_k",
            GgmlDType::Q4_0,
            GgmlDType::Q2K,
            GgmlDType::Q8_0,
            GgmlDType::Q8K,
        ),
        (
            "q8_0",
            "q6_k",
            GgmlDType::Q8_0,
            GgmlDType::Q6K,
            GgmlDType::Q8_0,
            GgmlDType::Q8K,
        ),
        (
            "q4_0",
            "q4_1",
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q8_0,
            GgmlDType::Q8_1,
        ),
        (
            "q8_0",
            "q5_0",
            GgmlDType::Q8_0,
            GgmlDType::Q5_0,
            GgmlDType::Q8_0,
            GgmlDType::Q8_0,
        ),
        (
            "q4_0",
            "q5_1",
            GgmlDType::Q4_0,
            GgmlDType::Q5_1,
            GgmlDType::Q8_0,
            GgmlDType::Q8_1,
        ),
    ] {
        // fc1 alone: the model's fc2 input is relu(fc1's arithmetic + b1), exactly as written out by
        // hand (Q8_0 and Q8_K partners), and candle's QMatMul to the order of its sums.
        let o = ev.overrides(&assignment(&[("fc1", f1)])).unwrap();
        assert!(matches!(o["fc1"].kernel, Some(LayerKernel::Emulated(_))));
        let (_, seen) = run(&ev, &o);
        let (x1, x2) = (&seen["fc1"][0], &seen["fc2"][0]);
        let post = |t: Tensor| t.broadcast_add(&b1).unwrap().relu().unwrap();
        if a1 != GgmlDType::Q8_1 {
            assert_bits_equal(
                x2,
                &post(by_hand(&fc1, d1, a1, x1)),
                &format!("fc1 at {f1}"),
            );
        }
        let kernel = post(candle_qmatmul(&fc1, d1, x1));
        let worst = worst_relative(std::slice::from_ref(x2), std::slice::from_ref(&kernel));
        assert!(
            worst < EMULATION_REL_TOL,
            "fc1 at {f1}: {worst:e} of the row's largest output from candle's QMatMul"
        );
        // Both: the logits are fc2's arithmetic on fc2's input, likewise.
        let o = ev
            .overrides(&assignment(&[("fc1", f1), ("fc2", f2)]))
            .unwrap();
        let (out, seen) = run(&ev, &o);
        let x2 = &seen["fc2"][0];
        if a2 != GgmlDType::Q8_1 {
            let logits = by_hand(&fc2, d2, a2, x2).broadcast_add(&b2).unwrap();
            assert_bits_equal(&out[0], &logits, &format!("fc2 at {f2}"));
        }
        let kernel = candle_qmatmul(&fc2, d2, x2).broadcast_add(&b2).unwrap();
        let worst = worst_relative(&out, std::slice::from_ref(&kernel));
        assert!(
            worst < EMULATION_REL_TOL,
            "fc2 at {f2}: {worst:e} of the row's largest logit from candle's QMatMul"
        );
    }
}

#[test]
fn a_q_format_is_not_its_dequantized_weight() {
    // The kernel quantizes its input on the fly: the evaluator's quality differs from that of the
    // same weight values run in f32 (the dense fake-quantized weight), and both are small for q8_0.
    let ev = demo_evaluator(ScaleMethod::Mse);
    let demo = demo_model();
    let fc1 = WeightMatrix::from_tensor(&demo.weight("fc1").unwrap()).unwrap();
    let through_kernel = ev
        .evaluate(&assignment(&[("fc1", "q8_0")]))
        .unwrap()
        .quality;
    let dequantized = mpsearch::compress::ggml::fake_quantize(&fc1, GgmlFormat::Q8_0)
        .unwrap()
        .to_tensor(&[256, 1568])
        .unwrap();
    let batch = &ev.data().eval[0];
    let dense =
        crate::util::forward_with_weight(ev.model().as_ref(), batch, "fc1", dequantized).unwrap();
    let kernel = ev
        .model()
        .forward(
            batch,
            &ForwardCtx {
                overrides: Some(&ev.overrides(&assignment(&[("fc1", "q8_0")])).unwrap()),
                capture: None,
                timer: None,
            },
        )
        .unwrap();
    assert!(crate::util::max_abs_diff(&dense, &kernel) > 0.0);
    assert!(
        through_kernel > 0.0 && through_kernel < 1e-3,
        "{through_kernel}"
    );
}

/// Relative output error `‖QMatMul(x) − x Wᵀ‖ / ‖x Wᵀ‖` of a Gaussian `rows × cols` layer at `g`, on
/// Gaussian inputs, through the kernel the evaluator builds ([`block_kernel`]).
fn kernel_error(seed: u64, rows: usize, cols: usize, g: GgmlFormat) -> f64 {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = Normal::new(0.0f32, 1.0).unwrap();
    let w: Vec<f32> = (0..rows * cols)
        .map(|_| n.sample(&mut rng) * 0.05)
        .collect();
    let x: Vec<f32> = (0..16 * cols).map(|_| n.sample(&mut rng)).collect();
    let m = WeightMatrix::new(rows, cols, w.clone()).unwrap();
    let wt = Tensor::from_vec(w, (rows, cols), &Device::Cpu).unwrap();
    let x = Tensor::from_vec(x, (16, cols), &Device::Cpu).unwrap();
    let exact = x.matmul(&wt.t().unwrap()).unwrap();
    let got = block_kernel(&m, g).unwrap().matmul(&x).unwrap();
    let norm = |t: &Tensor| -> f64 {
        t.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64
    };
    (norm(&(got - &exact).unwrap()) / norm(&exact)).sqrt()
}

#[test]
fn block_formats_order_by_width_on_random_layers_and_on_the_demo() {
    for seed in SEEDS {
        for (rows, cols) in [(48, 256), (96, 512)] {
            let e: Vec<f64> = [GgmlFormat::Q2K, GgmlFormat::Q4K, GgmlFormat::Q8_0]
                .into_iter()
                .map(|g| kernel_error(seed, rows, cols, g))
                .collect();
            assert!(
                e[0] > e[1] && e[1] > e[2] && e[2] > 0.0,
                "seed {seed}, {rows}x{cols}: q2_k, q4_k, q8_0 errors {e:?}"
            );
        }
    }
    // The demo's fc2 (256 in-features) through the evaluator: KL to the f32 model.
    let ev = demo_evaluator(ScaleMethod::Mse);
    let kl: Vec<f64> = ["q2_k", "q4_k", "q8_0"]
        .into_iter()
        .map(|g| ev.evaluate(&assignment(&[("fc2", g)])).unwrap().quality)
        .collect();
    assert!(
        kl[0] > kl[1] && kl[1] > kl[2] && kl[2] > 0.0,
        "demo fc2 at q2_k, q4_k, q8_0: KL {kl:?}"
    );
}

/// Every output of the deployed model and of the evaluator's on the search split.
fn outputs(ev: &CandleEvaluator, o: &Overrides) -> Vec<Tensor> {
    let ctx = ForwardCtx {
        overrides: Some(o),
        capture: None,
        timer: None,
    };
    ev.data()
        .eval
        .iter()
        .map(|b: &Batch| ev.model().forward(b, &ctx).unwrap())
        .collect()
}

/// The shape of a leaf kernel's matrix.
fn shape(k: &LayerKernel) -> Vec<usize> {
    match k {
        LayerKernel::Dense(t) | LayerKernel::F16(t) => t.dims().to_vec(),
        LayerKernel::Quantized(q) => match q.as_ref() {
            QMatMul::QTensor(t) => t.shape().dims().to_vec(),
            other => panic!("a dequantized QMatMul: {other:?}"),
        },
        other => panic!("not a leaf kernel: {other:?}"),
    }
}

#[test]
fn the_deployed_model_computes_what_the_evaluator_measured() {
    let ev = demo_evaluator(ScaleMethod::Mse);
    // Integer formats (dense, with activation quantization and 2:4 computed dense): the very
    // arithmetic, bit for bit; q-formats (with kept rows and factors): candle's QMatMul deployed, its
    // arithmetic evaluated densely, equal to the order of f32 sums.
    let exact = assignment(&[
        ("conv1", "int8-sym-channel+act8-dynamic"),
        ("conv2", "int4-asym-channel+2:4"),
        ("fc1", "q8_0+channels25+rank50"),
        ("fc2", "q4_0"),
    ]);
    // Built by a second evaluator, so that nothing is shared through the kernel cache.
    let deployer = demo_evaluator(ScaleMethod::Mse);
    let deployed = deployer.deploy_overrides(&exact).unwrap();
    let evaluated = ev.overrides(&exact).unwrap();
    // Chained on-the-fly quantization: a value that the two sum orders put on either side of a Q8
    // rounding boundary takes codes one apart in the next layer (about 2.5e-4 of the values, ~10
    // of fc1's 300 × 128 intermediates here), so a few rows differ by one code's worth.
    let errors = row_errors(&outputs(&ev, &deployed), &outputs(&ev, &evaluated));
    let off = errors.iter().filter(|&&e| e >= EMULATION_REL_TOL).count();
    let worst = errors.iter().copied().fold(0.0, f32::max);
    assert!(
        off * 100 <= errors.len() * MAX_FLIPPED_ROWS_PERCENT && worst < CODE_FLIP_REL_TOL,
        "q-format and int layers, deployed vs evaluated: {off} of {} rows differ by more than \
         {EMULATION_REL_TOL:e} of their largest logit, the worst by {worst:e}",
        errors.len()
    );
    let ints = assignment(&[
        ("conv1", "int8-sym-channel+act8-dynamic"),
        ("conv2", "int4-asym-channel+2:4"),
    ]);
    for (d, e) in outputs(&ev, &deployer.deploy_overrides(&ints).unwrap())
        .iter()
        .zip(&outputs(&ev, &ev.overrides(&ints).unwrap()))
    {
        assert_bits_equal(d, e, "int layers, deployed vs evaluated");
    }
    let Some(LayerKernel::Rows { kept, out, kernel }) = &deployed["fc1"].kernel else {
        panic!(
            "channels25 deploys the kept rows: {:?}",
            deployed["fc1"].kernel
        )
    };
    assert_eq!((kept.dims(), *out), (&[192][..], 256));
    let LayerKernel::Factored { a, b } = kernel.as_ref() else {
        panic!("rank50 deploys two factors")
    };
    // k = ⌈50% · 256⌉ = 128: 192·128 + 128·1568 weights instead of 256·1568.
    assert_eq!((shape(a), shape(b)), (vec![192, 128], vec![128, 1568]));
    assert!(deployed["fc1"].kernel.as_ref().unwrap().bytes() < 256 * 1568 * 34 / 32);

    // f16 on candle's f16 matmul, and dense formats factored or on kept rows: close, not equal.
    let close = assignment(&[
        ("conv1", "f16"),
        ("conv2", "int8-sym-channel+rank50"),
        ("fc1", "f16+channels25"),
        ("fc2", "f32+rank50"),
    ]);
    let deployed = ev.deploy_overrides(&close).unwrap();
    let evaluated = ev.overrides(&close).unwrap();
    let worst = worst_relative(&outputs(&ev, &deployed), &outputs(&ev, &evaluated));
    eprintln!("f16 and factored layers: deployed vs evaluated logits differ by {worst:.2e} of the row's largest");
    assert!(
        worst > 0.0 && worst < F16_DEPLOY_REL_TOL,
        "f16 and factored layers: deployed vs evaluated logits differ by {worst} of the row's \
         largest logit (tolerance {F16_DEPLOY_REL_TOL})"
    );
    assert!(matches!(&deployed["conv1"].kernel, Some(LayerKernel::F16(w)) if w.dims() == [8, 9]));
    let Some(LayerKernel::Factored { a, b }) = &deployed["conv2"].kernel else {
        panic!("rank50 deploys two factors")
    };
    // k = ⌈50% · min(16, 72)⌉ = 8.
    assert_eq!((shape(a), shape(b)), (vec![16, 8], vec![8, 72]));
    let Some(LayerKernel::Rows { kernel, .. }) = &deployed["fc1"].kernel else {
        panic!("channels25 deploys the kept rows")
    };
    assert!(matches!(kernel.as_ref(), LayerKernel::F16(w) if w.dims() == [192, 1568]));

    // What was built, for people.
    let built: HashMap<String, String> = ev
        .describe_deployment(&exact, &ev.deploy_overrides(&exact).unwrap())
        .into_iter()
        .map(|l| (l.name, l.built))
        .collect();
    assert_eq!(
        built["fc1"],
        "192 of 256 rows: factored: QMatMul q8_0 [192x128] · QMatMul q8_0 [128x1568]; input \
         quantized on the fly to Q8_0 blocks by the kernel"
    );
    assert!(
        built["conv2"].starts_with("dense f32 conv2d [16x8x3x3]")
            && built["conv2"].contains("2:4 computed dense: candle has no sparse kernels"),
        "{}",
        built["conv2"]
    );
    assert!(built["conv1"].contains("dynamic"), "{}", built["conv1"]);
}

#[test]
fn kernels_are_memoised_by_their_real_bytes() {
    let ev = demo_evaluator(ScaleMethod::Mse);
    let a = assignment(&[("fc1", "q8_0"), ("fc2", "q4_k")]);
    let first = ev.evaluate(&a).unwrap().quality;
    let st = ev.cache().stats();
    // Q8_0: 34 bytes per 32 weights; Q4_K: 144 per 256.
    let bytes = 256 * 1568 / 32 * 34 + 10 * 256 / 256 * 144;
    assert_eq!((st.misses, st.hits, st.entries, st.bytes), (2, 0, 2, bytes));
    assert_eq!(ev.evaluate(&a).unwrap().quality, first, "deterministic");
    // The deployed model of the same choices runs the very kernels the evaluator built.
    ev.deploy_overrides(&a).unwrap();
    let st = ev.cache().stats();
    assert_eq!((st.misses, st.hits, st.entries), (2, 4, 2));

    // A budget for one of two kernels keeps the last one.
    let cache = mpsearch::compress::CompressCache::new(2_000).unwrap();
    let demo = demo_model();
    let fc2 = WeightMatrix::from_tensor(&demo.weight("fc2").unwrap()).unwrap();
    for c in ["q4_k", "q4_0"] {
        let g = choice(c).weights.ggml().unwrap();
        let k = cache
            .get_or_build("fc2", &choice(c), ScaleMethod::Mse, || {
                block_kernel(&fc2, g)
            })
            .unwrap();
        assert_eq!(k.bytes(), 10 * 256 / g.block() * g.block_bytes(), "{c}");
    }
    let st = cache.stats();
    assert_eq!(
        (st.entries, st.evictions, st.bytes),
        (1, 1, 10 * 256 / 32 * 18)
    );
    assert!(cache.contains_key(&mpsearch::compress::CacheKey::of(
        "fc2",
        &choice("q4_0"),
        ScaleMethod::Mse,
        mpsearch::compress::CacheForm::Kernel
    )));
    assert!(!cache.contains("fc2", &choice("q4_0"), ScaleMethod::Mse));
}
