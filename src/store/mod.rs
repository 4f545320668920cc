//! # The store
//!
//! Everything a search must not lose, behind the [`Store`] trait: run manifests, each run's
//! append-only trial journal, the content-addressed evaluation cache shared by all runs, strategy
//! snapshots, sensitivity analyses and each run's end-to-end latency measurements. Two backends implement it: [`SledStore`], the embedded default
//! (one sled database per folder, used by one process at a time), and [`PostgresStore`], a PostgreSQL
//! database that several processes (and machines) share. [`Location`] says which a `--store` names (a
//! `postgres://` URL, else a folder) and [`open`] opens it for reading or for writing. A sled store that
//! a search holds is read through its [`LiveView`] (a read-only copy the search keeps up to date after
//! each batch). Nothing outside this module knows which backend it has. The [`query`] functions read
//! runs back (a run by name, its measured front and hypervolume), so that listings, reports and
//! exports need nothing but a store; [`copy`](fn@copy) copies every record of one store into another.

mod codec;
pub mod copy;
mod live;
mod location;
mod postgres;
pub mod query;
mod queue;
mod records;
mod sled;

#[cfg(test)]
mod tests;

pub use self::copy::{copy, CopySummary};
pub use self::live::{LiveInfo, LiveView};
pub use self::location::{open, Access, Location, Opened};
pub use self::postgres::PostgresStore;
pub use self::query::{
    cost_of, default_run_name, evaluations, evaluations_at_each_trial, feasible, fidelity,
    find_run, front, front_held_out, held_out, held_out_gap, held_out_hypervolume, held_out_key,
    hypervolume, in_set_up, latest_measurements, listed_status, live_status, measurement_summaries,
    proxy_and_full, proxy_summary, sensitivity_key, EvaluationCounts, Fidelity, HeldOut,
    HeldOutGap, MeasuredSetting, MeasurementSummary, ProxySummary, COST_REFERENCE,
    QUALITY_REFERENCE,
};
pub use self::queue::{Finished, Queue, Task, WorkerId, WorkerSeen};
pub use self::sled::SledStore;
pub use records::*;

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Where a search's history lives.
///
/// Guarantees every backend gives (callers rely on them; the store test-suite pins them on every
/// backend):
///
/// - **Thread safety.** A store is `Send + Sync`; every method takes `&self` and may be called from
///   any number of threads at once. Each call is atomic: a reader sees a record either before or
///   after a concurrent write of it, never half of it. [`Store::put_trials`] is atomic as a whole.
/// - **One controller per run.** A run is driven (`search`, `resume`) by one handle at a time, which
///   calls [`Store::lock_run`] before it writes the run; a second controller gets a clear error
///   naming the first, and readers never wait for either. Per backend:
///   - *sled*: the whole folder belongs to the process that opened it. Opening a store that another
///     process (or another handle in this process) holds fails with [`crate::Error::StoreInUse`],
///     naming the holder's pid; so a second writer is refused before it locks any run. Readers in
///     other processes ([`open`] with [`Access::Read`]) read the holder's [`LiveView`] instead.
///   - *PostgreSQL*: any number of processes, on any machines, share the database. `lock_run` takes a
///     per-run session lock (`pg_try_advisory_lock`), released when the handle is dropped or its
///     process dies (its connection closes); a second `lock_run` of the run anywhere fails with
///     [`crate::Error::RunInUse`], naming the pid and host that drive it. Readers just read.
/// - **Durability.** When [`Store::put_trial`], [`Store::put_trials`], [`Store::create_run`],
///   [`Store::put_run`], [`Store::put_snapshot`] or [`Store::put_measurements`] returns `Ok`, the
///   record is on disk and survives a crash or power loss (sled: flushed and fdatasynced;
///   PostgreSQL: a committed transaction, with `synchronous_commit` on). In particular **a trial is
///   durable before `put_trial` returns**, so a trial reported as complete is never lost. [`Store::put_cached`] and [`Store::put_sensitivity`]
///   need not flush: they become durable with the next flushing write (the search journals a trial
///   right after caching its evaluation), and losing one only costs a re-evaluation.
/// - **Ordering.** [`Store::trials`] returns a run's trials in increasing trial number, whatever
///   order they were written in (and [`Store::measurements`] its measurements by number);
///   [`Store::runs`] returns runs by creation time, then name (bytewise).
///   Writing a trial number again replaces that trial (a `Running` entry by its `Complete` or
///   `Failed` one).
/// - **Versions.** Every record carries a schema version; reading one of another version, or one
///   that cannot be decoded, is a [`crate::Error::Store`] that names the record (run, trial
///   number or key) — never a silent misread, never a panic. Writing a record whose `schema` is not
///   [`SCHEMA_VERSION`] is refused. Backends store the same serde JSON of each record; a PostgreSQL
///   database also records the version of its tables, and migrates older ones when it is opened.
/// - **Sharing.** The evaluation cache and sensitivity records are keyed by content, not by run:
///   every run in the store reads and writes the same ones.
///
/// Run names are non-empty and contain no NUL character; a run's trials, snapshot and manifest are
/// addressed by it.
pub trait Store: Send + Sync {
    /// Where the store is (its folder, or a database address), for messages.
    fn location(&self) -> String;

    /// Records a new run. Fails if a run of that name exists: the message says so and suggests
    /// `mpsearch resume NAME` or another `--run`. Durable when it returns.
    fn create_run(&self, manifest: &RunManifest) -> Result<()>;

