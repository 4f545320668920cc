//! Bayes strategy tests: configuration, determinism, the candidates and training set, and hypervolume
//! against random and the exact front on the synthetic problem (the GP's and EHVI's own tests are
//! next to them, in `gp.rs` and `ehvi.rs`).

use super::*;
use crate::strategy::synthetic::Synthetic;
use crate::strategy::{drive, CostLimit, ExactStrategy};

/// Bayes must beat random hypervolume by at least this much on every seed.
const HV_MARGIN: f64 = 0.05;
/// ... and the exact strategy by at least this much.
const EXACT_MARGIN: f64 = 0.005;

fn bayes() -> BayesStrategy {
    BayesStrategy::new(BayesConfig::default()).unwrap()
}

#[test]
fn config_errors_name_the_field_and_range() {
    for (config, field) in [
        (
            BayesConfig {
                initial: 0,
                ..BayesConfig::default()
            },
            "initial must be in 2..=100000",
        ),
        (
            BayesConfig {
                max_points: 4,
                ..BayesConfig::default()
            },
            "max_points must be in 8..=2048",
        ),
        (
            BayesConfig {
                candidates: 0,
                ..BayesConfig::default()
            },
            "candidates must be in 1..=100000",
        ),
    ] {
        let e = BayesStrategy::new(config).unwrap_err().to_string();
        assert!(e.contains(field), "{e}");
    }
}

#[test]
fn tell_split_and_snapshot_restore_give_the_same_next_ask() {
    let s = Synthetic::new(8, 4, 5);
    let h = drive(&mut bayes(), &s.problem, 40, 8, |p| Some(s.quality(p))).unwrap();
    let mut whole = bayes();
    whole.tell(&s.problem, &h, 0..40).unwrap();
    let mut split = bayes();
    split.tell(&s.problem, &h, 0..13).unwrap();
    split.tell(&s.problem, &h, 13..40).unwrap();
    assert_eq!(whole.snapshot().unwrap(), split.snapshot().unwrap());
    let mut restored = bayes();
    restored.restore(&split.snapshot().unwrap()).unwrap();
    let a = whole.ask(&s.problem, &h, 8).unwrap();
    assert_eq!(a.len(), 8);
    assert_eq!(a, split.ask(&s.problem, &h, 8).unwrap());
    assert_eq!(a, restored.ask(&s.problem, &h, 8).unwrap());
    for garbage in ["", "[1,2]", "{\"told\": -1}", "{\"told\": 3, \"x\": 1}"] {
        let e = restored.restore(garbage).unwrap_err().to_string();
        assert!(e.contains("bayes"), "{garbage}: {e}");
    }
    assert!(whole.tell(&s.problem, &h, 30..41).is_err());
    // A history from another space is an error, not a panic.
    let mut other = History::new();
    other.push(super::super::Observed {
        number: 0,
        point: vec![9; 8],
        quality: Some(0.1),
        proxy: false,
    });
    let e = whole.ask(&s.problem, &other, 1).unwrap_err().to_string();
    assert!(e.contains("not in this 8-group space"), "{e}");
}

#[test]
fn never_proposes_a_tried_or_cost_infeasible_point() {
    let s = Synthetic::new(8, 4, 9);
    let mut p = Synthetic::new(8, 4, 9).problem;
    let table: Vec<Vec<f64>> = p
        .cost
        .iter()
        .map(|r| r.iter().rev().map(|x| x * 0.5 + 1.0).collect())
        .collect();
    let lo: f64 = table
        .iter()
        .map(|r| r.iter().copied().fold(f64::INFINITY, f64::min))
        .sum();
    let hi: f64 = table
        .iter()
        .map(|r| r.iter().copied().fold(0.0, f64::max))
        .sum();
    p.cost_limits.push(CostLimit {
        name: "size".into(),
        table,
        max: lo + 0.4 * (hi - lo),
    });
    let h = drive(&mut bayes(), &p, 120, 8, |x| {
        // Every tenth evaluation fails.
        (x.iter().map(|&c| c as usize).sum::<usize>() % 10 != 3).then(|| s.quality(x))
    })
    .unwrap();
    assert_eq!(h.len(), 120);
    let distinct: HashSet<&Point> = h.trials().iter().map(|t| &t.point).collect();
    assert_eq!(distinct.len(), h.len(), "a point was proposed twice");
    for t in h.trials() {
        assert_eq!(
            p.cost_violation(&t.point),
            0.0,
            "{:?} breaks the size limit",
            t.point
        );
    }
}

#[test]
fn training_set_is_capped_and_keeps_the_front() {
    let s = Synthetic::new(6, 4, 2);
    let mut rng = rng_for(0, "test", 0);
    let mut h = History::new();
    while h.len() < 300 {
        let point = s.problem.random_point(&mut rng);
        if !h.contains(&point) {
            let quality = Some(s.quality(&point));
            h.push(super::super::Observed {
                number: h.len() as u64,
                point,
                quality,
                proxy: false,
            });
        }
    }
    let t = training_set(&s.problem, &h, &h.front(&s.problem), 64);
    assert_eq!(t.len(), 64);
    let front = h.front(&s.problem);
    let kept = front.iter().filter(|i| t.contains(i)).count();
    assert_eq!(kept, front.len().min(32), "front {front:?}, kept {kept}");
    assert!(t.contains(&299), "the most recent trial is kept");
}

