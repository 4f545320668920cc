//! # Held-out evaluation of a run's front
//!
//! A front is chosen on the search split, so its search-split qualities are optimistic: among many
//! points of nearly equal merit, those the split's noise favoured win. Each front point is therefore
//! evaluated once more, on the held-out split the search never saw, and that evaluation is cached like
//! any other (content-addressed by the evaluator's fingerprint, the split and the assignment): a
//! second run, another profile's report or an export finds it in the store. The end of a run and
//! `resume` complete the front's held-out evaluations with the session's evaluator ([`complete_front`]);
//! `report` and `export`, which start from the store, load the run's evaluator ([`run_evaluator`]) only
//! when a point they show lacks one, and complete it ([`complete`]). Reading the figures back needs
//! the store alone ([`crate::store::held_out`]).

use std::time::Instant;

use super::cached::CachingEvaluator;
use super::session::evaluator_settings;
use crate::error::{Error, Result};
use crate::eval::{CandleEvaluator, EvalSplit, Evaluator};
use crate::space::{Assignment, SearchSpace};
use crate::store::{self, EvalCount, RunManifest, Store, TrialRecord};

/// What completing held-out evaluations did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeldOutOutcome {
    /// Points evaluated on the held-out split now.
    pub evaluated: usize,
    /// Points whose held-out evaluation the store already held.
    pub cached: usize,
    /// Points that could not be evaluated, with why (`trial 12: …`).
    pub failed: Vec<String>,
    /// Wall seconds of the evaluations.
    pub seconds: f64,
}

impl HeldOutOutcome {
    /// The evaluations it computed and found (failed ones computed nothing that counts).
    pub fn count(&self) -> EvalCount {
        EvalCount {
            evaluated: self.evaluated as u64,
            cached: self.cached as u64,
        }
    }
}

/// Adds the held-out evaluations `outcome` computed to run `name`'s count in `store` (a run recorded
/// before evaluations were counted is left as it is, and so is a run another process drives: its
/// controller owns the manifest, and the count is lost rather than its status).
pub fn record(store: &dyn Store, name: &str, outcome: &HeldOutOutcome) -> Result<()> {
    if outcome.evaluated + outcome.cached == 0 || store.controllers()?.iter().any(|c| c.run == name)
    {
        return Ok(());
    }
    let Some(mut m) = store.run(name)? else {
        return Ok(());
    };
    if let Some(e) = m.evaluations.as_mut() {
        e.held_out.add(outcome.count());
        store.put_run(&m)?;
    }
    Ok(())
}

/// The trials of `trials` whose held-out evaluation the store lacks (in the given order).
pub fn missing<'t>(
    store: &dyn Store,
    manifest: &RunManifest,
    trials: &[&'t TrialRecord],
) -> Result<Vec<&'t TrialRecord>> {
    let mut out = Vec::new();
    for &t in trials {
        if store::held_out(store, manifest, t)?.is_none() {
            out.push(t);
        }
    }
    Ok(out)
}

/// Evaluates on the held-out split, through the store's evaluation cache, each `(trial, assignment)`
/// of run `manifest` whose held-out evaluation the store lacks. `evaluator` must be the run's (its
/// fingerprint the manifest's), and each assignment the trial's (its hash the journaled one), else
/// nothing is evaluated for it; an evaluation that fails is listed in
/// [`HeldOutOutcome::failed`], never an error. Errors are the store's.
pub fn complete(
    evaluator: &dyn Evaluator,
    store: &dyn Store,
    manifest: &RunManifest,
    points: &[(&TrialRecord, Assignment)],
) -> Result<HeldOutOutcome> {
    let started = Instant::now();
    let mut out = HeldOutOutcome::default();
    let fingerprint = evaluator.fingerprint().to_hex().to_string();
    if fingerprint != manifest.fingerprints.evaluator {
        out.failed.push(format!(
            "the evaluation data or evaluator settings changed since run `{}` (fingerprint {} → {}): \
             its held-out figures cannot be computed",
            manifest.name,
            short(&manifest.fingerprints.evaluator),
            short(&fingerprint)
        ));
        return Ok(out);
    }
    let cached = CachingEvaluator::new(evaluator, store);
    for (t, a) in points {
        if store::held_out(store, manifest, t)?.is_some() {
            out.cached += 1;
            continue;
        }
        if a.hash_hex() != t.hash {
            out.failed.push(format!(
                "trial {}: its assignment no longer decodes to the journaled one (hash {} → {})",
                t.number,
                short(&t.hash),
                short(&a.hash_hex())
            ));
            continue;
        }
        match cached.evaluate_cached_on(EvalSplit::HeldOut, a) {
            Ok((_, true)) => out.cached += 1,
            Ok((e, false)) if e.quality.is_finite() => out.evaluated += 1,
            Ok((e, false)) => out.failed.push(format!(
                "trial {}: the held-out evaluation gave a quality of {}",
                t.number, e.quality
            )),
            Err(e) => out.failed.push(format!("trial {}: {e}", t.number)),
        }
    }
    out.seconds = started.elapsed().as_secs_f64();
    Ok(out)
}

/// Completes the held-out evaluations of the measured front of `trials` (run `manifest`, whose
/// space is `space`): what the end of a run and `resume` do.
pub fn complete_front(
    evaluator: &dyn Evaluator,
    space: &SearchSpace,
    store: &dyn Store,
    manifest: &RunManifest,
    trials: &[TrialRecord],
) -> Result<HeldOutOutcome> {
    let points: Vec<(&TrialRecord, Assignment)> = store::front(&manifest.config, trials)
        .into_iter()
        .map(|t| (t, space.assignment(&t.point)))
        .collect();
    complete(evaluator, store, manifest, &points)
}

/// The evaluator of stored run `manifest`, loaded again from its model, data and settings and
/// checked against its fingerprint: what `report` and `export` evaluate held-out points with. An
/// error says why it cannot be had (the model or data missing, or changed since the run).
pub fn run_evaluator(manifest: &RunManifest) -> Result<CandleEvaluator> {
    let c = &manifest.config;
    let (model, data) = crate::eval::load_run_data(&c.model, c.data.as_deref(), c.samples)?;
    let ev = CandleEvaluator::new(model, data, evaluator_settings(c))?;
    let now = ev.fingerprint().to_hex().to_string();
    if now != manifest.fingerprints.evaluator {
        return Err(Error::search(format!(
            "run `{}`: the evaluation data or evaluator settings changed since it searched \
             (fingerprint {} → {}), so its points cannot be evaluated on the held-out split; restore \
             the old model and data files",
            manifest.name,
            short(&manifest.fingerprints.evaluator),
            short(&now)
        )));
    }
    Ok(ev)
}

fn short(hex: &str) -> String {
    hex.chars().take(12).collect()
}
