//! # Calibrating inside the model
//!
//! `calibrate --model M` times the model's own layers where they run: inside whole forward passes of
//! the model, on a batch of its own data. A matrix timed alone keeps its weight in cache from one run
//! to the next and its input laid out for it; inside the model every layer finds its weight evicted
//! by the layers before it, and a convolution runs candle's `conv2d` (or, for a non-dense kernel, the
//! im2col patches, the product and the output layout). On this machine the f32 layers of
//! all-MiniLM-L6-v2 at 32 tokens took 1.4–1.8× their isolated time: a profile of isolated products
//! predicts half of the model's real time.
//!
//! For each kernel the profile charges (f32, the plain f16 path, every GGML block format: the
//! [`Kernel`]s with a [`Kernel::precision`]), the model is deployed uniformly — every layer that fits
//! the kernel runs it, built exactly as `mpsearch measure` builds it ([`deploy_kernel`]) — and its
//! forward passes are timed with a [`LayerTimes`] timer, which records each layer's weight product.
//! A layer shape's figure is the mean over the layers of that shape within a pass, then the least over
//! the passes of every round ([`crate::timing`] says why); a round goes over every deployment in turn
//! (as for isolated measurements), so a slow spell of the machine does not fall on one kernel's
//! rounds.
//!
//! The same is done for every **structured variant** of a search space's choices — activation
//! quantization (`act8-*`), removed channels (`channels<P>`: a smaller matrix whose rows are scattered
//! back), low rank (`rank<P>`: two products, and for a convolution the im2col path), a convolution's
//! chain (`tucker<P>`, `cp<P>`: three or four candle `conv2d`s, each with its own per-call cost, which
//! on small inputs is most of it) — on each of the float or block kernels they combine with in the
//! space. Their figures become `[[measured]]` entries of the kernel that runs with that `act`,
//! `sparsity = "channels<P>"`, `rank = P` or `conv = "tucker<P>"` (a whole factorized layer), which
//! the cost model prefers to adding up its analytic parts. Integer and bf16
//! weights run as the f32 path here (candle has no integer kernel), and unstructured or N:M sparsity
//! as dense, so neither makes a variant of its own.
//!
//! The f32 passes also give the model's **non-matmul work**: a pass's wall time minus the time of all
//! its layers' products and look-ups — attention scores and softmax, norms, activations, residual
//! adds, biases, the pooling. The cost model adds it to every assignment of this model at this batch
//! ([`super::super::profile::ModelTerm`]); it does not depend on the layers' formats. Each other
//! kernel's deployment, held against the f32 passes, gives that kernel's **spill** ([`spill`]): what
//! each of its layers adds to the rest of the pass (candle's block formats run on a pool of threads
//! that spin after each product and take cores from the f32 work after it), written as the term's
//! `spill_us` and charged per layer on that kernel — when its passes show it ([`agreed_spill`]: a
//! rank test against the f32 passes), and as 0 when they cannot tell it from their noise.

use std::collections::BTreeMap;

use super::{CalibrateOptions, Kernel, MatrixShape, Measurement};
use crate::compress::{deploy_kernel, CompressSettings};
use crate::cost::profile::{layers_key, MeasuredEntry, ModelTerm, Precision};
use crate::data::Batch;
use crate::error::Result;
use crate::model::{ForwardCtx, LayerOverride, LayerTimes, Model, Overrides};
use crate::space::{kept_rows, ActQuant, Choice, LayerInfo, Sparsity, WeightQuant};
use crate::timing::{CpuSample, RoundFigure, Schedule};

/// A batch the model is timed on, and the batch the cost model counts it as.
#[derive(Clone, Debug)]
pub struct ModelInput {
    pub batch: Batch,
    /// Samples per inference as the cost model counts them: images, or tokens.
    pub cost_batch: u32,
    /// What the batch is, for people (`1 sentence of 32 tokens from the search split`).
    pub description: String,
}

