//! # Workers
//!
//! `mpsearch worker`: a process, on any machine that has a run's model, data and hardware profile, that
//! evaluates the trials the run's controller queued in a shared store ([`crate::store::Queue`]). It
//! claims one task at a time per job, loads the run it belongs to the first time (its inputs checked
//! against the run's fingerprints — a run whose inputs differ here is refused, and said why, and its
//! tasks left to other workers), evaluates the trial exactly as the controller would (through the
//! store's evaluation cache; with `--fidelity`, gated on the run's trials before the batch), and hands
//! the finished trial back. A heartbeat thread keeps its claims alive; a worker killed mid-evaluation
//! leaves a claim that lapses after the lease, and another worker takes it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::cached::CachingEvaluator;
use super::controller::evaluate_trial;
use super::fidelity::{Gate, Proxy};
use super::session::{Loaded, Session};
use crate::error::{Error, Result};
use crate::store::{find_run, Queue, RunManifest, Store, Task, TrialRecord, TrialState, WorkerId};

/// How a worker works.
#[derive(Clone, Copy, Debug)]
pub struct WorkerOptions {
    /// Tasks evaluated at once.
    pub jobs: usize,
    /// How old a claim's heartbeat may be before another worker takes its task over (this worker
    /// beats four times per lease).
    pub lease: Duration,
    /// Stop after this long without a task (`None`: wait for work until stopped).
    pub idle: Option<Duration>,
}

/// What a worker does, as it happens.
#[derive(Debug)]
pub enum WorkerEvent<'a> {
    /// Registered under this id; waiting for tasks.
    Started(&'a WorkerId),
    /// Loaded run `run` to evaluate its trials.
    Attached { run: &'a str, seconds: f64 },
    /// Refused run `run` (its inputs differ here, or cannot be loaded): its tasks are left to others.
    Refused { run: &'a str, why: String },
    /// Finished trial `trial` of run `run` in `seconds`; `kept` is false when another worker had
    /// finished it first (this result was dropped).
    Finished {
        run: &'a str,
        trial: &'a TrialRecord,
        seconds: f64,
        kept: bool,
    },
    /// A heartbeat failed (the claims may lapse; the worker goes on).
    HeartbeatFailed(String),
}

/// What a worker did before it stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    /// Trials it finished and handed back (kept by the queue).
    pub finished: u64,
    /// Trials it finished after another worker had (dropped).
    pub dropped: u64,
}

/// Runs a worker on `store` until `stop` is set (the tasks in hand are finished first) or, with
/// `options.idle`, until no task came for that long. `say` hears every [`WorkerEvent`] (from several
/// threads).
pub fn work(
    store: &dyn Store,
    options: WorkerOptions,
    stop: &AtomicBool,
    say: &(dyn Fn(WorkerEvent) + Sync),
) -> Result<WorkerSummary> {
    let queue = store.queue().ok_or_else(|| {
        Error::search(format!(
            "store {} cannot be shared: workers and their controller share a PostgreSQL store \
             (--store postgres://…); a sled store belongs to one process",
            store.location()
        ))
    })?;
    let me = WorkerId::this_process();
    queue.heartbeat(&me)?;
    say(WorkerEvent::Started(&me));
    let runs = Runs::default();
    let finished = AtomicU64::new(0);
    let dropped = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let idle_since = Mutex::new(Instant::now());
    let beat = (options.lease / 4).max(Duration::from_millis(100));
    let result = std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut last = Instant::now();
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
                if last.elapsed() >= beat {
                    last = Instant::now();
                    if let Err(e) = queue.heartbeat(&me) {
                        say(WorkerEvent::HeartbeatFailed(e.to_string()));
                    }
                }
            }
        });
        let jobs: Vec<_> = (0..options.jobs.max(1))
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    // A job that fails stops the whole worker at once: its claim given back (best
                    // effort) and no more heartbeats, so nothing it held waits on it.
                    let failed = |e: Error| {
                        stop.store(true, Ordering::SeqCst);
                        Err(e)
                    };
                    let job = Job {
                        store,
                        queue,
                        me: &me,
                        runs: &runs,
                        stop,
                        say,
                    };
                    loop {
                        if stop.load(Ordering::SeqCst) {
                            return Ok(());
                        }
                        let claimed = runs
                            .refused()
                            .and_then(|skip| queue.claim(&me, &skip, options.lease));
                        let claimed = match claimed {
                            Ok(c) => c,
                            Err(e) => return failed(e),
                        };
                        let Some(task) = claimed else {
                            let since = *idle_since
                                .lock()
                                .map_err(|_| Error::search("a worker thread panicked"))?;
                            if options.idle.is_some_and(|d| since.elapsed() >= d) {
                                return Ok(());
                            }
                            std::thread::sleep(Duration::from_millis(100));
                            continue;
                        };
                        let (run, number) = (task.run.clone(), task.trial.number);
                        match job.evaluate(task) {
                            Ok(Some(true)) => finished.fetch_add(1, Ordering::SeqCst),
                            Ok(Some(false)) => dropped.fetch_add(1, Ordering::SeqCst),
                            Ok(None) => 0,
                            Err(e) => {
                                let _ = queue.release(&me, &run, number);
                                return failed(e);
                            }
                        };
                        *idle_since
                            .lock()
                            .map_err(|_| Error::search("a worker thread panicked"))? =
                            Instant::now();
                    }
                })
            })
            .collect();
        let mut first_error = None;
        for j in jobs {
            let r = j
                .join()
                .unwrap_or_else(|_| Err(Error::search("a worker thread panicked")));
            if let Err(e) = r {
                first_error.get_or_insert(e);
                stop.store(true, Ordering::SeqCst);
            }
        }
        done.store(true, Ordering::SeqCst);
        first_error.map_or(Ok(()), Err)
    });
    result?;
    Ok(WorkerSummary {
        finished: finished.load(Ordering::SeqCst),
        dropped: dropped.load(Ordering::SeqCst),
    })
}

