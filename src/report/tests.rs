//! # Report tests
//!
//! The report data without drawing: the front is the brute-force non-dominated set of the feasible
//! trials, the hypervolume history is monotone and matches [`crate::store::hypervolume`] after every
//! trial, re-costing changes costs only, and the sensitivity pairs are the predictor's; measured
//! latencies give the MAPE and Spearman's ρ worked out by hand, per setting. Then the page and the
//! plots are produced for a full and an empty run (and the latency plot for a measured one) without
//! error.

use std::collections::{BTreeMap, BTreeSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::data::*;
use super::plot::Plot;
use crate::cost::{CostModel, Objective};
use crate::sensitivity::Predictor;
use crate::space::{AssignmentJson, LayerInfo, LayerKind};
use crate::store::{
    self, CostRecord, Fingerprints, RunConfig, RunManifest, RunStatus, TrialRecord, TrialState,
    SCHEMA_VERSION,
};
use crate::strategy::StrategyKind;

/// Tolerance of hypervolume comparisons (the same sums, maybe in another order).
const HV_TOLERANCE: f64 = 1e-12;

fn layers() -> Vec<LayerInfo> {
    let l = |name: &str, rows: usize, cols: usize| LayerInfo {
        name: name.into(),
        kind: LayerKind::Linear,
        shape: vec![rows, cols],
        macs: (rows * cols) as u64,
        bias: true,
    };
    vec![l("a", 64, 64), l("b", 256, 64), l("head", 10, 64)]
}

fn manifest(max_latency_us: Option<f64>, max_drop: Option<f64>) -> RunManifest {
    RunManifest {
        schema: SCHEMA_VERSION,
        name: "r".into(),
        created_unix: 0,
        status: RunStatus::Complete,
        elapsed_seconds: 1.0,
        config: RunConfig {
            strategy: StrategyKind::Random,
            max_latency_us,
            max_drop,
            trials: Some(200),
            pairs: crate::sensitivity::Pairs::Fixed(8),
            ..RunConfig::default()
        },
        reference: [100.0, 0.1],
        fingerprints: Fingerprints::default(),
        splits: None,
        setup: None,
        setup_seconds: None,
        evaluations: None,
    }
}

/// `n` trials with random costs and qualities (on a coarse grid, so that ties happen), a few failed.
fn trials(n: u64, seed: u64) -> Vec<TrialRecord> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|number| {
            let failed = rng.random_bool(0.05);
            let choice = ["f32", "int8-sym-channel", "int4-asym-g32+2:4"][rng.random_range(0..3)];
            TrialRecord {
                schema: SCHEMA_VERSION,
                number,
                strategy: "random".into(),
                state: if failed {
                    TrialState::Failed
                } else {
                    TrialState::Complete
                },
                point: vec![rng.random_range(0..4), rng.random_range(0..4)],
                assignment: AssignmentJson {
                    default: Some(choice.into()),
                    layers: BTreeMap::from([("head".to_string(), "f32".to_string())]),
                },
                hash: format!("{number:08x}"),
                key: format!("{number:08x}"),
                quality: (!failed).then(|| f64::from(rng.random_range(0..60u32)) / 500.0),
                metrics: BTreeMap::from([("accuracy".to_string(), 0.9)]),
                error: failed.then(|| "boom".to_string()),
                cost: CostRecord {
                    latency_us: f64::from(rng.random_range(10..110u32)),
                    bytes: rng.random_range(1000..9000),
                    bops: 1e6,
                },
                cached: false,
                seconds: 0.1,
                proxy: None,
                batch: None,
            }
        })
        .collect()
}