/// The model's non-matmul work at one batch, measured.
#[derive(Clone, Debug, PartialEq)]
pub struct NonMatmul {
    pub cost_batch: u32,
    pub description: String,
    /// The least, over the f32 passes of every round, of (pass time − its layers' time), µs.
    pub us: f64,
    /// Its interquartile range in the round with the lowest median, µs.
    pub spread_us: f64,
    /// The fastest f32 forward pass, µs.
    pub forward_us: f64,
    pub round_medians_us: Vec<f64>,
    pub other_load: Option<f64>,
    /// Per kernel precision other than f32: what each layer on that kernel adds to the rest of the
    /// pass, µs ([`agreed_spill`]; 0 where its passes could not tell it from nothing).
    pub spill_us: BTreeMap<Precision, f64>,
    /// The spills written as 0 because the rank test did not show them, as measured.
    pub spill_within_noise: BTreeMap<Precision, Spill>,
}

/// A kernel's spill as [`agreed_spill`] judges it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spill {
    /// What is written and charged per layer, µs: the measured spill, or 0 when the passes cannot
    /// tell it from nothing.
    pub us: f64,
    /// What the fastest passes of all rounds gave ([`spill`]), µs.
    pub measured_us: f64,
    /// The rank test's z (positive: the kernel's passes spend longer outside its layers) and the
    /// passes of each deployment it compared; `None` with fewer than [`SPILL_LEAST_PASSES`].
    pub rank_z: Option<(f64, usize, usize)>,
}

/// |z| beyond which the rank test counts a spill: a two-sided 5% level.
pub const SPILL_Z: f64 = 1.959_964;

/// Passes of each deployment the rank test needs (where its normal approximation holds).
pub const SPILL_LEAST_PASSES: usize = 8;

/// What [`measure`] measured: per layer shape, kernel and batch, the non-matmul terms, and the
/// structured variants' `[[measured]]` entries.
#[derive(Clone, Debug, Default)]
pub struct InModel {
    pub measurements: Vec<Measurement>,
    pub non_matmul: Vec<NonMatmul>,
    pub variants: Vec<MeasuredEntry>,
}

impl InModel {
    /// The `[[model]]` terms of the non-matmul work, for the model named `name` whose layers are
    /// `layers` (µs to 0.1).
    pub fn terms(&self, name: &str, layers: &[LayerInfo]) -> Vec<ModelTerm> {
        let key = layers_key(layers);
        self.non_matmul
            .iter()
            .map(|n| ModelTerm {
                name: name.to_string(),
                layers: key.clone(),
                batch: n.cost_batch,
                us: super::write::round(n.us, 1),
                spread_us: Some(super::write::round(n.spread_us, 1)),
                input: Some(format!(
                    "{}: f32 forward {:.0} µs, of which {:.0} µs outside the layers{}",
                    n.description,
                    n.forward_us,
                    n.us,
                    within_noise(&n.spill_within_noise)
                )),
                spill_us: n
                    .spill_us
                    .iter()
                    .map(|(&p, &us)| (p, super::write::round(us, 1)))
                    .collect(),
            })
            .collect()
    }
}

