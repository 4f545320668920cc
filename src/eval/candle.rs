//! The candle evaluator: compressed weights, candle forward, metrics against the f32 outputs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use candle_core::{DType, Tensor};

use super::EvalData;
use super::{metrics, EvalSplit, Evaluation, Evaluator};
use crate::compress::{
    self, CompressCache, CompressSettings, LayerInputs, RangeMethod, Rounding, ScaleMethod,
};
use crate::compress::{Importance, ImportanceSums, LayerScores};
use crate::data::Batch;
use crate::error::{Error, Result};
use crate::model::gradients::{chunk_gradients, CalibrationLoss};
use crate::model::{ForwardCtx, LayerKernel, LayerOverride, Model, ModelKind, Overrides};
use crate::space::{ActQuant, Assignment, Choice, LayerInfo, LayerKind};

/// How the evaluator compresses; part of its fingerprint (but for the cache size).
#[derive(Clone, Debug)]
pub struct EvalSettings {
    /// How weight quantization picks its scales.
    pub scale: ScaleMethod,
    /// How integer weights are rounded (round-to-nearest or GPTQ).
    pub rounding: Rounding,
    /// How static activation ranges are calibrated.
    pub act_range: RangeMethod,
    /// How pruning ranks weights (magnitude, or gradient scores on the calibration split).
    pub importance: Importance,
    /// Bytes of compressed weights kept in memory.
    pub cache_bytes: usize,
}

impl Default for EvalSettings {
    fn default() -> Self {
        EvalSettings {
            scale: ScaleMethod::Mse,
            rounding: Rounding::Rtn,
            act_range: RangeMethod::MinMax,
            importance: Importance::Magnitude,
            cache_bytes: 1 << 30,
        }
    }
}

impl EvalSettings {
    fn describe(&self) -> String {
        let mut d = format!("scale={:?};act_range={:?}", self.scale, self.act_range);
        // Round-to-nearest adds nothing: an rtn evaluator is described as before rounding was a
        // setting (its fingerprint changed with the v2 key alone).
        if self.rounding != Rounding::Rtn {
            d.push_str(&format!(";rounding={}", self.rounding));
        }
        // Likewise magnitude importance, the only one before importance was a setting.
        if !self.importance.is_magnitude() {
            d.push_str(&format!(";importance={}", self.importance));
        }
        d
    }

    /// How weights are compressed: the scale method, the rounding and the pruning importance.
    pub fn compress(&self) -> CompressSettings {
        CompressSettings {
            scale: self.scale,
            rounding: self.rounding,
            importance: self.importance,
        }
    }
}

/// Evaluates assignments with a candle model.
pub struct CandleEvaluator {
    model: Arc<dyn Model>,
    /// The model whose f32 outputs are the reference: `model` itself, or the original model of a
    /// recovered variant ([`CandleEvaluator::with_teacher`]).
    teacher: Arc<dyn Model>,
    data: EvalData,
    settings: EvalSettings,
    /// The f32 model's output rows on the search split.
    reference: Reference,
    /// The f32 model's output rows on the held-out split, computed on first use.
    held_out_reference: OnceLock<std::result::Result<Reference, String>>,
    /// Proxy splits by size, each with the f32 model's outputs on it, built on first use.
    proxies: Mutex<HashMap<u32, Arc<ProxySplit>>>,
    cache: CompressCache,
    /// Original weights by layer.
    weights: HashMap<String, Tensor>,
    /// Input statistics (`H`) and static activation ranges per layer, from one capture of the
    /// calibration split on first use.
    calibration: OnceLock<Result<Calibration>>,
    /// Pruning importance scores per layer (gradient importance), from the calibration split on
    /// first use.
    scores: OnceLock<std::result::Result<LayerScores, String>>,
    fingerprint: blake3::Hash,
}

fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(t.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?)
}

