//! # Models
//!
//! Where a model comes from (`--model demo` or a Hugging Face folder) and its layer inventory, read
//! without running it; the [`Model`] trait and the architectures whose forward passes the project owns:
//! the embedded, trained demo CNN ([`DemoModel`]) and BERT-family encoders ([`bert`]).

pub mod bert;
pub mod demo;
pub mod forward;
mod inventory;

use std::path::{Path, PathBuf};

pub use bert::{BertConfig, BertEncoder};
pub use demo::DemoModel;
pub use forward::{
    capture_input_stats, capture_input_stats_with, capture_inputs, ForwardCtx, LayerKernel,
    LayerOverride, Model, Overrides,
};
pub use inventory::{read_safetensors_header, TensorEntry};

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
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelKind::Classifier => "classifier",
            ModelKind::Encoder => "encoder",
        })
    }
}

/// A model argument, resolved: `demo` is the embedded demo, anything else a folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    Demo,
    Folder(PathBuf),
}

impl ModelSource {
    /// `demo` or a path.
    pub fn parse(arg: &str) -> ModelSource {
        if arg == "demo" {
            ModelSource::Demo
        } else {
            ModelSource::Folder(PathBuf::from(arg))
        }
    }
}

/// A model's compressible layers and what it is.
#[derive(Clone, Debug)]
pub struct Inventory {
    /// `demo`, or the folder's name.
    pub name: String,
    pub kind: ModelKind,
    /// The architecture (e.g. `bert`, `demo-cnn`).
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

    /// Total MACs per sample.
    pub fn macs(&self) -> u64 {
        self.layers.iter().map(|l| l.macs).sum()
    }
}

/// Reads a model's inventory without running it.
pub fn inventory(source: &ModelSource) -> Result<Inventory> {
    match source {
        ModelSource::Demo => Ok(demo::inventory()),
        ModelSource::Folder(dir) => inventory::from_folder(dir),
    }
}

/// An error about a model file or folder.
pub(crate) fn model_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Model {
        path: path.to_path_buf(),
        message: message.into(),
    }
}