/// The feasible trials no other feasible trial dominates, by brute force.
fn brute_force_front(m: &RunManifest, t: &[TrialRecord]) -> BTreeSet<u64> {
    let c = &m.config;
    let ok = |x: &TrialRecord| {
        x.state == TrialState::Complete
            && x.quality.is_some()
            && c.max_latency_us.is_none_or(|l| x.cost.latency_us <= l)
            && c.max_drop.is_none_or(|d| x.quality.is_some_and(|q| q <= d))
    };
    let feasible: Vec<&TrialRecord> = t.iter().filter(|x| ok(x)).collect();
    let point = |x: &TrialRecord| (x.cost.latency_us, x.quality.unwrap_or(f64::INFINITY));
    feasible
        .iter()
        .filter(|p| {
            let (pc, pq) = point(p);
            !feasible.iter().any(|q| {
                let (qc, qq) = point(q);
                qc <= pc && qq <= pq && (qc < pc || qq < pq)
            })
        })
        .map(|p| p.number)
        .collect()
}

#[test]
fn front_is_the_non_dominated_set_of_the_feasible_trials() {
    for (seed, limits) in [
        (1, (None, None)),
        (2, (Some(80.0), Some(0.08))),
        (3, (Some(40.0), None)),
    ] {
        let m = manifest(limits.0, limits.1);
        let t = trials(300, seed);
        let (points, front) = classify(&m, &t, &layers()).unwrap();
        let numbered: BTreeSet<u64> = front.iter().map(|f| f.trial).collect();
        assert_eq!(
            numbered,
            brute_force_front(&m, &t),
            "seed {seed}, limits {limits:?}"
        );
        let flagged: BTreeSet<u64> = points
            .iter()
            .filter(|p| matches!(p.status, PointStatus::Front(_)))
            .map(|p| p.trial)
            .collect();
        assert_eq!(flagged, numbered);
        for (i, f) in front.iter().enumerate() {
            assert_eq!(f.number, i + 1);
            assert_eq!(f.choices.len(), 3, "one choice per layer");
            if i > 0 {
                assert!(
                    front[i - 1].cost.latency_us <= f.cost.latency_us,
                    "front sorted by cost"
                );
            }
        }
        let complete = t.iter().filter(|x| x.state == TrialState::Complete).count();
        assert_eq!(points.len(), complete, "every evaluated trial is a point");
        for p in &points {
            let x = &t[p.trial as usize];
            assert_eq!(
                p.status == PointStatus::Infeasible,
                !store::feasible(&m.config, x),
                "trial {} status {:?}",
                p.trial,
                p.status
            );
        }
    }
}

#[test]
fn hypervolume_history_is_monotone_and_matches_the_runs_hypervolume() {
    for (seed, limits) in [(4, (None, None)), (5, (Some(70.0), Some(0.05)))] {
        let m = manifest(limits.0, limits.1);
        let t = trials(200, seed);
        let h = hypervolume_history(&m, &t);
        assert_eq!(h.len(), t.len());
        for (k, w) in h.windows(2).enumerate() {
            assert!(
                w[1] >= w[0],
                "hypervolume fell after trial {}: {} -> {}",
                k + 1,
                w[0],
                w[1]
            );
        }
        for k in 0..t.len() {
            let want = store::hypervolume(&m, &t[..=k]);
            assert!(
                (h[k] - want).abs() <= HV_TOLERANCE,
                "after trial {k}: history {} vs store::hypervolume {want}",
                h[k]
            );
        }
        assert!(h[h.len() - 1] > 0.0);
    }
}

#[test]
fn recosting_changes_the_costs_and_nothing_else() {
    let t = trials(40, 6);
    let profile = crate::shipped::profile("x86-avx2").unwrap();
    let model = CostModel::new(profile, 1).unwrap();
    let r = recost(&t, &layers(), &model).unwrap();
    assert_eq!(r.len(), t.len());
    for (a, b) in t.iter().zip(&r) {
        assert_eq!(
            TrialRecord {
                cost: a.cost,
                ..b.clone()
            },
            *a,
            "trial {}: only the cost may change",
            a.number
        );
        let want = model
            .assignment(&layers(), &decode(&a.assignment, &layers()).unwrap())
            .1;
        assert_eq!(b.cost.latency_us, want.latency_us);
        assert_eq!(b.cost.bytes, want.bytes);
    }
}