impl CandleEvaluator {
    /// Runs the f32 model once on the search split to get the reference outputs (the held-out
    /// split's are computed when it is first evaluated).
    pub fn new(
        model: Arc<dyn Model>,
        data: EvalData,
        settings: EvalSettings,
    ) -> Result<CandleEvaluator> {
        CandleEvaluator::build(model.clone(), model, data, settings)
    }

    /// An evaluator of `model` (a fine-tuned copy of `teacher`: a recovered variant, see
    /// [`crate::recover`]) whose reference outputs are `teacher`'s: its qualities measure the
    /// distance to the original f32 model, as every other point's do. `model` and `teacher` must
    /// have the same inventory. Its fingerprint hashes both.
    pub fn with_teacher(
        model: Arc<dyn Model>,
        teacher: Arc<dyn Model>,
        data: EvalData,
        settings: EvalSettings,
    ) -> Result<CandleEvaluator> {
        if model.inventory().layers != teacher.inventory().layers {
            return Err(Error::Eval {
                message: "a recovered model must have its teacher's layers".into(),
            });
        }
        CandleEvaluator::build(model, teacher, data, settings)
    }

    fn build(
        model: Arc<dyn Model>,
        teacher: Arc<dyn Model>,
        data: EvalData,
        settings: EvalSettings,
    ) -> Result<CandleEvaluator> {
        if data.eval.is_empty() {
            return Err(Error::Eval {
                message: format!("no evaluation data ({})", data.description),
            });
        }
        if settings.importance.needs_gradients() {
            // Refused up front, not at the first pruned layer: the loss needs labels or embeddings.
            let labels = data.calibration_labels.as_ref().map(|_| &[][..]);
            let what = format!("--importance {}", settings.importance);
            CalibrationLoss::for_kind(model.inventory().kind, labels, &what)?;
        }
        let reference = reference_outputs(teacher.as_ref(), &data.eval, data.labels.as_deref())?;
        let weights = model
            .inventory()
            .layers
            .iter()
            .map(|l| Ok((l.name.clone(), model.weight(&l.name)?)))
            .collect::<Result<_>>()?;
        let mut h = blake3::Hasher::new();
        // v2: act8-dynamic ranges per sample (they were per batch) and N:M along input channels
        // with a dense ragged tail (issue 10) — evaluations stored under v1 measured other arithmetic.
        h.update(b"mpsearch-candle-evaluator-v2\n");
        h.update(model.fingerprint().as_bytes());
        if teacher.fingerprint() != model.fingerprint() {
            h.update(b"teacher\n");
            h.update(teacher.fingerprint().as_bytes());
        }
        h.update(data.fingerprint.as_bytes());
        h.update(settings.describe().as_bytes());
        if settings.importance.needs_gradients() {
            // The scores come from the calibration labels too, which the data's fingerprint (older
            // than gradient importance) leaves out; magnitude runs keep their fingerprint.
            if let Some(labels) = &data.calibration_labels {
                h.update(b"calibration labels\n");
                labels.iter().for_each(|l| {
                    h.update(&l.to_le_bytes());
                });
            }
        }
        let fingerprint = h.finalize();
        Ok(CandleEvaluator {
            cache: CompressCache::new(settings.cache_bytes)?,
            model,
            teacher,
            data,
            settings,
            reference,
            held_out_reference: OnceLock::new(),
            proxies: Mutex::new(HashMap::new()),
            weights,
            calibration: OnceLock::new(),
            scores: OnceLock::new(),
            fingerprint,
        })
    }

    /// Whether outputs are class logits with labels (else embeddings).
    fn classifies(&self) -> bool {
        self.model.inventory().kind == ModelKind::Classifier && self.data.labels.is_some()
    }

    /// The model being evaluated.
    pub fn model(&self) -> &Arc<dyn Model> {
        &self.model
    }

    /// How it compresses.
    pub fn settings(&self) -> &EvalSettings {
        &self.settings
    }

