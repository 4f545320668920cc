//! The search loop: ask → journal → evaluate (cache first, in parallel) → journal → tell.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use super::cached::CachingEvaluator;
use super::fidelity::{Gate, Proxy};
use super::held_out::{complete_front, HeldOutOutcome};
use super::session::Session;
use super::{Progress, StopReason};
use crate::error::{Error, Result};
use crate::eval::Evaluator;
use crate::store::SCHEMA_VERSION;
use crate::store::{
    ProxyRecord, Queue, RunConfig, RunManifest, RunStatus, Snapshot, Store, TrialRecord, TrialState,
};
use crate::strategy::refine::{Choice, Refined};
use crate::strategy::{self, History, Observed, Problem, Strategy, StrategyKind};

/// How a session of a run is driven.
pub struct Control<'a> {
    /// Evaluations run at once (1: one at a time, candle using every core inside it).
    pub jobs: usize,
    /// `Some` to have `mpsearch worker` processes evaluate the trials, through the store's queue
    /// ([`crate::store::Queue`]; `jobs` is then unused): the callback hears what the controller waits
    /// for (no worker has finished anything for a while).
    pub workers: Option<&'a mut dyn FnMut(&str)>,
    /// Set (by Ctrl-C) to stop: evaluations already started finish, the rest stay `running` in the
    /// journal and are evaluated first when the run is resumed.
    pub stop: &'a AtomicBool,
    /// Called after every batch.
    pub progress: &'a mut dyn FnMut(&Progress),
}

/// What a session of a run did.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub reason: StopReason,
    pub manifest: RunManifest,
    /// Every trial of the run, in order.
    pub trials: Vec<TrialRecord>,
    /// Trials finished in this session.
    pub new_trials: u64,
    /// Evaluations computed in this session (not from the cache).
    pub evaluated: u64,
    /// Trials of this session answered by the cache.
    pub cache_hits: u64,
    /// Seconds the strategy spent asking and telling in this session.
    pub strategy_seconds: f64,
    /// The predictor's refits computed in this session, and what each chose ([`strategy::refine`]; a
    /// resumed session first recomputes the one in force).
    pub refinements: Vec<Choice>,
    /// Wall seconds of this session's loop.
    pub seconds: f64,
    /// The front's held-out evaluations completed at the end (`None` when interrupted: the next
    /// session, `report` or `export` completes them).
    pub held_out: Option<HeldOutOutcome>,
}

/// The point of a stored trial, as strategies see it: a pruned trial with its proxy quality, as an
/// estimate that no front counts.
fn observed(r: &TrialRecord) -> Observed {
    let (quality, proxy) = match r.state {
        TrialState::Complete => (r.quality, false),
        TrialState::Pruned => (r.proxy.as_ref().map(|p| p.quality), true),
        TrialState::Running | TrialState::Failed => (None, false),
    };
    Observed {
        number: r.number,
        point: r.point.clone(),
        quality,
        proxy,
    }
}