/// The structured variants of `choices` (see the module docs), each once, as the choice deployed to
/// time it: its weights as the kernel that runs them (f32 for integer and bf16 weights, f16, or the
/// block format), its activation quantization, `channels<P>` (other sparsity is computed dense) and
/// rank. Plain kernels (no act, channels or rank) are not variants: [`kernels`] times them.
pub fn variants(choices: &[Choice]) -> Vec<Choice> {
    let mut out: Vec<Choice> = Vec::new();
    for c in choices {
        let v = Choice {
            weights: match c.weights {
                // A chain of convolutions runs its factors' values in f32 whatever their format.
                _ if c.conv.is_some() => WeightQuant::F32,
                WeightQuant::F16 => WeightQuant::F16,
                WeightQuant::Ggml(g) => WeightQuant::Ggml(g),
                _ => WeightQuant::F32,
            },
            act: c.act,
            sparsity: match c.sparsity {
                Sparsity::Channels(p) => Sparsity::Channels(p),
                _ => Sparsity::None,
            },
            rank: c.rank,
            conv: c.conv,
        };
        let plain = v.act == ActQuant::None
            && v.sparsity == Sparsity::None
            && v.rank.is_none()
            && v.conv.is_none();
        if !plain && !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// The weight choice a kernel deploys.
fn choice(kernel: Kernel) -> Option<Choice> {
    let weights = match kernel.precision()? {
        Precision::F32 => WeightQuant::F32,
        Precision::F16 => WeightQuant::F16,
        Precision::Ggml(g) => WeightQuant::Ggml(g),
        _ => return None,
    };
    Some(Choice::weights(weights))
}

/// The kernels [`measure`] times: those of `kernels` a profile charges.
pub fn kernels(kernels: &[Kernel]) -> Vec<Kernel> {
    kernels
        .iter()
        .copied()
        .filter(|&k| choice(k).is_some())
        .collect()
}

/// The model deployed with `choice` on every matrix layer it fits, as `measure` builds it, and the
/// layers it runs on (by name, with their shapes). f32 needs no override.
fn deploy(
    model: &dyn Model,
    choice: &Choice,
) -> Result<(Overrides, BTreeMap<String, MatrixShape>)> {
    let mut overrides = Overrides::new();
    let mut layers = BTreeMap::new();
    for info in &model.inventory().layers {
        let Some(shape) = MatrixShape::of_layer(info) else {
            continue;
        };
        if let WeightQuant::Ggml(g) = choice.weights {
            let kernel = Kernel::Quant(crate::compress::ggml::dtype(g));
            if kernel.skip_reason(&shape).is_some() {
                continue;
            }
        }
        if *choice != Choice::F32 {
            let w = model.weight(&info.name)?;
            // A factor whose in-features a block format does not fit: not this layer.
            let Ok(kernel) = deploy_kernel(&w, choice, &CompressSettings::default(), None, None)
            else {
                continue;
            };
            overrides.insert(
                info.name.clone(),
                LayerOverride {
                    kernel,
                    act: choice.act,
                    // A static range is calibrated on data; its value does not change the work.
                    act_range: (choice.act == ActQuant::Int8Static).then_some((-1.0, 1.0)),
                    straight_through: false,
                },
            );
        }
        layers.insert(info.name.clone(), shape);
    }
    Ok((overrides, layers))
}

/// One timed pass: its wall time, and per layer the time of its product, µs.
type Pass = (f64, BTreeMap<String, f64>);

/// One round's passes, and the load other processes put on the machine meanwhile.
type Round = (Vec<Pass>, Option<f64>);

/// Times `model` on each of `inputs` with each of the profile's kernels among `opts.kernels` (see the
/// module docs): `opts.rounds` rounds of warm-up then up to `opts.repetitions / rounds` passes (at
/// least [`CalibrateOptions::least_per_round`], stopping after the round's share of
/// `opts.max_seconds`).
/// `progress(done, total, what)` is called before each timed (deployment, batch, round).
///
/// `variants` ([`variants`] of a space's choices) are timed the same way, in the same rounds.
pub fn measure(
    model: &dyn Model,
    inputs: &[ModelInput],
    opts: &CalibrateOptions,
    variants: &[Choice],
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<InModel> {
    let kernels = kernels(&opts.kernels);
    let rounds = opts.rounds.max(1);
    let mut timer = Timer {
        model,
        schedule: opts.schedule(),
        rounds,
        total: 0,
        done: 0,
        progress,
    };
    // Every deployment first, then rounds over all of them: the machine's state (candle's pool
    // threads asleep or spinning, another process's burst) shifts for seconds at a time, and a round
    // per deployment in turn gives each the same chance at a quiet moment (as the isolated grid
    // does); each figure is its fastest of all rounds.
    enum Which {
        Kernel(Kernel),
        Variant(Choice),
    }
    let mut deployed = Vec::new();
    for &kernel in &kernels {
        let Some(choice) = choice(kernel) else {
            continue;
        };
        deployed.push((Which::Kernel(kernel), deploy(model, &choice)?));
    }
    for v in variants {
        deployed.push((Which::Variant(*v), deploy(model, v)?));
    }
    deployed.retain(|(_, (_, layers))| !layers.is_empty());
    timer.total = deployed.len() * inputs.len() * rounds;
    let mut per_round: Vec<Vec<Vec<Round>>> =
        vec![vec![Vec::with_capacity(rounds); inputs.len()]; deployed.len()];
    for round in 0..rounds {
        for ((which, (overrides, _)), per_input) in deployed.iter().zip(&mut per_round) {
            let what = match which {
                Which::Kernel(k) => k.name(),
                Which::Variant(v) => v.to_string(),
            };
            for (input, rounds_done) in inputs.iter().zip(per_input.iter_mut()) {
                rounds_done.push(timer.round(overrides, input, &what, round)?);
            }
        }
    }
    let mut out = InModel::default();
    let all_rounds = &per_round;
    for ((which, (_, layers)), per_input) in deployed.iter().zip(&per_round) {
        for (i, (input, per_round)) in inputs.iter().zip(per_input).enumerate() {
            match which {
                Which::Kernel(kernel) => {
                    out.measurements
                        .extend(by_shape(*kernel, input.cost_batch, layers, per_round));
                    if *kernel == Kernel::F32 {
                        let mut n = non_matmul(input, per_round);
                        // Every other kernel's deployment against this one, at this input.
                        for ((w, (_, l)), rounds) in deployed.iter().zip(all_rounds) {
                            let Which::Kernel(k) = w else { continue };
                            let Some(p) = k.precision().filter(|&p| p != Precision::F32) else {
                                continue;
                            };
                            if let Some(s) = agreed_spill((layers, per_round), (l, &rounds[i])) {
                                if s.us == 0.0 && s.measured_us != 0.0 {
                                    n.spill_within_noise.insert(p, s);
                                }
                                n.spill_us.insert(p, s.us);
                            }
                        }
                        out.non_matmul.push(n);
                    }
                }
                Which::Variant(v) => {
                    out.variants
                        .extend(variant_entries(v, input.cost_batch, layers, per_round))
                }
            }
        }
    }
    (timer.progress)(timer.done, timer.total, "done");
    Ok(out)
}

/// Times deployed models in rounds, reporting progress.
struct Timer<'a> {
    model: &'a dyn Model,
    schedule: Schedule,
    rounds: usize,
    total: usize,
    done: usize,
    progress: &'a mut dyn FnMut(usize, usize, &str),
}

impl Timer<'_> {
    /// Round `round` of passes of the model under `overrides` on `input`, with the load other
    /// processes put on the machine meanwhile.
    fn round(
        &mut self,
        overrides: &Overrides,
        input: &ModelInput,
        what: &str,
        round: usize,
    ) -> Result<Round> {
        (self.progress)(
            self.done,
            self.total,
            &format!(
                "{what} on {} (round {}/{})",
                input.description,
                round + 1,
                self.rounds
            ),
        );
        self.done += 1;
        let before = CpuSample::now();
        let passes = time_passes(self.model, &input.batch, overrides, &self.schedule)?;
        let load = before
            .zip(CpuSample::now())
            .and_then(|(b, a)| b.others_until(&a));
        Ok((passes, load))
    }
}

/// Passes of `model` on `batch` under `overrides` as `schedule` times them, each with its layers'
/// times (read after the pass, outside its timed span).
fn time_passes(
    model: &dyn Model,
    batch: &Batch,
    overrides: &Overrides,
    schedule: &Schedule,
) -> Result<Vec<Pass>> {
    let timer = LayerTimes::default();
    let ctx = ForwardCtx {
        overrides: Some(overrides),
        capture: None,
        timer: Some(&timer),
    };
    schedule.time_reading(
        || {
            std::hint::black_box(model.forward(batch, &ctx)?);
            Ok(())
        },
        || {
            timer
                .take()
                .into_iter()
                .map(|(name, s)| (name, s * 1e6))
                .collect()
        },
    )
}

/// The [`RoundFigure`] of `figure` (a per-pass value) over the passes of `per_round`.
fn fastest(per_round: &[Round], figure: impl Fn(&Pass) -> Option<f64>) -> Option<RoundFigure> {
    let values: Vec<(Vec<f64>, Option<f64>)> = per_round
        .iter()
        .map(|(passes, load)| (passes.iter().filter_map(&figure).collect(), *load))
        .collect();
    RoundFigure::of(values.iter().map(|(v, load)| (v.as_slice(), *load)))
}

/// Per distinct shape among `layers`, the figure of the mean time of its layers in a pass.
fn per_shape<'s>(
    layers: &'s BTreeMap<String, MatrixShape>,
    per_round: &[Round],
) -> Vec<(&'s MatrixShape, RoundFigure)> {
    let mut shapes: Vec<&MatrixShape> = layers.values().collect();
    shapes.sort();
    shapes.dedup();
    shapes
        .into_iter()
        .filter_map(|shape| {
            let names: Vec<&String> = layers
                .iter()
                .filter(|(_, s)| *s == shape)
                .map(|(n, _)| n)
                .collect();
            let figure = fastest(per_round, |(_, times)| {
                let v: Vec<f64> = names
                    .iter()
                    .filter_map(|n| times.get(*n))
                    .copied()
                    .collect();
                (v.len() == names.len()).then(|| v.iter().sum::<f64>() / v.len() as f64)
            })?;
            Some((shape, figure))
        })
        .collect()
}

