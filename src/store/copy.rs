//! # Copying a store
//!
//! [`copy`](fn@copy) writes every record of one store into another, whatever their backends (sled →
//! PostgreSQL to share a store, PostgreSQL → sled to take one home): run manifests, trial journals,
//! strategy snapshots, latency measurements, recovered variants with their weights, the evaluation
//! cache and the sensitivity analyses, each record as it is (same serde JSON, same schema version),
//! so `runs --json` and `trials --json` print the same for both.
//!
//! The target need not be empty; what it holds already decides, before anything is written:
//! - a run of the same name must be **identical** (manifest, every trial, snapshot and measurement,
//!   compared as their stored JSON): it is left as it is, so copying again after a copy finished
//!   does nothing. A run that differs is a **conflict**, and the copy is refused whole, naming every
//!   such run (a run measured again in one store since an earlier copy differs from its copy);
//! - cached evaluations and sensitivity analyses are keyed by content, so a key the target has already
//!   holds the same evaluation (perhaps timed differently): the target's is kept;
//! - recovered variants are keyed by content too (the point, the recipe, the seed, the data): the
//!   target gets the variants of each copied or identical run that it lacks, each with its weights
//!   blob (written before its record, as `recover` does); those it has are kept. So a point
//!   recovered in one store after an earlier copy reaches the other by copying again;
//! - runs of other names in the target are untouched: two stores can be merged into one.
//!
//! A source run that a search drives right now is refused (copy it when the search has ended or
//! been stopped), and every run copied is locked in the target ([`Store::lock_run`]) before any is
//! written, so no search drives it meanwhile. A copy interrupted half-way leaves the runs written so
//! far (each run's manifest, then its trials in one atomic write, then its snapshot and its
//! measurements); a run whose
//! trials were not written yet then differs from the source and is named as a conflict by the next
//! copy: remove it from the target, or copy into a fresh one.

use serde::Serialize;

use super::{MeasurementRecord, RecoveredRecord, RunManifest, Snapshot, Store, TrialRecord};
use crate::error::{Error, Result};

/// What a copy did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopySummary {
    /// Runs written, with their trials and snapshots.
    pub runs: usize,
    pub trials: usize,
    pub snapshots: usize,
    pub measurements: usize,
    /// Recovered variants written (with their weights), and those the target had already.
    pub recovered: usize,
    pub recovered_present: usize,
    /// Runs the target held already, identical.
    pub runs_present: usize,
    /// Cached evaluations written, and those the target had already.
    pub cached: usize,
    pub cached_present: usize,
    /// Sensitivity analyses written, and those the target had already.
    pub sensitivity: usize,
    pub sensitivity_present: usize,
}

/// One run of the source, as read.
struct SourceRun {
    manifest: RunManifest,
    trials: Vec<TrialRecord>,
    snapshot: Option<Snapshot>,
    measurements: Vec<MeasurementRecord>,
    recovered: Vec<RecoveredRecord>,
}

