//! The contract between models and everything that runs them: a [`Model`] owns its forward pass and
//! asks a [`ForwardCtx`] for each compressible layer's weight and input, so that compressed weights,
//! activation quantization and input capture work the same way in every architecture.

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::Tensor;

use super::Inventory;
use crate::data::Batch;
use crate::error::Result;
use crate::space::ActQuant;

/// How one layer runs differently from the f32 model.
#[derive(Clone, Debug, Default)]
pub struct LayerOverride {
    /// The (compressed) weight to use instead of the original, same shape.
    pub weight: Option<Tensor>,
    /// Activation quantization of the layer's input.
    pub act: ActQuant,
    /// For [`ActQuant::Int8Static`]: the input range (min, max) calibrated on the calibration data.
    pub act_range: Option<(f32, f32)>,
}

/// Per-layer overrides by layer name; layers not listed run as in the f32 model.
pub type Overrides = HashMap<String, LayerOverride>;

/// What a forward pass does besides computing the output.
#[derive(Default)]
pub struct ForwardCtx<'a> {
    pub overrides: Option<&'a Overrides>,
    /// Layers whose inputs to record, and where they go (one tensor per call, in call order).
    pub capture: Option<&'a Mutex<HashMap<String, Vec<Tensor>>>>,
}

impl ForwardCtx<'_> {
    /// The weight of `layer`: its override, or `original`.
    pub fn weight<'t>(&'t self, layer: &str, original: &'t Tensor) -> &'t Tensor {
        self.overrides
            .and_then(|o| o.get(layer))
            .and_then(|o| o.weight.as_ref())
            .unwrap_or(original)
    }

    /// The input of `layer` as the layer sees it: recorded if asked, then activation-quantized if its
    /// override says so ([`quantize_activation`](crate::compress::quantize_activation): dynamic ranges
    /// per sample — per image of a `[n, c, h, w]` feature map, per vector along the last dimension
    /// otherwise, i.e. per token of a sequence; an integer input such as token ids is an error, never
    /// cast). Models call this on every compressible layer's input, in the shape the layer applies to.
    pub fn input(&self, layer: &str, x: &Tensor) -> Result<Tensor> {
        if let Some(cap) = self.capture {
            if let Ok(mut m) = cap.lock() {
                if let Some(v) = m.get_mut(layer) {
                    v.push(x.clone());
                }
            }
        }
        match self.overrides.and_then(|o| o.get(layer)) {
            Some(o) if o.act != ActQuant::None => {
                crate::compress::quantize_activation(x, o.act, o.act_range)
            }
            _ => Ok(x.clone()),
        }
    }
}

/// A model whose forward pass the project owns.
pub trait Model: Send + Sync {
    /// Its compressible layers.
    fn inventory(&self) -> &Inventory;
    /// The original f32 weight of a compressible layer, in its stored shape.
    fn weight(&self, layer: &str) -> Result<Tensor>;
    /// Runs a batch: logits `[n, classes]` for a classifier, embeddings `[n, dim]` for an encoder.
    fn forward(&self, batch: &Batch, ctx: &ForwardCtx) -> Result<Tensor>;
    /// Bytes that identify the model's weights and architecture (hashed into fingerprints).
    fn fingerprint(&self) -> blake3::Hash;
}

/// Runs `batch` through the f32 model and returns the input every compressible layer saw, by layer name
/// (one tensor per call, in call order), as [`ForwardCtx::input`] records it.
pub fn capture_inputs(model: &dyn Model, batch: &Batch) -> Result<HashMap<String, Vec<Tensor>>> {
    let capture = Mutex::new(
        model
            .inventory()
            .layers
            .iter()
            .map(|l| (l.name.clone(), Vec::new()))
            .collect::<HashMap<_, _>>(),
    );
    let ctx = ForwardCtx {
        overrides: None,
        capture: Some(&capture),
    };
    model.forward(batch, &ctx)?;
    capture.into_inner().map_err(|_| crate::Error::Eval {
        message: "input capture was poisoned by a panic in the forward pass".into(),
    })
}
