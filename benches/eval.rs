//! Evaluating a *new* assignment once the per-layer transforms are memoised, against the f32 forward
//! pass on the same data (target: ≤ 1.2×). On the demo, and on all-MiniLM-L6-v2 when
//! scripts/fetch-minilm.sh has fetched it.
//!
//! "New" means an assignment not evaluated before whose (layer, choice) pairs all are in the compressed
//! weight cache: the case a search reaches once it has seen every choice of every layer.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use mpsearch::eval::{load, CandleEvaluator, EvalData, EvalSettings, Evaluator};
use mpsearch::model::{ForwardCtx, Model, ModelSource};
use mpsearch::space::Assignment;
use rand::{Rng, SeedableRng};

/// Random assignments of the model's shipped space, all pairs warmed in the cache.
fn warmed(ev: &CandleEvaluator, space: &str, n: usize) -> Vec<Assignment> {
    let space = mpsearch::shipped::space(space, &ev.model().inventory().layers).expect("space");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let all: Vec<Assignment> = (0..n)
        .map(|_| {
            let p: Vec<u16> = space
                .groups
                .iter()
                .map(|g| rng.random_range(0..g.choices.len()) as u16)
                .collect();
            space.assignment(&p)
        })
        .collect();
    // Warm every (layer, choice) pair of the list, then shuffle pairs into new combinations.
    for a in &all {
        ev.overrides(a).expect("compress");
    }
    let mut out = Vec::new();
    for i in 0..n {
        let mut pairs: Vec<(String, mpsearch::space::Choice)> =
            all[i].iter().map(|(l, c)| (l.to_string(), *c)).collect();
        for (j, p) in pairs.iter_mut().enumerate() {
            if j % 2 == 1 {
                // Take this layer's choice from another warmed assignment.
                p.1 = *all[(i + j) % n].get(&p.0).expect("layer");
            }
        }
        out.push(Assignment::new(pairs));
    }
    out
}

fn forward_all(model: &dyn Model, data: &EvalData) {
    for b in &data.eval {
        black_box(model.forward(b, &ForwardCtx::default()).expect("forward"));
    }
}

fn bench_model(c: &mut Criterion, name: &str, source: ModelSource, space: &str, samples: usize) {
    let (model, data) = load(&source, None).expect("model");
    let model: Arc<dyn Model> = model;
    let ev = CandleEvaluator::new(model.clone(), data.clone(), EvalSettings::default())
        .expect("evaluator");
    let list = warmed(&ev, space, 16);
    let mut g = c.benchmark_group(format!("eval_{name}"));
    g.sample_size(samples);
    g.bench_function("f32_forward", |b| {
        b.iter(|| forward_all(model.as_ref(), &data))
    });
    let mut i = 0;
    g.bench_function("new_assignment_memoised", |b| {
        b.iter(|| {
            i = (i + 1) % list.len();
            black_box(ev.evaluate(&list[i]).expect("evaluate"))
        })
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    bench_model(c, "demo", ModelSource::Demo, "demo", 50);
    let minilm = std::env::var_os("MPSEARCH_MINILM")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/mpsearch/all-MiniLM-L6-v2"))
        });
    match minilm.filter(|d| d.join("model.safetensors").is_file()) {
        Some(dir) => bench_model(c, "minilm", ModelSource::Folder(dir), "bert-base", 10),
        None => eprintln!("SKIPPED eval_minilm: run scripts/fetch-minilm.sh"),
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(std::time::Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
