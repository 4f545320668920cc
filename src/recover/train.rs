//! The fine-tuning loop: trainable parameters per layer, the straight-through forward, the losses,
//! AdamW with a cosine decay, validation and the best checkpoint.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::weights::RecoveredWeights;
use crate::compress::{
    changes_weight, compress_with, fake_quantize_masked, prepare, truncated_svd, CompressSettings,
    LayerScores, WeightMatrix,
};
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::model::demo::train::cosine;
use crate::model::{ForwardCtx, LayerKernel, LayerOverride, Model, Overrides};
use crate::space::{Assignment, Choice};
use crate::store::RecoverRecipe;

/// What the student is trained to match.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Objective {
    /// `α·CE(z_s, y) + (1−α)·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T))`.
    Classifier { alpha: f64, temperature: f64 },
    /// Mean `1 − cos(e_s, e_t)` of the embeddings.
    Cosine,
    /// Mean over samples of `‖e_s − e_t‖²`.
    Mse,
}

/// Training samples.
#[derive(Clone, Debug)]
pub enum TrainSet {
    /// Images `[n, c, h, w]` and their labels `[n]` (u32): mini-batches drawn in a seeded order
    /// each epoch.
    Images { images: Tensor, labels: Tensor },
    /// Fixed batches (tokenized sentences), visited in a seeded order each epoch.
    Batches(Vec<Batch>),
}

impl TrainSet {
    /// Samples in the set.
    pub fn len(&self) -> usize {
        match self {
            TrainSet::Images { labels, .. } => labels.dims().first().copied().unwrap_or(0),
            TrainSet::Batches(b) => b.iter().map(Batch::len).sum(),
        }
    }

    /// Whether it has no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a recovery trains and validates on.
#[derive(Clone, Debug)]
pub struct TrainData {
    /// What the training samples are, in words.
    pub description: String,
    pub train: TrainSet,
    /// Validation batches (with labels for classifiers): never the held-out split.
    pub validation: Vec<(Batch, Option<Tensor>)>,
    /// What the validation batches are, in words.
    pub validation_description: String,
    /// Hash of the training samples.
    pub fingerprint: blake3::Hash,
}

/// What the compression of each layer needs during training.
pub struct Setup<'a> {
    /// The run's settings with round-to-nearest and a scale method that needs no input statistics.
    pub settings: CompressSettings,
    /// Gradient importance scores of the original weights (a run with `--importance taylor|fisher`).
    pub scores: Option<&'a LayerScores>,
    /// Calibrated static activation ranges (`act8-static`).
    pub ranges: HashMap<String, (f32, f32)>,
    /// The loss.
    pub objective: Objective,
}

/// Where training stands, for a progress bar.
#[derive(Clone, Debug)]
pub struct Progress {
    pub epoch: usize,
    pub epochs: usize,
    pub step: u64,
    pub total_steps: u64,
    /// Mean loss of the epoch's steps so far.
    pub loss: f64,
    /// Best validation loss so far.
    pub best: f64,
}

/// What training produced.
#[derive(Clone, Debug)]
pub struct TrainOutcome {
    /// The best checkpoint's weights.
    pub weights: RecoveredWeights,
    pub steps: u64,
    pub total_steps: u64,
    /// The step of the best checkpoint (0: the point as it was).
    pub best_step: u64,
    pub best_loss: f64,
    pub initial_loss: f64,
    /// Whether the stop flag ended it early.
    pub interrupted: bool,
}

/// One trained layer.
struct LayerState {
    name: String,
    shape: Vec<usize>,
    choice: Choice,
    params: Params,
    act_range: Option<(f32, f32)>,
}

enum Params {
    /// The weight itself; `keep` (the pruning mask, fixed: computed once from the original weight)
    /// as booleans and as a 0/1 tensor of the weight's shape.
    Dense {
        w: Var,
        keep: Option<(Vec<bool>, Tensor)>,
    },
    /// A low-rank layer's two factors `A [m, k]`, `B [k, n]`, trained directly.
    Factors { a: Var, b: Var },
    /// A layer that is not trained (a lookup table): its compressed weight, computed once.
    Frozen(Tensor),
}

