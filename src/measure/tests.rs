//! # Measure tests
//!
//! Which assignments a measurement takes (and the clear errors for points that are not there, trials
//! that failed or did not finish, formats without a kernel), how the rounds are timed and grouped,
//! and what the records say — on the embedded demo, with hand-made journals. Absolute times are never
//! asserted.

use std::collections::BTreeMap;

use super::*;
use crate::cost::profile::Calibration;
use crate::eval::EvalData;
use crate::space::AssignmentJson;
use crate::store::{CostRecord, Fingerprints, RunConfig, RunStatus, SCHEMA_VERSION};
use crate::timing::RoundFigure;

fn layers() -> Vec<LayerInfo> {
    crate::model::demo::inventory().layers
}

fn manifest() -> RunManifest {
    RunManifest {
        schema: SCHEMA_VERSION,
        name: "m".into(),
        created_unix: 0,
        status: RunStatus::Complete,
        elapsed_seconds: 1.0,
        config: RunConfig::default(),
        reference: [100.0, 0.1],
        fingerprints: Fingerprints::default(),
        splits: None,
        setup: None,
        setup_seconds: None,
        evaluations: None,
    }
}

/// A journaled trial of the demo assigning `layers` (others f32), with this cost and quality.
fn trial(number: u64, state: TrialState, assigned: &[(&str, &str)], latency: f64) -> TrialRecord {
    let json = AssignmentJson {
        default: Some("f32".into()),
        layers: assigned
            .iter()
            .map(|(l, c)| (l.to_string(), c.to_string()))
            .collect::<BTreeMap<_, _>>(),
    };
    let hash = json.over(&layers()).expect("decodes").hash_hex();
    TrialRecord {
        schema: SCHEMA_VERSION,
        number,
        strategy: "test".into(),
        state,
        point: Vec::new(),
        assignment: json,
        hash: hash.clone(),
        key: hash,
        quality: (state == TrialState::Complete).then_some(0.01 * number as f64),
        metrics: BTreeMap::new(),
        error: (state == TrialState::Failed).then(|| "the evaluation blew up".into()),
        cost: CostRecord {
            latency_us: latency,
            bytes: 1000,
            bops: 1.0,
        },
        cached: false,
        seconds: 0.1,
        proxy: None,
        batch: None,
    }
}

/// Trials 0 (all-f32, dearest, quality 0), 1 (fc1 q4_0), 2 (dominated), 3 (failed), 4 (running), 5
/// (fc1 int8, cheapest). Front by cost: 5, 1, 0.
fn journal() -> Vec<TrialRecord> {
    vec![
        trial(0, TrialState::Complete, &[], 40.0),
        trial(1, TrialState::Complete, &[("fc1", "q4_0")], 30.0),
        trial(2, TrialState::Complete, &[("fc1", "f16")], 35.0),
        trial(3, TrialState::Failed, &[("fc2", "q8_0")], 31.0),
        trial(4, TrialState::Running, &[("fc2", "f16")], 31.0),
        trial(
            5,
            TrialState::Complete,
            &[("fc1", "int8-sym-channel")],
            20.0,
        ),
    ]
}

fn sources(p: &Plan) -> Vec<MeasuredSource> {
    p.targets.iter().map(|t| t.source.clone()).collect()
}

fn message(r: Result<Plan>) -> String {
    match r {
        Ok(p) => panic!("expected an error, got {:?}", sources(&p)),
        Err(e) => e.to_string(),
    }
}

#[test]
fn nothing_picked_is_the_front_and_picks_come_once_in_order() {
    let (m, t) = (manifest(), journal());
    let p = plan(&m, &t, &Selection::default()).expect("plan");
    let trial = |trial, point| MeasuredSource::Trial { trial, point };
    assert_eq!(
        sources(&p),
        vec![trial(5, Some(1)), trial(1, Some(2)), trial(0, Some(3))]
    );
    assert_eq!(
        p.targets[1].assignment.get("fc1").map(|c| c.to_string()),
        Some("q4_0".into())
    );
    assert_eq!(p.targets[1].assignment.hash_hex(), t[1].hash);
    // Trials and points, with the front, each assignment once (the first way it was asked).
    let s = Selection {
        picks: vec![Pick::Trial(2), Pick::Point(2), Pick::Trial(1)],
        front: true,
        ..Selection::default()
    };
    let p = plan(&m, &t, &s).expect("plan");
    assert_eq!(
        sources(&p),
        vec![
            trial(5, Some(1)),
            trial(1, Some(2)),
            trial(0, Some(3)),
            trial(2, None)
        ]
    );
    assert!(
        p.notes[0].starts_with("2 of the 6 assignments asked repeat earlier ones"),
        "{:?}",
        p.notes
    );
    let picked = Selection {
        picks: vec![Pick::Trial(2)],
        ..Selection::default()
    };
    assert_eq!(
        sources(&plan(&m, &t, &picked).expect("plan")),
        vec![trial(2, None)]
    );
}

