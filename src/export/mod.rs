//! # Exports
//!
//! A chosen point of a run, in the forms other tools take:
//!
//! - **assignment JSON** ([`assignment_json`]): exactly the `{"default": …, "layers": {…}}` the trial
//!   was evaluated with, which `mpsearch eval --assignment` and `mpsearch cost --assignment` accept;
//! - **llama.cpp lines** ([`llama::tensor_type_lines`]): one `--tensor-type NAME=TYPE` line per layer
//!   for `llama-quantize`: a GGML block-format choice as exactly its type, an `int<b>` choice mapped to
//!   the closest one, with a comment saying where the mapping is not exact and what is dropped;
//! - **compressed weights** ([`safetensors::write_compressed`]): every compressed layer in its
//!   compact form (integer codes with scales and zero points, a GGML format's blocks, kept values with
//!   their sparsity pattern, the two low-rank factors), read back by [`safetensors::load_compressed`];
//! - **a GGUF file** ([`gguf::write_gguf`], language models): the source file with every layer in its
//!   chosen llama.cpp type, re-quantized from the base, served as is by llama.cpp.
//!
//! Runs are read from the store alone ([`crate::store::query`]), never through the search controller.
//! The safetensors codec is the one part that touches candle: it compresses the model's weights with
//! [`crate::compress`] and densifies what it reads back.
//!
//! ## Which point
//!
//! `--point K` is the K-th point (1-based) of the run's measured front in cost order — the `point`
//! column of the front table `search` prints. `--trial N` is any complete trial. Without either,
//! [`select`] picks the **best point** of the front:
//!
//! 1. with a quality limit (`--max-drop`): the **cheapest** front point (every front point meets the
//!    limit, so the cheapest one is what the limit asked for);
//! 2. with only cost limits: the front point of **lowest quality loss** (every front point is within
//!    the budget, so the most accurate one is what the budget buys);
//! 3. with no limits: the **knee** of the front — in the plane of (cost / the run's reference cost,
//!    quality / the run's reference quality), the point farthest below the straight line joining the
//!    cheapest and the dearest front points; when no point lies below that line (a front of one or two
//!    points), the point nearest the ideal corner (0, 0) of that plane.
//!
//! When no complete trial meets the run's limits, the front is empty and the complete trial with the
//! **smallest violation** is exported instead — the sum over the limits of how far the trial exceeds
//! each, relative to the limit (`latency / max_latency − 1` when positive, …) —, and [`Selected`]
//! says so (`feasible` is false).

pub mod gguf;
pub mod llama;
pub mod safetensors;

use crate::error::{Error, Result};
use crate::store::{cost_of, front, RunConfig, RunManifest, TrialRecord, TrialState};

/// Which trial of a run to export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// The best point (see the module docs).
    Best,
    /// The K-th front point in cost order, 1-based.
    Point(usize),
    /// A trial by its number.
    Trial(u64),
}

/// The trial picked for an export and why.
#[derive(Clone, Debug)]
pub struct Selected<'a> {
    pub trial: &'a TrialRecord,
    /// Its 1-based position on the front, when it is on it.
    pub point: Option<usize>,
    /// Points on the front.
    pub front_len: usize,
    /// Whether it meets every limit of the run.
    pub feasible: bool,
    /// Why this trial, in words (for standard error).
    pub reason: String,
}

impl Selected<'_> {
    /// `point3` or `trial17`: how default file names call it.
    pub fn label(&self) -> String {
        match self.point {
            Some(k) => format!("point{k}"),
            None => format!("trial{}", self.trial.number),
        }
    }
}

/// Picks the trial of `manifest`'s run to export from its `trials` (see the module docs).
pub fn select<'a>(
    manifest: &RunManifest,
    trials: &'a [TrialRecord],
    pick: Pick,
) -> Result<Selected<'a>> {
    let f = front(&manifest.config, trials);
    match pick {
        Pick::Point(k) => front_point(manifest, &f, k),
        Pick::Trial(n) => trial(manifest, trials, &f, n),
        Pick::Best if f.is_empty() => closest(manifest, trials),
        Pick::Best => {
            let (i, rule) = best_index(manifest, &f)?;
            Ok(Selected {
                trial: f[i],
                point: Some(i + 1),
                front_len: f.len(),
                feasible: true,
                reason: format!("front point {} of {}: {rule}", i + 1, f.len()),
            })
        }
    }
}

