//! # Gradients of a calibration loss with respect to every compressible layer's weight
//!
//! [`chunk_gradients`] runs a model on calibration batches cut into chunks of `chunk` samples and hands
//! each chunk's gradient of its mean [`CalibrationLoss`], per layer, to a visitor. The forward runs with
//! every compressible layer's weight overridden by a [`candle_core::Var`], so candle's backprop gives
//! `∂L/∂W` for all of them in one backward pass per chunk. The Fisher diagonal
//! ([`crate::sensitivity::FisherDiagonal`]) and gradient pruning importance
//! ([`crate::compress::Importance`]) are both sums over these per-chunk gradients.
//!
//! ## The losses
//!
//! - **Classifiers**: the mean cross-entropy of the logits against the labels.
//! - **Encoders** (no labels): distillation of the f32 model's own embedding. With `e(x)` the
//!   L2-normalised embedding (the cosine metric compares directions only) and `t(x)` the teacher's,
//!   the distillation loss `½‖e(x) − t(x)‖²` and its gradient are zero at the f32 model, so its
//!   curvature — the Gauss–Newton matrix `JᵀJ`, `J = ∂e/∂W`, which is the loss's Hessian there — is
//!   what ranks weights. Its diagonal is estimated without forming `J`: with a Gaussian target
//!   `t(x) + ε`, `ε ~ N(0, I)` (the Fisher of the Gaussian output model whose mean is the teacher),
//!   the per-sample gradient at the f32 model is `−Jᵀε` and `E[(Jᵀε)²] = diag(JᵀJ)`. The loss run
//!   is `⟨ε, e(x)⟩` per sample (the same gradient up to its sign, which squares and magnitudes
//!   ignore), with `ε` drawn from a ChaCha8 generator seeded with [`DISTILLATION_SEED`] and the chunk's
//!   position, so the result does not depend on anything but the data.
//!
//! Language models are not covered: their importance would need sampled next tokens in the same way;
//! a caller asks [`CalibrationLoss::for_kind`] and gets an error naming the model kind.
//!
//! ## Known limitation
//!
//! candle-core 0.11.1's max-pool backward scales the gradient of the layers before a 2×2 pool by
//! about ¼ (see [`crate::sensitivity::fisher`]). A per-layer constant does not change which weights
//! of a layer rank first, which is all pruning asks of the scores.

use candle_core::{DType, Tensor, Var, D};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::{ForwardCtx, LayerKernel, LayerOverride, Model, ModelKind, Overrides};
use crate::data::Batch;
use crate::error::{Error, Result};

/// Seed of the encoders' Gaussian distillation targets (fixed: part of what the setting means).
pub const DISTILLATION_SEED: u64 = 0x6d70_7365_6172_6368;

/// The loss whose gradients are taken.
#[derive(Clone, Copy, Debug)]
pub enum CalibrationLoss<'a> {
    /// Mean cross-entropy against the labels, one `[n]` tensor of class ids per batch.
    CrossEntropy(&'a [Tensor]),
    /// An encoder's distillation loss against its own f32 embeddings, with seeded Gaussian targets
    /// (see the module docs).
    Distillation,
}

impl<'a> CalibrationLoss<'a> {
    /// The loss for a model of `kind`: cross-entropy against `labels` for a classifier (an error
    /// without them), distillation for an encoder, an error for a language model. `what` names the
    /// setting that asked, for the errors.
    pub fn for_kind(
        kind: ModelKind,
        labels: Option<&'a [Tensor]>,
        what: &str,
    ) -> Result<CalibrationLoss<'a>> {
        match kind {
            ModelKind::Classifier => labels.map(CalibrationLoss::CrossEntropy).ok_or_else(|| {
                Error::eval(format!(
                    "{what} needs the calibration split's labels, which this classifier's data \
                     does not have"
                ))
            }),
            ModelKind::Encoder => Ok(CalibrationLoss::Distillation),
            ModelKind::LanguageModel => Err(Error::eval(format!(
                "{what} is available for classifiers (cross-entropy on the labels) and encoders \
                 (distillation of the embeddings), not for language models: use --importance \
                 magnitude (the `llm` space prunes nothing anyway)"
            ))),
        }
    }
}

/// What [`chunk_gradients`] calls with each layer's gradient: `(layer, gradient, chunk size)`.
pub type GradientVisitor<'a> = dyn FnMut(usize, &[f32], usize) -> Result<()> + 'a;