/// A variant's `[[measured]]` entries: per layer shape, keyed by the layer's shape with its kept rows
/// (the key the cost model looks up), none where two shapes would share a key (one weight shape
/// applied at two output sizes).
fn variant_entries(
    v: &Choice,
    cost_batch: u32,
    layers: &BTreeMap<String, MatrixShape>,
    per_round: &[Round],
) -> Vec<MeasuredEntry> {
    let figures = per_shape(layers, per_round);
    let key = |s: &MatrixShape| {
        let mut shape = s.shape.clone();
        if let Sparsity::Channels(p) = v.sparsity {
            shape[0] = kept_rows(s.rows as u64, p) as usize;
        }
        (s.kind, shape)
    };
    figures
        .iter()
        .filter(|(s, _)| figures.iter().filter(|(t, _)| key(t) == key(s)).count() == 1)
        .map(|(s, f)| {
            let (kind, shape) = key(s);
            MeasuredEntry {
                kind,
                shape,
                batch: cost_batch,
                weights: Precision::of_weights(&v.weights),
                act: v.act.to_string(),
                sparsity: v.sparsity.to_string(),
                us: super::write::round(f.fastest_us, 2),
                spread_us: Some(super::write::round(f.spread_us, 2)),
                kernel: Some(format!("{v} inside the model")),
                rank: v.rank,
                conv: v.conv.map(|c| c.to_string()),
            }
        })
        .collect()
}