/// The `k`-th point (1-based) of the front `f` of run `manifest`.
fn front_point<'a>(
    manifest: &RunManifest,
    f: &[&'a TrialRecord],
    k: usize,
) -> Result<Selected<'a>> {
    let run = &manifest.name;
    if f.is_empty() {
        return Err(Error::export(format!(
            "run `{run}` has no front yet: no complete trial meets its limits. Leave out --point to \
             export the trial closest to the limits, or pick one with --trial N (`mpsearch trials \
             {run}` lists them)"
        )));
    }
    if k == 0 || k > f.len() {
        return Err(Error::export(format!(
            "run `{run}` has {} front points; --point takes 1 to {} (the `point` column of the front \
             table `mpsearch search` prints; `mpsearch runs --json` lists the front in the same order)",
            f.len(),
            f.len()
        )));
    }
    Ok(Selected {
        trial: f[k - 1],
        point: Some(k),
        front_len: f.len(),
        feasible: true,
        reason: format!("front point {k} of {} (in cost order)", f.len()),
    })
}

/// Trial `n` of run `manifest` (which must be complete), with its place on the front `f` if any.
fn trial<'a>(
    manifest: &RunManifest,
    trials: &'a [TrialRecord],
    f: &[&TrialRecord],
    n: u64,
) -> Result<Selected<'a>> {
    let run = &manifest.name;
    let Some(t) = trials.iter().find(|t| t.number == n) else {
        return Err(Error::export(format!(
            "run `{run}` has no trial {n}; its trials are numbered 0 to {}",
            trials.len().saturating_sub(1)
        )));
    };
    if t.state != TrialState::Complete || t.quality.is_none() {
        return Err(Error::export(format!(
            "trial {n} of run `{run}` is {} and has no measured quality{}; export a complete trial \
             (`mpsearch trials {run}` lists them)",
            t.state,
            t.error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        )));
    }
    let position = f.iter().position(|x| x.number == n).map(|i| i + 1);
    let feasible = violation(&manifest.config, t) == 0.0;
    let place = match (position, feasible) {
        (Some(k), _) => format!("front point {k} of {}", f.len()),
        (None, true) => "within the run's limits, but not on the front".to_string(),
        (None, false) => "outside the run's limits".to_string(),
    };
    Ok(Selected {
        trial: t,
        point: position,
        front_len: f.len(),
        feasible,
        reason: format!("trial {n} as asked ({place})"),
    })
}

/// Index into the (non-empty, cost-sorted) front of the best point, and the rule that picked it.
fn best_index(manifest: &RunManifest, f: &[&TrialRecord]) -> Result<(usize, String)> {
    let c = &manifest.config;
    if c.max_drop.is_some() {
        return Ok((
            0,
            "the cheapest point within the quality limit (--max-drop)".to_string(),
        ));
    }
    if c.max_latency_us.is_some() || c.max_bytes.is_some() || c.max_bops.is_some() {
        return Ok((
            f.len() - 1,
            "the point of lowest quality loss within the cost limits".to_string(),
        ));
    }
    let o = c.objective;
    let [rc, rq] = manifest.reference;
    let (rc, rq) = (positive_or_one(rc), positive_or_one(rq));
    let pts: Vec<[f64; 2]> = f
        .iter()
        .map(|t| [cost_of(o, t) / rc, t.quality.unwrap_or(f64::INFINITY) / rq])
        .collect();
    Ok(match knee(&pts) {
        Some(i) => (
            i,
            "the knee of the front (farthest below the line joining its cheapest and dearest points, \
             cost and quality normalised by the run's hypervolume reference)"
                .to_string(),
        ),
        None => {
            let i = (0..pts.len())
                .min_by(|&a, &b| norm(pts[a]).total_cmp(&norm(pts[b])))
                .unwrap_or(0);
            (
                i,
                "the point nearest the ideal corner (no point lies below the line joining the front's \
                 extremes, so the front has no knee)"
                    .to_string(),
            )
        }
    })
}

