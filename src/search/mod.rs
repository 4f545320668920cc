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

mod cached;
mod controller;
mod session;

use std::collections::BTreeMap;

use serde::Serialize;

pub use self::cached::CachingEvaluator;
pub use self::controller::{run, Control, Outcome};
pub use self::session::{
    fingerprints, objective, profile_fingerprint, scale_method, sensitivity_key, space_fingerprint,
    Session, SetupPhase, COST_REFERENCE, QUALITY_REFERENCE,
};
use crate::error::{Error, Result};
use crate::pareto;
use crate::store::{
    RunConfig, RunManifest, RunStatus, Store, TrialRecord, TrialState, SCHEMA_VERSION,
};

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
    /// Trials evaluated for real.
    pub evaluated: u64,
    /// Trials answered by the evaluation cache.
    pub cache_hits: u64,
    pub failed: u64,
    /// Points on the measured feasible front.
    pub front: usize,
    /// Normalised hypervolume of the measured front (0..1, see [`History::hypervolume`](crate::strategy::History::hypervolume)).
    pub hypervolume: f64,
}

/// Sets up a new run named `name` and records its manifest (an error if the store has one by that
/// name).
pub fn create(
    store: &dyn Store,
    name: &str,
    config: RunConfig,
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
    let session = Session::prepare(config, store, progress)?;
    let manifest = RunManifest {
        schema: SCHEMA_VERSION,
        name: name.to_string(),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        status: RunStatus::Running,
        elapsed_seconds: 0.0,
        config: session.config.clone(),
        reference: session.problem.reference,
        fingerprints: session.fingerprints.clone(),
    };
    store.create_run(&manifest)?;
    Ok((session, manifest))
}

/// Opens the stored run `name` for resuming: its inputs loaded again and checked against the
/// fingerprints in its manifest.
pub fn open(
    store: &dyn Store,
    name: &str,
    progress: &mut dyn FnMut(SetupPhase, usize, usize),
) -> Result<(Session, RunManifest)> {
    let manifest = find_run(store, name)?;
    let session = Session::prepare(manifest.config.clone(), store, progress)?;
    let changes = changed(&manifest.fingerprints, &session.fingerprints);
    if !changes.is_empty() {
        return Err(Error::RunChanged {
            run: name.to_string(),
            changes,
        });
    }
    Ok((session, manifest))
}

/// The stored run `name`, or an error listing the runs there are.
pub fn find_run(store: &dyn Store, name: &str) -> Result<RunManifest> {
    if let Some(m) = store.run(name)? {
        return Ok(m);
    }
    let names: Vec<String> = store.runs()?.into_iter().map(|m| m.name).collect();
    Err(Error::store(
        store.location(),
        if names.is_empty() {
            format!("has no run `{name}` (it holds no runs yet; start one with `mpsearch search`)")
        } else {
            format!("has no run `{name}`; its runs are: {}", names.join(", "))
        },
    ))
}

/// What differs between recorded and current fingerprints, in words.
fn changed(recorded: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<String> {
    let what = |k: &str| match k {
        "model" => "the model's weights changed",
        "evaluator" => "the evaluation data or evaluator settings changed",
        "space" => "the search space resolves to other groups or choices",
        "profile" => "the hardware profile's contents changed",
        _ => "an input changed",
    };
    recorded
        .iter()
        .filter(|(k, v)| now.get(*k) != Some(*v))
        .map(|(k, v)| {
            format!(
                "{} (fingerprint {} → {})",
                what(k),
                &v[..v.len().min(12)],
                now.get(k).map_or("none", |n| &n[..n.len().min(12)])
            )
        })
        .collect()
}

/// A name for a new run: `<space>-<profile>-<n>` with the first free n.
pub fn default_run_name(store: &dyn Store, space: &str, profile: &str) -> Result<String> {
    let clean = |s: &str| -> String {
        let stem = std::path::Path::new(s)
            .file_stem()
            .map_or(s.to_string(), |x| x.to_string_lossy().into_owned());
        stem.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    let base = format!("{}-{}", clean(space), clean(profile));
    let taken: std::collections::HashSet<String> =
        store.runs()?.into_iter().map(|m| m.name).collect();
    Ok((1..)
        .map(|n| format!("{base}-{n}"))
        .find(|n| !taken.contains(n))
        .unwrap_or(base))
}

/// The measured front of a run's trials: complete trials within the run's limits that no other such
/// trial dominates in (cost, quality), sorted by cost. Needs no model: `runs` and reports use it.
pub fn front<'a>(config: &RunConfig, trials: &'a [TrialRecord]) -> Result<Vec<&'a TrialRecord>> {
    let o = objective(&config.objective)?;
    let ok: Vec<&TrialRecord> = trials.iter().filter(|t| feasible(config, t)).collect();
    let pts: Vec<[f64; 2]> = ok
        .iter()
        .map(|t| [cost_of(o, t), t.quality.unwrap_or(f64::INFINITY)])
        .collect();
    let mut f: Vec<&TrialRecord> = pareto::front_2d(&pts).into_iter().map(|i| ok[i]).collect();
    f.sort_by(|a, b| {
        cost_of(o, a)
            .total_cmp(&cost_of(o, b))
            .then(a.number.cmp(&b.number))
    });
    Ok(f)
}

/// Whether a trial can be on a run's front: complete, with a quality, and within every limit of the
/// run (costs as journaled in the trial).
pub fn feasible(config: &RunConfig, t: &TrialRecord) -> bool {
    let c = &t.cost;
    t.state == TrialState::Complete
        && t.quality.is_some()
        && config.max_latency_us.is_none_or(|m| c.latency_us <= m)
        && config.max_bytes.is_none_or(|m| c.bytes as f64 <= m)
        && config.max_bops.is_none_or(|m| c.bops <= m)
        && t.quality.zip(config.max_drop).is_none_or(|(q, m)| q <= m)
}

/// The normalised hypervolume of a run's measured front (as the progress bar shows it): the area the
/// front dominates in (cost / reference cost, quality / reference quality), between 0 and 1.
pub fn hypervolume(manifest: &RunManifest, trials: &[TrialRecord]) -> Result<f64> {
    let o = objective(&manifest.config.objective)?;
    let [rc, rq] = manifest.reference;
    let pts: Vec<[f64; 2]> = front(&manifest.config, trials)?
        .iter()
        .map(|t| [cost_of(o, t) / rc, t.quality.unwrap_or(f64::INFINITY) / rq])
        .collect();
    Ok(pareto::hypervolume_2d(&pts, [1.0, 1.0]))
}

/// The value of cost objective `o` in a trial's journaled cost.
pub fn cost_of(o: crate::cost::Objective, t: &TrialRecord) -> f64 {
    o.of(&crate::cost::Cost {
        latency_us: t.cost.latency_us,
        bytes: t.cost.bytes,
        bops: t.cost.bops,
    })
}

/// A run's status as listed: a run still marked `running` while this process holds the store was
/// left by a process that died; it is resumable like an interrupted one.
pub fn listed_status(m: &RunManifest) -> RunStatus {
    match m.status {
        RunStatus::Running => RunStatus::Interrupted,
        s => s,
    }
}
