//! # The sled store
//!
//! [`SledStore`]: the embedded [`Store`] backend, one sled 0.34 database in `DIR/db`, next to a
//! `DIR/owner.pid` file that names the process holding it. Records are encoded by
//! [`super::codec`] (compact JSON with a schema check).
//!
//! Trees:
//! - `runs`: run name → [`RunManifest`];
//! - `trials`: run name, a 0 byte, trial number as u64 big-endian → [`TrialRecord`]. Run names
//!   contain no NUL, so a prefix scan over `name\0` yields exactly one run's trials, in number order;
//! - `cache`: 32-byte content key → [`CachedEvaluation`];
//! - `snapshots`: run name → [`Snapshot`];
//! - `sensitivity`: 32-byte key → [`SensitivityRecord`];
//! - `measurements`: run name, a 0 byte, measurement number as u64 big-endian →
//!   [`MeasurementRecord`] (laid out as `trials`).
//!
//! **In use.** sled locks `DIR/db/db` with `flock(LOCK_EX | LOCK_NB)` when it opens it (through
//! fs2), and reports a held lock as `sled::Error::Io` of kind `Other` whose message starts with
//! `could not acquire lock on`. flock belongs to the open file description, so a second open fails
//! both in another process and in this one. [`SledStore::open`] turns exactly that error into
//! [`Error::StoreInUse`] with the pid read from `owner.pid`, which every successful open writes
//! (temp file + rename) and a clean close removes. Between another process's lock and its pid write
//! (microseconds) the pid read may be stale or missing; it then says `unknown`.
//!
//! sled releases the file a little after its last handle is dropped (its background writer threads
//! hold it until they finish: 5–80 ms measured under load), so an open retries for up to
//! [`LOCK_WAIT`] before it reports the store in use; closing a store and reopening it at once in
//! the same process therefore works.
//!
//! **Watching.** The handle that writes keeps the store's [`LiveView`] in `DIR/live-view.json`: it
//! rewrites it when it starts driving a run ([`Store::lock_run`]) and when it writes a run's manifest
//! ([`Store::create_run`], [`Store::put_run`]: the search does after every batch), paced as
//! [`super::live`] says. A reader that finds the store held ([`SledStore::open_or_view`]) reads that
//! view instead of waiting. The view is removed when the handle closes, and by the next open if a
//! process died holding the store. Failing to write the view never fails the write that triggered it:
//! the view is for people watching, and it says how old it is.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ::sled::{Batch, Db, Tree};

use super::codec::{decode, encode, key_what, measurement_what, trial_what, Record};
use super::live::{self, LiveInfo, LiveView, Pace, RawRecords};
use super::{
    check_run_name, host_name, now_unix, CachedEvaluation, Controller, MeasurementRecord,
    RecoveredRecord, RunManifest, SensitivityRecord, Snapshot, Store, StoreCounts, TrialRecord,
};
use crate::error::{Error, Result};

/// The sled database's folder inside the store folder.
const DB_DIR: &str = "db";
/// sled's data file inside [`DB_DIR`] (the one it locks).
const DB_FILE: &str = "db";
/// The file naming the pid that holds the store.
const OWNER_FILE: &str = "owner.pid";
/// The start of the message sled 0.34.7 gives when the database file is locked (`config.rs`,
/// `Config::try_lock`).
const SLED_LOCK_MESSAGE: &str = "could not acquire lock on";
/// How long an open waits for a held database file to be released before it reports the store in
/// use. sled releases its file a few milliseconds after its last handle is dropped (its background
/// writer threads hold it until they finish), so a close followed at once by an open must wait.
const LOCK_WAIT: Duration = Duration::from_secs(1);
/// The pause between two attempts to open a locked database.
const LOCK_RETRY: Duration = Duration::from_millis(5);

