//! `report` end to end on a real demo search: the files it writes, its data against the stored
//! trials (front, hypervolume, baselines from the cache), and re-costing under another profile without a
//! single evaluation (the page loading in headless Chromium is in `tests/external/page.rs`).

use std::collections::BTreeSet;
use std::path::Path;

use mpsearch::report::data::PointStatus;
use mpsearch::store::{SledStore, Store, TrialState};

use crate::util::{ok, Dir};

/// The plots every report holds.
const PLOTS: [&str; 4] = ["front", "allocation", "hypervolume", "sensitivity"];

/// A 24-trial search of the demo in store `s`, run `r`; returns its output.
fn demo_search(cwd: &Path) -> String {
    ok(
        cwd,
        &[
            "search", "--store", "s", "--run", "r", "--trials", "24", "--pairs", "24",
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
    let (before_counts, before_trials) = {
        let store = open(&dir);
        (store.counts().unwrap(), store.trials("r").unwrap())
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
        before_counts.cached_evaluations,
        "re-costing evaluated something"
    );
    assert_eq!(
        store.trials("r").unwrap(),
        before_trials,
        "re-costing changed the journal"
    );

    let data = mpsearch::report::load(&store, "r", Some("x86-avx2")).unwrap();
    assert_eq!(data.profile, "x86-avx2");
    assert_eq!(data.recosted_from.as_deref(), Some("cortex-a76"));
    assert_eq!(store.counts().unwrap(), before_counts);
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
fn report_of_an_unknown_run_names_the_runs_there_are() {
    let d = Dir::new();
    demo_search(d.path());
    let err = crate::util::fails(d.path(), &["report", "nope", "--store", "s"]);
    assert!(err.contains("no run `nope`") && err.contains("r"), "{err}");
}
