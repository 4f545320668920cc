//! Bayes strategy tests: EHVI against Monte Carlo, the GP, determinism, and hypervolume against
//! random and the exact front on the synthetic problem.
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::*;
use crate::pareto;
use crate::strategy::synthetic::Synthetic;
use crate::strategy::{drive, CostLimit, ExactStrategy};

/// erfc's documented relative error bound.
const ERFC_REL_TOL: f64 = 1.2e-7;
/// Monte Carlo samples for the EHVI check, and the tolerance in standard errors.
const MC_SAMPLES: usize = 200_000;
const MC_SIGMAS: f64 = 4.0;
/// Noiseless GP: how close the mean interpolates, and how small the variance is, at training points
/// (relative to the targets' standard deviation and variance).
const GP_INTERP_TOL: f64 = 1e-2;
const GP_VAR_TOL: f64 = 1e-3;
/// Bayes must beat random hypervolume by at least this much on every seed.
const HV_MARGIN: f64 = 0.05;
/// ... and the exact strategy by at least this much.
const EXACT_MARGIN: f64 = 0.005;

#[test]
fn erfc_matches_reference_values() {
    // erfc at 0, 0.5, 1, 2, 3, 5 and −1 (to 16 digits).
    let cases = [
        (0.0, 1.0),
        (0.5, 0.479_500_122_186_953_5),
        (1.0, 0.157_299_207_050_285_13),
        (2.0, 0.004_677_734_981_047_266),
        (3.0, 2.209_049_699_858_544e-5),
        (5.0, 1.537_459_794_428_034_8e-12),
        (-1.0, 1.842_700_792_949_715),
    ];
    for (x, want) in cases {
        let got = erfc(x);
        assert!(
            ((got - want) / want).abs() < ERFC_REL_TOL,
            "erfc({x}) = {got}, want {want}"
        );
    }
    assert!((normal_cdf(1.959_963_984_540_054) - 0.975).abs() < 1e-7);
}

/// EHVI by summing every step (the definition), to check the shortcuts of [`Staircase::ehvi`].
fn ehvi_every_step(s: &Staircase, c: f64, mu: f64, sigma: f64) -> f64 {
    if c >= 1.0 {
        return 0.0;
    }
    let first_right = s.points.partition_point(|p| p[0] <= c);
    let mut level = if first_right == 0 {
        s.cap
    } else {
        s.points[first_right - 1][1]
    };
    let mut x = c;
    let mut total = 0.0;
    for p in &s.points[first_right..] {
        total += (p[0] - x) * expected_shortfall(level, mu, sigma);
        x = p[0];
        level = p[1];
    }
    total + (1.0 - x) * expected_shortfall(level, mu, sigma)
}

#[test]
fn ehvi_shortcuts_match_the_sum_over_every_step() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for _ in 0..50 {
        let pts: Vec<[f64; 2]> = (0..rng.random_range(0..300))
            .map(|_| [rng.random_range(0.0..1.1), rng.random_range(0.0..1.1)])
            .collect();
        let s = Staircase::new(&pts, rng.random_range(0.5..1.0));
        for _ in 0..50 {
            let c = rng.random_range(0.0..1.05);
            let mu = rng.random_range(-0.2..1.2);
            let sigma = [0.0, 1e-4, 0.01, 0.1, 1.0][rng.random_range(0..5usize)];
            let (fast, slow) = (s.ehvi(c, mu, sigma), ehvi_every_step(&s, c, mu, sigma));
            assert!(
                (fast - slow).abs() < 1e-12,
                "c {c} μ {mu} σ {sigma}: {fast} vs {slow}"
            );
        }
    }
}

#[test]
fn ehvi_is_the_hypervolume_gain_when_certain() {
    let front = [[0.1, 0.8], [0.3, 0.5], [0.6, 0.2], [0.9, 0.1]];
    let s = Staircase::new(&front, 1.0);
    let before = pareto::hypervolume_2d(&front, [1.0, 1.0]);
    for (c, q) in [
        (0.05, 0.9),
        (0.2, 0.3),
        (0.5, 0.6),
        (0.7, 0.0),
        (0.95, 0.05),
        (0.0, 1.2),
    ] {
        let mut with = front.to_vec();
        with.push([c, q]);
        let gain = pareto::hypervolume_2d(&with, [1.0, 1.0]) - before;
        let got = s.ehvi(c, q, 0.0);
        assert!((got - gain).abs() < 1e-12, "({c}, {q}): {got} vs {gain}");
    }
}

