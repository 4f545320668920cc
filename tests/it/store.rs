//! Stores end to end: a running sled search watched through its live view (`runs`, `trials`, `report`
//! say how old it is; a second writer is still refused), `store copy` sled → PostgreSQL → sled with
//! `runs --json` and `trials --json` compared (held-out qualities included), and searches on
//! PostgreSQL: the same trials and held-out qualities as on sled for the same seed, one controller
//! per run, a killed controller's run resumed.
//!
//! The PostgreSQL tests need the server `MPSEARCH_TEST_POSTGRES` names (`.ci/run` starts one; so does
//! `bash scripts/test-postgres.sh run cargo test`): without it they print `SKIPPED` and pass, except
//! under `CI=true`, where they fail.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::{describe, fails, ok, run, trials_json, Dir, PgDatabase, FAST};

/// Few sensitivity pairs and small batches: each search takes seconds in the debug build.
const QUICK: [&str; 8] = [
    "--pairs", "24", "--ask", "8", FAST[0], FAST[1], FAST[2], FAST[3],
];
/// How long a test waits for a search it started to get somewhere.
const PATIENCE: Duration = Duration::from_secs(180);

fn search(cwd: &Path, store: &str, run_name: &str, extra: &[&str]) -> String {
    let mut args = vec!["search", "--store", store, "--run", run_name];
    args.extend(QUICK);
    args.extend(extra);
    ok(cwd, &args)
}

/// A search of (practically) no end, in the background.
fn endless_search(cwd: &Path, store: &str, run_name: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mpsearch"))
        .args(["search", "--store", store, "--run", run_name])
        .args(["--trials", "100000"])
        .args(QUICK)
        .current_dir(cwd)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mpsearch")
}