    /// Writes a run's manifest (status, elapsed time…), replacing the stored one. Durable when it
    /// returns.
    fn put_run(&self, manifest: &RunManifest) -> Result<()>;

    /// The run of that name, if there is one.
    fn run(&self, name: &str) -> Result<Option<RunManifest>>;

    /// Every run, by creation time then name.
    fn runs(&self) -> Result<Vec<RunManifest>>;

    /// Stores a recovered variant of a point of run `run` (which must exist), replacing the variant
    /// of the same key. Its weights blob must be stored first. Durable when it returns.
    fn put_recovered(&self, run: &str, record: &RecoveredRecord) -> Result<()>;

    /// The recovered variants of run `run`, by trial then key (empty if none).
    fn recovered(&self, run: &str) -> Result<Vec<RecoveredRecord>>;

    /// Stores opaque bytes (recovered weights) under content key `key`, replacing what was there.
    /// Durable when it returns.
    fn put_blob(&self, key: &blake3::Hash, bytes: &[u8]) -> Result<()>;

    /// The bytes stored under `key`, if any.
    fn blob(&self, key: &blake3::Hash) -> Result<Option<Vec<u8>>>;

    /// Journals one trial of run `run` (which must exist), inserting it or replacing the trial of
    /// the same number. Durable (flushed) when it returns.
    fn put_trial(&self, run: &str, trial: &TrialRecord) -> Result<()>;

    /// Journals several trials of run `run` as one atomic write and one flush: all of them or none
    /// are stored. Used to journal an asked batch as `Running` before evaluating it.
    fn put_trials(&self, run: &str, trials: &[TrialRecord]) -> Result<()>;

    /// The trials of run `run` in trial-number order (empty if the run has none or does not exist).
    fn trials(&self, run: &str) -> Result<Vec<TrialRecord>>;

    /// The cached evaluation under content key `key`, if any.
    fn cached(&self, key: &blake3::Hash) -> Result<Option<CachedEvaluation>>;

    /// Caches an evaluation under content key `key`. Not flushed by itself: durable with the next
    /// flushing write (see the trait docs).
    fn put_cached(&self, key: &blake3::Hash, evaluation: &CachedEvaluation) -> Result<()>;

    /// The latest strategy snapshot of run `run`, if any.
    fn snapshot(&self, run: &str) -> Result<Option<Snapshot>>;

    /// Replaces the strategy snapshot of run `run` (which must exist). Durable when it returns.
    fn put_snapshot(&self, run: &str, snapshot: &Snapshot) -> Result<()>;

    /// The sensitivity analysis stored under key `key`, if any.
    fn sensitivity(&self, key: &blake3::Hash) -> Result<Option<SensitivityRecord>>;

    /// Stores a sensitivity analysis under key `key`. Not flushed by itself (see the trait docs).
    fn put_sensitivity(&self, key: &blake3::Hash, record: &SensitivityRecord) -> Result<()>;

    /// How much the store holds (for `mpsearch runs`).
    fn counts(&self) -> Result<StoreCounts>;

    /// Makes this handle the one controller of run `run` (which need not exist yet) until it is
    /// dropped; doing it again for a run this handle drives does nothing. Fails with
    /// [`crate::Error::RunInUse`] when another handle drives the run (PostgreSQL), or with
    /// [`crate::Error::StoreInUse`] on a read-only view. See "One controller per run" above.
    fn lock_run(&self, run: &str) -> Result<()>;

    /// The runs some handle drives right now (this one's included), and who drives them. A run
    /// marked `running` that no controller drives was left by a process that died.
    fn controllers(&self) -> Result<Vec<Controller>>;

    /// Stores end-to-end latency measurements of run `run` (which must exist) as one atomic write,
    /// flushed: all of them or none. A record replaces the run's measurement of the same number
    /// (`measure` numbers new ones after the last).
    fn put_measurements(&self, run: &str, records: &[MeasurementRecord]) -> Result<()>;

    /// The measurements of run `run` in number order (empty if it has none or does not exist).
    fn measurements(&self, run: &str) -> Result<Vec<MeasurementRecord>>;

    /// Every cached evaluation with its key (for copying a store).
    fn cache_entries(&self) -> Result<Vec<(blake3::Hash, CachedEvaluation)>>;

    /// Every sensitivity analysis with its key (for copying a store).
    fn sensitivity_entries(&self) -> Result<Vec<(blake3::Hash, SensitivityRecord)>>;

    /// The queue through which `mpsearch worker` processes evaluate runs' trials, when several
    /// processes share this store ([`Queue`]; PostgreSQL); `None` for a store one process owns.
    fn queue(&self) -> Option<&dyn Queue> {
        None
    }
}

/// Who drives a run: the process that called [`Store::lock_run`] for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Controller {
    pub run: String,
    pub pid: u32,
    pub host: String,
    /// When it took the run (seconds since the Unix epoch).
    pub since_unix: u64,
}

/// This machine's name, for [`Controller::host`]: the kernel's host name, else `$HOSTNAME`, else
/// `unknown`.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Seconds since the Unix epoch now.
pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How much a store holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreCounts {
    pub runs: usize,
    /// Evaluations in the content-addressed cache, over all runs.
    pub cached_evaluations: usize,
    pub sensitivity_records: usize,
}

/// Checks a run name: non-empty, without NUL (backends may use NUL as a separator).
fn check_run_name(location: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(crate::Error::store(location, "a run name cannot be empty"));
    }
    if name.contains('\0') {
        return Err(crate::Error::store(
            location,
            format!("run name {name:?} contains a NUL character; choose another --run name"),
        ));
    }
    Ok(())
}
