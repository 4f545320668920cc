//! Store benchmarks, on sled and on PostgreSQL (the server `MPSEARCH_TEST_POSTGRES` names; start one
//! with `bash scripts/test-postgres.sh start` and export its URL, or run
//! `bash scripts/test-postgres.sh run cargo bench --bench store`):
//!
//! - `put_trial`: one trial journaled and durable (sled: flush + fdatasync; PostgreSQL: a committed
//!   transaction);
//! - `batch_of_8`: what the search controller writes for one batch of 8 trials — the batch journaled
//!   as `running` (`put_trials`), each evaluation cached and its trial journaled (`put_cached` +
//!   `put_trial`), the strategy snapshot and the manifest (which also rewrites sled's live view). Its
//!   time over 8 is the store's overhead per trial of a search.
//!
//! Records are demo-sized (a 12-group point, a trial of ~600 bytes as JSON). PostgreSQL numbers
//! include the round trips over a Unix socket to a server on this machine, with its default
//! `synchronous_commit = on` and `fsync = on`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{criterion_group, criterion_main, Criterion};
use mpsearch::store::{
    CachedEvaluation, CostRecord, PostgresStore, RunConfig, RunManifest, RunStatus, SledStore,
    Snapshot, Store, TrialRecord, TrialState, SCHEMA_VERSION,
};

fn manifest() -> RunManifest {
    RunManifest {
        schema: SCHEMA_VERSION,
        name: "bench".into(),
        created_unix: 1,
        status: RunStatus::Running,
        elapsed_seconds: 0.0,
        config: RunConfig::default(),
        reference: [40.0, 0.1],
        fingerprints: Default::default(),
        splits: None,
        setup: None,
        setup_seconds: None,
        evaluations: None,
    }
}

fn trial(number: u64, state: TrialState) -> TrialRecord {
    let hash = blake3::hash(&number.to_le_bytes()).to_hex().to_string();
    TrialRecord {
        schema: SCHEMA_VERSION,
        number,
        strategy: "bayes".into(),
        state,
        point: vec![3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8],
        assignment: mpsearch::space::AssignmentJson {
            default: Some("int4-asym-g32".into()),
            layers: BTreeMap::from([
                ("conv1".to_string(), "int8-sym-channel".to_string()),
                ("conv2".to_string(), "int4-asym-g32+2:4".to_string()),
                ("fc1".to_string(), "int8-sym-channel+rank50".to_string()),
                ("fc2".to_string(), "f16".to_string()),
            ]),
        },
        key: hash.clone(),
        hash,
        quality: Some(1.234e-4),
        metrics: BTreeMap::from([
            ("accuracy".to_string(), 0.98),
            ("accuracy_drop".to_string(), 0.0),
            ("cross_entropy".to_string(), 0.065),
            ("kl_divergence".to_string(), 1.234e-4),
        ]),
        error: None,
        cost: CostRecord {
            latency_us: 17.4,
            bytes: 72_000,
            bops: 4.4e7,
        },
        cached: false,
        seconds: 0.02,

        proxy: None,
        batch: None,
    }
}

fn evaluation() -> CachedEvaluation {
    CachedEvaluation {
        schema: SCHEMA_VERSION,
        objective: "kl_divergence".into(),
        quality: 1.234e-4,
        metrics: trial(0, TrialState::Complete).metrics,
        seconds: 0.02,
    }
}

/// The store's writes for one batch of 8 trials starting at `first`.
fn batch(store: &dyn Store, m: &RunManifest, first: u64) {
    let running: Vec<TrialRecord> = (first..first + 8)
        .map(|n| trial(n, TrialState::Running))
        .collect();
    store.put_trials("bench", &running).expect("put_trials");
    for n in first..first + 8 {
        store
            .put_cached(&blake3::hash(&n.to_be_bytes()), &evaluation())
            .expect("put_cached");
        store
            .put_trial("bench", &trial(n, TrialState::Complete))
            .expect("put_trial");
    }
    store
        .put_snapshot(
            "bench",
            &Snapshot {
                schema: SCHEMA_VERSION,
                strategy: "bayes".into(),
                trials: first + 8,
                state: "{\"rng\":[1,2,3,4]}".into(),
            },
        )
        .expect("put_snapshot");
    store.put_run(m).expect("put_run");
}

fn bench_backend(c: &mut Criterion, name: &str, store: &dyn Store) {
    let m = manifest();
    store.create_run(&m).expect("create_run");
    store.lock_run("bench").expect("lock_run");
    let next = AtomicU64::new(0);
    let mut g = c.benchmark_group(format!("store_{name}"));
    g.sample_size(30);
    g.bench_function("put_trial", |b| {
        b.iter(|| {
            let n = next.fetch_add(1, Ordering::Relaxed);
            store
                .put_trial("bench", black_box(&trial(n, TrialState::Complete)))
                .expect("put_trial");
        })
    });
    g.bench_function("batch_of_8", |b| {
        b.iter(|| {
            let first = next.fetch_add(8, Ordering::Relaxed);
            batch(store, &m, first);
        })
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let sled = SledStore::open(dir.path()).expect("sled store");
        bench_backend(c, "sled", &sled);
    }
    let Some(admin) = std::env::var("MPSEARCH_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!(
            "SKIPPED: the PostgreSQL store bench: MPSEARCH_TEST_POSTGRES is not set \
             (bash scripts/test-postgres.sh run cargo bench --bench store)"
        );
        return;
    };
    let db = format!("mpsearch_bench_{}", std::process::id());
    let mut client = postgres::Client::connect(&admin, postgres::NoTls).expect("connect");
    client
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .expect("create database");
    let url = match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{db}"),
        None => panic!("MPSEARCH_TEST_POSTGRES={admin} names no database"),
    };
    {
        let pg = PostgresStore::connect(&url).expect("postgres store");
        bench_backend(c, "postgres", &pg);
    }
    client
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .expect("drop database");
}

criterion_group!(benches, bench);
criterion_main!(benches);
