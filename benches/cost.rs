//! Cost-model benchmarks on a 100-layer space (25 transformer blocks of 4 linear layers, BERT-base
//! shapes, 120 choices per layer):
//!
//! - `assignment_analytic`: cost one assignment from scratch (every layer through the roofline model);
//! - `assignment_table`: cost one point through a precomputed [`CostTable`];
//! - `feasibility`: build the cost table and compute the exact reachable latency range.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use mpsearch::cost::{CostModel, CostTable, Objective};
use mpsearch::space::{file, LayerInfo, LayerKind};
use rand::{Rng, SeedableRng};

const SPACE: &str = r#"
[space]
name = "bench"
[defaults]
float = ["f32", "f16"]
bits = [8, 6, 4]
schemes = ["sym", "asym"]
granularity = ["channel", "g32", "g128"]
activations = ["none", "act8-dynamic"]
sparsity = [0.0, 0.5]
nm = ["2:4"]
rank = [1.0, 0.5]
"#;

fn layers() -> Vec<LayerInfo> {
    let mut out = Vec::new();
    for b in 0..25 {
        for (name, rows, cols) in [
            ("qkv", 2304, 768),
            ("out", 768, 768),
            ("up", 3072, 768),
            ("down", 768, 3072),
        ] {
            out.push(LayerInfo {
                name: format!("block.{b}.{name}"),
                kind: LayerKind::Linear,
                shape: vec![rows, cols],
                macs: (rows * cols) as u64,
                bias: true,
            });
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let layers = layers();
    let space = file::parse(SPACE, "bench.toml", &layers).expect("bench space");
    assert_eq!(space.layers.len(), 100);
    let model = CostModel::new(
        mpsearch::shipped::profile("cortex-a76").expect("profile"),
        1,
    )
    .expect("model");
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let point: Vec<u16> = space
        .groups
        .iter()
        .map(|g| rng.random_range(0..g.choices.len()) as u16)
        .collect();
    let assignment = space.assignment(&point);
    let table = CostTable::new(&model, &space);

    let mut g = c.benchmark_group("cost_100_layers");
    g.bench_function("assignment_analytic", |b| {
        b.iter(|| black_box(model.assignment(&layers, black_box(&assignment)).1))
    });
    g.bench_function("assignment_table", |b| {
        b.iter(|| black_box(table.cost(black_box(&point))))
    });
    g.bench_function("feasibility", |b| {
        b.iter(|| {
            black_box(CostTable::new(&model, black_box(&space)).feasibility(Objective::Latency))
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