/// One measurement per distinct shape among `layers`: per pass, the mean time of the layers of that
/// shape.
fn by_shape(
    kernel: Kernel,
    cost_batch: u32,
    layers: &BTreeMap<String, MatrixShape>,
    per_round: &[Round],
) -> Vec<Measurement> {
    per_shape(layers, per_round)
        .into_iter()
        .map(|(shape, f)| Measurement::new(shape, cost_batch, kernel, f))
        .collect()
}

/// What each layer of a kernel's deployment adds to the **rest** of the pass, µs: the deployment's
/// fastest pass over the f32 model's, less what its layers' own figures changed (per layer shape,
/// as the cost model charges them), shared by its layers. candle runs the GGML block formats on its
/// own pool of threads, which spin for a while after each product before they sleep, and f32 products
/// on rayon's: on a machine with few cores the spinning threads take cores from the f32 products and
/// the attention, norms and activations that follow a block-format layer (BENCHMARKS.md, "The spill
/// of a kernel"). `None` when the deployment has no layer or a figure is missing.
fn spill(
    f32: (&BTreeMap<String, MatrixShape>, &[Round]),
    kernel: (&BTreeMap<String, MatrixShape>, &[Round]),
) -> Option<f64> {
    if kernel.0.is_empty() {
        return None;
    }
    let wall = |rounds: &[Round]| fastest(rounds, |p| Some(p.0)).map(|f| f.fastest_us);
    let figures = |layers, rounds| -> BTreeMap<MatrixShape, f64> {
        per_shape(layers, rounds)
            .into_iter()
            .map(|(shape, f)| (shape.clone(), f.fastest_us))
            .collect()
    };
    let (f32_figures, k_figures) = (figures(f32.0, f32.1), figures(kernel.0, kernel.1));
    let mut changed = 0.0;
    for shape in kernel.0.values() {
        changed += k_figures.get(shape)? - f32_figures.get(shape)?;
    }
    Some((wall(kernel.1)? - wall(f32.1)? - changed) / kernel.0.len() as f64)
}

