//! Fronts, sorts and hypervolumes against brute force on random point sets.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

/// Random points with small integer coordinates (so ties and duplicates happen) in `0..side`.
fn random_points(rng: &mut ChaCha8Rng, n: usize, dim: usize, side: u32) -> Vec<Vec<f64>> {
    (0..n)
        .map(|_| (0..dim).map(|_| rng.random_range(0..side) as f64).collect())
        .collect()
}

/// Brute-force fronts: repeatedly take the points no remaining point constraint-dominates.
fn brute_fronts(points: &[Vec<f64>], v: &[f64]) -> Vec<Vec<usize>> {
    let mut left: Vec<usize> = (0..points.len()).collect();
    let mut fronts = Vec::new();
    while !left.is_empty() {
        let f: Vec<usize> = left
            .iter()
            .copied()
            .filter(|&i| {
                !left
                    .iter()
                    .any(|&j| constrained_dominates(&points[j], v[j], &points[i], v[i]))
            })
            .collect();
        left.retain(|i| !f.contains(i));
        fronts.push(f);
    }
    fronts
}

/// Brute-force hypervolume of integer points: count the unit cells of `[0, r)` that some point
/// weakly dominates (a cell [c, c+1) is covered by p if p ≤ c in every coordinate).
fn brute_hypervolume(points: &[Vec<f64>], r: &[u32]) -> f64 {
    let dim = r.len();
    let total: u32 = r.iter().product();
    let mut count = 0;
    for cell in 0..total {
        let mut c = vec![0u32; dim];
        let mut rest = cell;
        for (k, ck) in c.iter_mut().enumerate() {
            *ck = rest % r[k];
            rest /= r[k];
        }
        if points
            .iter()
            .any(|p| p.iter().zip(&c).all(|(x, &ck)| *x <= ck as f64))
        {
            count += 1;
        }
    }
    count as f64
}

#[test]
fn non_dominated_sort_matches_brute_force() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for case in 0..200 {
        let dim = 2 + case % 2;
        let n = rng.random_range(0..40);
        let pts = random_points(&mut rng, n, dim, 8);
        let v: Vec<f64> = (0..n)
            .map(|_| {
                if rng.random_bool(0.3) {
                    rng.random_range(1..4) as f64
                } else {
                    0.0
                }
            })
            .collect();
        assert_eq!(
            non_dominated_sort(&pts, &v),
            brute_fronts(&pts, &v),
            "case {case}"
        );
        let feasible = vec![0.0; n];
        let first = brute_fronts(&pts, &feasible)
            .into_iter()
            .next()
            .unwrap_or_default();
        assert_eq!(front(&pts), first, "front, case {case}");
    }
}

#[test]
fn hypervolume_matches_brute_force_in_2_and_3_dimensions() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for case in 0..200 {
        let dim = 2 + case % 2;
        let n = rng.random_range(0..25);
        // Coordinates up to 11 with a reference at 10: some points lie outside and must add nothing.
        let pts = random_points(&mut rng, n, dim, 12);
        let r = vec![10u32; dim];
        let rf: Vec<f64> = r.iter().map(|&x| x as f64).collect();
        let got = hypervolume(&pts, &rf);
        assert_eq!(got, brute_hypervolume(&pts, &r), "case {case}: {pts:?}");
    }
}

#[test]
fn hypervolume_of_one_point_is_its_box() {
    assert_eq!(hypervolume_2d(&[[0.25, 0.5]], [1.0, 1.0]), 0.375);
    assert_eq!(hypervolume_3d(&[[0.5, 0.5, 0.5]], [1.0, 1.0, 1.0]), 0.125);
    assert_eq!(
        hypervolume_2d(&[[1.0, 0.0]], [1.0, 1.0]),
        0.0,
        "on the reference"
    );
}

#[test]
fn crowding_gives_extremes_infinity_and_inner_points_their_normalised_gaps() {
    let pts = vec![
        vec![0.0, 4.0],
        vec![1.0, 2.0],
        vec![3.0, 1.0],
        vec![4.0, 0.0],
    ];
    let d = crowding_distance(&pts, &[0, 1, 2, 3]);
    assert!(d[0].is_infinite() && d[3].is_infinite());
    // Point 1: x gap (3-0)/4, y gap (4-1)/4; point 2: (4-1)/4 + (2-0)/4.
    assert!((d[1] - 1.5).abs() < 1e-12, "{d:?}");
    assert!((d[2] - 1.25).abs() < 1e-12, "{d:?}");
}

#[test]
fn constraint_domination_prefers_feasible_then_smaller_violation() {
    let good = [5.0, 5.0];
    let bad = [0.0, 0.0];
    assert!(constrained_dominates(&good, 0.0, &bad, 1.0));
    assert!(!constrained_dominates(&bad, 1.0, &good, 0.0));
    assert!(constrained_dominates(&bad, 0.5, &good, 1.0));
    assert!(
        !constrained_dominates(&good, 0.0, &good, 0.0),
        "no self-domination"
    );
}