    /// The data it is evaluated on.
    pub fn data(&self) -> &EvalData {
        &self.data
    }

    /// The compressed-weight cache (for its counters).
    pub fn cache(&self) -> &CompressCache {
        &self.cache
    }

    /// The proxy of the first `n` search samples: its batches, labels and the f32 model's outputs
    /// on it, built once per size.
    fn proxy(&self, n: u32) -> Result<Arc<ProxySplit>> {
        let mut proxies = self.proxies.lock().map_err(|_| Error::Eval {
            message: "a proxy evaluation panicked earlier".into(),
        })?;
        if let Some(p) = proxies.get(&n) {
            return Ok(p.clone());
        }
        let samples = self.data.sizes.search;
        if n == 0 || n as usize > samples {
            return Err(Error::Eval {
                message: format!(
                    "a proxy of {n} samples: the search split has {samples} ({})",
                    self.data.description
                ),
            });
        }
        let (batches, labels, _) =
            super::data::cut(&self.data.eval, self.data.labels.as_deref(), n as usize)?;
        let reference = reference_outputs(self.teacher.as_ref(), &batches, labels.as_deref())?;
        let p = Arc::new(ProxySplit {
            batches,
            labels,
            reference,
        });
        proxies.insert(n, p.clone());
        Ok(p)
    }

    /// The f32 model's outputs on the search or held-out split (the held-out ones computed once,
    /// on first use).
    fn reference_on(&self, split: EvalSplit) -> Result<&Reference> {
        match split {
            EvalSplit::Proxy(_) => Err(Error::Eval {
                message: "a proxy's reference is kept with its batches".into(),
            }),
            EvalSplit::Search => Ok(&self.reference),
            EvalSplit::HeldOut => self
                .held_out_reference
                .get_or_init(|| {
                    if self.data.held_out.is_empty() {
                        return Err(format!("no held-out data ({})", self.data.description));
                    }
                    reference_outputs(
                        self.teacher.as_ref(),
                        &self.data.held_out,
                        self.data.held_out_labels.as_deref(),
                    )
                    .map_err(|e| format!("the f32 model's held-out outputs: {e}"))
                })
                .as_ref()
                .map_err(|message| Error::Eval {
                    message: message.clone(),
                }),
        }
    }

    /// Static activation ranges (`act8-static`) by layer: every layer's input captured on the
    /// calibration split, calibrated once by the settings' range method. The sensitivity model's
    /// activation error uses these same ranges.
    pub fn ranges(&self) -> Result<&HashMap<String, (f32, f32)>> {
        self.calibration().map(|c| &c.ranges)
    }

    /// Every layer's input statistics (`H = XᵀX`, [`compress::InputStats`]) on the calibration split
    /// (never the search or held-out split), accumulated on the first call and kept: output-error
    /// scales, GPTQ and the sensitivity model's cheap errors share them.
    pub fn input_stats(&self) -> Result<&LayerInputs> {
        self.calibration().map(|c| &c.inputs)
    }

    /// Every layer's pruning importance scores under the settings' gradient importance
    /// ([`compress::Importance`]), from the gradients of the calibration loss on the calibration
    /// split, one sample per backward pass; computed on the first call and kept. An error for
    /// magnitude importance (which needs no scores) and for models it does not cover.
    pub fn weight_scores(&self) -> Result<&LayerScores> {
        self.weight_scores_with(&mut |_, _| {})
    }

    /// Whether some choice of `space` prunes by this evaluator's gradient importance scores.
    pub fn space_needs_scores(&self, space: &crate::space::SearchSpace) -> bool {
        let compress = self.settings.compress();
        (space.groups.iter())
            .flat_map(|g| &g.choices)
            .any(|c| compress.needs_scores(c))
    }

