//! Tiny Llama-family GGUF files, written with candle's GGUF writer: deterministic pseudo-random
//! weights stored in several GGML types, llama.cpp's metadata keys, and a byte-level BPE vocabulary
//! (the 256 byte tokens and a few merges). Tests edit the parts before writing them to make bad files.

use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use mpsearch::model::llama::tokenizer::byte_chars;

/// The merges of the tiny vocabulary, each adding one token after the 256 byte tokens.
pub const MERGES: [(&str, &str); 5] = [
    ("a", "b"),
    ("ab", "c"),
    ("Ġ", "t"),
    ("h", "e"),
    ("Ġt", "he"),
];

/// A file's metadata, in writing order.
pub type Metadata = Vec<(String, Value)>;
/// A file's tensors, in writing order.
pub type Tensors = Vec<(String, QTensor)>;

/// What to build.
#[derive(Clone, Debug)]
pub struct Spec {
    pub arch: &'static str,
    pub blocks: usize,
    pub width: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub ffn: usize,
    /// No `output.weight`: the head is the embedding.
    pub tied: bool,
    /// q, k and v biases (as Qwen2 has).
    pub biases: bool,
    pub rope_base: f32,
    /// Added to every pseudo-random weight's phase: another seed, another model.
    pub seed: f32,
}

impl Spec {
    /// A tied `llama` model: 2 blocks, width 32, 4 heads over 2 key/value heads, MLP width 64.
    pub fn llama() -> Spec {
        Spec {
            arch: "llama",
            blocks: 2,
            width: 32,
            heads: 4,
            kv_heads: 2,
            ffn: 64,
            tied: true,
            biases: false,
            rope_base: 10_000.0,
            seed: 0.0,
        }
    }

    /// A `qwen2` model with q/k/v biases and a separate head, one key/value head for 4 query heads.
    pub fn qwen2() -> Spec {
        Spec {
            arch: "qwen2",
            kv_heads: 1,
            tied: false,
            biases: true,
            rope_base: 1_000_000.0,
            seed: 0.37,
            ..Spec::llama()
        }
    }

    pub fn vocab(&self) -> usize {
        256 + MERGES.len()
    }
}

/// Pseudo-random values in `[-scale/2, scale/2)`, reproducible from `seed` and `salt`.
pub fn values(n: usize, scale: f32, seed: f32, salt: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let phase = (i as f32 * 0.754_877_7 + salt as f32 * 0.569_840_3 + seed).fract();
            (phase - 0.5) * scale
        })
        .collect()
}

/// A tensor of `shape` stored as `dtype`.
pub fn tensor(shape: &[usize], scale: f32, seed: f32, salt: usize, dtype: GgmlDType) -> QTensor {
    let n = shape.iter().product();
    let t = Tensor::from_vec(values(n, scale, seed, salt), shape, &Device::Cpu).unwrap();
    QTensor::quantize(&t, dtype).unwrap()
}

/// Norm weights near 1.
fn norm(width: usize, seed: f32, salt: usize) -> QTensor {
    let v: Vec<f32> = values(width, 0.4, seed, salt)
        .into_iter()
        .map(|x| 1.0 + x)
        .collect();
    QTensor::quantize(
        &Tensor::from_vec(v, width, &Device::Cpu).unwrap(),
        GgmlDType::F32,
    )
    .unwrap()
}

