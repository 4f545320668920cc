//! # The PostgreSQL store
//!
//! [`PostgresStore`]: the [`Store`] backend that several processes, on several machines, share — one
//! PostgreSQL database, reached by a `postgres://` URL through the synchronous `postgres` client
//! (no TLS: a store server is reached over a Unix socket, the loopback address or a tunnel). Records
//! are the same serde JSON the sled backend stores ([`super::codec`]), kept byte for byte in `json`
//! columns, so a record reads back exactly as it was written and SQL can still look inside it.
//!
//! Tables (all named `mpsearch_…`, so the database can hold other things):
//! - `mpsearch_schema_migrations(version, description, applied_at)`: the versions of the tables
//!   applied so far. Opening a store applies the missing [`MIGRATIONS`] in order, in one transaction
//!   under a transaction-scoped advisory lock (so two processes opening a fresh database at once do
//!   not race), and refuses a database migrated by a newer mpsearch;
//! - `mpsearch_runs(name, created_unix, record)`: run name → [`RunManifest`];
//! - `mpsearch_trials(run, number, state, record)`: the journal, keyed by (run, number); `state`
//!   repeats the record's state so that SQL (and, later, workers claiming evaluations) can select on
//!   it;
//! - `mpsearch_cache(key, record)`: 32-byte content key → [`CachedEvaluation`];
//! - `mpsearch_snapshots(run, record)`: run → [`Snapshot`];
//! - `mpsearch_sensitivity(key, record)`: 32-byte key → [`SensitivityRecord`];
//! - `mpsearch_measurements(run, number, record)`: a run's end-to-end latency measurements, keyed by
//!   (run, number) → [`MeasurementRecord`] (added by version 2 of the tables);
//! - `mpsearch_controllers(run, pid, host, since_unix, backend_pid, lock_hi, lock_lo)`: who took each
//!   run's lock last (see below).
//!
//! - `mpsearch_tasks(run, number, state, record, worker, heartbeat, lease, enqueued)`: the
//!   evaluation queue of `mpsearch worker` processes ([`Queue`], in `postgres/queue.rs`; added by
//!   version 3): a trial enqueued `pending`, `claimed` by a worker (who, its last heartbeat, and its
//!   lease in seconds: the claim lapses when its heartbeat is older), `finished` (the finished trial
//!   in `record`), then `taken` once its controller journaled it (`record` dropped);
//! - `mpsearch_workers(id, host, pid, heartbeat)`: every worker seen, and its last heartbeat.
//!
//! Trials, snapshots, measurements, tasks and controllers of a run refer to its row, so writing the
//! trial of an unknown run is refused by the database itself.
//!
//! **Durability.** Every write is one transaction, committed before the method returns, with the
//! server's `synchronous_commit` (on by default: the commit waits for the WAL flush). Cache and
//! sensitivity writes commit with `synchronous_commit` off, as the trait allows: they become durable
//! with the next synchronous commit, which flushes the WAL up to and past them.
//!
//! **One controller per run.** [`Store::lock_run`] takes the session-level advisory lock
//! `pg_try_advisory_lock(K)`, K a 64-bit hash of the current schema and the run name, and records the
//! caller's pid and host (and the lock's key) in `mpsearch_controllers`. PostgreSQL releases the lock
//! when the connection ends — the store is dropped, or its process exits or dies — so a killed search
//! never leaves its run locked; a lost machine's lock goes when the server notices the dead connection
//! (TCP keepalives). A second `lock_run` of the run fails with [`Error::RunInUse`] naming the holder
//! from that table. [`Store::controllers`] lists the rows whose lock is really held (`pg_locks`), so a
//! row left by a dead process is never shown as driving. Reading takes no lock and never waits.
//!
//! The connection is one [`Client`] behind a mutex: calls from several threads are serialised, each
//! call atomic. A connection that breaks (the server restarted) is an error on the next call; the run
//! is then resumed (its lock went with the connection).

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use ::postgres::error::SqlState;
use ::postgres::{Client, NoTls, Statement};

use super::codec::{decode, encode, key_what, measurement_what, trial_what, Record};
use super::{
    check_run_name, host_name, now_unix, CachedEvaluation, Controller, MeasurementRecord, Queue,
    RecoveredRecord, RunManifest, SensitivityRecord, Snapshot, Store, StoreCounts, TrialRecord,
};
use crate::error::{Error, Result, RunHolder};

mod queue;

/// The version of the tables this mpsearch writes: the last of [`MIGRATIONS`].
pub const STORE_SCHEMA: i32 = 4;

/// One step of the tables' history: applied once, in order, when a store is opened.
struct Migration {
    version: i32,
    description: &'static str,
    sql: &'static str,
}