impl LayerState {
    fn new(
        model: &dyn Model,
        name: &str,
        shape: &[usize],
        choice: Choice,
        setup: &Setup,
    ) -> Result<LayerState> {
        let w = model.weight(name)?.to_dtype(DType::F32)?;
        let params = if let Some(p) = choice.rank {
            let lr = truncated_svd(&WeightMatrix::from_tensor(&w)?, p)?;
            let (a, b) = (&lr.a, &lr.b);
            Params::Factors {
                a: Var::from_tensor(&a.to_tensor(&[a.rows(), a.cols()])?)?,
                b: Var::from_tensor(&b.to_tensor(&[b.rows(), b.cols()])?)?,
            }
        } else if changes_weight(&choice) {
            let scores = setup.scores.and_then(|s| s.get(name)).map(AsRef::as_ref);
            let prepared = prepare(&w, &choice, &setup.settings, scores)?;
            let keep = prepared.masks.into_iter().next().unwrap_or_default();
            if keep.iter().all(|&k| k) {
                Params::Dense {
                    w: Var::from_tensor(&w)?,
                    keep: None,
                }
            } else {
                let ones: Vec<f32> = keep.iter().map(|&k| f32::from(u8::from(k))).collect();
                let mask = Tensor::from_vec(ones, shape, &Device::Cpu)?;
                Params::Dense {
                    w: Var::from_tensor(&(&w * &mask)?)?,
                    keep: Some((keep, mask)),
                }
            }
        } else {
            Params::Dense {
                w: Var::from_tensor(&w)?,
                keep: None,
            }
        };
        Ok(LayerState {
            name: name.to_string(),
            shape: shape.to_vec(),
            choice,
            params,
            act_range: setup.ranges.get(name).copied(),
        })
    }

    fn vars(&self) -> Vec<Var> {
        match &self.params {
            Params::Dense { w, .. } => vec![w.clone()],
            Params::Factors { a, b } => vec![a.clone(), b.clone()],
            Params::Frozen(_) => Vec::new(),
        }
    }

    /// Stops training the layer: from now on it runs its compressed weight, a constant.
    fn freeze(&mut self, setup: &Setup) -> Result<()> {
        let q = self.fake_quantized(&self.latent()?, setup)?;
        self.params = Params::Frozen(q);
        Ok(())
    }

    fn is_frozen(&self) -> bool {
        matches!(self.params, Params::Frozen(_))
    }

    /// The latent weight in the layer's shape, in the graph: the masked weight, or `A·B`.
    fn latent(&self) -> Result<Tensor> {
        Ok(match &self.params {
            Params::Dense {
                w,
                keep: Some((_, m)),
            } => (w.as_tensor() * m)?,
            Params::Dense { w, keep: None } => w.as_tensor().clone(),
            Params::Factors { a, b } => a
                .as_tensor()
                .matmul(b.as_tensor())?
                .reshape(self.shape.as_slice())?,
            Params::Frozen(q) => q.clone(),
        })
    }

    /// `latent` compressed as the choice says, from its current values (scales re-derived), a
    /// constant: the fixed mask and the format's fake quantization for a weight; for a low-rank
    /// layer the whole choice on the product `A·B` (its truncated SVD is exact, rank `k`), as the
    /// evaluator compresses the stored product.
    fn fake_quantized(&self, latent: &Tensor, setup: &Setup) -> Result<Tensor> {
        let latent = latent.detach();
        match &self.params {
            Params::Dense { keep, .. } => {
                let m = WeightMatrix::from_tensor(&latent)?;
                let all;
                let keep = match keep {
                    Some((k, _)) => k.as_slice(),
                    None => {
                        all = vec![true; m.len()];
                        &all
                    }
                };
                fake_quantize_masked(&m, keep, &self.choice.weights, setup.settings.scale)?
                    .to_tensor(&self.shape)
            }
            Params::Frozen(q) => Ok(q.clone()),
            Params::Factors { .. } => {
                let scores = setup
                    .scores
                    .and_then(|s| s.get(&self.name))
                    .map(AsRef::as_ref);
                compress_with(&latent, &self.choice, &setup.settings, None, scores)?.to_tensor()
            }
        }
    }

