//! What only the PostgreSQL backend has: several handles (and processes) share one database, each
//! run has one controller at a time — released when its process dies —, readers never wait, the
//! tables carry a version (and older ones are migrated), and a server that cannot be reached is a
//! clear error.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::*;
use crate::error::Error;

/// The environment variable that makes [`lock_probe_child`] lock a run (in a child process).
const PROBE_ENV: &str = "MPSEARCH_PG_LOCK_PROBE_URL";
/// What the child prints once it holds the run.
const LOCKED: &str = "PROBE-LOCKED";

#[test]
fn a_second_controller_of_a_run_is_told_who_drives_it_and_readers_do_not_wait() {
    let Some(b) = PgBackend::new() else { return };
    let first = b.open();
    let second = b.open();
    first.create_run(&manifest("r", 1)).expect("create");
    first.lock_run("r").expect("the first controller");
    first
        .put_trial("r", &trial(0, TrialState::Complete))
        .expect("the controller writes");

    let err = second.lock_run("r").expect_err("a second controller");
    match &err {
        Error::RunInUse(holder) => {
            assert_eq!(holder.run, "r");
            assert_eq!(holder.location, b.location());
            assert_eq!(holder.pid, std::process::id().to_string());
            assert_eq!(holder.host, host_name());
            assert!(holder.since.ends_with("UTC"), "{holder:?}");
        }
        other => panic!("expected RunInUse, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "run `r` of store {} is being driven by pid {} on host {}",
            b.location(),
            std::process::id(),
            host_name()
        )),
        "{text}"
    );

    // Readers read while the run is driven, and other runs can be driven at the same time.
    assert_eq!(second.trials("r").expect("read").len(), 1);
    assert_eq!(second.runs().expect("runs").len(), 1);
    second.create_run(&manifest("other", 2)).expect("create");
    second.lock_run("other").expect("another run");
    let driven: Vec<String> = second
        .controllers()
        .expect("controllers")
        .into_iter()
        .map(|c| c.run)
        .collect();
    assert_eq!(driven, vec!["other".to_string(), "r".to_string()]);

    // Once the first handle is gone, its run can be driven again.
    drop(first);
    second.lock_run("r").expect("free again");
}

