//! # The search controller
//!
//! Runs a search: a [`Session`] loads the model, data, space and hardware profile a [`RunConfig`]
//! names, checks every limit against the reachable range before anything is evaluated, and builds the
//! sensitivity model (reusing the store's copy when it has one). The loop ([`run`]) then asks the
//! strategy for a batch of points, journals them as `running`, answers each from the content-addressed
//! evaluation cache or evaluates it (in parallel with `--jobs`), journals each result durably, and tells
//! the strategy the batch in trial-number order — so a seeded run gives the same trials whatever the
//! thread count. Costs come from the exact cost table, never from the cache.
//!
//! Resume needs no special path: the journal is the truth. A new session tells the strategy the stored
//! trials (or restores its snapshot when it matches), evaluates the trials a crash or Ctrl-C left
//! `running` — under their own numbers, with the points they were asked with —, and carries on. A
//! manifest whose fingerprints no longer match the files is refused with what changed
//! ([`Error::RunChanged`]).
//!
//! A run exists from its first second: [`create`] writes its manifest, in `setting-up`, once its inputs
//! are loaded and checked ([`Loaded`]), and the set-up ([`Loaded::set_up`]) checkpoints each group's
//! cheap errors and each one-at-a-time measurement as it goes, so that [`open`] continues a set-up
//! that was stopped (Ctrl-C: [`Error::Interrupted`]) or killed where it stopped, to the analysis an
//! uninterrupted one builds.
//!
//! The set-up's one-at-a-time measurements are frugal by default (`--pairs auto`, [`frugal`]): only the
//! pairs the predicted front uses, their neighbours and rivals, round by round until the front's
//! membership is stable or a fifth of the run's budget is spent. Every model evaluation a run spends
//! is counted by what it was for — set-up, baselines, trials, held-out — in its manifest and trial
//! records ([`crate::store::evaluations`]).
//!
//! With `--fidelity` ([`fidelity`]) each trial is first evaluated on a proxy — the first samples of the
//! search split, under its own cache key — and in full only if the proxy says it could reach the
//! front; the others are journaled `pruned` with their proxy quality, which strategies learn from and
//! fronts ignore.
//!
//! Finished trials refine the predictor the strategy is asked with ([`crate::strategy::refine`]): at 16 trials, then each
//! time their number doubles, the per-group scales are refitted to the set-up's measurements and the
//! trials jointly (a trial measures every group at once).
//!
//! When a run ends (not when it is interrupted), every point of its front is evaluated on the
//! held-out split of the data as well ([`held_out`]), so that reports and exports quote a quality the
//! front was not chosen on; strategies only ever see the search split.

mod cached;
mod controller;
pub mod fidelity;
pub mod frugal;
pub mod held_out;
mod session;
pub mod worker;

use std::sync::atomic::AtomicBool;

use serde::Serialize;

pub use self::cached::CachingEvaluator;
pub use self::controller::{run, Control, Outcome};
pub use self::held_out::HeldOutOutcome;
pub use self::session::{evaluator_settings, fingerprints, Loaded, Session, SetupPhase};
use crate::error::{Error, Result};
use crate::store::{find_run, Fingerprints, RunConfig, RunManifest, Store};

/// Why a session of a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StopReason {
    /// The trial budget is spent.
    Trials,
    /// The time budget is spent.
    Time,
    /// Ctrl-C or a signal.
    Interrupted,
    /// The strategy had nothing left to propose.
    Exhausted,
}

/// Where a run stands, after each batch.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Progress {
    /// Trials finished (complete or failed).
    pub trials: u64,
    pub budget: Option<u64>,
    pub time_budget: Option<f64>,
    /// Wall seconds over every session of the run.
    pub elapsed: f64,
    /// Model evaluations computed for the run so far, by what for (set-up, baselines, trials, held-out;
    /// see [`crate::store::evaluations`]).
    pub evaluations: crate::store::EvaluationCounts,
    /// Trials evaluated for real.
    pub evaluated: u64,
    /// Trials answered by the evaluation cache.
    pub cache_hits: u64,
    pub failed: u64,
    /// Trials pruned on their proxy evaluation (`--fidelity`).
    pub pruned: u64,
    /// Points on the measured feasible front.
    pub front: usize,
    /// Normalised hypervolume of the measured front (0..1, see [`History::hypervolume`](crate::strategy::History::hypervolume)).
    pub hypervolume: f64,
}

/// Creates the run `name` (an error if the store has one by that name) and sets it up. The run exists
/// from the start: its manifest is written, in `setting-up`, as soon as its inputs are loaded and
/// checked (bad inputs leave nothing behind), and its set-up checkpoints as it goes (see
/// [`Loaded::set_up`]). When `stop` is set during the set-up, the result is [`Error::Interrupted`]
/// and the run is stored for [`open`] to continue.
pub fn create(
    store: &dyn Store,
    name: &str,
    config: RunConfig,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(SetupPhase, usize, usize),
) -> Result<(Session, RunManifest)> {
    if store.run(name)?.is_some() {
        return Err(Error::store(
            store.location(),
            format!(
                "a run named `{name}` exists already: continue it with `mpsearch resume {name}`, or pick \
                 another name with --run"
            ),
        ));
    }
    let loaded = Loaded::load(config, None)?;
    let mut manifest = loaded.manifest(name);
    store.create_run(&manifest)?;
    let session = loaded.set_up(store, &mut manifest, stop, progress)?;
    Ok((session, manifest))
}

/// Opens the stored run `name` for resuming: its inputs loaded again and checked against the
/// fingerprints in its manifest, and its set-up read back — or, for a run stopped in its set-up,
/// continued where it stopped (with `stop` as [`create`] has it).
pub fn open(
    store: &dyn Store,
    name: &str,
    stop: &AtomicBool,
    progress: &mut dyn FnMut(SetupPhase, usize, usize),
) -> Result<(Session, RunManifest)> {
    let mut manifest = find_run(store, name)?;
    // The inputs' fingerprints are checked before the set-up evaluates anything.
    let loaded = Loaded::load(manifest.config.clone(), Some(&manifest))?;
    let session = loaded.set_up(store, &mut manifest, stop, progress)?;
    Ok((session, manifest))
}

/// What differs between recorded and current fingerprints, in words.
fn changed(recorded: &Fingerprints, now: &Fingerprints) -> Vec<String> {
    let short = |hex: &str| hex.chars().take(12).collect::<String>();
    [
        (
            &recorded.evaluator,
            &now.evaluator,
            "the evaluation data or evaluator settings changed",
        ),
        (&recorded.model, &now.model, "the model's weights changed"),
        (
            &recorded.profile,
            &now.profile,
            "the hardware profile's contents changed",
        ),
        (
            &recorded.space,
            &now.space,
            "the search space resolves to other groups or choices",
        ),
    ]
    .into_iter()
    .filter(|(r, n, _)| r != n)
    .map(|(r, n, what)| format!("{what} (fingerprint {} → {})", short(r), short(n)))
    .collect()
}
