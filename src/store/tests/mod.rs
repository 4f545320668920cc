//! # Store tests
//!
//! The [`Store`] guarantees, pinned on every backend by one suite ([`suite`]) run against a
//! [`Backend`] factory: a fresh, empty store per test — a temporary folder for sled, a fresh database
//! on the server `MPSEARCH_TEST_POSTGRES` names for PostgreSQL. Then what only one backend has: the
//! sled folder's in-use errors ([`sled_only`]), PostgreSQL's per-run locks and table versions
//! ([`postgres_only`]), the live view of a held sled store ([`live`]), and copies between any two
//! backends ([`copy`](fn@crate::store::copy)).
//!
//! Without `MPSEARCH_TEST_POSTGRES` (`bash scripts/test-postgres.sh run cargo test` sets it) the
//! PostgreSQL tests print `SKIPPED` and pass; under `CI=true` they fail instead, since CI starts the
//! server.

mod copy;
mod live;
mod postgres_only;
mod sled_only;
mod suite;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use tempfile::TempDir;

use super::*;
use crate::sensitivity::{Measurement, Pairs};
use crate::strategy::StrategyKind;

/// The environment variable naming the test server (a `postgres://` URL of a superuser's database).
pub const POSTGRES_ENV: &str = "MPSEARCH_TEST_POSTGRES";

/// A record addressed as the backend stores it, for writes that bypass the store's checks.
#[derive(Clone, Copy, Debug)]
pub enum Raw<'a> {
    Run(&'a str),
    Trial(&'a str, u64),
    Cache(&'a blake3::Hash),
    Measurement(&'a str, u64),
}

/// A backend under test: one fresh store, which tests open (and open again) as they need.
pub trait Backend: Sized {
    type S: Store;
    /// A fresh, empty store; `None` when this backend cannot be tested here (after saying why).
    fn make() -> Option<Self>;
    /// Opens the store: the same records every time.
    fn open(&self) -> Self::S;
    /// What [`Store::location`] says.
    fn location(&self) -> String;
    /// Stores `bytes` as the value of `raw` (through `store`, the open handle, where the backend
    /// needs it).
    fn raw_put(&self, store: &Self::S, raw: Raw, bytes: &[u8]);
    /// The stored value of `raw`, as bytes.
    fn raw_get(&self, store: &Self::S, raw: Raw) -> Option<Vec<u8>>;
}

/// A sled store in a temporary folder.
pub struct SledBackend {
    pub dir: TempDir,
}

impl SledBackend {
    pub fn new() -> SledBackend {
        SledBackend {
            dir: tempfile::tempdir().expect("a temp folder"),
        }
    }
}

impl Backend for SledBackend {
    type S = SledStore;

    fn make() -> Option<SledBackend> {
        Some(SledBackend::new())
    }

    fn open(&self) -> SledStore {
        SledStore::open(self.dir.path())
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.dir.path().display()))
    }

    fn location(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn raw_put(&self, store: &SledStore, raw: Raw, bytes: &[u8]) {
        let (tree, key) = sled_key(raw);
        store.raw_tree(tree).insert(key, bytes).expect("raw insert");
    }

    fn raw_get(&self, store: &SledStore, raw: Raw) -> Option<Vec<u8>> {
        let (tree, key) = sled_key(raw);
        store
            .raw_tree(tree)
            .get(key)
            .expect("raw get")
            .map(|v| v.to_vec())
    }
}

fn sled_key(raw: Raw) -> (&'static str, Vec<u8>) {
    match raw {
        Raw::Run(name) => ("runs", name.as_bytes().to_vec()),
        Raw::Trial(run, n) => ("trials", super::sled::trial_key(run, n)),
        Raw::Cache(key) => ("cache", key.as_bytes().to_vec()),
        Raw::Measurement(run, n) => ("measurements", super::sled::trial_key(run, n)),
    }
}

/// A fresh database on the test server, dropped at the end of the test.
pub struct PgBackend {
    admin: String,
    pub url: String,
    database: String,
}

/// Numbers the databases of this process.
static DATABASES: AtomicU32 = AtomicU32::new(0);

impl PgBackend {
    /// A fresh database on the server of [`POSTGRES_ENV`]; `None` (after saying so) when there is
    /// none, except under `CI=true`, where that fails the test.
    pub fn new() -> Option<PgBackend> {
        let admin = test_server()?;
        let database = format!(
            "mpsearch_test_{}_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::SeqCst),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        );
        admin_client(&admin)
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .unwrap_or_else(|e| panic!("creating database {database} on {admin}: {e}"));
        let url = database_url(&admin, &database);
        Some(PgBackend {
            admin,
            url,
            database,
        })
    }

    /// A plain client of the test database (for raw reads and writes).
    pub fn client(&self) -> ::postgres::Client {
        ::postgres::Client::connect(&self.url, ::postgres::NoTls)
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.url))
    }
}

impl Drop for PgBackend {
    fn drop(&mut self) {
        let _ = admin_client(&self.admin).batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.database
        ));
    }
}