/// Run by [`a_killed_controller_releases_its_run`] in a child process (a no-op otherwise): locks run
/// `r` of the database named by [`PROBE_ENV`], says so, and waits to be killed.
#[test]
fn lock_probe_child() {
    let Ok(url) = std::env::var(PROBE_ENV) else {
        return;
    };
    let store = PostgresStore::connect(&url).expect("connect");
    store.lock_run("r").expect("lock");
    println!("{LOCKED}");
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn a_killed_controller_releases_its_run() {
    let Some(b) = PgBackend::new() else { return };
    let store = b.open();
    store.create_run(&manifest("r", 1)).expect("create");
    let mut child = Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--exact",
            "store::tests::postgres_only::lock_probe_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROBE_ENV, &b.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run the test binary again");
    let stdout = child.stdout.take().expect("piped");
    let locked = BufReader::new(stdout)
        .lines()
        .map_while(std::result::Result::ok)
        .any(|l| l.contains(LOCKED));
    assert!(locked, "the child never locked the run");
    let text = message(store.lock_run("r"));
    assert!(
        text.contains(&format!("driven by pid {}", child.id())),
        "{text}"
    );
    assert_eq!(store.controllers().expect("controllers").len(), 1);

    child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix.
    child.wait().expect("reap");
    // The server drops the dead connection and its lock (at once on a Unix socket; give it time).
    let start = Instant::now();
    loop {
        match store.lock_run("r") {
            Ok(()) => break,
            Err(e) if start.elapsed() < Duration::from_secs(20) => {
                assert!(matches!(e, Error::RunInUse { .. }), "{e}");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("the killed controller's lock was never released: {e}"),
        }
    }
    let driven = store.controllers().expect("controllers");
    assert_eq!(driven.len(), 1);
    assert_eq!(driven[0].pid, std::process::id());
}

#[test]
fn tables_are_versioned_and_a_newer_database_is_refused() {
    let Some(b) = PgBackend::new() else { return };
    drop(b.open());
    let mut c = b.client();
    let versions: Vec<i32> = c
        .query(
            "SELECT version FROM mpsearch_schema_migrations ORDER BY version",
            &[],
        )
        .expect("versions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        versions,
        (1..=super::super::postgres::STORE_SCHEMA).collect::<Vec<_>>()
    );
    // Opening again changes nothing.
    fill(&b.open());
    drop(b.open());
    let n: i64 = c
        .query_one("SELECT count(*) FROM mpsearch_schema_migrations", &[])
        .expect("count")
        .get(0);
    assert_eq!(n, i64::from(super::super::postgres::STORE_SCHEMA));

    c.execute(
        "INSERT INTO mpsearch_schema_migrations (version, description) VALUES (99, 'from the future')",
        &[],
    )
    .expect("insert");
    let text = message(PostgresStore::connect(&b.url));
    assert!(
        text.contains(&format!(
            "newer mpsearch (store schema 99; this mpsearch knows up to {})",
            super::super::postgres::STORE_SCHEMA
        )),
        "{text}"
    );
}

/// The tables of version 1 as mpsearch wrote them before measurements (a copy of its first migration:
/// migrations are never edited, so this is what older databases hold).
const TABLES_1: &str = "
CREATE TABLE mpsearch_schema_migrations (
    version integer PRIMARY KEY,
    description text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE mpsearch_runs (name text PRIMARY KEY, created_unix bigint NOT NULL, record json NOT NULL);
CREATE TABLE mpsearch_trials (
    run text NOT NULL REFERENCES mpsearch_runs (name) ON DELETE CASCADE,
    number bigint NOT NULL, state text NOT NULL, record json NOT NULL, PRIMARY KEY (run, number));
CREATE TABLE mpsearch_cache (key bytea PRIMARY KEY, record json NOT NULL);
CREATE TABLE mpsearch_snapshots (
    run text PRIMARY KEY REFERENCES mpsearch_runs (name) ON DELETE CASCADE, record json NOT NULL);
CREATE TABLE mpsearch_sensitivity (key bytea PRIMARY KEY, record json NOT NULL);
CREATE TABLE mpsearch_controllers (
    run text PRIMARY KEY, pid bigint NOT NULL, host text NOT NULL, since_unix bigint NOT NULL,
    backend_pid integer NOT NULL, lock_hi bigint NOT NULL, lock_lo bigint NOT NULL);
INSERT INTO mpsearch_schema_migrations (version, description)
    VALUES (1, 'runs, trials, evaluation cache, snapshots, sensitivity analyses, run controllers');
";

#[test]
fn a_version_1_database_is_migrated_and_keeps_its_records() {
    let Some(b) = PgBackend::new() else { return };
    let mut c = b.client();
    c.batch_execute(TABLES_1).expect("version 1 tables");
    // A run and a trial written by the older mpsearch.
    let m = manifest("old", 1);
    let t = trial(0, TrialState::Complete);
    c.execute(
        "INSERT INTO mpsearch_runs (name, created_unix, record) VALUES ($1, 1, $2::text::json)",
        &[&"old", &serde_json::to_string(&m).expect("json")],
    )
    .expect("run");
    c.execute(
        "INSERT INTO mpsearch_trials (run, number, state, record) VALUES ($1, 0, 'complete', $2::text::json)",
        &[&"old", &serde_json::to_string(&t).expect("json")],
    )
    .expect("trial");

    let store = b.open();
    let versions: Vec<i32> = c
        .query(
            "SELECT version FROM mpsearch_schema_migrations ORDER BY version",
            &[],
        )
        .expect("versions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        versions,
        (1..=super::super::postgres::STORE_SCHEMA).collect::<Vec<_>>()
    );
    assert_eq!(store.recovered("old").expect("none yet"), vec![]);
    assert_eq!(store.run("old").expect("run"), Some(m));
    assert_eq!(store.trials("old").expect("trials"), vec![t]);
    // The new table is there, and tied to its run.
    assert_eq!(store.measurements("old").expect("none yet"), vec![]);
    store
        .put_measurements("old", &measurements())
        .expect("measure the old run");
    assert_eq!(store.measurements("old").expect("read"), measurements());
    c.execute("DELETE FROM mpsearch_runs WHERE name = 'old'", &[])
        .expect("delete");
    let left: i64 = c
        .query_one("SELECT count(*) FROM mpsearch_measurements", &[])
        .expect("count")
        .get(0);
    assert_eq!(left, 0, "a run's measurements go with it");
}

#[test]
fn first_opens_at_the_same_time_create_the_tables_once() {
    let Some(b) = PgBackend::new() else { return };
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| PostgresStore::connect(&b.url).map(drop)))
            .collect();
        for h in handles {
            h.join().expect("no panic").expect("every open succeeds");
        }
    });
    let n: i64 = b
        .client()
        .query_one("SELECT count(*) FROM mpsearch_schema_migrations", &[])
        .expect("count")
        .get(0);
    assert_eq!(n, i64::from(super::super::postgres::STORE_SCHEMA));
}

