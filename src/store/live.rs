//! # The live view of a sled store
//!
//! A sled store belongs to one process at a time (its folder is locked), yet a person wants to look at
//! a search while it runs. So the process that writes a sled store keeps a read-only copy of
//! everything readers need — run manifests, trial journals, snapshots, the evaluation cache, the
//! sensitivity analyses, latency measurements, and who drives which run — in `DIR/live-view.json`, rewritten atomically
//! ([`crate::fs::write_atomic`]) when it starts driving a run and after every batch of trials (the
//! search writes its manifest then). The copy is taken between two writes of the one writing process,
//! so it is consistent: a cut of the journal at a batch boundary.
//!
//! [`LiveView`] reads that file as a [`Store`] that refuses every write, so `runs`, `trials`, `report`
//! and `export` work on it unchanged; [`LiveInfo`] says whose view it is and how old. A reader uses the
//! view only while the process that wrote it holds the store (its pid is in `DIR/owner.pid`); a view
//! left by a process that died is never read, and the next writer removes it.
//!
//! The view is the whole store, so writing it takes time in proportion to the store: a writer skips
//! a rewrite that comes sooner than [`REWRITE_FACTOR`] times the last rewrite's duration after it,
//! which bounds the cost to a few percent of the search (the view then shows an older batch, and says
//! how old).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::codec::{decode, key_what, Record};
use super::{
    CachedEvaluation, Controller, MeasurementRecord, RecoveredRecord, RunManifest,
    SensitivityRecord, Snapshot, Store, StoreCounts, TrialRecord,
};
use crate::error::{Error, Result};

/// The view's file inside the store folder.
pub(super) const VIEW_FILE: &str = "live-view.json";
/// What the view's `format` field says.
const FORMAT: &str = "mpsearch-live-view";
/// The version of the view's layout (its records carry their own schema).
const VERSION: u32 = 1;
/// A rewrite of the view waits at least this many times as long as the last one took.
pub(super) const REWRITE_FACTOR: u32 = 20;

/// Who wrote a live view, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveInfo {
    /// The process that holds the store (a running search).
    pub pid: u32,
    pub host: String,
    /// When the view was written (milliseconds since the Unix epoch).
    pub updated_unix_ms: u64,
}

impl LiveInfo {
    /// How long ago the view was written (zero if the clock says it is from the future).
    pub fn age(&self) -> Duration {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Duration::from_millis(now.saturating_sub(self.updated_unix_ms))
    }
}

impl std::fmt::Display for LiveInfo {
    /// `live view of a running search (pid 123), updated 12 s ago`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let age = self.age().as_secs_f64();
        let age = if age < 10.0 {
            format!("{age:.1} s")
        } else if age < 120.0 {
            format!("{age:.0} s")
        } else if age < 7200.0 {
            format!("{:.0} min", age / 60.0)
        } else {
            format!("{:.1} h", age / 3600.0)
        };
        write!(
            f,
            "live view of a running search (pid {}), updated {age} ago",
            self.pid
        )
    }
}

/// The raw stored records a writer puts in its view, as the sled trees hold them (JSON bytes).
#[derive(Default)]
pub(super) struct RawRecords {
    pub runs: Vec<Vec<u8>>,
    /// Run name → its trials' records in number order.
    pub trials: BTreeMap<String, Vec<Vec<u8>>>,
    pub snapshots: BTreeMap<String, Vec<u8>>,
    /// Run name → its measurements' records in number order.
    pub measurements: BTreeMap<String, Vec<Vec<u8>>>,
    /// Hex key → record.
    pub cache: BTreeMap<String, Vec<u8>>,
    pub sensitivity: BTreeMap<String, Vec<u8>>,
}

/// The view's layout as written: the records embedded as they are stored.
#[derive(Serialize)]
struct ViewOut<'a> {
    format: &'static str,
    version: u32,
    location: &'a str,
    #[serde(flatten)]
    info: &'a LiveInfo,
    controllers: &'a [Controller],
    runs: Vec<&'a RawValue>,
    trials: BTreeMap<&'a str, Vec<&'a RawValue>>,
    snapshots: BTreeMap<&'a str, &'a RawValue>,
    cache: BTreeMap<&'a str, &'a RawValue>,
    sensitivity: BTreeMap<&'a str, &'a RawValue>,
    measurements: BTreeMap<&'a str, Vec<&'a RawValue>>,
}