/// A store in one local folder, held exclusively by the process that opened it.
#[derive(Debug)]
pub struct SledStore {
    dir: PathBuf,
    location: String,
    db: Db,
    /// sled's data file, opened again (read-only) only to `fdatasync` it.
    file: fs::File,
    runs: Tree,
    trials: Tree,
    cache: Tree,
    snapshots: Tree,
    sensitivity: Tree,
    measurements: Tree,
    /// Recovered variants, keyed by run, NUL, variant key (hex).
    recovered: Tree,
    /// Opaque blobs (recovered weights) by content key.
    blobs: Tree,
    /// The runs this handle drives ([`Store::lock_run`]).
    driving: Mutex<Vec<Controller>>,
    /// When the live view was last written.
    pace: Mutex<Pace>,
}

impl SledStore {
    /// Writes records numbered within `run` (trials, measurements) to `tree` in one batch, keyed by
    /// run and number; `what` names one in errors, `plural` the lot.
    fn put_numbered<'r, R: Record + 'r>(
        &self,
        tree: &Tree,
        run: &str,
        records: impl Iterator<Item = (u64, &'r R)>,
        what: fn(&str, u64) -> String,
        plural: &str,
    ) -> Result<()> {
        self.require_run(run)?;
        let mut batch = Batch::default();
        for (number, r) in records {
            batch.insert(
                trial_key(run, number),
                encode(&self.location, &what(run, number), r)?,
            );
        }
        tree.apply_batch(batch)
            .map_err(|e| self.error(format!("cannot write {plural} of run `{run}`: {e}")))?;
        self.flush()
    }

    /// The records numbered within `run` in `tree`, in number order; `one` names one in errors.
    fn numbered<R: Record>(
        &self,
        tree: &Tree,
        run: &str,
        what: fn(&str, u64) -> String,
        one: &str,
    ) -> Result<Vec<R>> {
        check_run_name(&self.location, run)?;
        let prefix = trial_prefix(run);
        tree.scan_prefix(&prefix)
            .map(|entry| {
                let (key, bytes) = entry.map_err(|e| {
                    self.error(format!("cannot read the {one}s of run `{run}`: {e}"))
                })?;
                let number = key
                    .get(prefix.len()..)
                    .and_then(|n| <[u8; 8]>::try_from(n).ok())
                    .map(u64::from_be_bytes)
                    .ok_or_else(|| {
                        self.error(format!("run `{run}` has a {one} with a malformed key"))
                    })?;
                decode(&self.location, &what(run, number), &bytes)
            })
            .collect()
    }

    /// Opens the store in `dir`, creating the folder and the database if missing. Fails with
    /// [`Error::StoreInUse`] if another process (or another handle in this one) holds it.
    pub fn open(dir: &Path) -> Result<SledStore> {
        SledStore::open_waiting(dir, LOCK_WAIT)
    }

    /// Opens the store in `dir` for reading: the store itself when it is free, else the live view of
    /// the process that holds it (`Err(view)`). Without a view by the holder (a search that has not
    /// started a run yet, another listing), it waits up to `LOCK_WAIT` (1 s) for the store, then fails
    /// with [`Error::StoreInUse`].
    pub fn open_or_view(dir: &Path) -> Result<std::result::Result<SledStore, LiveView>> {
        match SledStore::open_waiting(dir, Duration::ZERO) {
            Ok(store) => return Ok(Ok(store)),
            Err(Error::StoreInUse { .. }) => {}
            Err(e) => return Err(e),
        }
        if let Some(view) = holder_view(dir)? {
            return Ok(Err(view));
        }
        match SledStore::open_waiting(dir, LOCK_WAIT) {
            Ok(store) => Ok(Ok(store)),
            Err(e @ Error::StoreInUse { .. }) => holder_view(dir)?.map(Err).ok_or(e),
            Err(e) => Err(e),
        }
    }

    /// Opens the store in `dir`, waiting up to `wait` for a held database file.
    fn open_waiting(dir: &Path, wait: Duration) -> Result<SledStore> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let location = dir.display().to_string();
        let db = open_db(dir, wait).map_err(|e| {
            if is_lock_failure(&e) {
                Error::StoreInUse {
                    location: location.clone(),
                    pid: read_owner(dir),
                }
            } else {
                Error::store(&location, format!("cannot open the database: {e}"))
            }
        })?;
        let tree = |name: &str| {
            db.open_tree(name)
                .map_err(|e| Error::store(&location, format!("cannot open the `{name}` tree: {e}")))
        };
        let data_file = dir.join(DB_DIR).join(DB_FILE);
        let file = fs::File::open(&data_file).map_err(|e| Error::io(&data_file, e))?;
        let store = SledStore {
            file,
            runs: tree("runs")?,
            trials: tree("trials")?,
            cache: tree("cache")?,
            snapshots: tree("snapshots")?,
            sensitivity: tree("sensitivity")?,
            measurements: tree("measurements")?,
            recovered: tree("recovered")?,
            blobs: tree("blobs")?,
            dir: dir.to_path_buf(),
            location: location.clone(),
            db,
            driving: Mutex::new(Vec::new()),
            pace: Mutex::new(Pace::default()),
        };
        // A view left by a process that died holding the store describes nothing any more.
        live::remove(dir);
        write_owner(dir)?;
        Ok(store)
    }

