//! # BERT-family sentence encoder
//!
//! A Hugging Face BERT folder (`config.json`, `model.safetensors`, `tokenizer.json`) run as a sentence
//! encoder, with a forward pass written here on candle so that every compressible layer goes through
//! [`ForwardCtx`]: the word, position and token-type embeddings and the six linear layers of each block
//! are computed by [`ForwardCtx::lookup`] and [`ForwardCtx::linear`], which read their input through
//! [`ForwardCtx::input`].
//!
//! The computation is Hugging Face's `BertModel` followed by sentence-transformers' pooling:
//!
//! 1. embeddings: word + absolute position + token type 0, then LayerNorm;
//! 2. `num_hidden_layers` × [self-attention over the real tokens (padded keys get the most negative
//!    f32 added to their scores, as Hugging Face does), output dense + residual + LayerNorm,
//!    intermediate dense + GELU (erf form, Hugging Face's `"gelu"`), output dense + residual + LayerNorm];
//! 3. mean over the real tokens of each sentence (sentence-transformers' `Pooling` with
//!    `pooling_mode_mean_tokens`);
//! 4. L2 normalisation when the folder's `modules.json` lists a `Normalize` module (as
//!    all-MiniLM-L6-v2's does) or when the folder has no `modules.json`; a `modules.json` without
//!    `Normalize` leaves the mean unnormalised. A pooling other than mean is an error.
//!
//! Tokens are processed *packed*: every per-token layer (all linears, LayerNorms, GELU, residuals) runs
//! on the `[T, features]` matrix of the batch's `T` real tokens, and only attention scatters them into
//! `[n, seq]` form. So a linear layer's input, as [`ForwardCtx::input`] sees and records it, is
//! `[T, in_features]` with no padding rows in it, and padding never changes a sentence's embedding.
//! An embedding's input is the `[T]` u32 ids it looks up (token ids, positions, or token types).
//!
//! The BERT pooler (`pooler.dense`) and any head (`cls.*`, `classifier`) are not run, and are not in
//! the encoder's [`Inventory`]: compressing them would change nothing that is measured.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationParams};

use super::forward::{ForwardCtx, Model};
use super::{inventory, model_error, Inventory, ModelKind};
use crate::data::Batch;
use crate::error::{Error, Result};

/// Tokens per sentence after truncation, unless set with [`BertEncoder::with_max_tokens`].
pub const DEFAULT_MAX_TOKENS: usize = 128;

/// Added to the attention scores of padded keys (Hugging Face uses `torch.finfo(float32).min`).
const MASKED_SCORE: f32 = f32::MIN;
/// Smallest token count and norm divided by in pooling (sentence-transformers' clamps).
const MIN_TOKENS: f32 = 1e-9;
const MIN_NORM: f32 = 1e-12;

/// The fields of a BERT `config.json` that the forward pass uses.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct BertConfig {
    pub hidden_size: usize,
    pub num_attention_heads: usize,
    pub num_hidden_layers: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    pub vocab_size: usize,
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn default_layer_norm_eps() -> f64 {
    1e-12
}

fn default_hidden_act() -> String {
    "gelu".into()
}

fn default_type_vocab_size() -> usize {
    2
}

