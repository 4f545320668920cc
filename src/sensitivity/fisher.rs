//! # Gradient-based importance: the diagonal empirical Fisher and first-order Taylor
//!
//! Where the model has labels (the demo classifier), the loss increase of replacing a layer's weight
//! `W` by `W′ = W + ΔW` can be estimated from gradients of the calibration loss, without running the
//! compressed model:
//!
//! ```text
//! L(W′) − L(W)  ≈  Σ g ⊙ ΔW  +  ½ Σ F ⊙ ΔW²        (first order + diagonal second order)
//! ```
//!
//! with `g` the mean gradient of the loss and `F` the diagonal of the empirical Fisher, the usual
//! stand-in for the Hessian's diagonal (Optimal Brain Damage). At a trained model `g ≈ 0`, so the
//! quadratic term ([`FisherDiagonal::taylor_drop`]) is the one that ranks compression choices; the
//! first-order term ([`FisherDiagonal::first_order`]) is kept for models away from a minimum and for
//! checking the gradients.
//!
//! ## How `F` is estimated
//!
//! [`FisherDiagonal::estimate`] splits every calibration batch into chunks of `chunk` samples (the
//! last chunk of a batch may be smaller). For each chunk `c` it computes `L_c`, the mean cross-entropy
//! of the chunk's logits against its labels, and its gradient `g_c = ∂L_c/∂W` for every compressible
//! layer by candle's backprop: the forward runs with every layer's weight overridden by a
//! [`candle_core::Var`]. Then, with `n_c` the chunk's size and `N = Σ n_c`,
//!
//! ```text
//! F = Σ_c n_c g_c² / N          g = Σ_c n_c g_c / N
//! ```
//!
//! — the sample-weighted means over chunks (plain means when the chunks are equal). `g` is exactly the
//! gradient of the mean loss over all samples, whatever the chunk size. `F` depends on it: with
//! `chunk = 1` it is the per-sample empirical Fisher `mean_i g_i²`; with larger chunks the per-sample
//! noise averages out inside a chunk and `F` shrinks towards `g²` (for `chunk = N` it *is* `g²`, which
//! is ≈ 0 at a trained model and useless as a curvature).
//!
//! **Default: [`DEFAULT_CHUNK`] = 1**, the per-sample empirical Fisher, the quantity Optimal Brain
//! Damage and HAWQ-style Fisher criteria use. It costs one backward pass per calibration sample, which
//! on the demo (180 images, a 4-layer CNN) is well under a second; for larger models a chunk of a few
//! samples trades some of the estimate's fidelity for fewer passes.
//!
//! ## candle's max-pool backward
//!
//! candle-core 0.11.1 (`backprop.rs`, `Op::MaxPool2D`) multiplies the incoming gradient by the
//! *share* of maxima in each pooling window (`avg_pool` of the max mask: 1/4 for a 2×2 window with
//! one maximum) where it should divide by their *number*, so every layer before a `max_pool2d` would
//! get its gradient scaled by 1/4 per pool. The demo pools with max-reductions instead
//! (`model::demo::max_pool2`), whose backward is exact; a test holds every demo layer's gradient
//! against central finite differences.
//!
//! ## References
//!
//! - Y. LeCun, J. Denker, S. Solla, "Optimal Brain Damage", NIPS 1990 (the diagonal quadratic
//!   saliency `½ Σ h_kk ΔW_k²`).
//! - P. Molchanov et al., "Importance Estimation for Neural Network Pruning", CVPR 2019 (first-order
//!   Taylor importance from gradients).
//! - Z. Dong et al., "HAWQ-V2", NeurIPS 2020; F. Kunstner et al., "Limitations of the empirical Fisher
//!   approximation for natural gradient descent", NeurIPS 2019 (what the empirical Fisher is and is
//!   not).

use candle_core::{DType, Tensor};

use crate::compress::ScaleMethod;
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::model::gradients::{chunk_gradients, CalibrationLoss};
use crate::model::Model;
use crate::space::{LayerInfo, SearchSpace};

/// The chunk size [`FisherDiagonal::estimate`] is meant to be called with unless there is a reason not
/// to: 1, the per-sample empirical Fisher (see the module docs).
pub const DEFAULT_CHUNK: usize = 1;

/// One layer's gradient statistics, flattened in the weight's row-major order, in f64.
#[derive(Clone, Debug)]
struct LayerFisher {
    info: LayerInfo,
    weight: Vec<f64>,
    /// Diagonal empirical Fisher `F`.
    fisher: Vec<f64>,
    /// Mean gradient `g` of the loss.
    grad: Vec<f64>,
}

