//! `mpsearch measure` on the embedded demo, through the real binary: a quick run over a space where
//! fc2 (the only demo layer whose 256 in-features fit q4_k's 256-weight blocks) takes f32, q4_k or
//! q8_0 and fc1 f32, q4_0 or q8_0 is measured end to end; the records printed are the ones stored
//! (re-read equal), the predictions are the profile's at the batch measured, `trials --json`, `runs
//! --json` and the report show them, and the all-q point (fc1 q4_0, fc2 q4_k) is not slower than the
//! all-f32 model
//! (loosely: absolute times are never asserted). Bad input — a point that is not there, a failed trial, a format
//! without a kernel, a model that is gone or changed — is a one-paragraph error naming the point or
//! the run, exit 1, and the store as it was.

use std::path::Path;

use mpsearch::cost::CostModel;
use mpsearch::store::{
    MeasuredSource, MeasurementRecord, SledStore, Store, TrialRecord, TrialState,
};

use crate::util::{fails, ok, Dir};

/// fc1 in f32, q4_0 or q8_0 (1568 in-features: 49 blocks of 32), fc2 in f32, q4_k or q8_0 (256
/// in-features), the convolutions f32.
const Q_SPACE: &str = r#"
[space]
name = "q"
description = "the demo's block formats where their blocks fit"
[defaults]
choices = ["f32"]
[[layer]]
match = '^fc1$'
choices = ["f32", "q4_0", "q8_0"]
[[layer]]
match = '^fc2$'
choices = ["f32", "q4_k", "q8_0"]
"#;

/// How much slower than all-f32 the all-q point (fc1 q4_0, fc2 q4_k) may measure before the test
/// fails. Loose on purpose: the fully connected layers are a small part of the demo's work, and the
/// machine may be shared.
const ALL_Q_SLOWER_AT_MOST: f64 = 1.2;
/// Fresh measurements of the all-q point and all-f32 before the ordering is called broken.
const ORDERING_ATTEMPTS: usize = 4;

/// A quick search of run `r` over [`Q_SPACE`] in store `s`: the all-f32 baseline, then the space's
/// other 5 points drawn at random, so every point of the space is a trial.
fn searched(dir: &Dir) {
    dir.write("q.toml", Q_SPACE);
    ok(
        dir.path(),
        &[
            "search",
            "--space",
            "q.toml",
            "--store",
            "s",
            "--run",
            "r",
            "--trials",
            "6",
            "--pairs",
            "6",
            "--strategy",
            "random",
        ],
    );
}

fn store(dir: &Dir) -> SledStore {
    SledStore::open(&dir.path().join("s")).expect("the test's store")
}

fn json(cwd: &Path, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(cwd, args)).expect("JSON")
}

/// The layer choice of `name` in a record's assignment (f32 when the default is f32 and it is not
/// listed).
fn choice_of(r: &MeasurementRecord, name: &str) -> String {
    r.assignment
        .layers
        .get(name)
        .cloned()
        .or_else(|| r.assignment.default.clone())
        .unwrap_or_else(|| "f32".into())
}

