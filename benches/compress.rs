//! Compression benchmarks on one BERT-base FFN weight (768×3072, Gaussian values):
//!
//! - `quantize_int4_asym_g32_minmax` / `_mse`: fake-quantize with min/max or MSE-clipped scales;
//! - `prune_2of4`: the 2:4 pattern (mask and zeroing);
//! - `svd_rank50`: truncated SVD keeping 50% of the rank (k = 384);
//! - `apply_int4_asym_g32_2of4_rank50`: the whole choice (factorize, prune, quantize, multiply).
//!
//! Rounding and clipping from input statistics (`H` of 4096 correlated inputs), group `rounding_768x3072`:
//!
//! - `rtn_int4_sym_channel_minmax`: round-to-nearest through the same entry point (the baseline);
//! - `gptq_int4_sym_channel_minmax` / `gptq_int4_asym_g32_minmax`: GPTQ with `U` (the Cholesky factor
//!   of `H⁻¹`) already prepared, as every format after a layer's first one finds it;
//! - `gptq_prepare_and_int4_sym_channel`: GPTQ on fresh statistics (the Cholesky factorizations too);
//! - `rtn_int4_sym_channel_output` / `rtn_int4_asym_g32_output`: output-error clipping (21 ratios).
//!
//! And activation fake quantization of a 512-token × 3072 input (what a BERT-base FFN output layer
//! sees for a batch of 512 tokens), one range per token:
//!
//! - `act8_dynamic_per_token`: `quantize_activation` (one pass per row, rows over threads);
//! - `act8_dynamic_per_token_candle_ops`: the same arithmetic as a chain of candle tensor operations
//!   (min/max per row, then divide, round, shift, clamp, scale): the alternative it was measured against;
//! - `act8_dynamic_per_batch_before`: the implementation before issue 10 (one range for the whole
//!   tensor, copied out to a `Vec`, one sequential pass, copied back), rebuilt here for comparison.

use std::hint::black_box;
use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use mpsearch::compress::{
    apply_choice, compress_with, prune, quantize_activation, quantize_weight, truncated_svd,
    CompressSettings, InputAccumulator, InputStats, Rounding, ScaleMethod, WeightMatrix,
};
use mpsearch::space::{ActQuant, Choice, Sparsity, WeightQuant};
use mpsearch::space::{LayerInfo, LayerKind};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

const ROWS: usize = 768;
const COLS: usize = 3072;

fn weight() -> Tensor {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let d = Normal::new(0.0f32, 0.02).expect("normal");
    let data: Vec<f32> = (0..ROWS * COLS).map(|_| d.sample(&mut rng)).collect();
    Tensor::from_vec(data, (ROWS, COLS), &Device::Cpu).expect("tensor")
}

fn bench(c: &mut Criterion) {
    let w = weight();
    let m = WeightMatrix::from_tensor(&w).expect("matrix");
    let int4: Choice = "int4-asym-g32".parse().expect("choice");
    let fmt: WeightQuant = int4.weights;
    let whole: Choice = "int4-asym-g32+2:4+rank50".parse().expect("choice");

    let mut g = c.benchmark_group("compress_768x3072");
    g.bench_function("quantize_int4_asym_g32_minmax", |b| {
        b.iter(|| {
            black_box(quantize_weight(black_box(&w), &fmt, ScaleMethod::MinMax).expect("quantize"))
        })
    });
    g.bench_function("quantize_int4_asym_g32_mse", |b| {
        b.iter(|| {
            black_box(quantize_weight(black_box(&w), &fmt, ScaleMethod::Mse).expect("quantize"))
        })
    });
    g.bench_function("prune_2of4", |b| {
        b.iter(|| {
            black_box(prune::prune(black_box(&m), &Sparsity::NM { n: 2, m: 4 }, 1).expect("prune"))
        })
    });
    g.bench_function("svd_rank50", |b| {
        b.iter(|| black_box(truncated_svd(black_box(&m), 50).expect("svd")))
    });
    g.bench_function("apply_int4_asym_g32_2of4_rank50", |b| {
        b.iter(|| {
            black_box(apply_choice(black_box(&w), &whole, ScaleMethod::MinMax).expect("apply"))
        })
    });
    g.finish();
}

/// `H` of `n` inputs of `COLS` features that share a common factor and their neighbours' signal.
fn statistics(n: usize) -> InputStats {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let d = Normal::new(0.0f32, 1.0).expect("normal");
    let z: Vec<f32> = (0..n * COLS).map(|_| d.sample(&mut rng)).collect();
    let x: Vec<f32> = (0..n * COLS)
        .map(|k| {
            let (i, j) = (k / COLS, k % COLS);
            z[k] + 0.7 * z[i * COLS + (j + 1) % COLS] + 0.8 * z[i * COLS]
        })
        .collect();
    let info = LayerInfo {
        name: "ffn".into(),
        kind: LayerKind::Linear,
        shape: vec![ROWS, COLS],
        macs: 0,
        bias: false,
    };
    let mut a = InputAccumulator::new(&info).expect("accumulator");
    a.add(&Tensor::from_vec(x, (n, COLS), &Device::Cpu).expect("tensor"))
        .expect("add");
    a.finish().expect("statistics")
}