/// Every version of the tables so far. A later mpsearch appends (never edits) steps.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description:
            "runs, trials, evaluation cache, snapshots, sensitivity analyses, run controllers",
        sql: SCHEMA_1,
    },
    Migration {
        version: 2,
        description: "end-to-end latency measurements",
        sql: SCHEMA_2,
    },
    Migration {
        version: 3,
        description: "the evaluation queue of workers, and the workers seen",
        sql: SCHEMA_3,
    },
    Migration {
        version: 4,
        description: "recovered variants of points (mpsearch recover) and their weight blobs",
        sql: SCHEMA_4,
    },
];

const SCHEMA_1: &str = "
CREATE TABLE mpsearch_runs (
    name text PRIMARY KEY,
    created_unix bigint NOT NULL,
    record json NOT NULL
);
CREATE TABLE mpsearch_trials (
    run text NOT NULL REFERENCES mpsearch_runs (name) ON DELETE CASCADE,
    number bigint NOT NULL,
    state text NOT NULL,
    record json NOT NULL,
    PRIMARY KEY (run, number)
);
CREATE TABLE mpsearch_cache (
    key bytea PRIMARY KEY,
    record json NOT NULL
);
CREATE TABLE mpsearch_snapshots (
    run text PRIMARY KEY REFERENCES mpsearch_runs (name) ON DELETE CASCADE,
    record json NOT NULL
);
CREATE TABLE mpsearch_sensitivity (
    key bytea PRIMARY KEY,
    record json NOT NULL
);
CREATE TABLE mpsearch_controllers (
    run text PRIMARY KEY,
    pid bigint NOT NULL,
    host text NOT NULL,
    since_unix bigint NOT NULL,
    backend_pid integer NOT NULL,
    lock_hi bigint NOT NULL,
    lock_lo bigint NOT NULL
);
";

const SCHEMA_2: &str = "
CREATE TABLE mpsearch_measurements (
    run text NOT NULL REFERENCES mpsearch_runs (name) ON DELETE CASCADE,
    number bigint NOT NULL,
    record json NOT NULL,
    PRIMARY KEY (run, number)
);
";

const SCHEMA_3: &str = "
CREATE TABLE mpsearch_tasks (
    run text NOT NULL REFERENCES mpsearch_runs (name) ON DELETE CASCADE,
    number bigint NOT NULL,
    state text NOT NULL CHECK (state IN ('pending', 'claimed', 'finished', 'taken')),
    record json,
    worker text,
    heartbeat timestamptz,
    lease float8,
    enqueued timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (run, number)
);
CREATE INDEX mpsearch_tasks_open ON mpsearch_tasks (enqueued, run, number)
    WHERE state IN ('pending', 'claimed');
CREATE INDEX mpsearch_tasks_worker ON mpsearch_tasks (worker);
CREATE TABLE mpsearch_workers (
    id text PRIMARY KEY,
    host text NOT NULL,
    pid bigint NOT NULL,
    heartbeat timestamptz NOT NULL
);
";

const SCHEMA_4: &str = "
CREATE TABLE mpsearch_recovered (
    run text NOT NULL REFERENCES mpsearch_runs (name) ON DELETE CASCADE,
    key text NOT NULL,
    trial bigint NOT NULL,
    record json NOT NULL,
    PRIMARY KEY (run, key)
);
CREATE TABLE mpsearch_blobs (
    key bytea PRIMARY KEY,
    data bytea NOT NULL
);
";