#[test]
fn a_stored_assignment_naming_an_unknown_layer_is_an_error() {
    let json = AssignmentJson {
        default: Some("f32".into()),
        layers: BTreeMap::from([("gone".to_string(), "f16".to_string())]),
    };
    let e = decode(&json, &layers()).unwrap_err().to_string();
    assert!(e.contains("`gone`"), "{e}");
}

#[test]
fn sensitivity_pairs_are_the_predictors_and_their_rank_correlation() {
    let predictor =
        Predictor::from_table(vec![vec![0.0, 0.01, 0.02, 0.03], vec![0.0, 0.1, 0.2, 0.3]]).unwrap();
    let mut t = trials(30, 7);
    for x in &mut t {
        // Measured = predicted × 2: a perfect rank correlation.
        x.quality = x.quality.map(|_| 2.0 * predictor.predict(&x.point));
    }
    let fit = sensitivity_fit(&predictor, &t, 8);
    let complete = t.iter().filter(|x| x.state == TrialState::Complete).count();
    assert_eq!(fit.pairs.len(), complete);
    for p in &fit.pairs {
        assert_eq!(p.measured, 2.0 * p.predicted);
    }
    assert!(
        (fit.spearman.unwrap() - 1.0).abs() < 1e-12,
        "{:?}",
        fit.spearman
    );
    assert_eq!(fit.measurements, 8);
}

#[test]
fn runs_are_comparable_only_with_the_same_inputs_and_limits() {
    let a = manifest(Some(80.0), None);
    let mut b = manifest(Some(80.0), None);
    b.name = "other".into();
    b.config.strategy = StrategyKind::Bayes;
    assert!(comparable(&a, &b));
    b.config.max_latency_us = Some(90.0);
    assert!(!comparable(&a, &b));
    let mut c = manifest(Some(80.0), None);
    c.fingerprints.profile = "ff".into();
    assert!(!comparable(&a, &c));
}

/// Report data of the fake trials, as [`load`] would build it.
fn report(t: &[TrialRecord], m: &RunManifest) -> ReportData {
    let (points, front) = classify(m, t, &layers()).unwrap();
    let predictor = Predictor::from_table(vec![vec![0.0, 0.01, 0.02, 0.03]; 2]).unwrap();
    ReportData {
        run: "r".into(),
        status: "complete".into(),
        model: "demo".into(),
        space: "demo".into(),
        strategy: "random".into(),
        profile: "cortex-a76".into(),
        recosted_from: None,
        objective: Objective::Latency,
        quality: quality_measure(crate::model::ModelKind::Classifier),
        limits: Limits {
            max_latency_us: m.config.max_latency_us,
            max_drop: m.config.max_drop,
            ..Limits::default()
        },
        trials: t.len(),
        failed: 0,
        points,
        front,
        held_out: HeldOutSummary::default(),
        layers: layers().into_iter().map(|l| l.name).collect(),
        baselines: Vec::new(),
        hypervolume: vec![HypervolumeSeries::of(m, t, true)],
        evaluations: store::evaluations(m, t),
        proxy: None,
        sensitivity: Some(sensitivity_fit(&predictor, t, 4)),
        latency: Vec::new(),
        recovered: Vec::new(),
        notes: vec!["a <note> & more".into()],
    }
}

