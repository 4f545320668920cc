//! The search engine's own overhead, side by side with what it manages:
//!
//! - `overhead/*`: each strategy's ask(8) + tell(8) at a 2,000-trial history, per trial, on synthetic
//!   problems shaped like the demo space (4 groups × 80 choices) and like `bert-base` on MiniLM-L6
//!   (24 searchable groups × 360 choices), next to one evaluation of a new demo assignment (target: strategy time
//!   ≤ 2% of wall time).
//! - `resume/10000`: from opening a store holding a 10,000-trial demo run to its first new trial
//!   journaled (target ≤ 1 s): model load and f32 reference, fingerprint check, sensitivity model from
//!   the store, journal read, strategy rebuilt from the history.

use std::hint::black_box;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use mpsearch::eval::{Evaluation, Evaluator};
use mpsearch::search::{self, Control, Progress};
use mpsearch::space::Assignment;
use mpsearch::store::{RunConfig, SledStore, Store};
use mpsearch::strategy::{self, drive, synthetic::Synthetic, History, StrategyKind};
use rand::{Rng, SeedableRng};

const HISTORY: usize = 2000;

fn overhead(c: &mut Criterion) {
    let mut g = c.benchmark_group("overhead");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    for (shape, groups, choices) in [("demo-shape", 4, 80), ("minilm-shape", 24, 360)] {
        let s = Synthetic::new(groups, choices, 1);
        for kind in StrategyKind::ALL {
            if kind == StrategyKind::Exact {
                continue; // stateless lookups into a precomputed front
            }
            // A realistic 2,008-trial history, made by the strategy itself.
            let mut st = strategy::build(kind).expect("strategy");
            let full = drive(st.as_mut(), &s.problem, HISTORY + 8, 8, |p| {
                Some(s.quality(p))
            })
            .expect("drive");
            let mut history = History::new();
            for t in &full.trials()[..HISTORY] {
                history.push(t.clone());
            }
            // The strategy of a running search: told the history, and warm (its memos filled by
            // the asks before, as in a run). Each iteration asks 8 points of it, then tells 8 trials
            // to a copy restored from its snapshot (so the told state stays at 2,000 trials).
            let mut told = strategy::build(kind).expect("strategy");
            told.tell(&s.problem, &history, 0..HISTORY).expect("tell");
            black_box(told.ask(&s.problem, &history, 8).expect("ask"));
            let snapshot = told.snapshot().expect("snapshot");
            g.bench_function(format!("{shape}/{kind}/ask8+tell8"), |b| {
                b.iter(|| {
                    black_box(told.ask(&s.problem, &history, 8).expect("ask"));
                    let mut st = strategy::build(kind).expect("strategy");
                    st.restore(&snapshot).expect("restore");
                    st.tell(&s.problem, &full, HISTORY..HISTORY + 8)
                        .expect("tell");
                })
            });
        }
    }
    // What the overhead is compared with: one new demo assignment evaluated.
    let (model, data) =
        mpsearch::eval::load(&mpsearch::model::ModelSource::Demo, None).expect("demo");
    let ev = mpsearch::eval::CandleEvaluator::new(model, data, Default::default()).expect("ev");
    let space = mpsearch::shipped::space("demo", &ev.model().inventory().layers).expect("space");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let points: Vec<Vec<u16>> = (0..64)
        .map(|_| {
            space
                .groups
                .iter()
                .map(|g| rng.random_range(0..g.choices.len()) as u16)
                .collect()
        })
        .collect();
    for p in &points {
        ev.overrides(&space.assignment(p)).expect("warm");
    }
    let mut i = 0;
    g.bench_function("demo/evaluate-one", |b| {
        b.iter(|| {
            // Mix two warmed points so the assignment is new but its weights are memoised.
            let a = &points[i % 64];
            let b2 = &points[(i * 7 + 3) % 64];
            let p: Vec<u16> = a
                .iter()
                .zip(b2)
                .enumerate()
                .map(|(k, (x, y))| if k % 2 == 0 { *x } else { *y })
                .collect();
            i += 1;
            black_box(ev.evaluate(&space.assignment(&p)).expect("evaluate"))
        })
    });
    g.finish();
}