impl BertConfig {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<BertConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            model_error(
                path,
                format!(
                    "cannot read the model's config.json ({e}); a Hugging Face BERT folder has one"
                ),
            )
        })?;
        let config: BertConfig = serde_json::from_str(&text).map_err(|e| {
            model_error(
                path,
                format!(
                    "is not a BERT config ({e}); it needs hidden_size, num_attention_heads, num_hidden_layers, \
                     intermediate_size, max_position_embeddings and vocab_size"
                ),
            )
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |m: String| Err(model_error(path, m));
        if let Some(t) = self.model_type.as_deref() {
            if t != "bert" {
                return bad(format!(
                    "model_type is `{t}`; the BERT encoder runs `bert` models only (BERT, MiniLM, \
                     all-MiniLM-L6-v2 …), whose tensors are named as Hugging Face's BertModel names them"
                ));
            }
        }
        if self.hidden_act != "gelu" {
            return bad(format!(
                "hidden_act is `{}`; the BERT encoder implements `gelu` (the erf form) only",
                self.hidden_act
            ));
        }
        if let Some(p) = self.position_embedding_type.as_deref() {
            if p != "absolute" {
                return bad(format!(
                    "position_embedding_type is `{p}`; the BERT encoder implements `absolute` only"
                ));
            }
        }
        for (name, v) in [
            ("hidden_size", self.hidden_size),
            ("num_attention_heads", self.num_attention_heads),
            ("num_hidden_layers", self.num_hidden_layers),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("vocab_size", self.vocab_size),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            if v == 0 {
                return bad(format!("{name} is 0; it must be at least 1"));
            }
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps.is_finite()) {
            return bad(format!(
                "layer_norm_eps is {}; it must be positive",
                self.layer_norm_eps
            ));
        }
        Ok(())
    }
}

/// A linear layer `y = x Wᵀ + b` with `W` stored `[out, in]`, as Hugging Face stores it.
struct Linear {
    name: String,
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn forward(&self, x: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        ctx.linear(&self.name, x, &self.weight, Some(&self.bias))
    }
}

/// An embedding table `[rows, hidden]` looked up by `[T]` u32 ids.
struct Embedding {
    name: String,
    table: Tensor,
}

impl Embedding {
    fn forward(&self, ids: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        ctx.lookup(&self.name, ids, &self.table)
    }
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Normalises the last dimension.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(normed
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)?)
    }
}

/// One transformer block.
struct Block {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

impl Block {
    fn linears(&self) -> [&Linear; 6] {
        [
            &self.query,
            &self.key,
            &self.value,
            &self.attention_output,
            &self.intermediate,
            &self.output,
        ]
    }
}

/// Where each real token of a batch sits, computed once per forward.
struct Packing {
    n: usize,
    seq: usize,
    /// Real tokens in the batch.
    tokens: usize,
    /// `[T]`: row of each real token in the flattened `[n·seq]` batch.
    real: Tensor,
    /// `[n·seq]`: packed row of each batch position (0 for padding; those rows are masked or dropped).
    unpack: Tensor,
    /// `[n, 1, 1, seq]`: 0 for real keys, [`MASKED_SCORE`] for padding.
    key_bias: Tensor,
    /// `[T]` sentence of each real token, `[n, 1]` real tokens per sentence.
    sentence: Tensor,
    counts: Tensor,
    /// `[T]` token ids and positions.
    ids: Tensor,
    positions: Tensor,
}

/// A BERT-family sentence encoder loaded from a Hugging Face folder; see the module docs.
pub struct BertEncoder {
    folder: PathBuf,
    config: BertConfig,
    inventory: Inventory,
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    embedding_norm: LayerNorm,
    blocks: Vec<Block>,
    /// Original weights of the inventory's layers, by layer name.
    weights: HashMap<String, Tensor>,
    tokenizer: Tokenizer,
    pad_id: u32,
    max_tokens: usize,
    normalize: bool,
    files_hash: blake3::Hash,
}

impl std::fmt::Debug for BertEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertEncoder")
            .field("folder", &self.folder)
            .field("config", &self.config)
            .field("max_tokens", &self.max_tokens)
            .field("normalize", &self.normalize)
            .finish_non_exhaustive()
    }
}

