//! # Pruning
//!
//! Pruning on the matrix view of a weight ([`WeightMatrix`]: rows are output channels, columns
//! inputs). Each function returns a **keep mask**: one flag per value, row-major, `false` where the
//! weight is pruned; [`prune`] applies it. Importance is the magnitude `|w|` (for rows, the L2 norm),
//! or given [`WeightScores`] (gradient importance, [`super::Importance`]: the `*_scored` functions);
//! every ranking breaks ties by position (the earlier value, or row, counts as the less important
//! one), so masks are deterministic.
//!
//! - **Unstructured** ([`unstructured_mask`]) at P percent of `n` values: exactly `⌊P·n/100⌋` zeros, the
//!   values of smallest `|w|` (or score).
//! - **N:M** ([`nm_mask`]): groups of M run along the **input channels at a fixed kernel position**,
//!   the layout sparse tensor cores use (the reduction dimension of the GEMM, channels innermost). A
//!   row of the matrix view holds `in · k` values, `k` the kernel positions per input channel (`kh·kw`
//!   for a convolution's weight `[out, in, kh, kw]`, 1 for a linear layer, an embedding, or the left
//!   factor `A` of a low-rank pair); value `(c, p)` sits in column `c·k + p`. For every row and kernel
//!   position `p`, the channels `c = 0, 1, …` are cut into runs of M (`w[o, c..c+M, i, j]`), and each
//!   run keeps its N largest `|w|` (ties: the later channel stays). When `in` is not a multiple of M,
//!   the **ragged tail** of the last `in mod M` channels stays dense: it is not pruned (a kernel cannot
//!   run it as N:M). So every row keeps `k · (N·⌊in/M⌋ + in mod M)` values ([`nm_kept_per_row`]).
//! - **Structured** ([`channel_mask`]) at P percent of `rows` output channels: the
//!   `round(P·rows/100)` rows of smallest L2 norm are removed (zeroed), but at least one row is kept —
//!   the same count as the cost model's `kept`.
//!
//! ## References
//!
//! - S. Han, J. Pool, J. Tran, W. Dally, "Learning both Weights and Connections for Efficient Neural
//!   Networks", NeurIPS 2015 (magnitude pruning).
//! - A. Mishra et al., "Accelerating Sparse Deep Neural Networks", arXiv:2104.08378, 2021 (2:4
//!   semi-structured sparsity on NVIDIA Ampere).
//! - H. Li, A. Kadav, I. Durdanovic, H. Samet, H. P. Graf, "Pruning Filters for Efficient ConvNets",
//!   ICLR 2017 (removing the output channels of smallest norm).

use std::cmp::Ordering;

use super::importance::WeightScores;
use super::matrix::WeightMatrix;
use crate::error::{Error, Result};
use crate::space::{Sparsity, MAX_M, PERCENT};

/// The keep mask of `sparsity` for `m` (all `true` when dense). `kernel` is the number of kernel
/// positions per input channel (`kh·kw` for a convolution's weight, 1 otherwise); only N:M uses it.
pub fn mask(m: &WeightMatrix, sparsity: &Sparsity, kernel: usize) -> Result<Vec<bool>> {
    mask_scored(m, sparsity, kernel, None)
}

/// [`mask`] ranking by `scores` (one per value and one per row of `m`) instead of magnitude when
/// given.
pub fn mask_scored(
    m: &WeightMatrix,
    sparsity: &Sparsity,
    kernel: usize,
    scores: Option<&WeightScores>,
) -> Result<Vec<bool>> {
    let key = Key::new(m, scores)?;
    match *sparsity {
        Sparsity::None => Ok(vec![true; m.len()]),
        Sparsity::Unstructured(p) => unstructured_by(&key, m.len(), p),
        Sparsity::NM { n, m: mm } => nm_by(&key, m.rows(), m.cols(), n, mm, kernel),
        Sparsity::Channels(p) => {
            let rows = channel_mask_scored(m, p, scores)?;
            Ok(expand_rows(&rows, m.cols()))
        }
    }
}

/// What a value is ranked by: its magnitude, or its score and then its magnitude (weights the
/// calibration gradients never reached all score 0; among them the smaller go first, not the earlier).
enum Key<'a> {
    Magnitude(&'a [f32]),
    Scores(&'a [f64], &'a [f32]),
}

