//! # Store tests
//!
//! The [`Store`] guarantees, pinned against [`SledStore`]: round trips of every record, trial order,
//! replacement, durability across reopening, the shared cache, the in-use error (in this process and
//! from a real second process), and clear errors for records of another schema or damaged bytes.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use tempfile::TempDir;

use super::*;
use crate::compress::ScaleMethod;
use crate::cost::Objective;
use crate::error::Error;
use crate::sensitivity::Measurement;
use crate::strategy::StrategyKind;

/// The environment variable that makes [`in_use_probe_child`] open a store (in a child process).
const PROBE_ENV: &str = "MPSEARCH_STORE_PROBE_DIR";
/// The line prefix under which the child reports what happened.
const PROBE_PREFIX: &str = "PROBE-RESULT: ";

fn temp() -> TempDir {
    tempfile::tempdir().expect("a temp folder")
}

fn open(dir: &Path) -> SledStore {
    SledStore::open(dir).unwrap_or_else(|e| panic!("opening {}: {e}", dir.display()))
}

fn manifest(name: &str, created_unix: u64) -> RunManifest {
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
            pairs: 12,
            ..RunConfig::default()
        },
        reference: [100.0, 1.0],
        fingerprints: Fingerprints {
            model: "ab12".into(),
            ..Fingerprints::default()
        },
        splits: None,
    }
}

fn trial(number: u64, state: TrialState) -> TrialRecord {
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
        quality: complete.then_some(0.0123),
        metrics: if complete {
            BTreeMap::from([("accuracy".to_string(), 0.91), ("kl".to_string(), 0.0123)])
        } else {
            BTreeMap::new()
        },
        error: None,
        cost: CostRecord {
            latency_us: 88.5,
            bytes: 123_456,
            bops: 1.5e9,
        },
        cached: false,
        seconds: 0.25,
    }
}

fn evaluation() -> CachedEvaluation {
    CachedEvaluation {
        schema: SCHEMA_VERSION,
        objective: "kl".into(),
        quality: 0.02,
        metrics: BTreeMap::from([("kl".to_string(), 0.02)]),
        seconds: 0.4,
    }
}

fn message(result: Result<impl std::fmt::Debug>) -> String {
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn store_is_object_safe_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + ?Sized>() {}
    assert_send_sync::<dyn Store>();
    assert_send_sync::<SledStore>();
}

#[test]
fn runs_round_trip_sorted_and_created_once() {
    let dir = temp();
    let store = open(dir.path());
    assert_eq!(store.location(), dir.path().display().to_string());
    let b = manifest("b", 20);
    let a = manifest("a", 20);
    let c = manifest("c", 10);
    for m in [&b, &a, &c] {
        store.create_run(m).expect("create");
    }
    assert_eq!(store.run("a").expect("read"), Some(a.clone()));
    assert_eq!(store.run("nope").expect("read"), None);
    assert_eq!(store.runs().expect("runs"), vec![c, a.clone(), b]);

    let text = message(store.create_run(&manifest("a", 30)));
    assert!(text.contains("`a` already exists"), "{text}");
    assert!(text.contains("mpsearch resume a"), "{text}");
    assert!(text.contains("--run"), "{text}");
    assert_eq!(
        store.run("a").expect("read"),
        Some(a.clone()),
        "the first run is kept"
    );

    let mut updated = a;
    updated.status = RunStatus::Complete;
    updated.elapsed_seconds = 99.0;
    store.put_run(&updated).expect("put_run");
    assert_eq!(store.run("a").expect("read"), Some(updated));
    assert_eq!(store.counts().expect("counts").runs, 3);
}

#[test]
fn bad_run_names_are_refused() {
    let dir = temp();
    let store = open(dir.path());
    assert!(message(store.create_run(&manifest("", 1))).contains("empty"));
    assert!(message(store.create_run(&manifest("a\0b", 1))).contains("NUL"));
    let text = message(store.put_trial("ghost", &trial(1, TrialState::Running)));
    assert!(text.contains("no run named `ghost`"), "{text}");
}

