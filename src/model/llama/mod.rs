//! # Llama-family decoders from GGUF
//!
//! A llama.cpp GGUF file (`--model FILE.gguf`) of architecture `llama` (Llama, SmolLM, Mistral …)
//! or `qwen2` (q/k/v biases) run as a language model, with a forward pass written here on candle so
//! that every compressible layer goes through [`ForwardCtx`]. Hyperparameters come from the file's
//! metadata and are checked against its tensors ([`config`]); the tokenizer is built from the
//! metadata ([`tokenizer`](mod@tokenizer)).
//!
//! **The base model is the file's weights dequantized to f32** (SmolLM2's file stores Q4_1 and Q8_0
//! blocks): every quality figure of a compressed assignment is relative to that base, not to the
//! unquantized original the file was made from.
//!
//! The computation, llama.cpp's `llm_build_llama` / `llm_build_qwen2` without a KV cache:
//!
//! 1. `h = token_embd[ids]`;
//! 2. `block_count` × [`x = RMSNorm(h)·attn_norm`; q, k, v projections (plus their biases where
//!    the file has them); rotary embeddings on q and k with the file's frequency base (positions times
//!    the linear scaling, frequencies divided by `rope_freqs.weight` where present) — on interleaved
//!    pairs `(2i, 2i+1)` for `llama` files, whose q and k rows the converter permuted for exactly
//!    that, on halves `(i, i + d/2)` for `qwen2`; causal grouped-query attention (query head `j`
//!    reads key/value head `j / (heads / kv_heads)`), scores scaled by `1/√head_dim`;
//!    `h += attn_output(·)`; `x = RMSNorm(h)·ffn_norm`; `h += ffn_down(silu(ffn_gate(x)) ⊙
//!    ffn_up(x))`];
//! 3. `logits = output(RMSNorm(h)·output_norm)`, the output head being `output.weight`, or the
//!    embedding table itself when the file has no `output.weight` (tied).
//!
//! ## Conventions
//!
//! - **Input and output.** [`Model::forward`] takes [`Batch::Tokens`] (`ids [n, seq]`, `mask [n, seq]`,
//!   padded on the right) and returns next-token logits for **every real token**, packed:
//!   `[tokens, vocab]`, row `r` the logits after the r-th real token of the batch (sentence by
//!   sentence, position by position; padding produces no row). Each row is one next-token
//!   distribution, which is what the evaluator compares row by row.
//! - **Layers** are named as llama.cpp names their tensors, without the `.weight` suffix (as every
//!   mpsearch layer is): `token_embd`, `blk.N.attn_q`, `blk.N.attn_k`, `blk.N.attn_v`,
//!   `blk.N.attn_output`, `blk.N.ffn_gate`, `blk.N.ffn_up`, `blk.N.ffn_down`, `output`; shapes are
//!   `[out, in]` (llama.cpp prints them the other way round); MACs are per token. The norms and
//!   `rope_freqs` are never compressed (llama.cpp keeps them f32 too).
//! - **A tied head** (no `output.weight`, as SmolLM2) is one tensor in the file and one layer here:
//!   `token_embd`, of kind linear (`[vocab, width]`, `vocab·width` MACs per token: it is the output
//!   head's matrix), whose compressed values the embedding look-up also reads
//!   ([`ForwardCtx::effective_rows`]). So it takes one choice and is counted once, as llama.cpp
//!   stores and quantizes it (its quantizer gives a tied `token_embd` the output tensor's type). With a
//!   separate `output.weight`, `token_embd` is an embedding (a look-up, no MACs) and `output` a linear
//!   layer.
//! - **Inputs recorded** for a linear layer are `[tokens, in]` rows with no padding; a separate
//!   embedding's are the `[tokens]` ids.

pub mod config;
pub mod tokenizer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::forward::{ForwardCtx, Model};
use super::gguf::GgufFile;
use super::Inventory;
use crate::data::Batch;
use crate::error::{Error, Result};