impl<'a> Key<'a> {
    fn new(m: &'a WeightMatrix, scores: Option<&'a WeightScores>) -> Result<Key<'a>> {
        Ok(match scores {
            Some(s) => {
                s.check_fits(m.rows(), m.cols(), "pruning")?;
                Key::Scores(s.values(), m.data())
            }
            None => Key::Magnitude(m.data()),
        })
    }

    /// Orders positions `a`, `b` from less to more important: smaller key first (score, then
    /// `|w|`), and for equal keys the earlier position first.
    fn order(&self, a: usize, b: usize) -> Ordering {
        let magnitude = |d: &[f32]| d[a].abs().total_cmp(&d[b].abs());
        match self {
            Key::Magnitude(d) => magnitude(d),
            Key::Scores(s, d) => s[a].total_cmp(&s[b]).then_with(|| magnitude(d)),
        }
        .then(a.cmp(&b))
    }
}

/// `m` with `sparsity` applied: pruned values set to exactly zero (`kernel` as for [`mask`]).
pub fn prune(m: &WeightMatrix, sparsity: &Sparsity, kernel: usize) -> Result<WeightMatrix> {
    let keep = mask(m, sparsity, kernel)?;
    let mut out = m.clone();
    out.apply_mask(&keep);
    Ok(out)
}

/// Keeps all but the `⌊percent·n/100⌋` values of smallest `|w|`.
pub fn unstructured_mask(m: &WeightMatrix, percent: u8) -> Result<Vec<bool>> {
    unstructured_by(&Key::Magnitude(m.data()), m.len(), percent)
}

