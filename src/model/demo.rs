//! # The embedded demo: a 7-layer CNN for Fashion-MNIST
//!
//! Architecture (input 1×28×28; every convolution 3×3, stride 1, padding 1, so it keeps the size it is
//! applied at; every layer has a bias and is followed by a ReLU except fc2):
//!
//! | layer | shape | applied at | then |
//! |---|---|---|---|
//! | conv1 | 1→8 | 28×28 | 2×2 max-pool to 14×14 |
//! | conv2 | 8→16 | 14×14 | |
//! | conv3 | 16→16 | 14×14 | 2×2 max-pool to 7×7 |
//! | conv4 | 16→32 | 7×7 | |
//! | conv5 | 32→32 | 7×7 | flatten to 1568 |
//! | fc1 | 1568→256 | | |
//! | fc2 | 256→10 | | logits |
//!
//! 1.8 M multiply-accumulates per image, 1.4 M of them in the convolutions (compute-bound); 0.42 M
//! parameters, 0.40 M of them in fc1 (memory-bound at batch 1): a trade-off between weight bits,
//! sparsity and rank that a search can see. It is small so that a search of hundreds of trials takes
//! seconds on two cores; fc2's 256 in-features fit the 256-weight blocks of GGML's k-quants.
//!
//! The 2×2 max-pools are maxima over a reshaped tensor ([`max_pool2`]), not candle's `max_pool2d`,
//! whose backward in candle-core 0.11.1 scales the gradient by 1/4 (see `sensitivity::fisher`): the
//! forward is the same, and gradients (training, pruning importance, recovery) are exact.
//!
//! [`DemoModel::embedded`] loads the shipped weights (`demo.safetensors`, trained by [`train`] from
//! [`SEED`] for [`EPOCHS`] epochs on Fashion-MNIST's 60,000 training images). To regenerate them:
//! `scripts/train-demo.sh` (fetches the data set, then trains; minutes on 2 cores).

pub(crate) mod train;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use safetensors::{Dtype, SafeTensors};

pub use train::{train, Trained, EPOCHS, SEED};

use super::{ForwardCtx, Inventory, Model, ModelKind};
use crate::data::{Batch, Split, SIDE};
use crate::error::{Error, Result};
use crate::space::{LayerInfo, LayerKind};

fn layer(name: &str, kind: LayerKind, shape: &[usize], applications: u64) -> LayerInfo {
    let params: u64 = shape.iter().map(|&d| d as u64).product();
    LayerInfo {
        name: name.to_string(),
        kind,
        shape: shape.to_vec(),
        macs: params * applications,
        bias: true,
    }
}

/// The demo's layers.
pub fn inventory() -> Inventory {
    Inventory {
        name: "demo".into(),
        kind: ModelKind::Classifier,
        architecture: "demo-cnn (28x28 Fashion-MNIST)".into(),
        default_space: "demo",
        layers: vec![
            layer("conv1", LayerKind::Conv2d, &[8, 1, 3, 3], 28 * 28),
            layer("conv2", LayerKind::Conv2d, &[16, 8, 3, 3], 14 * 14),
            layer("conv3", LayerKind::Conv2d, &[16, 16, 3, 3], 14 * 14),
            layer("conv4", LayerKind::Conv2d, &[32, 16, 3, 3], 7 * 7),
            layer("conv5", LayerKind::Conv2d, &[32, 32, 3, 3], 7 * 7),
            layer("fc1", LayerKind::Linear, &[256, 1568], 1),
            layer("fc2", LayerKind::Linear, &[10, 256], 1),
        ],
    }
}

// ---- the model ----

/// What the fingerprint hashes besides the weights: the architecture and the forward's conventions.
/// Change it whenever the forward computes something else from the same weights.
pub const ARCHITECTURE_TAG: &str =
    "mpsearch demo-cnn v2 (fashion-mnist 28x28): conv3x3(1->8,pad1)+relu, maxpool2, \
     conv3x3(8->16,pad1)+relu, conv3x3(16->16,pad1)+relu, maxpool2, conv3x3(16->32,pad1)+relu, \
     conv3x3(32->32,pad1)+relu, flatten, fc(1568->256)+relu, fc(256->10)";

/// Name of the shipped weights, used in error messages.
pub const WEIGHTS_NAME: &str = "demo.safetensors";

/// The shipped weights: f32, trained by [`train`] with [`SEED`] and [`EPOCHS`].
static WEIGHTS: &[u8] = include_bytes!("demo.safetensors");

/// One layer's parameters.
#[derive(Clone, Debug)]
pub(crate) struct Params {
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
}