    /// Rewrites the live view if it is due (always when `force`). Errors are dropped: see the module
    /// docs.
    fn publish(&self, force: bool) {
        let Ok(mut pace) = self.pace.lock() else {
            return;
        };
        if !pace.due(force) {
            return;
        }
        let start = Instant::now();
        let _ = self.write_view();
        pace.wrote(start);
    }

    fn write_view(&self) -> Result<()> {
        let info = LiveInfo {
            pid: std::process::id(),
            host: host_name(),
            updated_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        let raw = self.raw_records()?;
        live::write(&self.dir, &self.location, &info, &self.controllers()?, &raw)
    }

    /// Every record as the trees hold it (JSON bytes), for the live view.
    fn raw_records(&self) -> Result<RawRecords> {
        let read = |e: ::sled::Error| self.error(format!("cannot read for the live view: {e}"));
        let mut raw = RawRecords::default();
        for entry in self.runs.iter() {
            raw.runs.push(entry.map_err(read)?.1.to_vec());
        }
        for entry in self.trials.iter() {
            let (key, value) = entry.map_err(read)?;
            raw.trials
                .entry(self.run_of(&key)?)
                .or_default()
                .push(value.to_vec());
        }
        for entry in self.measurements.iter() {
            let (key, value) = entry.map_err(read)?;
            raw.measurements
                .entry(self.run_of(&key)?)
                .or_default()
                .push(value.to_vec());
        }
        for entry in self.snapshots.iter() {
            let (key, value) = entry.map_err(read)?;
            raw.snapshots
                .insert(String::from_utf8_lossy(&key).into_owned(), value.to_vec());
        }
        for (tree, map) in [
            (&self.cache, &mut raw.cache),
            (&self.sensitivity, &mut raw.sensitivity),
        ] {
            for entry in tree.iter() {
                let (key, value) = entry.map_err(read)?;
                let key = <[u8; 32]>::try_from(key.as_ref())
                    .map_err(|_| self.error("a content key is not 32 bytes"))?;
                map.insert(
                    blake3::Hash::from_bytes(key).to_hex().to_string(),
                    value.to_vec(),
                );
            }
        }
        Ok(raw)
    }

    /// The run name of a `trials` or `measurements` key (the name, a 0 byte, 8 bytes of number).
    fn run_of(&self, key: &[u8]) -> Result<String> {
        key.len()
            .checked_sub(9)
            .and_then(|n| key.get(..n))
            .map(|name| String::from_utf8_lossy(name).into_owned())
            .ok_or_else(|| self.error("a trial or measurement has a malformed key"))
    }

    /// Every `(key, record)` of a tree keyed by content.
    fn keyed<R: Record>(&self, tree: &Tree, kind: &str) -> Result<Vec<(blake3::Hash, R)>> {
        tree.iter()
            .map(|entry| {
                let (key, bytes) =
                    entry.map_err(|e| self.error(format!("cannot read the {kind}s: {e}")))?;
                let key = <[u8; 32]>::try_from(key.as_ref())
                    .map(blake3::Hash::from_bytes)
                    .map_err(|_| self.error(format!("a {kind} has a malformed key")))?;
                Ok((key, decode(&self.location, &key_what(kind, &key), &bytes)?))
            })
            .collect()
    }

    /// Flushes every tree to disk: sled writes its buffers out (`sync_file_range`), then
    /// `fdatasync` makes them durable against power loss too (sled alone leaves that to its
    /// background thread's `fsync`, up to 500 ms later).
    fn flush(&self) -> Result<()> {
        self.db
            .flush()
            .map_err(|e| self.error(format!("cannot flush to disk: {e}")))?;
        self.file
            .sync_data()
            .map_err(|e| self.error(format!("cannot sync the database file to disk: {e}")))
    }

    fn error(&self, message: impl Into<String>) -> Error {
        Error::store(&self.location, message)
    }

    fn get<R: Record>(&self, tree: &Tree, key: &[u8], what: &str) -> Result<Option<R>> {
        match tree.get(key) {
            Ok(Some(bytes)) => decode(&self.location, what, &bytes).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(self.error(format!("cannot read {what}: {e}"))),
        }
    }

    fn insert<R: Record>(&self, tree: &Tree, key: &[u8], what: &str, record: &R) -> Result<()> {
        let bytes = encode(&self.location, what, record)?;
        tree.insert(key, bytes)
            .map(drop)
            .map_err(|e| self.error(format!("cannot write {what}: {e}")))
    }

    /// Checks that run `run` exists (trials of an unknown run would be unreachable orphans).
    fn require_run(&self, run: &str) -> Result<()> {
        check_run_name(&self.location, run)?;
        match self.runs.contains_key(run.as_bytes()) {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.error(format!("there is no run named `{run}`"))),
            Err(e) => Err(self.error(format!("cannot read run `{run}`: {e}"))),
        }
    }