#[test]
fn missing_points_failed_and_unfinished_trials_are_errors_naming_them() {
    let (m, t) = (manifest(), journal());
    let pick = |p: Pick| Selection {
        picks: vec![p],
        ..Selection::default()
    };
    let e = message(plan(&m, &t, &pick(Pick::Point(4))));
    assert!(
        e.contains("run `m` has 3 front points: there is no point 4"),
        "{e}"
    );
    let e = message(plan(&m, &t, &pick(Pick::Trial(3))));
    assert!(
        e.contains("trial 3 of run `m` failed (the evaluation blew up)"),
        "{e}"
    );
    let e = message(plan(&m, &t, &pick(Pick::Trial(4))));
    assert!(e.contains("trial 4 of run `m` has not finished"), "{e}");
    let e = message(plan(&m, &t, &pick(Pick::Trial(99))));
    assert!(e.contains("run `m` has no trial 99"), "{e}");
    // A journaled assignment that no longer hashes to the evaluated one (the layers changed).
    let mut damaged = t.clone();
    damaged[1].hash = "ab".repeat(32);
    let e = message(plan(&m, &damaged, &pick(Pick::Trial(1))));
    assert!(
        e.contains("point 2 (trial 1) of run `m`: its journaled assignment"),
        "{e}"
    );
    // No front at all.
    let e = message(plan(&m, &t[3..5], &Selection::default()));
    assert!(e.contains("run `m` has no front yet"), "{e}");
}

#[test]
fn a_format_without_a_kernel_for_a_layer_is_an_error_naming_the_point() {
    let m = manifest();
    let mut t = journal();
    // fc1 has 1568 in-features: q4_k's 256-weight blocks do not tile its rows.
    t.push(trial(6, TrialState::Complete, &[("fc1", "q4_k")], 10.0));
    // fc1 (1568 in-features) at rank 10 %: B reads 1568 (fits q8_0's 32), A reads k = 26 (does not).
    t.push(trial(
        7,
        TrialState::Complete,
        &[("fc1", "q8_0+rank10")],
        50.0,
    ));
    let pick = |n| Selection {
        picks: vec![Pick::Trial(n)],
        ..Selection::default()
    };
    let e = message(plan(&m, &t, &pick(6)));
    assert!(
        e.contains("point 1 (trial 6): layer `fc1` (256x1568) takes `q4_k`, which this machine has no kernel for"),
        "{e}"
    );
    assert!(e.contains("multiple of 256"), "{e}");
    let e = message(plan(&m, &t, &pick(7)));
    assert!(e.contains("trial 7: layer `fc1`"), "{e}");
    assert!(e.contains("this matrix has 26"), "{e}");
    // A format where it fits is fine.
    plan(&m, &t, &pick(1)).expect("q4_0 on fc1");
}

#[test]
fn random_assignments_are_seeded_draws_of_the_space() {
    let space = crate::shipped::space("demo", &layers()).expect("demo space");
    let a = random(&space, 6, 11);
    let b = random(&space, 6, 11);
    assert_eq!(a, b, "same seed, same draws");
    assert_ne!(a, random(&space, 6, 12));
    for (i, t) in a.iter().enumerate() {
        assert_eq!(t.source, MeasuredSource::Random { seed: 11, index: i });
        space.point(&t.assignment).expect("a point of the space");
    }
    // Through `plan`, which needs the run's space as it searched it.
    let mut m = manifest();
    m.fingerprints.space = space.fingerprint().to_hex().to_string();
    let s = Selection {
        picks: vec![Pick::Point(1)],
        random: 3,
        seed: 11,
        ..Selection::default()
    };
    let p = plan(&m, &journal(), &s).expect("plan");
    assert_eq!(p.targets.len(), 4);
    assert_eq!(p.targets[1..], a[..3]);
    m.fingerprints.space = "00".repeat(32);
    let e = message(plan(&m, &journal(), &s));
    assert!(e.contains("which changed since the run"), "{e}");
}

#[test]
fn sparse_patterns_and_scalar_formats_are_noted() {
    let target = |c: &str| Target {
        source: MeasuredSource::Reference,
        assignment: Assignment::new([("fc1".to_string(), c.parse().expect("choice"))]),
    };
    assert!(kernel_notes(&[target("q4_k"), target("int8-sym-channel+channels25")]).is_empty());
    let notes = kernel_notes(&[target("int8-sym-channel+2:4"), target("q5_0")]);
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes[0].contains("computed dense"), "{notes:?}");
    assert!(notes[1].starts_with("q5_0 has no SIMD kernel"), "{notes:?}");
}

