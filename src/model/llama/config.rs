//! # A decoder's hyperparameters and tensor layout, from GGUF metadata
//!
//! [`LlamaConfig::read`] takes llama.cpp's metadata keys (`{arch}.embedding_length`,
//! `{arch}.block_count`, `{arch}.feed_forward_length`, `{arch}.attention.head_count`,
//! `{arch}.attention.head_count_kv`, `{arch}.attention.layer_norm_rms_epsilon`,
//! `{arch}.rope.freq_base`, `{arch}.rope.dimension_count`, `{arch}.context_length`, …; `{arch}` is
//! `general.architecture`) and [`LlamaConfig::check_tensors`] checks every tensor of the file against
//! them: the tensors a Llama-family decoder needs must be there with the shapes the metadata implies,
//! and a tensor it would not run is an error (its output would silently be wrong), each error naming
//! the file and the tensor.
//!
//! Tensor names are llama.cpp's: `token_embd.weight`, `blk.N.attn_norm.weight`,
//! `blk.N.attn_q|attn_k|attn_v|attn_output.weight` (and `.bias` where present, as Qwen2 has for q, k
//! and v), `blk.N.ffn_norm.weight`, `blk.N.ffn_gate|ffn_up|ffn_down.weight`, `output_norm.weight`,
//! `output.weight` (absent when the output head is tied to the embedding), and `rope_freqs.weight`
//! (Llama 3's per-frequency rope factors) where present.

use super::super::gguf::GgufFile;
use super::super::{Inventory, ModelKind};
use crate::error::Result;
use crate::space::{LayerInfo, LayerKind};

/// The architectures (`general.architecture`) the decoder runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// `llama`: Llama 1–3, SmolLM, Mistral, TinyLlama … — rope on interleaved pairs (llama.cpp's
    /// `LLAMA_ROPE_TYPE_NORM`; the converter permutes q and k rows for it).
    Llama,
    /// `qwen2`: Qwen2 / Qwen2.5 — q, k, v biases; rope on the two halves of each head
    /// (`LLAMA_ROPE_TYPE_NEOX`; q and k stored unpermuted).
    Qwen2,
}

impl Architecture {
    /// Its `general.architecture` value.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
        }
    }

    /// How rotary embeddings pair a head's dimensions.
    pub fn rope(self) -> RopeStyle {
        match self {
            Architecture::Llama => RopeStyle::Interleaved,
            Architecture::Qwen2 => RopeStyle::Halves,
        }
    }
}

/// Which dimensions of a head rotate together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs `(2i, 2i+1)` (GGUF `llama` files: their q and k rows are permuted for this).
    Interleaved,
    /// Pairs `(i, i + d/2)` (GPT-NeoX style, Hugging Face's `rotate_half`).
    Halves,
}

/// The projections of one block, by llama.cpp's tensor names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proj {
    Q,
    K,
    V,
    Output,
    Gate,
    Up,
    Down,
}

impl Proj {
    /// Every projection, in the order a block computes them.
    pub const ALL: [Proj; 7] = [
        Proj::Q,
        Proj::K,
        Proj::V,
        Proj::Output,
        Proj::Gate,
        Proj::Up,
        Proj::Down,
    ];

    /// llama.cpp's name (`attn_q`, …, `ffn_down`).
    pub fn name(self) -> &'static str {
        match self {
            Proj::Q => "attn_q",
            Proj::K => "attn_k",
            Proj::V => "attn_v",
            Proj::Output => "attn_output",
            Proj::Gate => "ffn_gate",
            Proj::Up => "ffn_up",
            Proj::Down => "ffn_down",
        }
    }

    /// The layer's name in block `block` (its tensor's name without `.weight`).
    pub fn layer(self, block: usize) -> String {
        format!("blk.{block}.{}", self.name())
    }

    /// `[out, in]` under `c`.
    pub fn shape(self, c: &LlamaConfig) -> [usize; 2] {
        let (q, kv) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
        match self {
            Proj::Q => [q, c.width],
            Proj::K | Proj::V => [kv, c.width],
            Proj::Output => [c.width, q],
            Proj::Gate | Proj::Up => [c.ffn, c.width],
            Proj::Down => [c.width, c.ffn],
        }
    }

    /// Whether a file may give it a bias (attention projections only, as llama.cpp's loaders).
    fn may_have_bias(self) -> bool {
        matches!(self, Proj::Q | Proj::K | Proj::V | Proj::Output)
    }
}