    /// A raw tree, for tests that write bytes the store would never write.
    #[cfg(test)]
    pub(super) fn raw_tree(&self, name: &str) -> Tree {
        match name {
            "runs" => self.runs.clone(),
            "trials" => self.trials.clone(),
            "cache" => self.cache.clone(),
            "snapshots" => self.snapshots.clone(),
            "sensitivity" => self.sensitivity.clone(),
            "measurements" => self.measurements.clone(),
            _ => panic!("no tree {name}"),
        }
    }
}

impl Drop for SledStore {
    /// Removes the live view and `owner.pid` while the lock is still held, so no later owner's files
    /// are removed.
    fn drop(&mut self) {
        live::remove(&self.dir);
        let _ = fs::remove_file(self.dir.join(OWNER_FILE));
    }
}

/// The live view in `dir` written by the process that holds the store (named by `owner.pid`), if
/// there is one.
fn holder_view(dir: &Path) -> Result<Option<LiveView>> {
    match read_owner(dir).parse::<u32>() {
        Ok(pid) => LiveView::load(dir, &dir.display().to_string(), pid),
        Err(_) => Ok(None),
    }
}

/// Opens the sled database in `dir`, retrying for up to `wait` while its file is locked.
fn open_db(dir: &Path, wait: Duration) -> ::sled::Result<Db> {
    let start = Instant::now();
    loop {
        match ::sled::Config::new().path(dir.join(DB_DIR)).open() {
            Err(e) if is_lock_failure(&e) && start.elapsed() < wait => {
                std::thread::sleep(LOCK_RETRY);
            }
            result => return result,
        }
    }
}

/// Whether sled failed to open because the database file is locked by another open.
fn is_lock_failure(e: &::sled::Error) -> bool {
    matches!(e, ::sled::Error::Io(io)
        if io.kind() == ErrorKind::Other && io.to_string().starts_with(SLED_LOCK_MESSAGE))
}

/// The pid recorded in `dir/owner.pid`, or `unknown`.
fn read_owner(dir: &Path) -> String {
    fs::read_to_string(dir.join(OWNER_FILE))
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .map_or_else(|| "unknown".to_string(), |pid| pid.to_string())
}

/// Writes this process's pid to `dir/owner.pid` atomically (temp file, fsync, rename).
fn write_owner(dir: &Path) -> Result<()> {
    crate::fs::write_atomic(
        &dir.join(OWNER_FILE),
        format!("{}\n", std::process::id()).as_bytes(),
    )
}

