//! The guarantees of [`Store`] on every backend: round trips of every record, trial order,
//! replacement, atomic batches, durability across reopening, the shared cache, latency measurements,
//! concurrent writers, run controllers, the held-out queries over the evaluation cache, and clear errors for records of another schema or damaged ones.

use std::time::Instant;

use super::*;
use crate::compress::ScaleMethod;
use crate::cost::Objective;

on_every_backend!(
    runs_round_trip_sorted_and_created_once,
    bad_run_names_are_refused,
    trials_come_back_in_number_order_and_replace,
    put_trials_writes_a_batch_all_or_nothing,
    cache_snapshot_and_sensitivity_round_trip_and_cache_is_shared,
    measurements_round_trip_by_run_in_number_order_all_or_nothing,
    recovered_variants_and_blobs_round_trip_and_replace_by_key,
    held_out_evaluations_are_read_back_by_split_key,
    data_survives_drop_and_reopen,
    concurrent_writers_lose_nothing,
    a_locked_run_is_listed_as_driven_by_this_process,
    other_schema_version_is_a_clear_error,
    reads_and_rewrites_a_schema_1_manifest_byte_for_byte,
    damaged_values_are_clear_errors,
    timings,
);

fn runs_round_trip_sorted_and_created_once<B: Backend>(b: &B) {
    let store = b.open();
    assert_eq!(store.location(), b.location());
    let m_b = manifest("b", 20);
    let m_a = manifest("a", 20);
    let m_c = manifest("c", 10);
    // A name that sorts differently bytewise than in a natural-language collation.
    let m_upper = manifest("B", 20);
    for m in [&m_b, &m_a, &m_c, &m_upper] {
        store.create_run(m).expect("create");
    }
    assert_eq!(store.run("a").expect("read"), Some(m_a.clone()));
    assert_eq!(store.run("nope").expect("read"), None);
    assert_eq!(
        store.runs().expect("runs"),
        vec![m_c, m_upper, m_a.clone(), m_b]
    );

    let text = message(store.create_run(&manifest("a", 30)));
    assert!(text.contains("`a` already exists"), "{text}");
    assert!(text.contains("mpsearch resume a"), "{text}");
    assert!(text.contains("--run"), "{text}");
    assert_eq!(
        store.run("a").expect("read"),
        Some(m_a.clone()),
        "the first run is kept"
    );

    let mut updated = m_a;
    updated.status = RunStatus::Complete;
    updated.elapsed_seconds = 99.0;
    store.put_run(&updated).expect("put_run");
    assert_eq!(store.run("a").expect("read"), Some(updated));
    assert_eq!(store.counts().expect("counts").runs, 4);
}

fn bad_run_names_are_refused<B: Backend>(b: &B) {
    let store = b.open();
    assert!(message(store.create_run(&manifest("", 1))).contains("empty"));
    assert!(message(store.create_run(&manifest("a\0b", 1))).contains("NUL"));
    assert!(message(store.trials("a\0b")).contains("NUL"));
    let text = message(store.put_trial("ghost", &trial(1, TrialState::Running)));
    assert!(text.contains("no run named `ghost`"), "{text}");
    let text = message(store.put_trials("ghost", &[trial(1, TrialState::Running)]));
    assert!(text.contains("no run named `ghost`"), "{text}");
    let text = message(store.put_snapshot("ghost", &snapshot(1)));
    assert!(text.contains("no run named `ghost`"), "{text}");
    assert!(store.trials("ghost").expect("trials").is_empty());
}