/// The view's layout as read.
#[derive(Deserialize)]
struct ViewIn<'a> {
    format: String,
    version: u32,
    #[serde(flatten)]
    info: LiveInfo,
    controllers: Vec<Controller>,
    #[serde(borrow)]
    runs: Vec<&'a RawValue>,
    #[serde(borrow)]
    trials: BTreeMap<String, Vec<&'a RawValue>>,
    #[serde(borrow)]
    snapshots: BTreeMap<String, &'a RawValue>,
    #[serde(borrow)]
    cache: BTreeMap<String, &'a RawValue>,
    #[serde(borrow)]
    sensitivity: BTreeMap<String, &'a RawValue>,
    /// Absent from views written before measurements were stored.
    #[serde(borrow, default)]
    measurements: BTreeMap<String, Vec<&'a RawValue>>,
}

/// Writes the view of a store at `dir` (whose messages call it `location`) atomically.
pub(super) fn write(
    dir: &Path,
    location: &str,
    info: &LiveInfo,
    controllers: &[Controller],
    raw: &RawRecords,
) -> Result<()> {
    let path = dir.join(VIEW_FILE);
    let bad = |e: String| Error::store(location, format!("cannot write its live view: {e}"));
    fn raw_value(bytes: &[u8]) -> std::result::Result<&RawValue, String> {
        let text =
            std::str::from_utf8(bytes).map_err(|e| format!("a record is not UTF-8 ({e})"))?;
        serde_json::from_str::<&RawValue>(text).map_err(|e| e.to_string())
    }
    fn map(
        m: &BTreeMap<String, Vec<u8>>,
    ) -> std::result::Result<BTreeMap<&str, &RawValue>, String> {
        m.iter()
            .map(|(k, v)| Ok((k.as_str(), raw_value(v)?)))
            .collect()
    }
    type PerRun<'a> = BTreeMap<&'a str, Vec<&'a RawValue>>;
    fn per_run(m: &BTreeMap<String, Vec<Vec<u8>>>) -> std::result::Result<PerRun<'_>, String> {
        m.iter()
            .map(|(run, rs)| {
                let rs = rs
                    .iter()
                    .map(|r| raw_value(r))
                    .collect::<std::result::Result<_, _>>()?;
                Ok((run.as_str(), rs))
            })
            .collect()
    }
    let view = ViewOut {
        format: FORMAT,
        version: VERSION,
        location,
        info,
        controllers,
        runs: raw
            .runs
            .iter()
            .map(|r| raw_value(r))
            .collect::<std::result::Result<_, _>>()
            .map_err(bad)?,
        trials: per_run(&raw.trials).map_err(bad)?,
        snapshots: map(&raw.snapshots).map_err(bad)?,
        cache: map(&raw.cache).map_err(bad)?,
        sensitivity: map(&raw.sensitivity).map_err(bad)?,
        measurements: per_run(&raw.measurements).map_err(bad)?,
    };
    let bytes = serde_json::to_vec(&view).map_err(|e| bad(e.to_string()))?;
    crate::fs::write_atomic(&path, &bytes)
}

/// Removes the view of the store at `dir`, if there is one.
pub(super) fn remove(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(VIEW_FILE));
}

/// A sled store as its writer's last view shows it: every read answered from memory, every write
/// refused with [`Error::StoreInUse`].
#[derive(Debug)]
pub struct LiveView {
    location: String,
    info: LiveInfo,
    controllers: Vec<Controller>,
    runs: Vec<RunManifest>,
    trials: BTreeMap<String, Vec<TrialRecord>>,
    snapshots: BTreeMap<String, Snapshot>,
    cache: HashMap<blake3::Hash, CachedEvaluation>,
    sensitivity: HashMap<blake3::Hash, SensitivityRecord>,
    measurements: BTreeMap<String, Vec<MeasurementRecord>>,
}