#[test]
fn an_unreachable_server_is_a_clear_error_without_the_password() {
    let dir = tempfile::tempdir().expect("a temp folder");
    let host = dir.path().display().to_string().replace('/', "%2F");
    let url = format!("postgres://me:s3cret@{host}/db");
    let text = message(PostgresStore::connect(&url));
    assert!(
        text.contains(&format!("store postgres://me@{host}/db: cannot connect")),
        "{text}"
    );
    assert!(text.contains("Is the server running"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
}

/// The evaluation queue: each task goes to one claimant (`SKIP LOCKED`), in the order enqueued, never
/// from a skipped run; a claim kept alive by heartbeats stays, one whose heartbeat lapsed goes to
/// another worker, and the first to finish wins (a late result is dropped); the controller takes the
/// finished trials once; a released task is claimable again; `workers` says who did what.
#[test]
fn the_queue_hands_each_task_to_one_worker_and_a_lapsed_claim_to_another() {
    let Some(b) = PgBackend::new() else { return };
    let store = b.open();
    let q = store.queue().expect("a PostgreSQL store has a queue");
    store.create_run(&manifest("r", 1)).expect("run");
    store.create_run(&manifest("other", 2)).expect("run");
    let running: Vec<TrialRecord> = (0..3).map(|n| trial(n, TrialState::Running)).collect();
    q.enqueue("r", &running).expect("enqueue");
    q.enqueue("other", &running[..1]).expect("enqueue");
    // Enqueued again (a restarted controller): nothing changes.
    q.enqueue("r", &running).expect("enqueue again");
    let (a, z) = (
        WorkerId::this_process(),
        WorkerId {
            id: "elsewhere:1:0".into(),
            host: "elsewhere".into(),
            pid: 1,
        },
    );
    let lease = Duration::from_secs(60);
    let short = Duration::from_secs(1);
    let skip = vec!["other".to_string()];
    // `a` claims with a short lease, `z` with a long one: each claim lapses by its own.
    let first = q.claim(&a, &skip, short).expect("claim").expect("a task");
    let second = q.claim(&z, &skip, lease).expect("claim").expect("a task");
    assert_eq!((first.run.as_str(), first.trial.number), ("r", 0));
    assert_eq!((second.run.as_str(), second.trial.number), ("r", 1));
    assert_eq!(first.trial, running[0]);
    // Released, trial 1 is claimable again (before trial 2: enqueued first).
    q.release(&z, "r", 1).expect("release");
    assert_eq!(q.claim(&z, &skip, lease).unwrap().unwrap().trial.number, 1);
    assert_eq!(q.claim(&z, &skip, lease).unwrap().unwrap().trial.number, 2);
    assert!(
        q.claim(&z, &skip, lease).unwrap().is_none(),
        "only `other` is left"
    );
    // A claim whose heartbeat is older than its lease goes to another worker; `z`'s, of a longer
    // lease, do not.
    q.heartbeat(&a).expect("beat");
    std::thread::sleep(Duration::from_millis(1200));
    let retaken = q
        .claim(&z, &skip, short)
        .expect("claim")
        .expect("a lapsed claim");
    assert_eq!(retaken.trial.number, 0);
    assert!(
        q.claim(&a, &skip, short).unwrap().is_none(),
        "z's claims hold"
    );
    // Kept alive, a claim of a short lease is not taken over either.
    std::thread::sleep(Duration::from_millis(700));
    q.heartbeat(&z).expect("beat");
    std::thread::sleep(Duration::from_millis(700));
    assert!(q.claim(&a, &skip, short).unwrap().is_none());
    // The first to finish wins.
    let mut done = running[0].clone();
    done.state = TrialState::Complete;
    done.quality = Some(0.25);
    assert!(q.finish(&z, "r", &done).expect("finish"));
    assert!(!q.finish(&a, "r", &done).expect("a late finish"));
    let finished = q.finished("r", &[0, 1, 2]).expect("finished");
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0].trial, done);
    assert_eq!(finished[0].worker, z.id);
    q.taken("r", &[0]).expect("taken");
    assert!(q.finished("r", &[0]).unwrap().is_empty(), "taken once");
    // Who did what: z finished one and holds two claims (trials 1 and 2).
    let seen = q.workers(Some("r")).expect("workers");
    let z_seen = seen.iter().find(|w| w.id == z.id).expect("z");
    assert_eq!((z_seen.finished, z_seen.claims), (1, 2));
    assert!(q.workers(Some("other")).unwrap().is_empty());
    // Withdrawn (its controller evaluates locally now): the unfinished tasks go, and a late finish
    // is dropped.
    q.withdraw("r").expect("withdraw");
    assert!(q
        .claim(&a, &[], lease)
        .unwrap()
        .is_some_and(|t| t.run == "other"));
    let mut late = running[2].clone();
    late.state = TrialState::Failed;
    assert!(!q.finish(&z, "r", &late).expect("a withdrawn task's finish"));
    // A trial of a run that does not exist is refused by the database.
    let err = q.enqueue("nobody", &running[..1]).unwrap_err().to_string();
    assert!(err.contains("there is no run named `nobody`"), "{err}");
}