/// The embedding table's layer name.
pub const EMBEDDING: &str = "token_embd";
/// The separate output head's layer name.
pub const OUTPUT: &str = "output";

/// A Llama-family decoder's hyperparameters, read from GGUF metadata and checked against its tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub architecture: Architecture,
    /// `general.name`, if given.
    pub name: Option<String>,
    /// Hidden width (`embedding_length`).
    pub width: usize,
    pub blocks: usize,
    /// MLP hidden width (`feed_forward_length`).
    pub ffn: usize,
    pub heads: usize,
    /// Key/value heads (grouped-query attention: `heads` is a multiple of it).
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Rows of the embedding table (and of the output head).
    pub vocab: usize,
    /// Longest sequence the model was trained for (`context_length`), if given.
    pub context: Option<usize>,
    /// Rope frequency base (`rope.freq_base`, default 10 000).
    pub rope_base: f64,
    /// Positions are multiplied by this before rotating (`1 / rope.scaling.factor` for linear
    /// scaling; 1 without).
    pub rope_position_scale: f64,
    /// Whether the file has `rope_freqs.weight` (per-frequency divisors, Llama 3.1+).
    pub rope_freqs: bool,
    pub rms_eps: f64,
    /// No `output.weight`: the output head is the embedding table.
    pub tied: bool,
    /// Per block and projection (in [`Proj::ALL`] order): whether it has a bias.
    pub biases: Vec<[bool; 7]>,
}