impl BertEncoder {
    /// Loads a Hugging Face BERT folder: `config.json`, `model.safetensors` (or shards listed in
    /// `model.safetensors.index.json`), `tokenizer.json`, and, if present, sentence-transformers'
    /// `modules.json` and pooling config. Every problem is an error naming the file.
    pub fn load(folder: &Path) -> Result<BertEncoder> {
        if !folder.is_dir() {
            return Err(model_error(
                folder,
                "is not a folder: a BERT model is a Hugging Face folder holding config.json, model.safetensors \
                 and tokenizer.json (for all-MiniLM-L6-v2, run scripts/fetch-minilm.sh)",
            ));
        }
        let config_path = folder.join("config.json");
        let config = BertConfig::from_file(&config_path)?;
        let files = inventory::weight_files(folder)?;
        let mut weights = Weights::read(folder, &files)?;
        let (word, position, token_type, embedding_norm) = weights.embeddings(&config)?;
        let blocks = (0..config.num_hidden_layers)
            .map(|i| weights.block(&config, i))
            .collect::<Result<Vec<_>>>()?;

        let tokenizer_path = folder.join("tokenizer.json");
        let (tokenizer, pad_id) = load_tokenizer(&tokenizer_path, word.table.dim(0)?)?;
        let normalize = read_pipeline(folder)?;

        let mut layer_weights: HashMap<String, Tensor> = HashMap::new();
        for e in [&word, &position, &token_type] {
            layer_weights.insert(e.name.clone(), e.table.clone());
        }
        for b in &blocks {
            for l in b.linears() {
                layer_weights.insert(l.name.clone(), l.weight.clone());
            }
        }
        let inventory = encoder_inventory(folder, &layer_weights)?;

        let mut hashed: Vec<PathBuf> = vec![config_path];
        hashed.extend(files);
        hashed.push(tokenizer_path);
        hashed.extend(pipeline_files(folder));
        let encoder = BertEncoder {
            folder: folder.to_path_buf(),
            config,
            inventory,
            word,
            position,
            token_type,
            embedding_norm,
            blocks,
            weights: layer_weights,
            tokenizer,
            pad_id,
            max_tokens: 0,
            normalize,
            files_hash: hash_files(&hashed)?,
        };
        let default = DEFAULT_MAX_TOKENS.min(encoder.config.max_position_embeddings);
        encoder.with_max_tokens(default)
    }

    /// Truncates tokenized sentences to `max_tokens` (special tokens included): 2 ..= the model's
    /// `max_position_embeddings`. The default is [`DEFAULT_MAX_TOKENS`] (or the model's limit if lower).
    pub fn with_max_tokens(mut self, max_tokens: usize) -> Result<BertEncoder> {
        let limit = self.config.max_position_embeddings;
        if !(2..=limit).contains(&max_tokens) {
            return Err(model_error(
                &self.folder,
                format!("max_tokens {max_tokens} is out of range: 2 ..= {limit} (the model's max_position_embeddings)"),
            ));
        }
        let truncation = TruncationParams {
            max_length: max_tokens,
            ..TruncationParams::default()
        };
        self.tokenizer
            .with_truncation(Some(truncation))
            .map_err(|e| {
                model_error(
                    &self.folder.join("tokenizer.json"),
                    format!("cannot truncate to {max_tokens} tokens ({e})"),
                )
            })?;
        self.max_tokens = max_tokens;
        Ok(self)
    }

    /// The folder the model was loaded from.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// Its `config.json`.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Width of the embeddings [`Model::forward`] returns.
    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    /// Tokens per sentence after truncation.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Whether embeddings are L2-normalised (see the module docs).
    pub fn normalizes(&self) -> bool {
        self.normalize
    }