pub use config::{Architecture, LlamaConfig, Proj, RopeStyle};
pub use tokenizer::GgufTokenizer;

/// Added to the attention scores of keys a query must not see (later positions, padding).
const MASKED_SCORE: f32 = f32::MIN;

/// The inventory of a GGUF decoder, read from its header only (the file is checked: truncation,
/// architecture, tensor shapes against the metadata).
pub fn inventory(path: &Path) -> Result<Inventory> {
    let file = GgufFile::open(path)?;
    let config = LlamaConfig::read(&file)?;
    Ok(config.inventory(&file))
}

/// A linear layer `y = x Wᵀ (+ b)`, `W` stored `[out, in]`.
struct Linear {
    name: String,
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    fn forward(&self, x: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        ctx.linear(&self.name, x, &self.weight, self.bias.as_ref())
    }
}

/// One decoder block.
struct Block {
    attn_norm: Tensor,
    ffn_norm: Tensor,
    /// In [`Proj::ALL`] order: q, k, v, attn_output, ffn_gate, ffn_up, ffn_down.
    proj: [Linear; 7],
}

/// Where each real token of a batch sits, computed once per forward.
struct Packing {
    n: usize,
    seq: usize,
    tokens: usize,
    /// `[T]`: row of each real token in the flattened `[n·seq]` batch.
    real: Tensor,
    /// `[n·seq]`: packed row of each batch position (0 for padding; those rows are dropped).
    unpack: Tensor,
    /// `[n, 1, groups·seq, seq]`: 0 where a query may attend to a key, [`MASKED_SCORE`] elsewhere
    /// (later positions, padding keys); the query rows of one key/value head's group stacked.
    bias: Tensor,
    /// `[T]` token ids.
    ids: Tensor,
}

/// A Llama-family decoder loaded from a GGUF file; see the module docs.
pub struct LlamaModel {
    path: PathBuf,
    config: LlamaConfig,
    inventory: Inventory,
    /// `token_embd.weight`, `[vocab, width]` (also the output head when tied).
    embedding: Tensor,
    blocks: Vec<Block>,
    output_norm: Tensor,
    /// `output.weight`, unless tied.
    output: Option<Tensor>,
    /// `rope_freqs.weight`, if the file has it.
    rope_freqs: Option<Vec<f32>>,
    tokenizer: GgufTokenizer,
    /// Original weights of the inventory's layers, by layer name.
    weights: HashMap<String, Tensor>,
    file_hash: blake3::Hash,
}

impl std::fmt::Debug for LlamaModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaModel")
            .field("path", &self.path)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A GGUF decoder's tokenizer and context length, from its header only (the file checked as
/// [`inventory`] checks it): enough to cut its evaluation text into windows before loading weights.
pub fn tokenizer(path: &Path) -> Result<(GgufTokenizer, Option<usize>)> {
    let file = GgufFile::open(path)?;
    let config = LlamaConfig::read(&file)?;
    Ok((
        GgufTokenizer::from_gguf(&file, config.vocab)?,
        config.context,
    ))
}

