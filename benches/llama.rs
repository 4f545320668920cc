//! The base forward pass of a GGUF decoder: SmolLM2-135M (30 blocks, width 576, vocabulary 49152) on
//! one 64-token window, and on 8 windows batched, when scripts/fetch-smollm2.sh has fetched it
//! (`MPSEARCH_SMOLLM2` points elsewhere). Without the file it says so and measures nothing.
//!
//! `smollm2_evaluation` holds an evaluation against a base forward on the same text, side by side:
//! the base model's forward pass over the search split (4 windows of 128 tokens), and the evaluator
//! scoring llama.cpp's Q4_K_M and Q5_K_M mixes (their layers memoised, as in a search once a layer's
//! choice has been seen): the compressed forward pass plus the KL, perplexity and top-1 metrics against
//! the stored base log-probabilities. Target: an evaluation ≤ 1.3× the base forward.
//! `smollm2_evaluation_paired` times the two back to back in every iteration and prints the median
//! ratio of the pairs (the figure to quote on a shared machine), then the hit rate of the f32 tier of
//! dequantized block weights ([`mpsearch::model::DenseTier`]): 100% here, since the same assignment
//! is evaluated again and again. `MPSEARCH_F32_TIER_MB=0` measures the evaluation without the tier
//! (every weight dequantized on every product, as on a search's layers whose choice changed).

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use mpsearch::eval::{CandleEvaluator, EvalSettings, Evaluator};
use mpsearch::model::llama::token_batch;
use mpsearch::model::{ForwardCtx, LlamaModel, Model, ModelSource};
use mpsearch::space::recipe::Recipe;

/// Tokens per window.
const WINDOW: usize = 64;

fn smollm2() -> Option<PathBuf> {
    let path = match std::env::var_os("MPSEARCH_SMOLLM2") {
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("MPSEARCH_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/mpsearch")))?
            .join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    };
    path.is_file().then_some(path)
}

fn bench(c: &mut Criterion) {
    let Some(path) = smollm2() else {
        eprintln!("SmolLM2 is not fetched (bash scripts/fetch-smollm2.sh): nothing measured");
        return;
    };
    let model = LlamaModel::load(&path).expect("SmolLM2");
    let text = "It was the best of times, it was the worst of times, it was the age of wisdom, it was \
                the age of foolishness, it was the epoch of belief, it was the epoch of incredulity, it \
                was the season of Light, it was the season of Darkness, it was the spring of hope, it \
                was the winter of despair.";
    let ids = model.tokenizer().encode(text).expect("tokenize");
    assert!(ids.len() >= WINDOW, "the text is {} tokens", ids.len());
    let window = ids[..WINDOW].to_vec();
    let one = token_batch(std::slice::from_ref(&window)).expect("batch");
    let eight = token_batch(&vec![window; 8]).expect("batch");
    let ctx = ForwardCtx::default();
    let mut group = c.benchmark_group("smollm2_base_forward");
    group.sample_size(10);
    group.bench_function("1x64_tokens", |b| {
        b.iter(|| black_box(model.forward(&one, &ctx).expect("forward")))
    });
    group.bench_function("8x64_tokens", |b| {
        b.iter(|| black_box(model.forward(&eight, &ctx).expect("forward")))
    });
    group.finish();

    let (net, data) = mpsearch::eval::load(&ModelSource::Gguf(path), None).expect("SmolLM2 data");
    let search = data.eval.clone();
    let ev = CandleEvaluator::new(net.clone(), data, EvalSettings::default()).expect("evaluator");
    let layers = net.inventory().layers.clone();
    let mut group = c.benchmark_group("smollm2_evaluation");
    group.sample_size(10);
    group.bench_function("base_forward_search_split", |b| {
        b.iter(|| {
            for batch in &search {
                black_box(net.forward(batch, &ctx).expect("forward"));
            }
        })
    });
    for recipe in [Recipe::Q4KM, Recipe::Q5KM] {
        let a = recipe.assignment(&layers).expect("recipe");
        ev.evaluate(&a).expect("warm the layer cache");
        group.bench_function(format!("evaluate_{}_memoised", recipe.name()), |b| {
            b.iter(|| black_box(ev.evaluate(&a).expect("evaluate")))
        });
    }
    group.finish();

    // The ratio itself, pair by pair: each iteration times a base forward and then an evaluation,
    // back to back, so that the machine's drift (this one is shared: a base forward takes 1.5 s in
    // one minute and 2 s in the next) cancels in each pair. Criterion reports the evaluations' time;
    // the median of the pairs' ratios is printed.
    let mut group = c.benchmark_group("smollm2_evaluation_paired");
    group.sample_size(10);
    for recipe in [Recipe::Q4KM, Recipe::Q5KM] {
        let a = recipe.assignment(&layers).expect("recipe");
        let mut ratios = Vec::new();
        group.bench_function(
            format!("evaluate_{}_after_a_base_forward", recipe.name()),
            |b| {
                b.iter_custom(|iters| {
                    let mut total = std::time::Duration::ZERO;
                    for _ in 0..iters {
                        let t = std::time::Instant::now();
                        for batch in &search {
                            black_box(net.forward(batch, &ctx).expect("forward"));
                        }
                        let base = t.elapsed();
                        let t = std::time::Instant::now();
                        black_box(ev.evaluate(&a).expect("evaluate"));
                        let evaluation = t.elapsed();
                        ratios.push(evaluation.as_secs_f64() / base.as_secs_f64());
                        total += evaluation;
                    }
                    total
                })
            },
        );
        ratios.sort_by(f64::total_cmp);
        if let Some(median) = ratios.get(ratios.len() / 2) {
            eprintln!(
                "{}: evaluation / base forward, median of {} back-to-back pairs: {median:.3} (range {:.3}-{:.3})",
                recipe.name(),
                ratios.len(),
                ratios[0],
                ratios[ratios.len() - 1]
            );
        }
    }
    group.finish();
    let t = mpsearch::model::DenseTier::global().stats();
    eprintln!(
        "f32 tier: {} hits, {} misses, {} MiB held of {} MiB",
        t.hits,
        t.misses,
        t.bytes >> 20,
        t.capacity_bytes >> 20
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