    /// [`CandleEvaluator::weight_scores`], calling `progress(samples done, samples)` after each
    /// backward pass when they are computed now.
    pub fn weight_scores_with(
        &self,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<&LayerScores> {
        let importance = self.settings.importance;
        if !importance.needs_gradients() {
            return Err(Error::eval(format!(
                "{importance} importance ranks weights by themselves: it has no scores"
            )));
        }
        self.scores
            .get_or_init(|| {
                importance_scores(
                    self.model.as_ref(),
                    &self.data,
                    importance,
                    IMPORTANCE_CHUNK,
                    progress,
                )
                .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|message| {
                Error::eval(format!(
                    "{importance} importance scores on the calibration split: {message}"
                ))
            })
    }

    /// The input statistics and static ranges, from one capture of the calibration split (the first
    /// call captures, later ones share the result).
    fn calibration(&self) -> Result<&Calibration> {
        let r = self.calibration.get_or_init(|| {
            Calibration::capture(
                self.model.as_ref(),
                &self.data.calibration,
                self.settings.act_range,
            )
        });
        r.as_ref().map_err(|e| Error::Eval {
            message: format!(
                "capturing the layers' inputs on the calibration split (input statistics, static \
                 activation ranges) failed: {e}"
            ),
        })
    }

    /// The per-layer overrides the evaluator runs an assignment with (compressing weights through
    /// the cache): a layer in a GGML block format runs the arithmetic of its deployed kernel,
    /// candle's `QMatMul` on the weight quantized by candle, computed densely
    /// ([`LayerKernel::emulated`](crate::model::LayerKernel::emulated): two of them for `rank<P>`,
    /// the kept rows for `channels<P>`), so its quality is the kernel's, activation quantization
    /// included;
    /// every other layer runs its dense compressed weight (fake-quantized values, and `act8-*` as a
    /// quantize–dequantize of the input). An embedding table is dense whatever its format: a look-up
    /// reads rows, and every runtime dequantizes the rows it reads (llama.cpp's `get_rows` too).
    pub fn overrides(&self, a: &Assignment) -> Result<Overrides> {
        self.overrides_for(a, Purpose::Evaluate)
    }

    /// The per-layer overrides of the real compressed model of an assignment on candle, what
    /// `mpsearch measure` times: every layer through the kernel its choice deploys to
    /// ([`compress::deploy_kernel`]): f32 unchanged; f16 on candle's f16 matmul; bf16 and int* as
    /// dense f32 of their values (candle has no bf16 gemm on CPU and no integer kernel but the
    /// q-formats'), with `act8-*` as the evaluator runs it; q-formats on `QMatMul`; `rank<P>` as two
    /// smaller kernels, each in the format's kernel; `channels<P>` as the kept rows only (a smaller
    /// matrix, the removed outputs exactly zero); `sparse<P>` and `N:M` computed dense (candle has no
    /// sparse kernels). Embedding tables are dense, as in [`CandleEvaluator::overrides`]. A q-format
    /// layer runs the very kernel the evaluator measured; [`CandleEvaluator::describe_deployment`]
    /// says what was built for each layer.
    pub fn deploy_overrides(&self, a: &Assignment) -> Result<Overrides> {
        self.overrides_for(a, Purpose::Deploy)
    }

    /// What `overrides` ([`CandleEvaluator::deploy_overrides`] of `a`) run for each layer of the
    /// model, in inventory order ([`super::describe_deployment`]).
    pub fn describe_deployment(
        &self,
        a: &Assignment,
        overrides: &Overrides,
    ) -> Vec<super::DeployedLayer> {
        super::describe_deployment(&self.model.inventory().layers, a, overrides)
    }

    fn overrides_for(&self, a: &Assignment, purpose: Purpose) -> Result<Overrides> {
        let mut out = Overrides::new();
        for l in &self.model.inventory().layers {
            let choice = a.get(&l.name).copied().unwrap_or(Choice::F32);
            if choice.is_uncompressed() {
                continue;
            }
            let kernel = self.kernel(l, &choice, purpose)?;
            let act_range = match choice.act {
                ActQuant::Int8Static => {
                    Some(*self.ranges()?.get(&l.name).ok_or_else(|| Error::Eval {
                        message: format!("no calibrated activation range for layer `{}`", l.name),
                    })?)
                }
                _ => None,
            };
            out.insert(
                l.name.clone(),
                LayerOverride {
                    kernel,
                    act: choice.act,
                    act_range,
                    straight_through: false,
                },
            );
        }
        Ok(out)
    }

    /// The kernel of layer `l` under `choice` (`None`: the original weight), through the cache.
    fn kernel(
        &self,
        l: &LayerInfo,
        choice: &Choice,
        purpose: Purpose,
    ) -> Result<Option<LayerKernel>> {
        if !compress::changes_weight(choice) {
            return Ok(None);
        }
        let original = &self.weights[&l.name];
        let settings = self.settings.compress();
        let inputs = if settings.needs_inputs(choice) {
            self.input_stats()?.get(&l.name).map(AsRef::as_ref)
        } else {
            None
        };
        let scores = if settings.needs_scores(choice) {
            self.weight_scores()?.get(&l.name).map(AsRef::as_ref)
        } else {
            None
        };
        let deployed = match purpose {
            Purpose::Evaluate => choice.weights.ggml().is_some(),
            Purpose::Deploy => !compress::deploys_dense(choice),
        };
        if deployed && l.kind != LayerKind::Embedding {
            let kernel = self.cache.get_or_build(&l.name, choice, settings, || {
                compress::deploy_kernel(original, choice, &settings, inputs, scores)?.ok_or_else(
                    || Error::Eval {
                        message: format!("`{choice}` builds no kernel for layer `{}`", l.name),
                    },
                )
            })?;
            // Quality: the kernel's arithmetic, computed densely (same blocks, f32 summation order).
            return Ok(Some(match purpose {
                Purpose::Evaluate => kernel.emulated(),
                Purpose::Deploy => kernel,
            }));
        }
        let weight = self
            .cache
            .get_or_apply_with(&l.name, original, choice, &settings, inputs, scores)?;
        Ok(Some(LayerKernel::Dense(weight)))
    }
}

/// What a set of overrides is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    /// Quality: dense compressed weights, and the real kernel of the GGML block formats.
    Evaluate,
    /// The real compressed model on candle (`measure`).
    Deploy,
}

impl Evaluator for CandleEvaluator {
    fn fingerprint(&self) -> blake3::Hash {
        self.fingerprint
    }

