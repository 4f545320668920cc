//! The base forward pass of a GGUF decoder: SmolLM2-135M (30 blocks, width 576, vocabulary 49152) on
//! one 64-token window, and on 8 windows batched, when scripts/fetch-smollm2.sh has fetched it
//! (`MPSEARCH_SMOLLM2` points elsewhere). Without the file it says so and measures nothing.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use mpsearch::model::llama::token_batch;
use mpsearch::model::{ForwardCtx, LlamaModel, Model};

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
}

criterion_group!(benches, bench);
criterion_main!(benches);