    /// Tokenizes sentences into one batch: `[CLS] … [SEP]` ids truncated to [`Self::max_tokens`],
    /// padded to the longest sentence of the batch, with mask 1 on real tokens.
    pub fn tokenize<S: AsRef<str>>(&self, sentences: &[S]) -> Result<Batch> {
        let mut rows = Vec::with_capacity(sentences.len());
        for s in sentences {
            let enc = self.tokenizer.encode(s.as_ref(), true).map_err(|e| {
                model_error(
                    &self.folder.join("tokenizer.json"),
                    format!("cannot tokenize {:?} ({e})", s.as_ref()),
                )
            })?;
            rows.push(enc.get_ids().to_vec());
        }
        let seq = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len() * seq);
        let mut mask = Vec::with_capacity(rows.len() * seq);
        for row in &rows {
            ids.extend_from_slice(row);
            ids.extend(std::iter::repeat_n(self.pad_id, seq - row.len()));
            mask.extend(std::iter::repeat_n(1u32, row.len()));
            mask.extend(std::iter::repeat_n(0u32, seq - row.len()));
        }
        let shape = (rows.len(), seq);
        Ok(Batch::Tokens {
            ids: Tensor::from_vec(ids, shape, &Device::Cpu)?,
            mask: Tensor::from_vec(mask, shape, &Device::Cpu)?,
        })
    }

    /// Tokenizes and runs sentences in batches of `batch_size`, returning `[n, hidden]` embeddings.
    pub fn embed<S: AsRef<str>>(
        &self,
        sentences: &[S],
        batch_size: usize,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let mut parts = Vec::new();
        for chunk in sentences.chunks(batch_size.max(1)) {
            parts.push(self.forward(&self.tokenize(chunk)?, ctx)?);
        }
        if parts.is_empty() {
            return Ok(Tensor::zeros(
                (0, self.hidden_size()),
                DType::F32,
                &Device::Cpu,
            )?);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// Checks a token batch and works out where its real tokens are.
    fn pack(&self, ids: &Tensor, mask: &Tensor) -> Result<Packing> {
        let bad = |m: String| Err(model_error(&self.folder, m));
        if ids.rank() != 2 || ids.dims() != mask.dims() {
            return bad(format!(
                "token batch: ids {:?} and mask {:?} must both be [sentences, tokens]",
                ids.dims(),
                mask.dims()
            ));
        }
        let (n, seq) = ids.dims2()?;
        if seq > self.config.max_position_embeddings {
            return bad(format!(
                "token batch has {seq} tokens per sentence; the model takes at most {} (max_position_embeddings)",
                self.config.max_position_embeddings
            ));
        }
        let ids = ids.to_dtype(DType::U32)?.flatten_all()?.to_vec1::<u32>()?;
        let mask = mask.to_dtype(DType::U32)?.flatten_all()?.to_vec1::<u32>()?;
        let rows = self.word.table.dim(0)? as u32;
        let (mut real, mut unpack, mut bias) =
            (Vec::new(), vec![0u32; n * seq], vec![0f32; n * seq]);
        let (mut sentence, mut counts, mut tok_ids, mut positions) =
            (Vec::new(), vec![0f32; n], Vec::new(), Vec::new());
        for (i, (&id, &m)) in ids.iter().zip(&mask).enumerate() {
            if m == 0 {
                bias[i] = MASKED_SCORE;
                continue;
            }
            if id >= rows {
                return bad(format!(
                    "token id {id} is outside the word-embedding table ({rows} rows): ids and model do not match"
                ));
            }
            unpack[i] = real.len() as u32;
            real.push(i as u32);
            sentence.push((i / seq) as u32);
            counts[i / seq] += 1.0;
            tok_ids.push(id);
            positions.push((i % seq) as u32);
        }
        let dev = &Device::Cpu;
        let tokens = real.len();
        Ok(Packing {
            n,
            seq,
            tokens,
            real: Tensor::from_vec(real, tokens, dev)?,
            unpack: Tensor::from_vec(unpack, n * seq, dev)?,
            key_bias: Tensor::from_vec(bias, (n, 1, 1, seq), dev)?,
            sentence: Tensor::from_vec(sentence, tokens, dev)?,
            counts: Tensor::from_vec(counts, (n, 1), dev)?.clamp(MIN_TOKENS, f32::MAX)?,
            ids: Tensor::from_vec(tok_ids, tokens, dev)?,
            positions: Tensor::from_vec(positions, tokens, dev)?,
        })
    }

    /// Self-attention of one block on packed hidden states `[T, hidden]`.
    fn attention(
        &self,
        block: &Block,
        h: &Tensor,
        p: &Packing,
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let heads = self.config.num_attention_heads;
        let dh = self.config.hidden_size / heads;
        // [T, hidden] -> [n, heads, seq, dh]
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.index_select(&p.unpack, 0)?
                .reshape((p.n, p.seq, heads, dh))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = split(block.query.forward(h, ctx)?)?;
        let k = split(block.key.forward(h, ctx)?)?;
        let v = split(block.value.forward(h, ctx)?)?;
        let scores =
            (q.matmul(&k.t()?)? * (1.0 / (dh as f64).sqrt()))?.broadcast_add(&p.key_bias)?;
        let probs = softmax_last(&scores)?;
        let context = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((p.n * p.seq, self.config.hidden_size))?
            .index_select(&p.real, 0)?;
        Ok(context)
    }
}

impl Model for BertEncoder {
    fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    fn weight(&self, layer: &str) -> Result<Tensor> {
        self.weights.get(layer).cloned().ok_or_else(|| {
            model_error(
                &self.folder,
                format!(
                    "has no compressible layer `{layer}` (see `mpsearch inspect --model {}`)",
                    self.folder.display()
                ),
            )
        })
    }

    fn forward(&self, batch: &Batch, ctx: &ForwardCtx) -> Result<Tensor> {
        let Batch::Tokens { ids, mask } = batch else {
            return Err(model_error(
                &self.folder,
                "is a text encoder: it takes token batches, not images",
            ));
        };
        let p = self.pack(ids, mask)?;
        let hidden = self.config.hidden_size;
        if p.tokens == 0 {
            return Ok(Tensor::zeros((p.n, hidden), DType::F32, &Device::Cpu)?);
        }
        let types = Tensor::zeros(p.tokens, DType::U32, &Device::Cpu)?;
        let e = ((self.word.forward(&p.ids, ctx)? + self.position.forward(&p.positions, ctx)?)?
            + self.token_type.forward(&types, ctx)?)?;
        let mut h = self.embedding_norm.forward(&e)?;
        for block in &self.blocks {
            let a = block
                .attention_output
                .forward(&self.attention(block, &h, &p, ctx)?, ctx)?;
            h = block.attention_norm.forward(&(a + &h)?)?;
            let i = block.intermediate.forward(&h, ctx)?.gelu_erf()?;
            let o = block.output.forward(&i, ctx)?;
            h = block.output_norm.forward(&(o + &h)?)?;
        }
        let sums = Tensor::zeros((p.n, hidden), DType::F32, &Device::Cpu)?.index_add(
            &p.sentence,
            &h,
            0,
        )?;
        let mean = sums.broadcast_div(&p.counts)?;
        if !self.normalize {
            return Ok(mean);
        }
        let norm = mean
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(MIN_NORM, f32::MAX)?;
        Ok(mean.broadcast_div(&norm)?)
    }

    /// blake3 of config.json, the safetensors bytes, tokenizer.json and the sentence-transformers
    /// pipeline files, and of the truncation length (it changes what long sentences embed to).
    fn fingerprint(&self) -> blake3::Hash {
        let mut h = blake3::Hasher::new();
        h.update(b"mpsearch bert encoder v1\0");
        h.update(self.files_hash.as_bytes());
        h.update(&(self.max_tokens as u64).to_le_bytes());
        h.finalize()
    }
}

/// Softmax over the last dimension, shifted by the row maximum.
fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let shifted = x.broadcast_sub(&x.max_keepdim(D::Minus1)?)?;
    let e = shifted.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// The tensors of a checkpoint, taken out by name with their shapes checked.
struct Weights<'a> {
    tensors: HashMap<String, (PathBuf, Tensor)>,
    folder: &'a Path,
    prefix: &'static str,
}