fn demo() -> (Arc<dyn Model>, EvalData) {
    crate::eval::load(&ModelSource::Demo, None).expect("demo")
}

fn quick(rounds: usize, chunk_bytes: usize) -> Options {
    Options {
        schedule: Schedule {
            warmup: 1,
            warmup_seconds: 0.0,
            repetitions: 3,
            max_seconds: 60.0,
            least: 1,
        },
        rounds,
        chunk_bytes,
    }
}

#[test]
fn targets_are_timed_in_rounds_with_the_reference_in_every_group() {
    let (model, data) = demo();
    let ev = CandleEvaluator::new(model.clone(), data, Default::default()).expect("evaluator");
    let input = input::from_search_split(ev.data(), 2, None).expect("input");
    let targets: Vec<Target> = ["q4_0", "f16", "int8-sym-channel"]
        .iter()
        .enumerate()
        .map(|(i, c)| Target {
            source: MeasuredSource::Random { seed: 0, index: i },
            assignment: Assignment::new([("fc1".to_string(), c.parse().expect("choice"))]),
        })
        .collect();
    let mut calls = Vec::new();
    // One target per group (no memory for more): the reference is timed in each group.
    let m = time_targets(
        model.as_ref(),
        &input.batch,
        &targets,
        &|a| ev.deploy_overrides(a),
        &quick(2, 0),
        &mut |done, total, what| calls.push((done, total, what.to_string())),
    )
    .expect("timed");
    assert_eq!(m.targets.len(), 3);
    assert_eq!(m.reference.figure.round_medians_us.len(), 2 * 3);
    for t in m.targets.iter().chain([&m.reference]) {
        assert!(
            t.figure.median_us > 0.0 && t.figure.median_us.is_finite(),
            "{t:?}"
        );
        assert!(t.figure.spread_us >= 0.0, "{t:?}");
        assert_eq!(t.repetitions, 3);
        let f = &t.figure;
        let fastest = f
            .round_medians_us
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        assert_eq!(
            f.median_us, fastest,
            "the round with the lowest median is described"
        );
        assert!(
            f.fastest_us > 0.0 && f.fastest_us <= f.median_us,
            "the fastest pass is the figure: {t:?}"
        );
    }
    assert_eq!(m.targets[0].figure.round_medians_us.len(), 2);
    assert_eq!(calls.len(), 2 * 3 + 1);
    assert_eq!(calls[0], (0, 6, "round 1/2: random 0 (seed 0)".to_string()));
    assert_eq!(calls.last().map(|c| c.0), Some(6));
    // Everything fits in one group: the reference is timed once per round.
    let m = time_targets(
        model.as_ref(),
        &input.batch,
        &targets,
        &|a| ev.deploy_overrides(a),
        &quick(2, usize::MAX),
        &mut |_, _, _| {},
    )
    .expect("timed");
    assert_eq!(m.reference.figure.round_medians_us.len(), 2);
    // A target that cannot be built is an error naming it; nothing else is timed after it.
    let e = time_targets(
        model.as_ref(),
        &input.batch,
        &targets,
        &|a| match a.get("fc1").map(|c| c.to_string()).as_deref() {
            Some("f16") => Err(Error::compress("no f16 today")),
            _ => ev.deploy_overrides(a),
        },
        &quick(1, 0),
        &mut |_, _, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(
            "random 1 (seed 0): it cannot be built on this machine (compress: no f16 today)"
        ),
        "{e}"
    );
}