/// The test server's URL, if it is reachable; else `None` after a loud `SKIPPED`, or a panic
/// under `CI=true`.
pub fn test_server() -> Option<String> {
    let url = std::env::var(POSTGRES_ENV).ok().filter(|u| !u.is_empty());
    let problem = match &url {
        None => format!("{POSTGRES_ENV} is not set"),
        Some(u) => match ::postgres::Client::connect(u, ::postgres::NoTls) {
            Ok(_) => return url,
            Err(e) => format!("cannot connect to {POSTGRES_ENV}={u}: {e}"),
        },
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{problem}: under CI=true the PostgreSQL store tests must run (.ci/run starts the server)");
    }
    // Written to stderr directly, not with eprintln!, so that the test harness does not capture it.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: PostgreSQL store test: {problem} (`bash scripts/test-postgres.sh run cargo test` \
         starts a throw-away server)"
    );
    None
}

fn admin_client(admin: &str) -> ::postgres::Client {
    ::postgres::Client::connect(admin, ::postgres::NoTls)
        .unwrap_or_else(|e| panic!("connecting to {admin}: {e}"))
}

/// `admin` with its database replaced by `database`.
fn database_url(admin: &str, database: &str) -> String {
    let (base, query) = admin
        .split_once('?')
        .map_or((admin, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}

impl Backend for PgBackend {
    type S = PostgresStore;

    fn make() -> Option<PgBackend> {
        PgBackend::new()
    }

    fn open(&self) -> PostgresStore {
        PostgresStore::connect(&self.url).unwrap_or_else(|e| panic!("opening {}: {e}", self.url))
    }

    fn location(&self) -> String {
        super::postgres::redact(&self.url)
    }

    fn raw_put(&self, _: &PostgresStore, raw: Raw, bytes: &[u8]) {
        let text = std::str::from_utf8(bytes).expect("PostgreSQL json columns hold text");
        let mut c = self.client();
        let result = match raw {
            Raw::Run(name) => c.execute(
                "INSERT INTO mpsearch_runs (name, created_unix, record) VALUES ($1, 0, $2::text::json) \
                 ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record",
                &[&name, &text],
            ),
            Raw::Trial(run, n) => c.execute(
                "INSERT INTO mpsearch_trials (run, number, state, record) VALUES ($1, $2, 'complete', $3::text::json) \
                 ON CONFLICT (run, number) DO UPDATE SET record = EXCLUDED.record",
                &[&run, &(n as i64), &text],
            ),
            Raw::Cache(key) => c.execute(
                "INSERT INTO mpsearch_cache (key, record) VALUES ($1, $2::text::json) \
                 ON CONFLICT (key) DO UPDATE SET record = EXCLUDED.record",
                &[&key.as_bytes().as_slice(), &text],
            ),
            Raw::Measurement(run, n) => c.execute(
                "INSERT INTO mpsearch_measurements (run, number, record) VALUES ($1, $2, $3::text::json) \
                 ON CONFLICT (run, number) DO UPDATE SET record = EXCLUDED.record",
                &[&run, &(n as i64), &text],
            ),
        };
        result.expect("raw insert");
    }

    fn raw_get(&self, _: &PostgresStore, raw: Raw) -> Option<Vec<u8>> {
        let mut c = self.client();
        let row = match raw {
            Raw::Run(name) => c.query_opt(
                "SELECT record::text FROM mpsearch_runs WHERE name = $1",
                &[&name],
            ),
            Raw::Trial(run, n) => c.query_opt(
                "SELECT record::text FROM mpsearch_trials WHERE run = $1 AND number = $2",
                &[&run, &(n as i64)],
            ),
            Raw::Cache(key) => c.query_opt(
                "SELECT record::text FROM mpsearch_cache WHERE key = $1",
                &[&key.as_bytes().as_slice()],
            ),
            Raw::Measurement(run, n) => c.query_opt(
                "SELECT record::text FROM mpsearch_measurements WHERE run = $1 AND number = $2",
                &[&run, &(n as i64)],
            ),
        };
        row.expect("raw get")
            .map(|r| r.get::<_, String>(0).into_bytes())
    }
}

/// Runs each named generic test of [`suite`] (and the like) once per backend, as
/// `sled_backend::NAME` and `postgres_backend::NAME`.
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod sled_backend {
            $(
                #[test]
                fn $test() {
                    super::$test(&crate::store::tests::SledBackend::new());
                }
            )*
        }
        mod postgres_backend {
            $(
                #[test]
                fn $test() {
                    if let Some(b) = crate::store::tests::PgBackend::new() {
                        super::$test(&b);
                    }
                }
            )*
        }
    };
}
pub(crate) use on_every_backend;