/// Runs `model` on `batches` in chunks of `chunk` samples and calls `visit(layer, gradient, size)`
/// for every compressible layer (inventory index) with the gradient of the chunk's mean loss,
/// flattened row-major like the weight, and the chunk's size. A layer the loss does not reach gets
/// no call for that chunk. `progress(done, total)` is called with the samples done after each chunk.
/// Returns the samples and chunks seen. `chunk` 0, labels that do not match their batch, or no samples
/// at all are errors.
pub fn chunk_gradients(
    model: &dyn Model,
    batches: &[Batch],
    loss: CalibrationLoss<'_>,
    chunk: usize,
    visit: &mut GradientVisitor<'_>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(usize, usize)> {
    if chunk == 0 {
        return Err(Error::eval("gradients: chunk 0 is outside 1.."));
    }
    if let CalibrationLoss::CrossEntropy(labels) = loss {
        if labels.len() != batches.len() {
            return Err(Error::eval(format!(
                "gradients: {} label tensors for {} batches",
                labels.len(),
                batches.len()
            )));
        }
    }
    let layers = &model.inventory().layers;
    let vars: Vec<Var> = layers
        .iter()
        .map(|l| {
            Ok(Var::from_tensor(
                &model.weight(&l.name)?.to_dtype(DType::F32)?,
            )?)
        })
        .collect::<Result<_>>()?;
    let overrides: Overrides = layers
        .iter()
        .zip(&vars)
        .map(|(l, v)| {
            let o = LayerOverride {
                kernel: Some(LayerKernel::Dense(v.as_tensor().clone())),
                ..LayerOverride::default()
            };
            (l.name.clone(), o)
        })
        .collect();
    let ctx = ForwardCtx {
        overrides: Some(&overrides),
        capture: None,
        timer: None,
    };
    let (mut samples, mut chunks) = (0, 0);
    let total: usize = batches.iter().map(Batch::len).sum();
    for (bi, batch) in batches.iter().enumerate() {
        let n = batch.len();
        for start in (0..n).step_by(chunk) {
            let size = chunk.min(n - start);
            let b = narrow(batch, start, size)?;
            let out = model.forward(&b, &ctx)?;
            let l = match loss {
                CalibrationLoss::CrossEntropy(labels) => {
                    let y = &labels[bi];
                    if y.dims() != [n] {
                        return Err(Error::eval(format!(
                            "gradients: a batch of {n} samples has labels of shape {:?}, expected \
                             [{n}]",
                            y.dims()
                        )));
                    }
                    let y = y.narrow(0, start, size)?.to_dtype(DType::U32)?;
                    candle_nn::loss::cross_entropy(&out, &y)?
                }
                CalibrationLoss::Distillation => probe_loss(&out, chunks as u64)?,
            };
            let grads = l.backward()?;
            for (i, v) in vars.iter().enumerate() {
                if let Some(g) = grads.get(v.as_tensor()) {
                    let g = g.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
                    visit(i, &g, size)?;
                }
            }
            samples += size;
            chunks += 1;
            progress(samples, total);
        }
    }
    if samples == 0 {
        return Err(Error::eval(
            "gradients: no calibration samples to take gradients on",
        ));
    }
    Ok((samples, chunks))
}

/// `mean_i ⟨ε_i, e_i⟩` over the rows of `embeddings` `[n, d]`, each L2-normalised, `ε` standard
/// normal from [`DISTILLATION_SEED`] and the chunk's index.
fn probe_loss(embeddings: &Tensor, chunk: u64) -> Result<Tensor> {
    let (n, d) = embeddings.dims2().map_err(|_| {
        Error::eval(format!(
            "gradients: an encoder's output should be [samples, dims], got {:?}",
            embeddings.dims()
        ))
    })?;
    let norm = embeddings.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    let e = embeddings.broadcast_div(&(norm + 1e-12)?)?;
    let mut rng = ChaCha8Rng::seed_from_u64(DISTILLATION_SEED ^ chunk.wrapping_mul(0x9e37_79b9));
    let eps: Vec<f32> = (0..n * d)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let eps = Tensor::from_vec(eps, (n, d), embeddings.device())?;
    Ok((e * eps)?.sum_all()?.affine(1.0 / n as f64, 0.0)?)
}

/// Samples `start..start + len` of a batch.
pub(crate) fn narrow(batch: &Batch, start: usize, len: usize) -> Result<Batch> {
    Ok(match batch {
        Batch::Images(t) => Batch::Images(t.narrow(0, start, len)?),
        Batch::Tokens { ids, mask } => Batch::Tokens {
            ids: ids.narrow(0, start, len)?,
            mask: mask.narrow(0, start, len)?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_model_kind_gets_its_loss_or_a_clear_refusal() {
        let labels = [Tensor::new(&[0u32, 1], &candle_core::Device::Cpu).unwrap()];
        let what = "--importance taylor";
        assert!(matches!(
            CalibrationLoss::for_kind(ModelKind::Classifier, Some(&labels), what),
            Ok(CalibrationLoss::CrossEntropy(_))
        ));
        assert!(matches!(
            CalibrationLoss::for_kind(ModelKind::Encoder, None, what),
            Ok(CalibrationLoss::Distillation)
        ));
        let e = CalibrationLoss::for_kind(ModelKind::Classifier, None, what).unwrap_err();
        assert!(e.to_string().contains("labels"), "{e}");
        let e = CalibrationLoss::for_kind(ModelKind::LanguageModel, None, what).unwrap_err();
        let e = e.to_string();
        assert!(e.contains(what) && e.contains("language models"), "{e}");
    }

    #[test]
    fn the_distillation_probe_is_seeded_and_scale_free() {
        // Same chunk, same ε: the loss is a deterministic function of the embeddings, and the
        // embeddings are normalised first (cosine ignores their length).
        let e = Tensor::new(&[[3.0f32, 4.0], [1.0, 0.0]], &candle_core::Device::Cpu).unwrap();
        let a = probe_loss(&e, 7).unwrap().to_scalar::<f32>().unwrap();
        let b = probe_loss(&(&e * 10.0).unwrap(), 7)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        let c = probe_loss(&e, 8).unwrap().to_scalar::<f32>().unwrap();
        assert_ne!(a, c, "another chunk draws another ε");
    }
}
