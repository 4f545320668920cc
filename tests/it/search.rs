//! `search`, `resume`, `runs`, `trials` end to end on the demo: determinism whatever `--jobs`, a run
//! killed with SIGKILL and resumed against an uninterrupted one, the evaluation cache shared across
//! profiles, and the errors a user meets (inputs changed, impossible budget). A store in use: `store.rs`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{describe, fails, ok, run, trials_json, Dir, FAST};

/// Few sensitivity pairs and few trials: each search takes seconds in the debug build.
const QUICK: [&str; 8] = [
    "--pairs", "24", "--ask", "8", FAST[0], FAST[1], FAST[2], FAST[3],
];

fn search(cwd: &Path, store: &str, run_name: &str, extra: &[&str]) -> String {
    search_with(cwd, store, run_name, "24", extra)
}

/// [`search`] with `--pairs pairs` (`auto`, the default, or a number).
fn search_with(cwd: &Path, store: &str, run_name: &str, pairs: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "search", "--store", store, "--run", run_name, "--pairs", pairs, "--ask", "8",
    ];
    args.extend(FAST);
    args.extend(extra);
    ok(cwd, &args)
}

/// A trial as [`identity`] sees it.
type Identity = (
    u64,
    String,
    String,
    String,
    Option<f64>,
    Option<f64>,
    String,
);

/// What must be equal between two runs of the same seed: number, state, strategy, assignment hash,
/// quality, proxy quality (`--fidelity`) and cost of every trial.
fn identity(t: &[serde_json::Value]) -> Vec<Identity> {
    t.iter()
        .map(|v| {
            (
                v["trial"].as_u64().unwrap(),
                v["state"].as_str().unwrap().to_string(),
                v["strategy"].as_str().unwrap().to_string(),
                v["hash"].as_str().unwrap().to_string(),
                v["quality"].as_f64(),
                v["proxy"]["quality"].as_f64(),
                v["cost"].to_string(),
            )
        })
        .collect()
}

fn runs_json(cwd: &Path, store: &str) -> serde_json::Value {
    serde_json::from_str(&ok(cwd, &["runs", "--store", store, "--json"])).expect("runs JSON")
}

