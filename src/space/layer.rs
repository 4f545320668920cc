//! # Layers
//!
//! What the search needs to know about a compressible layer without running the model: its name, kind,
//! weight shape and multiply-accumulates per sample. `model` builds these from a model's files.

use serde::{Deserialize, Serialize};

/// The kind of a compressible layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    /// `y = W x + b`, weight `[out, in]`.
    Linear,
    /// 2-D convolution, weight `[out, in / groups, kh, kw]`.
    Conv2d,
    /// A lookup table, weight `[vocabulary, dim]`; one row is read per token.
    Embedding,
}

impl LayerKind {
    /// Whether the layer's input is integer ids (an embedding's token ids) rather than float
    /// activations: activation quantization does not apply to it (an 8-bit grid would turn ids into
    /// other ids), and search spaces refuse `act8-*` for it.
    pub fn takes_ids(self) -> bool {
        matches!(self, LayerKind::Embedding)
    }
}

impl std::fmt::Display for LayerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LayerKind::Linear => "linear",
            LayerKind::Conv2d => "conv2d",
            LayerKind::Embedding => "embedding",
        })
    }
}

/// One compressible layer of a model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// The layer's name: its weight tensor's name without the `.weight` suffix.
    pub name: String,
    pub kind: LayerKind,
    /// Weight shape as stored (see [`LayerKind`]).
    pub shape: Vec<usize>,
    /// Multiply-accumulates for one sample (one image, or one token for sequence models), dense and f32.
    pub macs: u64,
    /// Whether the layer has a bias (kept in f32 by every choice).
    pub bias: bool,
}

impl LayerInfo {
    /// Number of weight values.
    pub fn params(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }

    /// Rows of the weight seen as a matrix: output channels (vocabulary for an embedding).
    pub fn rows(&self) -> u64 {
        self.shape.first().copied().unwrap_or(1) as u64
    }

    /// Columns of the weight seen as a matrix: everything but the first dimension.
    pub fn cols(&self) -> u64 {
        self.shape.iter().skip(1).map(|&d| d as u64).product()
    }

    /// How many times the weight matrix is applied per sample: MACs / params (output pixels of a
    /// convolution, 1 for a linear layer, 0 for an embedding).
    pub fn applications(&self) -> f64 {
        match self.params() {
            0 => 0.0,
            p => self.macs as f64 / p as f64,
        }
    }

    /// Shape written as `3072x768`.
    pub fn shape_string(&self) -> String {
        self.shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x")
    }
}