impl LiveView {
    /// The view in `dir`, if there is one written by process `pid` (the holder of the store); `None`
    /// when there is none, or it is another process's. A view that cannot be read is an error.
    pub(super) fn load(dir: &Path, location: &str, pid: u32) -> Result<Option<LiveView>> {
        let path = dir.join(VIEW_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let damaged = |what: String| {
            Error::store(location, format!("its live view {} {what}", path.display()))
        };
        let view: ViewIn =
            serde_json::from_slice(&bytes).map_err(|e| damaged(format!("cannot be read ({e})")))?;
        if view.format != FORMAT || view.version != VERSION {
            return Err(damaged(format!(
                "is {} version {}, which this mpsearch does not read; use the mpsearch that runs the search",
                view.format, view.version
            )));
        }
        if view.info.pid != pid {
            return Ok(None);
        }
        LiveView::decode(location, view).map(Some)
    }

    fn decode(location: &str, view: ViewIn) -> Result<LiveView> {
        fn one<R: Record>(location: &str, what: &str, raw: &RawValue) -> Result<R> {
            decode(location, what, raw.get().as_bytes())
        }
        let runs = view
            .runs
            .iter()
            .map(|r| one(location, "a run", r))
            .collect::<Result<Vec<RunManifest>>>()?;
        let mut trials = BTreeMap::new();
        for (run, ts) in &view.trials {
            let records = ts
                .iter()
                .enumerate()
                .map(|(i, t)| one(location, &format!("run `{run}` trial #{i} of the view"), t))
                .collect::<Result<Vec<TrialRecord>>>()?;
            trials.insert(run.clone(), records);
        }
        let mut measurements = BTreeMap::new();
        for (run, ms) in &view.measurements {
            let records = ms
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    one(
                        location,
                        &format!("run `{run}` measurement #{i} of the view"),
                        m,
                    )
                })
                .collect::<Result<Vec<MeasurementRecord>>>()?;
            measurements.insert(run.clone(), records);
        }
        let snapshots = view
            .snapshots
            .iter()
            .map(|(run, s)| {
                Ok((
                    run.clone(),
                    one(location, &format!("the snapshot of run `{run}`"), s)?,
                ))
            })
            .collect::<Result<_>>()?;
        let keyed = |kind: &str, hex: &str| {
            blake3::Hash::from_hex(hex).map_err(|_| {
                Error::store(
                    location,
                    format!("its live view has a {kind} with a malformed key"),
                )
            })
        };
        let cache = view
            .cache
            .iter()
            .map(|(hex, r)| {
                let key = keyed("cached evaluation", hex)?;
                Ok((key, one(location, &key_what("cached evaluation", &key), r)?))
            })
            .collect::<Result<_>>()?;
        let sensitivity = view
            .sensitivity
            .iter()
            .map(|(hex, r)| {
                let key = keyed("sensitivity record", hex)?;
                Ok((
                    key,
                    one(location, &key_what("sensitivity record", &key), r)?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(LiveView {
            location: location.to_string(),
            info: view.info,
            controllers: view.controllers,
            runs,
            trials,
            snapshots,
            cache,
            sensitivity,
            measurements,
        })
    }

    /// Who wrote the view, and when.
    pub fn info(&self) -> &LiveInfo {
        &self.info
    }

    fn refuse<T>(&self) -> Result<T> {
        Err(Error::StoreInUse {
            location: self.location.clone(),
            pid: self.info.pid.to_string(),
        })
    }
}

/// When a writer last wrote its view, and how long that took (see [`REWRITE_FACTOR`]).
#[derive(Debug, Default)]
pub(super) struct Pace {
    last: Option<(Instant, Duration)>,
}

impl Pace {
    /// Whether a rewrite is due now (`force`: whatever the pace).
    pub(super) fn due(&self, force: bool) -> bool {
        match self.last {
            Some((at, took)) if !force => at.elapsed() >= took * REWRITE_FACTOR,
            _ => true,
        }
    }

    /// Records a rewrite that started at `start` and ends now.
    pub(super) fn wrote(&mut self, start: Instant) {
        self.record(start, start.elapsed());
    }

    /// Records a rewrite that started at `at` and took `took`.
    pub(super) fn record(&mut self, at: Instant, took: Duration) {
        self.last = Some((at, took));
    }
}

impl Store for LiveView {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn create_run(&self, _: &RunManifest) -> Result<()> {
        self.refuse()
    }

    fn put_run(&self, _: &RunManifest) -> Result<()> {
        self.refuse()
    }

    fn run(&self, name: &str) -> Result<Option<RunManifest>> {
        Ok(self.runs.iter().find(|m| m.name == name).cloned())
    }

    fn runs(&self) -> Result<Vec<RunManifest>> {
        let mut runs = self.runs.clone();
        runs.sort_by(|a, b| (a.created_unix, &a.name).cmp(&(b.created_unix, &b.name)));
        Ok(runs)
    }

    fn put_trial(&self, _: &str, _: &TrialRecord) -> Result<()> {
        self.refuse()
    }

    fn put_recovered(&self, _: &str, _: &RecoveredRecord) -> Result<()> {
        self.refuse()
    }

    /// A live view carries the journal, not recovered variants (recovery needs the store itself,
    /// which a running search holds).
    fn recovered(&self, _: &str) -> Result<Vec<RecoveredRecord>> {
        Ok(Vec::new())
    }

    fn put_blob(&self, _: &blake3::Hash, _: &[u8]) -> Result<()> {
        self.refuse()
    }

    fn blob(&self, _: &blake3::Hash) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    fn put_trials(&self, _: &str, _: &[TrialRecord]) -> Result<()> {
        self.refuse()
    }

    fn trials(&self, run: &str) -> Result<Vec<TrialRecord>> {
        Ok(self.trials.get(run).cloned().unwrap_or_default())
    }

    fn cached(&self, key: &blake3::Hash) -> Result<Option<CachedEvaluation>> {
        Ok(self.cache.get(key).cloned())
    }

    fn put_cached(&self, _: &blake3::Hash, _: &CachedEvaluation) -> Result<()> {
        self.refuse()
    }

    fn snapshot(&self, run: &str) -> Result<Option<Snapshot>> {
        Ok(self.snapshots.get(run).cloned())
    }

    fn put_snapshot(&self, _: &str, _: &Snapshot) -> Result<()> {
        self.refuse()
    }

    fn sensitivity(&self, key: &blake3::Hash) -> Result<Option<SensitivityRecord>> {
        Ok(self.sensitivity.get(key).cloned())
    }

    fn put_sensitivity(&self, _: &blake3::Hash, _: &SensitivityRecord) -> Result<()> {
        self.refuse()
    }

    fn put_measurements(&self, _: &str, _: &[MeasurementRecord]) -> Result<()> {
        self.refuse()
    }

    fn measurements(&self, run: &str) -> Result<Vec<MeasurementRecord>> {
        Ok(self.measurements.get(run).cloned().unwrap_or_default())
    }

    fn counts(&self) -> Result<StoreCounts> {
        Ok(StoreCounts {
            runs: self.runs.len(),
            cached_evaluations: self.cache.len(),
            sensitivity_records: self.sensitivity.len(),
        })
    }

    fn lock_run(&self, _: &str) -> Result<()> {
        self.refuse()
    }

    fn controllers(&self) -> Result<Vec<Controller>> {
        Ok(self.controllers.clone())
    }

    fn cache_entries(&self) -> Result<Vec<(blake3::Hash, CachedEvaluation)>> {
        Ok(sorted(&self.cache))
    }

    fn sensitivity_entries(&self) -> Result<Vec<(blake3::Hash, SensitivityRecord)>> {
        Ok(sorted(&self.sensitivity))
    }
}

/// The entries of a keyed map in key order.
fn sorted<R: Clone>(map: &HashMap<blake3::Hash, R>) -> Vec<(blake3::Hash, R)> {
    let mut entries: Vec<(blake3::Hash, R)> = map.iter().map(|(k, v)| (*k, v.clone())).collect();
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    entries
}
