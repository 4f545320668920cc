//! # Pareto dominance, fronts and hypervolume
//!
//! Pure computation on points whose every coordinate is **minimised** (quality drop, latency, size…).
//! Constraints enter as a per-point *violation* (0 for a feasible point, the amount by which it misses
//! its limits otherwise): with constraint-domination a feasible point beats an infeasible one, of two
//! infeasible points the smaller violation wins, and two feasible points compare by plain dominance.
//!
//! Hypervolume is the measure of the region dominated by a set and bounded by a **reference point**
//! `r` (each coordinate of `r` is an upper bound): `HV(S) = λ(∪_{s∈S} [s, r])`. Points not strictly
//! better than `r` in every coordinate add nothing. The search uses, per axis, a reference that every
//! run of the same problem shares (see `search`), so hypervolumes of different strategies compare.
//!
//! ## References
//!
//! - K. Deb, A. Pratap, S. Agarwal, T. Meyarivan, "A fast and elitist multiobjective genetic algorithm:
//!   NSGA-II", IEEE TEC 6(2), 2002 (fast non-dominated sort, crowding distance, constraint-domination).
//! - E. Zitzler, L. Thiele, "Multiobjective optimization using evolutionary algorithms — a comparative
//!   case study", PPSN V, 1998 (the hypervolume indicator).
//! - N. Beume et al., "On the complexity of computing the hypervolume indicator", IEEE TEC 13(5), 2009
//!   (the sweep used in 2-D; 3-D here slices along the third axis, O(n² log n), ample for fronts of
//!   thousands of points).

use std::cmp::Ordering;

/// Whether `a` dominates `b`: no worse in every coordinate and better in one (all minimised).
pub fn dominates(a: &[f64], b: &[f64]) -> bool {
    debug_assert_eq!(a.len(), b.len());
    let mut better = false;
    for (x, y) in a.iter().zip(b) {
        if x > y {
            return false;
        }
        better |= x < y;
    }
    better
}

/// Deb's constraint-domination: `a` (with violation `va` ≥ 0) beats `b` (violation `vb`) if `a` is
/// feasible and `b` is not, if both are infeasible and `a` violates less, or if both are feasible and
/// `a` dominates `b`.
pub fn constrained_dominates(a: &[f64], va: f64, b: &[f64], vb: f64) -> bool {
    match (va > 0.0, vb > 0.0) {
        (false, true) => true,
        (true, false) => false,
        (true, true) => va < vb,
        (false, false) => dominates(a, b),
    }
}

/// Fast non-dominated sort under constraint-domination: the fronts, best first, each a list of indices
/// into `points` in increasing index order. `violations[i]` is point i's violation (0 = feasible).
/// O(M·N²) for N points of M coordinates.
pub fn non_dominated_sort(points: &[Vec<f64>], violations: &[f64]) -> Vec<Vec<usize>> {
    let n = points.len();
    assert_eq!(n, violations.len(), "one violation per point");
    let mut dominated_by_count = vec![0usize; n];
    let mut dominates_list: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 0..n {
        for j in i + 1..n {
            if constrained_dominates(&points[i], violations[i], &points[j], violations[j]) {
                dominates_list[i].push(j);
                dominated_by_count[j] += 1;
            } else if constrained_dominates(&points[j], violations[j], &points[i], violations[i]) {
                dominates_list[j].push(i);
                dominated_by_count[i] += 1;
            }
        }
    }
    let mut fronts = Vec::new();
    let mut current: Vec<usize> = (0..n).filter(|&i| dominated_by_count[i] == 0).collect();
    while !current.is_empty() {
        let mut next = Vec::new();
        for &i in &current {
            for &j in &dominates_list[i] {
                dominated_by_count[j] -= 1;
                if dominated_by_count[j] == 0 {
                    next.push(j);
                }
            }
        }
        next.sort_unstable();
        fronts.push(std::mem::replace(&mut current, next));
    }
    fronts
}

/// Indices of the non-dominated points of `points` (plain dominance; duplicates all kept), in
/// increasing index order.
pub fn front(points: &[Vec<f64>]) -> Vec<usize> {
    if points.first().is_some_and(|p| p.len() == 2) {
        let pts: Vec<[f64; 2]> = points.iter().map(|p| [p[0], p[1]]).collect();
        return front_2d(&pts);
    }
    (0..points.len())
        .filter(|&i| !points.iter().any(|q| dominates(q, &points[i])))
        .collect()
}