fn positive_or_one(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 {
        x
    } else {
        1.0
    }
}

fn norm(p: [f64; 2]) -> f64 {
    p[0].hypot(p[1])
}

/// The knee of a front sorted by x (cost) with y (quality loss) falling: the index of the point
/// farthest strictly below the line from the first point to the last, if any lies below it.
pub fn knee(pts: &[[f64; 2]]) -> Option<usize> {
    let (first, last) = (*pts.first()?, *pts.last()?);
    let (dx, dy) = (last[0] - first[0], last[1] - first[1]);
    let len = dx.hypot(dy);
    if !len.is_finite() || len <= 0.0 {
        return None;
    }
    // Signed distance to the line, positive on the side of the origin (below a falling line).
    let below = |p: [f64; 2]| (dx * (p[1] - first[1]) - dy * (p[0] - first[0])) / -len;
    let (mut best, mut best_d) = (None, 1e-12);
    for (i, &p) in pts.iter().enumerate() {
        let d = below(p);
        if d > best_d {
            best = Some(i);
            best_d = d;
        }
    }
    best
}

/// How far a trial is outside the run's limits: the sum over limits of the relative excess (0 when
/// it meets them all).
pub fn violation(config: &RunConfig, t: &TrialRecord) -> f64 {
    let excess = |v: f64, max: Option<f64>| match max {
        Some(m) if m > 0.0 => (v / m - 1.0).max(0.0),
        Some(_) => v.max(0.0),
        None => 0.0,
    };
    excess(t.cost.latency_us, config.max_latency_us)
        + excess(t.cost.bytes as f64, config.max_bytes)
        + excess(t.cost.bops, config.max_bops)
        + excess(t.quality.unwrap_or(f64::INFINITY), config.max_drop)
}

/// The complete trial closest to meeting the limits (none meets them).
fn closest<'a>(manifest: &RunManifest, trials: &'a [TrialRecord]) -> Result<Selected<'a>> {
    let run = &manifest.name;
    let o = manifest.config.objective;
    let best = trials
        .iter()
        .filter(|t| t.state == TrialState::Complete && t.quality.is_some())
        .min_by(|a, b| {
            violation(&manifest.config, a)
                .total_cmp(&violation(&manifest.config, b))
                .then(
                    a.quality
                        .unwrap_or(f64::INFINITY)
                        .total_cmp(&b.quality.unwrap_or(f64::INFINITY)),
                )
                .then(cost_of(o, a).total_cmp(&cost_of(o, b)))
                .then(a.number.cmp(&b.number))
        });
    let Some(t) = best else {
        return Err(Error::export(format!(
            "run `{run}` has no complete trial to export ({} trials, none complete); resume it with \
             `mpsearch resume {run}`",
            trials.len()
        )));
    };
    Ok(Selected {
        trial: t,
        point: None,
        front_len: 0,
        feasible: false,
        reason: format!(
            "NO TRIAL MEETS THE RUN'S LIMITS; this is the closest one, trial {} (its relative excess over \
             the limits sums to {:.3}). Loosen the limits or search longer for a feasible point",
            t.number,
            violation(&manifest.config, t)
        ),
    })
}

/// The trial's assignment as assignment JSON (pretty-printed, with a final newline): what it was
/// evaluated with, accepted by `mpsearch eval --assignment` and `mpsearch cost --assignment`.
pub fn assignment_json(t: &TrialRecord) -> Result<String> {
    let text = serde_json::to_string_pretty(&t.assignment)
        .map_err(|e| Error::export(format!("cannot write trial {}'s assignment: {e}", t.number)))?;
    Ok(text + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knee_is_farthest_below_the_chord() {
        // A convex front: (0,1) (0.2,0.3) (0.5,0.1) (1,0): the chord is x + y = 1.
        let pts = [[0.0, 1.0], [0.2, 0.3], [0.5, 0.1], [1.0, 0.0]];
        assert_eq!(knee(&pts), Some(1));
        // Two points, or points on the chord: no knee.
        assert_eq!(knee(&[[0.0, 1.0], [1.0, 0.0]]), None);
        assert_eq!(knee(&[[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]), None);
        assert_eq!(knee(&[[0.3, 0.3]]), None);
    }
}