#[test]
fn measured_points_are_stored_as_printed_with_the_prediction_at_the_batch_measured() {
    let dir = Dir::new();
    searched(&dir);
    let cwd = dir.path();
    // The all-q point: every layer whose rows the blocks tile takes a block format.
    let all_q = ok(cwd, &["trials", "r", "--store", "s", "--json"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
        .find(|t| {
            let a = &t["assignment"];
            let default = a["default"].as_str().unwrap_or("f32");
            let of = |l: &str| a["layers"][l].as_str().unwrap_or(default).to_string();
            of("fc1") == "q4_0" && of("fc2") == "q4_k" && of("conv2") == "f32"
        })
        .expect("every point of the space is a trial")["trial"]
        .as_u64()
        .expect("trial number");
    let out = json(
        cwd,
        &[
            "measure",
            "r",
            "--store",
            "s",
            "--front",
            "--trial",
            &all_q.to_string(),
            "--batch",
            "16",
            "--repetitions",
            "12",
            "--rounds",
            "3",
            "--json",
        ],
    );
    let records: Vec<MeasurementRecord> =
        serde_json::from_value(out["measurements"].clone()).expect("records");
    let front = json(cwd, &["runs", "--store", "s", "--json"])[0]["front"]
        .as_array()
        .expect("front")
        .clone();
    assert!(front.len() >= 2, "{front:?}");
    let on_front = front.iter().any(|f| f["trial"].as_u64() == Some(all_q));
    assert_eq!(
        records.len(),
        1 + front.len() + usize::from(!on_front),
        "the reference, the front and the all-q trial, each once"
    );

    // The reference first, then the front in cost order; numbered from 0.
    assert_eq!(records[0].source, MeasuredSource::Reference);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.number, i as u64);
        if (1..=front.len()).contains(&i) {
            assert_eq!(
                r.source,
                MeasuredSource::Trial {
                    trial: front[i - 1]["trial"].as_u64().expect("trial"),
                    point: Some(i)
                }
            );
            assert_eq!(r.hash, front[i - 1]["hash"].as_str().expect("hash"));
        }
        assert!(r.median_us > 0.0 && r.median_us.is_finite(), "{r:?}");
        assert!(r.spread_us >= 0.0, "{r:?}");
        assert_eq!(r.round_medians_us.len(), 3, "{r:?}");
        let fastest = r
            .round_medians_us
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        assert_eq!(
            r.median_us, fastest,
            "the round with the lowest median is described"
        );
        let figure = r.fastest_us.expect("the fastest pass is kept");
        assert!(figure > 0.0 && figure <= r.median_us, "{r:?}");
        assert_eq!(r.figure_us(), figure);
        assert_eq!(
            (r.batch, r.tokens, r.cost_batch, r.repetitions),
            (16, None, 16, 12)
        );
        assert_eq!(r.reference_us, records[0].median_us);
        assert_eq!(r.reference_fastest_us, records[0].fastest_us);
        assert_eq!(r.speedup(), records[0].figure_us() / figure);
        assert_eq!(r.profile, "cortex-a76");
        assert_eq!(r.candle_version, "0.11.1");
        assert!(!r.host.is_empty() && r.cores >= 1);
    }
    assert_eq!(out["input"]["batch"], 16);
    assert_eq!(out["profile"]["describes"], "other-device");

    // The prediction is the profile's at batch 16, not at the run's batch 1.
    let layers = mpsearch::model::demo::inventory().layers;
    let profile = mpsearch::shipped::profile("cortex-a76").expect("profile");
    let at_16 = CostModel::new(profile, 16).expect("cost model");
    for r in &records {
        let a = r.assignment.over(&layers).expect("decodes");
        assert_eq!(a.hash_hex(), r.hash);
        assert_eq!(
            r.predicted_us,
            at_16.assignment(&layers, &a).1.latency_us,
            "{r:?}"
        );
    }

    // Stored exactly as printed.
    let stored = store(&dir).measurements("r").expect("stored");
    assert_eq!(stored, records);

    // The all-q point is not slower than all-f32 (loosely; see the constant).
    let q = records
        .iter()
        .find(|r| matches!(r.source, MeasuredSource::Trial { trial, .. } if trial == all_q))
        .unwrap_or_else(|| panic!("the all-q trial {all_q} was measured: {records:?}"));
    assert_eq!(
        (choice_of(q, "fc1"), choice_of(q, "fc2")),
        ("q4_0".into(), "q4_k".into())
    );

    // `trials --json`: each trial's own measurements; `runs --json`: the count and a summary.
    let trials = ok(cwd, &["trials", "r", "--store", "s", "--json"]);
    for line in trials.lines() {
        let t: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let n = t["trial"].as_u64().expect("trial");
        let mine: Vec<&MeasurementRecord> = records
            .iter()
            .filter(|r| matches!(r.source, MeasuredSource::Trial { trial, .. } if trial == n))
            .collect();
        let shown = t["measurements"].as_array().expect("measurements");
        assert_eq!(shown.len(), mine.len(), "trial {n}");
        for (s, r) in shown.iter().zip(mine) {
            assert_eq!(s["median_us"].as_f64(), Some(r.median_us));
            assert_eq!(s["latency_us"].as_f64(), Some(r.figure_us()));
            assert_eq!(
                s["reference_latency_us"].as_f64(),
                Some(r.reference_figure_us())
            );
            assert_eq!(s["predicted_us"].as_f64(), Some(r.predicted_us));
            assert_eq!(s["speedup"].as_f64(), Some(r.speedup()));
        }
    }
    let run = &json(cwd, &["runs", "--store", "s", "--json"])[0];
    assert_eq!(run["measurements"]["count"], records.len());
    let setting = &run["measurements"]["settings"][0];
    assert_eq!(setting["batch"], 16);
    // One point per assignment: the all-f32 trial and the reference are one.
    let distinct: std::collections::BTreeSet<&str> =
        records.iter().map(|r| r.hash.as_str()).collect();
    assert_eq!(setting["fidelity"]["points"], distinct.len());

    // Measuring again adds records after the first ones: a trial and seeded random assignments.
    let again = json(
        cwd,
        &[
            "measure",
            "r",
            "--store",
            "s",
            "--trial",
            "0",
            "--random",
            "2",
            "--seed",
            "3",
            "--repetitions",
            "3",
            "--rounds",
            "2",
            "--json",
        ],
    );
    let more: Vec<MeasurementRecord> =
        serde_json::from_value(again["measurements"].clone()).expect("records");
    assert!(
        more.iter().all(|r| r.round_medians_us.len() == 2),
        "--rounds 2: {more:?}"
    );
    let n = records.len() as u64;
    let numbers: Vec<u64> = more.iter().map(|r| r.number).collect();
    assert_eq!(numbers, (n..n + more.len() as u64).collect::<Vec<_>>());
    assert!(more
        .iter()
        .any(|r| r.source == MeasuredSource::Random { seed: 3, index: 0 }));
    assert_eq!(
        store(&dir).measurements("r").expect("stored").len(),
        records.len() + more.len()
    );

    // The report draws them.
    ok(cwd, &["report", "r", "--store", "s", "--out", "rep"]);
    assert!(cwd.join("rep/latency.svg").is_file() && cwd.join("rep/latency.png").is_file());
    let page = std::fs::read_to_string(cwd.join("rep/index.html")).expect("page");
    assert!(page.contains("Predicted against measured latency"));
    let svg = std::fs::read_to_string(cwd.join("rep/latency.svg")).expect("svg");
    assert!(
        svg.contains("Latency, batch 16 on ") && svg.contains("MAPE"),
        "panel title"
    );
    assert!(svg.contains("Latency, batch 1 on "), "one panel per batch");

    // Candle's quantized kernels spin-wait for their pool threads (pinned to cores), so other
    // processes — the other tests of this binary on a 2-core machine — can slow a measurement of
    // them many times over. Each further attempt is a fresh `measure` of the reference and the all-q
    // point on one thread; the ordering must hold in one of a few attempts.
    let mut seen = vec![(q.figure_us(), records[0].figure_us())];
    while !seen
        .iter()
        .any(|(q_us, f32_us)| *q_us <= ALL_Q_SLOWER_AT_MOST * f32_us)
        && seen.len() < ORDERING_ATTEMPTS
    {
        // One thread: candle's pool of one never waits on a descheduled peer, so the comparison is
        // of the kernels' work, which is what the ordering is about.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mpsearch"))
            .args([
                "measure",
                "r",
                "--store",
                "s",
                "--trial",
                &all_q.to_string(),
                "--batch",
                "16",
                "--repetitions",
                "12",
                "--rounds",
                "3",
                "--json",
            ])
            .env("RAYON_NUM_THREADS", "1")
            .current_dir(cwd)
            .output()
            .expect("run mpsearch measure");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let again: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let again: Vec<MeasurementRecord> =
            serde_json::from_value(again["measurements"].clone()).expect("records");
        let q_us = again
            .iter()
            .find(|r| matches!(r.source, MeasuredSource::Trial { trial, .. } if trial == all_q))
            .map(MeasurementRecord::figure_us)
            .expect("the all-q trial measured again");
        seen.push((q_us, again[0].figure_us()));
    }
    assert!(
        seen.iter()
            .any(|(q_us, f32_us)| *q_us <= ALL_Q_SLOWER_AT_MOST * f32_us),
        "the all-q point measured more than {ALL_Q_SLOWER_AT_MOST}× slower than all-f32 in every \
         attempt (all-q µs, all-f32 µs): {seen:?}"
    );
}