/// The `trials` key of trial `number` of run `run` (and the `measurements` key of measurement
/// `number`).
pub(super) fn trial_key(run: &str, number: u64) -> Vec<u8> {
    let mut key = trial_prefix(run);
    key.extend_from_slice(&number.to_be_bytes());
    key
}

/// The prefix of every `trials` (and `measurements`) key of run `run`.
fn trial_prefix(run: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(run.len() + 9);
    key.extend_from_slice(run.as_bytes());
    key.push(0);
    key
}

impl Store for SledStore {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn create_run(&self, manifest: &RunManifest) -> Result<()> {
        let name = &manifest.name;
        check_run_name(&self.location, name)?;
        let what = format!("run `{name}`");
        let bytes = encode(&self.location, &what, manifest)?;
        let swapped = self
            .runs
            .compare_and_swap(name.as_bytes(), None::<&[u8]>, Some(bytes))
            .map_err(|e| self.error(format!("cannot write {what}: {e}")))?;
        if swapped.is_err() {
            return Err(self.error(format!(
                "a run named `{name}` already exists; continue it with `mpsearch resume {name}`, \
                 or pass another --run name"
            )));
        }
        self.flush()?;
        self.publish(false);
        Ok(())
    }

    /// Also rewrites the live view (paced): the search writes its manifest after every batch.
    fn put_run(&self, manifest: &RunManifest) -> Result<()> {
        check_run_name(&self.location, &manifest.name)?;
        let what = format!("run `{}`", manifest.name);
        self.insert(&self.runs, manifest.name.as_bytes(), &what, manifest)?;
        self.flush()?;
        self.publish(false);
        Ok(())
    }

    fn run(&self, name: &str) -> Result<Option<RunManifest>> {
        self.get(&self.runs, name.as_bytes(), &format!("run `{name}`"))
    }

    fn runs(&self) -> Result<Vec<RunManifest>> {
        let mut runs = self
            .runs
            .iter()
            .map(|entry| {
                let (key, bytes) =
                    entry.map_err(|e| self.error(format!("cannot read the runs: {e}")))?;
                let what = format!("run `{}`", String::from_utf8_lossy(&key));
                decode::<RunManifest>(&self.location, &what, &bytes)
            })
            .collect::<Result<Vec<_>>>()?;
        runs.sort_by(|a, b| (a.created_unix, &a.name).cmp(&(b.created_unix, &b.name)));
        Ok(runs)
    }

    fn put_trial(&self, run: &str, trial: &TrialRecord) -> Result<()> {
        self.require_run(run)?;
        let what = trial_what(run, trial.number);
        self.insert(&self.trials, &trial_key(run, trial.number), &what, trial)?;
        self.flush()
    }

    fn put_trials(&self, run: &str, trials: &[TrialRecord]) -> Result<()> {
        let numbered = trials.iter().map(|t| (t.number, t));
        self.put_numbered(&self.trials, run, numbered, trial_what, "trials")
    }

    fn trials(&self, run: &str) -> Result<Vec<TrialRecord>> {
        self.numbered(&self.trials, run, trial_what, "trial")
    }

    fn cached(&self, key: &blake3::Hash) -> Result<Option<CachedEvaluation>> {
        self.get(
            &self.cache,
            key.as_bytes(),
            &key_what("cached evaluation", key),
        )
    }

    fn put_cached(&self, key: &blake3::Hash, evaluation: &CachedEvaluation) -> Result<()> {
        let what = key_what("cached evaluation", key);
        self.insert(&self.cache, key.as_bytes(), &what, evaluation)
    }

    fn snapshot(&self, run: &str) -> Result<Option<Snapshot>> {
        let what = format!("the snapshot of run `{run}`");
        self.get(&self.snapshots, run.as_bytes(), &what)
    }

    fn put_snapshot(&self, run: &str, snapshot: &Snapshot) -> Result<()> {
        self.require_run(run)?;
        let what = format!("the snapshot of run `{run}`");
        self.insert(&self.snapshots, run.as_bytes(), &what, snapshot)?;
        self.flush()
    }