#[test]
fn search_on_the_demo_journals_every_trial_and_lists_its_run() {
    let d = Dir::new();
    let out = search(d.path(), "s", "first", &["--trials", "24"]);
    assert!(out.contains("front ("), "{out}");
    assert!(out.contains("mpsearch trials first --store s"), "{out}");
    let t = trials_json(d.path(), "s", "first");
    assert_eq!(t.len(), 24);
    for (i, v) in t.iter().enumerate() {
        assert_eq!(v["trial"].as_u64(), Some(i as u64));
        for k in [
            "state",
            "strategy",
            "quality",
            "cost",
            "hash",
            "assignment",
            "cached",
            "seconds",
        ] {
            assert!(v.get(k).is_some(), "trial line lacks `{k}`: {v}");
        }
        assert_eq!(v["state"], "complete", "{v}");
        assert!(v["cost"]["latency_us"].as_f64().unwrap() > 0.0);
        assert!(v["assignment"]["layers"].is_object(), "{v}");
    }
    let runs = runs_json(d.path(), "s");
    let r = &runs[0];
    assert_eq!(r["name"], "first");
    assert_eq!(r["status"], "complete");
    assert_eq!(r["trials"], 24);
    assert_eq!(r["profile"], "cortex-a76");
    assert_eq!(r["objective"], "latency");
    assert_eq!(
        r["evaluated"].as_u64().unwrap() + r["cache_hits"].as_u64().unwrap(),
        24
    );
    let front = r["front"].as_array().unwrap();
    assert!(!front.is_empty());
    for p in front {
        for k in ["trial", "quality", "cost", "hash", "assignment"] {
            assert!(p.get(k).is_some(), "front point lacks `{k}`: {p}");
        }
    }
    // The front is the non-dominated set of the journaled trials (latency against quality).
    let pts: Vec<(f64, f64, u64)> = t
        .iter()
        .map(|v| {
            (
                v["cost"]["latency_us"].as_f64().unwrap(),
                v["quality"].as_f64().unwrap(),
                v["trial"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut want: Vec<u64> = pts
        .iter()
        .filter(|a| {
            !pts.iter()
                .any(|b| b.0 <= a.0 && b.1 <= a.1 && (b.0 < a.0 || b.1 < a.1))
        })
        .map(|a| a.2)
        .collect();
    let mut got: Vec<u64> = front.iter().map(|p| p["trial"].as_u64().unwrap()).collect();
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, want);
}

#[test]
fn a_seeded_run_gives_the_same_trials_whatever_jobs_is() {
    let d = Dir::new();
    search(
        d.path(),
        "one",
        "r",
        &["--trials", "24", "--jobs", "1", "--seed", "3"],
    );
    search(
        d.path(),
        "two",
        "r",
        &["--trials", "24", "--jobs", "2", "--seed", "3"],
    );
    let a = identity(&trials_json(d.path(), "one", "r"));
    let b = identity(&trials_json(d.path(), "two", "r"));
    assert_eq!(a, b);
}

/// Runs `strategy` for 80 trials uninterrupted, then again killed with SIGKILL part-way and resumed:
/// both must end with the same trials and front (and, with `--pairs auto`, the same set-up).
fn killed_and_resumed_equals_uninterrupted(strategy: &str, pairs: &str, extra: &[&str]) {
    let d = Dir::new();
    let common = [
        &["--trials", "80", "--seed", "5", "--strategy", strategy][..],
        extra,
    ]
    .concat();
    search_with(d.path(), "whole", "r", pairs, &common);
    let whole = identity(&trials_json(d.path(), "whole", "r"));
    assert_eq!(whole.len(), 80);

    // Warm the second store's sensitivity record so the killed run starts its trials at once: a
    // fixed sample is keyed by its seed; a frugal set-up by the problem and its budget (a fifth of
    // 80 trials), not by the seed or strategy, so other trials warm it without caching these.
    let warm: &[&str] = if pairs == "auto" {
        &["--trials", "80", "--seed", "99", "--strategy", "random"]
    } else {
        &["--trials", "1", "--seed", "5"]
    };
    search_with(d.path(), "killed", "warm", pairs, warm);
    let mut delay = Duration::from_millis(1500);
    let mut killed_at = None;
    for attempt in 0..6 {
        let name = format!("r{attempt}");
        let mut args = vec![
            "search", "--store", "killed", "--run", &name, "--pairs", pairs, "--ask", "8",
        ];
        args.extend(FAST);
        args.extend(&common);
        let mut child = Command::new(env!("CARGO_BIN_EXE_mpsearch"))
            .args(&args)
            .current_dir(d.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mpsearch");
        std::thread::sleep(delay);
        child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix.
        child.wait().unwrap();
        let n = trials_json(d.path(), "killed", &name).len();
        if n > 0 && n < 80 {
            killed_at = Some((name, n));
            break;
        }
        // Too early (still setting up) or too late (finished): try another delay.
        delay = if n == 0 { delay * 2 } else { delay / 2 };
    }
    let (name, n) = killed_at.expect("could not kill the run part-way in 6 attempts");
    eprintln!("killed after {n} journaled trials");
    let out = ok(d.path(), &["resume", &name, "--store", "killed"]);
    assert!(out.contains("trial budget spent"), "{out}");
    let resumed = identity(&trials_json(d.path(), "killed", &name));
    assert_eq!(
        resumed, whole,
        "resumed run differs from the uninterrupted one"
    );
    let fronts: Vec<serde_json::Value> = runs_json(d.path(), "killed")
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["name"] == name.as_str())
        .map(|r| r["front"].clone())
        .collect();
    let whole_front = runs_json(d.path(), "whole")[0]["front"].clone();
    let strip = |f: &serde_json::Value| -> Vec<(u64, String)> {
        f.as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["trial"].as_u64().unwrap(),
                    p["hash"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(strip(&fronts[0]), strip(&whole_front));
    let setup = |store: &str, run: &str| {
        runs_json(d.path(), store)
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == run)
            .map(|r| (r["setup"]["key"].clone(), r["setup"]["measured"].clone()))
            .unwrap()
    };
    assert_eq!(setup("killed", &name), setup("whole", "r"));
}

#[test]
fn a_run_killed_with_sigkill_and_resumed_ends_like_an_uninterrupted_one() {
    killed_and_resumed_equals_uninterrupted("evolution", "24", &[]);
}

#[test]
fn a_bayes_run_killed_with_sigkill_and_resumed_ends_like_an_uninterrupted_one() {
    killed_and_resumed_equals_uninterrupted("bayes", "24", &[]);
}

#[test]
fn a_run_with_proxies_killed_with_sigkill_and_resumed_ends_like_an_uninterrupted_one() {
    killed_and_resumed_equals_uninterrupted("bayes", "24", &["--fidelity", "0.25"]);
}

#[test]
fn a_frugal_bayes_run_killed_with_sigkill_and_resumed_ends_like_an_uninterrupted_one() {
    killed_and_resumed_equals_uninterrupted("bayes", "auto", &[]);
}

#[test]
fn a_seeded_frugal_run_gives_the_same_set_up_and_trials_whatever_jobs_is() {
    let d = Dir::new();
    let common = ["--trials", "40", "--seed", "3"];
    search_with(
        d.path(),
        "one",
        "r",
        "auto",
        &[&common[..], &["--jobs", "1"]].concat(),
    );
    search_with(
        d.path(),
        "two",
        "r",
        "auto",
        &[&common[..], &["--jobs", "2"]].concat(),
    );
    let a = identity(&trials_json(d.path(), "one", "r"));
    let b = identity(&trials_json(d.path(), "two", "r"));
    assert_eq!(a, b);
    let (x, y) = (
        &runs_json(d.path(), "one")[0],
        &runs_json(d.path(), "two")[0],
    );
    assert_eq!(x["setup"], y["setup"]);
    assert_eq!(x["evaluations"], y["evaluations"]);
}

/// `--fidelity 0.25` on the demo's first 50 images: every trial is first evaluated on the first 13; the
/// pruned ones never reach the front; the run is the same whatever `--jobs`; and it ends with the
/// held-out front of the same run without proxies for fewer evaluations, counted in full ones.
#[test]
fn proxies_prune_trials_and_keep_the_front_for_fewer_evaluations() {
    let d = Dir::new();
    let common = ["--trials", "64", "--seed", "1"];
    let out = search(
        d.path(),
        "fid",
        "r",
        &[&common[..], &["--fidelity", "0.25", "--jobs", "1"]].concat(),
    );
    assert!(out.contains("proxy: the first 13 search samples"), "{out}");
    search(
        d.path(),
        "fid2",
        "r",
        &[&common[..], &["--fidelity", "0.25", "--jobs", "2"]].concat(),
    );
    search(d.path(), "full", "r", &common);
    let trials = trials_json(d.path(), "fid", "r");
    assert_eq!(
        identity(&trials),
        identity(&trials_json(d.path(), "fid2", "r"))
    );

    let run = runs_json(d.path(), "fid")[0].clone();
    let proxy = &run["proxy"];
    assert_eq!(proxy["samples"], 13);
    assert_eq!(proxy["proxies"], 64, "every trial has a proxy: {proxy}");
    let (promoted, pruned) = (
        proxy["promoted"].as_u64().unwrap(),
        proxy["pruned"].as_u64().unwrap(),
    );
    assert_eq!(promoted + pruned, 64);
    assert!(pruned > 0 && promoted >= 8, "{proxy}");
    assert!(proxy["spearman"].as_f64().unwrap() > 0.5, "{proxy}");
    for t in &trials {
        assert!(t["proxy"]["quality"].is_number(), "{t}");
        if t["state"] == "pruned" {
            assert!(t["quality"].is_null(), "{t}");
        }
    }
    let front: Vec<u64> = run["front"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["trial"].as_u64().unwrap())
        .collect();
    assert!(front
        .iter()
        .all(|&n| trials[n as usize]["state"] == "complete"));
    // The evaluations: a proxy counts as its share of a full one (13 of 50 samples).
    let e = &run["evaluations"];
    let proxies = e["proxy"]["evaluated"].as_u64().unwrap();
    assert_eq!(proxies, 64);
    let full = e["total"].as_u64().unwrap() - proxies;
    let expected = full as f64 + 13.0 / 50.0 * proxies as f64;
    assert!(
        (e["full_equivalent"].as_f64().unwrap() - expected).abs() <= 1e-9 * expected,
        "{e}: {expected} full evaluations expected"
    );
    let without = runs_json(d.path(), "full")[0].clone();
    assert!(
        e["full_equivalent"].as_f64().unwrap() < without["evaluations"]["total"].as_f64().unwrap(),
        "{e} vs {}",
        without["evaluations"]
    );
    // A proxy may prune a point the full run keeps (on the former demo the fronts were equal): the
    // front keeps 99% of its held-out hypervolume.
    let hv = |r: &serde_json::Value| r["held_out_hypervolume"].as_f64().unwrap();
    assert!(
        hv(&run) >= 0.99 * hv(&without),
        "held-out hypervolume {} with proxies, {} without",
        hv(&run),
        hv(&without)
    );
    // The proxy evaluations are in the cache under their own keys: a second run is answered by it.
    let again = search(
        d.path(),
        "fid",
        "again",
        &[&common[..], &["--fidelity", "0.25"]].concat(),
    );
    assert!(again.contains("proxies 0 (+64 from the cache)"), "{again}");
}

/// The default set-up on the demo: it measures a small part of the space's pairs, stops by its own
/// rule before its budget, and every evaluation of the run is counted where it belongs.
#[test]
fn the_frugal_set_up_measures_few_pairs_and_every_evaluation_is_counted() {
    let d = Dir::new();
    let args = [
        "search", "--store", "s", "--run", "r", "--trials", "150", FAST[0], FAST[1], FAST[2],
        FAST[3],
    ];
    let out = run(d.path(), &args);
    assert!(out.status.success(), "{}", describe(&args, &out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sensitivity: frugal set-up, at most 30 one-at-a-time measurements"),
        "{err}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("evaluations: "), "{stdout}");
    let r = &runs_json(d.path(), "s")[0];
    assert_eq!(r["pairs"], "auto");
    let setup = &r["setup"];
    let measured = setup["measured"].as_u64().unwrap();
    // 7 searchable groups and hundreds of compressing pairs; the budget is a fifth of 150 trials.
    // With 7 groups a round measures 7 pairs: on the Fashion-MNIST demo the predicted front still
    // changes after 4 rounds, and the set-up stops at its budget (on the former 4-layer demo it
    // stopped by its own rule at about 16).
    assert_eq!(setup["budget"], 30, "{setup}");
    assert!((7..=30).contains(&measured), "{setup}");
    let stop = setup["stop"].as_str().unwrap();
    assert!(["stable", "covered", "budget"].contains(&stop), "{setup}");
    assert_eq!(stop == "budget", measured == 30, "{setup}");
    assert_eq!(setup["reused"], false);

    let e = &r["evaluations"];
    assert_eq!(e["complete"], true);
    assert_eq!(e["setup"]["evaluated"].as_u64().unwrap(), measured, "{e}");
    let t = trials_json(d.path(), "s", "r");
    let count = |baseline: bool, cached: bool| {
        t.iter()
            .filter(|v| (v["strategy"] == "baseline") == baseline && v["cached"] == cached)
            .count() as u64
    };
    assert_eq!(
        e["trials"]["evaluated"].as_u64().unwrap(),
        count(false, false),
        "{e}"
    );
    assert_eq!(
        e["trials"]["cached"].as_u64().unwrap(),
        count(false, true),
        "{e}"
    );
    assert_eq!(
        e["baselines"]["evaluated"].as_u64().unwrap(),
        count(true, false),
        "{e}"
    );
    // A fresh store: each front point was evaluated on the held-out split once.
    let front = r["front"].as_array().unwrap().len() as u64;
    assert_eq!(e["held_out"]["evaluated"].as_u64().unwrap(), front, "{e}");
    let parts: u64 = ["setup", "baselines", "trials", "held_out"]
        .iter()
        .map(|k| e[*k]["evaluated"].as_u64().unwrap())
        .sum();
    assert_eq!(e["total"].as_u64().unwrap(), parts);
    // The demo's front is found with few evaluations: 99% of the final hypervolume in 49 of the
    // run's 180-odd, set-up (30) and baselines included, when measured on the Fashion-MNIST demo's
    // first 50 images (the issue's target of 40 was set on the former 4-layer demo).
    let to99 = r["evaluations_to_99_percent"].as_f64().unwrap();
    assert!(
        to99 <= 60.0,
        "{to99} evaluations to 99% of the final hypervolume"
    );

    // A second run of the same problem reuses the set-up: nothing measured, and said.
    let args = [
        "search", "--store", "s", "--run", "again", "--trials", "150", "--seed", "1", FAST[0],
        FAST[1], FAST[2], FAST[3],
    ];
    let out = run(d.path(), &args);
    assert!(out.status.success(), "{}", describe(&args, &out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sensitivity model reused from the store")
    );
    let again = runs_json(d.path(), "s")
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "again")
        .cloned()
        .unwrap();
    assert_eq!(again["setup"]["reused"], true);
    assert_eq!(again["setup"]["key"], setup["key"]);
    assert_eq!(again["evaluations"]["setup"]["evaluated"], 0);
    // Another budget (a fifth of 130 trials is 26): one the set-up did not reach measures the same
    // pairs, so it reuses the same analysis; a set-up cut by its budget of 30 is not that of 26.
    let args = [
        "search", "--store", "s", "--run", "other", "--trials", "130", FAST[0], FAST[1], FAST[2],
        FAST[3],
    ];
    let out = run(d.path(), &args);
    assert!(out.status.success(), "{}", describe(&args, &out));
    let other = runs_json(d.path(), "s")
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "other")
        .cloned()
        .unwrap();
    assert_eq!(other["setup"]["budget"], 26);
    if measured <= 26 && stop != "budget" {
        assert_eq!(other["setup"]["key"], setup["key"], "{}", other["setup"]);
        assert_eq!(other["evaluations"]["setup"]["evaluated"], 0);
    } else {
        assert_ne!(other["setup"]["key"], setup["key"], "{}", other["setup"]);
        assert_eq!(other["setup"]["reused"], false, "{}", other["setup"]);
    }
}

/// The uniform baselines of the demo space (all-f32, all-f16, all-int8, …), each evaluated and costed
/// on its own by `mpsearch eval --profile cortex-a76`: `(label, latency µs, quality)`.
fn demo_baselines(cwd: &Path) -> Vec<(String, f64, f64)> {
    let inv = mpsearch::model::inventory(&mpsearch::model::ModelSource::Demo).unwrap();
    let space = mpsearch::shipped::space("demo", &inv.layers).unwrap();
    let b = space.baselines();
    assert!(b.len() >= 4, "the demo space has several baselines");
    b.iter()
        .map(|(label, _, a)| {
            let file = format!("{label}.json");
            let path = cwd.join(&file);
            std::fs::write(&path, a.to_json_string()).unwrap();
            let out = ok(
                cwd,
                &["eval", "--assignment", &file, "--profile", "cortex-a76"],
            );
            let v: serde_json::Value = serde_json::from_str(out.trim()).expect("eval JSON");
            (
                label.clone(),
                v["cost"]["latency_us"].as_f64().unwrap(),
                v["quality"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_default_search_front_dominates_or_matches_every_uniform_baseline() {
    let d = Dir::new();
    // On the full splits (no --samples): the baselines are evaluated by `eval`, which uses them.
    ok(
        d.path(),
        &[
            "search", "--store", "s", "--run", "r", "--pairs", "24", "--ask", "8", "--trials",
            "32", "--seed", "2",
        ],
    );
    let runs = runs_json(d.path(), "s");
    assert_eq!(runs[0]["strategy"], "bayes", "the default strategy");
    let front: Vec<(f64, f64)> = runs[0]["front"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["cost"]["latency_us"].as_f64().unwrap(),
                p["quality"].as_f64().unwrap(),
            )
        })
        .collect();
    let trials = trials_json(d.path(), "s", "r");
    let baseline_trials = trials
        .iter()
        .take_while(|t| t["strategy"] == "baseline")
        .count();
    for (label, latency, quality) in demo_baselines(d.path()) {
        let matched = front
            .iter()
            .any(|&(c, q)| c <= latency * (1.0 + 1e-9) && q <= quality + 1e-12);
        assert!(
            matched,
            "{label} (latency {latency} µs, quality {quality}) is better than every front point: \
             {front:?}"
        );
    }
    assert!(
        baseline_trials >= 4,
        "the run starts with the baselines: {baseline_trials} baseline trials"
    );
}

#[test]
fn another_profile_reuses_every_cached_evaluation() {
    let d = Dir::new();
    let rnd = ["--trials", "16", "--strategy", "random", "--seed", "9"];
    search(
        d.path(),
        "s",
        "a76",
        &[&rnd[..], &["--profile", "cortex-a76"]].concat(),
    );
    let out = search(
        d.path(),
        "s",
        "avx2",
        &[&rnd[..], &["--profile", "x86-avx2"]].concat(),
    );
    assert!(out.contains("0 evaluated, 16 from the cache"), "{out}");
    let runs = runs_json(d.path(), "s");
    let avx2 = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "avx2")
        .unwrap();
    assert_eq!(avx2["evaluated"], 0, "{avx2}");
    assert_eq!(avx2["cache_hits"], 16, "{avx2}");
    // Same assignments and qualities, other costs.
    let a = trials_json(d.path(), "s", "a76");
    let b = trials_json(d.path(), "s", "avx2");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x["hash"], y["hash"]);
        assert_eq!(x["quality"], y["quality"]);
        assert_ne!(x["cost"]["latency_us"], y["cost"]["latency_us"]);
    }
}

#[test]
fn resume_refuses_a_run_whose_search_space_changed() {
    let d = Dir::new();
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("search-spaces/demo.toml"),
    )
    .unwrap();
    let space = d.write("space.toml", &text);
    let sp = space.to_str().unwrap();
    search(d.path(), "s", "r", &["--trials", "8", "--space", sp]);
    // Narrow the space: drop every 2-bit choice.
    let narrowed = text.replace("bits = [8, 6, 4, 3, 2]", "bits = [8, 6, 4, 3]");
    assert_ne!(narrowed, text, "the edit must change the space");
    std::fs::write(&space, narrowed).unwrap();
    let err = fails(d.path(), &["resume", "r", "--store", "s", "--trials", "8"]);
    assert!(err.contains("search space"), "{err}");
    assert!(err.contains("start a new run"), "{err}");
    // Nothing was lost: the run still has its 8 trials.
    assert_eq!(trials_json(d.path(), "s", "r").len(), 8);
}

#[test]
fn a_fidelity_that_is_not_a_share_is_refused_before_anything_is_stored() {
    let d = Dir::new();
    for f in ["1.5", "0", "1", "-0.2", "nan"] {
        let arg = format!("--fidelity={f}");
        let err = fails(d.path(), &["search", "--store", "s", &arg, "--trials", "5"]);
        assert!(
            err.contains("--fidelity") && err.contains("above 0 and below 1"),
            "{f}: {err}"
        );
    }
    assert!(!d.path().join("s").exists(), "nothing is stored");
}

#[test]
fn an_impossible_budget_is_refused_before_any_evaluation() {
    let d = Dir::new();
    let err = fails(
        d.path(),
        &[
            "search",
            "--store",
            "s",
            "--max-latency",
            "1us",
            "--trials",
            "5",
        ],
    );
    assert!(
        err.contains("impossible") && err.contains("reachable"),
        "{err}"
    );
    let out = run(d.path(), &["runs", "--store", "s"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("holds no runs"),
        "{}",
        describe(&["runs"], &out)
    );
}

#[test]
fn resume_extends_a_finished_run_by_more_trials() {
    let d = Dir::new();
    search(d.path(), "s", "r", &["--trials", "8"]);
    ok(d.path(), &["resume", "r", "--store", "s", "--trials", "8"]);
    assert_eq!(trials_json(d.path(), "s", "r").len(), 16);
    let err = fails(d.path(), &["resume", "nope", "--store", "s"]);
    assert!(err.contains("no run `nope`") && err.contains("r"), "{err}");
}

#[test]
fn ctrl_c_stops_cleanly_and_says_how_to_resume() {
    let d = Dir::new();
    // Warm the sensitivity record so trials start at once.
    search(d.path(), "s", "warm", &["--trials", "1"]);
    let child = Command::new(env!("CARGO_BIN_EXE_mpsearch"))
        .args(["search", "--store", "s", "--run", "r", "--trials", "100000"])
        .args(QUICK)
        .current_dir(d.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mpsearch");
    std::thread::sleep(Duration::from_secs(4));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let text = describe(&["search", "(interrupted)"], &out);
    assert_eq!(out.status.code(), Some(130), "{text}");
    assert!(
        text.contains("resume with: mpsearch resume r --store s"),
        "{text}"
    );
    let n = trials_json(d.path(), "s", "r").len();
    assert!(n > 0, "{text}");
    let runs = runs_json(d.path(), "s");
    let r = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "r")
        .unwrap();
    assert_eq!(r["status"], "interrupted");
    ok(d.path(), &["resume", "r", "--store", "s", "--trials", "8"]);
    // Trials left running by the interruption are finished first (under their own numbers), then
    // 8 more.
    let after = trials_json(d.path(), "s", "r");
    assert_eq!(after.len(), n + 8);
    assert!(after.iter().all(|t| t["state"] == "complete"));
}

#[test]
fn failed_evaluations_are_recorded_as_failed_trials_and_the_search_goes_on() {
    use std::sync::atomic::AtomicBool;

    use mpsearch::cost::Objective;
    use mpsearch::eval::{Evaluation, Evaluator};
    use mpsearch::search::{self, Control, Progress};
    use mpsearch::space::Assignment;
    use mpsearch::store::{self, RunConfig, SledStore, TrialState};
    use mpsearch::strategy::StrategyKind;

    /// Fails a third of the assignments, gives NaN for another third (decided by the hash).
    struct Flaky<'a>(&'a dyn Evaluator);
    impl Evaluator for Flaky<'_> {
        fn fingerprint(&self) -> blake3::Hash {
            blake3::hash(b"flaky evaluator")
        }
        fn objective(&self) -> &'static str {
            self.0.objective()
        }
        fn evaluate(&self, a: &Assignment) -> mpsearch::Result<Evaluation> {
            match a.hash().as_bytes()[0] % 3 {
                0 => Err(mpsearch::Error::Eval {
                    message: "simulated failure".into(),
                }),
                1 => Ok(Evaluation {
                    quality: f64::NAN,
                    metrics: Default::default(),
                    seconds: 0.0,
                }),
                _ => self.0.evaluate(a),
            }
        }
    }

    let d = Dir::new();
    let store = SledStore::open(&d.path().join("s")).unwrap();
    let config = RunConfig {
        strategy: StrategyKind::Evolution,
        objective: Objective::Size,
        seed: 1,
        trials: Some(40),
        pairs: mpsearch::sensitivity::Pairs::Fixed(12),
        ..RunConfig::default()
    };
    let (session, manifest) = search::create(
        &store,
        "flaky",
        config,
        &AtomicBool::new(false),
        &mut |_, _, _| {},
    )
    .unwrap();
    let stop = AtomicBool::new(false);
    let mut progress = |_: &Progress| {};
    let flaky = Flaky(session.evaluator.as_ref());
    let outcome = search::run(
        &session,
        &flaky,
        &store,
        manifest,
        &mut Control {
            workers: None,
            jobs: 1,
            stop: &stop,
            progress: &mut progress,
        },
    )
    .unwrap();
    assert_eq!(outcome.trials.len(), 40, "the search went on to its budget");
    let failed: Vec<_> = outcome
        .trials
        .iter()
        .filter(|t| t.state == TrialState::Failed)
        .collect();
    let complete = outcome
        .trials
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .count();
    assert!(!failed.is_empty() && complete > 0, "{failed:?}");
    assert_eq!(failed.len() + complete, 40);
    for t in failed {
        let e = t.error.as_deref().unwrap_or("");
        assert!(
            e.contains("simulated failure") || e.contains("quality of NaN"),
            "trial {}: {e}",
            t.number
        );
        assert!(t.quality.is_none());
    }
    // Failed trials never reach the front.
    let front = store::front(&outcome.manifest.config, &outcome.trials);
    assert!(front.iter().all(|t| t.state == TrialState::Complete));
}

#[test]
fn a_time_budget_alone_ends_the_run_by_time_not_by_the_default_trial_budget() {
    let d = Dir::new();
    let out = search(d.path(), "s", "t", &["--time", "3s"]);
    assert!(out.contains("time budget spent"), "{out}");
    let n = trials_json(d.path(), "s", "t").len();
    assert!(n > 0, "{out}");
    let runs = runs_json(d.path(), "s");
    assert!(
        runs[0]["elapsed_seconds"].as_f64().unwrap() >= 3.0,
        "{runs}"
    );
    let err = fails(d.path(), &["search", "--store", "s", "--time", "soon"]);
    assert!(err.contains("--time `soon`") && err.contains("8h"), "{err}");
}

#[test]
fn the_front_is_evaluated_on_the_held_out_split_when_the_run_ends() {
    use mpsearch::eval::{EvalSplit, Evaluator};
    use mpsearch::store::Store;
    let d = Dir::new();
    let out = search(d.path(), "s", "r", &["--trials", "24"]);
    assert!(out.contains("held-out − search quality over"), "{out}");
    let runs = runs_json(d.path(), "s");
    let r = &runs[0];
    assert_eq!(
        r["splits"],
        serde_json::json!({"calibration": 300, "search": 50, "held_out": 50}),
        "--samples 50 cuts the search and held-out splits"
    );
    let front = r["front"].as_array().unwrap();
    assert_eq!(
        r["held_out_gap"]["points"].as_u64(),
        Some(front.len() as u64)
    );
    assert_eq!(r["held_out_gap"]["missing"].as_u64(), Some(0));

    // Each held-out quality is the evaluator's on the held-out split, and not its search quality.
    let ev = crate::util::cli_evaluator(Some(50), mpsearch::compress::Rounding::Rtn);
    let space = mpsearch::shipped::space("demo", &ev.model().inventory().layers).unwrap();
    let mut differ = 0;
    for p in front {
        let held = p["held_out_quality"]
            .as_f64()
            .unwrap_or_else(|| panic!("{p}"));
        assert!(p["held_out_metrics"]["accuracy"].as_f64().is_some(), "{p}");
        let a = space
            .assignment_from_json(&serde_json::from_value(p["assignment"].clone()).unwrap())
            .unwrap();
        // (Within f64 rounding: candle may sum in another order in another process.)
        let again = ev.evaluate_on(EvalSplit::HeldOut, &a).unwrap().quality;
        assert!(crate::util::close(again, held, 1e-9), "{again} vs {held}");
        let search = ev.evaluate(&a).unwrap().quality;
        assert!(crate::util::close(
            search,
            p["quality"].as_f64().unwrap(),
            1e-9
        ));
        differ += usize::from(held != p["quality"].as_f64().unwrap());
    }
    assert!(
        differ > 0,
        "held-out qualities equal the search ones: {front:?}"
    );

    // `trials --json` marks the front points and gives them their held-out quality.
    let t = trials_json(d.path(), "s", "r");
    let on_front: Vec<&serde_json::Value> = t.iter().filter(|v| !v["point"].is_null()).collect();
    assert_eq!(on_front.len(), front.len());
    for v in on_front {
        assert!(v["held_out_quality"].as_f64().is_some(), "{v}");
    }

    // Resuming a finished run re-uses the cached held-out evaluations: nothing new is evaluated.
    let count = || {
        mpsearch::store::SledStore::open(&d.path().join("s"))
            .unwrap()
            .counts()
            .unwrap()
            .cached_evaluations
    };
    let before = count();
    let args = ["resume", "r", "--store", "s"];
    let out = run(d.path(), &args);
    assert!(out.status.success(), "{}", describe(&args, &out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("held-out split:"),
        "{}",
        describe(&args, &out)
    );
    assert_eq!(count(), before, "resume evaluated something");
}

/// A run with proxies stopped part-way through a batch (some of its trials finished, the rest left
/// `running`) and resumed decides that batch's remaining trials as the uninterrupted run did: the
/// gate is built from the trials before the batch, never from its own finished ones.
#[test]
fn a_run_with_proxies_stopped_inside_a_batch_resumes_to_the_same_trials() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use mpsearch::eval::{EvalSplit, Evaluation, Evaluator};
    use mpsearch::search::{self, Control, Progress};
    use mpsearch::space::Assignment;
    use mpsearch::store::{RunConfig, SledStore, Store};

    /// Sets `stop` once `after` proxy evaluations (one per trial started) have been made.
    struct StopAfter<'a> {
        inner: &'a dyn Evaluator,
        started: AtomicUsize,
        after: usize,
        stop: &'a AtomicBool,
    }
    impl Evaluator for StopAfter<'_> {
        fn fingerprint(&self) -> blake3::Hash {
            self.inner.fingerprint()
        }
        fn objective(&self) -> &'static str {
            self.inner.objective()
        }
        fn evaluate(&self, a: &Assignment) -> mpsearch::Result<Evaluation> {
            self.inner.evaluate(a)
        }
        fn evaluate_on(&self, split: EvalSplit, a: &Assignment) -> mpsearch::Result<Evaluation> {
            if matches!(split, EvalSplit::Proxy(_))
                && self.started.fetch_add(1, Ordering::SeqCst) + 1 >= self.after
            {
                self.stop.store(true, Ordering::SeqCst);
            }
            self.inner.evaluate_on(split, a)
        }
        fn search_samples(&self) -> Option<usize> {
            self.inner.search_samples()
        }
    }

    let config = RunConfig {
        seed: 2,
        trials: Some(64),
        pairs: mpsearch::sensitivity::Pairs::Fixed(24),
        fidelity: Some(0.25),
        ..crate::util::fast_config()
    };
    let drive = |store: &SledStore, after: usize| {
        let name = "r";
        let (session, manifest) = match store.run(name).unwrap() {
            None => search::create(
                store,
                name,
                config.clone(),
                &AtomicBool::new(false),
                &mut |_, _, _| {},
            )
            .unwrap(),
            Some(_) => {
                search::open(store, name, &AtomicBool::new(false), &mut |_, _, _| {}).unwrap()
            }
        };
        let stop = AtomicBool::new(false);
        let ev = StopAfter {
            inner: session.evaluator.as_ref(),
            started: AtomicUsize::new(0),
            after,
            stop: &stop,
        };
        let mut progress = |_: &Progress| {};
        search::run(
            &session,
            &ev,
            store,
            manifest,
            &mut Control {
                workers: None,
                jobs: 1,
                stop: &stop,
                progress: &mut progress,
            },
        )
        .unwrap()
    };
    /// Number, state, point, quality and proxy quality of a trial.
    type Decided = (u64, String, Vec<u16>, Option<f64>, Option<f64>);
    let identity = |o: &search::Outcome| -> Vec<Decided> {
        o.trials
            .iter()
            .map(|t| {
                (
                    t.number,
                    t.state.to_string(),
                    t.point.clone(),
                    t.quality,
                    t.proxy.as_ref().map(|p| p.quality),
                )
            })
            .collect()
    };
    let d = Dir::new();
    let whole = drive(
        &SledStore::open(&d.path().join("whole")).unwrap(),
        usize::MAX,
    );
    assert!(whole.trials.iter().any(|t| t.state.to_string() == "pruned"));
    // The baselines are trials 0–4 and the strategy's batches start at 5, 13, 21…: each trial
    // journals its batch's first trial.
    let starts: Vec<Option<u64>> = whole.trials.iter().map(|t| t.batch).collect();
    assert_eq!(
        &starts[..14],
        &[[Some(0); 5].as_slice(), &[Some(5); 8], &[Some(13)]].concat()[..]
    );
    // Stopped after trial 9 (the batch's own finished trials would give the gate its first 8 pairs:
    // the batch must still be decided as a whole, every trial in full) and inside a later batch.
    for cut in [10, 27] {
        let store = SledStore::open(&d.path().join(format!("cut{cut}"))).unwrap();
        let first = drive(&store, cut);
        assert!(
            first
                .trials
                .iter()
                .any(|t| t.state.to_string() == "running"),
            "cut {cut}"
        );
        let resumed = drive(&store, usize::MAX);
        assert_eq!(
            identity(&resumed),
            identity(&whole),
            "stopped after trial {cut}"
        );
    }
}