/// A trial of run `r` assigning `assigned` (other layers f32), journaled by hand.
fn hand_trial(number: u64, state: TrialState, assigned: &[(&str, &str)]) -> TrialRecord {
    let layers = mpsearch::model::demo::inventory().layers;
    let json = mpsearch::space::AssignmentJson {
        default: Some("f32".into()),
        layers: assigned
            .iter()
            .map(|(l, c)| (l.to_string(), c.to_string()))
            .collect(),
    };
    let hash = json.over(&layers).expect("decodes").hash_hex();
    TrialRecord {
        schema: mpsearch::store::SCHEMA_VERSION,
        number,
        strategy: "hand".into(),
        state,
        point: Vec::new(),
        assignment: json,
        key: hash.clone(),
        hash,
        quality: (state == TrialState::Complete).then_some(9.0),
        metrics: Default::default(),
        error: (state == TrialState::Failed).then(|| "out of memory".into()),
        // Dear and poor: never on the front.
        cost: mpsearch::store::CostRecord {
            latency_us: 1e9,
            bytes: 1 << 40,
            bops: 1e18,
        },
        cached: false,
        seconds: 0.0,

        proxy: None,
        batch: None,
    }
}

#[test]
fn bad_input_is_an_error_naming_the_point_or_run_and_the_store_is_untouched() {
    let dir = Dir::new();
    searched(&dir);
    let cwd = dir.path();
    {
        let s = store(&dir);
        s.put_trial("r", &hand_trial(50, TrialState::Failed, &[("fc1", "q8_0")]))
            .expect("a failed trial");
        // fc1 has 1568 in-features: q4_k's 256-weight blocks do not fit (no search space offers it).
        s.put_trial(
            "r",
            &hand_trial(51, TrialState::Complete, &[("fc1", "q4_k")]),
        )
        .expect("a trial without a kernel");
    }
    let before = (
        ok(cwd, &["runs", "--store", "s", "--json"]),
        ok(cwd, &["trials", "r", "--store", "s", "--json"]),
    );
    let untouched = |what: &str| {
        assert_eq!(
            store(&dir).measurements("r").expect("read"),
            vec![],
            "{what}: nothing measured is stored"
        );
        let now = (
            ok(cwd, &["runs", "--store", "s", "--json"]),
            ok(cwd, &["trials", "r", "--store", "s", "--json"]),
        );
        assert_eq!(now, before, "{what}: the store is as it was");
    };
    let measure = |extra: &[&str]| {
        let mut args = vec!["measure", "r", "--store", "s", "--repetitions", "2"];
        args.extend_from_slice(extra);
        fails(cwd, &args)
    };
    let front = json(cwd, &["runs", "--store", "s", "--json"])[0]["front"]
        .as_array()
        .expect("front")
        .len();
    let no_point = format!("run `r` has {front} front points: there is no point 9");
    for (extra, want) in [
        (&["--point", "9"][..], no_point.as_str()),
        (&["--trial", "77"], "run `r` has no trial 77"),
        (
            &["--trial", "50"],
            "trial 50 of run `r` failed (out of memory)",
        ),
        (
            &["--trial", "51"],
            "trial 51: layer `fc1` (256x1568) takes `q4_k`, which this machine has no kernel for",
        ),
        (
            &["--tokens", "32"],
            "--tokens 32 applies to sequence models",
        ),
        (&["--rounds", "0"], "--rounds must be at least 1"),
        (
            &["--seconds", "-1"],
            "--seconds must be a number of seconds",
        ),
    ] {
        let e = measure(extra);
        assert!(e.contains(want), "{extra:?}: {e}");
        let at = e.find("error: ").unwrap_or_else(|| panic!("an error: {e}"));
        assert!(!e[at..].trim_end().contains('\n'), "one paragraph: {e}");
        untouched(&extra.join(" "));
    }

    // The run's model folder gone, then its model changed, then its data or settings changed.
    let manifest = store(&dir).run("r").expect("read").expect("run r");
    let rewrite = |edit: &dyn Fn(&mut mpsearch::store::RunManifest)| {
        let mut m = manifest.clone();
        edit(&mut m);
        store(&dir).put_run(&m).expect("rewrite the manifest");
    };
    let gone = cwd.join("gone-model");
    let gone_text = gone.display().to_string();
    rewrite(&|m| m.config.model = gone_text.clone());
    let e = measure(&[]);
    assert!(
        e.contains(&format!("run `r`: its model `{gone_text}` cannot be read")),
        "{e}"
    );
    rewrite(&|m| m.fingerprints.model = "00".repeat(32));
    let e = measure(&[]);
    assert!(
        e.contains(
            "run `r`: model `demo` changed since the run searched it (fingerprint 000000000000 →"
        ),
        "{e}"
    );
    rewrite(&|m| m.fingerprints.evaluator = "00".repeat(32));
    let e = measure(&[]);
    assert!(
        e.contains("run `r`: its evaluation data or evaluator settings changed since it searched"),
        "{e}"
    );
    rewrite(&|_| {});
    assert_eq!(store(&dir).measurements("r").expect("read"), vec![]);
}