#[test]
fn every_plot_and_the_page_are_made_for_a_full_and_an_empty_run() {
    let m = manifest(Some(90.0), Some(0.1));
    let dir = tempfile::tempdir().unwrap();
    for t in [trials(120, 8), Vec::new()] {
        let d = report(&t, &m);
        for p in Plot::ALL {
            let svg = p
                .svg(&d)
                .unwrap_or_else(|e| panic!("{} plot, {} trials: {e}", p.name(), t.len()));
            assert!(svg.contains("<svg"), "{}", p.name());
        }
        let index = super::write(&d, dir.path()).unwrap();
        let html = std::fs::read_to_string(&index).unwrap();
        assert_eq!(html.matches("<img src=\"data:image/png;base64,").count(), 5);
        // The evaluations table: every kind, and the total the run's records give.
        for what in [
            "set-up (one-at-a-time measurements)",
            "baselines",
            "trials",
            "held-out (front points)",
        ] {
            assert!(html.contains(&format!("<tr><td>{what}</td>")), "{what}");
        }
        assert!(html.contains(&format!(
            "<tr><td>in all</td><td class=\"num\">{}</td>",
            store::evaluations(&m, &t).total
        )));
        assert!(
            html.contains("a &lt;note&gt; &amp; more"),
            "notes are escaped"
        );
        assert_eq!(
            html.matches("<tr><td data-v=").count(),
            d.front.len(),
            "one table row per front point"
        );
        for p in Plot::ALL {
            for ext in ["svg", "png"] {
                assert_eq!(
                    dir.path().join(format!("{}.{ext}", p.name())).is_file(),
                    p != Plot::Latency,
                    "{}: the latency plot only for runs with measurements",
                    p.name()
                );
            }
        }
    }
}

#[test]
fn held_out_qualities_and_the_gap_are_on_the_page_and_in_the_front_plot() {
    let m = manifest(None, None);
    let t = trials(300, 1);
    let mut d = report(&t, &m);
    assert!(d.front.len() >= 3, "{} front points", d.front.len());
    // Every front point but the last gets a held-out quality 0.01 worse; the first 0.03 worse.
    let n = d.front.len();
    let mut pairs = Vec::new();
    for (i, f) in d.front.iter_mut().enumerate().take(n - 1) {
        let extra = if i == 0 { 0.03 } else { 0.01 };
        f.held_out = Some(store::HeldOut {
            quality: f.quality + extra,
            metrics: BTreeMap::from([("accuracy".to_string(), 0.5)]),
        });
        pairs.push((f.trial, f.quality, Some(f.quality + extra)));
    }
    pairs.push((d.front[n - 1].trial, d.front[n - 1].quality, None));
    let gap = store::held_out_gap(&pairs).unwrap();
    assert_eq!((gap.points, gap.missing), (n - 1, 1));
    let want_mean = (0.03 + 0.01 * (n - 2) as f64) / (n - 1) as f64;
    assert!((gap.mean - want_mean).abs() < 1e-12, "{gap:?}");
    assert!((gap.worst - 0.03).abs() < 1e-12 && gap.worst_trial == d.front[0].trial);
    d.held_out = HeldOutSummary {
        splits: Some(crate::data::SplitSizes {
            calibration: 180,
            search: 240,
            held_out: 120,
        }),
        missing: 1,
        gap: Some(gap),
    };
    let dir = tempfile::tempdir().unwrap();
    let html = std::fs::read_to_string(super::write(&d, dir.path()).unwrap()).unwrap();
    assert!(html.contains("kl_divergence (held-out)"), "held-out column");
    assert!(html.contains("240 search samples") && html.contains("120 held-out"));
    assert!(
        html.contains(&format!("worst +{}", super::html::quality(0.03))),
        "the worst gap is stated"
    );
    assert_eq!(
        html.matches("title=\"not evaluated on the held-out split\"")
            .count(),
        1,
        "the one point without a held-out quality"
    );
    let svg = Plot::Front.svg(&d).unwrap();
    assert!(
        svg.contains(&format!("held-out quality of front points ({})", n - 1)),
        "the front plot's legend names the held-out rings"
    );
}

#[test]
fn the_gap_needs_a_held_out_quality_and_reads_its_sign() {
    assert!(store::held_out_gap(&[(1, 0.1, None)]).is_none());
    let g = store::held_out_gap(&[
        (1, 0.2, Some(0.1)),
        (2, 0.0, Some(0.0)),
        (3, 0.1, Some(0.15)),
    ])
    .unwrap();
    assert_eq!(g.points, 3);
    assert!((g.mean - (-0.1 + 0.05) / 3.0).abs() < 1e-12, "{g:?}");
    assert_eq!(g.worst_trial, 3, "the point the search flattered most");
    assert!((g.worst - 0.05).abs() < 1e-12);
    // Relative over the points of positive search quality: (-50% + 50%) / 2.
    assert!(g.mean_relative.unwrap().abs() < 1e-12, "{g:?}");
}

