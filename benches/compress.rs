//! Compression benchmarks on one BERT-base FFN weight (768×3072, Gaussian values):
//!
//! - `quantize_int4_asym_g32_minmax` / `_mse`: fake-quantize with min/max or MSE-clipped scales;
//! - `prune_2of4`: the 2:4 pattern (mask and zeroing);
//! - `svd_rank50`: truncated SVD keeping 50% of the rank (k = 384);
//! - `apply_int4_asym_g32_2of4_rank50`: the whole choice (factorize, prune, quantize, multiply).

use std::hint::black_box;
use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use mpsearch::compress::{
    apply_choice, prune, quantize_weight, truncated_svd, ScaleMethod, WeightMatrix,
};
use mpsearch::space::{Choice, Sparsity, WeightQuant};
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

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