/// [`spill`] from the fastest passes of all rounds, written only when the passes show it: a rank
/// test (Mann–Whitney U, normal approximation) of the time each pass of the kernel's deployment
/// spends outside the kernel's layers (wall time less those layers' times) against the same in the
/// f32 passes must find the kernel's longer (or shorter, for a negative spill) at the two-sided 5%
/// level ([`SPILL_Z`]), on the figure's side. Otherwise it is written as 0 — measured, and not told
/// from nothing — rather than left out, which would let the spill at another batch be extrapolated
/// to this one. A spill is charged once per layer, so an error in it is multiplied by the layer
/// count: at 1,024 tokens two MiniLM calibrations gave `q2_k` +2.2 and −1.3 ms per layer, on passes
/// of 260 ms (BENCHMARKS.md, "The spill judged by its passes"). The test uses every pass, not the
/// rounds' own spills: a round's fastest passes are few, and a sign test over the 9 rounds' spills
/// wrote 0 for the K-formats' 330–610 µs at 32 tokens, which two calibrations reproduced. What is
/// written, when the passes show it, is the figure of the fastest passes of all rounds, as every
/// layer's figure is: with it the prediction of the kernel's uniform deployment is that deployment's
/// fastest pass.
fn agreed_spill(
    f32: (&BTreeMap<String, MatrixShape>, &[Round]),
    kernel: (&BTreeMap<String, MatrixShape>, &[Round]),
) -> Option<Spill> {
    let measured_us = spill(f32, kernel)?;
    // Per pass, the time outside the kernel's layers (the same layers in both deployments).
    let outside = |rounds: &[Round]| -> Vec<f64> {
        rounds
            .iter()
            .flat_map(|(passes, _)| passes)
            .filter_map(|(wall, times)| {
                let mut inside = 0.0;
                for name in kernel.0.keys() {
                    inside += times.get(name)?;
                }
                Some(wall - inside)
            })
            .collect()
    };
    let (k, f) = (outside(kernel.1), outside(f32.1));
    if k.len() < SPILL_LEAST_PASSES || f.len() < SPILL_LEAST_PASSES {
        return Some(Spill {
            us: 0.0,
            measured_us,
            rank_z: None,
        });
    }
    let z = rank_z(&k, &f);
    let shown = z.abs() > SPILL_Z && z * measured_us > 0.0;
    Some(Spill {
        us: if shown { measured_us } else { 0.0 },
        measured_us,
        rank_z: Some((z, k.len(), f.len())),
    })
}

/// The Mann–Whitney z of `a` against `b`: U (pairs with a above b, ties counting half) less its mean
/// under no difference, over its standard deviation (no tie correction: times in µs seldom tie).
fn rank_z(a: &[f64], b: &[f64]) -> f64 {
    let u: f64 = a
        .iter()
        .map(|x| {
            b.iter()
                .map(|y| match x.total_cmp(y) {
                    std::cmp::Ordering::Greater => 1.0,
                    std::cmp::Ordering::Equal => 0.5,
                    std::cmp::Ordering::Less => 0.0,
                })
                .sum::<f64>()
        })
        .sum();
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    (u - n1 * n2 / 2.0) / (n1 * n2 * (n1 + n2 + 1.0) / 12.0).sqrt()
}

/// The spills written as 0, for the term's description (empty when there is none).
fn within_noise(spills: &BTreeMap<Precision, Spill>) -> String {
    if spills.is_empty() {
        return String::new();
    }
    let each: Vec<String> = spills
        .iter()
        .map(|(p, s)| match s.rank_z {
            Some((z, k, f)) => format!(
                "{p} {:+.1} µs (rank test z = {z:+.2} over {k} and {f} passes)",
                s.measured_us
            ),
            None => format!(
                "{p} {:+.1} µs (too few passes to judge: {SPILL_LEAST_PASSES} needed)",
                s.measured_us
            ),
        })
        .collect();
    format!(
        "; spill written as 0, the passes did not tell it from nothing: {}",
        each.join(", ")
    )
}

