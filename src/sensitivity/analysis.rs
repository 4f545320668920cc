//! The whole sensitivity analysis of a space, as `mpsearch sensitivity` runs it: cheap errors of every
//! (group, choice), one-at-a-time measurements of a subset, the fitted predictor, and its validation on
//! random assignments measured for real.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::rank::{kendall_tau_b, mean_absolute_error, spearman};
use super::stats::{cheap_errors_checkpointed, known_row};
use super::{ActRanges, Checkpoint, LayerStats, Measurement, MeasurementCache, Predictor};
use crate::error::Result;
use crate::eval::{CandleEvaluator, Evaluator};
use crate::space::{ActQuant, Point, SearchSpace};

/// Cheap errors, measurements and the predictor fitted to them.
pub struct Analysis {
    /// `errors[group][choice]`: relative output error summed over the group's layers.
    pub errors: Vec<Vec<f64>>,
    pub measurements: Vec<Measurement>,
    pub predictor: Predictor,
    /// Seconds spent on the cheap errors (capture + compressing every choice).
    pub cheap_seconds: f64,
    /// Seconds spent on the one-at-a-time measurements.
    pub measure_seconds: f64,
}

/// Predicted against measured quality on random assignments.
pub struct Validation {
    /// (point, predicted, measured), in the order drawn.
    pub points: Vec<(Point, f64, f64)>,
    pub spearman: f64,
    pub kendall: f64,
    pub mean_absolute_error: f64,
    pub seconds: f64,
}

/// Which part of the analysis a progress report is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Cheap errors, counted in groups.
    CheapErrors,
    /// One-at-a-time measurements, counted in pairs.
    Measurements,
}

/// Runs the analysis: `progress(phase, done, total)` after each group of cheap errors and each
/// measurement. The cheap errors come from `ev`'s model and calibration data; the one-at-a-time
/// measurements are evaluated by `measure_with` (`ev` itself, or a wrapper that caches evaluations, as
/// the search's store does). `checkpoint` gets each group's cheap errors and each measurement as they
/// are done (and gives back the groups an earlier session kept).
pub fn analyse(
    ev: &CandleEvaluator,
    measure_with: &dyn Evaluator,
    space: &SearchSpace,
    pairs: &[(usize, u16)],
    checkpoint: &mut dyn Checkpoint,
    progress: &mut dyn FnMut(Phase, usize, usize),
) -> Result<Analysis> {
    let started = Instant::now();
    let errors = cheap(ev, space, checkpoint, &mut |d, t| {
        progress(Phase::CheapErrors, d, t)
    })?;
    let cheap_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut cache = MeasurementCache::default();
    let mut measurements = Vec::with_capacity(pairs.len());
    for (i, pair) in pairs.iter().enumerate() {
        measurements.extend(cache.measure(measure_with, space, std::slice::from_ref(pair))?);
        checkpoint.measured()?;
        progress(Phase::Measurements, i + 1, pairs.len());
    }
    let predictor = Predictor::fit(&errors, &measurements)?.with_measured(&measurements);
    Ok(Analysis {
        errors,
        measurements,
        predictor,
        cheap_seconds,
        measure_seconds: started.elapsed().as_secs_f64(),
    })
}

/// The cheap error of every (group, choice) of `space` (`errors[group][choice]`), from `ev`'s model and
/// calibration split; `progress(done, total)` after each group. No model evaluation. The groups
/// `checkpoint` kept are taken from it, the others handed to it when computed; when it has every
/// group and the space quantizes no activation, nothing is computed at all.
pub fn cheap(
    ev: &CandleEvaluator,
    space: &SearchSpace,
    checkpoint: &mut dyn Checkpoint,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Vec<f64>>> {
    let acts = space
        .groups
        .iter()
        .flat_map(|g| &g.choices)
        .any(|c| c.act != ActQuant::None);
    if !acts {
        let known = (0..space.groups.len())
            .map(|g| known_row(checkpoint, space, g))
            .collect::<Result<Option<Vec<Vec<f64>>>>>()?;
        if let Some(errors) = known {
            progress(space.groups.len(), space.groups.len());
            return Ok(errors);
        }
    }
    // The evaluator's input statistics (one capture of the calibration split, shared with GPTQ,
    // output-error scales and the static ranges) and its compression settings: the cheap errors
    // measure the weights the evaluator runs.
    let stats = capture(ev, space)?;
    checkpoint.captured()?;
    let settings = ev.settings().compress();
    cheap_errors_checkpointed(space, &stats, settings, checkpoint, progress)
}

/// Every layer's statistics on `ev`'s calibration split: the evaluator's input statistics and, when
/// `space` offers activation quantization anywhere, the activation term, accumulated in one more pass
/// over that split (with the evaluator's static ranges when `space` offers `act8-static`); with the
/// evaluator's importance scores when it prunes by a gradient importance and `space` prunes anywhere.
fn capture(ev: &CandleEvaluator, space: &SearchSpace) -> Result<Vec<LayerStats>> {
    let model = ev.model().as_ref();
    let mut stats = LayerStats::for_model(model, ev.input_stats()?)?;
    if ev.space_needs_scores(space) {
        stats = LayerStats::with_scores(stats, ev.weight_scores()?)?;
    }
    let acts: Vec<ActQuant> = space
        .groups
        .iter()
        .flat_map(|g| &g.choices)
        .map(|c| c.act)
        .collect();
    if acts.iter().all(|&a| a == ActQuant::None) {
        return Ok(stats);
    }
    let none = ActRanges::new();
    let ranges = if acts.contains(&ActQuant::Int8Static) {
        ev.ranges()?
    } else {
        &none
    };
    LayerStats::with_activation(stats, model, &ev.data().calibration, ranges)
}

/// Measures `n` uniformly random points of `space` (seeded) and compares them with `predictor`.
pub fn validate(
    ev: &dyn Evaluator,
    space: &SearchSpace,
    predictor: &Predictor,
    n: usize,
    seed: u64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Validation> {
    let started = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut points = Vec::with_capacity(n);
    for i in 0..n {
        let p: Point = space
            .groups
            .iter()
            .map(|g| rng.random_range(0..g.choices.len()) as u16)
            .collect();
        let measured = ev.evaluate(&space.assignment(&p))?.quality;
        let predicted = predictor.predict(&p);
        points.push((p, predicted, measured));
        progress(i + 1, n);
    }
    let pred: Vec<f64> = points.iter().map(|p| p.1).collect();
    let meas: Vec<f64> = points.iter().map(|p| p.2).collect();
    Ok(Validation {
        spearman: spearman(&pred, &meas)?,
        kendall: kendall_tau_b(&pred, &meas)?,
        mean_absolute_error: mean_absolute_error(&pred, &meas)?,
        points,
        seconds: started.elapsed().as_secs_f64(),
    })
}