impl<'a> Weights<'a> {
    /// Loads every tensor of the checkpoint's files, each checked for truncation first (candle's
    /// loader gives vague errors for those), and finds whether names carry a `bert.` prefix.
    fn read(folder: &'a Path, files: &[PathBuf]) -> Result<Weights<'a>> {
        let mut tensors = HashMap::new();
        for file in files {
            inventory::read_safetensors_header(file)?;
            let loaded = candle_core::safetensors::load(file, &Device::Cpu)
                .map_err(|e| model_error(file, format!("cannot load its tensors ({e})")))?;
            for (name, t) in loaded {
                tensors.insert(name, (file.clone(), t));
            }
        }
        let prefix = if tensors.contains_key("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        Ok(Weights {
            tensors,
            folder,
            prefix,
        })
    }

    /// The f32 tensor `{prefix}{name}` of shape `shape`.
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let full = format!("{}{name}", self.prefix);
        let Some((file, t)) = self.tensors.remove(&full) else {
            return Err(model_error(
                &self.folder.join("model.safetensors"),
                format!(
                    "has no tensor `{full}` (expected shape {shape:?}); the BERT encoder reads tensors named as \
                     Hugging Face's BertModel names them, with or without a `bert.` prefix"
                ),
            ));
        };
        if t.dims() != shape {
            return Err(model_error(
                &file,
                format!(
                    "tensor `{full}` has shape {:?}, but config.json implies {shape:?}",
                    t.dims()
                ),
            ));
        }
        if !t.dtype().is_float() {
            return Err(model_error(
                &file,
                format!("tensor `{full}` is {:?}, not a float tensor", t.dtype()),
            ));
        }
        Ok(t.to_dtype(DType::F32)?)
    }

    fn linear(&mut self, layer: &str, out: usize, inp: usize) -> Result<Linear> {
        Ok(Linear {
            name: format!("{}{layer}", self.prefix),
            weight: self.take(&format!("{layer}.weight"), &[out, inp])?,
            bias: self.take(&format!("{layer}.bias"), &[out])?,
        })
    }

    fn norm(&mut self, layer: &str, width: usize, eps: f64) -> Result<LayerNorm> {
        // Some old checkpoints name LayerNorm parameters gamma/beta.
        let (w, b) = if self
            .tensors
            .contains_key(&format!("{}{layer}.gamma", self.prefix))
        {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        Ok(LayerNorm {
            weight: self.take(&format!("{layer}.{w}"), &[width])?,
            bias: self.take(&format!("{layer}.{b}"), &[width])?,
            eps,
        })
    }

    fn embedding(&mut self, layer: &str, rows: usize, width: usize) -> Result<Embedding> {
        Ok(Embedding {
            name: format!("{}{layer}", self.prefix),
            table: self.take(&format!("{layer}.weight"), &[rows, width])?,
        })
    }

    fn embeddings(
        &mut self,
        c: &BertConfig,
    ) -> Result<(Embedding, Embedding, Embedding, LayerNorm)> {
        let h = c.hidden_size;
        Ok((
            self.embedding("embeddings.word_embeddings", c.vocab_size, h)?,
            self.embedding(
                "embeddings.position_embeddings",
                c.max_position_embeddings,
                h,
            )?,
            self.embedding("embeddings.token_type_embeddings", c.type_vocab_size, h)?,
            self.norm("embeddings.LayerNorm", h, c.layer_norm_eps)?,
        ))
    }

    fn block(&mut self, c: &BertConfig, i: usize) -> Result<Block> {
        let (h, f, eps) = (c.hidden_size, c.intermediate_size, c.layer_norm_eps);
        let l = format!("encoder.layer.{i}");
        Ok(Block {
            query: self.linear(&format!("{l}.attention.self.query"), h, h)?,
            key: self.linear(&format!("{l}.attention.self.key"), h, h)?,
            value: self.linear(&format!("{l}.attention.self.value"), h, h)?,
            attention_output: self.linear(&format!("{l}.attention.output.dense"), h, h)?,
            attention_norm: self.norm(&format!("{l}.attention.output.LayerNorm"), h, eps)?,
            intermediate: self.linear(&format!("{l}.intermediate.dense"), f, h)?,
            output: self.linear(&format!("{l}.output.dense"), h, f)?,
            output_norm: self.norm(&format!("{l}.output.LayerNorm"), h, eps)?,
        })
    }
}