/// The non-matmul work of the f32 passes: wall time minus every layer's product and look-up.
fn non_matmul(input: &ModelInput, per_round: &[Round]) -> NonMatmul {
    let rest = |(wall, times): &Pass| Some((wall - times.values().sum::<f64>()).max(0.0));
    // No pass timed: zeros, as an empty figure.
    let f = fastest(per_round, rest).unwrap_or_default();
    let forward_us = fastest(per_round, |p| Some(p.0)).map_or(0.0, |f| f.fastest_us);
    NonMatmul {
        cost_batch: input.cost_batch,
        description: input.description.clone(),
        us: f.fastest_us,
        spread_us: f.spread_us,
        forward_us,
        round_medians_us: f.round_medians_us,
        other_load: f.other_load,
        spill_us: BTreeMap::new(),
        spill_within_noise: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(wall: f64, layers: &[(&str, f64)]) -> Pass {
        (
            wall,
            layers.iter().map(|&(n, us)| (n.to_string(), us)).collect(),
        )
    }

    #[test]
    fn a_kernels_spill_is_its_pass_less_its_layers_change_per_layer() {
        let (small, big) = (MatrixShape::linear(8, 32), MatrixShape::linear(32, 8));
        let f32_layers: BTreeMap<String, MatrixShape> = [
            ("a".to_string(), small.clone()),
            ("b".to_string(), small.clone()),
            ("c".to_string(), big.clone()),
        ]
        .into();
        // f32: fastest pass 100 µs; figures a/b (mean per pass) 20, c 30 (each its least).
        let f32_rounds: Vec<Round> = vec![
            (
                vec![pass(104.0, &[("a", 21.0), ("b", 19.0), ("c", 31.0)])],
                None,
            ),
            (
                vec![pass(100.0, &[("a", 20.0), ("b", 22.0), ("c", 30.0)])],
                None,
            ),
        ];
        // The kernel fits a and b only: 12 µs each instead of 20 (−16 µs), yet the pass is 94 µs,
        // not 84: each of its two layers adds 5 µs elsewhere.
        let k_layers: BTreeMap<String, MatrixShape> =
            [("a".to_string(), small.clone()), ("b".to_string(), small)].into();
        let k_rounds: Vec<Round> = vec![(
            vec![
                pass(94.0, &[("a", 12.0), ("b", 12.0), ("c", 31.0)]),
                pass(97.0, &[("a", 13.0), ("b", 12.0), ("c", 30.0)]),
            ],
            None,
        )];
        let s = spill((&f32_layers, &f32_rounds), (&k_layers, &k_rounds)).expect("spill");
        assert!((s - 5.0).abs() < 1e-9, "{s}");
        // A kernel that changes nothing but its own layers has none; one that speeds the rest up
        // (or a noisy f32 figure) a negative one, kept as measured.
        let exact: Vec<Round> = vec![(vec![pass(84.0, &[("a", 12.0), ("b", 12.0)])], None)];
        let s = spill((&f32_layers, &f32_rounds), (&k_layers, &exact)).expect("spill");
        assert!(s.abs() < 1e-9, "{s}");
        let faster: Vec<Round> = vec![(vec![pass(80.0, &[("a", 12.0), ("b", 12.0)])], None)];
        let s = spill((&f32_layers, &f32_rounds), (&k_layers, &faster)).expect("spill");
        assert!((s + 2.0).abs() < 1e-9, "{s}");
        // No layer, or no timed pass: nothing to say.
        assert_eq!(
            spill((&f32_layers, &f32_rounds), (&BTreeMap::new(), &exact)),
            None
        );
        assert_eq!(spill((&f32_layers, &f32_rounds), (&k_layers, &[])), None);
        let big_only: BTreeMap<String, MatrixShape> = [("c".to_string(), big)].into();
        assert_eq!(
            spill((&f32_layers, &f32_rounds), (&big_only, &exact)),
            None,
            "the deployment's passes never timed c"
        );
    }

    /// f32 rounds (fastest pass `f32_walls[r]`, layers a and b 20 µs each) against a kernel whose two
    /// layers take 12 µs each and whose fastest pass in round r is `k_walls[r]`: round r's own spill
    /// is (k − f32 + 16) / 2 µs.
    fn paired(f32_walls: &[f64], k_walls: &[f64]) -> Option<Spill> {
        let layers: BTreeMap<String, MatrixShape> = [
            ("a".to_string(), MatrixShape::linear(8, 32)),
            ("b".to_string(), MatrixShape::linear(8, 32)),
        ]
        .into();
        let rounds = |walls: &[f64], us: f64| -> Vec<Round> {
            walls
                .iter()
                .map(|&w| (vec![pass(w, &[("a", us), ("b", us)])], None))
                .collect()
        };
        agreed_spill(
            (&layers, &rounds(f32_walls, 20.0)),
            (&layers, &rounds(k_walls, 12.0)),
        )
    }

    #[test]
    fn the_rank_test_is_the_mann_whitney_z() {
        let a = [70.0, 71.5, 70.0, 72.0, 71.0, 73.5, 70.6, 70.7, 74.0];
        let b = [60.0, 61.0, 60.5, 62.0, 60.0, 63.0, 61.0, 60.2, 64.0];
        // Every a above every b: U = 81 of 81, mean 40.5, sd √(81 × 19 / 12).
        let sd = (81.0f64 * 19.0 / 12.0).sqrt();
        assert!((rank_z(&a, &b) - 40.5 / sd).abs() < 1e-12);
        assert!((rank_z(&b, &a) + 40.5 / sd).abs() < 1e-12);
        assert_eq!(rank_z(&a, &a), 0.0, "ties count half");
    }

    #[test]
    fn a_spill_is_written_only_when_the_passes_show_it() {
        // One pass a round, 9 rounds. The kernel's passes spend 70–74 µs outside its layers, the
        // f32 passes 60–64: kept, at the fastest passes' 5 µs a layer ((94 − 24) − (100 − 40)) / 2.
        let f32_walls = [
            100.0, 101.0, 100.5, 102.0, 100.0, 103.0, 101.0, 100.2, 104.0,
        ];
        let k_walls = [94.0, 95.5, 94.0, 96.0, 95.0, 97.5, 94.6, 94.7, 98.0];
        let s = paired(&f32_walls, &k_walls).expect("spill");
        assert!((s.us - 5.0).abs() < 1e-9 && s.us == s.measured_us, "{s:?}");
        assert!(s
            .rank_z
            .is_some_and(|(z, k, f)| z > 3.5 && (k, f) == (9, 9)));
        // The passes interleave (kernel 70 or 64 µs outside, f32 60 or 70): the fastest passes
        // say +2 µs a layer, the rank test z = 1.28 — written as 0, kept as measured.
        let f32_walls = [
            100.0, 110.0, 100.0, 110.0, 100.0, 110.0, 100.0, 110.0, 100.0,
        ];
        let k_walls = [94.0, 88.0, 94.0, 88.0, 94.0, 88.0, 94.0, 88.0, 94.0];
        let s = paired(&f32_walls, &k_walls).expect("spill");
        assert_eq!((s.us, s.measured_us), (0.0, 2.0), "{s:?}");
        let z = s.rank_z.expect("judged").0;
        assert!(
            (z - 14.5 / (81.0f64 * 19.0 / 12.0).sqrt()).abs() < 1e-12,
            "{z}"
        );
        // The fastest passes say +3 µs (one round's f32 pass was 10 µs quick) while the passes show
        // the kernel's shorter outside its layers (z = −2.08): against the figure, written as 0.
        let mut f32_walls = [100.0; 9];
        let mut k_walls = [80.0; 9];
        f32_walls[0] = 90.0;
        k_walls[0] = 100.0;
        let s = paired(&f32_walls, &k_walls).expect("spill");
        assert_eq!((s.us, s.measured_us), (0.0, 3.0), "{s:?}");
        assert!(s.rank_z.is_some_and(|(z, _, _)| z < -SPILL_Z), "{s:?}");
        // Fewer than eight passes: nothing to judge by, written as 0, however far apart.
        let s = paired(&[100.0; 5], &[94.0; 5]).expect("spill");
        assert_eq!((s.us, s.measured_us, s.rank_z), (0.0, 5.0, None));
        // What the profile's description says of them.
        let q8 = Precision::Ggml(crate::space::GgmlFormat::Q8_0);
        let said = within_noise(&[(q8, s)].into());
        assert!(
            said.contains("q8_0 +5.0 µs (too few passes to judge: 8 needed)"),
            "{said}"
        );
        let judged = Spill {
            rank_z: Some((1.28, 9, 9)),
            ..s
        };
        let said = within_noise(&[(q8, judged)].into());
        assert!(
            said.contains("q8_0 +5.0 µs (rank test z = +1.28 over 9 and 9 passes)"),
            "{said}"
        );
    }
}
