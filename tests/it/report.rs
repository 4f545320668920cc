//! `report` end to end on a real demo search: the files it writes, its data against the stored
//! trials (front, hypervolume, baselines from the cache, held-out qualities), re-costing under another
//! profile without a single search-split evaluation (held-out ones only for points new to the front), and
//! a report whose run's evaluator cannot be had (built, saying the held-out figures are missing). The
//! page loading in headless Chromium is in `tests/external/page.rs`.

use std::collections::BTreeSet;
use std::path::Path;

use mpsearch::report::data::PointStatus;
use mpsearch::store::{SledStore, Store, TrialState};

use crate::util::{describe, ok, run, Dir, FEW};

/// The plots every report holds.
const PLOTS: [&str; 4] = ["front", "allocation", "hypervolume", "sensitivity"];

/// A 24-trial search of the demo in store `s`, run `r`; returns its output.
fn demo_search(cwd: &Path) -> String {
    ok(
        cwd,
        &[
            "search", "--store", "s", "--run", "r", "--trials", "24", "--pairs", "24", FEW[0],
            FEW[1],
        ],
    )
}

fn open(dir: &Path) -> SledStore {
    SledStore::open(dir).unwrap_or_else(|e| panic!("opening store {}: {e}", dir.display()))
}

fn assert_report_files(dir: &Path) {
    assert!(dir.join("index.html").is_file(), "{}", dir.display());
    for p in PLOTS {
        for ext in ["svg", "png"] {
            let f = dir.join(format!("{p}.{ext}"));
            let len = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
            assert!(len > 1000, "{} missing or tiny ({len} bytes)", f.display());
        }
    }
}

#[test]
fn search_writes_the_report_and_report_rebuilds_it_from_the_store() {
    let d = Dir::new();
    let out = demo_search(d.path());
    assert!(
        out.contains("report: mpsearch-reports/r/index.html"),
        "{out}"
    );
    assert_report_files(&d.path().join("mpsearch-reports/r"));

    let printed = ok(d.path(), &["report", "r", "--store", "s", "--out", "mine"]);
    assert_eq!(printed.trim(), "mine/index.html");
    assert_report_files(&d.path().join("mine"));

    // The data behind the plots, against the stored trials.
    let store = open(&d.path().join("s"));
    let data = mpsearch::report::load(&store, "r", None).unwrap();
    let trials = store.trials("r").unwrap();
    let pts: Vec<(u64, f64, f64)> = trials
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .filter_map(|t| Some((t.number, t.cost.latency_us, t.quality?)))
        .collect();
    let brute: BTreeSet<u64> = pts
        .iter()
        .filter(|p| {
            !pts.iter()
                .any(|q| q.1 <= p.1 && q.2 <= p.2 && (q.1 < p.1 || q.2 < p.2))
        })
        .map(|p| p.0)
        .collect();
    let front: BTreeSet<u64> = data.front.iter().map(|f| f.trial).collect();
    assert_eq!(
        front, brute,
        "front = non-dominated set of the stored trials"
    );
    assert_eq!(data.points.len(), pts.len());

    let hv = &data.hypervolume[0];
    assert!(hv.current);
    assert_eq!(hv.values.len(), trials.len());
    assert!(
        hv.values.windows(2).all(|w| w[1] >= w[0]),
        "{:?}",
        hv.values
    );
    let m = mpsearch::store::find_run(&store, "r").unwrap();
    let want = mpsearch::store::hypervolume(&m, &trials);
    assert!((hv.values[trials.len() - 1] - want).abs() < 1e-12);

    let labels: Vec<&str> = data.baselines.iter().map(|b| b.label.as_str()).collect();
    for l in ["all-f32", "all-int8", "all-int4"] {
        assert!(
            labels.contains(&l),
            "baseline {l} missing: {labels:?}; notes {:?}",
            data.notes
        );
    }
    let f32 = data
        .baselines
        .iter()
        .find(|b| b.label == "all-f32")
        .unwrap();
    assert_eq!(f32.quality, 0.0, "the f32 model's drop to itself");

    // Every front point was evaluated on the held-out split when the search ended; the gap is the
    // mean and the largest held-out − search quality over them.
    let mut gaps = Vec::new();
    for f in &data.front {
        let h = f
            .held_out
            .as_ref()
            .unwrap_or_else(|| panic!("front point {} has no held-out quality", f.number));
        assert!(h.quality.is_finite() && h.quality >= 0.0, "{h:?}");
        assert!(h.metrics.contains_key("accuracy"), "{h:?}");
        gaps.push(h.quality - f.quality);
    }
    let gap = data.held_out.gap.expect("a gap over the front");
    assert_eq!(
        (gap.points, gap.missing, data.held_out.missing),
        (data.front.len(), 0, 0)
    );
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    assert!((gap.mean - mean).abs() < 1e-15, "{gap:?} vs {gaps:?}");
    assert_eq!(gap.worst, gaps.iter().copied().fold(f64::MIN, f64::max));
    let splits = data
        .held_out
        .splits
        .expect("the run records its split sizes");
    // The demo's splits as the run cut them (`--samples 50`).
    assert_eq!(
        (splits.calibration, splits.search, splits.held_out),
        (300, 50, 50)
    );
    let fit = data
        .sensitivity
        .as_ref()
        .expect("the run's sensitivity model");
    assert_eq!(fit.pairs.len(), pts.len());
    assert!(fit.spearman.is_some());
}