#[test]
fn records_number_from_the_first_and_carry_the_prediction_at_the_batch_measured() {
    let layers = layers();
    let input = input::MeasureInput {
        batch: Batch::Images(
            candle_core::Tensor::zeros(
                (8, 1, 8, 8),
                candle_core::DType::F32,
                &candle_core::Device::Cpu,
            )
            .expect("zeros"),
        ),
        samples: 8,
        tokens: None,
        cost_batch: 8,
        description: "8 images".into(),
    };
    let targets = vec![Target {
        source: MeasuredSource::Trial {
            trial: 1,
            point: Some(2),
        },
        assignment: trial(1, TrialState::Complete, &[("fc1", "q4_0")], 1.0)
            .assignment
            .over(&layers)
            .expect("decodes"),
    }];
    let timing = |m: f64| Timing {
        figure: RoundFigure {
            fastest_us: m - 2.0,
            median_us: m,
            spread_us: 1.0,
            round_medians_us: vec![m, m + 5.0],
            other_load: Some(0.25),
            runs: 14,
        },
        repetitions: 7,
    };
    let measured = Measured {
        reference: timing(200.0),
        targets: vec![timing(150.0)],
    };
    let profile = crate::shipped::profile("cortex-a76").expect("profile");
    let machine = Machine {
        host: "h".into(),
        cpu: "c".into(),
        cores: 2,
        threads: 2,
        candle_version: "0.11.1".into(),
    };
    let ctx = Context {
        first: 5,
        input: &input,
        layers: &layers,
        profile_name: "cortex-a76",
        profile: &profile,
        machine: &machine,
        measured_unix: 42,
    };
    let r = records(&targets, &measured, &ctx).expect("records");
    assert_eq!(r.len(), 2);
    assert_eq!((r[0].number, r[1].number), (5, 6));
    assert_eq!(r[0].source, MeasuredSource::Reference);
    assert_eq!(
        r[0].assignment,
        AssignmentJson {
            default: Some("f32".into()),
            layers: BTreeMap::new()
        }
    );
    assert_eq!(r[0].hash, all_f32(&layers).hash_hex());
    assert_eq!(r[1].hash, targets[0].assignment.hash_hex());
    assert_eq!(
        r[1].assignment.over(&layers).expect("decodes"),
        targets[0].assignment,
        "the stored JSON is the assignment built"
    );
    let cost = CostModel::new(profile.clone(), 8).expect("cost model");
    assert_eq!(
        r[1].predicted_us,
        cost.assignment(&layers, &targets[0].assignment)
            .1
            .latency_us
    );
    assert_eq!(
        r[0].predicted_us,
        cost.assignment(&layers, &all_f32(&layers)).1.latency_us
    );
    let at_1 = CostModel::new(profile.clone(), 1).expect("cost model");
    assert!(
        r[1].predicted_us
            > at_1
                .assignment(&layers, &targets[0].assignment)
                .1
                .latency_us
    );
    for x in &r {
        assert_eq!(x.reference_us, 200.0);
        assert_eq!(
            (x.batch, x.tokens, x.cost_batch, x.repetitions),
            (8, None, 8, 7)
        );
        assert_eq!((x.host.as_str(), x.cores, x.measured_unix), ("h", 2, 42));
        assert_eq!(
            x.profile_fingerprint,
            profile.fingerprint().to_hex().to_string()
        );
    }
    // The figures are the fastest passes: the speed-up is theirs.
    assert_eq!(r[1].fastest_us, Some(148.0));
    assert_eq!(r[1].reference_fastest_us, Some(198.0));
    assert_eq!(r[1].speedup(), 198.0 / 148.0);
    assert_eq!(r[1].round_medians_us, vec![150.0, 155.0]);
}

#[test]
fn a_profile_describes_this_machine_only_when_calibrated_on_its_cpu() {
    let machine = Machine::this();
    let mut p = crate::shipped::profile("cortex-a76").expect("profile");
    assert_eq!(profile_match(&p, &machine), ProfileMatch::OtherDevice);
    p.file.calibration = Some(Calibration::default());
    p.file.provenance.cpu = Some(machine.cpu.clone());
    p.file.provenance.cores = Some(machine.cores);
    // An older profile (no threads recorded) ran candle on every core.
    let every_core = Machine {
        threads: machine.cores,
        ..machine.clone()
    };
    assert_eq!(profile_match(&p, &every_core), ProfileMatch::ThisMachine);
    p.file.provenance.threads = Some(machine.threads);
    assert_eq!(profile_match(&p, &machine), ProfileMatch::ThisMachine);
    // Same CPU and cores, candle on another number of threads: said, not taken for this machine.
    let one_thread = Machine {
        threads: machine.threads + 1,
        ..machine.clone()
    };
    assert_eq!(
        profile_match(&p, &one_thread),
        ProfileMatch::OtherThreads {
            calibrated: machine.threads,
            here: machine.threads + 1
        }
    );
    p.file.provenance.cores = Some(machine.cores + 1);
    match profile_match(&p, &machine) {
        ProfileMatch::OtherMachine(on) => {
            assert_eq!(
                on,
                format!("{}, {} threads", machine.cpu, machine.cores + 1)
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn built_models_are_sized_by_their_kernels() {
    let (model, data) = demo();
    let ev = CandleEvaluator::new(model, data, Default::default()).expect("evaluator");
    let a = |c: &str| Assignment::new([("fc1".to_string(), c.parse().expect("choice"))]);
    let f32_bytes = 256 * 1568 * 4;
    assert_eq!(
        overrides_bytes(&ev.deploy_overrides(&a("f32")).expect("built")),
        0
    );
    let int8 = overrides_bytes(&ev.deploy_overrides(&a("int8-sym-channel")).expect("built"));
    assert_eq!(int8, f32_bytes, "a dequantized f32 copy");
}