/// On the non-additive synthetic problem, at equal trials, bayes beats uniform random search by
/// [`HV_MARGIN`] and the predictor's own exact front (the exact strategy, which spends every trial on
/// predicted-optimal points) by [`EXACT_MARGIN`]: the residual model finds what the predictor misses.
#[test]
fn bayes_beats_random_and_the_predicted_front_on_hypervolume() {
    const TRIALS: usize = 120;
    for seed in 0..5 {
        let s = Synthetic::new(12, 6, seed);
        let f = |p: &[u16]| Some(s.quality(p));
        let hb = drive(&mut bayes(), &s.problem, TRIALS, 8, f).unwrap();
        let hr = drive(
            &mut crate::strategy::RandomStrategy::new(),
            &s.problem,
            TRIALS,
            8,
            f,
        )
        .unwrap();
        let he = drive(&mut ExactStrategy::new(), &s.problem, TRIALS, 8, f).unwrap();
        assert_eq!((hb.len(), hr.len(), he.len()), (TRIALS, TRIALS, TRIALS));
        let (b, r, e) = (
            hb.hypervolume(&s.problem),
            hr.hypervolume(&s.problem),
            he.hypervolume(&s.problem),
        );
        eprintln!(
            "seed {seed}: {TRIALS} trials, hypervolume bayes {b:.4}, random {r:.4}, exact {e:.4}"
        );
        assert!(b >= r + HV_MARGIN, "seed {seed}: bayes {b} vs random {r}");
        assert!(b >= e + EXACT_MARGIN, "seed {seed}: bayes {b} vs exact {e}");
    }
}

/// Per-ask time at a 2,000-trial history, batch 8, 40 groups (run with `--ignored --nocapture`).
#[test]
#[ignore]
fn ask_time_at_two_thousand_trials() {
    let s = Synthetic::new(40, 6, 1);
    let h = drive(&mut bayes(), &s.problem, 2000, 64, |p| Some(s.quality(p))).unwrap();
    let mut b = bayes();
    b.tell(&s.problem, &h, 0..h.len()).unwrap();
    let start = std::time::Instant::now();
    let reps = 5;
    for _ in 0..reps {
        assert_eq!(b.ask(&s.problem, &h, 8).unwrap().len(), 8);
    }
    let per = start.elapsed().as_secs_f64() / reps as f64;
    eprintln!(
        "ask(8) at {} trials, 40 groups: {:.1} ms",
        h.len(),
        per * 1e3
    );
}

/// The batch a full scan picks: at each pick, every untaken candidate's EHVI computed afresh and the
/// largest taken (the first among equals) — what the lazy greedy of `pick_batch` must reproduce.
fn full_scan(problem: &Problem, history: &History, candidates: &[Point], n: usize) -> Vec<Point> {
    let encoder = Encoder::new(problem);
    let front = history.front(problem);
    let gp = fit(problem, history, &front, 256, &encoder, Grid::Full);
    let m = candidates.len();
    let [rc, rq] = problem.reference;
    let mut xs = Vec::new();
    candidates
        .iter()
        .for_each(|p| encoder.encode_into(p, &mut xs));
    let post = gp.predict(&xs);
    let cost: Vec<f64> = candidates.iter().map(|p| problem.cost(p) / rc).collect();
    let mean: Vec<f64> = (0..m)
        .map(|i| (problem.predict(&candidates[i]) + post.mean[i]) / rq)
        .collect();
    let unit = 1.0 / (rq * rq);
    let mut var: Vec<f64> = post.var.iter().map(|v| v * unit).collect();
    let measured: Vec<[f64; 2]> = front
        .iter()
        .map(|&i| {
            let t = &history.trials()[i];
            [problem.cost(&t.point) / rc, t.quality.unwrap() / rq]
        })
        .collect();
    let mut stairs = Staircase::new(&measured, 1.0);
    let (mut taken, mut factors, mut out) = (vec![false; m], Vec::<Vec<f64>>::new(), Vec::new());
    while out.len() < n.min(m) {
        let b = (0..m)
            .filter(|&i| !taken[i])
            .map(|i| (i, stairs.ehvi(cost[i], mean[i], var[i].sqrt())))
            .fold(None, |best: Option<(usize, f64)>, (i, a)| match best {
                Some((_, v)) if a <= v => best,
                _ => Some((i, a)),
            })
            .unwrap()
            .0;
        taken[b] = true;
        out.push(candidates[b].clone());
        stairs.insert(cost[b], mean[b]);
        let mut column: Vec<f64> = (0..m).map(|i| gp.cov(&xs, &post, i, b) * unit).collect();
        for u in &factors {
            let ub = u[b];
            column.iter_mut().zip(u).for_each(|(c, ui)| *c -= ui * ub);
        }
        let scale = (column[b] + gp.noise_variance() * unit).sqrt().recip();
        column.iter_mut().for_each(|c| *c *= scale);
        var.iter_mut()
            .zip(&column)
            .for_each(|(v, u)| *v = (*v - u * u).max(0.0));
        factors.push(column);
    }
    out
}

#[test]
fn the_lazy_greedy_batch_is_the_batch_a_full_scan_picks() {
    for seed in 0..4 {
        let s = Synthetic::new(5, 12, seed);
        let h = drive(&mut bayes(), &s.problem, 120, 8, |p| Some(s.quality(p))).unwrap();
        let mut rng = rng_for(seed, "test", 0);
        let front = h.front(&s.problem);
        let pool = candidates(&s.problem, &h, &front, 256, &mut rng).unwrap();
        let encoder = Encoder::new(&s.problem);
        let gp = fit(&s.problem, &h, &front, 256, &encoder, Grid::Full);
        for n in [1, 8, 32] {
            let lazy = pick_batch(&s.problem, &h, &front, &encoder, &gp, pool.clone(), n);
            assert_eq!(
                lazy,
                full_scan(&s.problem, &h, &pool, n),
                "seed {seed}, n {n}"
            );
            assert_eq!(lazy.len(), n);
        }
    }
}