/// Kills a child with SIGKILL (`Child::kill` on Unix) and reaps it.
fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `args` until `done` accepts its output, or panics after [`PATIENCE`] naming `what`.
fn wait_for(cwd: &Path, args: &[&str], what: &str, done: impl Fn(&Output) -> bool) -> Output {
    let start = Instant::now();
    loop {
        let out = run(cwd, args);
        if done(&out) {
            return out;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "waited {PATIENCE:?} for {what}; last:\n{}",
            describe(args, &out)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The trials `trials RUN --json` printed, when it succeeded.
fn trial_lines(out: &Output) -> usize {
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).lines().count()
    } else {
        0
    }
}

fn runs_json(cwd: &Path, store: &str) -> serde_json::Value {
    serde_json::from_str(&ok(cwd, &["runs", "--store", store, "--json"])).expect("runs JSON")
}

/// The listed status of run `name`.
fn status(runs: &serde_json::Value, name: &str) -> String {
    runs.as_array()
        .expect("a list of runs")
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no run `{name}` in {runs}"))["status"]
        .as_str()
        .expect("a status")
        .to_string()
}

/// What must be equal between two runs of the same seed: number, state, strategy, assignment hash,
/// quality and cost of every trial.
fn identity(t: &[serde_json::Value]) -> Vec<(u64, String, String, String, Option<f64>, String)> {
    t.iter()
        .map(|v| {
            (
                v["trial"].as_u64().expect("trial"),
                v["state"].as_str().expect("state").to_string(),
                v["strategy"].as_str().expect("strategy").to_string(),
                v["hash"].as_str().expect("hash").to_string(),
                v["quality"].as_f64(),
                v["cost"].to_string(),
            )
        })
        .collect()
}

#[test]
fn a_running_sled_search_is_watched_through_its_live_view_and_a_second_writer_is_refused() {
    let d = Dir::new();
    let child = endless_search(d.path(), "s", "r");
    let pid = child.id();
    let trials = ["trials", "r", "--store", "s", "--json"];
    let first = wait_for(
        d.path(),
        &trials,
        "the first trials in the live view",
        |o| trial_lines(o) > 0,
    );
    let note = format!("note: store s: live view of a running search (pid {pid}), updated ");
    let said = String::from_utf8_lossy(&first.stderr).into_owned();
    assert!(said.contains(&note) && said.contains(" ago"), "{said}");

    // The listing reads the view, says how old it is, and shows the run as driven.
    let args = ["runs", "--store", "s"];
    let out = run(d.path(), &args);
    let text = describe(&args, &out);
    assert!(out.status.success(), "{text}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&note),
        "{text}"
    );
    assert!(
        text.contains(&format!("run `r` is being driven by pid {pid}")),
        "{text}"
    );
    assert_eq!(status(&runs_json(d.path(), "s"), "r"), "running");

    // The report is drawn from the view too; the front's held-out evaluations wait for the search
    // (the view takes no writes), and the report says so rather than evaluating them.
    let args = ["report", "r", "--store", "s", "--out", "live"];
    let out = run(d.path(), &args);
    let text = describe(&args, &out);
    assert!(out.status.success(), "{text}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "live/index.html"
    );
    assert!(d.path().join("live/index.html").is_file());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("of run `r` keep no held-out quality for now")
            && said.contains(&format!("the search that holds it (pid {pid})"))
            && !said.contains("evaluating"),
        "{text}"
    );

    // The view follows the search: later batches show up.
    let seen = trial_lines(&first);
    wait_for(d.path(), &trials, "a later batch in the live view", |o| {
        trial_lines(o) > seen
    });

    // A second writer is still refused, naming the holder; so is copying a run being driven.
    let err = fails(
        d.path(),
        &["search", "--store", "s", "--run", "other", "--trials", "1"],
    );
    assert!(err.contains(&format!("in use by pid {pid}")), "{err}");
    let err = fails(d.path(), &["resume", "r", "--store", "s"]);
    assert!(err.contains(&format!("in use by pid {pid}")), "{err}");
    let err = fails(d.path(), &["store", "copy", "s", "copy"]);
    assert!(
        err.contains(&format!("run `r` is being driven by pid {pid}")),
        "{err}"
    );

    // Once the search is gone (killed), the store is read directly: no view, the run interrupted.
    kill(child);
    let out = run(d.path(), &["runs", "--store", "s", "--json"]);
    assert!(out.status.success(), "{}", describe(&["runs"], &out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("live view"),
        "{}",
        describe(&["runs"], &out)
    );
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("runs JSON");
    assert_eq!(status(&runs, "r"), "interrupted");
    assert!(!d.path().join("s/live-view.json").exists());
}

#[test]
fn store_copy_sled_to_postgres_and_back_keeps_runs_and_trials() {
    let Some(pg) = PgDatabase::new("store_copy_sled_to_postgres_and_back") else {
        return;
    };
    let d = Dir::new();
    search(
        d.path(),
        "s",
        "evo",
        &["--trials", "24", "--strategy", "evolution", "--seed", "1"],
    );
    search(
        d.path(),
        "s",
        "rnd",
        &["--trials", "16", "--strategy", "random", "--seed", "2"],
    );
    // A run's latency measurements travel with it.
    ok(
        d.path(),
        &[
            "measure",
            "rnd",
            "--store",
            "s",
            "--point",
            "1",
            "--repetitions",
            "2",
        ],
    );
    // So do its recovered variants, with their weights.
    let recovered: serde_json::Value = serde_json::from_str(
        ok(
            d.path(),
            &[
                "recover", "rnd", "--point", "1", "--store", "s", "--epochs", "1", "--json",
            ],
        )
        .trim(),
    )
    .unwrap();
    let out = ok(d.path(), &["store", "copy", "s", &pg.url]);
    assert!(
        out.contains(
            "copied 2 runs (40 trials, 2 strategy snapshots, 2 latency measurements), 1 recovered \
             variant,"
        ),
        "{out}"
    );
    let out = ok(d.path(), &["store", "copy", &pg.url, "back"]);
    assert!(out.contains("copied 2 runs (40 trials"), "{out}");
    assert!(out.contains("1 recovered variant,"), "{out}");
    let export = |store: &str, file: &str| {
        crate::util::export_recovered(d.path(), "rnd", store, file);
        // The header as JSON (its key order is a hash map's, not stable across processes) and the
        // tensor data.
        let bytes = std::fs::read(d.path().join(file)).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        (header, bytes[8 + n..].to_vec())
    };
    let (copied, copied_data) = export("back", "back.safetensors");
    let (original, original_data) = export("s", "s.safetensors");
    assert_eq!(
        copied, original,
        "the variant {}: its export's header",
        recovered["key"]
    );
    assert!(
        copied_data == original_data,
        "the variant {}: its export's tensor data differs in the copy",
        recovered["key"]
    );

    let runs = runs_json(d.path(), "s");
    assert_eq!(runs.as_array().map(Vec::len), Some(2), "{runs}");
    let counts: Vec<&serde_json::Value> = runs
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| &r["measurements"]["count"])
        .collect();
    assert_eq!(counts, [0, 2], "{runs}");
    // The held-out evaluations of the fronts (in the evaluation cache) are copied with them.
    for r in runs.as_array().into_iter().flatten() {
        assert!(r["held_out_gap"]["points"].as_u64() > Some(0), "{r}");
        assert_eq!(r["held_out_gap"]["missing"], 0, "{r}");
    }
    for store in [pg.url.as_str(), "back"] {
        assert_eq!(runs_json(d.path(), store), runs, "runs --json of {store}");
        for name in ["evo", "rnd"] {
            assert_eq!(
                trials_json(d.path(), store, name),
                trials_json(d.path(), "s", name),
                "trials {name} --json of {store}"
            );
        }
    }
    // Copying again writes nothing; a report is drawn from the PostgreSQL store.
    let out = ok(d.path(), &["store", "copy", "s", &pg.url]);
    assert!(out.contains("copied 0 runs"), "{out}");
    assert!(
        out.contains("already held 2 runs (identical), 1 recovered variant,"),
        "{out}"
    );
    let printed = ok(
        d.path(),
        &["report", "evo", "--store", &pg.url, "--out", "pg"],
    );
    assert_eq!(printed.trim(), "pg/index.html");
    // A store is not copied onto itself.
    let err = fails(d.path(), &["store", "copy", "s", "s"]);
    assert!(err.contains("FROM and TO are the same store"), "{err}");
}