/// The demo CNN with its weights, on the CPU.
///
/// Its forward asks the [`ForwardCtx`] for every layer's weight and input. The *input* of a layer is
/// the tensor the layer is applied to: for a convolution its input feature map (`conv1`: the images
/// `[n, 1, 28, 28]`; `conv2`: conv1's pooled activations `[n, 8, 14, 14]`), for a linear layer its input
/// vectors (`fc1`: conv5's flattened activations `[n, 1568]`; `fc2`: `[n, 256]`).
#[derive(Clone, Debug)]
pub struct DemoModel {
    inventory: Inventory,
    /// In inventory order.
    params: Vec<Params>,
    fingerprint: blake3::Hash,
}

impl DemoModel {
    /// The shipped, trained model.
    pub fn embedded() -> Result<DemoModel> {
        DemoModel::from_safetensors(WEIGHTS, WEIGHTS_NAME)
    }

    /// A model from safetensors bytes holding exactly the f32 tensors of [`tensor_shapes`];
    /// `name` names the source in errors. A missing, extra or mis-shaped tensor is an error that names
    /// the tensor (and both shapes).
    pub fn from_safetensors(bytes: &[u8], name: &str) -> Result<DemoModel> {
        let file = SafeTensors::deserialize(bytes).map_err(|e| Error::Model {
            path: name.into(),
            message: format!("not a valid safetensors file ({e})"),
        })?;
        let expected = tensor_shapes();
        if let Some(extra) = file
            .names()
            .into_iter()
            .find(|n| !expected.iter().any(|(e, _)| e == n))
        {
            return Err(tensor_error(
                name,
                extra,
                "not a tensor of the demo architecture".into(),
            ));
        }
        let params = inventory()
            .layers
            .iter()
            .map(|l| {
                Ok(Params {
                    weight: load_f32(&file, name, &format!("{}.weight", l.name), &l.shape)?,
                    bias: load_f32(&file, name, &format!("{}.bias", l.name), &[l.shape[0]])?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        DemoModel::from_params(params)
    }

    /// A model from parameters in inventory order (their shapes already checked).
    pub(crate) fn from_params(params: Vec<Params>) -> Result<DemoModel> {
        let fingerprint = fingerprint(&params)?;
        Ok(DemoModel {
            inventory: inventory(),
            params,
            fingerprint,
        })
    }

    /// The parameters as a safetensors file (f32, names as in [`tensor_shapes`]), with one metadata
    /// entry `mpsearch` holding `note`.
    pub fn to_safetensors(&self, note: &str) -> Result<Vec<u8>> {
        let names = tensor_shapes();
        let tensors = self.params.iter().flat_map(|p| [&p.weight, &p.bias]);
        let data: Vec<(&str, &Tensor)> =
            names.iter().map(|(n, _)| n.as_str()).zip(tensors).collect();
        let meta = HashMap::from([("mpsearch".to_string(), note.to_string())]);
        safetensors::serialize(data, Some(meta)).map_err(|e| Error::Model {
            path: WEIGHTS_NAME.into(),
            message: format!("cannot serialize the weights ({e})"),
        })
    }

    /// The bias of a compressible layer (kept in f32 by every choice).
    pub fn bias(&self, layer: &str) -> Result<Tensor> {
        Ok(self.params[self.layer_index(layer)?].bias.clone())
    }

    fn layer_index(&self, layer: &str) -> Result<usize> {
        self.inventory
            .layers
            .iter()
            .position(|l| l.name == layer)
            .ok_or_else(|| Error::UnknownLayer {
                model: self.inventory.name.clone(),
                layer: layer.to_string(),
                known: self
                    .inventory
                    .layers
                    .iter()
                    .map(|l| l.name.clone())
                    .collect(),
            })
    }
}

impl Model for DemoModel {
    fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    fn weight(&self, layer: &str) -> Result<Tensor> {
        Ok(self.params[self.layer_index(layer)?].weight.clone())
    }

    fn forward(&self, batch: &Batch, ctx: &ForwardCtx) -> Result<Tensor> {
        let images = match batch {
            Batch::Images(t) => t,
            Batch::Tokens { .. } => return Err(input_error("takes images, not tokens".into())),
        };
        match images.dims() {
            [_, 1, SIDE, SIDE] if images.dtype() == DType::F32 => {
                forward(&self.params, images, ctx)
            }
            dims => Err(input_error(format!(
                "takes f32 images [n, 1, {SIDE}, {SIDE}], got {:?} {dims:?}",
                images.dtype()
            ))),
        }
    }

    fn fingerprint(&self) -> blake3::Hash {
        self.fingerprint
    }
}

/// The forward pass, shared by [`DemoModel::forward`] and [`train`]: logits `[n, 10]`.
pub(crate) fn forward(params: &[Params], x: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
    let [conv1, conv2, conv3, conv4, conv5, fc1, fc2] = params else {
        unreachable!("the demo has seven layers");
    };
    let x = max_pool2(&conv(conv1, "conv1", x, ctx)?.relu()?)?;
    let x = conv(conv2, "conv2", &x, ctx)?.relu()?;
    let x = max_pool2(&conv(conv3, "conv3", &x, ctx)?.relu()?)?;
    let x = conv(conv4, "conv4", &x, ctx)?.relu()?;
    let x = conv(conv5, "conv5", &x, ctx)?.relu()?.flatten_from(1)?;
    let x = linear(fc1, "fc1", &x, ctx)?.relu()?;
    linear(fc2, "fc2", &x, ctx)
}

/// 2×2 max-pool, stride 2, of `[n, c, h, w]` (h and w even): the maximum over each window, taken as
/// two max-reductions of `[n, c, h/2, 2, w/2, 2]`, whose backward sends the gradient to the maximum
/// (candle-core 0.11.1's `max_pool2d` backward scales it by 1/4).
pub(crate) fn max_pool2(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    Ok(x.reshape((n, c, h / 2, 2, w / 2, 2))?.max(5)?.max(3)?)
}

/// 3×3 convolution, stride 1, padding 1, plus bias.
fn conv(p: &Params, name: &str, x: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
    ctx.conv2d(name, x, &p.weight, Some(&p.bias), 1, 1)
}

/// `x Wᵀ + b`.
fn linear(p: &Params, name: &str, x: &Tensor, ctx: &ForwardCtx) -> Result<Tensor> {
    ctx.linear(name, x, &p.weight, Some(&p.bias))
}

/// Names and shapes of the stored tensors, in inventory order: `<layer>.weight`, `<layer>.bias`.
pub fn tensor_shapes() -> Vec<(String, Vec<usize>)> {
    inventory()
        .layers
        .iter()
        .flat_map(|l| {
            [
                (format!("{}.weight", l.name), l.shape.clone()),
                (format!("{}.bias", l.name), vec![l.shape[0]]),
            ]
        })
        .collect()
}

/// The f32 tensor `tensor` of `file` (named `source` in errors), which must have `shape`.
fn load_f32(file: &SafeTensors, source: &str, tensor: &str, shape: &[usize]) -> Result<Tensor> {
    let view = file
        .tensor(tensor)
        .map_err(|_| tensor_error(source, tensor, format!("missing (expected F32 {shape:?})")))?;
    if view.dtype() != Dtype::F32 {
        let message = format!("dtype F32 expected, found {:?}", view.dtype());
        return Err(tensor_error(source, tensor, message));
    }
    if view.shape() != shape {
        let message = format!("shape {shape:?} expected, found {:?}", view.shape());
        return Err(tensor_error(source, tensor, message));
    }
    let values: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

/// blake3 of [`ARCHITECTURE_TAG`] and every tensor's name, shape and little-endian f32 bytes.
fn fingerprint(params: &[Params]) -> Result<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    h.update(ARCHITECTURE_TAG.as_bytes());
    let tensors = params.iter().flat_map(|p| [&p.weight, &p.bias]);
    for ((name, shape), t) in tensor_shapes().iter().zip(tensors) {
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        for &d in shape {
            h.update(&(d as u64).to_le_bytes());
        }
        for v in t.flatten_all()?.to_vec1::<f32>()? {
            h.update(&v.to_le_bytes());
        }
    }
    Ok(h.finalize())
}

/// Top-1 accuracy of `model` on `split` (batches of 256), with `ctx` applied to every batch.
pub fn accuracy(model: &dyn Model, split: &Split, ctx: &ForwardCtx) -> Result<f64> {
    let mut correct = 0u64;
    for b in split.batches(256)? {
        let (batch, labels) = b?;
        let predicted = model.forward(&batch, ctx)?.argmax(1)?;
        correct += predicted
            .eq(&labels)?
            .to_dtype(DType::U32)?
            .sum_all()?
            .to_scalar::<u32>()? as u64;
    }
    Ok(correct as f64 / split.len().max(1) as f64)
}

fn tensor_error(model: &str, tensor: &str, message: String) -> Error {
    Error::Tensor {
        model: model.to_string(),
        tensor: tensor.to_string(),
        message,
    }
}

fn input_error(message: String) -> Error {
    Error::Input {
        model: "demo".into(),
        message,
    }
}