/// Indices of the non-dominated points of a 2-D set, in increasing index order; O(N log N).
pub fn front_2d(points: &[[f64; 2]]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&a, &b| lex(&points[a], &points[b]));
    let mut out = Vec::new();
    let mut best_y = f64::INFINITY;
    let mut i = 0;
    while i < order.len() {
        // A run of equal x: only its smallest y (and copies of it) can be non-dominated.
        let x = points[order[i]][0];
        let y = points[order[i]][1];
        let mut j = i;
        while j < order.len() && points[order[j]][0] == x {
            if points[order[j]][1] == y && y < best_y {
                out.push(order[j]);
            }
            j += 1;
        }
        best_y = best_y.min(y);
        i = j;
    }
    out.sort_unstable();
    out
}

fn lex(a: &[f64; 2], b: &[f64; 2]) -> Ordering {
    a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1]))
}

/// Crowding distance of each member of `front` (indices into `points`), in the order of `front`:
/// the sum over coordinates of the normalised gap between each point's neighbours; the extremes of
/// every coordinate get infinity.
pub fn crowding_distance(points: &[Vec<f64>], front: &[usize]) -> Vec<f64> {
    let n = front.len();
    let mut d = vec![0.0; n];
    if n == 0 {
        return d;
    }
    let m = points[front[0]].len();
    let mut order: Vec<usize> = (0..n).collect();
    // `k` is the coordinate, not an index into `points` (clippy's suggested rewrite would be wrong).
    #[allow(clippy::needless_range_loop)]
    for k in 0..m {
        order.sort_by(|&a, &b| {
            points[front[a]][k]
                .total_cmp(&points[front[b]][k])
                .then(a.cmp(&b))
        });
        let lo = points[front[order[0]]][k];
        let hi = points[front[order[n - 1]]][k];
        d[order[0]] = f64::INFINITY;
        d[order[n - 1]] = f64::INFINITY;
        let span = hi - lo;
        if span <= 0.0 || !span.is_finite() {
            continue;
        }
        for w in 1..n.saturating_sub(1) {
            let gap = points[front[order[w + 1]]][k] - points[front[order[w - 1]]][k];
            d[order[w]] += gap / span;
        }
    }
    d
}

/// Exact 2-D hypervolume of `points` with respect to `reference`; O(N log N).
pub fn hypervolume_2d(points: &[[f64; 2]], reference: [f64; 2]) -> f64 {
    let mut inside: Vec<[f64; 2]> = points
        .iter()
        .copied()
        .filter(|p| p[0] < reference[0] && p[1] < reference[1])
        .collect();
    inside.sort_by(lex);
    let mut volume = 0.0;
    let mut level = reference[1];
    for p in inside {
        if p[1] < level {
            volume += (reference[0] - p[0]) * (level - p[1]);
            level = p[1];
        }
    }
    volume
}

/// Exact 3-D hypervolume of `points` with respect to `reference` (slices along the third axis).
pub fn hypervolume_3d(points: &[[f64; 3]], reference: [f64; 3]) -> f64 {
    let mut inside: Vec<[f64; 3]> = points
        .iter()
        .copied()
        .filter(|p| p[0] < reference[0] && p[1] < reference[1] && p[2] < reference[2])
        .collect();
    inside.sort_by(|a, b| a[2].total_cmp(&b[2]));
    let mut volume = 0.0;
    let mut slice: Vec<[f64; 2]> = Vec::with_capacity(inside.len());
    for (i, p) in inside.iter().enumerate() {
        slice.push([p[0], p[1]]);
        let top = inside.get(i + 1).map_or(reference[2], |q| q[2]);
        if top > p[2] {
            volume += hypervolume_2d(&slice, [reference[0], reference[1]]) * (top - p[2]);
        }
    }
    volume
}

/// Hypervolume of 2- or 3-coordinate points (the dimension of `reference`); panics on another
/// dimension (a programming error, not user input).
pub fn hypervolume(points: &[Vec<f64>], reference: &[f64]) -> f64 {
    match reference.len() {
        2 => hypervolume_2d(
            &points.iter().map(|p| [p[0], p[1]]).collect::<Vec<_>>(),
            [reference[0], reference[1]],
        ),
        3 => hypervolume_3d(
            &points
                .iter()
                .map(|p| [p[0], p[1], p[2]])
                .collect::<Vec<_>>(),
            [reference[0], reference[1], reference[2]],
        ),
        d => panic!("hypervolume is implemented for 2 and 3 objectives, not {d}"),
    }
}

#[cfg(test)]
mod tests;
