//! Tiny hand-made GGUF decoders (tests/it/tiny_gguf.rs) against the numpy reference: the paths
//! SmolLM2 does not take — `qwen2` (q/k/v biases, rope on halves, stored unpermuted), a separate
//! output head, four query heads on one key/value head, weights in f32, f16 and Q8_0 blocks.

use mpsearch::model::llama::token_batch;
use mpsearch::model::{ForwardCtx, LlamaModel, Model};

use crate::smollm2::{max_diff, reference_logits};
use crate::tiny_gguf::{self, Spec};

/// Largest |difference| allowed between our f32 logits and the reference's f64 ones (logits of a few
/// units, 2 blocks).
const MAX_LOGIT_DIFF: f32 = 1e-4;

/// Both tiny architectures, prompts of several lengths batched with padding.
pub fn match_the_numpy_reference(python: String) {
    let dir = tempfile::tempdir().unwrap();
    let prompts = vec![
        vec![5, 257, 260, 9, 100, 33, 34, 35],
        vec![7],
        vec![259, 1, 2],
    ];
    for spec in [Spec::llama(), Spec::qwen2()] {
        let path = dir.path().join(format!("{}.gguf", spec.arch));
        tiny_gguf::write_spec(&path, &spec);
        let model = LlamaModel::load(&path).unwrap();
        let ours = model
            .forward(&token_batch(&prompts).unwrap(), &ForwardCtx::default())
            .unwrap();
        let ours: Vec<Vec<f32>> = ours.to_vec2().unwrap();
        let reference = reference_logits(&python, &path, &prompts);
        let (worst, row) = max_diff(&ours, &reference);
        eprintln!("tiny {}: max |diff| {worst:.2e} (row {row})", spec.arch);
        assert!(
            worst <= MAX_LOGIT_DIFF,
            "tiny {}: max |logit difference| {worst} > {MAX_LOGIT_DIFF} at row {row}",
            spec.arch
        );
    }
}
