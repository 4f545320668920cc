//! Sensitivity-model benchmarks on a 100-group space (120 choices per group, a random table):
//!
//! - `predict`: the predicted quality of one point (target ≤ 5 µs);
//! - `fit`: fitting per-group scales to one measurement of every choice of every group.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use mpsearch::sensitivity::{Measurement, Predictor};
use rand::{Rng, SeedableRng};

const GROUPS: usize = 100;
const CHOICES: usize = 120;

fn bench(c: &mut Criterion) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let errors: Vec<Vec<f64>> = (0..GROUPS)
        .map(|_| (0..CHOICES).map(|_| rng.random_range(0.0..1.0)).collect())
        .collect();
    let measurements: Vec<Measurement> = (0..GROUPS)
        .flat_map(|g| {
            (0..CHOICES as u16).map(move |c| Measurement {
                group: g,
                choice: c,
                quality: 0.0,
            })
        })
        .zip(errors.iter().flatten())
        .map(|(m, e)| Measurement {
            quality: 0.3 * e,
            ..m
        })
        .collect();
    let predictor = Predictor::fit(&errors, &measurements).expect("fit");
    let point: Vec<u16> = (0..GROUPS)
        .map(|_| rng.random_range(0..CHOICES as u16))
        .collect();

    let mut g = c.benchmark_group("sensitivity_100_groups");
    g.bench_function("predict", |b| {
        b.iter(|| black_box(predictor.predict(black_box(&point))))
    });
    g.bench_function("fit", |b| {
        b.iter(|| black_box(Predictor::fit(black_box(&errors), black_box(&measurements))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