/// A measurement record of the fake model's layers: `layers` assigned (others f32), at `batch`.
fn measured(
    number: u64,
    source: store::MeasuredSource,
    assigned: &[(&str, &str)],
    (predicted_us, fastest_us): (f64, f64),
    batch: u32,
) -> store::MeasurementRecord {
    let json = AssignmentJson {
        default: Some("f32".into()),
        layers: assigned
            .iter()
            .map(|(l, c)| (l.to_string(), c.to_string()))
            .collect(),
    };
    store::MeasurementRecord {
        schema: SCHEMA_VERSION,
        number,
        source,
        hash: decode(&json, &layers()).unwrap().hash_hex(),
        assignment: json,
        batch,
        tokens: None,
        cost_batch: batch,
        repetitions: 10,
        fastest_us: Some(fastest_us),
        median_us: fastest_us / 0.95,
        spread_us: fastest_us / 20.0,
        round_medians_us: vec![fastest_us / 0.95, 1.1 * fastest_us],
        reference_us: 330.0 / 0.95,
        reference_fastest_us: Some(330.0),
        other_load: None,
        host: "h".into(),
        cpu: "c".into(),
        cores: 2,
        threads: Some(2),
        candle_version: "0.11.1".into(),
        profile: "cortex-a76".into(),
        profile_fingerprint: String::new(),
        predicted_us,
        measured_unix: number,
    }
}

/// Four measured assignments at batch 1 whose MAPE and Spearman's ρ are worked out by hand: the
/// all-f32 reference, two trials and a random assignment.
fn measured_set() -> Vec<store::MeasurementRecord> {
    use store::MeasuredSource::*;
    vec![
        measured(0, Reference, &[], (300.0, 330.0), 1),
        measured(
            1,
            Trial {
                trial: 5,
                point: Some(1),
            },
            &[("a", "int8-sym-channel")],
            (100.0, 190.0),
            1,
        ),
        measured(
            2,
            Trial {
                trial: 9,
                point: None,
            },
            &[("b", "f16")],
            (200.0, 180.0),
            1,
        ),
        measured(
            3,
            Random { seed: 0, index: 0 },
            &[("head", "f16")],
            (50.0, 40.0),
            1,
        ),
    ]
}

#[test]
fn latency_fidelity_is_the_mape_and_spearman_worked_out_by_hand() {
    // |300-330|/330, |100-190|/190, |200-180|/180, |50-40|/40
    let mape = 100.0 * (30.0 / 330.0 + 90.0 / 190.0 + 20.0 / 180.0 + 10.0 / 40.0) / 4.0;
    let pairs = [(300.0, 330.0), (100.0, 190.0), (200.0, 180.0), (50.0, 40.0)];
    let f = store::fidelity(&pairs).unwrap();
    assert_eq!(f.points, 4);
    assert!((f.mape_percent - mape).abs() < 1e-9, "{f:?}, want {mape}");
    assert!((f.mape_percent - 23.1426).abs() < 1e-3, "{f:?}");
    // Ranks: predicted 4 2 3 1, measured 4 3 2 1: Σd² = 2, ρ = 1 − 6·2 / (4·15) = 0.8.
    assert!((f.spearman.unwrap() - 0.8).abs() < 1e-12, "{f:?}");
    // A perfect prediction, a single pair, and nothing usable.
    let exact = store::fidelity(&[(1.0, 1.0), (2.0, 2.0), (3.0, 3.0)]).unwrap();
    assert_eq!((exact.mape_percent, exact.spearman), (0.0, Some(1.0)));
    let one = store::fidelity(&[(2.0, 1.0)]).unwrap();
    assert_eq!((one.mape_percent, one.spearman), (100.0, None));
    assert!(store::fidelity(&[(1.0, 0.0), (f64::NAN, 1.0)]).is_none());
}