/// Trials refine the predictor by default: the search says what each refit chose, and the strategy
/// asks the same points as with `--no-refine` until the first refit that changed the predictor, other
/// points from there on; `runs --json` says whether the run refines.
#[test]
fn trials_refine_the_predictor_the_strategy_is_asked_with_unless_told_not_to() {
    let d = Dir::new();
    let common = ["--trials", "48", "--seed", "2"];
    let refined = search_with(d.path(), "a", "r", "auto", &common);
    let kept = search_with(
        d.path(),
        "b",
        "r",
        "auto",
        &[&common[..], &["--no-refine"]].concat(),
    );
    let line = refined
        .lines()
        .find(|l| l.starts_with("predictor: refitted to the trials"))
        .unwrap_or_else(|| panic!("no refit line in:\n{refined}"));
    assert!(
        line.contains("at 16 trials the ") && line.contains("at 32 trials the "),
        "{line}"
    );
    // The first refit that changed the predictor.
    let first = line
        .split("; ")
        .find(|part| part.contains(" refit (mean squared log error"))
        .and_then(|part| {
            part.split("at ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no refit adopted: {line}"));
    assert!(!kept.contains("predictor: refitted"), "{kept}");
    assert_eq!(runs_json(d.path(), "a")[0]["refine"], true);
    assert_eq!(runs_json(d.path(), "b")[0]["refine"], false);
    let (a, b) = (
        identity(&trials_json(d.path(), "a", "r")),
        identity(&trials_json(d.path(), "b", "r")),
    );
    assert_eq!(
        a[..first],
        b[..first],
        "the same trials before the refit at {first}"
    );
    assert_ne!(
        a[first..],
        b[first..],
        "the refit at {first} changed nothing the strategy asked"
    );
}

/// With `--time`, the frugal set-up stops at a fifth of the run's time, cheap errors included: on the
/// demo at `--time 1s` (0.2 s for the set-up, less than its 24 measurements take) it is cut by time,
/// says so up front and in its note, and the run goes on to its trials.
#[test]
fn a_time_budget_cuts_the_frugal_set_up_at_its_share() {
    let d = Dir::new();
    let args = ["search", "--store", "s", "--run", "t", "--time", "1s"];
    let out = run(d.path(), &args);
    assert!(out.status.success(), "{}", describe(&args, &out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("s of the run's time, cheap errors included"),
        "{err}"
    );
    assert!(
        err.contains("the set-up's share of the time budget is spent"),
        "{err}"
    );
    let runs = runs_json(d.path(), "s");
    assert_eq!(runs[0]["setup"]["stop"], "time", "{runs}");
    assert!(runs[0]["trials"].as_u64().unwrap() > 0, "{runs}");
}
