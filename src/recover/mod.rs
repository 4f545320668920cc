//! # Recovery: fine-tuning a stored point
//!
//! `mpsearch recover RUN --point K` fine-tunes the weights of a front point of a run so that its
//! compressed arithmetic gets back what compression lost (quantization-aware training with
//! knowledge distillation from the f32 model), and stores the result in the run as a *recovered
//! variant* of the point: the same assignment (so the same cost), new weights, its own content key.
//!
//! ## What is trained, and how
//!
//! The weight of every layer whose choice changes it (quantized, pruned or factorised) is a
//! parameter; everything else is frozen — biases, normalisations, and layers the point leaves in f32
//! (an export leaves those out and takes them from the original model, so they must stay the
//! original's). The forward pass runs each layer's compressed weight through a
//! **straight-through estimator**: with `l` the layer's latent weight and `Q` the project's own
//! compression of the layer's choice, the layer runs `l + (Q(l) − l).detach()` — its value is
//! `Q(l)`, its gradient the identity on `l`.
//!
//! - **Quantized weights** (`int<b>-…`, `f16`, `bf16`): `Q` is the project's quantizer with
//!   round-to-nearest; **scales are re-derived from the current weights at every step** (not
//!   learned, not frozen), with the run's scale method — or MSE-optimal clipping when the run's
//!   method needs input statistics (`output`). A run that rounds by GPTQ (the command line's
//!   default) gets round-to-nearest for its recovered variants: GPTQ is a post-training rounding
//!   that fine-tuning replaces, and re-rounding trained weights by GPTQ undoes the training (int2
//!   points came out worse than before). The variant is evaluated and exported with exactly the
//!   arithmetic it was trained with ([`variant_settings`], stored in the record).
//! - **GGML block formats** (`q4_k`, …): fake-quantized through candle's quantizer and its
//!   dequantized values; the kernel's on-the-fly 8-bit activation blocks are not simulated during
//!   training (the recovered variant's evaluation includes them).
//! - **Pruning** (`sparse<P>`, `N:M`, `channels<P>`): the mask is computed once from the original
//!   weights, as the point's choice did (with the run's importance); pruned weights are exactly 0
//!   throughout (the latent weight is multiplied by the mask, so they get no gradient) and in the
//!   stored weights, so compressing them again finds the same mask.
//! - **Low rank** (`rank<P>`): the two factors of the truncated SVD are the parameters; the layer
//!   runs the whole choice applied to their product `A·B` (whose truncated SVD is exact at rank
//!   `k`), exactly as the evaluator compresses the stored product.
//! - **Activation quantization** (`act8-static`, `act8-dynamic`): simulated as chosen (static
//!   ranges from the run's calibration), with a straight-through gradient.
//!
//! ## Losses and data
//!
//! - Classifiers: `α·CE(z_s, y) + (1−α)·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T))`, the f32 model as
//!   teacher; trained on the model's training split (the demo: the tune split, 2,000 embedded
//!   Fashion-MNIST training images, which neither the search nor the held-out split overlaps), validated on the calibration split.
//! - Encoders: distillation of the f32 model's embeddings (`1 − cos` or squared error), on the
//!   sentences of `--data FILE`, or by default the shipped tune sentences (1,393 sentences of the
//!   book the shipped 400 come from, none of them among the 400) and, for a run on the user's own
//!   sentences, that run's calibration split; validated on the search split. Never the held-out
//!   split. Lookup tables (word embeddings) are not trained: a row only learns from sentences that
//!   contain its token, so training would tune the tuning text's vocabulary and leave the rest; they
//!   keep their compressed values and the layers after them learn to compensate.
//!
//! AdamW without weight decay, cosine learning-rate decay, mini-batches in an order seeded by the
//! seed: the same seed and thread count give the same weights. The weights kept are those of the
//! epoch end (or the Ctrl-C) with the lowest validation loss, the point as it was included.
//!
//! ## What is stored
//!
//! The recovered weights (a blob, [`RecoveredWeights`]) and a [`RecoveredRecord`] with the recipe,
//! how training went and the variant's quality on the search and held-out splits, measured by the
//! run's evaluator on a [`RecoveredModel`] against the original f32 model's outputs. The variant's
//! key is BLAKE3 of the run's evaluator fingerprint, the point's assignment hash and the recipe
//! (seed and training data included): recovering the same point the same way again is a cache hit.
//!
//! ## References
//! - G. Hinton, O. Vinyals, J. Dean (2015). Distilling the Knowledge in a Neural Network.
//! - Y. Bengio, N. Léonard, A. Courville (2013). Estimating or Propagating Gradients Through
//!   Stochastic Neurons for Conditional Computation (the straight-through estimator).
//! - B. Jacob et al. (2018). Quantization and Training of Neural Networks for Efficient
//!   Integer-Arithmetic-Only Inference (fake quantization in training).