/// The diagonal empirical Fisher and the mean loss gradient of every compressible layer of a model,
/// from labelled calibration data.
#[derive(Clone, Debug)]
pub struct FisherDiagonal {
    /// In inventory order.
    layers: Vec<LayerFisher>,
    /// Samples the estimate was taken over.
    samples: usize,
    /// Backward passes it took.
    chunks: usize,
}

impl FisherDiagonal {
    /// Estimates `F` and `g` for every compressible layer of `model` (a classifier: logits `[n, k]`)
    /// from `batches` of `(input, labels [n] u32)`, with the loss gradient taken per chunk of `chunk`
    /// samples (see the module docs; [`DEFAULT_CHUNK`] is 1). `chunk` 0, a batch whose labels do not
    /// match its size, or no samples at all are errors.
    pub fn estimate(
        model: &dyn Model,
        batches: &[(Batch, Tensor)],
        chunk: usize,
    ) -> Result<FisherDiagonal> {
        if chunk == 0 {
            return Err(Error::sensitivity("fisher: chunk 0 is outside 1.."));
        }
        let layers = &model.inventory().layers;
        let weights: Vec<Tensor> = layers
            .iter()
            .map(|l| model.weight(&l.name))
            .collect::<Result<_>>()?;
        let (inputs, labels): (Vec<Batch>, Vec<Tensor>) = batches.iter().cloned().unzip();
        let mut sums = GradientSums::new(layers);
        let (samples, chunks) = chunk_gradients(
            model,
            &inputs,
            CalibrationLoss::CrossEntropy(&labels),
            chunk,
            &mut |i, g, size| {
                sums.add(i, g, size);
                Ok(())
            },
            &mut |_, _| {},
        )
        .map_err(|e| match e {
            Error::Eval { message } => Error::sensitivity(format!(
                "fisher: {}",
                message.trim_start_matches("gradients: ")
            )),
            e => e,
        })?;
        sums.samples = samples;
        sums.chunks = chunks;
        sums.finish(layers, weights)
    }

    /// The layers, in inventory order.
    pub fn layers(&self) -> impl Iterator<Item = &LayerInfo> {
        self.layers.iter().map(|l| &l.info)
    }

    /// Samples the estimate was taken over.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Backward passes the estimate took (one per chunk).
    pub fn chunks(&self) -> usize {
        self.chunks
    }

    /// The diagonal Fisher `F` of `layer`, flattened in the weight's row-major order.
    pub fn fisher(&self, layer: &str) -> Result<&[f64]> {
        Ok(&self.layer(layer)?.fisher)
    }

    /// The mean loss gradient `g` of `layer`, flattened in the weight's row-major order.
    pub fn gradient(&self, layer: &str) -> Result<&[f64]> {
        Ok(&self.layer(layer)?.grad)
    }

    /// The Fisher (Optimal Brain Damage) estimate of the loss increase of replacing `layer`'s weight by
    /// `w_prime` (same shape): `½ Σ F ⊙ (W − W′)²`. Never negative; 0 for the original weight.
    pub fn taylor_drop(&self, layer: &str, w_prime: &Tensor) -> Result<f64> {
        self.layer(layer)?.taylor_drop(w_prime)
    }

    /// The first-order Taylor estimate of the loss change of replacing `layer`'s weight by `w_prime`
    /// (same shape): `Σ g ⊙ (W′ − W)`. Signed; ≈ 0 at a trained model.
    pub fn first_order(&self, layer: &str, w_prime: &Tensor) -> Result<f64> {
        let l = self.layer(layer)?;
        let w2 = l.checked(w_prime)?;
        Ok((l.grad.iter().zip(&l.weight).zip(&w2))
            .map(|((g, a), b)| g * (b - a))
            .sum())
    }

    fn layer(&self, name: &str) -> Result<&LayerFisher> {
        self.layers
            .iter()
            .find(|l| l.info.name == name)
            .ok_or_else(|| Error::sensitivity(format!("no Fisher estimate for layer `{name}`")))
    }
}

/// The running sums of [`FisherDiagonal::estimate`]: per layer, the chunk gradients' squares and the
/// gradients, each weighted by the chunk's size.
struct GradientSums {
    fisher: Vec<Vec<f64>>,
    grad: Vec<Vec<f64>>,
    samples: usize,
    chunks: usize,
}