/// The folder's inventory (so layer names are exactly `mpsearch inspect`'s) restricted to the layers
/// the forward pass runs: no pooler, no heads.
fn encoder_inventory(folder: &Path, layers: &HashMap<String, Tensor>) -> Result<Inventory> {
    let mut inventory = inventory::from_folder(folder)?;
    inventory.layers.retain(|l| layers.contains_key(&l.name));
    inventory.kind = ModelKind::Encoder;
    inventory.architecture = "bert".into();
    inventory.default_space = "bert-base";
    let listed: HashSet<&str> = inventory.layers.iter().map(|l| l.name.as_str()).collect();
    if let Some(missing) = layers.keys().find(|n| !listed.contains(n.as_str())) {
        return Err(model_error(
            folder,
            format!("layer `{missing}` is not in the folder's inventory"),
        ));
    }
    Ok(inventory)
}

/// Loads `tokenizer.json` without its own padding, and checks that its vocabulary is the model's.
fn load_tokenizer(path: &Path, rows: usize) -> Result<(Tokenizer, u32)> {
    if !path.is_file() {
        return Err(model_error(
            path,
            "is missing: the BERT encoder tokenizes with the folder's tokenizer.json (Hugging Face tokenizers format)",
        ));
    }
    let mut tokenizer = Tokenizer::from_file(path)
        .map_err(|e| model_error(path, format!("is not a valid tokenizers file ({e})")))?;
    let vocab = tokenizer.get_vocab_size(true);
    if vocab != rows {
        return Err(model_error(
            path,
            format!(
                "does not match the model: the tokenizer has {vocab} tokens, the word-embedding table has {rows} rows; \
                 use the tokenizer.json that came with the weights"
            ),
        ));
    }
    let pad_id = tokenizer
        .get_padding()
        .map(|p| p.pad_id)
        .or_else(|| tokenizer.token_to_id("[PAD]"))
        .filter(|&id| (id as usize) < rows)
        .unwrap_or(0);
    tokenizer.with_padding(None);
    Ok((tokenizer, pad_id))
}