    fn put_recovered(&self, run: &str, record: &RecoveredRecord) -> Result<()> {
        self.require_run(run)?;
        let what = format!("recovered variant {} of run `{run}`", record.key);
        let mut key = trial_prefix(run);
        key.extend_from_slice(record.key.as_bytes());
        self.insert(&self.recovered, &key, &what, record)?;
        self.flush()
    }

    fn recovered(&self, run: &str) -> Result<Vec<RecoveredRecord>> {
        check_run_name(&self.location, run)?;
        let prefix = trial_prefix(run);
        let mut out = self
            .recovered
            .scan_prefix(&prefix)
            .map(|entry| {
                let (key, bytes) = entry.map_err(|e| {
                    self.error(format!(
                        "cannot read the recovered variants of run `{run}`: {e}"
                    ))
                })?;
                let what = format!(
                    "recovered variant {} of run `{run}`",
                    String::from_utf8_lossy(key.get(prefix.len()..).unwrap_or_default())
                );
                decode::<RecoveredRecord>(&self.location, &what, &bytes)
            })
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| (a.trial, &a.key).cmp(&(b.trial, &b.key)));
        Ok(out)
    }

    fn put_blob(&self, key: &blake3::Hash, bytes: &[u8]) -> Result<()> {
        self.blobs
            .insert(key.as_bytes(), bytes)
            .map_err(|e| self.error(format!("cannot write blob {}: {e}", key.to_hex())))?;
        self.flush()
    }

    fn blob(&self, key: &blake3::Hash) -> Result<Option<Vec<u8>>> {
        self.blobs
            .get(key.as_bytes())
            .map(|v| v.map(|b| b.to_vec()))
            .map_err(|e| self.error(format!("cannot read blob {}: {e}", key.to_hex())))
    }

    fn sensitivity(&self, key: &blake3::Hash) -> Result<Option<SensitivityRecord>> {
        let what = key_what("sensitivity record", key);
        self.get(&self.sensitivity, key.as_bytes(), &what)
    }

    fn put_sensitivity(&self, key: &blake3::Hash, record: &SensitivityRecord) -> Result<()> {
        let what = key_what("sensitivity record", key);
        self.insert(&self.sensitivity, key.as_bytes(), &what, record)
    }

    /// Counts by scanning the trees (sled keeps no counts), so it takes time in proportion to them.
    fn counts(&self) -> Result<StoreCounts> {
        Ok(StoreCounts {
            runs: self.runs.len(),
            cached_evaluations: self.cache.len(),
            sensitivity_records: self.sensitivity.len(),
        })
    }

    /// The store is this handle's alone already: records the run as driven by this process and
    /// writes the live view, so that readers see the run from its start.
    fn lock_run(&self, run: &str) -> Result<()> {
        check_run_name(&self.location, run)?;
        {
            let mut driving = self
                .driving
                .lock()
                .map_err(|_| self.error("a thread panicked while locking a run"))?;
            if driving.iter().any(|c| c.run == run) {
                return Ok(());
            }
            driving.push(Controller {
                run: run.to_string(),
                pid: std::process::id(),
                host: host_name(),
                since_unix: now_unix(),
            });
        }
        self.publish(true);
        Ok(())
    }

    fn controllers(&self) -> Result<Vec<Controller>> {
        self.driving
            .lock()
            .map(|d| d.clone())
            .map_err(|_| self.error("a thread panicked while locking a run"))
    }

    fn put_measurements(&self, run: &str, records: &[MeasurementRecord]) -> Result<()> {
        let numbered = records.iter().map(|r| (r.number, r));
        self.put_numbered(
            &self.measurements,
            run,
            numbered,
            measurement_what,
            "measurements",
        )
    }

    fn measurements(&self, run: &str) -> Result<Vec<MeasurementRecord>> {
        self.numbered(&self.measurements, run, measurement_what, "measurement")
    }

    fn cache_entries(&self) -> Result<Vec<(blake3::Hash, CachedEvaluation)>> {
        self.keyed(&self.cache, "cached evaluation")
    }

    fn sensitivity_entries(&self) -> Result<Vec<(blake3::Hash, SensitivityRecord)>> {
        self.keyed(&self.sensitivity, "sensitivity record")
    }
}