    /// The override of a training step: the straight-through weight `l + (Q(l) − l).detach()`
    /// (forward: `Q(l)`; gradient: the identity on `l`) and the input's activation quantization,
    /// also straight through. With `train` false: `Q(l)` as a constant (validation).
    fn override_for(&self, setup: &Setup, train: bool) -> Result<LayerOverride> {
        let latent = self.latent()?;
        let weight = if self.is_frozen() {
            latent
        } else if !changes_weight(&self.choice) {
            if train {
                latent
            } else {
                latent.detach()
            }
        } else {
            let q = self.fake_quantized(&latent, setup)?;
            if train {
                (&latent + (q - &latent)?.detach())?
            } else {
                q
            }
        };
        Ok(LayerOverride {
            kernel: Some(LayerKernel::Dense(weight)),
            act: self.choice.act,
            act_range: self.act_range,
            straight_through: train,
        })
    }
}

/// Fine-tunes `teacher` compressed as `assignment` says (see the module docs of
/// [`crate::recover`]): AdamW (no weight decay) at `recipe.lr` with a cosine decay to 0, `recipe.epochs`
/// passes over `data.train` in mini-batches of `recipe.batch` in an order seeded by `recipe.seed`,
/// the validation loss after every epoch (and when `stop` is raised, which ends training after the
/// current step); returns the weights of the step with the lowest validation loss (the point as
/// it was, step 0, included). Layers whose choice leaves the weight unchanged (f32, dense, full
/// rank; activation quantization alone) are not trained, nor are lookup tables (they run their
/// compressed weight, and the variant keeps the original's).
pub fn train(
    teacher: &dyn Model,
    assignment: &Assignment,
    setup: &Setup,
    data: &TrainData,
    recipe: &RecoverRecipe,
    progress: &mut dyn FnMut(&Progress),
    stop: &AtomicBool,
) -> Result<TrainOutcome> {
    let objective = setup.objective;
    if data.train.is_empty() || data.validation.is_empty() {
        return Err(Error::recover(format!(
            "no samples to train on ({}) or to validate on ({})",
            data.description, data.validation_description
        )));
    }
    let mut layers = Vec::new();
    for l in &teacher.inventory().layers {
        let choice = assignment.get(&l.name).copied().unwrap_or(Choice::F32);
        // A layer whose weight the choice leaves as it is stays the original's: exports leave such
        // layers out ("take them from the original model"), so training them would not survive.
        if !changes_weight(&choice) {
            continue;
        }
        let mut state = LayerState::new(teacher, &l.name, &l.shape, choice, setup)?;
        // A lookup table's row learns only from samples that contain its token: trained, it would
        // fit the tuning text's vocabulary and leave every other row behind. It keeps its
        // compressed values; the layers after it compensate.
        if l.kind.takes_ids() {
            state.freeze(setup)?;
        }
        layers.push(state);
    }
    let vars: Vec<Var> = layers.iter().flat_map(LayerState::vars).collect();
    let mut opt = AdamW::new(
        vars.clone(),
        ParamsAdamW {
            lr: recipe.lr,
            weight_decay: 0.0,
            ..ParamsAdamW::default()
        },
    )?;
    let teacher_ctx = ForwardCtx::default();
    let validation_targets = data
        .validation
        .iter()
        .map(|(b, _)| Ok(teacher.forward(b, &teacher_ctx)?.detach()))
        .collect::<Result<Vec<_>>>()?;
    let validate = |layers: &[LayerState]| -> Result<f64> {
        let overrides = overrides(layers, setup, false)?;
        let ctx = ForwardCtx {
            overrides: Some(&overrides),
            ..ForwardCtx::default()
        };
        let (mut sum, mut n) = (0.0, 0usize);
        for ((b, labels), t) in data.validation.iter().zip(&validation_targets) {
            let s = teacher.forward(b, &ctx)?;
            let l = loss(objective, &s, t, labels.as_ref())?.to_scalar::<f32>()?;
            sum += f64::from(l) * b.len() as f64;
            n += b.len();
        }
        Ok(sum / n.max(1) as f64)
    };
    let snapshot = |vars: &[Var]| -> Result<Vec<Tensor>> {
        vars.iter().map(|v| Ok(v.as_tensor().copy()?)).collect()
    };
    let initial_loss = validate(&layers)?;
    let (mut best_loss, mut best_step, mut best) = (initial_loss, 0u64, snapshot(&vars)?);

    let mut rng = ChaCha8Rng::seed_from_u64(recipe.seed);
    let batch_targets: Vec<Tensor> = match &data.train {
        TrainSet::Batches(batches) => batches
            .iter()
            .map(|b| Ok(teacher.forward(b, &teacher_ctx)?.detach()))
            .collect::<Result<_>>()?,
        TrainSet::Images { .. } => Vec::new(),
    };
    let steps_per_epoch = match &data.train {
        TrainSet::Images { .. } => data.train.len().div_ceil(recipe.batch),
        TrainSet::Batches(b) => b.len(),
    } as u64;
    let total_steps = steps_per_epoch * recipe.epochs as u64;
    let mut step = 0u64;
    let mut interrupted = false;
    'epochs: for epoch in 0..recipe.epochs {
        let mut order: Vec<u32> = (0..match &data.train {
            TrainSet::Images { .. } => data.train.len(),
            TrainSet::Batches(b) => b.len(),
        } as u32)
            .collect();
        order.shuffle(&mut rng);
        let chunks: Vec<&[u32]> = match &data.train {
            TrainSet::Images { .. } => order.chunks(recipe.batch).collect(),
            TrainSet::Batches(_) => order.chunks(1).collect(),
        };
        let (mut loss_sum, mut loss_n) = (0.0, 0usize);
        for chunk in chunks {
            if stop.load(Ordering::SeqCst) {
                interrupted = true;
                break 'epochs;
            }
            let (batch, labels, target) = match &data.train {
                TrainSet::Images { images, labels } => {
                    let index = Tensor::from_slice(chunk, chunk.len(), &Device::Cpu)?;
                    let b = Batch::Images(images.index_select(&index, 0)?);
                    let t = teacher.forward(&b, &teacher_ctx)?.detach();
                    (b, Some(labels.index_select(&index, 0)?), t)
                }
                TrainSet::Batches(batches) => {
                    let i = chunk[0] as usize;
                    (batches[i].clone(), None, batch_targets[i].clone())
                }
            };
            opt.set_learning_rate(cosine(recipe.lr, step as usize, total_steps as usize));
            let overrides = overrides(&layers, setup, true)?;
            let ctx = ForwardCtx {
                overrides: Some(&overrides),
                ..ForwardCtx::default()
            };
            let s = teacher.forward(&batch, &ctx)?;
            let l = loss(objective, &s, &target, labels.as_ref())?;
            opt.backward_step(&l)?;
            let value = f64::from(l.to_scalar::<f32>()?);
            if !value.is_finite() {
                return Err(Error::recover(format!(
                    "the loss became {value} at step {step}: the learning rate {} is too high \
                     for this point; try --lr {}",
                    recipe.lr,
                    recipe.lr / 10.0
                )));
            }
            loss_sum += value;
            loss_n += 1;
            step += 1;
            progress(&Progress {
                epoch: epoch + 1,
                epochs: recipe.epochs,
                step,
                total_steps,
                loss: loss_sum / loss_n as f64,
                best: best_loss,
            });
        }
        let v = validate(&layers)?;
        if v < best_loss {
            (best_loss, best_step, best) = (v, step, snapshot(&vars)?);
        }
    }
    if interrupted && step > best_step {
        let v = validate(&layers)?;
        if v < best_loss {
            (best_loss, best_step, best) = (v, step, snapshot(&vars)?);
        }
    }
    for (v, t) in vars.iter().zip(&best) {
        v.set(t)?;
    }
    // A frozen layer's weight is the original's: the variant takes it from the original model.
    let weights = layers
        .iter()
        .filter(|l| !l.is_frozen())
        .map(|l| Ok((l.name.clone(), l.latent()?.detach().copy()?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(TrainOutcome {
        weights: RecoveredWeights::new(weights),
        steps: step,
        total_steps,
        best_step,
        best_loss,
        initial_loss,
        interrupted,
    })
}

fn overrides(layers: &[LayerState], setup: &Setup, train: bool) -> Result<Overrides> {
    layers
        .iter()
        .map(|l| Ok((l.name.clone(), l.override_for(setup, train)?)))
        .collect()
}

/// The mean loss of a batch: the student's outputs `s` against the teacher's `t` (and the labels,
/// for a classifier with `alpha > 0`).
pub fn loss(
    objective: Objective,
    s: &Tensor,
    t: &Tensor,
    labels: Option<&Tensor>,
) -> Result<Tensor> {
    let n = s.dim(0)? as f64;
    Ok(match objective {
        Objective::Classifier { alpha, temperature } => {
            let ls = candle_nn::ops::log_softmax(&s.affine(1.0 / temperature, 0.0)?, D::Minus1)?;
            let lt = candle_nn::ops::log_softmax(&t.affine(1.0 / temperature, 0.0)?, D::Minus1)?;
            let kl = (lt.exp()? * (&lt - &ls)?)?
                .sum_all()?
                .affine(temperature * temperature / n, 0.0)?;
            let soft = kl.affine(1.0 - alpha, 0.0)?;
            match labels {
                Some(y) if alpha > 0.0 => {
                    let hard = candle_nn::loss::cross_entropy(s, &y.to_dtype(DType::U32)?)?;
                    (hard.affine(alpha, 0.0)? + soft)?
                }
                _ => soft,
            }
        }
        Objective::Cosine => {
            let dot = (s * t)?.sum(D::Minus1)?;
            let ns = s.sqr()?.sum(D::Minus1)?.sqrt()?;
            let nt = t.sqr()?.sum(D::Minus1)?.sqrt()?;
            let cos = (dot / ((ns * nt)? + 1e-12)?)?;
            cos.affine(-1.0, 1.0)?.mean_all()?
        }
        Objective::Mse => (s - t)?.sqr()?.sum_all()?.affine(1.0 / n, 0.0)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::ScaleMethod;
    use crate::model::DemoModel;

    /// Largest |a − b| over two tensors of one shape.
    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    fn state(choice: &str) -> (LayerState, Setup<'static>) {
        let model = DemoModel::embedded().unwrap();
        let setup = Setup {
            settings: CompressSettings::from(ScaleMethod::Mse),
            scores: None,
            ranges: HashMap::new(),
            objective: Objective::Cosine,
        };
        let s =
            LayerState::new(&model, "fc1", &[256, 1568], choice.parse().unwrap(), &setup).unwrap();
        (s, setup)
    }

    /// A frozen layer (a lookup table) has nothing to train and runs its compressed weight as a
    /// constant, in training as in validation.
    #[test]
    fn a_frozen_layer_runs_its_compressed_weight_and_trains_nothing() {
        let (mut s, setup) = state("int4-sym-channel");
        let q = s.fake_quantized(&s.latent().unwrap(), &setup).unwrap();
        s.freeze(&setup).unwrap();
        assert!(s.is_frozen() && s.vars().is_empty());
        for train in [true, false] {
            let o = s.override_for(&setup, train).unwrap();
            let Some(LayerKernel::Dense(w)) = &o.kernel else {
                panic!("a dense kernel expected");
            };
            assert_eq!(max_diff(w, &q), 0.0, "train {train}: the compressed weight");
            assert!(!w.track_op(), "train {train}: a constant");
        }
    }

    /// The straight-through weight runs `Q(l)` forward and passes the gradient through unchanged:
    /// `∂⟨C, w⟩/∂l = C` (times the fixed mask, for a pruned weight, whose pruned entries are 0).
    #[test]
    fn the_straight_through_gradient_is_the_identity_on_the_fake_quantized_weight() {
        for choice in ["int3-sym-channel", "int4-asym-channel+2:4"] {
            let (s, setup) = state(choice);
            let o = s.override_for(&setup, true).unwrap();
            let Some(LayerKernel::Dense(w)) = &o.kernel else {
                panic!("{choice}: a dense kernel expected");
            };
            let q = s.fake_quantized(&s.latent().unwrap(), &setup).unwrap();
            assert!(
                max_diff(w, &q) < 1e-6,
                "{choice}: the forward value is Q(l)"
            );
            let c = Tensor::randn(0f32, 1.0, (256, 1568), &Device::Cpu).unwrap();
            let grads = (w * &c).unwrap().sum_all().unwrap().backward().unwrap();
            let Params::Dense { w: var, keep } = &s.params else {
                panic!("{choice}: one dense parameter expected");
            };
            let g = grads.get(var.as_tensor()).expect("a gradient");
            let expected = match keep {
                Some((_, mask)) => (&c * mask).unwrap(),
                None => c.clone(),
            };
            assert_eq!(max_diff(g, &expected), 0.0, "{choice}: gradient ≠ identity");
            if let Some((keep, _)) = keep {
                let values = q.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert!(keep.iter().zip(&values).all(|(k, v)| *k || *v == 0.0));
                assert_eq!(
                    keep.iter().filter(|k| !**k).count(),
                    256 * 1568 / 2,
                    "2:4 keeps half"
                );
            }
        }
    }

    /// A low-rank layer trains its two factors, and runs the choice on their product.
    #[test]
    fn low_rank_layers_train_both_factors() {
        let (s, setup) = state("int8-sym-channel+rank50");
        let o = s.override_for(&setup, true).unwrap();
        let Some(LayerKernel::Dense(w)) = &o.kernel else {
            panic!("a dense kernel expected");
        };
        let grads = w.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let Params::Factors { a, b } = &s.params else {
            panic!("two factors expected");
        };
        assert_eq!(a.dims(), [256, 128]);
        assert_eq!(b.dims(), [128, 1568]);
        assert!(grads.get(a.as_tensor()).is_some() && grads.get(b.as_tensor()).is_some());
    }

    #[test]
    fn the_distillation_loss_is_zero_at_the_teacher_and_positive_elsewhere() {
        let t = Tensor::new(&[[1.0f32, 2.0, 0.5], [0.0, -1.0, 3.0]], &Device::Cpu).unwrap();
        let s = (&t * 0.5).unwrap();
        let kd = Objective::Classifier {
            alpha: 0.0,
            temperature: 4.0,
        };
        for o in [kd, Objective::Cosine, Objective::Mse] {
            let same = loss(o, &t, &t, None).unwrap().to_scalar::<f32>().unwrap();
            assert!(same.abs() < 1e-6, "{o:?}: {same}");
        }
        for o in [kd, Objective::Mse] {
            let other = loss(o, &s, &t, None).unwrap().to_scalar::<f32>().unwrap();
            assert!(other > 1e-4, "{o:?}: {other}");
        }
    }
}