const MIGRATIONS_TABLE: &str = "
CREATE TABLE IF NOT EXISTS mpsearch_schema_migrations (
    version integer PRIMARY KEY,
    description text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// The key of the transaction-scoped advisory lock that serialises migrations ("mpsearch" in ASCII).
const MIGRATION_LOCK: i64 = 0x6d70_7365_6172_6368;
/// How long a connection attempt may take when the URL does not say (`connect_timeout=`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A store in a PostgreSQL database, shared by any number of processes.
pub struct PostgresStore {
    location: String,
    conn: Mutex<Connection>,
    /// The schema the tables live in (`current_schema()`), part of every run lock's key.
    schema: String,
    /// The runs this handle drives (holds the lock of).
    driving: Mutex<BTreeSet<String>>,
}

/// The client and the statements it has prepared for the frequent calls.
struct Connection {
    client: Client,
    put_trial: Statement,
    trials: Statement,
    put_cached: Statement,
    cached: Statement,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("location", &self.location)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` and brings its tables to this mpsearch's version (creating
    /// them on first use). Errors name the URL without its password.
    pub fn connect(url: &str) -> Result<PostgresStore> {
        let location = redact(url);
        let mut config: ::postgres::Config = url
            .parse()
            .map_err(|e| Error::store(&location, format!("is not a PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("mpsearch");
        }
        let mut client = config.connect(NoTls).map_err(|e| {
            Error::store(
                &location,
                format!(
                    "cannot connect: {}. Is the server running, and the URL's user, host and \
                     database right? (`bash scripts/test-postgres.sh start` starts a throw-away \
                     server for trying)",
                    describe(&e)
                ),
            )
        })?;
        migrate(&mut client, &location)?;
        let sql = |e: ::postgres::Error| Error::store(&location, describe(&e));
        let schema: Option<String> = client
            .query_one("SELECT current_schema()", &[])
            .map_err(sql)?
            .get(0);
        let schema = schema.ok_or_else(|| {
            Error::store(
                &location,
                "has no current schema (the search_path names no schema that exists)",
            )
        })?;
        let put_trial = client
            .prepare(
                "INSERT INTO mpsearch_trials (run, number, state, record) \
                 VALUES ($1, $2, $3, $4::text::json) \
                 ON CONFLICT (run, number) DO UPDATE SET state = EXCLUDED.state, record = EXCLUDED.record",
            )
            .map_err(sql)?;
        let trials = client
            .prepare(
                "SELECT number, record::text FROM mpsearch_trials WHERE run = $1 ORDER BY number",
            )
            .map_err(sql)?;
        let put_cached = client
            .prepare(
                "INSERT INTO mpsearch_cache (key, record) VALUES ($1, $2::text::json) \
                 ON CONFLICT (key) DO UPDATE SET record = EXCLUDED.record",
            )
            .map_err(sql)?;
        let cached = client
            .prepare("SELECT record::text FROM mpsearch_cache WHERE key = $1")
            .map_err(sql)?;
        Ok(PostgresStore {
            location,
            conn: Mutex::new(Connection {
                client,
                put_trial,
                trials,
                put_cached,
                cached,
            }),
            schema,
            driving: Mutex::new(BTreeSet::new()),
        })
    }

    fn conn(&self) -> Result<MutexGuard<'_, Connection>> {
        self.conn.lock().map_err(|_| {
            self.error("a thread panicked while using the connection; open the store again")
        })
    }

    fn error(&self, message: impl Into<String>) -> Error {
        Error::store(&self.location, message)
    }

    /// A database error while doing `what` ("writing run `a` trial 3").
    fn sql(&self, what: &str) -> impl Fn(::postgres::Error) -> Error + '_ {
        let what = what.to_string();
        move |e| self.error(format!("{what}: {}", describe(&e)))
    }

    /// A write of a record of run `run` that the database refused: a foreign-key violation means the
    /// run does not exist (the message sled gives too).
    fn write_error(&self, run: &str, what: &str) -> impl Fn(::postgres::Error) -> Error + '_ {
        let (run, what) = (run.to_string(), what.to_string());
        move |e| {
            if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) {
                self.error(format!("there is no run named `{run}`"))
            } else {
                self.error(format!("cannot write {what}: {}", describe(&e)))
            }
        }
    }

    /// The advisory-lock key of run `run`: 64 bits of BLAKE3 over the schema and the name.
    fn lock_key(&self, run: &str) -> i64 {
        let mut h = blake3::Hasher::new();
        h.update(b"mpsearch-run-lock\n");
        h.update(self.schema.as_bytes());
        h.update(b"\0");
        h.update(run.as_bytes());
        let bytes = h.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&bytes.as_bytes()[..8]);
        i64::from_be_bytes(first)
    }

    /// The error for run `run`, whose lock another session holds: who, from `mpsearch_controllers`.
    fn held_by(&self, conn: &mut Connection, run: &str) -> Error {
        let row = conn.client.query_opt(
            "SELECT pid, host, to_char(to_timestamp(since_unix) AT TIME ZONE 'UTC', \
             'YYYY-MM-DD HH24:MI:SS \"UTC\"') FROM mpsearch_controllers WHERE run = $1",
            &[&run],
        );
        let (pid, host, since) = match row {
            Ok(Some(r)) => (
                r.try_get::<_, i64>(0)
                    .map_or_else(|_| "unknown".into(), |p| p.to_string()),
                r.try_get::<_, String>(1)
                    .unwrap_or_else(|_| "unknown".into()),
                r.try_get::<_, String>(2)
                    .unwrap_or_else(|_| "unknown".into()),
            ),
            // Between another session's lock and its row (or a failed read): not known yet.
            _ => ("unknown".into(), "unknown".into(), "unknown".into()),
        };
        Error::RunInUse(Box::new(RunHolder {
            run: run.to_string(),
            location: self.location.clone(),
            pid,
            host,
            since,
        }))
    }

    fn get_json(
        &self,
        sql: &str,
        key: &(dyn ::postgres::types::ToSql + Sync),
    ) -> Result<Option<String>> {
        let mut c = self.conn()?;
        c.client
            .query_opt(sql, &[key])
            .and_then(|row| row.map(|r| r.try_get(0)).transpose())
            .map_err(self.sql("cannot read"))
    }

    /// Every `(key, record)` of a keyed table (`mpsearch_cache` or `mpsearch_sensitivity`).
    fn keyed<R: Record>(&self, table: &str, kind: &str) -> Result<Vec<(blake3::Hash, R)>> {
        let rows = self
            .conn()?
            .client
            .query(
                &format!("SELECT key, record::text FROM {table} ORDER BY key"),
                &[],
            )
            .map_err(self.sql(&format!("cannot read the {kind}s")))?;
        rows.iter()
            .map(|r| {
                let bytes: Vec<u8> = r.try_get(0).map_err(self.sql(&format!("a {kind}'s key")))?;
                let key = <[u8; 32]>::try_from(bytes.as_slice())
                    .map(blake3::Hash::from_bytes)
                    .map_err(|_| self.error(format!("a {kind} has a malformed key")))?;
                let text: String = r.try_get(1).map_err(self.sql(&key_what(kind, &key)))?;
                let record = decode(&self.location, &key_what(kind, &key), text.as_bytes())?;
                Ok((key, record))
            })
            .collect()
    }

    /// Upserts a record under a content key, committed with `synchronous_commit` off (durable with the
    /// next synchronous commit).
    fn put_keyed(
        &self,
        sql: Option<&str>,
        key: &blake3::Hash,
        what: &str,
        bytes: Vec<u8>,
    ) -> Result<()> {
        let text = String::from_utf8(bytes).map_err(|e| self.error(format!("{what}: {e}")))?;
        let mut c = self.conn()?;
        let c = &mut *c;
        let mut tx = c.client.transaction().map_err(self.sql("cannot begin"))?;
        tx.batch_execute("SET LOCAL synchronous_commit TO OFF")
            .map_err(self.sql("cannot begin"))?;
        let key = key.as_bytes().as_slice();
        match sql {
            Some(sql) => tx.execute(sql, &[&key, &text]),
            None => tx.execute(&c.put_cached, &[&key, &text]),
        }
        .map_err(self.sql(&format!("cannot write {what}")))?;
        tx.commit()
            .map_err(self.sql(&format!("cannot write {what}")))
    }

    /// Encodes a batch of trials of run `run` (all or nothing: a bad record refuses the batch).
    fn encode_trials(
        &self,
        run: &str,
        trials: &[TrialRecord],
    ) -> Result<Vec<(i64, String, String)>> {
        trials
            .iter()
            .map(|t| {
                let what = trial_what(run, t.number);
                let bytes = encode(&self.location, &what, t)?;
                let number = i64::try_from(t.number)
                    .map_err(|_| self.error(format!("{what}: the trial number is too large")))?;
                let text =
                    String::from_utf8(bytes).map_err(|e| self.error(format!("{what}: {e}")))?;
                Ok((number, t.state.to_string(), text))
            })
            .collect()
    }
}

impl Drop for PostgresStore {
    /// Forgets this handle's controller rows and releases its run locks before the connection closes,
    /// so that another controller can take a run as soon as this handle is gone (best effort: the
    /// locks go with the connection anyway, a moment later, when the server notices it closed).
    fn drop(&mut self) {
        let runs: Vec<String> = match self.driving.get_mut() {
            Ok(set) => set.iter().cloned().collect(),
            Err(_) => return,
        };
        if runs.is_empty() {
            return;
        }
        if let Ok(c) = self.conn.get_mut() {
            let _ = c.client.execute(
                "DELETE FROM mpsearch_controllers WHERE run = ANY($1) AND backend_pid = pg_backend_pid()",
                &[&runs],
            );
            let _ = c.client.batch_execute("SELECT pg_advisory_unlock_all()");
        }
    }
}

/// Brings the tables to [`STORE_SCHEMA`]: nothing when they are there already (no lock, no DDL, so a
/// user who may only read can read), else the missing migrations in one transaction.
fn migrate(client: &mut Client, location: &str) -> Result<()> {
    let sql = |e: ::postgres::Error| {
        Error::store(
            location,
            format!("cannot create or upgrade the tables: {}", describe(&e)),
        )
    };
    let newer = |v: i32| {
        Error::store(
            location,
            format!(
                "its tables were written by a newer mpsearch (store schema {v}; this mpsearch knows \
                 up to {STORE_SCHEMA}). Use that mpsearch, or another database"
            ),
        )
    };
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('mpsearch_schema_migrations') IS NOT NULL",
            &[],
        )
        .map_err(sql)?
        .get(0);
    if exists {
        let v: Option<i32> = client
            .query_one("SELECT max(version) FROM mpsearch_schema_migrations", &[])
            .map_err(sql)?
            .get(0);
        match v {
            Some(v) if v == STORE_SCHEMA => return Ok(()),
            Some(v) if v > STORE_SCHEMA => return Err(newer(v)),
            _ => {}
        }
    }
    let mut tx = client.transaction().map_err(sql)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(sql)?;
    tx.batch_execute(MIGRATIONS_TABLE).map_err(sql)?;
    let applied: Option<i32> = tx
        .query_one("SELECT max(version) FROM mpsearch_schema_migrations", &[])
        .map_err(sql)?
        .get(0);
    let applied = applied.unwrap_or(0);
    if applied > STORE_SCHEMA {
        return Err(newer(applied));
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > applied) {
        tx.batch_execute(m.sql).map_err(sql)?;
        tx.execute(
            "INSERT INTO mpsearch_schema_migrations (version, description) VALUES ($1, $2)",
            &[&m.version, &m.description],
        )
        .map_err(sql)?;
    }
    tx.commit().map_err(sql)
}

/// A client error in words: the server's own message for a database error, else the error and its
/// causes ("error connecting to server: No such file or directory").
fn describe(e: &::postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.to_string();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// `url` without its password (in the user part, or a `password=` parameter), for messages and
/// listings.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // The user part ends at the last `@`: a password with an unencoded `/`, `?` or `@` stays inside it
    // (cut at the user's first `:`), never shown.
    let (user, rest) = match rest.rsplit_once('@') {
        Some((user, host)) => (Some(user.split_once(':').map_or(user, |(u, _)| u)), host),
        None => (None, rest),
    };
    let (host, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match user {
        Some(user) => format!("{user}@{host}"),
        None => host.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|p| !p.starts_with("password="))
                .collect();
            if kept.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", kept.join("&"))
            }
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

impl Store for PostgresStore {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn create_run(&self, manifest: &RunManifest) -> Result<()> {
        let name = &manifest.name;
        check_run_name(&self.location, name)?;
        let what = format!("run `{name}`");
        let text = json_text(&self.location, &what, manifest)?;
        let created = created(manifest);
        let inserted = self
            .conn()?
            .client
            .execute(
                "INSERT INTO mpsearch_runs (name, created_unix, record) VALUES ($1, $2, $3::text::json) \
                 ON CONFLICT (name) DO NOTHING",
                &[name, &created, &text],
            )
            .map_err(self.sql(&format!("cannot write {what}")))?;
        if inserted == 0 {
            return Err(self.error(format!(
                "a run named `{name}` already exists; continue it with `mpsearch resume {name}`, \
                 or pass another --run name"
            )));
        }
        Ok(())
    }

    fn put_run(&self, manifest: &RunManifest) -> Result<()> {
        let name = &manifest.name;
        check_run_name(&self.location, name)?;
        let what = format!("run `{name}`");
        let text = json_text(&self.location, &what, manifest)?;
        self.conn()?
            .client
            .execute(
                "INSERT INTO mpsearch_runs (name, created_unix, record) VALUES ($1, $2, $3::text::json) \
                 ON CONFLICT (name) DO UPDATE SET created_unix = EXCLUDED.created_unix, record = EXCLUDED.record",
                &[name, &created(manifest), &text],
            )
            .map(drop)
            .map_err(self.sql(&format!("cannot write {what}")))
    }

    fn run(&self, name: &str) -> Result<Option<RunManifest>> {
        check_run_name(&self.location, name)?;
        let what = format!("run `{name}`");
        self.get_json(
            "SELECT record::text FROM mpsearch_runs WHERE name = $1",
            &name,
        )?
        .map(|text| decode(&self.location, &what, text.as_bytes()))
        .transpose()
    }

    fn runs(&self) -> Result<Vec<RunManifest>> {
        let rows = self
            .conn()?
            .client
            .query("SELECT name, record::text FROM mpsearch_runs", &[])
            .map_err(self.sql("cannot read the runs"))?;
        let mut runs = rows
            .iter()
            .map(|r| {
                let name: String = r.try_get(0).map_err(self.sql("a run's name"))?;
                let text: String = r.try_get(1).map_err(self.sql(&format!("run `{name}`")))?;
                decode::<RunManifest>(&self.location, &format!("run `{name}`"), text.as_bytes())
            })
            .collect::<Result<Vec<_>>>()?;
        // In Rust, not SQL: bytewise name order whatever the database's collation.
        runs.sort_by(|a, b| (a.created_unix, &a.name).cmp(&(b.created_unix, &b.name)));
        Ok(runs)
    }

    fn put_trial(&self, run: &str, trial: &TrialRecord) -> Result<()> {
        check_run_name(&self.location, run)?;
        let what = trial_what(run, trial.number);
        let [(number, state, text)]: [(i64, String, String); 1] = self
            .encode_trials(run, std::slice::from_ref(trial))?
            .try_into()
            .map_err(|_| self.error(format!("cannot encode {what}")))?;
        let c = self.conn()?;
        let mut c = c;
        let c = &mut *c;
        c.client
            .execute(&c.put_trial, &[&run, &number, &state, &text])
            .map(drop)
            .map_err(self.write_error(run, &what))
    }

    fn put_trials(&self, run: &str, trials: &[TrialRecord]) -> Result<()> {
        check_run_name(&self.location, run)?;
        let rows = self.encode_trials(run, trials)?;
        let what = format!("the trials of run `{run}`");
        let numbers: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let states: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
        let texts: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
        // One statement, so one round trip and one commit whatever the batch's size.
        self.conn()?
            .client
            .execute(
                "INSERT INTO mpsearch_trials (run, number, state, record) \
                 SELECT $1, t.number, t.state, t.record::json \
                 FROM unnest($2::bigint[], $3::text[], $4::text[]) AS t (number, state, record) \
                 ON CONFLICT (run, number) DO UPDATE SET state = EXCLUDED.state, record = EXCLUDED.record",
                &[&run, &numbers, &states, &texts],
            )
            .map(drop)
            .map_err(self.write_error(run, &what))
    }

    fn trials(&self, run: &str) -> Result<Vec<TrialRecord>> {
        check_run_name(&self.location, run)?;
        let rows = {
            let mut c = self.conn()?;
            let c = &mut *c;
            c.client
                .query(&c.trials, &[&run])
                .map_err(self.sql(&format!("cannot read the trials of run `{run}`")))?
        };
        rows.iter()
            .map(|r| {
                let number: i64 = r
                    .try_get(0)
                    .map_err(self.sql(&format!("a trial number of run `{run}`")))?;
                let what = trial_what(run, number as u64);
                let text: String = r.try_get(1).map_err(self.sql(&what))?;
                decode(&self.location, &what, text.as_bytes())
            })
            .collect()
    }

    fn cached(&self, key: &blake3::Hash) -> Result<Option<CachedEvaluation>> {
        let what = key_what("cached evaluation", key);
        let text = {
            let mut c = self.conn()?;
            let c = &mut *c;
            c.client
                .query_opt(&c.cached, &[&key.as_bytes().as_slice()])
                .and_then(|row| row.map(|r| r.try_get::<_, String>(0)).transpose())
                .map_err(self.sql(&format!("cannot read {what}")))?
        };
        text.map(|t| decode(&self.location, &what, t.as_bytes()))
            .transpose()
    }

    fn put_cached(&self, key: &blake3::Hash, evaluation: &CachedEvaluation) -> Result<()> {
        let what = key_what("cached evaluation", key);
        let bytes = encode(&self.location, &what, evaluation)?;
        self.put_keyed(None, key, &what, bytes)
    }

    fn snapshot(&self, run: &str) -> Result<Option<Snapshot>> {
        check_run_name(&self.location, run)?;
        let what = format!("the snapshot of run `{run}`");
        self.get_json(
            "SELECT record::text FROM mpsearch_snapshots WHERE run = $1",
            &run,
        )?
        .map(|text| decode(&self.location, &what, text.as_bytes()))
        .transpose()
    }

    fn put_snapshot(&self, run: &str, snapshot: &Snapshot) -> Result<()> {
        check_run_name(&self.location, run)?;
        let what = format!("the snapshot of run `{run}`");
        let text = json_text(&self.location, &what, snapshot)?;
        self.conn()?
            .client
            .execute(
                "INSERT INTO mpsearch_snapshots (run, record) VALUES ($1, $2::text::json) \
                 ON CONFLICT (run) DO UPDATE SET record = EXCLUDED.record",
                &[&run, &text],
            )
            .map(drop)
            .map_err(self.write_error(run, &what))
    }

    fn sensitivity(&self, key: &blake3::Hash) -> Result<Option<SensitivityRecord>> {
        let what = key_what("sensitivity record", key);
        self.get_json(
            "SELECT record::text FROM mpsearch_sensitivity WHERE key = $1",
            &key.as_bytes().as_slice(),
        )?
        .map(|text| decode(&self.location, &what, text.as_bytes()))
        .transpose()
    }

    fn put_sensitivity(&self, key: &blake3::Hash, record: &SensitivityRecord) -> Result<()> {
        let what = key_what("sensitivity record", key);
        let bytes = encode(&self.location, &what, record)?;
        self.put_keyed(
            Some(
                "INSERT INTO mpsearch_sensitivity (key, record) VALUES ($1, $2::text::json) \
                 ON CONFLICT (key) DO UPDATE SET record = EXCLUDED.record",
            ),
            key,
            &what,
            bytes,
        )
    }

    fn counts(&self) -> Result<StoreCounts> {
        let row = self
            .conn()?
            .client
            .query_one(
                "SELECT (SELECT count(*) FROM mpsearch_runs), (SELECT count(*) FROM mpsearch_cache), \
                 (SELECT count(*) FROM mpsearch_sensitivity)",
                &[],
            )
            .map_err(self.sql("cannot count the records"))?;
        let n = |i: usize| usize::try_from(row.get::<_, i64>(i)).unwrap_or(0);
        Ok(StoreCounts {
            runs: n(0),
            cached_evaluations: n(1),
            sensitivity_records: n(2),
        })
    }

    fn lock_run(&self, run: &str) -> Result<()> {
        check_run_name(&self.location, run)?;
        let mut driving = self
            .driving
            .lock()
            .map_err(|_| self.error("a thread panicked while locking a run"))?;
        if driving.contains(run) {
            return Ok(());
        }
        let key = self.lock_key(run);
        let mut c = self.conn()?;
        let what = format!("cannot lock run `{run}`");
        let got: bool = c
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .map_err(self.sql(&what))?
            .get(0);
        if !got {
            return Err(self.held_by(&mut c, run));
        }
        let pid = i64::from(std::process::id());
        let since = i64::try_from(now_unix()).unwrap_or(i64::MAX);
        let (hi, lo) = (key >> 32 & 0xffff_ffff, key & 0xffff_ffff);
        c.client
            .execute(
                "INSERT INTO mpsearch_controllers (run, pid, host, since_unix, backend_pid, lock_hi, lock_lo) \
                 VALUES ($1, $2, $3, $4, pg_backend_pid(), $5, $6) \
                 ON CONFLICT (run) DO UPDATE SET pid = EXCLUDED.pid, host = EXCLUDED.host, \
                 since_unix = EXCLUDED.since_unix, backend_pid = EXCLUDED.backend_pid, \
                 lock_hi = EXCLUDED.lock_hi, lock_lo = EXCLUDED.lock_lo",
                &[&run, &pid, &host_name(), &since, &hi, &lo],
            )
            .map_err(|e| {
                // Not driving it after all: give the lock back now, not when the connection closes.
                let _ = c.client.execute("SELECT pg_advisory_unlock($1)", &[&key]);
                self.sql(&what)(e)
            })?;
        driving.insert(run.to_string());
        Ok(())
    }

    fn controllers(&self) -> Result<Vec<Controller>> {
        let rows = self
            .conn()?
            .client
            .query(
                "SELECT c.run, c.pid, c.host, c.since_unix FROM mpsearch_controllers c \
                 WHERE EXISTS (SELECT 1 FROM pg_locks l \
                   WHERE l.locktype = 'advisory' AND l.granted AND l.pid = c.backend_pid \
                   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                   AND l.classid::bigint = c.lock_hi AND l.objid::bigint = c.lock_lo AND l.objsubid = 1) \
                 ORDER BY c.run",
                &[],
            )
            .map_err(self.sql("cannot read the run controllers"))?;
        let what = "cannot read the run controllers";
        rows.iter()
            .map(|r| {
                Ok(Controller {
                    run: r.try_get(0).map_err(self.sql(what))?,
                    pid: u32::try_from(r.try_get::<_, i64>(1).map_err(self.sql(what))?)
                        .unwrap_or(0),
                    host: r.try_get(2).map_err(self.sql(what))?,
                    since_unix: u64::try_from(r.try_get::<_, i64>(3).map_err(self.sql(what))?)
                        .unwrap_or(0),
                })
            })
            .collect()
    }

    fn put_measurements(&self, run: &str, records: &[MeasurementRecord]) -> Result<()> {
        check_run_name(&self.location, run)?;
        let rows = records
            .iter()
            .map(|r| {
                let what = measurement_what(run, r.number);
                let number = i64::try_from(r.number).map_err(|_| {
                    self.error(format!("{what}: the measurement number is too large"))
                })?;
                Ok((number, json_text(&self.location, &what, r)?))
            })
            .collect::<Result<Vec<(i64, String)>>>()?;
        let what = format!("the measurements of run `{run}`");
        let numbers: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let texts: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
        // One statement: one commit, all or nothing.
        self.conn()?
            .client
            .execute(
                "INSERT INTO mpsearch_measurements (run, number, record) \
                 SELECT $1, m.number, m.record::json \
                 FROM unnest($2::bigint[], $3::text[]) AS m (number, record) \
                 ON CONFLICT (run, number) DO UPDATE SET record = EXCLUDED.record",
                &[&run, &numbers, &texts],
            )
            .map(drop)
            .map_err(self.write_error(run, &what))
    }

    fn measurements(&self, run: &str) -> Result<Vec<MeasurementRecord>> {
        check_run_name(&self.location, run)?;
        let rows = self
            .conn()?
            .client
            .query(
                "SELECT number, record::text FROM mpsearch_measurements WHERE run = $1 \
                 ORDER BY number",
                &[&run],
            )
            .map_err(self.sql(&format!("cannot read the measurements of run `{run}`")))?;
        rows.iter()
            .map(|r| {
                let number: i64 = r
                    .try_get(0)
                    .map_err(self.sql(&format!("a measurement number of run `{run}`")))?;
                let what = measurement_what(run, number as u64);
                let text: String = r.try_get(1).map_err(self.sql(&what))?;
                decode(&self.location, &what, text.as_bytes())
            })
            .collect()
    }

    fn put_recovered(&self, run: &str, record: &RecoveredRecord) -> Result<()> {
        check_run_name(&self.location, run)?;
        let what = format!("recovered variant {} of run `{run}`", record.key);
        let text = json_text(&self.location, &what, record)?;
        let trial = i64::try_from(record.trial)
            .map_err(|_| self.error(format!("{what}: the trial number is too large")))?;
        self.conn()?
            .client
            .execute(
                "INSERT INTO mpsearch_recovered (run, key, trial, record) \
                 VALUES ($1, $2, $3, $4::text::json) \
                 ON CONFLICT (run, key) DO UPDATE SET trial = EXCLUDED.trial, record = EXCLUDED.record",
                &[&run, &record.key, &trial, &text],
            )
            .map(drop)
            .map_err(self.write_error(run, &what))
    }

    fn recovered(&self, run: &str) -> Result<Vec<RecoveredRecord>> {
        check_run_name(&self.location, run)?;
        let rows = self
            .conn()?
            .client
            .query(
                "SELECT key, record::text FROM mpsearch_recovered WHERE run = $1 \
                 ORDER BY trial, key",
                &[&run],
            )
            .map_err(self.sql(&format!(
                "cannot read the recovered variants of run `{run}`"
            )))?;
        rows.iter()
            .map(|r| {
                let key: String = r
                    .try_get(0)
                    .map_err(self.sql(&format!("a recovered variant of run `{run}`")))?;
                let what = format!("recovered variant {key} of run `{run}`");
                let text: String = r.try_get(1).map_err(self.sql(&what))?;
                decode(&self.location, &what, text.as_bytes())
            })
            .collect()
    }

    fn put_blob(&self, key: &blake3::Hash, bytes: &[u8]) -> Result<()> {
        let what = format!("blob {}", key.to_hex());
        self.conn()?
            .client
            .execute(
                "INSERT INTO mpsearch_blobs (key, data) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET data = EXCLUDED.data",
                &[&key.as_bytes().as_slice(), &bytes],
            )
            .map(drop)
            .map_err(self.sql(&format!("cannot write {what}")))
    }

    fn blob(&self, key: &blake3::Hash) -> Result<Option<Vec<u8>>> {
        let what = format!("blob {}", key.to_hex());
        let row = self
            .conn()?
            .client
            .query_opt(
                "SELECT data FROM mpsearch_blobs WHERE key = $1",
                &[&key.as_bytes().as_slice()],
            )
            .map_err(self.sql(&format!("cannot read {what}")))?;
        row.map(|r| r.try_get::<_, Vec<u8>>(0).map_err(self.sql(&what)))
            .transpose()
    }

    fn cache_entries(&self) -> Result<Vec<(blake3::Hash, CachedEvaluation)>> {
        self.keyed("mpsearch_cache", "cached evaluation")
    }

    fn sensitivity_entries(&self) -> Result<Vec<(blake3::Hash, SensitivityRecord)>> {
        self.keyed("mpsearch_sensitivity", "sensitivity record")
    }

    fn queue(&self) -> Option<&dyn Queue> {
        Some(self)
    }
}

/// The creation time of a manifest as the `created_unix` column holds it.
fn created(m: &RunManifest) -> i64 {
    i64::try_from(m.created_unix).unwrap_or(i64::MAX)
}

/// A record's JSON as text (what the `json` columns are written from).
fn json_text<R: Record>(location: &str, what: &str, record: &R) -> Result<String> {
    let bytes = encode(location, what, record)?;
    String::from_utf8(bytes).map_err(|e| Error::store(location, format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_cut_from_urls() {
        for (url, shown) in [
            ("postgres://me:pw@host/db", "postgres://me@host/db"),
            ("postgres://me@host/db", "postgres://me@host/db"),
            ("postgresql://host", "postgresql://host"),
            (
                "postgres://me:p%40ss@%2Ftmp%2Fpg:5433/db?password=x&application_name=a",
                "postgres://me@%2Ftmp%2Fpg:5433/db?application_name=a",
            ),
            ("postgres://me@h/db?password=x", "postgres://me@h/db"),
            // Unencoded `/`, `?` and `@` in a password.
            ("postgres://me:a/b?c@host/db", "postgres://me@host/db"),
            (
                "postgres://me:x@y@host:5432/db",
                "postgres://me@host:5432/db",
            ),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }
}