/// The runs a worker has loaded, and those it refused.
#[derive(Default)]
struct Runs {
    loaded: Mutex<HashMap<String, Arc<Attached>>>,
    refused: Mutex<Vec<String>>,
}

/// A run a worker evaluates trials of.
struct Attached {
    manifest: RunManifest,
    session: Session,
    /// The gate (`--fidelity`) of the batch last evaluated here, by the batch's first trial: every
    /// trial of a batch has the same, so the journal is read once a batch.
    gate: Mutex<Option<(u64, Arc<Gate>)>>,
}

impl Attached {
    /// The gate of the batch that starts at trial `start`: decided from the run's trials before it,
    /// which are all finished (the controller queues a batch only after the last one).
    fn gate(&self, store: &dyn Store, run: &str, fidelity: f64, start: u64) -> Result<Arc<Gate>> {
        let mut last = self
            .gate
            .lock()
            .map_err(|_| Error::search("a worker thread panicked"))?;
        if let Some((_, gate)) = last.as_ref().filter(|(s, _)| *s == start) {
            return Ok(gate.clone());
        }
        let proxy = Proxy::new(fidelity, self.session.evaluator.as_ref())?;
        let before: Vec<TrialRecord> = store
            .trials(run)?
            .into_iter()
            .filter(|t| t.number < start && t.state != TrialState::Running)
            .collect();
        let gate = Arc::new(Gate::new(proxy, &self.session.problem, &before));
        *last = Some((start, gate.clone()));
        Ok(gate)
    }
}

impl Runs {
    fn refused(&self) -> Result<Vec<String>> {
        Ok(self
            .refused
            .lock()
            .map_err(|_| Error::search("a worker thread panicked"))?
            .clone())
    }
}

/// One evaluating thread of a worker.
struct Job<'a> {
    store: &'a dyn Store,
    queue: &'a dyn Queue,
    me: &'a WorkerId,
    runs: &'a Runs,
    stop: &'a AtomicBool,
    say: &'a (dyn Fn(WorkerEvent) + Sync),
}

impl Job<'_> {
    /// Evaluates a claimed task and hands it back: `Some(kept)`, or `None` when it was given back
    /// (its run refused, or the worker stopping before it started).
    fn evaluate(&self, task: Task) -> Result<Option<bool>> {
        let Some(run) = self.attach(&task.run)? else {
            self.queue.release(self.me, &task.run, task.trial.number)?;
            return Ok(None);
        };
        let started = Instant::now();
        let evaluator = CachingEvaluator::new(run.session.evaluator.as_ref(), self.store);
        let gate = match run.manifest.config.fidelity {
            Some(f) => {
                let start = task.trial.batch.unwrap_or(task.trial.number);
                Some(run.gate(self.store, &task.run, f, start)?)
            }
            None => None,
        };
        let Some(trial) = evaluate_trial(
            &run.session,
            &evaluator,
            gate.as_deref(),
            self.stop,
            task.trial.clone(),
        ) else {
            self.queue.release(self.me, &task.run, task.trial.number)?;
            return Ok(None);
        };
        let kept = self.queue.finish(self.me, &task.run, &trial)?;
        (self.say)(WorkerEvent::Finished {
            run: &task.run,
            trial: &trial,
            seconds: started.elapsed().as_secs_f64(),
            kept,
        });
        Ok(Some(kept))
    }

    /// Run `name`, loaded the first time (its inputs checked against its fingerprints); `None` when
    /// this worker refuses it (said once, with why).
    fn attach(&self, name: &str) -> Result<Option<Arc<Attached>>> {
        let lost = || Error::search("a worker thread panicked");
        // One loader at a time: the other jobs wait for the run rather than load it again.
        let mut loaded = self.runs.loaded.lock().map_err(|_| lost())?;
        if let Some(run) = loaded.get(name) {
            return Ok(Some(run.clone()));
        }
        if self
            .runs
            .refused
            .lock()
            .map_err(|_| lost())?
            .iter()
            .any(|r| r == name)
        {
            return Ok(None);
        }
        let started = Instant::now();
        let attached = find_run(self.store, name).and_then(|manifest| {
            let session = Loaded::load(manifest.config.clone(), Some(&manifest))?
                .attach(self.store, &manifest)?;
            Ok(Attached {
                manifest,
                session,
                gate: Mutex::new(None),
            })
        });
        match attached {
            Ok(run) => {
                let run = Arc::new(run);
                loaded.insert(name.to_string(), run.clone());
                (self.say)(WorkerEvent::Attached {
                    run: name,
                    seconds: started.elapsed().as_secs_f64(),
                });
                Ok(Some(run))
            }
            Err(e @ Error::Store { .. }) => Err(e),
            Err(e) => {
                self.runs
                    .refused
                    .lock()
                    .map_err(|_| lost())?
                    .push(name.to_string());
                (self.say)(WorkerEvent::Refused {
                    run: name,
                    why: e.to_string(),
                });
                Ok(None)
            }
        }
    }
}
