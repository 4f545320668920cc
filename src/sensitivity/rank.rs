//! # How well predictions order the truth
//!
//! Rank statistics of predicted against measured quality: Spearman's ρ (Pearson's correlation of the
//! ranks, tied values sharing their average rank) and Kendall's τ-b (concordant minus discordant
//! pairs, corrected for ties in either list), both as scipy's `spearmanr` and `kendalltau` compute
//! them; and the mean absolute error. A search needs the order more than the values: a predictor
//! that ranks assignments right steers it right.
//!
//! ## References
//!
//! - C. Spearman, "The proof and measurement of association between two things", 1904.
//! - M. G. Kendall, "The treatment of ties in ranking problems", Biometrika 33, 1945 (τ-b).

use crate::error::{Error, Result};

fn check(a: &[f64], b: &[f64], min: usize) -> Result<()> {
    if a.len() != b.len() {
        return Err(Error::sensitivity(format!(
            "cannot compare {} predictions with {} measurements",
            a.len(),
            b.len()
        )));
    }
    if a.len() < min {
        return Err(Error::sensitivity(format!(
            "{} pairs are too few (at least {min} are needed)",
            a.len()
        )));
    }
    if let Some(v) = a.iter().chain(b).find(|v| !v.is_finite()) {
        return Err(Error::sensitivity(format!("value {v} is not finite")));
    }
    Ok(())
}

/// Ranks from 1, tied values sharing the average of their ranks.
pub fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // Positions start..end hold ranks start+1..=end; their average:
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

/// Pearson's correlation; an error if either list is constant.
fn pearson(a: &[f64], b: &[f64]) -> Result<f64> {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        let (dx, dy) = (x - ma, y - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    if saa == 0.0 || sbb == 0.0 {
        return Err(Error::sensitivity(
            "a list of constant values has no rank correlation",
        ));
    }
    Ok(sab / (saa * sbb).sqrt())
}

/// Spearman's rank correlation ρ with average ranks for ties. Needs ≥ 2 pairs, neither list constant.
pub fn spearman(a: &[f64], b: &[f64]) -> Result<f64> {
    check(a, b, 2)?;
    pearson(&average_ranks(a), &average_ranks(b))
}

/// Kendall's τ-b: `(C − D) / √((C + D + Tₐ)(C + D + T_b))` with `C`, `D` the concordant and
/// discordant pairs and `Tₐ`, `T_b` the pairs tied in only `a` or only `b`. O(n²). Needs ≥ 2 pairs,
/// neither list constant.
pub fn kendall_tau_b(a: &[f64], b: &[f64]) -> Result<f64> {
    check(a, b, 2)?;
    let (mut c, mut d, mut ta, mut tb) = (0u64, 0u64, 0u64, 0u64);
    for i in 0..a.len() {
        for j in i + 1..a.len() {
            let sa = (a[i] - a[j]).signum() * f64::from(a[i] != a[j]);
            let sb = (b[i] - b[j]).signum() * f64::from(b[i] != b[j]);
            match (sa == 0.0, sb == 0.0) {
                (true, true) => {}
                (true, false) => ta += 1,
                (false, true) => tb += 1,
                (false, false) if sa == sb => c += 1,
                (false, false) => d += 1,
            }
        }
    }
    let denominator = (((c + d + ta) * (c + d + tb)) as f64).sqrt();
    if denominator == 0.0 {
        return Err(Error::sensitivity(
            "a list of constant values has no rank correlation",
        ));
    }
    Ok((c as f64 - d as f64) / denominator)
}

/// Mean absolute difference. Needs ≥ 1 pair.
pub fn mean_absolute_error(a: &[f64], b: &[f64]) -> Result<f64> {
    check(a, b, 1)?;
    Ok(a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>() / a.len() as f64)
}