#[test]
fn latency_panels_keep_the_latest_of_each_assignment_per_setting() {
    use store::MeasuredSource::*;
    let mut ms = measured_set();
    // Trial 5 measured again at batch 1 (replaces number 1), and two records at batch 8.
    ms.push(measured(
        4,
        Trial {
            trial: 5,
            point: Some(1),
        },
        &[("a", "int8-sym-channel")],
        (100.0, 95.0),
        1,
    ));
    ms.push(measured(5, Reference, &[], (900.0, 1000.0), 8));
    ms.push(measured(
        6,
        Trial {
            trial: 0,
            point: Some(3),
        },
        &[],
        (900.0, 990.0),
        8,
    ));
    let latest = store::latest_measurements(&ms);
    assert_eq!(latest.len(), 2);
    let numbers: Vec<Vec<u64>> = latest
        .values()
        .map(|v| v.iter().map(|m| m.number).collect())
        .collect();
    assert_eq!(numbers, vec![vec![0, 2, 3, 4], vec![6]]);

    // The report's front numbers trial 5 as point 2 now.
    let front = vec![FrontPoint {
        number: 2,
        trial: 5,
        quality: 0.1,
        metrics: BTreeMap::new(),
        held_out: None,
        cost: crate::cost::Cost::default(),
        hash: String::new(),
        choices: Vec::new(),
        recovered: None,
    }];
    let panels = latency_panels(&ms, &front, &layers(), None).unwrap();
    assert_eq!(panels.len(), 2);
    let b1 = &panels[0];
    assert_eq!(b1.setting.batch, 1);
    let labels: Vec<&str> = b1.points.iter().map(|p| p.label.as_str()).collect();
    assert_eq!(
        labels,
        vec![
            "all-f32",
            "trial 9",
            "random 0 (seed 0)",
            "point 2 (trial 5)"
        ]
    );
    assert_eq!(
        b1.points[3].measured_us, 95.0,
        "the latest measurement of trial 5"
    );
    assert_eq!(b1.points[3].point, Some(2));
    assert!(b1.points[0].reference && !b1.points[1].reference);
    let want = store::fidelity(&[(300.0, 330.0), (200.0, 180.0), (50.0, 40.0), (100.0, 95.0)]);
    assert_eq!(b1.fidelity, want);
    assert_eq!(b1.profile, "cortex-a76");
    // At batch 8 the all-f32 trial replaced the reference's record, and is still the reference.
    assert_eq!(panels[1].points.len(), 1);
    assert!(panels[1].points[0].reference);
    assert_eq!(panels[1].points[0].label, "trial 0");

    // Re-costed under another profile: the predictions are that profile's at each batch measured.
    let other = crate::shipped::profile("jetson-orin-nano").unwrap();
    let panels = latency_panels(&ms, &front, &layers(), Some(&other)).unwrap();
    assert_eq!(panels[0].profile, other.name());
    for (p, m) in panels[0].points.iter().zip(
        &store::latest_measurements(&ms)
            .into_values()
            .next()
            .unwrap(),
    ) {
        let model = CostModel::new(other.clone(), m.cost_batch).unwrap();
        let a = decode(&m.assignment, &layers()).unwrap();
        assert_eq!(p.predicted_us, model.assignment(&layers(), &a).1.latency_us);
        assert_eq!(p.measured_us, m.figure_us());
    }

    let summaries = store::measurement_summaries(&ms);
    assert_eq!(summaries.len(), 2);
    assert_eq!(summaries[0].fidelity, want);
    assert_eq!(summaries[0].reference_us, 330.0);
    assert_eq!(summaries[0].best_trial, Some(5));
    assert_eq!(summaries[0].best_speedup, Some(330.0 / 95.0));
    assert_eq!(summaries[1].reference_us, 1000.0);
}