#[test]
fn report_under_another_profile_recosts_without_evaluating() {
    let d = Dir::new();
    demo_search(d.path());
    let dir = d.path().join("s");
    let (before_counts, before_trials, new_front_points) = {
        let store = open(&dir);
        // Read from the store alone: which points of the re-costed front lack a held-out quality.
        let recosted = mpsearch::report::load(&store, "r", Some("x86-avx2")).unwrap();
        let lacking = recosted
            .front
            .iter()
            .filter(|f| f.held_out.is_none())
            .count();
        (store.counts().unwrap(), store.trials("r").unwrap(), lacking)
    };
    let printed = ok(
        d.path(),
        &["report", "r", "--store", "s", "--profile", "x86-avx2"],
    );
    assert_eq!(printed.trim(), "mpsearch-reports/r@x86-avx2/index.html");
    assert_report_files(&d.path().join("mpsearch-reports/r@x86-avx2"));

    let store = open(&dir);
    assert_eq!(
        store.counts().unwrap().cached_evaluations,
        before_counts.cached_evaluations + new_front_points,
        "re-costing evaluated more than the held-out qualities of points new to the front"
    );
    for t in &before_trials {
        let key = blake3::Hash::from_hex(&t.key).unwrap();
        let cached = store
            .cached(&key)
            .unwrap()
            .expect("search-split evaluation cached");
        assert_eq!(Some(cached.quality), t.quality, "trial {}", t.number);
    }
    assert_eq!(
        store.trials("r").unwrap(),
        before_trials,
        "re-costing changed the journal"
    );

    let data = mpsearch::report::load(&store, "r", Some("x86-avx2")).unwrap();
    assert_eq!(data.profile, "x86-avx2");
    assert_eq!(data.recosted_from.as_deref(), Some("cortex-a76"));
    assert!(
        data.front.iter().all(|f| f.held_out.is_some()),
        "every re-costed front point has its held-out quality"
    );
    let differ = data.points.iter().any(|p| {
        let t = &before_trials[p.trial as usize];
        p.cost.latency_us != t.cost.latency_us
    });
    assert!(differ, "no latency changed under another profile");
    for p in &data.points {
        let t = &before_trials[p.trial as usize];
        assert_eq!(
            p.cost.bytes, t.cost.bytes,
            "size does not depend on the device"
        );
        assert_eq!(
            Some(p.quality),
            t.quality,
            "qualities are the measured ones"
        );
    }
    assert!(data
        .points
        .iter()
        .any(|p| matches!(p.status, PointStatus::Front(_))));
}

#[test]
fn a_report_whose_evaluator_cannot_be_had_still_builds_without_held_out_figures() {
    let d = Dir::new();
    demo_search(d.path());
    let dir = d.path().join("s");
    {
        // As if the run had searched other data: its held-out keys and its evaluator differ.
        let store = open(&dir);
        let mut m = mpsearch::store::find_run(&store, "r").unwrap();
        m.fingerprints.evaluator = blake3::hash(b"other data").to_hex().to_string();
        store.put_run(&m).unwrap();
    }
    let args = ["report", "r", "--store", "s"];
    let out = run(d.path(), &args);
    assert!(out.status.success(), "{}", describe(&args, &out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("keep no held-out quality") && err.contains("evaluator settings changed"),
        "{}",
        describe(&args, &out)
    );
    // (The sensitivity analysis is keyed by the evaluator too: that plot is empty, the others not.)
    for f in ["index.html", "front.png", "allocation.png"] {
        assert!(d.path().join("mpsearch-reports/r").join(f).is_file(), "{f}");
    }
    let store = open(&dir);
    let data = mpsearch::report::load(&store, "r", None).unwrap();
    assert!(!data.front.is_empty());
    assert_eq!(data.held_out.missing, data.front.len());
    assert!(data.held_out.gap.is_none());
    assert!(
        data.notes.iter().any(|n| n.contains("no held-out quality")),
        "{:?}",
        data.notes
    );
    let page = std::fs::read_to_string(d.path().join("mpsearch-reports/r/index.html")).unwrap();
    assert!(page.contains("no front point has a held-out quality yet"));
}

#[test]
fn report_of_an_unknown_run_names_the_runs_there_are() {
    let d = Dir::new();
    demo_search(d.path());
    let err = crate::util::fails(d.path(), &["report", "nope", "--store", "s"]);
    assert!(err.contains("no run `nope`") && err.contains("r"), "{err}");
}