pub mod train;
pub mod weights;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Tensor;

pub use self::train::{Objective, Progress, Setup, TrainData, TrainOutcome, TrainSet};
pub use self::weights::{RecoveredModel, RecoveredWeights};
use crate::compress::{Rounding, ScaleMethod};
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::eval::{CandleEvaluator, EvalData, EvalSettings, EvalSplit, Evaluator};
use crate::export::{select, Pick};
use crate::model::{Model, ModelKind, ModelSource};
use crate::space::{ActQuant, Assignment};
use crate::store::{
    self, RecoverRecipe, RecoveredRecord, RecoveredState, RunManifest, Store, TrialRecord,
    TrialState, SCHEMA_VERSION,
};

/// Defaults of `mpsearch recover` by model kind: (epochs, lr, batch).
pub fn defaults(kind: ModelKind) -> (usize, f64, usize) {
    match kind {
        ModelKind::Encoder => (5, 1e-4, 16),
        _ => (10, 1e-3, 64),
    }
}

/// The encoder losses, by name.
pub const ENCODER_LOSSES: &[&str] = &["cosine", "mse"];

/// The evaluator settings of a recovered variant of a run evaluated with `run`: the arithmetic it is
/// trained with — round-to-nearest (GPTQ is a post-training rounding that fine-tuning replaces),
/// the run's scale method, or MSE-optimal clipping where the run's needs input statistics — and
/// the run's importance and activation ranges.
pub fn variant_settings(run: &EvalSettings) -> EvalSettings {
    EvalSettings {
        scale: if run.scale.needs_inputs() {
            ScaleMethod::Mse
        } else {
            run.scale
        },
        rounding: Rounding::Rtn,
        ..run.clone()
    }
}

/// Checks a recipe's hyper-parameters, naming the one out of range.
pub fn check_recipe(r: &RecoverRecipe) -> Result<()> {
    let bad = |name: &str, value: String, range: &str| {
        Err(Error::recover(format!(
            "--{name} {value} is outside {range}; nothing was trained or stored"
        )))
    };
    if r.epochs == 0 || r.epochs > 10_000 {
        return bad("epochs", r.epochs.to_string(), "1..=10000");
    }
    if !(r.lr.is_finite() && r.lr > 0.0 && r.lr <= 1.0) {
        return bad("lr", r.lr.to_string(), "(0, 1]");
    }
    if r.batch == 0 || r.batch > 65_536 {
        return bad("batch", r.batch.to_string(), "1..=65536");
    }
    if !(0.0..=1.0).contains(&r.alpha) {
        return bad("alpha", r.alpha.to_string(), "[0, 1]");
    }
    if !(r.temperature.is_finite() && r.temperature > 0.0 && r.temperature <= 100.0) {
        return bad("temperature", r.temperature.to_string(), "(0, 100]");
    }
    if !ENCODER_LOSSES.contains(&r.loss.as_str()) {
        return bad("loss", r.loss.clone(), "cosine | mse");
    }
    Ok(())
}

/// The content key of a recovered variant: the run's evaluator fingerprint (hex), the point's
/// assignment hash (hex) and the recipe.
pub fn variant_key(evaluator: &str, assignment: &str, recipe: &RecoverRecipe) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"mpsearch-recovered-variant-v1\n");
    h.update(evaluator.as_bytes());
    h.update(b"\n");
    h.update(assignment.as_bytes());
    h.update(b"\n");
    h.update(serde_json::to_string(recipe).unwrap_or_default().as_bytes());
    h.finalize()
}

/// What `recover` is asked: the point, the hyper-parameters (`None`: the model kind's default) and
/// the encoder's sentences.
#[derive(Clone, Debug)]
pub struct Request {
    /// 1-based front point, as `export --point K` counts.
    pub point: usize,
    pub epochs: Option<usize>,
    pub lr: Option<f64>,
    pub batch: Option<usize>,
    pub alpha: f64,
    pub temperature: f64,
    pub seed: u64,
    pub loss: String,
    /// Encoders: a sentence file to distil on.
    pub data: Option<PathBuf>,
}

/// A recovered variant and whether it came from the store.
#[derive(Clone, Debug)]
pub struct Recovered {
    pub record: RecoveredRecord,
    /// The trial it fine-tunes.
    pub trial: TrialRecord,
    /// Its 1-based front point.
    pub point: usize,
    /// Found in the store: nothing was trained.
    pub cached: bool,
}