/// Keeps all but the `⌊percent·n/100⌋` values of smallest key.
fn unstructured_by(key: &Key<'_>, n: usize, percent: u8) -> Result<Vec<bool>> {
    check_percent("unstructured sparsity", percent)?;
    let prune = n * usize::from(percent) / 100;
    let mut keep = vec![true; n];
    if prune == 0 {
        return Ok(keep);
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.select_nth_unstable_by(prune - 1, |&a, &b| key.order(a, b));
    for &i in &order[..prune] {
        keep[i] = false;
    }
    Ok(keep)
}

/// Keeps, in every row and at every kernel position, the `n` largest `|w|` of each run of `m`
/// consecutive input channels; the ragged tail of `in mod m` channels stays dense (see the module
/// docs). `kernel` is the number of kernel positions per input channel and must divide the columns.
pub fn nm_mask(w: &WeightMatrix, n: u8, m: u8, kernel: usize) -> Result<Vec<bool>> {
    nm_by(&Key::Magnitude(w.data()), w.rows(), w.cols(), n, m, kernel)
}

/// [`nm_mask`] of a `rows × cols` weight ranked by `key`.
fn nm_by(
    key: &Key<'_>,
    rows: usize,
    cols: usize,
    n: u8,
    m: u8,
    kernel: usize,
) -> Result<Vec<bool>> {
    if !(n >= 1 && n < m && m <= MAX_M) {
        return Err(Error::compress(format!(
            "{n}:{m} is not an N:M pattern; it needs 1 <= N < M <= {MAX_M}"
        )));
    }
    let (n, m) = (usize::from(n), usize::from(m));
    if kernel == 0 || cols % kernel != 0 {
        return Err(Error::compress(format!(
            "a row of {cols} columns does not hold whole input channels of {kernel} kernel positions"
        )));
    }
    let runs = cols / kernel / m;
    let mut keep = vec![true; rows * cols];
    for r in 0..rows {
        let at = |c: usize| r * cols + c;
        for p in 0..kernel {
            for run in 0..runs {
                let col = |t: usize| (run * m + t) * kernel + p;
                for i in 0..m {
                    // A value is kept when fewer than `n` values of its run are more important than
                    // it (a larger key, or an equal key at a later channel): O(M²) comparisons, no
                    // sorting.
                    let above = (0..m)
                        .filter(|&j| key.order(at(col(j)), at(col(i))) == Ordering::Greater)
                        .count();
                    keep[r * cols + col(i)] = above < n;
                }
            }
        }
    }
    Ok(keep)
}

/// Values a row of `in · kernel` columns keeps under `n:m` (the ragged tail dense):
/// `kernel · (n·⌊in/m⌋ + in mod m)`.
pub fn nm_kept_per_row(cols: usize, kernel: usize, n: u8, m: u8) -> usize {
    let (n, m) = (usize::from(n), usize::from(m).max(1));
    let channels = cols / kernel.max(1);
    kernel * (n * (channels / m) + channels % m)
}

/// Kernel positions per input channel of a weight of shape `dims`: the product of the dimensions after
/// the first two (`kh·kw` for `[out, in, kh, kw]`), 1 for a matrix or a vector.
pub fn kernel_positions(dims: &[usize]) -> usize {
    dims.iter().skip(2).product()
}

/// One flag per row: `false` for the `round(percent·rows/100)` rows of smallest L2 norm (at least one
/// row is kept).
pub fn channel_mask(m: &WeightMatrix, percent: u8) -> Result<Vec<bool>> {
    channel_mask_scored(m, percent, None)
}

/// [`channel_mask`] ranking the rows by `scores`' row scores instead of their norms when given.
pub fn channel_mask_scored(
    m: &WeightMatrix,
    percent: u8,
    scores: Option<&WeightScores>,
) -> Result<Vec<bool>> {
    check_percent("channel removal", percent)?;
    let norms: Vec<f64> = (0..m.rows())
        .map(|r| m.row(r).iter().map(|&v| f64::from(v) * f64::from(v)).sum())
        .collect();
    match scores {
        Some(s) => {
            s.check_fits(m.rows(), m.cols(), "channel removal")?;
            rows_by(s.rows(), Some(&norms), percent)
        }
        None => channel_mask_by_norm(&norms, percent),
    }
}

/// [`channel_mask`] from given squared row norms (or any per-row importance).
pub(crate) fn channel_mask_by_norm(norms: &[f64], percent: u8) -> Result<Vec<bool>> {
    rows_by(norms, None, percent)
}

/// Removes the rows of least `keys`, ties broken by `then` (when given), then by position.
fn rows_by(keys: &[f64], then: Option<&[f64]>, percent: u8) -> Result<Vec<bool>> {
    check_percent("channel removal", percent)?;
    let rows = keys.len();
    let remove = rows - kept_rows(rows, percent);
    let mut order: Vec<usize> = (0..rows).collect();
    order.sort_unstable_by(|&a, &b| {
        let tie = then.map_or(Ordering::Equal, |t| t[a].total_cmp(&t[b]));
        keys[a].total_cmp(&keys[b]).then(tie).then(a.cmp(&b))
    });
    let mut keep = vec![true; rows];
    for &r in &order[..remove] {
        keep[r] = false;
    }
    Ok(keep)
}

/// Rows kept when `percent` of `rows` are removed: `rows − round(percent·rows/100)`, at least one
/// (the rule of the cost model's storage count).
pub fn kept_rows(rows: usize, percent: u8) -> usize {
    crate::space::kept_rows(rows as u64, percent) as usize
}

/// A per-value mask from a per-row mask.
pub(crate) fn expand_rows(rows: &[bool], cols: usize) -> Vec<bool> {
    rows.iter()
        .flat_map(|&k| std::iter::repeat_n(k, cols))
        .collect()
}

fn check_percent(what: &str, percent: u8) -> Result<()> {
    if PERCENT.contains(&percent) {
        Ok(())
    } else {
        Err(Error::compress(format!(
            "{what} of {percent}% is not a whole percent in {}..={}",
            PERCENT.start(),
            PERCENT.end()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_prune_the_earlier_value() {
        let m = WeightMatrix::new(1, 4, vec![1.0, -1.0, 1.0, 2.0]).unwrap();
        assert_eq!(
            unstructured_mask(&m, 50).unwrap(),
            vec![false, false, true, true]
        );
        assert_eq!(
            nm_mask(&m, 1, 2, 1).unwrap(),
            vec![false, true, false, true]
        );
    }

    #[test]
    fn ragged_nm_tail_stays_dense() {
        // 2:4 on 6 columns: one full run keeps 2, the tail of 2 is not pruned.
        let m = WeightMatrix::new(1, 6, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        assert_eq!(
            nm_mask(&m, 2, 4, 1).unwrap(),
            vec![false, false, true, true, true, true]
        );
        assert_eq!(nm_kept_per_row(6, 1, 2, 4), 4);
        // 3 channels × 2 kernel positions: shorter than one run, all dense.
        assert_eq!(nm_mask(&m, 2, 4, 2).unwrap(), vec![true; 6]);
        assert_eq!(nm_kept_per_row(6, 2, 2, 4), 6);
        // A kernel that does not divide the columns is an error.
        assert!(nm_mask(&m, 2, 4, 4).is_err());
    }

    #[test]
    fn nm_runs_go_along_channels_at_one_kernel_position() {
        // 4 channels × 2 kernel positions: value (c, p) in column c·2 + p. At p = 0 the channels hold
        // 1, 3, 5, 7 (columns 0, 2, 4, 6), at p = 1 they hold 2, 4, 6, 8: each keeps its two largest,
        // the last two channels.
        let m = WeightMatrix::new(1, 8, (1..=8).map(|v| v as f32).collect()).unwrap();
        assert_eq!(
            nm_mask(&m, 2, 4, 2).unwrap(),
            vec![false, false, false, false, true, true, true, true]
        );
        // Runs of consecutive columns would have kept 3, 4 and 7, 8.
        assert_ne!(nm_mask(&m, 2, 4, 2).unwrap(), nm_mask(&m, 2, 4, 1).unwrap());
    }

    #[test]
    fn scores_rank_in_place_of_magnitude() {
        // Scores that reverse the magnitudes reverse every choice; ties still prune the earlier.
        let m = WeightMatrix::new(2, 4, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]).unwrap();
        let rev = |v: &[f32]| v.iter().map(|x| 10.0 - f64::from(*x)).collect::<Vec<f64>>();
        let s = WeightScores::new(rev(m.data()), vec![2.0, 1.0]).unwrap();
        let un = Sparsity::Unstructured(50);
        assert_eq!(
            mask_scored(&m, &un, 1, Some(&s)).unwrap(),
            [vec![true; 4], vec![false; 4]].concat()
        );
        assert_eq!(
            mask_scored(&m, &Sparsity::NM { n: 2, m: 4 }, 1, Some(&s)).unwrap(),
            vec![true, true, false, false, true, true, false, false]
        );
        // Rows by their row scores: row 1 scores less, so it goes (its norm is the larger).
        assert_eq!(
            channel_mask_scored(&m, 50, Some(&s)).unwrap(),
            vec![true, false]
        );
        assert_eq!(channel_mask(&m, 50).unwrap(), vec![false, true]);
        // Scores equal to |w| give the magnitude masks exactly.
        let mag = WeightScores::new(
            m.data().iter().map(|x| f64::from(x.abs())).collect(),
            vec![30.0, 174.0],
        )
        .unwrap();
        for sp in [un, Sparsity::NM { n: 1, m: 2 }, Sparsity::Channels(50)] {
            assert_eq!(
                mask_scored(&m, &sp, 1, Some(&mag)).unwrap(),
                mask(&m, &sp, 1).unwrap()
            );
        }
        // Weights the gradients never reached score 0: among them the smaller |w| go first.
        let zero = WeightScores::new(vec![0.0; 8], vec![0.0, 0.0]).unwrap();
        for sp in [un, Sparsity::NM { n: 2, m: 4 }, Sparsity::Channels(50)] {
            assert_eq!(
                mask_scored(&m, &sp, 1, Some(&zero)).unwrap(),
                mask(&m, &sp, 1).unwrap(),
                "{sp}"
            );
        }
        // Scores of another shape are refused.
        let bad = WeightScores::new(vec![1.0; 4], vec![1.0]).unwrap();
        assert!(mask_scored(&m, &un, 1, Some(&bad)).is_err());
    }

    #[test]
    fn kept_rows_matches_the_cost_model() {
        assert_eq!(kept_rows(10, 25), 7); // round(2.5) = 3 removed
        assert_eq!(kept_rows(10, 24), 8);
        assert_eq!(kept_rows(1, 99), 1);
        assert_eq!(kept_rows(3, 99), 1);
    }
}