#[derive(Deserialize)]
struct PipelineModule {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

/// sentence-transformers' `modules.json` and the pooling config it points to, if present.
fn pipeline_files(folder: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let modules = folder.join("modules.json");
    if modules.is_file() {
        out.push(modules);
    }
    if let Some(pooling) = pooling_config_path(folder) {
        out.push(pooling);
    }
    out
}

fn read_modules(folder: &Path) -> Result<Option<Vec<PipelineModule>>> {
    let path = folder.join("modules.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let modules = serde_json::from_str(&text).map_err(|e| {
        model_error(
            &path,
            format!("is not a sentence-transformers modules list ({e})"),
        )
    })?;
    Ok(Some(modules))
}

fn pooling_config_path(folder: &Path) -> Option<PathBuf> {
    let modules = read_modules(folder).ok().flatten()?;
    let m = modules.iter().find(|m| m.kind.ends_with(".Pooling"))?;
    Some(folder.join(&m.path).join("config.json")).filter(|p| p.is_file())
}

/// Whether to normalise, from sentence-transformers' pipeline; errors for a pooling other than mean.
fn read_pipeline(folder: &Path) -> Result<bool> {
    let Some(modules) = read_modules(folder)? else {
        return Ok(true);
    };
    if let Some(path) = pooling_config_path(folder) {
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let pooling: PoolingConfig = serde_json::from_str(&text).map_err(|e| {
            model_error(
                &path,
                format!("is not a sentence-transformers pooling config ({e})"),
            )
        })?;
        let other = pooling.pooling_mode_cls_token
            || pooling.pooling_mode_max_tokens
            || pooling.pooling_mode_mean_sqrt_len_tokens;
        if !pooling.pooling_mode_mean_tokens || other {
            return Err(model_error(
                &path,
                "asks for a pooling other than the mean over tokens alone; the BERT encoder implements mean pooling only",
            ));
        }
    }
    Ok(modules.iter().any(|m| m.kind.ends_with(".Normalize")))
}

/// blake3 over the files' names and bytes.
fn hash_files(files: &[PathBuf]) -> Result<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    for path in files {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: read-only map, read once while hashing; the same hazard as the loaders above.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        h.update(name.as_bytes());
        h.update(&(map.len() as u64).to_le_bytes());
        h.update(&map);
    }
    Ok(h.finalize())
}