/// The metadata and tensors of `spec`'s model (in the order a converter writes them).
pub fn parts(spec: &Spec) -> (Metadata, Tensors) {
    let a = spec.arch;
    let hd = spec.width / spec.heads;
    let chars = byte_chars();
    let mut tokens: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
    tokens.extend(MERGES.iter().map(|(l, r)| format!("{l}{r}")));
    let strings = |v: Vec<String>| Value::Array(v.into_iter().map(Value::String).collect());
    let metadata = vec![
        ("general.architecture".to_string(), Value::String(a.into())),
        ("general.name".into(), Value::String("tiny".into())),
        (format!("{a}.block_count"), Value::U32(spec.blocks as u32)),
        (format!("{a}.context_length"), Value::U32(64)),
        (
            format!("{a}.embedding_length"),
            Value::U32(spec.width as u32),
        ),
        (
            format!("{a}.feed_forward_length"),
            Value::U32(spec.ffn as u32),
        ),
        (
            format!("{a}.attention.head_count"),
            Value::U32(spec.heads as u32),
        ),
        (
            format!("{a}.attention.head_count_kv"),
            Value::U32(spec.kv_heads as u32),
        ),
        (format!("{a}.rope.freq_base"), Value::F32(spec.rope_base)),
        (
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-5),
        ),
        (format!("{a}.rope.dimension_count"), Value::U32(hd as u32)),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("gpt-2".into())),
        ("tokenizer.ggml.tokens".into(), strings(tokens)),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(vec![Value::I32(1); spec.vocab()]),
        ),
        (
            "tokenizer.ggml.merges".into(),
            strings(MERGES.iter().map(|(l, r)| format!("{l} {r}")).collect()),
        ),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
    ];
    let (w, f, s) = (spec.width, spec.ffn, spec.seed);
    let (q, kv) = (spec.heads * hd, spec.kv_heads * hd);
    let mut tensors = vec![(
        "token_embd.weight".to_string(),
        tensor(&[spec.vocab(), w], 2.0, s, 1, GgmlDType::F16),
    )];
    let mut salt = 10;
    for b in 0..spec.blocks {
        let mut add = |name: &str, t: QTensor| tensors.push((format!("blk.{b}.{name}"), t));
        salt += 10;
        add("attn_norm.weight", norm(w, s, salt));
        // Attention in f32, the MLP in Q8_0 blocks (their inputs are multiples of 32).
        add(
            "attn_q.weight",
            tensor(&[q, w], 0.6, s, salt + 1, GgmlDType::F32),
        );
        add(
            "attn_k.weight",
            tensor(&[kv, w], 0.6, s, salt + 2, GgmlDType::F32),
        );
        add(
            "attn_v.weight",
            tensor(&[kv, w], 0.6, s, salt + 3, GgmlDType::F32),
        );
        if spec.biases {
            add(
                "attn_q.bias",
                tensor(&[q], 0.4, s, salt + 4, GgmlDType::F32),
            );
            add(
                "attn_k.bias",
                tensor(&[kv], 0.4, s, salt + 5, GgmlDType::F32),
            );
            add(
                "attn_v.bias",
                tensor(&[kv], 0.4, s, salt + 6, GgmlDType::F32),
            );
        }
        add(
            "attn_output.weight",
            tensor(&[w, q], 0.6, s, salt + 7, GgmlDType::F32),
        );
        add("ffn_norm.weight", norm(w, s, salt + 8));
        add(
            "ffn_gate.weight",
            tensor(&[f, w], 0.6, s, salt + 9, GgmlDType::Q8_0),
        );
        add(
            "ffn_up.weight",
            tensor(&[f, w], 0.6, s, salt + 10, GgmlDType::Q8_0),
        );
        add(
            "ffn_down.weight",
            tensor(&[w, f], 0.4, s, salt + 11, GgmlDType::Q8_0),
        );
    }
    tensors.push(("output_norm.weight".into(), norm(w, s, 7)));
    if !spec.tied {
        tensors.push((
            "output.weight".into(),
            tensor(&[spec.vocab(), w], 1.0, s, 8, GgmlDType::Q8_0),
        ));
    }
    (metadata, tensors)
}

/// Writes a GGUF file of these parts.
pub fn write(path: &Path, metadata: &[(String, Value)], tensors: &[(String, QTensor)]) {
    let mut file = std::fs::File::create(path).unwrap();
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    candle_core::quantized::gguf_file::write(&mut file, &md, &ts).unwrap();
}

/// Writes `spec`'s model to `path`.
pub fn write_spec(path: &Path, spec: &Spec) {
    let (m, t) = parts(spec);
    write(path, &m, &t);
}
