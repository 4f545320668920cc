//! # Models
//!
//! Where a model comes from (`--model demo`, a Hugging Face folder, or a GGUF file) and its layer
//! inventory, read without running it; the [`Model`] trait and the architectures whose forward passes
//! the project owns: the embedded, trained demo CNN ([`DemoModel`]), BERT-family encoders ([`bert`])
//! and Llama-family decoders from GGUF files ([`llama`]).

pub mod bert;
pub mod demo;
mod emulate;
pub mod forward;
pub mod gguf;
pub mod gradients;
mod inventory;
pub mod llama;
mod q8;

use std::path::{Path, PathBuf};

pub use bert::{BertConfig, BertEncoder};
pub use demo::DemoModel;
pub use emulate::{activation_blocks, DenseTier, DenseTierStats, DENSE_TIER_BYTES};
pub use forward::{
    capture_input_stats, capture_input_stats_with, capture_inputs, run_chain, ChainConv,
    ForwardCtx, LayerKernel, LayerOverride, LayerTimes, Model, Overrides,
};
pub use inventory::{read_safetensors_header, TensorEntry};
pub use llama::{GgufTokenizer, LlamaConfig, LlamaModel};

use crate::error::{Error, Result};
use crate::space::LayerInfo;

/// What a model computes, which decides its default quality objective.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Outputs class logits.
    Classifier,
    /// Outputs embeddings (sentence encoders).
    Encoder,
    /// Outputs next-token logits for every token (decoders).
    #[serde(rename = "language-model")]
    LanguageModel,
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelKind::Classifier => "classifier",
            ModelKind::Encoder => "encoder",
            ModelKind::LanguageModel => "language-model",
        })
    }
}

/// A model argument, resolved: `demo` is the embedded demo, a path ending in `.gguf` a GGUF file,
/// anything else a folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    Demo,
    Folder(PathBuf),
    /// A llama.cpp GGUF file of a Llama-family decoder.
    Gguf(PathBuf),
}

impl ModelSource {
    /// `demo` or a path (`*.gguf`, any case, is a GGUF file).
    pub fn parse(arg: &str) -> ModelSource {
        let path = PathBuf::from(arg);
        if arg == "demo" {
            ModelSource::Demo
        } else if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            ModelSource::Gguf(path)
        } else {
            ModelSource::Folder(path)
        }
    }
}

/// A model's compressible layers and what it is.
#[derive(Clone, Debug)]
pub struct Inventory {
    /// `demo`, the folder's name, or the GGUF file's name without `.gguf`.
    pub name: String,
    pub kind: ModelKind,
    /// The architecture (e.g. `bert`, `demo-cnn`, `llama`).
    pub architecture: String,
    /// The shipped search space that fits this model.
    pub default_space: &'static str,
    pub layers: Vec<LayerInfo>,
}

impl Inventory {
    /// Total weight values of the compressible layers.
    pub fn params(&self) -> u64 {
        self.layers.iter().map(LayerInfo::params).sum()
    }

    /// Total MACs per sample (per token for sequence models).
    pub fn macs(&self) -> u64 {
        self.layers.iter().map(|l| l.macs).sum()
    }
}

/// Reads a model's inventory without running it.
pub fn inventory(source: &ModelSource) -> Result<Inventory> {
    match source {
        ModelSource::Demo => Ok(demo::inventory()),
        ModelSource::Folder(dir) => inventory::from_folder(dir),
        ModelSource::Gguf(file) => llama::inventory(file),
    }
}

/// An error about a model file or folder.
pub(crate) fn model_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Model {
        path: path.to_path_buf(),
        message: message.into(),
    }
}