/// A stand-in evaluator for filling a store quickly: the sensitivity prediction plus a small
/// interaction term, answered in microseconds.
struct Quick<'a> {
    session: &'a search::Session,
}

impl Evaluator for Quick<'_> {
    fn fingerprint(&self) -> blake3::Hash {
        blake3::hash(b"bench quick evaluator")
    }
    fn objective(&self) -> &'static str {
        "kl_divergence"
    }
    fn evaluate(&self, a: &Assignment) -> mpsearch::Result<Evaluation> {
        let p = self.session.space.point(a)?;
        let q = self.session.problem.predict(&p);
        Ok(Evaluation {
            quality: q + 0.1 * q * q,
            metrics: Default::default(),
            seconds: 0.0,
        })
    }
}

fn control_run(
    session: &search::Session,
    ev: &dyn Evaluator,
    store: &dyn Store,
    m: mpsearch::store::RunManifest,
) -> search::Outcome {
    let stop = AtomicBool::new(false);
    let mut progress = |_: &Progress| {};
    search::run(
        session,
        ev,
        store,
        m,
        &mut Control {
            workers: None,
            jobs: 1,
            stop: &stop,
            progress: &mut progress,
        },
    )
    .expect("run")
}

fn resume(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = RunConfig {
        strategy: StrategyKind::Evolution,
        trials: Some(10_000),
        ..RunConfig::default()
    };
    {
        let store = SledStore::open(dir.path()).expect("store");
        let (session, m) = search::create(
            &store,
            "big",
            config,
            &AtomicBool::new(false),
            &mut |_, _, _| {},
        )
        .expect("create");
        let t = Instant::now();
        let o = control_run(&session, &Quick { session: &session }, &store, m);
        eprintln!(
            "filled a {}-trial run in {:.1} s",
            o.trials.len(),
            t.elapsed().as_secs_f64()
        );
    }
    let mut g = c.benchmark_group("resume");
    g.sample_size(10);
    g.bench_function("10000/open-to-first-new-trial", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // The previous handle's lock is released asynchronously: let it go before timing.
                std::thread::sleep(Duration::from_millis(200));
                let t = Instant::now();
                let store = SledStore::open(dir.path()).expect("store");
                let (session, mut m) =
                    search::open(&store, "big", &AtomicBool::new(false), &mut |_, _, _| {})
                        .expect("open");
                let done = store.trials("big").expect("trials").len() as u64;
                m.config.trials = Some(done + 1);
                let o = control_run(&session, &Quick { session: &session }, &store, m);
                total += t.elapsed();
                assert_eq!(o.new_trials, 1);
            }
            total
        })
    });
    // Its parts.
    let store = SledStore::open(dir.path()).expect("store");
    g.bench_function("10000/read-journal", |b| {
        b.iter(|| black_box(store.trials("big").expect("trials")))
    });
    let (session, _) =
        search::open(&store, "big", &AtomicBool::new(false), &mut |_, _, _| {}).expect("open");
    let records = store.trials("big").expect("trials");
    let mut history = History::new();
    for r in &records {
        history.push(mpsearch::strategy::Observed {
            number: r.number,
            point: r.point.clone(),
            quality: r.quality,
            proxy: false,
        });
    }
    g.bench_function("10000/rebuild-evolution-from-history", |b| {
        b.iter(|| {
            let mut st = strategy::build(StrategyKind::Evolution).expect("strategy");
            st.tell(&session.problem, &history, 0..history.len())
                .expect("tell");
            black_box(st.snapshot().expect("snapshot"))
        })
    });
    g.finish();
}

criterion_group!(benches, overhead, resume);
criterion_main!(benches);
