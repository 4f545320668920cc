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

use std::hint::black_box;
use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use mpsearch::compress::{
    apply_choice, compress_with, prune, quantize_weight, truncated_svd, CompressSettings,
    InputAccumulator, InputStats, Rounding, ScaleMethod, WeightMatrix,
};
use mpsearch::space::{Choice, Sparsity, WeightQuant};
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
            black_box(prune::prune(black_box(&m), &Sparsity::NM { n: 2, m: 4 }).expect("prune"))
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
    };
    let output = CompressSettings::from(ScaleMethod::Output);
    let run = |choice: &Choice, s: &CompressSettings, h: &InputStats| {
        black_box(compress_with(black_box(&w), choice, s, Some(h)).expect("compress"))
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

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(5));
    targets = bench, rounding
}
criterion_main!(benches);