impl GradientSums {
    fn new(layers: &[LayerInfo]) -> GradientSums {
        let sizes: Vec<usize> = layers
            .iter()
            .map(LayerInfo::params)
            .map(|p| p as usize)
            .collect();
        GradientSums {
            fisher: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            grad: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            samples: 0,
            chunks: 0,
        }
    }

    /// Adds layer `i`'s mean-loss gradient over one chunk of `size` samples (a layer the loss does
    /// not reach gets no call: it adds zeros).
    fn add(&mut self, i: usize, gc: &[f32], size: usize) {
        let w = size as f64;
        for ((f, g), &x) in self.fisher[i].iter_mut().zip(&mut self.grad[i]).zip(gc) {
            let x = f64::from(x);
            *f += w * x * x;
            *g += w * x;
        }
    }

    /// The estimate: the sums over the samples, with each layer's `weights` (in `layers`' order).
    fn finish(self, layers: &[LayerInfo], weights: Vec<Tensor>) -> Result<FisherDiagonal> {
        let GradientSums {
            fisher,
            grad,
            samples,
            chunks,
        } = self;
        if samples == 0 {
            return Err(Error::sensitivity(
                "fisher: no calibration samples: the Fisher cannot be estimated",
            ));
        }
        let norm = 1.0 / samples as f64;
        let layers = layers
            .iter()
            .zip(weights)
            .zip(fisher.into_iter().zip(grad))
            .map(|((info, w), (mut f, mut g))| {
                f.iter_mut().chain(g.iter_mut()).for_each(|x| *x *= norm);
                Ok(LayerFisher {
                    info: info.clone(),
                    weight: flat_f64(&w)?,
                    fisher: f,
                    grad: g,
                })
            })
            .collect::<Result<_>>()?;
        Ok(FisherDiagonal {
            layers,
            samples,
            chunks,
        })
    }
}

impl LayerFisher {
    /// `½ Σ F ⊙ (W − W′)²`.
    fn taylor_drop(&self, w_prime: &Tensor) -> Result<f64> {
        let w2 = self.checked(w_prime)?;
        let sum: f64 = (self.fisher.iter().zip(&self.weight).zip(&w2))
            .map(|((f, a), b)| f * (a - b) * (a - b))
            .sum();
        Ok(0.5 * sum)
    }

    /// `w_prime` flattened, after checking it has the layer's shape.
    fn checked(&self, w_prime: &Tensor) -> Result<Vec<f64>> {
        if w_prime.dims() != self.info.shape.as_slice() {
            return Err(Error::sensitivity(format!(
                "layer `{}`: the compressed weight has shape {:?}, the layer's is {:?}",
                self.info.name,
                w_prime.dims(),
                self.info.shape
            )));
        }
        flat_f64(w_prime)
    }

    /// The original weight, f32, in the layer's shape.
    fn weight_tensor(&self) -> Result<Tensor> {
        let data: Vec<f32> = self.weight.iter().map(|&v| v as f32).collect();
        Ok(Tensor::from_vec(
            data,
            self.info.shape.as_slice(),
            &candle_core::Device::Cpu,
        )?)
    }
}

fn flat_f64(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
}

/// The Fisher error of every (group, choice) of `space`: the sum over the group's layers of their
/// [`FisherDiagonal::taylor_drop`] with the weight compressed as the choice says ([`apply_choice`](crate::compress::apply_choice) with
/// `scale`). Same shape and conventions as [`cheap_errors`](super::cheap_errors), so the
/// [`Predictor`](super::Predictor) can take it instead of the output error: only the weight counts
/// (activation quantization is ignored), and an uncompressed choice gets 0. `fisher` must hold every
/// layer of the space. Weights are rounded to nearest; [`ScaleMethod::Output`] and GPTQ need the layers'
/// input statistics, which the Fisher estimate does not hold, and are an error here.
pub fn fisher_errors(
    space: &SearchSpace,
    fisher: &FisherDiagonal,
    scale: ScaleMethod,
) -> Result<Vec<Vec<f64>>> {
    super::stats::errors_per_choice(
        space,
        &fisher.layers,
        &scale.into(),
        "Fisher estimate",
        &mut super::NoCheckpoint,
        &mut |_, _| {},
    )
}

impl super::stats::LayerMeasure for LayerFisher {
    fn layer_name(&self) -> &str {
        &self.info.name
    }
    fn original(&self) -> Result<Tensor> {
        self.weight_tensor()
    }
    fn error(&self, w_prime: &Tensor) -> Result<f64> {
        self.taylor_drop(w_prime)
    }
}
