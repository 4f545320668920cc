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

/// What the language-model metrics keep of the base model's next-token outputs on a split, computed
/// once from its logits: per position, the probabilities `p` (f32: the exps of the f32 log-softmax
/// [`log_softmax_in_place`]), `Σ p·log p` (f64), the log-probability of the true next token and the
/// most likely token. So each evaluation computes only the compressed model's side of the KL — no
/// exp of the base's 49k-wide rows per evaluation.
#[derive(Debug)]
pub struct LmReference {
    rows: Vec<BaseRow>,
}

/// One position of an [`LmReference`].
#[derive(Debug)]
struct BaseRow {
    probs: Vec<f32>,
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
            .map(|(i, mut lr)| {
                log_softmax_in_place(&mut lr);
                let target = next
                    .and_then(|n| n.get(i))
                    .filter(|&&t| t != NO_TARGET)
                    .and_then(|&t| lr.get(t as usize))
                    .map(|&l| f64::from(l));
                let probs: Vec<f32> = lr.iter().map(|l| l.exp()).collect();
                BaseRow {
                    neg_entropy: cross(&probs, &lr),
                    target,
                    top: argmax(&lr),
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

/// `Σ p·l` in f64, in index order (the same order for the base's own `Σ p·log p`, so that identical
/// log-probabilities give a KL of exactly 0).
fn cross(p: &[f32], l: &[f32]) -> f64 {
    p.iter()
        .zip(l)
        .map(|(&p, &l)| f64::from(p) * f64::from(l))
        .sum()
}

/// Language-model metrics of a compressed model's next-token `logits` (consumed: each row becomes its
/// log-probabilities in place, no copy of the 49k-wide rows) against the base model's
/// [`LmReference`], one row per position, with each position's true next token in `next`
/// ([`NO_TARGET`] where there is none):
///
/// - `kl_divergence`: mean over every position of KL(base ‖ compressed) = `Σ p·log p − Σ p·log q`,
///   nats;
/// - `perplexity`, `base_perplexity`: exp of the mean negative log-likelihood of the next tokens,
///   compressed and base (positions with a target only);
/// - `top1_agreement`: fraction of positions where both models' most likely next token is the same.
///
/// Rows are processed in parallel (rayon), each in f64 accumulators.
pub fn language_model(
    reference: &LmReference,
    logits: Vec<Vec<f32>>,
    next: &[u32],
) -> BTreeMap<String, f64> {
    use rayon::prelude::*;
    struct Row {
        kl: f64,
        nll: Option<(f64, f64)>,
        agree: bool,
    }
    let rows: Vec<Row> = logits
        .into_par_iter()
        .zip(reference.rows.par_iter())
        .zip(next.par_iter())
        .map(|((mut lo, base), &t)| {
            let agree = base.top == argmax(&lo);
            // The compressed rows through the base's f32 log-softmax, in place.
            log_softmax_in_place(&mut lo);
            let kl = nonnegative(base.neg_entropy - cross(&base.probs, &lo));
            let nll = base
                .target
                .zip(lo.get(t as usize))
                .map(|(base, &l)| (-base, -f64::from(l)));
            Row { kl, nll, agree }
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
        let m = language_model(&reference, vec![vec![f32::NAN, 0.0, 0.0]], &[1]);
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
        let m = language_model(&reference, base.clone(), &next);
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
        let m = language_model(&reference, other.clone(), &next);
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