    fn objective(&self) -> &'static str {
        if self.classifies() || self.model.inventory().kind == ModelKind::LanguageModel {
            "kl_divergence"
        } else {
            "cosine_distance"
        }
    }

    fn evaluate(&self, a: &Assignment) -> Result<Evaluation> {
        self.evaluate_on(EvalSplit::Search, a)
    }

    fn search_samples(&self) -> Option<usize> {
        Some(self.data.sizes.search)
    }

    fn evaluate_on(&self, split: EvalSplit, a: &Assignment) -> Result<Evaluation> {
        let started = Instant::now();
        let proxy = match split {
            EvalSplit::Proxy(n) => Some(self.proxy(n)?),
            _ => None,
        };
        let (reference, batches, labels) = match &proxy {
            Some(p) => (&p.reference, &p.batches[..], p.labels.as_deref()),
            None => {
                let (batches, labels) = self.data.split(split);
                (self.reference_on(split)?, batches, labels)
            }
        };
        let overrides = self.overrides(a)?;
        let ctx = ForwardCtx {
            overrides: Some(&overrides),
            capture: None,
            timer: None,
        };
        let metrics = match (labels, reference) {
            (labels, Reference::Lm(r)) => {
                // The rows are read where the forward pass wrote them: copying a split's logits
                // into rows of their own (100 MB for SmolLM2's search split) cost more than the
                // metrics' exps.
                let logits = batches
                    .iter()
                    .map(|b| {
                        Ok(self
                            .model
                            .forward(b, &ctx)?
                            .to_dtype(DType::F32)?
                            .contiguous()?)
                    })
                    .collect::<Result<Vec<Tensor>>>()?;
                let held = logits
                    .iter()
                    .map(|t| Ok((t.storage_and_layout(), t.dims2()?)))
                    .collect::<Result<Vec<_>>>()?;
                let mut rows: Vec<&[f32]> = Vec::new();
                for ((storage, layout), (n, width)) in &held {
                    let values = match &**storage {
                        candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)) => v,
                        _ => {
                            return Err(Error::Eval {
                                message: "a language model's logits are not f32 on the CPU".into(),
                            })
                        }
                    };
                    let start = layout.start_offset();
                    let values = &values[start..start + n * width];
                    rows.extend(values.chunks_exact((*width).max(1)));
                }
                match labels {
                    Some(next) if next.len() == rows.len() && r.len() == rows.len() => {
                        metrics::language_model(r, &rows, next)
                    }
                    _ => {
                        return Err(Error::Eval {
                            message: format!(
                            "the {split} split's next tokens do not match its {} positions ({})",
                            rows.len(),
                            self.data.description
                        ),
                        })
                    }
                }
            }
            (Some(labels), Reference::Outputs(r)) if self.classifies() => {
                metrics::classifier(r, &outputs(self.model.as_ref(), batches, &ctx)?, labels)
            }
            (_, Reference::Outputs(r)) => {
                metrics::encoder(r, &outputs(self.model.as_ref(), batches, &ctx)?)
            }
        };
        let quality = metrics.get(self.objective()).copied().unwrap_or(f64::NAN);
        if !quality.is_finite() {
            return Err(Error::Eval {
                message: format!(
                    "the compressed model's {} on the {split} split is {quality} (not finite)",
                    self.objective()
                ),
            });
        }
        Ok(Evaluation {
            quality,
            metrics,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// A proxy: the first samples of the search split, and the f32 model's outputs on them.
struct ProxySplit {
    batches: Vec<Batch>,
    labels: Option<Vec<u32>>,
    reference: Reference,
}

/// What the evaluator takes from the calibration split, in one capture of every layer's inputs.
#[derive(Debug)]
struct Calibration {
    /// `H` per layer.
    inputs: LayerInputs,
    /// Static activation ranges per layer.
    ranges: HashMap<String, (f32, f32)>,
}

impl Calibration {
    /// Captures every layer's inputs on `batches` once, accumulating `H` and calibrating the static
    /// ranges by `method` ([`compress::calibrate_range`]): min/max merges per captured tensor (the
    /// extremes of the extremes are the extremes), a percentile needs all of a layer's values at once,
    /// so its inputs are kept until the end.
    fn capture(model: &dyn Model, batches: &[Batch], method: RangeMethod) -> Result<Calibration> {
        let mut extremes: HashMap<String, (f32, f32)> = HashMap::new();
        let mut kept: HashMap<String, Vec<Tensor>> = HashMap::new();
        let inputs = crate::model::capture_input_stats_with(model, batches, &mut |name, x| {
            match method {
                RangeMethod::MinMax if x.elem_count() > 0 => {
                    let (lo, hi) = compress::calibrate_range(std::slice::from_ref(x), method)?;
                    let e = extremes.entry(name.to_string()).or_insert((lo, hi));
                    *e = (e.0.min(lo), e.1.max(hi));
                }
                RangeMethod::MinMax => {}
                RangeMethod::Percentile(_) => {
                    kept.entry(name.to_string()).or_default().push(x.clone())
                }
            }
            Ok(())
        })?;
        for (name, v) in kept {
            extremes.insert(name, compress::calibrate_range(&v, method)?);
        }
        Ok(Calibration {
            inputs,
            ranges: extremes,
        })
    }
}

/// Samples per backward pass of the importance scores: one, the per-sample gradients the Taylor and
/// Fisher criteria are defined on (see [`compress::Importance`]).
pub const IMPORTANCE_CHUNK: usize = 1;

/// Every layer's scores under `importance` from the gradients of `model`'s calibration loss on
/// `data`'s calibration split, in chunks of `chunk` samples ([`crate::model::gradients`]);
/// `progress(samples done, samples)` after each chunk.
pub fn importance_scores(
    model: &dyn Model,
    data: &EvalData,
    importance: compress::Importance,
    chunk: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<LayerScores> {
    let labels: Option<Vec<Tensor>> = match &data.calibration_labels {
        Some(all) => {
            let mut at = 0;
            let mut out = Vec::with_capacity(data.calibration.len());
            for b in &data.calibration {
                let n = b.len();
                let part = all.get(at..at + n).ok_or_else(|| {
                    Error::eval(format!(
                        "{} calibration labels for more calibration samples",
                        all.len()
                    ))
                })?;
                out.push(Tensor::new(part, &candle_core::Device::Cpu)?);
                at += n;
            }
            Some(out)
        }
        None => None,
    };
    let inventory = model.inventory();
    let what = format!("--importance {importance}");
    let loss = CalibrationLoss::for_kind(inventory.kind, labels.as_deref(), &what)?;
    let mut sums: Vec<ImportanceSums> = inventory
        .layers
        .iter()
        .map(|l| {
            let w = model.weight(&l.name)?.flatten_all()?.to_dtype(DType::F32)?;
            ImportanceSums::new(importance, w.to_vec1::<f32>()?, l.shape[0])
        })
        .collect::<Result<_>>()?;
    chunk_gradients(
        model,
        &data.calibration,
        loss,
        chunk,
        &mut |i, g, size| sums[i].add(g, size),
        progress,
    )?;
    inventory
        .layers
        .iter()
        .zip(sums)
        .map(|(l, s)| Ok((l.name.clone(), Arc::new(s.finish()?))))
        .collect()
}

/// What the evaluator keeps of the uncompressed model's outputs on a split.
enum Reference {
    /// Its output rows (class logits, embeddings).
    Outputs(Vec<Vec<f32>>),
    /// A language model's next-token distributions, prepared once so that each evaluation computes
    /// only the compressed model's side of the KL.
    Lm(metrics::LmReference),
}

/// The uncompressed model's outputs on `batches` (with the split's `labels`: a language model's next
/// tokens).
fn reference_outputs(
    model: &dyn Model,
    batches: &[Batch],
    labels: Option<&[u32]>,
) -> Result<Reference> {
    let rows = outputs(model, batches, &ForwardCtx::default())?;
    Ok(if model.inventory().kind == ModelKind::LanguageModel {
        Reference::Lm(metrics::LmReference::new(rows, labels))
    } else {
        Reference::Outputs(rows)
    })
}

/// The model's output rows on `batches`, in order.
fn outputs(model: &dyn Model, batches: &[Batch], ctx: &ForwardCtx) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::new();
    for b in batches {
        out.extend(rows(&model.forward(b, ctx)?)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_settings_describe_as_before_the_later_settings_existed() {
        // The evaluator fingerprint of every stored run hashes this text: settings added later
        // (rounding, importance) appear only when not their default.
        let d = EvalSettings::default();
        assert_eq!(d.describe(), "scale=Mse;act_range=MinMax");
        let gptq = EvalSettings {
            rounding: Rounding::gptq(),
            ..EvalSettings::default()
        };
        assert_eq!(gptq.describe(), "scale=Mse;act_range=MinMax;rounding=gptq");
        let fisher = EvalSettings {
            importance: Importance::Fisher,
            ..gptq
        };
        assert_eq!(
            fisher.describe(),
            "scale=Mse;act_range=MinMax;rounding=gptq;importance=fisher"
        );
    }
}
