//! # The evaluation queue of a shared store
//!
//! How `mpsearch worker` processes, on any machines, evaluate a run's trials. The run's controller
//! (`search`/`resume --workers`) enqueues each batch the strategy asks for ([`Queue::enqueue`]: the
//! trials as journaled, `running`); a worker claims one ([`Queue::claim`], `SELECT … FOR UPDATE SKIP
//! LOCKED`, so two workers never get the same task), keeps its claims alive while it works
//! ([`Queue::heartbeat`]), and hands back the finished trial ([`Queue::finish`]); the controller takes
//! the finished ones ([`Queue::finished`]), journals them itself — the controller stays the one writer
//! of its run's journal — and marks them taken ([`Queue::taken`]). A claim whose heartbeat is older than
//! the claiming worker's lease (the worker was killed, its machine lost) is claimable again, so another
//! worker re-runs it; whichever finishes first is kept, and the other's result dropped.
//! Evaluations are deterministic, so whoever finishes a trial finishes it the same.
//!
//! Only a store that several processes share has a queue ([`super::Store::queue`]): PostgreSQL.

use std::time::Duration;

use serde::Serialize;

use super::TrialRecord;
use crate::error::Result;

/// A worker process, as its claims and heartbeats name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerId {
    /// `host:pid:start` — unique over machines and over a pid's reuse.
    pub id: String,
    pub host: String,
    pub pid: u32,
}

impl WorkerId {
    /// This process.
    pub fn this_process() -> WorkerId {
        let host = super::host_name();
        let pid = std::process::id();
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        WorkerId {
            id: format!("{host}:{pid}:{start}"),
            host,
            pid,
        }
    }
}

/// A claimed evaluation: trial `trial.number` of run `run`, as its controller journaled it.
#[derive(Clone, Debug)]
pub struct Task {
    pub run: String,
    pub trial: TrialRecord,
}

/// A trial a worker finished, as the controller takes it.
#[derive(Clone, Debug)]
pub struct Finished {
    pub trial: TrialRecord,
    /// The worker that finished it.
    pub worker: String,
}

/// A worker the store has seen, and what it did (for one run, or for all).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorkerSeen {
    pub id: String,
    pub host: String,
    pub pid: u32,
    /// Tasks it holds a live claim on now.
    pub claims: u64,
    /// Trials it finished.
    pub finished: u64,
    /// Its last heartbeat (seconds since the Unix epoch).
    pub heartbeat_unix: u64,
}

/// The evaluation queue of a shared store (see the module docs). Every call is one committed
/// transaction.
pub trait Queue: Send + Sync {
    /// Enqueues the `running` trials of a batch of run `run` (which must exist). A trial already in
    /// the queue — pending, claimed or finished, as after the controller was restarted — is left as it
    /// is.
    fn enqueue(&self, run: &str, trials: &[TrialRecord]) -> Result<()>;

    /// Claims the oldest claimable task outside the runs `skip`: one nobody claimed, or one whose
    /// claim lapsed (its heartbeat is older than the lease its claimant gave). This claim lapses when
    /// `worker`'s heartbeats stop for `lease`. `None` when there is none.
    fn claim(&self, worker: &WorkerId, skip: &[String], lease: Duration) -> Result<Option<Task>>;

    /// Records that `worker` is alive: its row, and the heartbeat of each claim it holds.
    fn heartbeat(&self, worker: &WorkerId) -> Result<()>;

    /// Gives a claimed task back, for another worker (one that refuses its run, or is stopping).
    fn release(&self, worker: &WorkerId, run: &str, number: u64) -> Result<()>;

    /// Withdraws the tasks of run `run` that no worker finished (its controller evaluates them itself
    /// now): a worker that finishes one after all has its result dropped.
    fn withdraw(&self, run: &str) -> Result<()>;

    /// Hands back trial `trial` of run `run`, finished by `worker`. `false` when it was finished
    /// already (by a worker that claimed it after this one's claim lapsed): this result is dropped.
    fn finish(&self, worker: &WorkerId, run: &str, trial: &TrialRecord) -> Result<bool>;

    /// The finished, not yet taken, trials of run `run` among `numbers`, in number order.
    fn finished(&self, run: &str, numbers: &[u64]) -> Result<Vec<Finished>>;

    /// Marks trials `numbers` of run `run` taken (journaled by the controller); their results are
    /// dropped from the queue.
    fn taken(&self, run: &str, numbers: &[u64]) -> Result<()>;

    /// The workers seen, with their live claims and finished trials: of run `run` only (the workers
    /// that claimed one of its trials), or of every run.
    fn workers(&self, run: Option<&str>) -> Result<Vec<WorkerSeen>>;
}