/// Copies every record of `from` into `to` (see the module docs for what the target may hold).
pub fn copy(from: &dyn Store, to: &dyn Store) -> Result<CopySummary> {
    if let Some(c) = from.controllers()?.first() {
        return Err(Error::store(
            from.location(),
            format!(
                "run `{}` is being driven by pid {} on host {}; copy the store when that search has \
                 finished or been stopped",
                c.run, c.pid, c.host
            ),
        ));
    }
    let source = from
        .runs()?
        .into_iter()
        .map(|manifest| {
            Ok(SourceRun {
                trials: from.trials(&manifest.name)?,
                snapshot: from.snapshot(&manifest.name)?,
                measurements: from.measurements(&manifest.name)?,
                recovered: from.recovered(&manifest.name)?,
                manifest,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut summary = CopySummary::default();
    let mut missing = Vec::new();
    let mut conflicts = Vec::new();
    for run in &source {
        match difference(to, run)? {
            None => summary.runs_present += 1,
            Some(Difference::Absent) => missing.push(run),
            Some(Difference::Differs(why)) => {
                conflicts.push(format!("`{}` ({why})", run.manifest.name))
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(Error::store(
            to.location(),
            format!(
                "already holds runs that differ from those of {}: {}. Nothing was copied; remove \
                 those runs from the target, or copy into an empty store",
                from.location(),
                conflicts.join(", ")
            ),
        ));
    }
    for run in &missing {
        to.lock_run(&run.manifest.name)?;
    }
    copy_keyed(from, to, &mut summary)?;
    for run in missing {
        let name = &run.manifest.name;
        to.create_run(&run.manifest)?;
        if !run.trials.is_empty() {
            to.put_trials(name, &run.trials)?;
        }
        if let Some(s) = &run.snapshot {
            to.put_snapshot(name, s)?;
            summary.snapshots += 1;
        }
        if !run.measurements.is_empty() {
            to.put_measurements(name, &run.measurements)?;
            summary.measurements += run.measurements.len();
        }
        summary.runs += 1;
        summary.trials += run.trials.len();
    }
    for run in &source {
        copy_recovered(from, to, run, &mut summary)?;
    }
    Ok(summary)
}

/// The recovered variants of `run` that the target lacks, each after its weights blob.
fn copy_recovered(
    from: &dyn Store,
    to: &dyn Store,
    run: &SourceRun,
    summary: &mut CopySummary,
) -> Result<()> {
    let name = &run.manifest.name;
    let present: std::collections::HashSet<String> =
        to.recovered(name)?.into_iter().map(|r| r.key).collect();
    for record in &run.recovered {
        if present.contains(&record.key) {
            summary.recovered_present += 1;
            continue;
        }
        let key = blake3::Hash::from_hex(&record.weights).map_err(|_| {
            Error::store(
                from.location(),
                format!(
                    "recovered variant {} of run `{name}` has a malformed weights key `{}`; \
                     nothing of it was copied",
                    record.key, record.weights
                ),
            )
        })?;
        let bytes = from.blob(&key)?.ok_or_else(|| {
            Error::store(
                from.location(),
                format!(
                    "the weights of recovered variant {} of run `{name}` are not in the store; \
                     nothing of it was copied (recover the point again, then copy)",
                    record.key
                ),
            )
        })?;
        to.put_blob(&key, &bytes)?;
        to.put_recovered(name, record)?;
        summary.recovered += 1;
    }
    Ok(())
}

/// How a target's run of a source run's name differs from it.
enum Difference {
    Absent,
    Differs(String),
}

/// `None` when the target holds `run` exactly.
fn difference(to: &dyn Store, run: &SourceRun) -> Result<Option<Difference>> {
    let name = &run.manifest.name;
    let Some(theirs) = to.run(name)? else {
        return Ok(Some(Difference::Absent));
    };
    if json(&theirs) != json(&run.manifest) {
        return Ok(Some(Difference::Differs("another manifest".into())));
    }
    let trials = to.trials(name)?;
    if trials.len() != run.trials.len() {
        return Ok(Some(Difference::Differs(format!(
            "{} trials there, {} here",
            trials.len(),
            run.trials.len()
        ))));
    }
    if let Some((t, _)) = trials
        .iter()
        .zip(&run.trials)
        .find(|(a, b)| json(a) != json(b))
    {
        return Ok(Some(Difference::Differs(format!(
            "trial {} differs",
            t.number
        ))));
    }
    if json(&to.snapshot(name)?) != json(&run.snapshot) {
        return Ok(Some(Difference::Differs(
            "another strategy snapshot".into(),
        )));
    }
    let measurements = to.measurements(name)?;
    if json(&measurements) != json(&run.measurements) {
        return Ok(Some(Difference::Differs(format!(
            "other measurements: {} there, {} here",
            measurements.len(),
            run.measurements.len()
        ))));
    }
    Ok(None)
}

/// The cache and the sensitivity analyses: the keys the target lacks.
fn copy_keyed(from: &dyn Store, to: &dyn Store, summary: &mut CopySummary) -> Result<()> {
    for (key, evaluation) in from.cache_entries()? {
        if to.cached(&key)?.is_some() {
            summary.cached_present += 1;
        } else {
            to.put_cached(&key, &evaluation)?;
            summary.cached += 1;
        }
    }
    for (key, record) in from.sensitivity_entries()? {
        if to.sensitivity(&key)?.is_some() {
            summary.sensitivity_present += 1;
        } else {
            to.put_sensitivity(&key, &record)?;
            summary.sensitivity += 1;
        }
    }
    Ok(())
}

/// A record's JSON, for comparing records as stored (floats compare by their text, NaN included).
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