#[test]
fn store_trials_come_back_in_number_order_and_replace() {
    let dir = temp();
    let store = open(dir.path());
    store.create_run(&manifest("r", 1)).expect("create");
    // A run whose name extends `r` must not leak into `r`'s trials.
    store.create_run(&manifest("r2", 1)).expect("create");
    store
        .put_trial("r2", &trial(0, TrialState::Complete))
        .expect("put");
    for n in [10, 2, 1, 256] {
        store
            .put_trial("r", &trial(n, TrialState::Running))
            .expect("put");
    }
    let numbers: Vec<u64> = store
        .trials("r")
        .expect("trials")
        .iter()
        .map(|t| t.number)
        .collect();
    assert_eq!(numbers, vec![1, 2, 10, 256]);

    let done = trial(2, TrialState::Complete);
    store.put_trial("r", &done).expect("replace");
    let trials = store.trials("r").expect("trials");
    assert_eq!(trials.len(), 4);
    assert_eq!(trials[1], done);
    assert_eq!(trials[0], trial(1, TrialState::Running));
    assert!(store.trials("nobody").expect("trials").is_empty());
    assert_eq!(store.trials("r2").expect("trials").len(), 1);
}

#[test]
fn store_put_trials_writes_a_batch() {
    let dir = temp();
    let store = open(dir.path());
    store.create_run(&manifest("r", 1)).expect("create");
    let batch: Vec<TrialRecord> = (0..8)
        .rev()
        .map(|n| trial(n, TrialState::Running))
        .collect();
    store.put_trials("r", &batch).expect("batch");
    let back = store.trials("r").expect("trials");
    assert_eq!(back.len(), 8);
    assert!(back.iter().enumerate().all(|(i, t)| t.number == i as u64));

    // One bad record (another schema) refuses the whole batch.
    let mut bad = batch.clone();
    bad.push(TrialRecord {
        schema: SCHEMA_VERSION + 1,
        ..trial(100, TrialState::Running)
    });
    assert!(message(store.put_trials("r", &bad)).contains("refusing to write"));
    assert_eq!(store.trials("r").expect("trials").len(), 8);
}

#[test]
fn store_cache_snapshot_and_sensitivity_round_trip_and_cache_is_shared() {
    let dir = temp();
    let store = open(dir.path());
    store.create_run(&manifest("one", 1)).expect("create");
    store.create_run(&manifest("two", 2)).expect("create");

    let key = blake3::hash(b"model+data+assignment");
    assert_eq!(store.cached(&key).expect("cached"), None);
    store.put_cached(&key, &evaluation()).expect("put_cached");
    // The cache is by content: whichever run asks, the same evaluation answers.
    let mut hit = trial(0, TrialState::Complete);
    hit.cached = true;
    hit.key = key.to_hex().to_string();
    store.put_trial("two", &hit).expect("put");
    let again = store.trials("two").expect("trials")[0].key.clone();
    let again = blake3::Hash::from_hex(again).expect("hex key");
    assert_eq!(store.cached(&again).expect("cached"), Some(evaluation()));

    let snapshot = Snapshot {
        schema: SCHEMA_VERSION,
        strategy: "evolution".into(),
        trials: 64,
        state: "{\"population\":[]}".into(),
    };
    assert_eq!(store.snapshot("one").expect("snapshot"), None);
    store.put_snapshot("one", &snapshot).expect("put_snapshot");
    assert_eq!(store.snapshot("one").expect("snapshot"), Some(snapshot));
    assert_eq!(store.snapshot("two").expect("snapshot"), None);

    let sensitivity = SensitivityRecord {
        schema: SCHEMA_VERSION,
        errors: vec![vec![0.0, 0.1, 0.5], vec![0.0, 0.2]],
        measurements: vec![Measurement {
            group: 1,
            choice: 1,
            quality: 0.03,
        }],
    };
    let skey = blake3::hash(b"sensitivity");
    store.put_sensitivity(&skey, &sensitivity).expect("put");
    assert_eq!(store.sensitivity(&skey).expect("read"), Some(sensitivity));
    assert_eq!(store.sensitivity(&key).expect("read"), None);

    let counts = store.counts().expect("counts");
    assert_eq!(
        counts,
        StoreCounts {
            runs: 2,
            cached_evaluations: 1,
            sensitivity_records: 1
        }
    );
}