// ---- records the tests write ----

pub fn manifest(name: &str, created_unix: u64) -> RunManifest {
    RunManifest {
        schema: SCHEMA_VERSION,
        name: name.to_string(),
        created_unix,
        status: RunStatus::Running,
        elapsed_seconds: 1.5,
        config: RunConfig {
            strategy: StrategyKind::Evolution,
            max_latency_us: Some(120.0),
            max_drop: Some(0.01),
            seed: 7,
            pairs: Pairs::Fixed(12),
            ..RunConfig::default()
        },
        reference: [100.0, 1.0],
        fingerprints: Fingerprints {
            model: "ab12".into(),
            ..Fingerprints::default()
        },
        splits: None,
        setup: Some(SetupSummary {
            key: "5e".repeat(32),
            measured: 17,
            budget: Some(100),
            rounds: Some(5),
            stop: Some("stable".into()),
            reused: false,
        }),
        setup_seconds: Some(12.5),
        evaluations: Some(Evaluations {
            setup: EvalCount {
                evaluated: 17,
                cached: 2,
            },
            baselines: EvalCount {
                evaluated: 1,
                cached: 0,
            },
            held_out: EvalCount {
                evaluated: 9,
                cached: 3,
            },
        }),
    }
}

pub fn trial(number: u64, state: TrialState) -> TrialRecord {
    let complete = state == TrialState::Complete;
    TrialRecord {
        schema: SCHEMA_VERSION,
        number,
        strategy: "evolution".into(),
        state,
        point: vec![3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8],
        assignment: crate::space::AssignmentJson {
            default: Some("int4-asym-g32".into()),
            layers: BTreeMap::from([("fc1".to_string(), "int8-sym-channel+2:4".to_string())]),
        },
        hash: blake3::hash(&number.to_le_bytes()).to_hex().to_string(),
        key: blake3::hash(&number.to_be_bytes()).to_hex().to_string(),
        quality: complete.then_some(0.0123 + number as f64 * 1e-4),
        metrics: if complete {
            BTreeMap::from([("accuracy".to_string(), 0.91), ("kl".to_string(), 0.0123)])
        } else {
            BTreeMap::new()
        },
        error: None,
        cost: CostRecord {
            latency_us: 88.5 - number as f64 * 0.1,
            bytes: 123_456,
            bops: 1.5e9,
        },
        cached: false,
        seconds: 0.25,
        proxy: None,
        batch: None,
    }
}

pub fn evaluation() -> CachedEvaluation {
    CachedEvaluation {
        schema: SCHEMA_VERSION,
        objective: "kl".into(),
        quality: 0.02,
        metrics: BTreeMap::from([("kl".to_string(), 0.02)]),
        seconds: 0.4,
    }
}

/// A run whose evaluator fingerprint is valid hex, with three complete trials (0, 1, 2), of which 0
/// and 2 have a held-out evaluation in the cache: `(manifest, trials, held-out qualities of 0 and 2)`.
pub fn held_out_run(store: &dyn Store) -> (RunManifest, Vec<TrialRecord>, [f64; 2]) {
    let mut m = manifest("held", 1);
    m.fingerprints.evaluator = blake3::hash(b"evaluator").to_hex().to_string();
    store.create_run(&m).expect("create");
    let trials: Vec<TrialRecord> = (0..3).map(|n| trial(n, TrialState::Complete)).collect();
    store.put_trials("held", &trials).expect("put_trials");
    // Qualities whose shortest decimal form needs all 17 digits: they must come back bit for bit.
    let q = [0.1 + 0.2, 0.5 / 3.0];
    for (t, q) in [(&trials[0], q[0]), (&trials[2], q[1])] {
        let key = held_out_key(&m, t).expect("valid hex");
        store
            .put_cached(&key, &held_out_evaluation(q))
            .expect("put_cached");
    }
    (m, trials, q)
}

