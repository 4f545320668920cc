//! Training the demo CNN with the project's own candle code: seeded Kaiming-uniform initialisation,
//! AdamW with a cosine learning-rate decay, mini-batches in a seeded order, the same forward pass as
//! [`DemoModel::forward`]. candle's CPU RNG cannot be seeded, so every random number comes from a
//! ChaCha8 generator seeded with `seed`.
//!
//! ## References
//! - K. He, X. Zhang, S. Ren, J. Sun (2015). Delving Deep into Rectifiers (Kaiming initialisation).
//! - I. Loshchilov, F. Hutter (2019). Decoupled Weight Decay Regularization (AdamW).
//! - I. Loshchilov, F. Hutter (2017). SGDR: Stochastic Gradient Descent with Warm Restarts (cosine decay).

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rand::distr::{Distribution, Uniform};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{accuracy, forward, inventory, DemoModel, Params};
use crate::data::{Batch, Split};
use crate::error::{Error, Result};
use crate::model::ForwardCtx;

/// The seed of the shipped weights.
pub const SEED: u64 = 1;
/// The epochs of the shipped weights.
pub const EPOCHS: usize = 2;

/// Images per mini-batch.
const BATCH: usize = 128;
/// AdamW's peak learning rate (at step 0, decayed to 0 by a cosine).
const LEARNING_RATE: f64 = 3e-3;
/// AdamW's decoupled weight decay.
const WEIGHT_DECAY: f64 = 1e-2;

/// A trained demo model and what training measured.
#[derive(Clone, Debug)]
pub struct Trained {
    pub model: DemoModel,
    /// The model as a safetensors file (what `demo.safetensors` holds).
    pub safetensors: Vec<u8>,
    /// Top-1 accuracy on the test images given to [`train`].
    pub test_accuracy: f64,
    /// Mean cross-entropy over the last epoch's mini-batches.
    pub final_loss: f64,
}

/// Trains the demo CNN on `train` for `epochs` passes (at least 1), from `seed`, and measures it on
/// `test`. The shipped weights are `train(&full.train, &full.test, SEED, EPOCHS)` with the full set
/// ([`FashionMnist::full`](crate::data::FashionMnist::full)). The same data, seed and epochs give the same
/// weights on the same machine.
pub fn train(train: &Split, test: &Split, seed: u64, epochs: usize) -> Result<Trained> {
    if epochs == 0 {
        return Err(Error::Model {
            path: "demo".into(),
            message: "epochs: 0 is outside 1..".into(),
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let vars = initial_vars(&mut rng)?;
    let params: Vec<Params> = vars
        .chunks(2)
        .map(|wb| Params {
            weight: wb[0].as_tensor().clone(),
            bias: wb[1].as_tensor().clone(),
        })
        .collect();
    let final_loss = fit(&params, vars, train, &mut rng, epochs)?;
    let frozen = params
        .iter()
        .map(|p| {
            Ok(Params {
                weight: p.weight.copy()?.detach(),
                bias: p.bias.copy()?.detach(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let model = DemoModel::from_params(frozen)?;
    let test_accuracy = accuracy(&model, test, &ForwardCtx::default())?;
    let note = format!(
        "demo-cnn v2 trained by mpsearch::model::demo::train({} images, seed {seed}, epochs {epochs}); \
         test accuracy {test_accuracy:.4} on {} images",
        train.len(),
        test.len()
    );
    let safetensors = model.to_safetensors(&note)?;
    Ok(Trained {
        model,
        safetensors,
        test_accuracy,
        final_loss,
    })
}

/// Runs `epochs` passes of AdamW over `train` in mini-batches of [`BATCH`], shuffled by `rng`
/// each epoch; `params` are the tensors of `vars`. Returns the mean loss of the last epoch.
fn fit(
    params: &[Params],
    vars: Vec<Var>,
    train: &Split,
    rng: &mut ChaCha8Rng,
    epochs: usize,
) -> Result<f64> {
    let config = ParamsAdamW {
        lr: LEARNING_RATE,
        weight_decay: WEIGHT_DECAY,
        ..ParamsAdamW::default()
    };
    let mut opt = AdamW::new(vars, config)?;
    let n = train.len();
    let mut order: Vec<u32> = (0..n as u32).collect();
    let steps_per_epoch = n.div_ceil(BATCH);
    let ctx = ForwardCtx::default();
    let (mut step, mut final_loss) = (0, 0.0);
    for _ in 0..epochs {
        order.shuffle(rng);
        let mut loss_sum = 0.0;
        for chunk in order.chunks(BATCH) {
            opt.set_learning_rate(cosine(LEARNING_RATE, step, epochs * steps_per_epoch));
            let (Batch::Images(x), labels) = train.select(chunk)? else {
                unreachable!("a split holds images");
            };
            let loss = candle_nn::loss::cross_entropy(&forward(params, &x, &ctx)?, &labels)?;
            opt.backward_step(&loss)?;
            loss_sum += f64::from(loss.to_scalar::<f32>()?);
            step += 1;
        }
        final_loss = loss_sum / steps_per_epoch as f64;
    }
    Ok(final_loss)
}

/// Weight and bias variables of every layer in inventory order: weights Kaiming-uniform for ReLU
/// (bound √(6 / fan_in)), biases zero.
fn initial_vars(rng: &mut ChaCha8Rng) -> Result<Vec<Var>> {
    let mut vars = Vec::new();
    for layer in inventory().layers {
        let fan_in: usize = layer.shape[1..].iter().product();
        let bound = (6.0 / fan_in as f64).sqrt() as f32;
        let uniform = Uniform::new_inclusive(-bound, bound).expect("a finite, positive bound");
        let values: Vec<f32> = (0..layer.params()).map(|_| uniform.sample(rng)).collect();
        vars.push(Var::from_tensor(&Tensor::from_vec(
            values,
            layer.shape.as_slice(),
            &Device::Cpu,
        )?)?);
        vars.push(Var::zeros(layer.shape[0], DType::F32, &Device::Cpu)?);
    }
    Ok(vars)
}

/// Cosine decay from `base` at step 0 to 0 at `total`.
pub(crate) fn cosine(base: f64, step: usize, total: usize) -> f64 {
    base * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / total as f64).cos())
}