#[test]
fn a_search_on_postgres_gives_the_trials_of_one_on_sled() {
    let Some(pg) = PgDatabase::new("a_search_on_postgres_gives_the_trials_of_one_on_sled") else {
        return;
    };
    let d = Dir::new();
    let seeded = ["--trials", "24", "--seed", "3", "--strategy", "bayes"];
    search(d.path(), "s", "r", &seeded);
    let out = search(d.path(), &pg.url, "r", &seeded);
    // Where the run is, without a password, and how to list it.
    assert!(out.contains(&format!("--store {}", pg.url)), "{out}");
    assert_eq!(
        identity(&trials_json(d.path(), &pg.url, "r")),
        identity(&trials_json(d.path(), "s", "r"))
    );
    let (a, b) = (runs_json(d.path(), "s"), runs_json(d.path(), &pg.url));
    // The same front, with the same held-out qualities.
    assert_eq!(a[0]["front"], b[0]["front"]);
    assert_eq!(a[0]["held_out_gap"], b[0]["held_out_gap"]);
    assert!(b[0]["front"][0]["held_out_quality"].is_f64(), "{b}");
    assert_eq!(b[0]["status"], "complete");
    // Resumed for 8 more, on PostgreSQL.
    ok(
        d.path(),
        &["resume", "r", "--store", &pg.url, "--trials", "8"],
    );
    assert_eq!(trials_json(d.path(), &pg.url, "r").len(), 32);
}

#[test]
fn a_run_on_postgres_has_one_controller_and_a_killed_one_releases_it() {
    let Some(pg) = PgDatabase::new("a_run_on_postgres_has_one_controller") else {
        return;
    };
    let d = Dir::new();
    let child = endless_search(d.path(), &pg.url, "long");
    let pid = child.id();
    let trials = ["trials", "long", "--store", &pg.url, "--json"];
    wait_for(d.path(), &trials, "the first trials on PostgreSQL", |o| {
        trial_lines(o) > 0
    });
    assert_eq!(status(&runs_json(d.path(), &pg.url), "long"), "running");
    let listed = ok(d.path(), &["runs", "--store", &pg.url]);
    assert!(
        listed.contains(&format!("store: postgres {}", pg.url)),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("run `long` is being driven by pid {pid} on host")),
        "{listed}"
    );

    // A second controller of the run is refused, naming the first; another run may start meanwhile.
    let driven = format!(
        "run `long` of store {} is being driven by pid {pid} on host",
        pg.url
    );
    let err = fails(d.path(), &["resume", "long", "--store", &pg.url]);
    assert!(err.contains(&driven), "{err}");
    let err = fails(
        d.path(),
        &[
            "search", "--store", &pg.url, "--run", "long", "--trials", "1",
        ],
    );
    assert!(err.contains(&driven), "{err}");
    search(d.path(), &pg.url, "short", &["--trials", "8"]);

    // Killed, the controller's lock goes with its connection: the run is interrupted and resumable.
    kill(child);
    wait_for(
        d.path(),
        &["runs", "--store", &pg.url, "--json"],
        "the killed run to be listed as interrupted",
        |o| {
            o.status.success()
                && serde_json::from_slice(&o.stdout)
                    .is_ok_and(|v: serde_json::Value| status(&v, "long") == "interrupted")
        },
    );
    let before = trials_json(d.path(), &pg.url, "long").len();
    ok(
        d.path(),
        &["resume", "long", "--store", &pg.url, "--trials", "8"],
    );
    let after = trials_json(d.path(), &pg.url, "long");
    assert_eq!(after.len(), before + 8);
    assert!(after.iter().all(|t| t["state"] == "complete"));
}