/// Everything a recovery and an export of a recovered variant need, loaded and checked.
pub struct Loaded {
    pub model: Arc<dyn Model>,
    pub data: EvalData,
    pub evaluator: CandleEvaluator,
    pub assignment: Assignment,
}

/// Loads the run's model and data, checks they are the ones the run searched (fingerprints), and
/// resolves `trial`'s assignment against the run's space.
pub fn load(manifest: &RunManifest, trial: &TrialRecord) -> Result<Loaded> {
    let c = &manifest.config;
    let (model, data) = crate::eval::load_run_data(&c.model, c.data.as_deref(), c.samples)
        .map_err(|e| {
            Error::recover(format!(
                "run `{}` searched model {} — it cannot be loaded now ({e}). Restore it where \
                     the run found it",
                manifest.name, c.model
            ))
        })?;
    let now = model.fingerprint().to_hex().to_string();
    if now != manifest.fingerprints.model {
        return Err(Error::recover(format!(
            "model {}: its weights changed since run `{}` searched it (fingerprint {} → {}); a \
             recovered variant must start from the weights the point was evaluated with. Restore \
             the model, or search again",
            c.model,
            manifest.name,
            short(&manifest.fingerprints.model),
            short(&now)
        )));
    }
    let settings = crate::search::evaluator_settings(c);
    let evaluator = CandleEvaluator::new(model.clone(), data.clone(), settings)?;
    let now = evaluator.fingerprint().to_hex().to_string();
    if now != manifest.fingerprints.evaluator {
        return Err(Error::recover(format!(
            "run `{}`: its evaluation data or settings changed since the search (evaluator \
             fingerprint {} → {}). Restore the data, or search again",
            manifest.name,
            short(&manifest.fingerprints.evaluator),
            short(&now)
        )));
    }
    let space = crate::shipped::space(&c.space, &model.inventory().layers)?;
    let assignment = space.assignment_from_json(&trial.assignment).map_err(|e| {
        Error::recover(format!(
            "trial {} of run `{}` does not fit search space `{}` as it is now ({e}); restore the \
             space file",
            trial.number, manifest.name, c.space
        ))
    })?;
    Ok(Loaded {
        model,
        data,
        evaluator,
        assignment,
    })
}

/// The front point `point` (1-based) of the run, which must be a complete trial.
pub fn point_trial(
    manifest: &RunManifest,
    trials: &[TrialRecord],
    point: usize,
) -> Result<TrialRecord> {
    if point == 0 {
        return Err(Error::recover(
            "--point counts front points from 1 (see `mpsearch runs` or `mpsearch report`)",
        ));
    }
    let sel = select(manifest, trials, Pick::Point(point)).map_err(|e| {
        let e = e.to_string();
        Error::recover(format!(
            "--point {point}: {}",
            e.trim_start_matches("export: ")
        ))
    })?;
    if sel.trial.state != TrialState::Complete || sel.trial.quality.is_none() {
        return Err(Error::recover(format!(
            "point {point} of run `{}` is trial {}, which is {}: only an evaluated point can be \
             fine-tuned",
            manifest.name, sel.trial.number, sel.trial.state
        )));
    }
    Ok(sel.trial.clone())
}

/// The recipe of `request` for a model of `kind` trained on `data`.
pub fn recipe(request: &Request, kind: ModelKind, data: &TrainData) -> RecoverRecipe {
    let (epochs, lr, batch) = defaults(kind);
    RecoverRecipe {
        epochs: request.epochs.unwrap_or(epochs),
        lr: request.lr.unwrap_or(lr),
        batch: request.batch.unwrap_or(batch),
        alpha: request.alpha,
        temperature: request.temperature,
        loss: request.loss.clone(),
        seed: request.seed,
        data: data.description.clone(),
        data_fingerprint: data.fingerprint.to_hex().to_string(),
    }
}