#[test]
fn store_data_survives_drop_and_reopen() {
    let dir = temp();
    let key = blake3::hash(b"k");
    {
        let store = open(dir.path());
        store.create_run(&manifest("r", 1)).expect("create");
        store.put_cached(&key, &evaluation()).expect("cache");
        store
            .put_trial("r", &trial(3, TrialState::Complete))
            .expect("put");
    }
    // Closing and reopening at once works, however often (sled releases its lock lazily).
    for _ in 0..10 {
        drop(open(dir.path()));
    }
    let store = open(dir.path());
    assert_eq!(store.run("r").expect("run"), Some(manifest("r", 1)));
    assert_eq!(
        store.trials("r").expect("trials"),
        vec![trial(3, TrialState::Complete)]
    );
    assert_eq!(store.cached(&key).expect("cached"), Some(evaluation()));
}

#[test]
fn store_concurrent_writers_lose_nothing() {
    let dir = temp();
    let store = open(dir.path());
    store.create_run(&manifest("r", 1)).expect("create");
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let store = &store;
            s.spawn(move || {
                for i in 0..10 {
                    store
                        .put_trial("r", &trial(t * 10 + i, TrialState::Complete))
                        .expect("put");
                }
            });
        }
    });
    let numbers: Vec<u64> = store
        .trials("r")
        .expect("trials")
        .iter()
        .map(|t| t.number)
        .collect();
    assert_eq!(numbers, (0..40).collect::<Vec<_>>());
}

