//! Quality metrics of a compressed model's outputs against the uncompressed model's outputs on the same
//! data. Plain arithmetic on rows of f32 (logits or embeddings), in f64 accumulators.

use std::collections::BTreeMap;

/// Softmax of one row of logits, computed stably (max subtracted), in f64.
pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exps: Vec<f64> = logits.iter().map(|&z| (z as f64 - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// log-softmax of one row, stably.
pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = logits
        .iter()
        .map(|&z| (z as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    logits.iter().map(|&z| z as f64 - lse).collect()
}

/// KL(p_ref ‖ p) of two rows of logits: Σ p_ref · (log p_ref − log p).
pub fn kl_divergence(reference: &[f32], other: &[f32]) -> f64 {
    let (lr, lo) = (log_softmax(reference), log_softmax(other));
    let kl = lr
        .iter()
        .zip(&lo)
        .map(|(a, b)| a.exp() * (a - b))
        .sum::<f64>();
    nonnegative(kl)
}

/// A KL clamped at 0 from below (f64 rounding can leave −1e-17), NaN kept: a model whose outputs hold
/// NaN must not score a perfect 0 (`f64::max` would turn NaN into 0); the evaluator refuses a
/// non-finite quality.
fn nonnegative(kl: f64) -> f64 {
    if kl.is_nan() {
        kl
    } else {
        kl.max(0.0)
    }
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Classifier metrics of `logits` against the f32 model's `reference` logits and the true `labels`:
/// `accuracy` (fraction), `accuracy_drop` (percentage points below the reference's accuracy),
/// `cross_entropy` (mean, nats), `kl_divergence` (mean KL(reference ‖ compressed), nats).
pub fn classifier(
    reference: &[Vec<f32>],
    logits: &[Vec<f32>],
    labels: &[u32],
) -> BTreeMap<String, f64> {
    let n = logits.len().max(1) as f64;
    let correct = |rows: &[Vec<f32>]| {
        rows.iter()
            .zip(labels)
            .filter(|(r, &l)| argmax(r) == l as usize)
            .count() as f64
            / n
    };
    let (acc, acc_ref) = (correct(logits), correct(reference));
    let ce = logits
        .iter()
        .zip(labels)
        .map(|(r, &l)| -log_softmax(r)[l as usize])
        .sum::<f64>()
        / n;
    let kl = reference
        .iter()
        .zip(logits)
        .map(|(r, o)| kl_divergence(r, o))
        .sum::<f64>()
        / n;
    BTreeMap::from([
        ("accuracy".to_string(), acc),
        ("accuracy_drop".to_string(), 100.0 * (acc_ref - acc)),
        ("cross_entropy".to_string(), ce),
        ("kl_divergence".to_string(), kl),
    ])
}

/// Cosine similarity of two vectors (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

/// Encoder metrics of `embeddings` against the f32 model's: `mean_cosine`, `worst_cosine`,
/// `cosine_distance` (1 − mean cosine) and `relative_l2` (mean ‖e − e_ref‖ / ‖e_ref‖).
pub fn encoder(reference: &[Vec<f32>], embeddings: &[Vec<f32>]) -> BTreeMap<String, f64> {
    let n = embeddings.len().max(1) as f64;
    let cos: Vec<f64> = reference
        .iter()
        .zip(embeddings)
        .map(|(r, e)| cosine(r, e))
        .collect();
    let mean = cos.iter().sum::<f64>() / n;
    let worst = cos.iter().copied().fold(f64::INFINITY, f64::min);
    let rel = reference
        .iter()
        .zip(embeddings)
        .map(|(r, e)| {
            let d: f64 = r
                .iter()
                .zip(e)
                .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                .sum();
            let nr: f64 = r.iter().map(|&a| (a as f64).powi(2)).sum();
            if nr == 0.0 {
                0.0
            } else {
                (d / nr).sqrt()
            }
        })
        .sum::<f64>()
        / n;
    BTreeMap::from([
        ("mean_cosine".to_string(), mean),
        (
            "worst_cosine".to_string(),
            if worst.is_finite() { worst } else { 1.0 },
        ),
        ("cosine_distance".to_string(), 1.0 - mean),
        ("relative_l2".to_string(), rel),
    ])
}

/// Next-token id of a position that has none in its window (a window's last position): no
/// perplexity term there, its KL and top-1 agreement still count.
pub const NO_TARGET: u32 = u32::MAX;

/// A row of logits turned into log-probabilities in place (log-softmax, stably; f64 sums): what the
/// language-model evaluator keeps of the base model's outputs.
pub fn log_softmax_in_place(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // exp in f32 (each term to ~1e-7 relative, every term ≤ 1), summed in f64.
    let lse = row
        .iter()
        .map(|&z| f64::from((z - max).exp()))
        .sum::<f64>()
        .ln() as f32
        + max;
    for z in row.iter_mut() {
        *z -= lse;
    }
}

/// `exp(x)` in f32 without a libm call, so that a loop over a row vectorizes: Cephes' `expf`
/// (`x = n·ln 2 + r`, `n` rounded to nearest, `r` in ±ln 2 / 2 by a two-part Cody–Waite reduction, a
/// degree-7 polynomial for `e^r`, `2^n` put into the exponent bits), ~1.2e-7 relative error (≤ 2 ulp,
/// tested against `f32::exp`). The language-model metrics exponentiate 25 M logits per evaluation of
/// SmolLM2 (vocabulary 49,152 × 512 positions); libm's scalar `expf` was 4% of an evaluation's
/// samples. `n` comes from the float's bits after adding 1.5·2²³ (round to nearest, no float-to-int
/// cast, no `floor` call: both stop the vectorizer on a baseline x86-64 target).
///
/// Domain: the argument is clamped to [−87, 88], so that `2^n` stays a normal float: below −87 the
/// result is `e^−87` ≈ 1.6e-38 instead of a smaller or zero value (the metrics only exponentiate
/// `z − max ≤ 0` and add the terms to one that is 1, so this changes no sum); NaN stays NaN.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts: n·C1 is exact for |n| < 2^9.
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    const SHIFTER: f32 = 12_582_912.0; // 1.5 · 2^23
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + SHIFTER;
    let n = t - SHIFTER;
    let r = x - n * C1 - n * C2;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_65;
    let p = p * r + 0.5;
    let e = p * (r * r) + r + 1.0;
    // t's low mantissa bits hold n (two's complement, offset by the shifter's 0x40_0000).
    let n = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    e * f32::from_bits((n.wrapping_add(127) << 23) as u32)
}

/// Lanes of the row sums below: independent f64 accumulators, so that the compiler can keep them in
/// vector registers (one sequential f64 sum is a chain of dependent adds); the order of the additions
/// is fixed, so a row always gives the same sum.
const LANES: usize = 8;

/// `Σ f(x)` over `row` in [`LANES`] f64 accumulators, then their sum.
#[inline(always)]
fn lane_sum(row: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut acc = [0f64; LANES];
    let chunks = row.chunks_exact(LANES);
    let rest = chunks.remainder();
    for xs in chunks {
        for (a, &x) in acc.iter_mut().zip(xs) {
            *a += f(x);
        }
    }
    for (a, &x) in acc.iter_mut().zip(rest) {
        *a += f(x);
    }
    acc.iter().sum()
}

/// `Σ a·b` over two rows (the shorter's length) in [`LANES`] f64 accumulators, then their sum.
fn lane_dot(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0f64; LANES];
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (xs, ys) in ca.zip(cb) {
        for ((s, &x), &y) in acc.iter_mut().zip(xs).zip(ys) {
            *s += f64::from(x) * f64::from(y);
        }
    }
    for ((s, &x), &y) in acc.iter_mut().zip(ra).zip(rb) {
        *s += f64::from(x) * f64::from(y);
    }
    acc.iter().sum()
}

/// log Σ exp(z) of a row whose maximum is `max`: `max + ln Σ exp(z − max)`, the exps in f32
/// ([`fast_exp`], each ≤ 1) summed in f64. NaN in the row (or a NaN `max`) gives NaN.
fn log_sum_exp(row: &[f32], max: f32) -> f64 {
    f64::from(max) + lane_sum(row, |z| f64::from(fast_exp(z - max))).ln()
}

/// `Σ p·z − lse·Σp` = `Σ p·(z − lse)` in f64: the cross term of a row of logits `z` whose log-sum-exp
/// is `lse` with the base's probabilities `p` (their sum `mass`). The base's own `Σ p·log p` is this
/// function of its own logits, so that identical logits give a KL of exactly 0.
fn cross(p: &[f32], z: &[f32], lse: f64, mass: f64) -> f64 {
    lane_dot(p, z) - lse * mass
}

/// What the language-model metrics keep of the base model's next-token outputs on a split, computed
/// once from its logits: per position, the probabilities `p` (f32: the exps of the f32 log-softmax
/// [`log_softmax_in_place`]) and their sum, `Σ p·log p` (f64, `cross` of its own logits), the
/// log-probability of the true next token and the most likely token. So each evaluation computes
/// only the compressed model's side of the KL — no exp of the base's 49k-wide rows per evaluation.
#[derive(Debug)]
pub struct LmReference {
    rows: Vec<BaseRow>,
}

/// One position of an [`LmReference`].
#[derive(Debug)]
struct BaseRow {
    probs: Vec<f32>,
    /// `Σ p` (1 up to f32 rounding).
    mass: f64,
    /// `Σ p·log p`.
    neg_entropy: f64,
    /// log p of the true next token, where there is one.
    target: Option<f64>,
    /// The most likely token.
    top: usize,
}

impl LmReference {
    /// From the base model's `logits` (one row per position, consumed) and each position's true next
    /// token (`next`, [`NO_TARGET`] where there is none; `None` or a shorter list: no targets).
    pub fn new(logits: Vec<Vec<f32>>, next: Option<&[u32]>) -> LmReference {
        use rayon::prelude::*;
        let rows = logits
            .into_par_iter()
            .enumerate()
            .map(|(i, z)| {
                let top = argmax(&z);
                let lse = log_sum_exp(&z, z.get(top).copied().unwrap_or(f32::NAN));
                let target = next
                    .and_then(|n| n.get(i))
                    .filter(|&&t| t != NO_TARGET)
                    .and_then(|&t| z.get(t as usize))
                    .map(|&l| f64::from(l) - lse);
                let mut lr = z.clone();
                log_softmax_in_place(&mut lr);
                let probs: Vec<f32> = lr.iter().map(|l| l.exp()).collect();
                let mass = lane_sum(&probs, f64::from);
                BaseRow {
                    neg_entropy: cross(&probs, &z, lse, mass),
                    mass,
                    target,
                    top,
                    probs,
                }
            })
            .collect();
        LmReference { rows }
    }

    /// Positions.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no positions.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Language-model metrics of a compressed model's next-token `logits` (one row per position, read
/// in place: the evaluator passes rows of the forward pass's own output, no copy of the 49k-wide
/// rows) against the base model's [`LmReference`], with each position's true next token in `next`
/// ([`NO_TARGET`] where there is none):
///
/// - `kl_divergence`: mean over every position of KL(base ‖ compressed) = `Σ p·log p − Σ p·log q`,
///   nats, `log q = z − lse(z)` in f64 (`cross`);
/// - `perplexity`, `base_perplexity`: exp of the mean negative log-likelihood of the next tokens,
///   compressed and base (positions with a target only);
/// - `top1_agreement`: fraction of positions where both models' most likely next token is the same.
///
/// Per row three passes over the logits (arg-max, the exps' sum, `Σ p·z`), the sums in f64 lanes;
/// rows are processed in parallel (rayon).
pub fn language_model<R: AsRef<[f32]> + Sync>(
    reference: &LmReference,
    logits: &[R],
    next: &[u32],
) -> BTreeMap<String, f64> {
    use rayon::prelude::*;
    struct Row {
        kl: f64,
        nll: Option<(f64, f64)>,
        agree: bool,
    }
    let rows: Vec<Row> = logits
        .par_iter()
        .zip(reference.rows.par_iter())
        .zip(next.par_iter())
        .map(|((z, base), &t)| {
            let z = z.as_ref();
            let top = argmax(z);
            let lse = log_sum_exp(z, z.get(top).copied().unwrap_or(f32::NAN));
            let kl = nonnegative(base.neg_entropy - cross(&base.probs, z, lse, base.mass));
            let nll = base
                .target
                .zip(z.get(t as usize))
                .map(|(base, &l)| (-base, lse - f64::from(l)));
            Row {
                kl,
                nll,
                agree: base.top == top,
            }
        })
        .collect();

    let n = rows.len().max(1) as f64;
    let targets: Vec<(f64, f64)> = rows.iter().filter_map(|r| r.nll).collect();
    let m = targets.len().max(1) as f64;
    BTreeMap::from([
        (
            "kl_divergence".to_string(),
            rows.iter().map(|r| r.kl).sum::<f64>() / n,
        ),
        (
            "base_perplexity".to_string(),
            (targets.iter().map(|t| t.0).sum::<f64>() / m).exp(),
        ),
        (
            "perplexity".to_string(),
            (targets.iter().map(|t| t.1).sum::<f64>() / m).exp(),
        ),
        (
            "top1_agreement".to_string(),
            rows.iter().filter(|r| r.agree).count() as f64 / n,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: f64 = 1e-12;

    #[test]
    fn kl_is_zero_for_equal_logits_and_matches_the_definition() {
        assert!(kl_divergence(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]).abs() < TOL);
        // Shift invariance of softmax.
        assert!(kl_divergence(&[1.0, 2.0, 3.0], &[11.0, 12.0, 13.0]).abs() < 1e-9);
        let p = softmax(&[0.0, 1.0]);
        let q = softmax(&[1.0, 0.0]);
        let want = p[0] * (p[0] / q[0]).ln() + p[1] * (p[1] / q[1]).ln();
        assert!((kl_divergence(&[0.0, 1.0], &[1.0, 0.0]) - want).abs() < TOL);
    }

    #[test]
    fn classifier_metrics_by_hand() {
        let reference = vec![vec![2.0, 0.0], vec![0.0, 2.0]];
        let logits = vec![vec![2.0, 0.0], vec![2.0, 0.0]];
        let m = classifier(&reference, &logits, &[0, 1]);
        assert_eq!(m["accuracy"], 0.5);
        assert_eq!(m["accuracy_drop"], 50.0);
        let ce = (-log_softmax(&[2.0, 0.0])[0] - log_softmax(&[2.0, 0.0])[1]) / 2.0;
        assert!((m["cross_entropy"] - ce).abs() < TOL);
        assert!((m["kl_divergence"] - kl_divergence(&[0.0, 2.0], &[2.0, 0.0]) / 2.0).abs() < TOL);
    }

    #[test]
    fn nan_outputs_never_score_a_perfect_kl() {
        assert!(kl_divergence(&[1.0, 2.0], &[f32::NAN, 0.0]).is_nan());
        let base = vec![vec![2.0f32, 0.0, -1.0]];
        let reference = LmReference::new(base, Some(&[1]));
        let m = language_model(&reference, &[vec![f32::NAN, 0.0, 0.0]], &[1]);
        assert!(m["kl_divergence"].is_nan(), "{m:?}");
    }

    #[test]
    fn language_model_metrics_by_hand() {
        let base = vec![
            vec![2.0f32, 0.0, -1.0],
            vec![0.0, 1.0, 0.5],
            vec![0.3, 0.2, 0.1],
        ];
        let next = [1, 2, NO_TARGET];
        let reference = LmReference::new(base.clone(), Some(&next));
        // The base against itself: KL exactly 0, perplexities equal, full agreement.
        let m = language_model(&reference, &base, &next);
        assert_eq!(m["kl_divergence"], 0.0, "{m:?}");
        assert!((m["perplexity"] - m["base_perplexity"]).abs() < 1e-5);
        let nll = -(log_softmax(&base[0])[1] + log_softmax(&base[1])[2]) / 2.0;
        assert!((m["base_perplexity"] - nll.exp()).abs() < 1e-5, "{m:?}");
        assert_eq!(m["top1_agreement"], 1.0);
        // Another model: mean of the row KLs, its own perplexity, agreement on the argmax.
        let other = vec![
            vec![0.0f32, 2.0, -1.0],
            vec![0.0, 1.0, 0.5],
            vec![0.3, 0.2, 0.1],
        ];
        let m = language_model(&reference, &other, &next);
        let want = (kl_divergence(&base[0], &other[0])
            + kl_divergence(&base[1], &other[1])
            + kl_divergence(&base[2], &other[2]))
            / 3.0;
        assert!(
            (m["kl_divergence"] - want).abs() < 1e-6,
            "{} {want}",
            m["kl_divergence"]
        );
        let nll = -(log_softmax(&other[0])[1] + log_softmax(&other[1])[2]) / 2.0;
        assert!((m["perplexity"] - nll.exp()).abs() < 1e-5);
        assert!((m["top1_agreement"] - 2.0 / 3.0).abs() < TOL);
    }

    #[test]
    fn fast_exp_is_within_two_ulp_of_std_exp_and_keeps_nan() {
        let mut worst = 0f64;
        let (lo, hi, n) = (-87.0f32, 88.0f32, 2_000_000);
        for i in 0..=n {
            let x = lo + (hi - lo) * i as f32 / n as f32;
            let (got, want) = (fast_exp(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
        }
        // Exact where it must be: e^0 = 1.
        assert_eq!(fast_exp(0.0), 1.0);
        assert!(worst < 2.5e-7, "worst relative error {worst:e}");
        assert!(fast_exp(f32::NAN).is_nan());
        // Below the domain: e^-87, not a subnormal or 0.
        assert_eq!(fast_exp(-1e4), fast_exp(-87.0));
    }

    #[test]
    fn lm_sums_in_lanes_equal_plain_sums() {
        let z: Vec<f32> = (0..1003)
            .map(|i| ((i as f32 * 0.618).fract() - 0.5) * 20.0)
            .collect();
        let p: Vec<f32> = softmax(&z).iter().map(|&p| p as f32).collect();
        let max = z[argmax(&z)];
        let plain = z
            .iter()
            .map(|&v| ((v - max) as f64).exp())
            .sum::<f64>()
            .ln()
            + max as f64;
        assert!((log_sum_exp(&z, max) - plain).abs() < 1e-6);
        let dot: f64 = p.iter().zip(&z).map(|(&a, &b)| a as f64 * b as f64).sum();
        assert!((lane_dot(&p, &z) - dot).abs() < 1e-9 * dot.abs().max(1.0));
    }

    #[test]
    fn encoder_metrics_by_hand() {
        let reference = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        let e = vec![vec![1.0, 0.0], vec![1.0, 1.0]];
        let m = encoder(&reference, &e);
        let c = 1.0 / 2f64.sqrt();
        assert!((m["mean_cosine"] - (1.0 + c) / 2.0).abs() < TOL);
        assert!((m["worst_cosine"] - c).abs() < TOL);
        assert!((m["cosine_distance"] - (1.0 - (1.0 + c) / 2.0)).abs() < TOL);
        assert!((m["relative_l2"] - 0.5).abs() < TOL);
    }
}