fn trials_come_back_in_number_order_and_replace<B: Backend>(b: &B) {
    let store = b.open();
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

fn put_trials_writes_a_batch_all_or_nothing<B: Backend>(b: &B) {
    let store = b.open();
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
    bad.insert(
        0,
        TrialRecord {
            schema: SCHEMA_VERSION + 1,
            ..trial(100, TrialState::Running)
        },
    );
    bad.push(trial(101, TrialState::Running));
    assert!(message(store.put_trials("r", &bad)).contains("refusing to write"));
    assert_eq!(store.trials("r").expect("trials").len(), 8);
    // Completing the batch replaces every trial of it at once.
    let done: Vec<TrialRecord> = (0..8).map(|n| trial(n, TrialState::Complete)).collect();
    store.put_trials("r", &done).expect("batch");
    assert_eq!(store.trials("r").expect("trials"), done);
}

fn cache_snapshot_and_sensitivity_round_trip_and_cache_is_shared<B: Backend>(b: &B) {
    let store = b.open();
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
    let mut changed = evaluation();
    changed.seconds = 9.0;
    let other = blake3::hash(b"other");
    store.put_cached(&other, &changed).expect("put_cached");
    let mut entries = vec![(key, evaluation()), (other, changed)];
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut listed = store.cache_entries().expect("entries");
    listed.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    assert_eq!(listed, entries);

    assert_eq!(store.snapshot("one").expect("snapshot"), None);
    store
        .put_snapshot("one", &snapshot(64))
        .expect("put_snapshot");
    assert_eq!(store.snapshot("one").expect("snapshot"), Some(snapshot(64)));
    store.put_snapshot("one", &snapshot(72)).expect("replace");
    assert_eq!(store.snapshot("one").expect("snapshot"), Some(snapshot(72)));
    assert_eq!(store.snapshot("two").expect("snapshot"), None);

    let skey = blake3::hash(b"sensitivity");
    store
        .put_sensitivity(&skey, &sensitivity_record())
        .expect("put");
    assert_eq!(
        store.sensitivity(&skey).expect("read"),
        Some(sensitivity_record())
    );
    assert_eq!(store.sensitivity(&key).expect("read"), None);
    assert_eq!(
        store.sensitivity_entries().expect("entries"),
        vec![(skey, sensitivity_record())]
    );

    let counts = store.counts().expect("counts");
    assert_eq!(
        counts,
        StoreCounts {
            runs: 2,
            cached_evaluations: 2,
            sensitivity_records: 1
        }
    );
}

fn measurements_round_trip_by_run_in_number_order_all_or_nothing<B: Backend>(b: &B) {
    let store = b.open();
    store.create_run(&manifest("r", 1)).expect("create");
    // A run whose name extends `r` must not leak into `r`'s measurements.
    store.create_run(&manifest("r2", 2)).expect("create");
    assert_eq!(store.measurements("r").expect("none yet"), vec![]);
    let all = measurements();
    // Written out of order, in two batches: read back by number.
    store
        .put_measurements("r", &[all[3].clone(), all[1].clone()])
        .expect("put");
    store
        .put_measurements("r", &[all[2].clone(), all[0].clone()])
        .expect("put");
    store
        .put_measurements("r2", &[measurement(0, MeasuredSource::Reference)])
        .expect("put");
    assert_eq!(store.measurements("r").expect("read"), all);
    assert_eq!(store.measurements("r2").expect("read").len(), 1);
    assert_eq!(store.measurements("nobody").expect("read"), vec![]);
    // Every field comes back bit for bit.
    let back = &store.measurements("r").expect("read")[1];
    assert_eq!(back.median_us.to_bits(), all[1].median_us.to_bits());
    assert_eq!(back.spread_us.to_bits(), all[1].spread_us.to_bits());
    assert_eq!(back.reference_us.to_bits(), all[1].reference_us.to_bits());
    assert_eq!(back.fastest_us, None, "an older record");
    assert_eq!(back.speedup(), all[1].reference_us / all[1].median_us);
    let newer = &store.measurements("r").expect("read")[2];
    let fastest = newer.fastest_us.expect("kept");
    assert_eq!(
        fastest.to_bits(),
        all[2].fastest_us.expect("kept").to_bits()
    );
    assert_eq!(newer.figure_us(), fastest);
    assert_eq!(
        newer.speedup(),
        newer.reference_fastest_us.expect("kept") / fastest
    );

    // One bad record (another schema) refuses the whole batch.
    let mut bad = measurement(9, MeasuredSource::Reference);
    bad.schema = SCHEMA_VERSION + 1;
    let text =
        message(store.put_measurements("r", &[measurement(8, MeasuredSource::Reference), bad]));
    assert!(
        text.contains("refusing to write run `r` measurement 9"),
        "{text}"
    );
    assert_eq!(store.measurements("r").expect("read"), all);
    // Measurements of an unknown run are refused.
    let text =
        message(store.put_measurements("ghost", &[measurement(0, MeasuredSource::Reference)]));
    assert!(text.contains("no run named `ghost`"), "{text}");

    // Durable: they survive closing and reopening.
    drop(store);
    let store = b.open();
    assert_eq!(store.measurements("r").expect("read"), all);

    // Another version, and damage, are clear errors naming the measurement.
    let mut other = measurement(4, MeasuredSource::Reference);
    other.schema = SCHEMA_VERSION + 1;
    b.raw_put(
        &store,
        Raw::Measurement("r", 4),
        &serde_json::to_vec(&other).expect("json"),
    );
    let text = message(store.measurements("r"));
    assert!(
        text.contains("run `r` measurement 4 was written by another mpsearch version"),
        "{text}"
    );
    b.raw_put(
        &store,
        Raw::Measurement("r", 4),
        br#"{"schema":1,"number":"x"}"#,
    );
    let text = message(store.measurements("r"));
    assert!(
        text.contains("run `r` measurement 4 cannot be decoded"),
        "{text}"
    );
    assert!(b.raw_get(&store, Raw::Measurement("r", 4)).is_some());
}

fn held_out_evaluations_are_read_back_by_split_key<B: Backend>(b: &B) {
    use crate::eval::{evaluation_key_on, EvalSplit};
    let store = b.open();
    let (m, trials, q) = held_out_run(&store);
    let fingerprint = blake3::Hash::from_hex(&m.fingerprints.evaluator).expect("hex");
    let hash = |t: &TrialRecord| blake3::Hash::from_hex(&t.hash).expect("hex");
    // Trial 1's search-split evaluation is in the cache too: it is not a held-out one.
    let search_key = evaluation_key_on(&fingerprint, EvalSplit::Search, &hash(&trials[1]));
    store
        .put_cached(&search_key, &held_out_evaluation(0.25))
        .expect("put_cached");
    assert_eq!(
        held_out_key(&m, &trials[0]),
        Some(evaluation_key_on(
            &fingerprint,
            EvalSplit::HeldOut,
            &hash(&trials[0])
        ))
    );
    drop(store);
    let store = b.open();

    let read = |t: &TrialRecord| held_out(&store, &m, t).expect("held_out");
    let h0 = read(&trials[0]).expect("trial 0 has a held-out evaluation");
    assert_eq!(h0.quality.to_bits(), q[0].to_bits());
    assert_eq!(h0.metrics, held_out_evaluation(q[0]).metrics);
    assert_eq!(read(&trials[1]), None);
    assert_eq!(
        read(&trials[2]).map(|h| h.quality.to_bits()),
        Some(q[1].to_bits())
    );
    // Another evaluator (other data or settings) has no held-out figures; a damaged hash neither.
    let mut other = m.clone();
    other.fingerprints.evaluator = blake3::hash(b"other evaluator").to_hex().to_string();
    assert_eq!(held_out(&store, &other, &trials[0]).expect("read"), None);
    let mut damaged = trials[0].clone();
    damaged.hash = "not hex".into();
    assert_eq!(held_out(&store, &m, &damaged).expect("read"), None);

    let front: Vec<&TrialRecord> = trials.iter().collect();
    let (held, gap) = front_held_out(&store, &m, &front).expect("front_held_out");
    assert_eq!(
        held.iter()
            .map(|h| h.as_ref().map(|h| h.quality))
            .collect::<Vec<_>>(),
        vec![Some(q[0]), None, Some(q[1])]
    );
    let gap = gap.expect("two points have a held-out quality");
    let s = |n: usize| trials[n].quality.expect("complete");
    assert_eq!((gap.points, gap.missing), (2, 1));
    assert_eq!(gap.mean, ((q[0] - s(0)) + (q[1] - s(2))) / 2.0);
    let (worst_trial, worst) = if q[0] - s(0) > q[1] - s(2) {
        (0, q[0] - s(0))
    } else {
        (2, q[1] - s(2))
    };
    assert_eq!((gap.worst_trial, gap.worst), (worst_trial, worst));
    assert_eq!(gap.mean_held_out, (q[0] + q[1]) / 2.0);
    assert_eq!(
        front_held_out(&store, &other, &front).expect("read").1,
        None
    );
}

fn data_survives_drop_and_reopen<B: Backend>(b: &B) {
    let key = blake3::hash(b"k");
    {
        let store = b.open();
        store.create_run(&manifest("r", 1)).expect("create");
        store.put_cached(&key, &evaluation()).expect("cache");
        store
            .put_trial("r", &trial(3, TrialState::Complete))
            .expect("put");
        store.put_snapshot("r", &snapshot(4)).expect("snapshot");
    }
    // Closing and reopening at once works, however often (sled releases its lock lazily).
    for _ in 0..10 {
        drop(b.open());
    }
    let store = b.open();
    assert_eq!(store.run("r").expect("run"), Some(manifest("r", 1)));
    assert_eq!(
        store.trials("r").expect("trials"),
        vec![trial(3, TrialState::Complete)]
    );
    assert_eq!(store.cached(&key).expect("cached"), Some(evaluation()));
    assert_eq!(store.snapshot("r").expect("snapshot"), Some(snapshot(4)));
}

fn concurrent_writers_lose_nothing<B: Backend>(b: &B) {
    let store = b.open();
    store.create_run(&manifest("r", 1)).expect("create");
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let store = &store;
            s.spawn(move || {
                for i in 0..10 {
                    store
                        .put_trial("r", &trial(t * 10 + i, TrialState::Complete))
                        .expect("put");
                    store
                        .put_cached(&blake3::hash(&(t * 10 + i).to_le_bytes()), &evaluation())
                        .expect("cache");
                    let _ = store.trials("r").expect("read while others write");
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
    assert_eq!(store.counts().expect("counts").cached_evaluations, 40);
}

fn a_locked_run_is_listed_as_driven_by_this_process<B: Backend>(b: &B) {
    let store = b.open();
    store.create_run(&manifest("r", 1)).expect("create");
    store.create_run(&manifest("left", 2)).expect("create");
    assert_eq!(store.controllers().expect("controllers"), vec![]);
    store.lock_run("r").expect("lock");
    store.lock_run("r").expect("locking again is a no-op");
    let driven = store.controllers().expect("controllers");
    assert_eq!(driven.len(), 1, "{driven:?}");
    assert_eq!(driven[0].run, "r");
    assert_eq!(driven[0].pid, std::process::id());
    assert_eq!(driven[0].host, host_name());
    assert!(driven[0].since_unix + 60 > now_unix(), "{driven:?}");
    // Both manifests say `running`; only the driven one is listed so.
    let runs = store.runs().expect("runs");
    let status: Vec<RunStatus> = runs.iter().map(|m| live_status(m, &driven)).collect();
    assert_eq!(status, vec![RunStatus::Running, RunStatus::Interrupted]);
    assert!(message(store.lock_run("")).contains("empty"));
    drop(store);
    let store = b.open();
    assert_eq!(
        store.controllers().expect("controllers"),
        vec![],
        "a closed handle drives nothing"
    );
}

fn other_schema_version_is_a_clear_error<B: Backend>(b: &B) {
    let store = b.open();
    store.create_run(&manifest("r", 1)).expect("create");

    // Same layout, another version.
    let mut old = trial(5, TrialState::Complete);
    old.schema = SCHEMA_VERSION + 1;
    let text = message(store.put_trial("r", &old));
    assert!(text.contains("refusing to write run `r` trial 5"), "{text}");
    let bytes = serde_json::to_vec(&old).expect("json");
    b.raw_put(&store, Raw::Trial("r", 5), &bytes);
    let text = message(store.trials("r"));
    let want = format!(
        "run `r` trial 5 was written by another mpsearch version (record schema {}; this mpsearch reads schema {SCHEMA_VERSION})",
        SCHEMA_VERSION + 1
    );
    assert!(text.contains(&want), "{text}");

    // Another layout altogether: the version is still found and named.
    b.raw_put(&store, Raw::Run("future"), br#"{"schema":7,"title":"x"}"#);
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

fn reads_and_rewrites_a_schema_1_manifest_byte_for_byte<B: Backend>(b: &B) {
    let store = b.open();
    let name = "demo-cortex-a76-1";
    b.raw_put(&store, Raw::Run(name), MANIFEST_SCHEMA_1.as_bytes());
    let m = store.run(name).expect("read").expect("the run is there");
    assert_eq!(m.config.strategy, StrategyKind::Evolution);
    assert_eq!(m.config.objective, Objective::Bops);
    assert_eq!(m.config.scale, ScaleMethod::MinMax);
    assert_eq!(m.fingerprints.evaluator, "bb".repeat(32));
    assert_eq!(m.fingerprints.model, "aa".repeat(32));
    assert_eq!(m.fingerprints.profile, "dd".repeat(32));
    assert_eq!(m.fingerprints.space, "cc".repeat(32));
    // Written back, it is the same bytes: the typed fields keep the layout on disk.
    store.put_run(&m).expect("put");
    let raw = b.raw_get(&store, Raw::Run(name)).expect("raw value");
    assert_eq!(std::str::from_utf8(&raw).expect("utf-8"), MANIFEST_SCHEMA_1);
    // A name no strategy, objective or scale has is damage, named as such.
    for (field, bad) in [
        (r#""strategy":"evolution""#, r#""strategy":"annealing""#),
        (r#""objective":"bops""#, r#""objective":"energy""#),
        (r#""scale":"minmax""#, r#""scale":"percentile""#),
    ] {
        b.raw_put(
            &store,
            Raw::Run("bad"),
            MANIFEST_SCHEMA_1.replace(field, bad).as_bytes(),
        );
        let text = message(store.run("bad"));
        assert!(
            text.contains("run `bad` cannot be decoded"),
            "{field}: {text}"
        );
    }
}

fn damaged_values_are_clear_errors<B: Backend>(b: &B) {
    let store = b.open();
    store.create_run(&manifest("r", 1)).expect("create");
    store
        .put_trial("r", &trial(1, TrialState::Complete))
        .expect("put");
    b.raw_put(&store, Raw::Trial("r", 42), br#"{"schema":1,"number":"x"}"#);
    let text = message(store.trials("r"));
    assert!(
        text.contains("run `r` trial 42 cannot be decoded"),
        "{text}"
    );
    assert!(text.contains(&b.location()), "{text}");

    // Valid JSON of the right version but a missing field is damage too, not a version problem.
    let key = blake3::hash(b"k");
    let partial = format!(r#"{{"schema":{SCHEMA_VERSION},"objective":"kl"}}"#);
    b.raw_put(&store, Raw::Cache(&key), partial.as_bytes());
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
/// flush. Debug builds of this crate are slower than release; the figures are an upper bound. The
/// criterion bench `store` measures put_trial in a release build.
fn timings<B: Backend>(b: &B) {
    const TRIALS: u64 = 10_000;
    const FLUSHED: u32 = 50;
    let store = b.open();
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
    assert_eq!(back.len() as u64, TRIALS);

    let start = Instant::now();
    for n in 0..FLUSHED {
        store
            .put_trial("r", &trial(TRIALS + u64::from(n), TrialState::Complete))
            .expect("put");
    }
    let per_trial = start.elapsed() / FLUSHED;
    eprintln!(
        "store timings ({}): {TRIALS} trials ({bytes} bytes each as JSON) written in one batch in {write:?}, \
         read back in {read:?}; put_trial + flush {per_trial:?} each (mean of {FLUSHED})",
        store.location()
    );
}

fn recovered(key: &str, trial: u64) -> RecoveredRecord {
    RecoveredRecord {
        schema: SCHEMA_VERSION,
        key: key.into(),
        trial,
        hash: "ab".into(),
        recipe: RecoverRecipe {
            epochs: 2,
            lr: 1e-3,
            batch: 64,
            alpha: 0.5,
            temperature: 4.0,
            loss: "cosine".into(),
            seed: 1,
            data: "digits".into(),
            data_fingerprint: "00".into(),
        },
        state: RecoveredState::Complete,
        steps: 40,
        total_steps: 40,
        best_step: 40,
        validation_loss: 0.1,
        initial_validation_loss: 1.0,
        validation: "calibration".into(),
        quality: 0.01,
        metrics: [("accuracy".to_string(), 0.97)].into(),
        held_out_quality: Some(0.02),
        held_out_metrics: BTreeMap::new(),
        before_held_out_quality: Some(0.2),
        before_held_out_metrics: BTreeMap::new(),
        scale: ScaleMethod::Mse,
        rounding: crate::compress::Rounding::Rtn,
        weights: blake3::hash(b"w").to_hex().to_string(),
        seconds: 1.5,
        threads: 2,
        created_unix: 1,
    }
}

fn recovered_variants_and_blobs_round_trip_and_replace_by_key<B: Backend>(b: &B) {
    let store = b.open();
    store.create_run(&manifest("r", 10)).expect("create");
    store.create_run(&manifest("other", 10)).expect("create");
    assert_eq!(store.recovered("r").expect("read"), Vec::new());
    let text = message(store.put_recovered("nope", &recovered("k", 1)));
    assert!(text.contains("no run named `nope`"), "{text}");
    let (k2, k1) = (recovered("k2", 5), recovered("k1", 3));
    store.put_recovered("r", &k2).expect("put");
    store.put_recovered("r", &k1).expect("put");
    assert_eq!(
        store.recovered("r").expect("read"),
        vec![k1.clone(), k2.clone()]
    );
    assert_eq!(store.recovered("other").expect("read"), Vec::new());
    let mut interrupted = k2.clone();
    interrupted.state = RecoveredState::Interrupted;
    store.put_recovered("r", &interrupted).expect("replace");
    assert_eq!(store.recovered("r").expect("read"), vec![k1, interrupted]);

    let key = blake3::hash(b"w");
    assert_eq!(store.blob(&key).expect("read"), None);
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    store.put_blob(&key, &bytes).expect("put blob");
    assert_eq!(store.blob(&key).expect("read"), Some(bytes));
    store.put_blob(&key, b"again").expect("replace blob");
    assert_eq!(store.blob(&key).expect("read"), Some(b"again".to_vec()));
    drop(store);
    let store = b.open();
    assert_eq!(store.recovered("r").expect("reopened").len(), 2);
    assert!(store.blob(&key).expect("reopened").is_some());
}
