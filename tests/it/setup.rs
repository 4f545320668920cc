//! A run from its first second: its manifest is written before its set-up (status `setting-up`), the
//! set-up checkpoints each group's cheap errors and each one-at-a-time measurement, and a set-up
//! stopped (Ctrl-C) or killed (SIGKILL) at any moment is continued by `resume` to the sensitivity
//! model, trials and front of an uninterrupted run. A run in its set-up is watched like any other.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mpsearch::search::{self, Control, Outcome, Progress, SetupPhase};
use mpsearch::sensitivity::Pairs;
use mpsearch::store::{RunConfig, RunManifest, RunStatus, SledStore, Store};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::util::{describe, fast_config, ok, run, trials_json, Dir, FAST};

/// How long a test waits for a search it started to get somewhere.
const PATIENCE: Duration = Duration::from_secs(180);

/// Drives run `name` of `store` (its session from [`search::create`] or [`search::open`]) to its end.
fn drive(store: &SledStore, session: &search::Session, manifest: RunManifest) -> Outcome {
    let stop = AtomicBool::new(false);
    let mut progress = |_: &Progress| {};
    search::run(
        session,
        session.evaluator.as_ref(),
        store,
        manifest,
        &mut Control {
            workers: None,
            jobs: 1,
            stop: &stop,
            progress: &mut progress,
        },
    )
    .expect("the run")
}

/// Number, state, point and quality of every trial.
fn decided(o: &Outcome) -> Vec<(u64, String, Vec<u16>, Option<f64>)> {
    o.trials
        .iter()
        .map(|t| (t.number, t.state.to_string(), t.point.clone(), t.quality))
        .collect()
}

/// The set-up summary without `reused` (which says whether this store had the analysis already).
fn summary(m: &RunManifest) -> (String, usize, Option<usize>, Option<usize>, Option<String>) {
    let s = m.setup.as_ref().expect("a set-up summary");
    (
        s.key.clone(),
        s.measured,
        s.budget,
        s.rounds,
        s.stop.clone(),
    )
}

/// A set-up stopped as by Ctrl-C in its cheap errors, then again in its measurements, and resumed
/// each time: the run exists in `setting-up` from the start, each stop keeps what was done, and the
/// resumed run ends with the uninterrupted run's sensitivity analysis, trials and front — having
/// computed every measurement once (the later sessions read the earlier ones' back).
#[test]
fn a_set_up_stopped_twice_and_resumed_builds_the_uninterrupted_model_trials_and_front() {
    for pairs in [Pairs::Fixed(24), Pairs::Auto] {
        let d = Dir::new();
        let config = RunConfig {
            seed: 4,
            trials: Some(40),
            pairs,
            ..fast_config()
        };
        let never = AtomicBool::new(false);
        let whole_store = SledStore::open(&d.path().join("whole")).unwrap();
        let (session, manifest) =
            search::create(&whole_store, "r", config.clone(), &never, &mut |_, _, _| {}).unwrap();
        let whole = drive(&whole_store, &session, manifest);
        let whole_setup = whole.manifest.evaluations.unwrap().setup;
        assert!(whole_setup.evaluated >= 6, "{pairs:?}: {whole_setup:?}");

        let store = SledStore::open(&d.path().join("stopped")).unwrap();
        let stop = AtomicBool::new(false);
        // Stopped after the second group's cheap errors (seen at the next checkpoint: the third).
        let err = search::create(&store, "r", config.clone(), &stop, &mut |p, done, _| {
            if p == SetupPhase::CheapErrors && done == 2 {
                stop.store(true, Ordering::SeqCst);
            }
        })
        .err()
        .expect("stopped in the cheap errors");
        assert!(
            matches!(&err, mpsearch::Error::Interrupted { run } if run == "r"),
            "{err}"
        );
        let first = store.run("r").unwrap().expect("the run exists");
        assert_eq!(first.status, RunStatus::SettingUp);
        assert!(first.setup.is_none());
        assert_eq!(first.evaluations.unwrap().setup.evaluated, 0);
        let spent = first.setup_seconds.expect("set-up seconds");
        assert!(spent > 0.0);

        // Stopped again after three measurements (seen at the fourth's checkpoint).
        stop.store(false, Ordering::SeqCst);
        let err = search::open(&store, "r", &stop, &mut |p, done, _| {
            if p != SetupPhase::CheapErrors && done == 3 {
                stop.store(true, Ordering::SeqCst);
            }
        })
        .err()
        .expect("stopped in the measurements");
        assert!(matches!(err, mpsearch::Error::Interrupted { .. }), "{err}");
        let second = store.run("r").unwrap().unwrap();
        assert_eq!(second.status, RunStatus::SettingUp);
        assert_eq!(second.evaluations.unwrap().setup.evaluated, 4);
        assert!(second.setup_seconds.unwrap() > spent);

        stop.store(false, Ordering::SeqCst);
        let (session, manifest) = search::open(&store, "r", &stop, &mut |_, _, _| {}).unwrap();
        assert_eq!(manifest.status, RunStatus::Running);
        let resumed = drive(&store, &session, manifest);

        assert_eq!(
            summary(&resumed.manifest),
            summary(&whole.manifest),
            "{pairs:?}"
        );
        let key = blake3::Hash::from_hex(&resumed.manifest.setup.as_ref().unwrap().key).unwrap();
        let (a, b) = (
            store.sensitivity(&key).unwrap().unwrap(),
            whole_store.sensitivity(&key).unwrap().unwrap(),
        );
        assert_eq!(a.errors, b.errors, "{pairs:?}: cheap errors");
        assert_eq!(a.measurements, b.measurements, "{pairs:?}: measurements");
        assert_eq!(decided(&resumed), decided(&whole), "{pairs:?}: trials");
        let front = |o: &Outcome| -> Vec<u64> {
            mpsearch::store::front(&o.manifest.config, &o.trials)
                .iter()
                .map(|t| t.number)
                .collect()
        };
        assert_eq!(front(&resumed), front(&whole), "{pairs:?}: front");
        // Every measurement was computed once: the third session read back the four of the second.
        let setup = resumed.manifest.evaluations.unwrap().setup;
        assert_eq!(setup.evaluated, whole_setup.evaluated, "{pairs:?}");
        assert_eq!(setup.cached, whole_setup.cached + 4, "{pairs:?}");
    }
}