fn rounding(c: &mut Criterion) {
    let w = weight();
    let h = statistics(4096);
    let hessian = h.hessian().expect("full H").to_owned();
    let channel: Choice = "int4-sym-channel".parse().expect("choice");
    let g32: Choice = "int4-asym-g32".parse().expect("choice");
    let rtn = CompressSettings::from(ScaleMethod::MinMax);
    let gptq = CompressSettings {
        scale: ScaleMethod::MinMax,
        rounding: Rounding::gptq(),
        ..CompressSettings::default()
    };
    let output = CompressSettings::from(ScaleMethod::Output);
    let run = |choice: &Choice, s: &CompressSettings, h: &InputStats| {
        black_box(compress_with(black_box(&w), choice, s, Some(h), None).expect("compress"))
    };
    let mut g = c.benchmark_group("rounding_768x3072");
    g.bench_function("rtn_int4_sym_channel_minmax", |b| {
        b.iter(|| run(&channel, &rtn, &h))
    });
    g.bench_function("gptq_int4_sym_channel_minmax", |b| {
        b.iter(|| run(&channel, &gptq, &h))
    });
    g.bench_function("gptq_int4_asym_g32_minmax", |b| {
        b.iter(|| run(&g32, &gptq, &h))
    });
    g.bench_function("gptq_prepare_and_int4_sym_channel", |b| {
        b.iter(|| {
            let fresh = InputStats::from_hessian(hessian.clone(), 4096).expect("statistics");
            run(&channel, &gptq, &fresh)
        })
    });
    g.bench_function("rtn_int4_sym_channel_output", |b| {
        b.iter(|| run(&channel, &output, &h))
    });
    g.bench_function("rtn_int4_asym_g32_output", |b| {
        b.iter(|| run(&g32, &output, &h))
    });
    g.finish();
}

/// Tokens of the activation benchmarks.
const TOKENS: usize = 512;

/// Per-row int8 fake quantization as a chain of candle operations (zero-width rows not handled).
fn candle_ops_per_row(x: &Tensor) -> candle_core::Result<Tensor> {
    const MAGIC: f64 = 12_582_912.0;
    let round = |t: Tensor| t.affine(1.0, MAGIC)?.affine(1.0, -MAGIC);
    let lo = x.min_keepdim(1)?.minimum(0.0)?;
    let hi = x.max_keepdim(1)?.maximum(0.0)?;
    let s = ((hi - &lo)? / 255.0)?;
    let z = round((lo.neg()? / &s)?)?.clamp(0.0, 255.0)?;
    let q = round(x.broadcast_div(&s)?)?
        .broadcast_add(&z)?
        .clamp(0.0, 255.0)?;
    q.broadcast_sub(&z)?.broadcast_mul(&s)
}

/// The former dynamic quantizer: one range for the whole tensor, one sequential pass.
fn per_batch_before(x: &Tensor) -> candle_core::Result<Tensor> {
    const MAGIC: f32 = 12_582_912.0;
    let values = x.flatten_all()?.to_vec1::<f32>()?;
    let (lo, hi) = values
        .iter()
        .fold((0f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
    let s = (hi - lo) / 255.0;
    let z = ((-lo / s + MAGIC) - MAGIC).clamp(0.0, 255.0);
    let out: Vec<f32> = values
        .iter()
        .map(|&v| {
            let t = (v / s).clamp(-z - 1.0, 256.0 - z);
            ((((t + MAGIC) - MAGIC) + z).clamp(0.0, 255.0) - z) * s
        })
        .collect();
    Tensor::from_vec(out, x.shape(), x.device())
}

fn bench_activations(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let d = Normal::new(0.0f32, 1.0).expect("normal");
    let data: Vec<f32> = (0..TOKENS * COLS).map(|_| d.sample(&mut rng)).collect();
    let x = Tensor::from_vec(data, (TOKENS, COLS), &Device::Cpu).expect("tensor");
    let mut g = c.benchmark_group("activations_512x3072");
    g.bench_function("act8_dynamic_per_token", |b| {
        b.iter(|| {
            black_box(
                quantize_activation(black_box(&x), ActQuant::Int8Dynamic, None).expect("quantize"),
            )
        })
    });
    g.bench_function("act8_dynamic_per_token_candle_ops", |b| {
        b.iter(|| black_box(candle_ops_per_row(black_box(&x)).expect("quantize")))
    });
    g.bench_function("act8_dynamic_per_batch_before", |b| {
        b.iter(|| black_box(per_batch_before(black_box(&x)).expect("quantize")))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(5));
    targets = bench, rounding, bench_activations
}
criterion_main!(benches);