/// Runs (or continues) the run `manifest` describes until its budget, the strategy or `control.stop`
/// ends it. Trials are evaluated by `evaluator` (normally `session.evaluator`) through the store's
/// evaluation cache.
pub fn run(
    session: &Session,
    evaluator: &dyn Evaluator,
    store: &dyn Store,
    mut manifest: RunManifest,
    control: &mut Control,
) -> Result<Outcome> {
    let started = Instant::now();
    let elapsed_before = manifest.elapsed_seconds;
    let name = manifest.name.clone();
    let kind = manifest.config.strategy;
    // One controller per run (see `Store`): on a shared store this refuses a run another process
    // drives; on sled it also starts the live view that readers of the held store see.
    store.lock_run(&name)?;
    let queue = store.queue();
    match (control.workers.is_some(), queue) {
        (true, None) => {
            return Err(Error::search(format!(
                "store {} has no evaluation queue: workers share a PostgreSQL store \
                 (--store postgres://…)",
                store.location()
            )))
        }
        // Evaluated here: what an earlier session queued for workers is withdrawn (a worker that still
        // finishes one has its result dropped).
        (false, Some(queue)) => queue.withdraw(&name)?,
        _ => {}
    }
    let mut journal = Journal::load(&session.problem, store, &name, kind)?;
    manifest.status = RunStatus::Running;
    store.put_run(&manifest)?;
    let proxy = match manifest.config.fidelity {
        Some(f) => Some(Proxy::new(f, evaluator)?),
        None => None,
    };
    let evaluator = CachingEvaluator::new(evaluator, store);
    let pool = thread_pool(control.jobs)?;
    let reason = loop {
        let elapsed = elapsed_before + started.elapsed().as_secs_f64();
        if let Some(reason) = journal.stop_reason(&manifest.config, elapsed, control.stop) {
            break reason;
        }
        let Some(batch) = journal.next_batch(session, &evaluator, store, &manifest)? else {
            break StopReason::Exhausted;
        };
        // Decided from the trials before the batch only, whatever order its evaluations finish in and
        // whichever of them a resume finds finished.
        let start = batch.first().map_or(0, |r| r.batch.unwrap_or(r.number));
        let before = journal.records.partition_point(|r| r.number < start);
        let gate = proxy.map(|p| Gate::new(p, &session.problem, &journal.records[..before]));
        let finish = |r: TrialRecord| {
            finish_trial(
                session,
                &evaluator,
                gate.as_ref(),
                store,
                &name,
                control.stop,
                r,
            )
        };
        let finished = match (control.workers.as_mut(), queue) {
            (Some(say), Some(queue)) => {
                finish_remotely(queue, store, &name, batch, control.stop, &mut **say)?
            }
            _ => finish_batch(batch, pool.as_ref(), finish)?,
        };
        let Some(finished) = finished else {
            break StopReason::Interrupted;
        };
        journal.record(session, store, &name, finished)?;
        manifest.elapsed_seconds = elapsed_before + started.elapsed().as_secs_f64();
        store.put_run(&manifest)?;
        (control.progress)(&progress(
            session,
            &manifest,
            &journal.history,
            &journal.records,
        ));
    };
    manifest.status = match reason {
        StopReason::Interrupted => RunStatus::Interrupted,
        StopReason::Exhausted => RunStatus::Exhausted,
        StopReason::Trials | StopReason::Time => RunStatus::Complete,
    };
    manifest.elapsed_seconds = elapsed_before + started.elapsed().as_secs_f64();
    store.put_run(&manifest)?;
    // Trials left `running` (interrupted) stay in the journal for the next session.
    let mut records = journal.records;
    records.extend(store.trials(&name)?.into_iter().skip(records.len()));
    let held_out = match reason {
        StopReason::Interrupted => None,
        _ => {
            let h = complete_front(
                evaluator.inner(),
                &session.space,
                store,
                &manifest,
                &records,
            )?;
            if let Some(e) = manifest.evaluations.as_mut() {
                e.held_out.add(h.count());
                store.put_run(&manifest)?;
            }
            Some(h)
        }
    };
    Ok(Outcome {
        held_out,
        reason,
        manifest,
        trials: records,
        new_trials: journal.new_trials,
        evaluated: journal.evaluated,
        cache_hits: journal.cache_hits,
        strategy_seconds: journal.strategy_seconds,
        refinements: journal.refinements,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A session's view of its run: the journal, the strategy's history and state, and what this session
/// did. The journal is the truth: finished trials (complete, failed, pruned) up to the first one still
/// `running`
/// form the history; from there on, the last asked batch is finished before anything new is asked.
struct Journal {
    /// Finished trials, in order: the stored ones before the first `running` one, then this session's.
    records: Vec<TrialRecord>,
    /// The stored trials from the first `running` one on (the last asked batch), until finished.
    pending: Vec<TrialRecord>,
    history: History,
    strategy: Box<dyn Strategy>,
    /// The problem with the predictor refined on the first trials ([`strategy::refine`]), once the run
    /// has that many; the session's problem until then (or when the run does not refine).
    refined: Refined,
    /// The refits made in this session.
    refinements: Vec<Choice>,
    /// Trials finished in this session, and of those the complete ones evaluated and from the cache.
    new_trials: u64,
    evaluated: u64,
    cache_hits: u64,
    /// Seconds the strategy spent rebuilding, asking and telling in this session.
    strategy_seconds: f64,
}

impl Journal {
    /// The stored journal of run `name`, and its strategy rebuilt from it.
    fn load(
        problem: &Problem,
        store: &dyn Store,
        name: &str,
        kind: StrategyKind,
    ) -> Result<Journal> {
        let mut records = store.trials(name)?;
        let first_running = records
            .iter()
            .position(|r| r.state == TrialState::Running)
            .unwrap_or(records.len());
        let pending: Vec<TrialRecord> = records.split_off(first_running);
        let mut history = History::new();
        for r in &records {
            history.push(observed(r));
        }
        let t = Instant::now();
        let strategy = rebuild(kind, problem, store, name, &history)?;
        Ok(Journal {
            records,
            pending,
            history,
            strategy,
            refined: Refined::default(),
            refinements: Vec::new(),
            new_trials: 0,
            evaluated: 0,
            cache_hits: 0,
            strategy_seconds: t.elapsed().as_secs_f64(),
        })
    }

    /// Why the session stops before its next batch, if it does: `stop` is set, or (with no batch
    /// pending) the trial or time budget of `config` is spent after `elapsed` seconds in all.
    fn stop_reason(
        &self,
        config: &RunConfig,
        elapsed: f64,
        stop: &AtomicBool,
    ) -> Option<StopReason> {
        if stop.load(Ordering::SeqCst) {
            return Some(StopReason::Interrupted);
        }
        if self.pending.is_empty() {
            if config.trials.is_some_and(|n| self.trials() >= n) {
                return Some(StopReason::Trials);
            }
            if config.time_seconds.is_some_and(|s| elapsed >= s) {
                return Some(StopReason::Time);
            }
        }
        None
    }

    /// Trials in the journal, finished or not.
    fn trials(&self) -> u64 {
        (self.records.len() + self.pending.len()) as u64
    }

    /// The next batch to finish: the pending one, else the space's baselines not yet tried, else a new
    /// one asked of the strategy (at most the trials left in the budget), journaled as `running`;
    /// `None` when the strategy has nothing left to ask.
    fn next_batch(
        &mut self,
        session: &Session,
        evaluator: &dyn Evaluator,
        store: &dyn Store,
        manifest: &RunManifest,
    ) -> Result<Option<Vec<TrialRecord>>> {
        if !self.pending.is_empty() {
            return Ok(Some(std::mem::take(&mut self.pending)));
        }
        let done = self.trials();
        let config = &manifest.config;
        let room = config.trials.map_or(u64::MAX, |n| n.saturating_sub(done));
        let n = (config.ask_batch as u64).min(room).max(1) as usize;
        // The space's baselines come first, then the strategy's proposals.
        let baselines = strategy::untried_baselines(&session.problem, &self.history, n);
        let (name, points) = if baselines.is_empty() {
            let t = Instant::now();
            self.refine(session, config);
            let problem = self.refined.problem(&session.problem);
            let points = self.strategy.ask(problem, &self.history, n)?;
            self.strategy_seconds += t.elapsed().as_secs_f64();
            (self.strategy.name(), points)
        } else {
            (strategy::BASELINE, baselines)
        };
        if points.is_empty() {
            return Ok(None);
        }
        let recs: Vec<TrialRecord> = points
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let mut r = new_record(session, evaluator, name, done + i as u64, p);
                r.batch = config.fidelity.map(|_| done);
                r
            })
            .collect();
        store.put_trials(&manifest.name, &recs)?;
        Ok(Some(recs))
    }

    /// Brings the refined problem up to date with the finished trials (see [`strategy::refine`]).
    fn refine(&mut self, session: &Session, config: &RunConfig) {
        if !config.refine {
            return;
        }
        let refiner = strategy::refine::Refiner {
            errors: &session.sensitivity.errors,
            measurements: &session.sensitivity.measurements,
        };
        if let Some(chosen) = refiner.update(&session.problem, &self.history, &mut self.refined) {
            self.refinements.push(chosen);
        }
    }

    /// Adds a finished batch to the journal and the history, tells the strategy, and stores its
    /// snapshot for run `name`.
    fn record(
        &mut self,
        session: &Session,
        store: &dyn Store,
        name: &str,
        finished: Vec<TrialRecord>,
    ) -> Result<()> {
        let start = self.history.len();
        for r in finished {
            if r.state == TrialState::Complete {
                if r.cached {
                    self.cache_hits += 1;
                } else {
                    self.evaluated += 1;
                }
            }
            self.new_trials += 1;
            self.history.push(observed(&r));
            self.records.push(r);
        }
        let t = Instant::now();
        // Told with the set-up's problem, as a resume's rebuild tells the whole history (see
        // `Strategy::tell`).
        self.strategy
            .tell(&session.problem, &self.history, start..self.history.len())?;
        let state = self.strategy.snapshot()?;
        self.strategy_seconds += t.elapsed().as_secs_f64();
        store.put_snapshot(
            name,
            &Snapshot {
                schema: SCHEMA_VERSION,
                strategy: self.strategy.name().to_string(),
                trials: self.history.len() as u64,
                state,
            },
        )
    }
}

/// A pool of `jobs` threads for the evaluations, or none to run them one at a time.
fn thread_pool(jobs: usize) -> Result<Option<rayon::ThreadPool>> {
    if jobs <= 1 {
        return Ok(None);
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .build()
        .map(Some)
        .map_err(|e| Error::search(format!("cannot start {jobs} threads: {e}")))
}

/// Finishes every trial of `batch` with `finish`, on `pool`'s threads when there is one; the finished
/// trials in order, or `None` if one was stopped before it started. The first error (in trial order)
/// is returned once the whole batch is done.
fn finish_batch<F>(
    batch: Vec<TrialRecord>,
    pool: Option<&rayon::ThreadPool>,
    finish: F,
) -> Result<Option<Vec<TrialRecord>>>
where
    F: Fn(TrialRecord) -> Result<Option<TrialRecord>> + Send + Sync,
{
    let results: Vec<Result<Option<TrialRecord>>> = match pool {
        Some(pool) => pool.install(|| batch.into_par_iter().map(finish).collect()),
        None => batch.into_iter().map(finish).collect(),
    };
    let mut finished = Vec::with_capacity(results.len());
    let mut interrupted = false;
    for r in results {
        match r? {
            Some(r) => finished.push(r),
            None => interrupted = true,
        }
    }
    Ok((!interrupted).then_some(finished))
}

/// How long the controller waits for a worker to finish something before it says so.
const QUIET_WORKERS: Duration = Duration::from_secs(20);
/// The first and the longest pause between two looks at the queue.
const POLL: (Duration, Duration) = (Duration::from_millis(10), Duration::from_millis(400));

/// Finishes the `running` trials of `batch` on workers: enqueued in the store's `queue`, then taken
/// back as workers finish them, each journaled durably when it comes; the batch in trial order, or
/// `None` if `stop` is set first (what is queued stays queued, for a resume to take). `say` hears when
/// no worker has finished anything for [`QUIET_WORKERS`].
fn finish_remotely(
    queue: &dyn Queue,
    store: &dyn Store,
    run: &str,
    mut batch: Vec<TrialRecord>,
    stop: &AtomicBool,
    say: &mut dyn FnMut(&str),
) -> Result<Option<Vec<TrialRecord>>> {
    let open: Vec<TrialRecord> = batch
        .iter()
        .filter(|r| r.state == TrialState::Running)
        .cloned()
        .collect();
    queue.enqueue(run, &open)?;
    let mut waiting: Vec<u64> = open.iter().map(|r| r.number).collect();
    let mut pause = POLL.0;
    let mut quiet = Instant::now();
    let mut said = false;
    while !waiting.is_empty() {
        let got = queue.finished(run, &waiting)?;
        if got.is_empty() {
            if stop.load(Ordering::SeqCst) {
                return Ok(None);
            }
            if !said && quiet.elapsed() >= QUIET_WORKERS {
                said = true;
                say(&format!(
                    "{} trials of run `{run}` are queued and no worker has finished one for {} s: \
                     start workers with `mpsearch worker --store {}` (they need the run's model, \
                     data and profile)",
                    waiting.len(),
                    QUIET_WORKERS.as_secs(),
                    store.location()
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(POLL.1);
            continue;
        }
        let mut finished = Vec::with_capacity(got.len());
        for f in got {
            let slot = batch
                .iter_mut()
                .find(|r| r.number == f.trial.number)
                .ok_or_else(|| {
                    Error::search(format!("trial {} is not in the batch", f.trial.number))
                })?;
            if f.trial.hash != slot.hash || f.trial.state == TrialState::Running {
                return Err(Error::search(format!(
                    "worker {} handed back trial {} of run `{run}` {}; the queue is not what this \
                     controller wrote",
                    f.worker,
                    f.trial.number,
                    if f.trial.state == TrialState::Running {
                        "unfinished".to_string()
                    } else {
                        format!("with another assignment ({})", f.trial.hash)
                    }
                )));
            }
            *slot = f.trial.clone();
            finished.push(f.trial);
        }
        store.put_trials(run, &finished)?;
        let numbers: Vec<u64> = finished.iter().map(|r| r.number).collect();
        queue.taken(run, &numbers)?;
        waiting.retain(|n| !numbers.contains(n));
        pause = POLL.0;
        quiet = Instant::now();
        said = false;
    }
    Ok(Some(batch))
}

/// The strategy of a run, in the state the stored history gives: its snapshot when that covers exactly
/// this history, else a fresh strategy told every trial (the same state, by the tell contract).
fn rebuild(
    kind: StrategyKind,
    problem: &Problem,
    store: &dyn Store,
    name: &str,
    history: &History,
) -> Result<Box<dyn Strategy>> {
    let mut strategy = strategy::build(kind)?;
    if let Some(s) = store.snapshot(name)? {
        if s.strategy == strategy.name()
            && s.trials == history.len() as u64
            && strategy.restore(&s.state).is_ok()
        {
            return Ok(strategy);
        }
        strategy = strategy::build(kind)?;
    }
    strategy.tell(problem, history, 0..history.len())?;
    Ok(strategy)
}

/// Evaluates a journaled `running` trial (through the cache) and journals its result durably; a trial
/// already finished is returned as it is; `None` if `stop` is set before it starts (see
/// [`evaluate_trial`]).
fn finish_trial(
    session: &Session,
    evaluator: &CachingEvaluator,
    gate: Option<&Gate>,
    store: &dyn Store,
    run: &str,
    stop: &AtomicBool,
    r: TrialRecord,
) -> Result<Option<TrialRecord>> {
    if r.state != TrialState::Running {
        return Ok(Some(r));
    }
    let Some(r) = evaluate_trial(session, evaluator, gate, stop, r) else {
        return Ok(None);
    };
    store.put_trial(run, &r)?;
    Ok(Some(r))
}

/// A `running` trial evaluated (through the cache) and finished — complete, failed, or with a `gate`
/// (`--fidelity`) first evaluated on the proxy and pruned there unless the gate promotes it —; `None`
/// if `stop` is set before it starts. A failed evaluation is a failed trial, never an error.
pub(super) fn evaluate_trial(
    session: &Session,
    evaluator: &CachingEvaluator,
    gate: Option<&Gate>,
    stop: &AtomicBool,
    mut r: TrialRecord,
) -> Option<TrialRecord> {
    if stop.load(Ordering::SeqCst) {
        return None;
    }
    let a = session.space.assignment(&r.point);
    if let Some(gate) = gate {
        match evaluator.evaluate_cached_on(gate.proxy.split(), &a) {
            Ok((e, cached)) if e.quality.is_finite() => {
                let promoted = gate.promotes(&session.problem, &r.strategy, &r.point, e.quality);
                r.proxy = Some(ProxyRecord {
                    samples: gate.proxy.samples,
                    share: gate.proxy.share,
                    quality: e.quality,
                    metrics: e.metrics,
                    cached,
                    seconds: e.seconds,
                });
                if !promoted {
                    r.state = TrialState::Pruned;
                    return Some(r);
                }
            }
            Ok((e, _)) => {
                r.state = TrialState::Failed;
                r.error = Some(format!(
                    "the proxy evaluation gave a quality of {}",
                    e.quality
                ));
                return Some(r);
            }
            Err(e) => {
                r.state = TrialState::Failed;
                r.error = Some(format!("the proxy evaluation: {e}"));
                return Some(r);
            }
        }
    }
    match evaluator.evaluate_cached(&a) {
        Ok((e, cached)) if e.quality.is_finite() => {
            r.state = TrialState::Complete;
            r.quality = Some(e.quality);
            r.metrics = e.metrics;
            r.cached = cached;
            r.seconds = e.seconds;
        }
        Ok((e, _)) => {
            r.state = TrialState::Failed;
            r.error = Some(format!("the evaluation gave a quality of {}", e.quality));
            r.metrics = e.metrics;
            r.seconds = e.seconds;
        }
        Err(e) => {
            r.state = TrialState::Failed;
            r.error = Some(e.to_string());
        }
    }
    Some(r)
}

/// A freshly asked trial, journaled as `running` before it is evaluated.
fn new_record(
    session: &Session,
    evaluator: &dyn Evaluator,
    strategy: &str,
    number: u64,
    point: Vec<u16>,
) -> TrialRecord {
    let a = session.space.assignment(&point);
    let c = session.table.cost(&point);
    TrialRecord {
        schema: SCHEMA_VERSION,
        number,
        strategy: strategy.to_string(),
        state: TrialState::Running,
        hash: a.hash().to_hex().to_string(),
        assignment: a.to_json(),
        key: evaluator.key(&a).to_hex().to_string(),
        point,
        quality: None,
        metrics: Default::default(),
        error: None,
        cost: c.into(),
        cached: false,
        seconds: 0.0,
        proxy: None,
        batch: None,
    }
}

fn progress(
    session: &Session,
    manifest: &RunManifest,
    history: &History,
    records: &[TrialRecord],
) -> Progress {
    let mut p = Progress {
        trials: records.len() as u64,
        budget: manifest.config.trials,
        time_budget: manifest.config.time_seconds,
        elapsed: manifest.elapsed_seconds,
        evaluations: crate::store::evaluations(manifest, records),
        front: history.front(&session.problem).len(),
        hypervolume: history.hypervolume(&session.problem),
        ..Progress::default()
    };
    for r in records {
        match r.state {
            TrialState::Complete if r.cached => p.cache_hits += 1,
            TrialState::Complete => p.evaluated += 1,
            TrialState::Failed => p.failed += 1,
            TrialState::Pruned => p.pruned += 1,
            TrialState::Running => {}
        }
    }
    p
}