/// `mpsearch args` in `cwd`, in the background, its standard error sent line by line to the receiver.
fn spawn(cwd: &Path, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mpsearch"))
        .args(args)
        .current_dir(cwd)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mpsearch");
    let stderr = child.stderr.take().expect("its standard error");
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    (child, lines)
}

/// Waits for a line containing `what`, or panics after [`PATIENCE`] with what was said.
fn wait_line(lines: &mpsc::Receiver<String>, what: &str) -> String {
    let start = Instant::now();
    let mut said = Vec::new();
    while start.elapsed() < PATIENCE {
        match lines.recv_timeout(Duration::from_millis(200)) {
            Ok(l) if l.contains(what) => return l,
            Ok(l) => said.push(l),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    panic!(
        "no line with `{what}`; the process said:\n{}",
        said.join("\n")
    );
}

fn runs_json(cwd: &Path, store: &str) -> serde_json::Value {
    serde_json::from_str(&ok(cwd, &["runs", "--store", store, "--json"])).expect("runs JSON")
}

/// Number, state, assignment hash and quality of a trial.
type Trial = (u64, String, String, Option<f64>);

/// Every trial of run `r` in `store`, from `trials --json`.
fn identity(cwd: &Path, store: &str) -> Vec<Trial> {
    trials_json(cwd, store, "r")
        .iter()
        .map(|v| {
            (
                v["trial"].as_u64().expect("trial"),
                v["state"].as_str().expect("state").to_string(),
                v["hash"].as_str().expect("hash").to_string(),
                v["quality"].as_f64(),
            )
        })
        .collect()
}

/// What the uninterrupted run and the resumed one must share: the set-up (key, measurements, budget,
/// rounds, stop), the trials and the front.
fn outcome(cwd: &Path, store: &str) -> (serde_json::Value, Vec<Trial>, serde_json::Value) {
    let runs = runs_json(cwd, store);
    let r = &runs[0];
    assert_eq!(r["status"], "complete", "{r}");
    let mut setup = r["setup"].clone();
    setup
        .as_object_mut()
        .expect("a set-up summary")
        .remove("reused");
    let front: Vec<serde_json::Value> = r["front"]
        .as_array()
        .expect("a front")
        .iter()
        .map(|p| serde_json::json!([p["trial"], p["hash"]]))
        .collect();
    (setup, identity(cwd, store), serde_json::Value::Array(front))
}

/// How many pairs the long set-up measures (at about 0.3 s each on 50 images with round-to-nearest:
/// long enough to be interrupted in the middle, short enough for CI).
const LONG_PAIRS: u64 = 96;

/// A search with a long set-up and a short search.
const LONG_SET_UP: [&str; 12] = [
    "--pairs", "96", "--trials", "24", "--seed", "3", "--ask", "8", FAST[0], FAST[1], FAST[2],
    FAST[3],
];

/// Ctrl-C during the set-up: while it sets up the run is listed (through the live view) as
/// `setting-up`; Ctrl-C stops it with exit code 130, saying what is kept and how to resume; it is then
/// listed as interrupted in its set-up, with what its set-up spent; `trials` and `report` work on it;
/// and `resume` continues the set-up to the uninterrupted run's analysis, trials and front.
#[test]
fn a_search_stopped_with_ctrl_c_in_its_set_up_is_listed_and_resumed() {
    let d = Dir::new();
    let mut args = vec!["search", "--store", "whole", "--run", "r"];
    args.extend(LONG_SET_UP);
    ok(d.path(), &args);

    let mut args = vec!["search", "--store", "s", "--run", "r"];
    args.extend(LONG_SET_UP);
    let (mut child, lines) = spawn(d.path(), &args);
    // Said after the first two measurements.
    wait_line(&lines, "one-at-a-time measurements, ");
    let start = Instant::now();
    let live = loop {
        let runs = runs_json(d.path(), "s");
        if runs[0]["status"] == "setting-up" {
            break runs;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the live view never listed the run in its set-up: {runs}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(live[0]["setup"].is_null(), "{live}");
    assert_eq!(live[0]["trials"], 0, "{live}");
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(sent.success());
    let said = wait_line(&lines, "stopped in its set-up after");
    assert!(
        said.contains("what it computed is kept (its cheap errors so far, and "),
        "{said}"
    );
    assert_eq!(
        wait_line(&lines, "resume with:"),
        "resume with: mpsearch resume r --store s"
    );
    assert_eq!(child.wait().expect("its exit").code(), Some(130));

    let runs = runs_json(d.path(), "s");
    let r = &runs[0];
    assert_eq!(r["status"], "interrupted", "{r}");
    assert!(r["setup"].is_null(), "{r}");
    assert!(
        r["setup_seconds"].as_f64().expect("set-up seconds") > 0.0,
        "{r}"
    );
    let measured = r["evaluations"]["setup"]["evaluated"].as_u64().unwrap();
    assert!((2..LONG_PAIRS).contains(&measured), "{r}");
    let listing = ok(d.path(), &["runs", "--store", "s"]);
    assert!(listing.contains("interrupted in set-up"), "{listing}");
    assert!(trials_json(d.path(), "s", "r").is_empty());
    ok(d.path(), &["report", "r", "--store", "s"]);

    let args = ["resume", "r", "--store", "s"];
    let out = run(d.path(), &args);
    assert!(out.status.success(), "{}", describe(&args, &out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("resuming run `r` in its set-up"), "{err}");
    assert_eq!(outcome(d.path(), "s"), outcome(d.path(), "whole"));
    let r = &runs_json(d.path(), "s")[0];
    // Only the measurement in flight when Ctrl-C came can have been computed twice.
    let evaluated = r["evaluations"]["setup"]["evaluated"].as_u64().unwrap();
    assert!((LONG_PAIRS..=LONG_PAIRS + 1).contains(&evaluated), "{r}");
}

/// SIGKILL at random moments (seeded) of the set-up and of the search, each followed by `resume`
/// (killed in turn) until the run ends: the same analysis, trials and front as an uninterrupted run,
/// with at most the measurement in flight lost per kill in the set-up.
#[test]
fn a_run_killed_at_random_moments_of_its_set_up_and_search_ends_like_an_uninterrupted_one() {
    let d = Dir::new();
    let common = [
        "--pairs", "64", "--trials", "48", "--seed", "6", "--ask", "8", FAST[0], FAST[1], FAST[2],
        FAST[3],
    ];
    let mut args = vec!["search", "--store", "whole", "--run", "r"];
    args.extend(common);
    let t = Instant::now();
    ok(d.path(), &args);
    let total = t.elapsed().as_secs_f64();
    let whole = runs_json(d.path(), "whole");
    let set_up = whole[0]["setup_seconds"].as_f64().expect("set-up seconds");
    let search = (total - set_up).max(0.5);

    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (mut in_set_up, mut in_search, mut search_attempts) = (0, 0, 0);
    let mut sessions = 0;
    loop {
        sessions += 1;
        assert!(sessions <= 20, "the run did not end in 20 sessions");
        let stored = if d.path().join("killed").exists() {
            runs_json(d.path(), "killed")
        } else {
            serde_json::json!([])
        };
        let first = stored.as_array().is_none_or(|r| r.is_empty());
        let r = &stored[0];
        let args: Vec<&str> = if first {
            [&["search", "--store", "killed", "--run", "r"][..], &common].concat()
        } else {
            vec!["resume", "r", "--store", "killed"]
        };
        let setting_up = first || r["setup"].is_null();
        // Two kills in the set-up, then two in the search, each at a random moment of what is left
        // (a resumed session first loads the model and reads back what the set-up kept).
        let left_set_up = if setting_up {
            (set_up - r["setup_seconds"].as_f64().unwrap_or(0.0)).max(0.5)
        } else {
            0.5
        };
        // A kill in the search waits for the session's first new journaled trial, then a random
        // share of what is left: a resumed session replays its cached set-up faster than the
        // uninterrupted one measured it, so a delay counted from its start could land past the end.
        let trials_before = r["trials"].as_u64().unwrap_or(0);
        let (kill_at, after_a_trial) = if setting_up && in_set_up < 2 {
            (Some(rng.random_range(0.2..0.9) * left_set_up), false)
        } else if in_search < 2 && search_attempts < 5 {
            search_attempts += 1;
            let done = trials_before as f64 / 48.0;
            (
                Some(rng.random_range(0.05..0.5) * search * (1.0 - done)),
                true,
            )
        } else {
            (None, false)
        };
        let Some(delay) = kill_at else {
            let out = run(d.path(), &args);
            assert!(out.status.success(), "{}", describe(&args, &out));
            break;
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_mpsearch"))
            .args(&args)
            .current_dir(d.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mpsearch");
        if after_a_trial {
            let waiting = Instant::now();
            while child.try_wait().expect("wait").is_none()
                && waiting.elapsed() < Duration::from_secs(120)
                && runs_json(d.path(), "killed")[0]["trials"]
                    .as_u64()
                    .unwrap_or(0)
                    <= trials_before
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        std::thread::sleep(Duration::from_secs_f64(delay));
        child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix.
        child.wait().expect("reaped");
        let after = runs_json(d.path(), "killed");
        let a = &after[0];
        if a["status"] == "complete" {
            break;
        }
        if a["setup"].is_null() {
            in_set_up += 1;
        } else if a["trials"].as_u64().unwrap_or(0) > 0 {
            in_search += 1;
        }
        eprintln!(
            "killed after {delay:.2} s: set-up {}, {} trials",
            if a["setup"].is_null() {
                "unfinished"
            } else {
                "done"
            },
            a["trials"]
        );
    }
    assert!(in_set_up >= 2, "only {in_set_up} kills fell in the set-up");
    assert!(in_search >= 1, "no kill fell in the search");
    assert_eq!(outcome(d.path(), "killed"), outcome(d.path(), "whole"));
    let evaluated = |runs: &serde_json::Value| {
        runs[0]["evaluations"]["setup"]["evaluated"]
            .as_u64()
            .unwrap()
    };
    let (killed, uninterrupted) = (evaluated(&runs_json(d.path(), "killed")), evaluated(&whole));
    assert!(
        (uninterrupted..=uninterrupted + in_set_up).contains(&killed),
        "set-up evaluations: {killed} after {in_set_up} kills, {uninterrupted} uninterrupted"
    );
}