pub fn held_out_evaluation(q: f64) -> CachedEvaluation {
    CachedEvaluation {
        quality: q,
        metrics: BTreeMap::from([("kl".to_string(), q), ("accuracy".to_string(), 0.875)]),
        ..evaluation()
    }
}

pub fn sensitivity_record() -> SensitivityRecord {
    SensitivityRecord {
        schema: SCHEMA_VERSION,
        errors: vec![vec![0.0, 0.1, 0.5], vec![0.0, 0.2]],
        measurements: vec![Measurement {
            group: 1,
            choice: 1,
            quality: 0.03,
        }],
    }
}

/// Measurement `number` of `source`: every field set, the times chosen so that their shortest
/// decimal forms need all 17 digits (they must come back bit for bit).
pub fn measurement(number: u64, source: MeasuredSource) -> MeasurementRecord {
    let base = 0.1 + 0.2 + number as f64;
    MeasurementRecord {
        schema: SCHEMA_VERSION,
        number,
        assignment: crate::space::AssignmentJson {
            default: Some("q4_k".into()),
            layers: BTreeMap::from([("conv1".to_string(), "f32".to_string())]),
        },
        hash: blake3::hash(&number.to_le_bytes()).to_hex().to_string(),
        source,
        batch: 32,
        tokens: Some(32),
        cost_batch: 1024,
        repetitions: 20,
        // Odd numbers: a record written before the fastest pass was kept.
        fastest_us: (number % 2 == 0).then_some(990.0 * base),
        median_us: 1000.0 * base,
        spread_us: 12.5 / 3.0,
        round_medians_us: vec![1000.0 * base, 1100.0 * base, 1002.0 * base],
        reference_us: 2500.0 / 3.0 + 1000.0,
        reference_fastest_us: (number % 2 == 0).then_some(2400.0 / 3.0 + 1000.0),
        other_load: if number % 2 == 0 { Some(0.125) } else { None },
        host: "bench-host".into(),
        cpu: "Some CPU @ 2.0GHz".into(),
        cores: 2,
        threads: if number % 2 == 0 { Some(2) } else { None },
        candle_version: "0.11.1".into(),
        profile: "calibrated-bench-host".into(),
        profile_fingerprint: blake3::hash(b"profile").to_hex().to_string(),
        predicted_us: 900.0 * base,
        measured_unix: 1_764_000_000 + number,
    }
}

/// The measurements [`fill`] stores for run `alpha`: the f32 reference, a front point, a trial off
/// the front and a random assignment.
pub fn measurements() -> Vec<MeasurementRecord> {
    vec![
        measurement(0, MeasuredSource::Reference),
        measurement(
            1,
            MeasuredSource::Trial {
                trial: 3,
                point: Some(2),
            },
        ),
        measurement(
            2,
            MeasuredSource::Trial {
                trial: 7,
                point: None,
            },
        ),
        measurement(3, MeasuredSource::Random { seed: 5, index: 0 }),
    ]
}

pub fn snapshot(trials: u64) -> Snapshot {
    Snapshot {
        schema: SCHEMA_VERSION,
        strategy: "evolution".into(),
        trials,
        state: "{\"population\":[]}".into(),
    }
}

/// A store holding two runs (one with a snapshot and measurements), trials, a cached evaluation and
/// a sensitivity analysis.
pub fn fill(store: &dyn Store) {
    store.create_run(&manifest("alpha", 10)).expect("create");
    store.create_run(&manifest("beta", 20)).expect("create");
    let trials: Vec<TrialRecord> = (0..12)
        .map(|n| {
            trial(
                n,
                if n == 11 {
                    TrialState::Running
                } else {
                    TrialState::Complete
                },
            )
        })
        .collect();
    store.put_trials("alpha", &trials).expect("trials");
    store
        .put_trial("beta", &trial(0, TrialState::Complete))
        .expect("trial");
    store
        .put_snapshot("alpha", &snapshot(11))
        .expect("snapshot");
    store
        .put_measurements("alpha", &measurements())
        .expect("measurements");
    store
        .put_cached(&blake3::hash(b"k1"), &evaluation())
        .expect("cache");
    store
        .put_sensitivity(&blake3::hash(b"s1"), &sensitivity_record())
        .expect("sensitivity");
}

