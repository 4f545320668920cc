//! `mpsearch worker` processes evaluating a run's trials through a PostgreSQL store: the trials and
//! front of `search --workers` are those of a search without workers (with and without `--fidelity`);
//! workers and the controller killed with SIGKILL at random moments lose nothing (a lapsed claim is
//! re-run by another worker; `resume --workers` takes what was finished); a worker whose inputs differ
//! from the run's refuses it and says why; `runs` shows the workers; a sled store refuses workers.
//!
//! The PostgreSQL tests need the server `MPSEARCH_TEST_POSTGRES` names (see `store.rs`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::util::{describe, fails, ok, run, trials_json, Dir, PgDatabase, FAST};

/// How long a test waits for a search to end.
const PATIENCE: Duration = Duration::from_secs(300);

/// Few sensitivity pairs, small batches and 50 images: each search takes seconds in the debug build.
const QUICK: [&str; 8] = [
    "--pairs", "8", "--ask", "8", FAST[0], FAST[1], FAST[2], FAST[3],
];

fn spawn(cwd: &Path, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mpsearch"))
        .args(args)
        .current_dir(cwd)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mpsearch")
}

/// A worker on `url` that stops after 15 s without work, its claims lapsing 2 s after it dies.
fn worker(cwd: &Path, url: &str) -> Child {
    spawn(
        cwd,
        &["worker", "--store", url, "--lease", "2s", "--idle", "15s"],
    )
}

