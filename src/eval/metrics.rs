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
    lr.iter()
        .zip(&lo)
        .map(|(a, b)| a.exp() * (a - b))
        .sum::<f64>()
        .max(0.0)
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