#[test]
fn a_measured_run_gets_the_latency_plot_with_its_mape_and_spearman() {
    let m = manifest(None, None);
    let t = trials(60, 3);
    let mut d = report(&t, &m);
    let mut ms = measured_set();
    ms.push(measured(
        4,
        store::MeasuredSource::Reference,
        &[],
        (2000.0, 2600.0),
        32,
    ));
    ms.push(measured(
        5,
        store::MeasuredSource::Random { seed: 0, index: 1 },
        &[("a", "f16")],
        (1500.0, 2100.0),
        32,
    ));
    d.latency = latency_panels(&ms, &d.front, &layers(), None).unwrap();
    assert!(Plot::Latency.applies(&d));
    assert_eq!(
        Plot::Latency.size(&d),
        (1000, 2 * super::plot::latency::PANEL_HEIGHT)
    );
    let svg = Plot::Latency.svg(&d).unwrap();
    assert!(
        svg.contains("Latency, batch 1 on h: MAPE 23.1 %, Spearman ρ 0.800 (4 points)"),
        "the title states MAPE and ρ"
    );
    assert!(
        svg.contains("Latency, batch 32 on h:"),
        "one panel per batch"
    );
    assert!(svg.contains("predicted latency on cortex-a76 (µs, log scale)"));
    assert!(svg.contains("measured latency on h (ms, log scale)"));
    assert!(svg.contains("predicted = measured"));
    let dir = tempfile::tempdir().unwrap();
    let html = std::fs::read_to_string(super::write(&d, dir.path()).unwrap()).unwrap();
    for ext in ["svg", "png"] {
        assert!(dir.path().join(format!("latency.{ext}")).is_file());
    }
    assert_eq!(html.matches("<img src=\"data:image/png;base64,").count(), 6);
    assert!(html.contains("<h2>Predicted against measured latency</h2>"));
    assert!(
        html.contains("<td>23.1 %</td><td>0.800</td>"),
        "MAPE and ρ in the summary table"
    );
    assert_eq!(
        html.matches("<tr><td class=\"choice\">batch ").count(),
        2 + 6,
        "summary and point rows"
    );
}

#[test]
fn latency_ticks_are_nice_values_inside_the_range() {
    use super::plot::latency::log_ticks;
    // 1-3 and 1-2-5 steps give 3 ticks here; 1-1.5-2-3-5-7 gives 6.
    assert_eq!(
        log_ticks(&(25.0..270.0)),
        vec![30.0, 50.0, 70.0, 100.0, 150.0, 200.0]
    );
    assert_eq!(log_ticks(&(0.5..5000.0)), vec![1.0, 10.0, 100.0, 1000.0]);
    let narrow = log_ticks(&(180.0..260.0));
    assert!(
        narrow.len() >= 4 && narrow.iter().all(|v| (180.0..=260.0).contains(v)),
        "{narrow:?}"
    );
    assert!(log_ticks(&(0.0..1.0)).is_empty());
}