/// Everything a store holds, as JSON, for comparing two stores.
pub fn contents(store: &dyn Store) -> serde_json::Value {
    let runs = store.runs().expect("runs");
    let per_run: Vec<serde_json::Value> = runs
        .iter()
        .map(|m| {
            serde_json::json!({
                "manifest": m,
                "trials": store.trials(&m.name).expect("trials"),
                "snapshot": store.snapshot(&m.name).expect("snapshot"),
                "measurements": store.measurements(&m.name).expect("measurements"),
            })
        })
        .collect();
    let hex = |k: &blake3::Hash| k.to_hex().to_string();
    serde_json::json!({
        "runs": per_run,
        "cache": store.cache_entries().expect("cache").iter().map(|(k, v)| (hex(k), v)).collect::<BTreeMap<_, _>>(),
        "sensitivity": store.sensitivity_entries().expect("sensitivity").iter().map(|(k, v)| (hex(k), v)).collect::<BTreeMap<_, _>>(),
    })
}

pub fn message(result: Result<impl std::fmt::Debug>) -> String {
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

/// The path of a folder as a string, for comparisons with messages.
pub fn shown(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn store_is_object_safe_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + ?Sized>() {}
    assert_send_sync::<dyn Store>();
    assert_send_sync::<SledStore>();
    assert_send_sync::<PostgresStore>();
    assert_send_sync::<LiveView>();
}

#[test]
fn database_urls_keep_user_host_and_parameters() {
    assert_eq!(
        database_url("postgres://u@%2Ftmp%2Fpg/postgres", "x"),
        "postgres://u@%2Ftmp%2Fpg/x"
    );
    assert_eq!(
        database_url("postgresql://u:p@h:5433/db?sslmode=disable", "x"),
        "postgresql://u:p@h:5433/x?sslmode=disable"
    );
    assert_eq!(database_url("postgres://u@h", "x"), "postgres://u@h/x");
}

#[test]
fn pairs_read_as_written_and_older_manifests_read_unchanged() {
    // `--pairs` is stored as "auto" or a number; manifests written before `auto` hold a number.
    let fixed: Pairs = serde_json::from_str("400").unwrap();
    assert_eq!(fixed, Pairs::Fixed(400));
    assert_eq!(serde_json::to_string(&fixed).unwrap(), "400");
    let auto: Pairs = serde_json::from_str("\"auto\"").unwrap();
    assert_eq!(auto, Pairs::Auto);
    assert_eq!(serde_json::to_string(&auto).unwrap(), "\"auto\"");
    for bad in ["0", "\"many\"", "-3", "2.5"] {
        assert!(serde_json::from_str::<Pairs>(bad).is_err(), "{bad}");
    }
    assert_eq!("auto".parse::<Pairs>().unwrap(), Pairs::Auto);
    assert_eq!(" 12 ".parse::<Pairs>().unwrap(), Pairs::Fixed(12));
    let e = "0".parse::<Pairs>().unwrap_err().to_string();
    assert!(e.contains("`auto` or a whole number of at least 1"), "{e}");

    // A manifest from before the set-up and its evaluations were recorded reads without them and is
    // written back byte for byte.
    // The same for one from before trials refined the predictor: it reads as not refining.
    let mut old = manifest("old", 1);
    old.setup = None;
    old.evaluations = None;
    old.config.refine = false;
    let json = serde_json::to_string(&old).unwrap();
    assert!(
        !json.contains("\"setup\"")
            && !json.contains("\"evaluations\"")
            && !json.contains("\"refine\""),
        "{json}"
    );
    assert!(json.contains("\"pairs\":12"), "{json}");
    let back: RunManifest = serde_json::from_str(&json).unwrap();
    assert_eq!(serde_json::to_string(&back).unwrap(), json);
    assert!(!back.config.refine);
    // And a new one keeps all three.
    let new = manifest("new", 1);
    assert!(new.config.refine);
    let json = serde_json::to_string(&new).unwrap();
    assert!(json.contains("\"refine\":true"), "{json}");
    let back: RunManifest = serde_json::from_str(&json).unwrap();
    assert_eq!(back, new);
}