/// Waits for `child` to exit successfully, or panics after [`PATIENCE`] saying what it said.
fn finish(child: Child, what: &str) -> String {
    let start = Instant::now();
    let mut child = child;
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if start.elapsed() > PATIENCE {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("its output");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{what} failed:\n{err}");
    err
}

/// Number, state, strategy, assignment hash, quality and proxy quality of every trial.
type Trial = (u64, String, String, String, Option<f64>, Option<f64>);

fn identity(cwd: &Path, store: &str, run: &str) -> Vec<Trial> {
    trials_json(cwd, store, run)
        .iter()
        .map(|v| {
            (
                v["trial"].as_u64().expect("trial"),
                v["state"].as_str().expect("state").to_string(),
                v["strategy"].as_str().expect("strategy").to_string(),
                v["hash"].as_str().expect("hash").to_string(),
                v["quality"].as_f64(),
                v["proxy"]["quality"].as_f64(),
            )
        })
        .collect()
}

fn run_json(cwd: &Path, store: &str, run: &str) -> serde_json::Value {
    let runs: serde_json::Value =
        serde_json::from_str(&ok(cwd, &["runs", "--store", store, "--json"])).expect("runs JSON");
    runs.as_array()
        .expect("runs")
        .iter()
        .find(|r| r["name"] == run)
        .unwrap_or_else(|| panic!("no run `{run}`"))
        .clone()
}

/// The front as (trial, hash) pairs.
fn front(r: &serde_json::Value) -> Vec<(u64, String)> {
    r["front"]
        .as_array()
        .expect("a front")
        .iter()
        .map(|p| (p["trial"].as_u64().unwrap(), p["hash"].to_string()))
        .collect()
}

#[test]
fn a_search_with_workers_gives_the_trials_and_front_of_one_without() {
    let Some(pg) = PgDatabase::new("a_search_with_workers_gives_the_trials_and_front") else {
        return;
    };
    let d = Dir::new();
    for (run_name, extra) in [("plain", &[][..]), ("proxies", &["--fidelity", "0.25"][..])] {
        let mut args = vec!["search", "--store", "s", "--run", run_name];
        args.extend(QUICK);
        args.extend(["--trials", "40", "--seed", "3"]);
        args.extend(extra);
        ok(d.path(), &args);

        let mut args = vec!["search", "--store", &pg.url, "--run", run_name, "--workers"];
        args.extend(QUICK);
        args.extend(["--trials", "40", "--seed", "3"]);
        args.extend(extra);
        let controller = spawn(d.path(), &args);
        let workers = [worker(d.path(), &pg.url), worker(d.path(), &pg.url)];
        let said = finish(controller, "the controller");
        assert!(said.contains("workers: each batch is queued in"), "{said}");
        let mut finished = 0;
        for w in workers {
            let err = finish(w, "a worker");
            assert!(err.contains(&format!("run `{run_name}` trial ")), "{err}");
            finished += err.matches(&format!("run `{run_name}` trial ")).count();
        }
        assert_eq!(finished, 40, "every trial evaluated by a worker once");
        assert_eq!(
            identity(d.path(), &pg.url, run_name),
            identity(d.path(), "s", run_name),
            "{run_name}"
        );
        let (a, b) = (
            run_json(d.path(), "s", run_name),
            run_json(d.path(), &pg.url, run_name),
        );
        assert_eq!(front(&a), front(&b), "{run_name}");
        let seen = b["workers"].as_array().expect("workers");
        assert_eq!(seen.len(), 2, "{b}");
        let total: u64 = seen.iter().map(|w| w["finished"].as_u64().unwrap()).sum();
        assert_eq!(total, 40, "{b}");
    }
    let listing = ok(d.path(), &["runs", "--store", &pg.url]);
    assert!(
        listing.contains("trials finished, 0 in hand, last heartbeat"),
        "{listing}"
    );
}

/// Workers killed with SIGKILL at random moments (and started again), and the controller killed
/// once and resumed with `--workers`: the run ends with the trials and front of an uninterrupted one.
#[test]
fn workers_and_a_controller_killed_at_random_moments_lose_nothing() {
    let Some(pg) = PgDatabase::new("workers_and_a_controller_killed") else {
        return;
    };
    let d = Dir::new();
    let seeded = ["--trials", "64", "--seed", "9", "--strategy", "evolution"];
    let mut args = vec!["search", "--store", "s", "--run", "r"];
    args.extend(QUICK);
    args.extend(seeded);
    ok(d.path(), &args);

    let mut args = vec!["search", "--store", &pg.url, "--run", "r", "--workers"];
    args.extend(QUICK);
    args.extend(seeded);
    let mut controller = spawn(d.path(), &args);
    let mut workers: Vec<Child> = (0..3).map(|_| worker(d.path(), &pg.url)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let (mut worker_kills, mut controller_killed) = (0, false);
    let start = Instant::now();
    while worker_kills < 6 && start.elapsed() < PATIENCE {
        std::thread::sleep(Duration::from_millis(rng.random_range(100..800)));
        let i = rng.random_range(0..workers.len());
        let _ = workers[i].kill(); // SIGKILL
        let _ = workers[i].wait();
        workers[i] = worker(d.path(), &pg.url);
        worker_kills += 1;
        if worker_kills == 3 {
            let _ = controller.kill();
            let _ = controller.wait();
            controller_killed = true;
            controller = spawn(d.path(), &["resume", "r", "--store", &pg.url, "--workers"]);
        }
    }
    assert!(controller_killed);
    finish(controller, "the resumed controller");
    for w in workers {
        finish(w, "a worker");
    }
    assert_eq!(
        identity(d.path(), &pg.url, "r"),
        identity(d.path(), "s", "r")
    );
    assert_eq!(
        front(&run_json(d.path(), &pg.url, "r")),
        front(&run_json(d.path(), "s", "r"))
    );
}

/// A worker whose inputs differ from the run's (here: its search space file) refuses the run, says
/// why, and leaves its trials to a worker that has the run's inputs.
#[test]
fn a_worker_refuses_a_run_whose_inputs_differ_and_leaves_it_to_others() {
    let Some(pg) = PgDatabase::new("a_worker_refuses_a_run_whose_inputs_differ") else {
        return;
    };
    let here = Dir::new();
    let elsewhere = Dir::new();
    let space = |bits: &str| {
        format!(
            "[space]\nname = \"mine\"\n[defaults]\nfloat = [\"f32\"]\nbits = {bits}\nschemes = \
             [\"sym\"]\ngranularity = [\"channel\"]\n"
        )
    };
    here.write("space.toml", &space("[8, 4]"));
    elsewhere.write("space.toml", &space("[8]"));
    let mut args = vec![
        "search",
        "--store",
        &pg.url,
        "--run",
        "r",
        "--workers",
        "--space",
        "space.toml",
    ];
    args.extend(QUICK);
    args.extend(["--trials", "16", "--seed", "1"]);
    let controller = spawn(here.path(), &args);
    let stranger = worker(elsewhere.path(), &pg.url);
    let said = finish(stranger, "the worker with other inputs");
    assert!(
        said.contains("run `r`: refused, its trials are left to other workers"),
        "{said}"
    );
    assert!(said.contains("search space"), "{said}");
    assert!(said.contains("worker stopped: 0 trials finished"), "{said}");
    let good = worker(here.path(), &pg.url);
    finish(controller, "the controller");
    let said = finish(good, "the worker with the run's inputs");
    assert!(said.contains("run `r` trial 15:"), "{said}");
    assert_eq!(trials_json(here.path(), &pg.url, "r").len(), 16);
}

#[test]
fn workers_need_a_shared_store() {
    let d = Dir::new();
    let err = fails(d.path(), &["search", "--workers", "--store", "s"]);
    assert!(
        err.contains("--workers needs a store that workers share"),
        "{err}"
    );
    let err = fails(d.path(), &["worker", "--store", "s"]);
    assert!(
        err.contains("a worker needs the store its runs' controllers share"),
        "{err}"
    );
    let args = ["worker", "--store", "postgres://u@h/db", "--lease", "soon"];
    let out = run(d.path(), &args);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&args, &out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--lease `soon`"));
    assert!(!d.path().join("s").exists(), "nothing stored");
}