/// Fine-tunes point `request.point` of run `manifest` and stores the variant in `store` (see the
/// module docs), or returns the stored variant of the same key. Every input is checked before
/// anything is written: a bad request leaves the store untouched. `stop` ends training early
/// (Ctrl-C): the best checkpoint so far is stored, marked interrupted.
pub fn recover(
    store: &dyn Store,
    manifest: &RunManifest,
    request: &Request,
    progress: &mut dyn FnMut(&Progress),
    stop: &AtomicBool,
) -> Result<Recovered> {
    let trials = store.trials(&manifest.name)?;
    let trial = point_trial(manifest, &trials, request.point)?;
    if let Some(p) = &request.data {
        if !p.is_file() {
            return Err(Error::recover(format!(
                "--data {}: no such file (a text file of sentences, one per line)",
                p.display()
            )));
        }
    }
    let loaded = load(manifest, &trial)?;
    let kind = loaded.model.inventory().kind;
    let data = train_data(manifest, &loaded, request)?;
    let recipe = recipe(request, kind, &data);
    check_recipe(&recipe)?;
    let key = variant_key(&manifest.fingerprints.evaluator, &trial.hash, &recipe);
    let key_hex = key.to_hex().to_string();
    if let Some(r) = store
        .recovered(&manifest.name)?
        .into_iter()
        .find(|r| r.key == key_hex && r.state == RecoveredState::Complete)
    {
        if let Some(blob_key) = parse_key(&r.weights) {
            if store.blob(&blob_key)?.is_some() {
                return Ok(Recovered {
                    record: r,
                    trial,
                    point: request.point,
                    cached: true,
                });
            }
        }
    }
    let objective = match kind {
        ModelKind::Classifier => Objective::Classifier {
            alpha: recipe.alpha,
            temperature: recipe.temperature,
        },
        ModelKind::Encoder if recipe.loss == "mse" => Objective::Mse,
        ModelKind::Encoder => Objective::Cosine,
        ModelKind::LanguageModel => {
            return Err(Error::recover(format!(
                "run `{}` searched a language model; recovery trains classifiers and encoders",
                manifest.name
            )))
        }
    };
    let variant = variant_settings(loaded.evaluator.settings());
    let settings = variant.compress();
    let needs_ranges = loaded
        .assignment
        .iter()
        .any(|(_, c)| c.act == ActQuant::Int8Static);
    let ranges = if needs_ranges {
        loaded.evaluator.ranges()?.clone()
    } else {
        Default::default()
    };
    let scores = if settings.importance.needs_gradients() {
        Some(loaded.evaluator.weight_scores()?)
    } else {
        None
    };
    let setup = Setup {
        settings,
        scores,
        ranges,
        objective,
    };
    let started = Instant::now();
    let outcome = train::train(
        loaded.model.as_ref(),
        &loaded.assignment,
        &setup,
        &data,
        &recipe,
        progress,
        stop,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let recovered: Arc<dyn Model> =
        Arc::new(RecoveredModel::new(loaded.model.clone(), &outcome.weights)?);
    let ev = CandleEvaluator::with_teacher(
        recovered,
        loaded.model.clone(),
        loaded.data.clone(),
        variant.clone(),
    )?;
    let search = ev.evaluate(&loaded.assignment)?;
    let has_held_out = !loaded.data.held_out.is_empty();
    let held_out = has_held_out
        .then(|| ev.evaluate_on(EvalSplit::HeldOut, &loaded.assignment))
        .transpose()?;
    let before = match store::held_out(store, manifest, &trial)? {
        Some(h) => Some((h.quality, h.metrics)),
        None if has_held_out => {
            let e = loaded
                .evaluator
                .evaluate_on(EvalSplit::HeldOut, &loaded.assignment)?;
            Some((e.quality, e.metrics))
        }
        None => None,
    };
    let bytes = outcome.weights.to_bytes()?;
    let blob_key = blake3::hash(&bytes);
    let record = RecoveredRecord {
        schema: SCHEMA_VERSION,
        key: key_hex,
        trial: trial.number,
        hash: trial.hash.clone(),
        recipe,
        state: if outcome.interrupted {
            RecoveredState::Interrupted
        } else {
            RecoveredState::Complete
        },
        steps: outcome.steps,
        total_steps: outcome.total_steps,
        best_step: outcome.best_step,
        validation_loss: outcome.best_loss,
        initial_validation_loss: outcome.initial_loss,
        validation: data.validation_description.clone(),
        quality: search.quality,
        metrics: search.metrics,
        held_out_quality: held_out.as_ref().map(|h| h.quality),
        held_out_metrics: held_out.map(|h| h.metrics).unwrap_or_default(),
        before_held_out_quality: before.as_ref().map(|b| b.0),
        before_held_out_metrics: before.map(|b| b.1).unwrap_or_default(),
        scale: variant.scale,
        rounding: variant.rounding,
        weights: blob_key.to_hex().to_string(),
        seconds,
        threads: candle_core::utils::get_num_threads(),
        created_unix: store::now_unix(),
    };
    store.put_blob(&blob_key, &bytes)?;
    store.put_recovered(&manifest.name, &record)?;
    Ok(Recovered {
        record,
        trial,
        point: request.point,
        cached: false,
    })
}

/// The recovered variant `which` of run `manifest` — by key prefix (hex), or the latest of point
/// `point` — with its weights.
pub fn stored_weights(store: &dyn Store, record: &RecoveredRecord) -> Result<RecoveredWeights> {
    let key = parse_key(&record.weights).ok_or_else(|| {
        Error::recover(format!(
            "recovered variant {}: a malformed weights key",
            record.key
        ))
    })?;
    let bytes = store.blob(&key)?.ok_or_else(|| {
        Error::recover(format!(
            "recovered variant {}: its weights are not in store {}; recover the point again",
            record.key,
            store.location()
        ))
    })?;
    RecoveredWeights::from_bytes(&bytes, &format!("recovered variant {}", record.key))
}

fn parse_key(hex: &str) -> Option<blake3::Hash> {
    blake3::Hash::from_hex(hex).ok()
}

fn short(hex: &str) -> String {
    hex.chars().take(12).collect()
}

/// The training and validation data of a recovery (see the module docs).
fn train_data(manifest: &RunManifest, loaded: &Loaded, request: &Request) -> Result<TrainData> {
    let c = &manifest.config;
    match (ModelSource::parse(&c.model), loaded.model.inventory().kind) {
        (ModelSource::Demo, _) => {
            if request.data.is_some() {
                return Err(Error::recover(
                    "--data is for encoders (sentences to distil on); the demo trains on its \
                     embedded tune split (2,000 Fashion-MNIST training images)",
                ));
            }
            let fashion = crate::data::FashionMnist::load()?;
            let train = &fashion.tune;
            let mut h = blake3::Hasher::new();
            h.update(b"fashion-mnist-tune\n");
            h.update(&(train.len() as u64).to_le_bytes());
            let labels = loaded.data.calibration_labels.clone().unwrap_or_default();
            let validation = loaded
                .data
                .calibration
                .iter()
                .scan(0usize, |at, b| {
                    let n = b.len();
                    let l = labels
                        .get(*at..*at + n)
                        .map(|l| Tensor::from_slice(l, n, &candle_core::Device::Cpu));
                    *at += n;
                    Some((b.clone(), l))
                })
                .map(|(b, l)| Ok((b, l.transpose()?)))
                .collect::<Result<Vec<_>>>()?;
            Ok(TrainData {
                description: format!(
                    "the tune split ({} Fashion-MNIST training images)",
                    train.len()
                ),
                train: TrainSet::Images {
                    images: train.images.clone(),
                    labels: train.labels.clone(),
                },
                validation,
                validation_description: format!(
                    "the calibration split ({} images)",
                    loaded.data.sizes.calibration
                ),
                fingerprint: h.finalize(),
            })
        }
        (ModelSource::Folder(dir), ModelKind::Encoder) => {
            let encoder = crate::model::BertEncoder::load(&dir)?;
            let batch = request
                .batch
                .unwrap_or(defaults(ModelKind::Encoder).2)
                .max(1);
            let (sentences, what) = match &request.data {
                Some(p) => (
                    crate::data::text::load_sentences(p)?,
                    p.display().to_string(),
                ),
                // The shipped tune sentences (none of them is in a shipped split); a run on the
                // user's own sentences adds its calibration split, its domain's text. The search
                // split validates, so it is never trained on; the held-out split is never read.
                None => {
                    let tune = crate::data::text::shipped_tune_sentences();
                    let mut s: Vec<String> = tune.iter().map(|s| s.to_string()).collect();
                    match &c.data {
                        Some(p) => {
                            let split = crate::data::text::TextSplit::from_file(Path::new(p))?;
                            s.extend(split.calibration.iter().cloned());
                            (
                                s,
                                format!(
                                    "the shipped tune sentences ({}) and the run's calibration \
                                     split ({})",
                                    tune.len(),
                                    split.calibration.len()
                                ),
                            )
                        }
                        None => (s, "the shipped tune sentences".to_string()),
                    }
                }
            };
            let batches = sentences
                .chunks(batch)
                .map(|c| encoder.tokenize(c))
                .collect::<Result<Vec<Batch>>>()?;
            Ok(TrainData {
                description: format!("{what} ({} sentences)", sentences.len()),
                train: TrainSet::Batches(batches),
                validation: loaded.data.eval.iter().map(|b| (b.clone(), None)).collect(),
                validation_description: format!(
                    "the search split ({} sentences)",
                    loaded.data.sizes.search
                ),
                fingerprint: crate::data::text::fingerprint(&sentences),
            })
        }
        (_, kind) => Err(Error::recover(format!(
            "run `{}` searched {} ({kind}); recovery trains the demo classifier and BERT-family \
             encoders",
            manifest.name, c.model
        ))),
    }
}