#[test]
fn ehvi_closed_form_matches_monte_carlo() {
    let fronts: [(&[[f64; 2]], f64); 3] = [
        (&[[0.1, 0.8], [0.3, 0.5], [0.6, 0.2], [0.9, 0.1]], 1.0),
        (&[], 1.0),
        // A quality limit: the cap is below the reference.
        (&[[0.2, 0.7], [0.5, 0.4], [0.55, 0.3]], 0.75),
    ];
    // (cost, mean, sd), including a cost beyond the whole front and a mean above the reference.
    let cases = [
        (0.0, 0.5, 0.2),
        (0.25, 0.4, 0.05),
        (0.45, 0.1, 0.3),
        (0.95, 0.05, 0.1),
        (0.5, 1.3, 0.3),
        (0.7, 0.25, 1.0),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for (front, cap) in fronts {
        let s = Staircase::new(front, cap);
        for (c, mu, sd) in cases {
            let mut sum = 0.0;
            let mut sum2 = 0.0;
            for _ in 0..MC_SAMPLES {
                let z: f64 = StandardNormal.sample(&mut rng);
                let g = s.ehvi(c, mu + sd * z, 0.0);
                sum += g;
                sum2 += g * g;
            }
            let mean = sum / MC_SAMPLES as f64;
            let se = ((sum2 / MC_SAMPLES as f64 - mean * mean).max(0.0) / MC_SAMPLES as f64).sqrt();
            let exact = s.ehvi(c, mu, sd);
            assert!(
                (exact - mean).abs() <= MC_SIGMAS * se + 1e-9,
                "front {front:?} cap {cap}, (c, μ, σ) = ({c}, {mu}, {sd}): closed form {exact}, \
                 Monte Carlo {mean} ± {se}"
            );
        }
    }
}

fn smooth(p: &[f64]) -> f64 {
    (3.0 * p[0]).sin() + p[1] * p[1] - 0.5 * p[0] * p[1]
}

#[test]
fn gp_interpolates_noiseless_data_and_is_unsure_away_from_it() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let n = 40;
    let x: Vec<f64> = (0..2 * n).map(|_| rng.random_range(0.0..1.0)).collect();
    let y: Vec<f64> = x.chunks(2).map(smooth).collect();
    let gp = Gp::fit(x.clone(), 2, &y, Grid::Full);
    let sd = gp.scale;
    let post = gp.predict(&x);
    for (i, yi) in y.iter().enumerate() {
        assert!(
            (post.mean[i] - yi).abs() < GP_INTERP_TOL * sd,
            "point {i}: mean {} vs {yi}",
            post.mean[i]
        );
        assert!(
            post.var[i] < GP_VAR_TOL * sd * sd,
            "variance {} at a training point",
            post.var[i]
        );
    }
    // Far outside the data the variance approaches the prior; between points it is positive.
    let far = 1.0 + 10.0 * gp.lengthscale;
    let away = [far, far, 0.5, 1.6];
    let post = gp.predict(&away);
    let prior = gp.signal * sd * sd;
    assert!(
        post.var[0] > 0.9 * prior,
        "far variance {} vs prior {prior}",
        post.var[0]
    );
    assert!(
        post.var[1] > GP_VAR_TOL * sd * sd,
        "off-data variance {}",
        post.var[1]
    );
    // And it predicts the smooth function between the points.
    let mut worst: f64 = 0.0;
    for _ in 0..50 {
        let p = [rng.random_range(0.1..0.9), rng.random_range(0.1..0.9)];
        worst = worst.max((gp.predict(&p).mean[0] - smooth(&p)).abs());
    }
    assert!(worst < 0.1 * sd, "held-out error {worst} (sd {sd})");
}

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
            });
        }
    }
    let t = training_set(&s.problem, &h, 64);
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