impl LlamaModel {
    /// Loads a GGUF decoder: checks the file (see [`inventory`]), builds its tokenizer, and reads and
    /// dequantizes every tensor to f32. Every problem is an error naming the file (and the tensor).
    pub fn load(path: &Path) -> Result<LlamaModel> {
        let file = GgufFile::open(path)?;
        let config = LlamaConfig::read(&file)?;
        let tokenizer = GgufTokenizer::from_gguf(&file, config.vocab)?;
        let mut reader = file.reader()?;
        let mut read = |name: &str, shape: &[usize]| file.read_f32(&mut reader, name, shape);
        let (w, vocab) = (config.width, config.vocab);
        let embedding = read("token_embd.weight", &[vocab, w])?;
        let mut blocks = Vec::with_capacity(config.blocks);
        for b in 0..config.blocks {
            let attn_norm = read(&format!("blk.{b}.attn_norm.weight"), &[w])?;
            let ffn_norm = read(&format!("blk.{b}.ffn_norm.weight"), &[w])?;
            let mut proj = Vec::with_capacity(7);
            for (i, p) in Proj::ALL.into_iter().enumerate() {
                let name = p.layer(b);
                let shape = p.shape(&config);
                let weight = read(&format!("{name}.weight"), &shape)?;
                let bias = if config.biases[b][i] {
                    Some(read(&format!("{name}.bias"), &shape[..1])?)
                } else {
                    None
                };
                proj.push(Linear { name, weight, bias });
            }
            let proj: [Linear; 7] = proj
                .try_into()
                .map_err(|_| file.error("internal: a block has seven projections"))?;
            blocks.push(Block {
                attn_norm,
                ffn_norm,
                proj,
            });
        }
        let output_norm = read("output_norm.weight", &[w])?;
        let output = if config.tied {
            None
        } else {
            Some(read("output.weight", &[vocab, w])?)
        };
        let rope_freqs = if config.rope_freqs {
            let f = read("rope_freqs.weight", &[config.head_dim / 2])?.to_vec1::<f32>()?;
            if let Some(bad) = f.iter().find(|v| !(**v > 0.0 && v.is_finite())) {
                return Err(file.tensor_error(
                    "rope_freqs.weight",
                    format!("holds {bad}; rope frequency factors must be positive"),
                ));
            }
            Some(f)
        } else {
            None
        };

        let inventory = config.inventory(&file);
        let mut weights = HashMap::new();
        weights.insert(config::EMBEDDING.to_string(), embedding.clone());
        if let Some(o) = &output {
            weights.insert(config::OUTPUT.to_string(), o.clone());
        }
        for b in &blocks {
            for l in &b.proj {
                weights.insert(l.name.clone(), l.weight.clone());
            }
        }
        Ok(LlamaModel {
            file_hash: hash_file(path)?,
            path: path.to_path_buf(),
            config,
            inventory,
            embedding,
            blocks,
            output_norm,
            output,
            rope_freqs,
            tokenizer,
            weights,
        })
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its hyperparameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Its tokenizer.
    pub fn tokenizer(&self) -> &GgufTokenizer {
        &self.tokenizer
    }

    /// Tokenizes texts into one batch, padded on the right with id 0 (masked).
    pub fn tokenize<S: AsRef<str>>(&self, texts: &[S]) -> Result<Batch> {
        let rows = texts
            .iter()
            .map(|t| self.tokenizer.encode(t.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        token_batch(&rows)
    }

    fn input_error(&self, message: String) -> Error {
        Error::Input {
            model: self.path.display().to_string(),
            message,
        }
    }

    /// Checks a token batch and works out where its real tokens are.
    fn pack(&self, ids: &Tensor, mask: &Tensor) -> Result<Packing> {
        if ids.rank() != 2 || ids.dims() != mask.dims() {
            return Err(self.input_error(format!(
                "token batch: ids {:?} and mask {:?} must both be [sequences, tokens]",
                ids.dims(),
                mask.dims()
            )));
        }
        let (n, seq) = ids.dims2()?;
        if let Some(limit) = self.config.context {
            if seq > limit {
                return Err(self.input_error(format!(
                    "token batch has {seq} tokens per sequence; the model was trained for at most \
                     {limit} (context_length)"
                )));
            }
        }
        let ids = ids.to_dtype(DType::U32)?.flatten_all()?.to_vec1::<u32>()?;
        let mask = mask.to_dtype(DType::U32)?.flatten_all()?.to_vec1::<u32>()?;
        let vocab = self.config.vocab as u32;
        let (mut real, mut unpack, mut tok_ids) = (Vec::new(), vec![0u32; n * seq], Vec::new());
        let mut lengths = vec![0usize; n];
        for (i, (&id, &m)) in ids.iter().zip(&mask).enumerate() {
            let (row, col) = (i / seq, i % seq);
            if m == 0 {
                continue;
            }
            if lengths[row] != col {
                return Err(self.input_error(format!(
                    "token batch row {row} has a real token at position {col} after padding: a \
                     decoder's batches are padded on the right"
                )));
            }
            if id >= vocab {
                return Err(self.input_error(format!(
                    "token id {id} is outside the vocabulary ({vocab} tokens): ids and model do not \
                     match"
                )));
            }
            lengths[row] += 1;
            unpack[i] = real.len() as u32;
            real.push(i as u32);
            tok_ids.push(id);
        }
        let groups = self.config.heads / self.config.kv_heads;
        let mut bias = vec![MASKED_SCORE; n * groups * seq * seq];
        for (row, &len) in lengths.iter().enumerate() {
            for g in 0..groups {
                for q in 0..seq {
                    let base = ((row * groups + g) * seq + q) * seq;
                    // Query q sees keys 0..=q that are real (a padded query sees the real ones).
                    for b in &mut bias[base..base + (q + 1).min(len)] {
                        *b = 0.0;
                    }
                }
            }
        }
        let dev = &Device::Cpu;
        let tokens = real.len();
        Ok(Packing {
            n,
            seq,
            tokens,
            real: Tensor::from_vec(real, tokens, dev)?,
            unpack: Tensor::from_vec(unpack, n * seq, dev)?,
            bias: Tensor::from_vec(bias, (n, 1, groups * seq, seq), dev)?,
            ids: Tensor::from_vec(tok_ids, tokens, dev)?,
        })
    }

    /// cos and sin `[seq, head_dim/2]` of positions `0..seq` (angles computed in f64).
    fn rope_tables(&self, seq: usize) -> Result<(Tensor, Tensor)> {
        let c = &self.config;
        let half = c.head_dim / 2;
        let mut cos = Vec::with_capacity(seq * half);
        let mut sin = Vec::with_capacity(seq * half);
        for pos in 0..seq {
            let p = pos as f64 * c.rope_position_scale;
            for i in 0..half {
                let mut theta = c.rope_base.powf(-2.0 * i as f64 / c.head_dim as f64);
                if let Some(f) = &self.rope_freqs {
                    theta /= f64::from(f[i]);
                }
                let (s, co) = (p * theta).sin_cos();
                cos.push(co as f32);
                sin.push(s as f32);
            }
        }
        let dev = &Device::Cpu;
        Ok((
            Tensor::from_vec(cos, (seq, half), dev)?,
            Tensor::from_vec(sin, (seq, half), dev)?,
        ))
    }

    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        Ok(match self.config.architecture.rope() {
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(x, cos, sin)?,
            RopeStyle::Halves => candle_nn::rotary_emb::rope(x, cos, sin)?,
        })
    }

    fn norm(&self, x: &Tensor, weight: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(
            x,
            weight,
            self.config.rms_eps as f32,
        )?)
    }

    /// Causal grouped-query self-attention of one block on packed `x [T, width]`: `[T, heads·d]`.
    fn attention(
        &self,
        block: &Block,
        x: &Tensor,
        p: &Packing,
        rope: &(Tensor, Tensor),
        ctx: &ForwardCtx,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (heads, kv, d) = (c.heads, c.kv_heads, c.head_dim);
        let groups = heads / kv;
        // [T, h·d] -> [n, h, seq, d]
        let split = |t: Tensor, h: usize| -> Result<Tensor> {
            Ok(t.index_select(&p.unpack, 0)?
                .reshape((p.n, p.seq, h, d))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let [q, k, v, ..] = &block.proj;
        let q = self.rope(&split(q.forward(x, ctx)?, heads)?, &rope.0, &rope.1)?;
        let k = self.rope(&split(k.forward(x, ctx)?, kv)?, &rope.0, &rope.1)?;
        let v = split(v.forward(x, ctx)?, kv)?;
        // The query heads of one key/value head, stacked: [n, kv, groups·seq, d].
        let q = q.reshape((p.n, kv, groups * p.seq, d))?;
        let scores = (q.matmul(&k.t()?)? * (1.0 / (d as f64).sqrt()))?.broadcast_add(&p.bias)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        Ok(probs
            .matmul(&v)?
            .reshape((p.n, heads, p.seq, d))?
            .transpose(1, 2)?
            .reshape((p.n * p.seq, heads * d))?
            .index_select(&p.real, 0)?)
    }

    /// The embeddings of the batch's real tokens, `[T, width]`.
    fn embed(&self, ids: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
        if self.config.tied {
            // One tensor, one layer: the look-up reads the rows of the matrix the head multiplies.
            ctx.effective_rows(config::EMBEDDING, ids, &self.embedding)
        } else {
            ctx.lookup(config::EMBEDDING, ids, &self.embedding)
        }
    }
}

/// A right-padded token batch of `rows` (mask 1 on real tokens, id 0 on padding).
pub fn token_batch(rows: &[Vec<u32>]) -> Result<Batch> {
    let seq = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * seq);
    let mut mask = Vec::with_capacity(rows.len() * seq);
    for row in rows {
        ids.extend_from_slice(row);
        ids.extend(std::iter::repeat_n(0u32, seq - row.len()));
        mask.extend(std::iter::repeat_n(1u32, row.len()));
        mask.extend(std::iter::repeat_n(0u32, seq - row.len()));
    }
    let shape = (rows.len(), seq);
    Ok(Batch::Tokens {
        ids: Tensor::from_vec(ids, shape, &Device::Cpu)?,
        mask: Tensor::from_vec(mask, shape, &Device::Cpu)?,
    })
}

impl Model for LlamaModel {
    fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    fn weight(&self, layer: &str) -> Result<Tensor> {
        self.weights
            .get(layer)
            .cloned()
            .ok_or_else(|| Error::UnknownLayer {
                model: self.path.display().to_string(),
                layer: layer.to_string(),
                known: self
                    .inventory
                    .layers
                    .iter()
                    .map(|l| l.name.clone())
                    .collect(),
            })
    }

    /// Next-token logits `[tokens, vocab]` of every real token (see the module docs).
    fn forward(&self, batch: &Batch, ctx: &ForwardCtx) -> Result<Tensor> {
        let Batch::Tokens { ids, mask } = batch else {
            return Err(
                self.input_error("is a language model: it takes token batches, not images".into())
            );
        };
        let p = self.pack(ids, mask)?;
        if p.tokens == 0 {
            return Ok(Tensor::zeros(
                (0, self.config.vocab),
                DType::F32,
                &Device::Cpu,
            )?);
        }
        let rope = self.rope_tables(p.seq)?;
        let mut h = self.embed(&p.ids, ctx)?;
        for block in &self.blocks {
            let x = self.norm(&h, &block.attn_norm)?;
            let a = self.attention(block, &x, &p, &rope, ctx)?;
            h = (h + block.proj[3].forward(&a, ctx)?)?;
            let x = self.norm(&h, &block.ffn_norm)?;
            let gate = candle_nn::ops::silu(&block.proj[4].forward(&x, ctx)?)?;
            let up = block.proj[5].forward(&x, ctx)?;
            h = (h + block.proj[6].forward(&(gate * up)?, ctx)?)?;
        }
        let x = self.norm(&h, &self.output_norm)?;
        match &self.output {
            Some(o) => ctx.linear(config::OUTPUT, &x, o, None),
            None => ctx.linear(config::EMBEDDING, &x, &self.embedding, None),
        }
    }

    /// blake3 of the GGUF file's bytes.
    fn fingerprint(&self) -> blake3::Hash {
        let mut h = blake3::Hasher::new();
        h.update(b"mpsearch llama decoder v1\0");
        h.update(self.file_hash.as_bytes());
        h.finalize()
    }
}

/// blake3 of a file's bytes.
fn hash_file(path: &Path) -> Result<blake3::Hash> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: read-only map, read once while hashing; a file truncated meanwhile by another process is
    // the hazard every loader here accepts.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let mut h = blake3::Hasher::new();
    h.update(&(map.len() as u64).to_le_bytes());
    h.update(&map);
    Ok(h.finalize())
}