#[test]
fn evaluations_are_counted_by_kind_and_the_hypervolume_axis_starts_after_the_setup() {
    let mut m = manifest(None, None);
    let mut t = trials(40, 3);
    for (i, r) in t.iter_mut().enumerate() {
        if i < 3 {
            r.strategy = crate::strategy::BASELINE.into();
        }
        r.cached = i % 7 == 1;
        if i == 20 {
            // Failed before its model ran: no evaluation.
            r.state = TrialState::Failed;
            r.quality = None;
            r.seconds = 0.0;
        }
    }
    t.push(TrialRecord {
        state: TrialState::Running,
        number: 40,
        ..t[0].clone()
    });
    let old = store::evaluations(&m, &t);
    assert!(!old.complete);
    m.evaluations = Some(crate::store::Evaluations {
        setup: crate::store::EvalCount {
            evaluated: 17,
            cached: 2,
        },
        baselines: crate::store::EvalCount {
            evaluated: 1,
            cached: 0,
        },
        held_out: crate::store::EvalCount {
            evaluated: 6,
            cached: 1,
        },
    });
    let e = store::evaluations(&m, &t);
    assert!(e.complete);
    // Trials 0..40 less the one that failed before running; trial 40 is still running.
    let ran: Vec<&TrialRecord> = t[..40].iter().filter(|r| r.number != 20).collect();
    let cached = |b: bool, baseline: bool| {
        ran.iter()
            .filter(|r| r.cached == b && (r.number < 3) == baseline)
            .count() as u64
    };
    assert_eq!(e.baselines.evaluated, 1 + cached(false, true));
    assert_eq!(e.baselines.cached, cached(true, true));
    assert_eq!(e.trials.evaluated, cached(false, false));
    assert_eq!(e.trials.cached, cached(true, false));
    assert_eq!(e.setup.evaluated, 17);
    assert_eq!(e.held_out.evaluated, 6);
    assert_eq!(e.total, 17 + 6 + e.baselines.evaluated + e.trials.evaluated);
    let s = HypervolumeSeries::of(&m, &t, true);
    assert_eq!(s.evaluations.len(), t.len());
    // After the first trial: the set-up, the baseline outside the trials and that trial.
    assert_eq!(s.evaluations[0], (17 + 1 + u64::from(!t[0].cached)) as f64);
    assert!(s.evaluations.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(
        *s.evaluations.last().unwrap(),
        (e.total - e.held_out.evaluated) as f64
    );
    // The front first reaches 99% of its final hypervolume at some trial, and that trial's count is
    // what `evaluations_to` gives.
    let last = *s.values.last().unwrap();
    let k = s.values.iter().position(|&v| v >= 0.99 * last).unwrap();
    assert_eq!(s.evaluations_to(0.99), Some(s.evaluations[k]));
}

/// Proxy evaluations (`--fidelity`) are counted apart, cost their share of a full evaluation, and a
/// pruned trial (proxy only) adds no full evaluation; the summary's Spearman is over the trials
/// evaluated both ways.
#[test]
fn proxies_are_counted_at_their_share_and_pruned_trials_cost_no_full_evaluation() {
    let m = manifest(None, None);
    let mut t = trials(30, 5);
    for (i, r) in t.iter_mut().enumerate() {
        r.state = TrialState::Complete;
        r.error = None;
        r.cached = false;
        r.quality = Some(0.01 * (i + 1) as f64);
        let pruned = i % 3 == 2;
        r.proxy = Some(crate::store::ProxyRecord {
            samples: 60,
            share: 0.25,
            // Ranks agree with the full quality but for one swap (trials 3 and 4, both promoted).
            quality: 0.011
                * (if i == 3 {
                    5
                } else if i == 4 {
                    4
                } else {
                    i + 1
                }) as f64,
            metrics: Default::default(),
            cached: i == 0,
            seconds: 0.01,
        });
        if pruned {
            r.state = TrialState::Pruned;
            r.quality = None;
        }
    }
    let e = store::evaluations(&m, &t);
    assert_eq!((e.proxy.evaluated, e.proxy.cached), (29, 1));
    assert_eq!(
        e.trials.evaluated, 20,
        "the 10 pruned trials ran no full evaluation"
    );
    assert_eq!(e.total, 20 + 29);
    assert_eq!(e.full_equivalent, 20.0 + 0.25 * 29.0);
    let s = HypervolumeSeries::of(&m, &t, true);
    assert_eq!(*s.evaluations.last().unwrap(), e.full_equivalent);
    let p = store::proxy_summary(&t).unwrap();
    assert_eq!((p.proxies, p.promoted, p.pruned), (30, 20, 10));
    // 20 trials evaluated both ways with one adjacent swap: ρ = 1 − 6·2/(n³ − n).
    let n = 20.0f64;
    assert!((p.spearman.unwrap() - (1.0 - 12.0 / (n * n * n - n))).abs() < 1e-12);
    assert!(store::proxy_summary(&t[..0]).is_none());
}