impl LlamaConfig {
    /// Reads the hyperparameters from `file`'s metadata and checks its tensors against them.
    pub fn read(file: &GgufFile) -> Result<LlamaConfig> {
        let arch = file.string("general.architecture")?.ok_or_else(|| {
            file.error(
                "has no `general.architecture` metadata: not a llama.cpp model file (mpsearch runs \
                 Llama-family decoders: architectures `llama` and `qwen2`)",
            )
        })?;
        let architecture = match arch {
            "llama" => Architecture::Llama,
            "qwen2" => Architecture::Qwen2,
            other => {
                return Err(file.error(format!(
                    "has architecture `{other}` (general.architecture); mpsearch runs Llama-family \
                     decoders only: `llama` (Llama, SmolLM, Mistral, TinyLlama …) and `qwen2` (Qwen2, \
                     Qwen2.5)"
                )))
            }
        };
        let key = |k: &str| format!("{arch}.{k}");
        let required = |k: &str| -> Result<usize> {
            let full = key(k);
            let v = file.uint(&full)?.ok_or_else(|| {
                file.error(format!(
                    "has no `{full}` metadata, which a `{arch}` model file must have"
                ))
            })?;
            match usize::try_from(v) {
                Ok(v) if v > 0 => Ok(v),
                _ => Err(file.error(format!("metadata `{full}` is {v}; it must be at least 1"))),
            }
        };
        let optional = |k: &str| -> Result<Option<usize>> {
            let full = key(k);
            match file.uint(&full)? {
                None => Ok(None),
                Some(v) => match usize::try_from(v) {
                    Ok(v) if v > 0 => Ok(Some(v)),
                    _ => {
                        Err(file.error(format!("metadata `{full}` is {v}; it must be at least 1")))
                    }
                },
            }
        };
        if file.uint(&key("expert_count"))?.unwrap_or(0) > 0 {
            return Err(file.error(format!(
                "is a mixture-of-experts model (`{}` > 0); mpsearch runs dense decoders only",
                key("expert_count")
            )));
        }
        let width = required("embedding_length")?;
        let blocks = required("block_count")?;
        let ffn = required("feed_forward_length")?;
        let heads = required("attention.head_count")?;
        let kv_heads = optional("attention.head_count_kv")?.unwrap_or(heads);
        if heads % kv_heads != 0 {
            return Err(file.error(format!(
                "has {heads} attention heads and {kv_heads} key/value heads (`{}`): grouped-query \
                 attention needs the first to be a multiple of the second",
                key("attention.head_count_kv")
            )));
        }
        let head_dim = match optional("attention.key_length")? {
            Some(d) => d,
            None if width % heads == 0 => width / heads,
            None => {
                return Err(file.error(format!(
                    "embedding_length {width} is not a multiple of head_count {heads}, and \
                     `{}` does not give the head width",
                    key("attention.key_length")
                )))
            }
        };
        if let Some(v) = optional("attention.value_length")? {
            if v != head_dim {
                return Err(file.error(format!(
                    "has value heads of width {v} (`{}`) and key heads of width {head_dim}; the \
                     decoder needs them equal",
                    key("attention.value_length")
                )));
            }
        }
        if head_dim % 2 != 0 {
            return Err(file.error(format!(
                "has heads of odd width {head_dim}: rotary embeddings rotate pairs of dimensions"
            )));
        }
        let rope_dims = optional("rope.dimension_count")?.unwrap_or(head_dim);
        if rope_dims != head_dim {
            return Err(file.error(format!(
                "rotates {rope_dims} of each head's {head_dim} dimensions (`{}`); the decoder \
                 implements rotary embeddings over whole heads only",
                key("rope.dimension_count")
            )));
        }
        let rms_eps = file
            .float(&key("attention.layer_norm_rms_epsilon"))?
            .ok_or_else(|| {
                file.error(format!(
                    "has no `{}` metadata (the RMSNorm epsilon), which a `{arch}` model file must have",
                    key("attention.layer_norm_rms_epsilon")
                ))
            })?;
        let rope_base = file.float(&key("rope.freq_base"))?.unwrap_or(10_000.0);
        for (name, v) in [
            ("attention.layer_norm_rms_epsilon", rms_eps),
            ("rope.freq_base", rope_base),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(file.error(format!(
                    "metadata `{}` is {v}; it must be positive",
                    key(name)
                )));
            }
        }
        let rope_position_scale = rope_scaling(file, arch)?;
        let vocab = match file.tensor("token_embd.weight") {
            Some((&[rows, cols], _)) if cols == width => rows,
            Some((dims, _)) => {
                return Err(file.tensor_error(
                    "token_embd.weight",
                    format!(
                        "has shape {dims:?} (rows, columns), but the metadata implies [vocabulary, \
                         {width}] (embedding_length {width}): the tensors and the metadata disagree"
                    ),
                ))
            }
            None => {
                return Err(file.tensor_error(
                    "token_embd.weight",
                    "is missing: a decoder needs its token embedding table",
                ))
            }
        };
        if let Some(v) = optional("vocab_size")? {
            if v != vocab {
                return Err(file.tensor_error(
                    "token_embd.weight",
                    format!(
                        "has {vocab} rows, but `{}` is {v}: the tensors and the metadata disagree",
                        key("vocab_size")
                    ),
                ));
            }
        }
        let tied = file.tensor("output.weight").is_none();
        let biases = (0..blocks)
            .map(|b| {
                let mut has = [false; 7];
                for (i, p) in Proj::ALL.into_iter().enumerate() {
                    has[i] = file.tensor(&format!("{}.bias", p.layer(b))).is_some();
                }
                has
            })
            .collect();
        let config = LlamaConfig {
            architecture,
            name: file.string("general.name")?.map(str::to_string),
            width,
            blocks,
            ffn,
            heads,
            kv_heads,
            head_dim,
            vocab,
            context: optional("context_length")?,
            rope_base,
            rope_position_scale,
            rope_freqs: file.tensor("rope_freqs.weight").is_some(),
            rms_eps,
            tied,
            biases,
        };
        config.check_tensors(file)?;
        Ok(config)
    }

    /// Every tensor the decoder runs, with its expected shape, in file-independent order.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let w = self.width;
        let mut out = vec![(format!("{EMBEDDING}.weight"), vec![self.vocab, self.width])];
        for b in 0..self.blocks {
            out.push((format!("blk.{b}.attn_norm.weight"), vec![w]));
            out.push((format!("blk.{b}.ffn_norm.weight"), vec![w]));
            for (i, p) in Proj::ALL.into_iter().enumerate() {
                let shape = p.shape(self);
                out.push((format!("{}.weight", p.layer(b)), shape.to_vec()));
                if self.biases[b][i] {
                    out.push((format!("{}.bias", p.layer(b)), vec![shape[0]]));
                }
            }
        }
        out.push(("output_norm.weight".into(), vec![w]));
        if !self.tied {
            out.push((format!("{OUTPUT}.weight"), vec![self.vocab, w]));
        }
        if self.rope_freqs {
            out.push(("rope_freqs.weight".into(), vec![self.head_dim / 2]));
        }
        out
    }

    /// Checks that `file` has exactly the tensors [`Self::tensors`] lists, of those shapes.
    pub fn check_tensors(&self, file: &GgufFile) -> Result<()> {
        let expected = self.tensors();
        for (name, shape) in &expected {
            file.expect_shape(name, shape)?;
        }
        for (b, has) in self.biases.iter().enumerate() {
            for (i, p) in Proj::ALL.into_iter().enumerate() {
                if has[i] && !p.may_have_bias() {
                    return Err(file.tensor_error(
                        &format!("{}.bias", p.layer(b)),
                        "is a bias of an MLP projection; the decoder runs biases on attention \
                         projections only (as llama.cpp's llama and qwen2 loaders do)",
                    ));
                }
            }
        }
        let known: std::collections::HashSet<&str> =
            expected.iter().map(|(n, _)| n.as_str()).collect();
        let unknown: Vec<&str> = file
            .tensor_names()
            .into_iter()
            .filter(|n| !known.contains(n))
            .collect();
        if let Some(first) = unknown.first() {
            return Err(file.tensor_error(
                first,
                format!(
                    "is not a tensor of a {}-block `{}` decoder ({} such tensors{}); mpsearch would \
                     not run it, so it refuses the file rather than compute something else",
                    self.blocks,
                    self.architecture.name(),
                    unknown.len(),
                    if unknown.len() > 1 {
                        format!(", e.g. also `{}`", unknown[1])
                    } else {
                        String::new()
                    }
                ),
            ));
        }
        Ok(())
    }

    /// The compressible layers (see [`super`]'s docs for the conventions), in forward order.
    pub fn layers(&self) -> Vec<LayerInfo> {
        let table = [self.vocab, self.width];
        let table_params = (self.vocab * self.width) as u64;
        let mut out = vec![if self.tied {
            LayerInfo {
                name: EMBEDDING.into(),
                kind: LayerKind::Linear,
                shape: table.to_vec(),
                macs: table_params,
                bias: false,
            }
        } else {
            LayerInfo {
                name: EMBEDDING.into(),
                kind: LayerKind::Embedding,
                shape: table.to_vec(),
                macs: 0,
                bias: false,
            }
        }];
        for b in 0..self.blocks {
            for (i, p) in Proj::ALL.into_iter().enumerate() {
                let shape = p.shape(self);
                out.push(LayerInfo {
                    name: p.layer(b),
                    kind: LayerKind::Linear,
                    shape: shape.to_vec(),
                    macs: (shape[0] * shape[1]) as u64,
                    bias: self.biases[b][i],
                });
            }
        }
        if !self.tied {
            out.push(LayerInfo {
                name: OUTPUT.into(),
                kind: LayerKind::Linear,
                shape: table.to_vec(),
                macs: table_params,
                bias: false,
            });
        }
        out
    }

    /// The inventory of the model in `file`.
    pub fn inventory(&self, file: &GgufFile) -> Inventory {
        let path = file.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        Inventory {
            name: name
                .strip_suffix(".gguf")
                .map(str::to_string)
                .unwrap_or(name),
            kind: ModelKind::LanguageModel,
            architecture: self.architecture.name().into(),
            default_space: "llm",
            layers: self.layers(),
        }
    }
}

/// The position multiplier of `{arch}.rope.scaling.*` (llama.cpp's `rope_freq_scale`): 1 without
/// scaling, `1 / factor` for linear scaling; other scalings (YaRN, LongRoPE …) are refused.
fn rope_scaling(file: &GgufFile, arch: &str) -> Result<f64> {
    let kind = file.string(&format!("{arch}.rope.scaling.type"))?;
    let factor = match file.float(&format!("{arch}.rope.scaling.factor"))? {
        Some(f) => Some(f),
        None => file.float(&format!("{arch}.rope.scale_linear"))?,
    };
    let default = if factor.is_some() { "linear" } else { "none" };
    match kind.unwrap_or(default) {
        "none" => Ok(1.0),
        "linear" => match factor {
            None => Ok(1.0),
            Some(f) if f > 0.0 && f.is_finite() => Ok(1.0 / f),
            Some(f) => Err(file.error(format!("has rope scaling factor {f}; it must be positive"))),
        },
        other => Err(file.error(format!(
            "uses rope scaling `{other}` (`{arch}.rope.scaling.type`); the decoder implements \
             none and linear only"
        ))),
    }
}