#[test]
fn store_in_use_in_this_process() {
    let dir = temp();
    let first = open(dir.path());
    let err = SledStore::open(dir.path()).expect_err("a second open must fail");
    let pid = std::process::id().to_string();
    match &err {
        Error::StoreInUse { location, pid: p } => {
            assert_eq!(location, &dir.path().display().to_string());
            assert_eq!(p, &pid);
        }
        other => panic!("expected StoreInUse, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains(&format!("in use by pid {pid}")), "{text}");
    assert!(text.contains(&dir.path().display().to_string()), "{text}");

    // Without a readable owner file the pid is unknown, and the store still works.
    std::fs::remove_file(dir.path().join("owner.pid")).expect("remove owner.pid");
    let text = SledStore::open(dir.path())
        .expect_err("still held")
        .to_string();
    assert!(text.contains("in use by pid unknown"), "{text}");
    first
        .create_run(&manifest("r", 1))
        .expect("the holder still writes");

    // Once the holder is gone, the store opens again.
    drop(first);
    let again = open(dir.path());
    assert!(again.run("r").expect("run").is_some());
}

/// Run by [`store_in_use_by_another_process`] in a child process (a no-op otherwise): opens the store
/// named by [`PROBE_ENV`] and prints what happened.
#[test]
fn in_use_probe_child() {
    let Some(dir) = std::env::var_os(PROBE_ENV) else {
        return;
    };
    match SledStore::open(Path::new(&dir)) {
        Ok(_) => println!("{PROBE_PREFIX}opened"),
        Err(e) => println!("{PROBE_PREFIX}{e}"),
    }
}

#[test]
fn store_in_use_by_another_process() {
    let dir = temp();
    let _held = open(dir.path());
    let exe = std::env::current_exe().expect("the test binary");
    let mut command = Command::new(&exe);
    command
        .args([
            "--exact",
            "store::tests::in_use_probe_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROBE_ENV, dir.path());
    let output = command.output().expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split_once(PROBE_PREFIX).map(|(_, result)| result))
        .unwrap_or_else(|| {
            panic!(
                "{command:?} printed no result in {}:\nstdout:\n{stdout}\nstderr:\n{}",
                dir.path().display(),
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let expected = format!(
        "store {} is in use by pid {}",
        dir.path().display(),
        std::process::id()
    );
    assert!(
        line.starts_with(&expected),
        "child said: {line}\nexpected: {expected}…"
    );
}

#[test]
fn store_other_schema_version_is_a_clear_error() {
    let dir = temp();
    let store = open(dir.path());
    store.create_run(&manifest("r", 1)).expect("create");
    let raw = store.raw_tree("trials");

    // Same layout, another version.
    let mut old = trial(5, TrialState::Complete);
    old.schema = SCHEMA_VERSION + 1;
    let text = message(store.put_trial("r", &old));
    assert!(text.contains("refusing to write run `r` trial 5"), "{text}");
    let bytes = serde_json::to_vec(&old).expect("json");
    raw.insert(super::sled::trial_key("r", 5), bytes)
        .expect("raw insert");
    let text = message(store.trials("r"));
    let want = format!(
        "run `r` trial 5 was written by another mpsearch version (record schema {}; this mpsearch reads schema {SCHEMA_VERSION})",
        SCHEMA_VERSION + 1
    );
    assert!(text.contains(&want), "{text}");

    // Another layout altogether: the version is still found and named.
    let runs = store.raw_tree("runs");
    runs.insert("future", br#"{"schema":7,"title":"x"}"#.as_slice())
        .expect("raw insert");
    let text = message(store.run("future"));
    assert!(
        text.contains("run `future` was written by another mpsearch version (record schema 7"),
        "{text}"
    );
    let text = message(store.runs());
    assert!(text.contains("run `future`"), "{text}");
}

/// A run manifest exactly as mpsearch has written it since schema 1 (strategy, objective and scale as
/// lowercase names; the fingerprints as a map in key order).
const MANIFEST_SCHEMA_1: &str = concat!(
    r#"{"schema":1,"name":"demo-cortex-a76-1","created_unix":1764000000,"status":"running","#,
    r#""elapsed_seconds":1.5,"config":{"model":"demo","data":null,"space":"demo","#,
    r#""profile":"cortex-a76","batch":1,"strategy":"evolution","objective":"bops","#,
    r#""max_latency_us":120.0,"max_bytes":null,"max_bops":null,"max_drop":0.01,"seed":7,"#,
    r#""ask_batch":8,"trials":500,"time_seconds":null,"scale":"minmax","pairs":12},"#,
    r#""reference":[100.0,1.0],"fingerprints":{"#,
    r#""evaluator":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","#,
    r#""model":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","#,
    r#""profile":"dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd","#,
    r#""space":"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"}}"#,
);

#[test]
fn store_reads_and_rewrites_a_schema_1_manifest_byte_for_byte() {
    let dir = temp();
    let store = open(dir.path());
    let runs = store.raw_tree("runs");
    runs.insert("demo-cortex-a76-1", MANIFEST_SCHEMA_1.as_bytes())
        .expect("raw insert");
    let m = store
        .run("demo-cortex-a76-1")
        .expect("read")
        .expect("the run is there");
    assert_eq!(m.config.strategy, StrategyKind::Evolution);
    assert_eq!(m.config.objective, Objective::Bops);
    assert_eq!(m.config.scale, ScaleMethod::MinMax);
    assert_eq!(m.fingerprints.evaluator, "bb".repeat(32));
    assert_eq!(m.fingerprints.model, "aa".repeat(32));
    assert_eq!(m.fingerprints.profile, "dd".repeat(32));
    assert_eq!(m.fingerprints.space, "cc".repeat(32));
    // Written back, it is the same bytes: the typed fields keep the layout on disk.
    store.put_run(&m).expect("put");
    let raw = runs
        .get("demo-cortex-a76-1")
        .expect("raw get")
        .expect("raw value");
    assert_eq!(std::str::from_utf8(&raw).expect("utf-8"), MANIFEST_SCHEMA_1);
    // A name no strategy, objective or scale has is damage, named as such.
    for (field, bad) in [
        (r#""strategy":"evolution""#, r#""strategy":"annealing""#),
        (r#""objective":"bops""#, r#""objective":"energy""#),
        (r#""scale":"minmax""#, r#""scale":"percentile""#),
    ] {
        runs.insert("bad", MANIFEST_SCHEMA_1.replace(field, bad).as_bytes())
            .expect("raw insert");
        let text = message(store.run("bad"));
        assert!(
            text.contains("run `bad` cannot be decoded"),
            "{field}: {text}"
        );
    }
}

#[test]
fn store_damaged_values_are_clear_errors() {
    let dir = temp();
    let store = open(dir.path());
    store.create_run(&manifest("r", 1)).expect("create");
    store
        .put_trial("r", &trial(1, TrialState::Complete))
        .expect("put");
    store
        .raw_tree("trials")
        .insert(
            super::sled::trial_key("r", 42),
            b"\xff\x00garbage".as_slice(),
        )
        .expect("raw insert");
    let text = message(store.trials("r"));
    assert!(
        text.contains("run `r` trial 42 cannot be decoded"),
        "{text}"
    );
    assert!(text.contains(&dir.path().display().to_string()), "{text}");

    // Valid JSON of the right version but a missing field is damage too, not a version problem.
    let key = blake3::hash(b"k");
    let partial = format!(r#"{{"schema":{SCHEMA_VERSION},"objective":"kl"}}"#);
    store
        .raw_tree("cache")
        .insert(key.as_bytes(), partial.as_bytes())
        .expect("raw insert");
    let text = message(store.cached(&key));
    assert!(
        text.contains(&format!(
            "cached evaluation {} cannot be decoded",
            key.to_hex()
        )),
        "{text}"
    );
}

/// Timings (printed; run with `--nocapture`): reading 10,000 trials back, and `put_trial` with its
/// flush. Debug builds of this crate are slower than release; the figures are an upper bound.
#[test]
fn store_timings() {
    const TRIALS: u64 = 10_000;
    const FLUSHED: u32 = 50;
    let dir = temp();
    let store = open(dir.path());
    store.create_run(&manifest("r", 1)).expect("create");
    let batch: Vec<TrialRecord> = (0..TRIALS)
        .map(|n| trial(n, TrialState::Complete))
        .collect();
    let start = Instant::now();
    store.put_trials("r", &batch).expect("batch");
    let write = start.elapsed();
    let bytes = serde_json::to_vec(&batch[0]).expect("json").len();

    let start = Instant::now();
    let back = store.trials("r").expect("trials");
    let read = start.elapsed();
    let start = Instant::now();
    let scanned = store.raw_tree("trials").iter().count();
    let scan = start.elapsed();
    assert_eq!(scanned as u64, TRIALS);
    assert_eq!(back.len() as u64, TRIALS);

    let start = Instant::now();
    for n in 0..FLUSHED {
        store
            .put_trial("r", &trial(TRIALS + u64::from(n), TrialState::Complete))
            .expect("put");
    }
    let per_trial = start.elapsed() / FLUSHED;
    eprintln!(
        "store timings: {TRIALS} trials ({bytes} bytes each as JSON) written in one batch in {write:?}, \
         read back in {read:?} (of which the bare sled scan {scan:?}); put_trial + flush {per_trial:?} each (mean of {FLUSHED})"
    );
}
