//! Compression primitives against theory or an independent computation: the uniform quantizer's
//! Δ²/12 error, scheme and clipping comparisons, idempotency, pruning counts and patterns, Eckart–Young
//! for the truncated SVD, the order of `apply_choice`, activation quantization bounds, and the cache.

use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{Device, Tensor};
use mpsearch::compress::{
    apply_choice, calibrate_range, compress_factors, prune, quantize_activation, quantize_weight,
    truncated_svd, CompressCache, QuantizedWeight, RangeMethod, ScaleMethod, WeightMatrix,
};
use mpsearch::cost::CostModel;
use mpsearch::space::{
    rank_k, ActQuant, Choice, Granularity, LayerInfo, LayerKind, QuantScheme, WeightQuant,
};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp, Normal, Uniform};

use crate::util::choice;

/// Relative deviation allowed between a measured quantization MSE and Δ²/12.
const DELTA_SQ_12_REL_TOL: f64 = 0.03;
/// Asymmetric must beat symmetric by at least this factor in MSE on all-positive data (theory: ≈4.6
/// at int4, from steps max/15 against max/7).
const ASYM_MIN_GAIN: f64 = 2.0;
/// MSE clipping must cut the min/max error by at least this factor on Gaussian data with outliers
/// (measured: 1.1 for int4-asym-g128, where half the groups hold no outlier, up to 2.9 per tensor).
const CLIP_MIN_GAIN: f64 = 1.05;
/// Re-quantizing a dequantized weight may move a value by this share of the weight's largest
/// magnitude (f32 rounding of the re-fitted scale).
const IDEMPOTENT_TOL: f32 = 1e-5;
/// Relative tolerance of Eckart–Young: ‖W − W_k‖²_F against Σ_{i>k} σ_i² (f32 SVD, f64 reference).
const SVD_REL_TOL: f64 = 1e-4;
/// Orthonormality of the rows of B = V_kᵀ.
const ORTHO_TOL: f64 = 1e-4;
/// Relative slack on the Δ/2 bound of activation quantization (f32 arithmetic).
const ACT_REL_SLACK: f32 = 1e-4;
/// How far (relative to the largest logit) the same image's logits may move with the batch size under
/// act8-dynamic: f32 arithmetic only, far below one activation step.
const BATCH_INDEPENDENCE_TOL: f32 = 1e-4;
/// Agreement of `apply_choice` with an independent f64 product of its factors.
const PRODUCT_TOL: f64 = 1e-4;
/// Relative tolerance of a min/max scale against the step size computed from the formula.
const SCALE_REL_TOL: f64 = 1e-5;
/// Relative and absolute slack on the half-step bound of a value rounded to a group's grid (f32
/// arithmetic).
const GRID_REL_SLACK: f32 = 1e-4;
const GRID_ABS_SLACK: f32 = 1e-7;

fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

fn tensor(data: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn gaussian(seed: u64, n: usize) -> Vec<f32> {
    let d = Normal::new(0.0f32, 1.0).unwrap();
    let mut r = rng(seed);
    (0..n).map(|_| d.sample(&mut r)).collect()
}

fn mse(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum::<f64>()
        / a.len() as f64
}

fn int(bits: u8, scheme: QuantScheme, granularity: Granularity) -> WeightQuant {
    WeightQuant::Int {
        bits,
        scheme,
        granularity,
    }
}

// ---- weight quantization ----

#[test]
fn uniform_quantizer_error_is_delta_squared_over_12() {
    let n = 200_000;
    let d = Uniform::new(-1.0f32, 1.0).unwrap();
    let mut r = rng(1);
    let x: Vec<f32> = (0..n).map(|_| d.sample(&mut r)).collect();
    let (lo, hi) = x
        .iter()
        .fold((0.0f32, 0.0f32), |(l, h), &v| (l.min(v), h.max(v)));
    let amax = lo.abs().max(hi);
    let w = tensor(x.clone(), &[400, 500]);
    for (scheme, bits) in [
        (QuantScheme::Symmetric, 2),
        (QuantScheme::Symmetric, 3),
        (QuantScheme::Symmetric, 4),
        (QuantScheme::Symmetric, 6),
        (QuantScheme::Symmetric, 8),
        (QuantScheme::Asymmetric, 4),
        (QuantScheme::Asymmetric, 6),
        (QuantScheme::Asymmetric, 8),
    ] {
        // Step sizes computed here from the formulas, not read from the quantizer.
        let delta = match scheme {
            QuantScheme::Symmetric => f64::from(amax) / f64::from((1u32 << (bits - 1)) - 1),
            QuantScheme::Asymmetric => f64::from(hi - lo) / f64::from((1u32 << bits) - 1),
        };
        let fmt = int(bits, scheme, Granularity::Tensor);
        let q = QuantizedWeight::new(&w, &fmt, ScaleMethod::MinMax).unwrap();
        let rel_scale = (f64::from(q.scales()[0]) - delta).abs() / delta;
        assert!(
            rel_scale < SCALE_REL_TOL,
            "{fmt}: scale {} against Δ {delta}",
            q.scales()[0]
        );
        let got = mse(&x, &values(&q.dequantize().unwrap()));
        let want = delta * delta / 12.0;
        let rel = (got - want).abs() / want;
        assert!(
            rel < DELTA_SQ_12_REL_TOL,
            "{fmt}: MSE {got:.3e}, Δ²/12 = {want:.3e} (relative deviation {rel:.4})"
        );
    }
}

#[test]
fn asymmetric_beats_symmetric_on_all_positive_weights() {
    let d = Exp::new(1.0f32).unwrap();
    let mut r = rng(2);
    let x: Vec<f32> = (0..64 * 256).map(|_| d.sample(&mut r)).collect();
    let w = tensor(x.clone(), &[64, 256]);
    for g in [
        Granularity::Tensor,
        Granularity::Channel,
        Granularity::Group(32),
    ] {
        let err = |s| {
            let q = quantize_weight(&w, &int(4, s, g), ScaleMethod::MinMax).unwrap();
            mse(&x, &values(&q))
        };
        let (sym, asym) = (err(QuantScheme::Symmetric), err(QuantScheme::Asymmetric));
        assert!(
            asym * ASYM_MIN_GAIN < sym,
            "int4 {g}: asymmetric MSE {asym:.3e} is not {ASYM_MIN_GAIN}× below symmetric {sym:.3e}"
        );
    }
}

#[test]
fn quantizing_twice_changes_nothing() {
    // 100 columns: g32 and g24 both leave a ragged last group.
    let x = gaussian(3, 16 * 100);
    let w = tensor(x, &[16, 100]);
    let mut formats = vec![WeightQuant::F32, WeightQuant::F16, WeightQuant::Bf16];
    for bits in [2, 3, 4, 8] {
        for scheme in [QuantScheme::Symmetric, QuantScheme::Asymmetric] {
            for g in [
                Granularity::Tensor,
                Granularity::Channel,
                Granularity::Group(32),
                Granularity::Group(24),
            ] {
                formats.push(int(bits, scheme, g));
            }
        }
    }
    for fmt in formats {
        for method in [ScaleMethod::MinMax, ScaleMethod::Mse] {
            let once = quantize_weight(&w, &fmt, method).unwrap();
            let twice = quantize_weight(&once, &fmt, method).unwrap();
            let (a, b) = (values(&once), values(&twice));
            let amax = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let worst = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst <= IDEMPOTENT_TOL * amax,
                "{fmt} {method}: re-quantizing moved a value by {worst:e} (max |w| {amax})"
            );
        }
    }
}

#[test]
fn mse_clipping_beats_min_max_with_outliers() {
    let (rows, cols) = (64, 512);
    let mut x = gaussian(4, rows * cols);
    // One outlier of 6σ to 10σ in every 256 weights, as trained weights tend to have.
    let mut r = rng(5);
    for i in (0..x.len()).step_by(256) {
        let at = i + r.random_range(0..256);
        let sign = if r.random_bool(0.5) { 1.0 } else { -1.0 };
        x[at] = sign * r.random_range(6.0f32..10.0);
    }
    let w = tensor(x.clone(), &[rows, cols]);
    for bits in [3, 4] {
        for scheme in [QuantScheme::Symmetric, QuantScheme::Asymmetric] {
            for g in [
                Granularity::Tensor,
                Granularity::Channel,
                Granularity::Group(128),
            ] {
                let fmt = int(bits, scheme, g);
                let err = |m| mse(&x, &values(&quantize_weight(&w, &fmt, m).unwrap()));
                let (minmax, clipped) = (err(ScaleMethod::MinMax), err(ScaleMethod::Mse));
                assert!(
                    clipped * CLIP_MIN_GAIN < minmax,
                    "{fmt}: MSE-clipped error {clipped:.4e} is not {CLIP_MIN_GAIN}× below min/max {minmax:.4e}"
                );
            }
        }
    }
}

#[test]
fn convolutions_are_quantized_on_their_matrix_view() {
    // [out 4, in 3, 3, 3]: a row is the 27 inputs of one output channel.
    let x = gaussian(6, 4 * 27);
    let w = tensor(x, &[4, 3, 3, 3]);
    let fmt = int(4, QuantScheme::Symmetric, Granularity::Group(8));
    let q = QuantizedWeight::new(&w, &fmt, ScaleMethod::MinMax).unwrap();
    assert_eq!((q.rows(), q.cols()), (4, 27));
    assert_eq!(q.scales().len(), 4 * 4, "⌈27/8⌉ = 4 groups per row");
    assert_eq!(q.dequantize().unwrap().dims(), &[4, 3, 3, 3]);
    assert!(
        q.zero_points().iter().all(|&z| z == 8),
        "symmetric int4 stores codes offset by 8"
    );
    assert!(
        q.codes().iter().all(|&c| (1..=15).contains(&c)),
        "restricted range −7..=7"
    );
    let f = quantize_weight(&w, &fmt, ScaleMethod::MinMax).unwrap();
    assert_eq!(f.dims(), &[4, 3, 3, 3]);
    assert!(quantize_weight(
        &w,
        &int(9, QuantScheme::Symmetric, Granularity::Tensor),
        ScaleMethod::MinMax
    )
    .is_err());
    assert!(QuantizedWeight::new(&w, &WeightQuant::F16, ScaleMethod::MinMax).is_err());
}

// ---- pruning ----

fn matrix(seed: u64, rows: usize, cols: usize) -> WeightMatrix {
    WeightMatrix::new(rows, cols, gaussian(seed, rows * cols)).unwrap()
}

#[test]
fn unstructured_pruning_hits_the_exact_count() {
    // Values rounded to one decimal: many ties.
    let data: Vec<f32> = gaussian(7, 37 * 53)
        .iter()
        .map(|v| (v * 10.0).round() / 10.0)
        .collect();
    let m = WeightMatrix::new(37, 53, data.clone()).unwrap();
    let nonzero = data.iter().filter(|&&v| v != 0.0).count();
    for p in [1u8, 10, 33, 50, 90, 99] {
        let keep = prune::unstructured_mask(&m, p).unwrap();
        let pruned = keep.iter().filter(|&&k| !k).count();
        assert_eq!(pruned, m.len() * usize::from(p) / 100, "sparse{p}");
        let max_pruned = (0..m.len())
            .filter(|&i| !keep[i])
            .map(|i| data[i].abs())
            .fold(0.0, f32::max);
        let min_kept = (0..m.len())
            .filter(|&i| keep[i])
            .map(|i| data[i].abs())
            .fold(f32::MAX, f32::min);
        assert!(
            max_pruned <= min_kept,
            "sparse{p}: pruned {max_pruned} > kept {min_kept}"
        );
        let out = prune::prune(&m, &mpsearch::space::Sparsity::Unstructured(p), 1).unwrap();
        assert!(out.zeros() >= pruned && out.zeros() <= pruned + (m.len() - nonzero));
    }
    // Deterministic.
    assert_eq!(
        prune::unstructured_mask(&m, 50).unwrap(),
        prune::unstructured_mask(&m, 50).unwrap()
    );
}

#[test]
fn every_nm_group_keeps_exactly_n_and_the_ragged_tail_stays_dense() {
    // 70 columns: 2:4 leaves a tail of 2, 4:8 a tail of 6.
    let (rows, cols) = (32, 70);
    let m = matrix(8, rows, cols);
    for (n, mm) in [(2usize, 4usize), (4, 8), (1, 4)] {
        let keep = prune::nm_mask(&m, n as u8, mm as u8, 1).unwrap();
        let full = cols / mm * mm;
        for r in 0..rows {
            let row = &keep[r * cols..(r + 1) * cols];
            let vals = m.row(r);
            for (j, chunk) in row[..full].chunks(mm).enumerate() {
                let kept = chunk.iter().filter(|&&k| k).count();
                assert_eq!(kept, n, "{n}:{mm} row {r} group {j} keeps {kept}");
                // The kept ones are the largest of their group.
                let g = &vals[j * mm..j * mm + chunk.len()];
                let min_kept = (0..chunk.len())
                    .filter(|&i| chunk[i])
                    .map(|i| g[i].abs())
                    .fold(f32::MAX, f32::min);
                let max_pruned = (0..chunk.len())
                    .filter(|&i| !chunk[i])
                    .map(|i| g[i].abs())
                    .fold(0.0, f32::max);
                assert!(max_pruned <= min_kept, "{n}:{mm} row {r} group {j}");
            }
            assert!(
                row[full..].iter().all(|&k| k),
                "{n}:{mm} row {r}: tail pruned"
            );
            assert_eq!(
                row.iter().filter(|&&k| k).count(),
                n * (cols / mm) + cols % mm,
                "{n}:{mm} row {r}"
            );
            assert_eq!(
                prune::nm_kept_per_row(cols, 1, n as u8, mm as u8),
                n * (cols / mm) + cols % mm
            );
        }
    }
    assert!(prune::nm_mask(&m, 4, 4, 1).is_err());
}

/// The non-zeros among `w[o, c..c+m, i, j]` of a dense `[out, in, kh, kw]` tensor, for every o, i, j
/// and every full run of `m` channels starting at `c`; and whether the ragged tail equals `original`.
fn conv_runs(w: &[f32], original: &[f32], dims: [usize; 4], m: usize) -> (Vec<usize>, bool) {
    let [out, inp, kh, kw] = dims;
    let at = |o: usize, c: usize, i: usize, j: usize| ((o * inp + c) * kh + i) * kw + j;
    let (mut counts, mut tail_dense) = (Vec::new(), true);
    for o in 0..out {
        for i in 0..kh {
            for j in 0..kw {
                for c in (0..inp / m * m).step_by(m) {
                    counts.push((c..c + m).filter(|&c| w[at(o, c, i, j)] != 0.0).count());
                }
                for c in inp / m * m..inp {
                    tail_dense &= w[at(o, c, i, j)] == original[at(o, c, i, j)];
                }
            }
        }
    }
    (counts, tail_dense)
}

#[test]
fn conv_nm_groups_run_along_input_channels_at_each_kernel_position() {
    // in = 12: three full runs of 4; in = 10: two runs and a dense tail of 2 channels.
    for inp in [12usize, 10] {
        let dims = [6, inp, 3, 3];
        let x = gaussian(31, dims.iter().product());
        let w = tensor(x.clone(), &dims);
        let pruned = values(&apply_choice(&w, &choice("f32+2:4"), ScaleMethod::Mse).unwrap());
        let (counts, tail_dense) = conv_runs(&pruned, &x, dims, 4);
        assert!(
            counts.iter().all(|&c| c == 2),
            "in {inp}: non-zeros per run of 4 channels {counts:?}"
        );
        assert!(tail_dense, "in {inp}: the ragged tail must stay dense");
        // Two per full run and the whole tail, at each of the 9 kernel positions of the 6 rows.
        assert_eq!(
            pruned.iter().filter(|&&v| v != 0.0).count(),
            6 * 9 * (2 * (inp / 4) + inp % 4)
        );
    }
    // Low rank: B keeps the kernel (runs along its channels), A is 1×1 (runs along the rank).
    let dims = [8, 8, 3, 3];
    let w = tensor(gaussian(32, 8 * 8 * 9), &dims);
    let cw = compress_factors(&w, &choice("f32+2:4+rank50"), ScaleMethod::Mse).unwrap();
    let [a, b] = cw.factors() else {
        panic!("a rank choice has two factors")
    };
    assert_two_of_four("A", a);
    let b_dims = [b.rows(), 8, 3, 3];
    let (counts, _) = conv_runs(b.data(), b.data(), b_dims, 4);
    assert!(counts.iter().all(|&c| c == 2), "B runs {counts:?}");
}

#[test]
fn structured_pruning_zeroes_the_lowest_norm_rows() {
    let (rows, cols) = (20, 16);
    let mut data = gaussian(9, rows * cols);
    // Spread the row norms.
    for r in 0..rows {
        for v in &mut data[r * cols..(r + 1) * cols] {
            *v *= 1.0 + ((r * 7) % rows) as f32;
        }
    }
    let m = WeightMatrix::new(rows, cols, data).unwrap();
    let norms: Vec<f64> = (0..rows)
        .map(|r| m.row(r).iter().map(|&v| f64::from(v).powi(2)).sum())
        .collect();
    let mut order: Vec<usize> = (0..rows).collect();
    order.sort_by(|&a, &b| norms[a].total_cmp(&norms[b]));
    for p in [5u8, 25, 50, 99] {
        let out = prune::prune(&m, &mpsearch::space::Sparsity::Channels(p), 1).unwrap();
        let removed = (rows * usize::from(p) + 50) / 100;
        let removed = removed.min(rows - 1);
        let mut zero_rows: Vec<usize> = (0..rows)
            .filter(|&r| out.row(r).iter().all(|&v| v == 0.0))
            .collect();
        zero_rows.sort_unstable();
        let mut want: Vec<usize> = order[..removed].to_vec();
        want.sort_unstable();
        assert_eq!(zero_rows, want, "channels{p}");
        for r in (0..rows).filter(|r| !want.contains(r)) {
            assert_eq!(out.row(r), m.row(r), "channels{p}: kept row {r} changed");
        }
    }
}

#[test]
fn removed_channel_count_matches_the_cost_model() {
    let model = CostModel::new(mpsearch::shipped::profile("cortex-a76").unwrap(), 1).unwrap();
    for rows in [1usize, 2, 3, 10, 33, 768] {
        for p in [1u8, 25, 50, 75, 99] {
            let layer = LayerInfo {
                name: "l".into(),
                kind: LayerKind::Linear,
                shape: vec![rows, 8],
                macs: (rows * 8) as u64,
                bias: false,
            };
            // f32 + channels: kept·8·4 value bytes + a 1-bit-per-row mask.
            let bytes = model
                .layer(&layer, &choice(&format!("f32+channels{p}")))
                .cost
                .bytes as usize;
            let cost_kept = (bytes - rows.div_ceil(8)) / 32;
            assert_eq!(
                prune::kept_rows(rows, p),
                cost_kept,
                "{rows} rows, channels{p}"
            );
            let m = matrix(10, rows, 8);
            let mask = prune::channel_mask(&m, p).unwrap();
            assert_eq!(
                mask.iter().filter(|&&k| k).count(),
                cost_kept,
                "{rows} rows, channels{p}"
            );
        }
    }
}

// ---- low rank ----

/// Singular values of `m` from the eigenvalues of the f64 Gram matrix m·mᵀ or mᵀ·m (the smaller).
fn reference_singular_values_sq(m: &WeightMatrix) -> Vec<f64> {
    let (r, c) = (m.rows(), m.cols());
    let d = m.data();
    let n = r.min(c);
    let gram = faer::Mat::<f64>::from_fn(n, n, |i, j| {
        if r <= c {
            (0..c)
                .map(|t| f64::from(d[i * c + t]) * f64::from(d[j * c + t]))
                .sum()
        } else {
            (0..r)
                .map(|t| f64::from(d[t * c + i]) * f64::from(d[t * c + j]))
                .sum()
        }
    });
    let mut ev = gram.self_adjoint_eigenvalues(faer::Side::Lower).unwrap();
    ev.sort_by(|a, b| b.total_cmp(a));
    ev.into_iter().map(|v| v.max(0.0)).collect()
}

#[test]
fn truncation_error_is_the_dropped_energy() {
    for (rows, cols, seed) in [(60usize, 90usize, 11u64), (90, 40, 12)] {
        // A decaying spectrum: column j scaled by 1/(1 + j/8).
        let mut data = gaussian(seed, rows * cols);
        for (i, v) in data.iter_mut().enumerate() {
            *v /= 1.0 + (i % cols) as f32 / 8.0;
        }
        let m = WeightMatrix::new(rows, cols, data).unwrap();
        let sigma_sq = reference_singular_values_sq(&m);
        for p in [10u8, 25, 50, 90] {
            let lr = truncated_svd(&m, p).unwrap();
            let k = rank_k(rows as u64, cols as u64, p) as usize;
            assert_eq!(lr.k(), k);
            assert_eq!(
                (lr.a.rows(), lr.a.cols(), lr.b.rows(), lr.b.cols()),
                (rows, k, k, cols)
            );
            let prod = lr.product().unwrap();
            let err: f64 = m
                .data()
                .iter()
                .zip(prod.data())
                .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
                .sum();
            let dropped: f64 = sigma_sq[k..].iter().sum();
            let rel = (err - dropped).abs() / dropped;
            assert!(
                rel < SVD_REL_TOL,
                "{rows}×{cols} rank{p} (k={k}): ‖W − W_k‖² = {err:.6e}, Σσ² dropped = {dropped:.6e}, rel {rel:.2e}"
            );
            // B = Σ_k^½ V_kᵀ: B·Bᵀ = Σ_k (diagonal, the kept singular values).
            let b = lr.b.data();
            for i in 0..k {
                for j in 0..k {
                    let dot: f64 = (0..cols)
                        .map(|t| f64::from(b[i * cols + t]) * f64::from(b[j * cols + t]))
                        .sum();
                    let want = if i == j {
                        f64::from(lr.singular_values[i])
                    } else {
                        0.0
                    };
                    let scale = f64::from(lr.singular_values[0]);
                    assert!(
                        (dot - want).abs() < ORTHO_TOL * scale,
                        "B·Bᵀ[{i},{j}] = {dot}, want {want}"
                    );
                }
            }
        }
    }
}

// ---- a whole choice ----

#[test]
fn pruned_weights_stay_zero_after_asymmetric_quantization() {
    // All-positive weights: the asymmetric grid's zero point sits at the bottom.
    let d = Normal::new(3.0f32, 1.0).unwrap();
    let mut r = rng(13);
    let x: Vec<f32> = (0..48 * 64).map(|_| d.sample(&mut r).abs()).collect();
    let w = tensor(x, &[48, 64]);
    for s in [
        "int4-asym-g32+sparse50",
        "int3-asym-channel+2:4",
        "int8-asym-tensor+channels25",
        "int2-asym-g16+4:8",
        "int4-asym-g32+sparse60+rank50",
        "int4-asym-channel+channels50+rank25",
        "f16+sparse30",
    ] {
        for method in [ScaleMethod::MinMax, ScaleMethod::Mse] {
            let cw = compress_factors(&w, &choice(s), method).unwrap();
            for (i, (f, keep)) in cw.factors().iter().zip(cw.masks()).enumerate() {
                let bad = (0..f.len())
                    .filter(|&j| !keep[j] && f.data()[j] != 0.0)
                    .count();
                assert_eq!(
                    bad, 0,
                    "{s} {method}: factor {i} has {bad} pruned weights that are not zero"
                );
                assert!(
                    keep.iter().any(|&k| !k) || s.contains("channels"),
                    "{s}: factor {i} pruned nothing"
                );
            }
            let dense = values(&apply_choice(&w, &choice(s), method).unwrap());
            if !s.contains("rank") {
                let keep = &cw.masks()[0];
                assert!(
                    (0..dense.len()).all(|j| keep[j] || dense[j] == 0.0),
                    "{s} {method}"
                );
            }
            if s.contains("channels") {
                // Removed output channels are zero rows of the product too.
                let zero_rows = (0..48)
                    .filter(|&r| dense[r * 64..(r + 1) * 64].iter().all(|&v| v == 0.0))
                    .count();
                let p: u8 = s
                    .split("channels")
                    .nth(1)
                    .unwrap()
                    .split('+')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(zero_rows, 48 - prune::kept_rows(48, p), "{s}");
            }
        }
    }
}

#[test]
fn factorize_then_prune_then_quantize_then_multiply() {
    let (rows, cols) = (48, 64);
    let x = gaussian(14, rows * cols);
    let w = tensor(x.clone(), &[rows, cols]);
    let choice = choice("int4-asym-g32+2:4+rank50");
    let cw = compress_factors(&w, &choice, ScaleMethod::MinMax).unwrap();
    let [a, b] = cw.factors() else {
        panic!("a rank choice has two factors")
    };
    let k = rank_k(rows as u64, cols as u64, 50) as usize;
    assert_eq!((a.rows(), a.cols(), b.rows(), b.cols()), (rows, k, k, cols));

    // 1. The factors come from the dense weight's SVD, and 3. the 2:4 masks from those factors.
    let lr = truncated_svd(&WeightMatrix::new(rows, cols, x).unwrap(), 50).unwrap();
    let masks = [
        prune::nm_mask(&lr.a, 2, 4, 1).unwrap(),
        prune::nm_mask(&lr.b, 2, 4, 1).unwrap(),
    ];
    assert_eq!(cw.masks(), &masks[..]);
    for (name, f, exact, keep) in [("A", a, &lr.a, &masks[0]), ("B", b, &lr.b, &masks[1])] {
        assert_two_of_four(name, f);
        assert_quantized_after_pruning(name, f, exact, keep);
    }
    // 5. The dense weight is the product of the compressed factors (f64 reference).
    let dense = values(&apply_choice(&w, &choice, ScaleMethod::MinMax).unwrap());
    assert_product(&dense, a, b);
    // Deterministic.
    assert_eq!(
        values(&apply_choice(&w, &choice, ScaleMethod::MinMax).unwrap()),
        dense
    );
}

/// 2:4 holds in every full group of four consecutive columns of factor `f` (`name` for messages).
fn assert_two_of_four(name: &str, f: &WeightMatrix) {
    for r in 0..f.rows() {
        for (j, g) in f.row(r).chunks_exact(4).enumerate() {
            assert!(
                g.iter().filter(|&&v| v != 0.0).count() <= 2,
                "{name} row {r} group {j}: {g:?}"
            );
        }
    }
}

/// Factor `f` was quantized after pruning: every g32 group has at most 16 levels, and the scales fit
/// the surviving weights (the kept values are within half a step of the pruned-then-`exact` ones,
/// `keep` the pruning mask).
fn assert_quantized_after_pruning(
    name: &str,
    f: &WeightMatrix,
    exact: &WeightMatrix,
    keep: &[bool],
) {
    for r in 0..f.rows() {
        for (j, g) in f.row(r).chunks(32).enumerate() {
            let mut levels: Vec<f32> = g.to_vec();
            levels.sort_by(f32::total_cmp);
            levels.dedup();
            assert!(
                levels.len() <= 16,
                "{name} row {r} group {j}: {} levels",
                levels.len()
            );
            let base = r * f.cols() + j * 32;
            let ex: Vec<f32> = (0..g.len())
                .map(|i| {
                    if keep[base + i] {
                        exact.data()[base + i]
                    } else {
                        0.0
                    }
                })
                .collect();
            let (lo, hi) = ex
                .iter()
                .fold((0.0f32, 0.0f32), |(l, h), &v| (l.min(v), h.max(v)));
            let step = (hi - lo) / 15.0;
            for (i, (&q, &e)) in g.iter().zip(&ex).enumerate() {
                assert!(
                    (q - e).abs() <= step * 0.5 * (1.0 + GRID_REL_SLACK) + GRID_ABS_SLACK,
                    "{name} [{r}, {}]: {q} vs {e}",
                    j * 32 + i
                );
            }
        }
    }
}

/// `dense` (row-major) is the product `a b` of the factors, against an f64 reference.
fn assert_product(dense: &[f32], a: &WeightMatrix, b: &WeightMatrix) {
    let (rows, k, cols) = (a.rows(), a.cols(), b.cols());
    for i in 0..rows {
        for j in 0..cols {
            let want: f64 = (0..k)
                .map(|t| f64::from(a.data()[i * k + t]) * f64::from(b.data()[t * cols + j]))
                .sum();
            let got = f64::from(dense[i * cols + j]);
            assert!(
                (got - want).abs() < PRODUCT_TOL,
                "[{i}, {j}]: {got} vs {want}"
            );
        }
    }
}

#[test]
fn uncompressed_choice_is_the_identity() {
    let x = gaussian(15, 6 * 2 * 3 * 3);
    let w = tensor(x.clone(), &[6, 2, 3, 3]);
    let out = apply_choice(&w, &Choice::F32, ScaleMethod::Mse).unwrap();
    assert_eq!(out.dims(), &[6, 2, 3, 3]);
    assert_eq!(values(&out), x);
}

// ---- activations ----

#[test]
fn dynamic_activation_error_is_at_most_half_a_step() {
    for (seed, shift) in [(16u64, 0.0f32), (17, 2.5), (18, -4.0)] {
        let x: Vec<f32> = gaussian(seed, 4 * 1000).iter().map(|v| v + shift).collect();
        let t = tensor(x.clone(), &[4, 1000]);
        let q = values(&quantize_activation(&t, ActQuant::Int8Dynamic, None).unwrap());
        // Each sample (row) on its own range.
        for (r, (x, q)) in x.chunks(1000).zip(q.chunks(1000)).enumerate() {
            let delta = step(x);
            let worst = max_error(x, q);
            assert!(
                worst <= delta / 2.0 * (1.0 + ACT_REL_SLACK),
                "shift {shift} sample {r}: error {worst} > Δ/2 = {}",
                delta / 2.0
            );
            let distinct = {
                let mut v = q.to_vec();
                v.sort_by(f32::total_cmp);
                v.dedup();
                v.len()
            };
            assert!(
                distinct <= 256,
                "shift {shift} sample {r}: {distinct} levels"
            );
        }
    }
}

/// The step of the int8 grid over the range of `x` widened to include 0.
fn step(x: &[f32]) -> f32 {
    let (lo, hi) = x
        .iter()
        .fold((0.0f32, 0.0f32), |(l, h), &v| (l.min(v), h.max(v)));
    (hi - lo) / 255.0
}

fn max_error(x: &[f32], q: &[f32]) -> f32 {
    x.iter()
        .zip(q)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max)
}

/// `x` on the int8 grid of range `(lo, hi)` (widened to 0), from the module's formula.
fn on_grid(x: &[f32], lo: f32, hi: f32) -> Vec<f32> {
    let (s, z) = mpsearch::compress::activation_params(lo, hi).unwrap();
    x.iter()
        .map(|&v| (((v / s).round_ties_even() + z).clamp(0.0, 255.0) - z) * s)
        .collect()
}

/// One batch of two samples, the second with a 100× larger range. Dynamic quantization gives each
/// sample its own range, as a kernel does at run time: the small sample keeps its precision and comes
/// out as it would alone. Static quantization uses the calibrated range for the whole batch: the large
/// sample clamps to it. Swapping the two implementations, or taking one dynamic range for the whole
/// batch, fails this test.
#[test]
fn dynamic_ranges_are_per_sample_and_static_ranges_are_calibrated() {
    let small = gaussian(40, 1000);
    let large: Vec<f32> = gaussian(41, 1000).iter().map(|v| v * 100.0).collect();
    let batch = tensor(small.iter().chain(&large).copied().collect(), &[2, 1000]);
    let whole_batch_step = step(&large);

    let q = values(&quantize_activation(&batch, ActQuant::Int8Dynamic, None).unwrap());
    let (q_small, q_large) = q.split_at(1000);
    let err = max_error(&small, q_small);
    assert!(
        err <= step(&small) / 2.0 * (1.0 + ACT_REL_SLACK),
        "dynamic: the small sample's error {err} exceeds half its own step {}",
        step(&small) / 2.0
    );
    assert!(
        err < whole_batch_step / 20.0,
        "dynamic: the small sample was quantized on the batch's range (error {err})"
    );
    let alone = tensor(small.clone(), &[1, 1000]);
    assert_eq!(
        q_small,
        values(&quantize_activation(&alone, ActQuant::Int8Dynamic, None).unwrap()),
        "dynamic: a sample's result does not depend on its batch"
    );
    let err = max_error(&large, q_large);
    assert!(
        err <= step(&large) / 2.0 * (1.0 + ACT_REL_SLACK),
        "dynamic: the large sample is not clamped (error {err})"
    );

    // Static: the range calibrated on data like the small sample, for both samples.
    let calibration = tensor(gaussian(42, 4000), &[4, 1000]);
    let (lo, hi) = calibrate_range(&[calibration], RangeMethod::MinMax).unwrap();
    let q = values(&quantize_activation(&batch, ActQuant::Int8Static, Some((lo, hi))).unwrap());
    let expected: Vec<f32> = on_grid(&small, lo, hi)
        .into_iter()
        .chain(on_grid(&large, lo, hi))
        .collect();
    assert_eq!(q, expected, "static: every value on the calibrated grid");
    let half = (hi - lo) / 255.0 / 2.0 * (1.0 + ACT_REL_SLACK);
    assert!(
        q[1000..].iter().all(|&v| v >= lo - half && v <= hi + half),
        "static: the large sample clamps to the calibrated range ({lo}, {hi})"
    );
    assert!(
        max_error(&large, &q[1000..]) > 50.0 * hi,
        "static: values far outside the calibrated range are clamped"
    );
}

/// A sequence `[b, s, hidden]` gets one range per token (b, s); a feature map `[n, c, h, w]` one per
/// image, over all its channels and pixels.
#[test]
fn dynamic_ranges_are_per_token_of_a_sequence_and_per_image_of_a_feature_map() {
    // 2 × 3 tokens of 16, each token on another scale.
    let x: Vec<f32> = gaussian(43, 96)
        .chunks(16)
        .enumerate()
        .flat_map(|(t, v)| {
            v.iter()
                .map(move |a| a * 10f32.powi(t as i32 - 2))
                .collect::<Vec<_>>()
        })
        .collect();
    let q = values(
        &quantize_activation(&tensor(x.clone(), &[2, 3, 16]), ActQuant::Int8Dynamic, None).unwrap(),
    );
    for (t, (x, q)) in x.chunks(16).zip(q.chunks(16)).enumerate() {
        let (lo, hi) = x
            .iter()
            .fold((0f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
        assert_eq!(q, on_grid(x, lo, hi), "token {t}");
    }
    // 2 images of 3 channels × 4 × 4, one channel of image 0 100× larger: image 0's other channels
    // share its coarse grid; image 1 keeps its own.
    let mut x = gaussian(44, 2 * 48);
    for v in &mut x[16..32] {
        *v *= 100.0;
    }
    let q = values(
        &quantize_activation(
            &tensor(x.clone(), &[2, 3, 4, 4]),
            ActQuant::Int8Dynamic,
            None,
        )
        .unwrap(),
    );
    for (n, (x, q)) in x.chunks(48).zip(q.chunks(48)).enumerate() {
        let (lo, hi) = x
            .iter()
            .fold((0f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
        assert_eq!(q, on_grid(x, lo, hi), "image {n}");
    }
}

/// Token ids through an 8-bit grid would come back as other ids: integer inputs are refused.
#[test]
fn integer_inputs_are_refused_not_cast() {
    let ids = Tensor::from_vec(vec![101u32, 2023, 102], 3, &Device::Cpu).unwrap();
    for act in [ActQuant::Int8Dynamic, ActQuant::Int8Static] {
        let e = quantize_activation(&ids, act, Some((0.0, 30000.0)))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("integer input") && e.contains("U32"),
            "{act}: {e}"
        );
    }
    let same = quantize_activation(&ids, ActQuant::None, None).unwrap();
    assert_eq!(same.to_vec1::<u32>().unwrap(), [101, 2023, 102]);
}

/// With act8-dynamic on every layer of the demo, an image's logits are the same whether it is
/// evaluated among 7 images or among all of them (up to the f32 arithmetic of other batch sizes);
/// ranges taken per batch would move them by a quantization step.
#[test]
fn act8_dynamic_output_of_an_image_does_not_depend_on_its_batch() {
    use mpsearch::data::Batch;
    use mpsearch::model::{ForwardCtx, LayerOverride, Overrides};
    let (model, data) = mpsearch::eval::load(&mpsearch::model::ModelSource::Demo, None).unwrap();
    let overrides: Overrides = model
        .inventory()
        .layers
        .iter()
        .map(|l| {
            let o = LayerOverride {
                kernel: None,
                act: ActQuant::Int8Dynamic,
                act_range: None,
                straight_through: false,
            };
            (l.name.clone(), o)
        })
        .collect();
    let ctx = ForwardCtx {
        overrides: Some(&overrides),
        capture: None,
        timer: None,
    };
    let Batch::Images(images) = &data.calibration[0] else {
        panic!("the demo's data are images")
    };
    let all = model.forward(&Batch::Images(images.clone()), &ctx).unwrap();
    let few = model
        .forward(&Batch::Images(images.narrow(0, 0, 7).unwrap()), &ctx)
        .unwrap();
    let all = values(&all.narrow(0, 0, 7).unwrap());
    let few = values(&few);
    let scale = all.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = max_error(&all, &few);
    assert!(
        diff <= BATCH_INDEPENDENCE_TOL * scale,
        "logits of the same images differ by {diff} (largest logit {scale})"
    );
}

/// The evaluator calibrates static ranges on the calibration split only: conv1's input is the images
/// themselves, so its range is that of the calibration images — here halved, unlike the others.
#[test]
fn static_ranges_come_from_the_calibration_split_only() {
    use mpsearch::data::Batch;
    use mpsearch::eval::{CandleEvaluator, EvalSettings};
    let (model, mut data) =
        mpsearch::eval::load(&mpsearch::model::ModelSource::Demo, None).unwrap();
    let Batch::Images(images) = &data.calibration[0] else {
        panic!("the demo's data are images")
    };
    let halved = (images * 0.5).unwrap();
    data.calibration = vec![Batch::Images(halved.clone())];
    let ev = CandleEvaluator::new(model, data, EvalSettings::default()).unwrap();
    let v = values(&halved);
    let expected = v
        .iter()
        .fold((f32::MAX, f32::MIN), |(l, h), &x| (l.min(x), h.max(x)));
    assert_eq!(ev.ranges().unwrap()["conv1"], expected);
}

#[test]
fn static_activation_clamps_outside_the_calibrated_range() {
    let x: Vec<f32> = (0..601).map(|i| -3.0 + i as f32 * 0.01).collect();
    let t = tensor(x.clone(), &[601]);
    let q = values(&quantize_activation(&t, ActQuant::Int8Static, Some((-1.0, 1.0))).unwrap());
    let delta = 2.0 / 255.0;
    let (qmin, qmax) = q
        .iter()
        .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    for (&v, &o) in x.iter().zip(&q) {
        if v > 1.0 {
            assert_eq!(o, qmax, "{v} clamps to the top of the grid");
        } else if v < -1.0 {
            assert_eq!(o, qmin, "{v} clamps to the bottom of the grid");
        } else {
            assert!(
                (v - o).abs() <= delta / 2.0 * (1.0 + ACT_REL_SLACK),
                "{v} -> {o}"
            );
        }
    }
    // The grid's ends are within half a step of the range's (the zero point is rounded to a code).
    let half = delta / 2.0 * (1.0 + ACT_REL_SLACK);
    assert!(
        (qmax - 1.0).abs() <= half && (qmin + 1.0).abs() <= half,
        "grid ends {qmin}, {qmax}"
    );
    let e = quantize_activation(&t, ActQuant::Int8Static, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("calibrated"), "{e}");
    assert!(quantize_activation(&t, ActQuant::Int8Static, Some((1.0, -1.0))).is_err());
    assert_eq!(
        values(&quantize_activation(&t, ActQuant::None, None).unwrap()),
        x
    );
}

#[test]
fn calibration_takes_extremes_or_percentiles() {
    let a = tensor((0..5000).map(|i| i as f32).collect(), &[50, 100]);
    let b = tensor((5000..10000).map(|i| -(i as f32)).collect(), &[5000]);
    assert_eq!(
        calibrate_range(&[a.clone(), b.clone()], RangeMethod::MinMax).unwrap(),
        (-9999.0, 4999.0)
    );
    // 10000 values: the 99th percentile is the 9900th smallest (nearest rank), the 1st the 100th.
    let mut all: Vec<f32> = values(&a).into_iter().chain(values(&b)).collect();
    all.sort_by(f32::total_cmp);
    assert_eq!(
        calibrate_range(&[a.clone(), b.clone()], RangeMethod::Percentile(99.0)).unwrap(),
        (all[99], all[9899])
    );
    assert_eq!(
        calibrate_range(&[a.clone(), b.clone()], RangeMethod::Percentile(100.0)).unwrap(),
        (-9999.0, 4999.0)
    );
    assert!(calibrate_range(&[], RangeMethod::MinMax).is_err());
    assert!(calibrate_range(&[a], RangeMethod::Percentile(40.0)).is_err());
}

// ---- cache ----

#[test]
fn cache_hits_and_evicts_by_bytes_in_lru_order() {
    // 256 f32 = 1 KiB per entry; room for three.
    let w = tensor(gaussian(19, 16 * 16), &[16, 16]);
    let cache = CompressCache::new(3 * 1024).unwrap();
    let calls = AtomicUsize::new(0);
    let choice = choice("int8-sym-channel");
    let get = |layer: &str| {
        cache
            .get_or_compute(layer, &choice, ScaleMethod::MinMax, || {
                calls.fetch_add(1, Ordering::SeqCst);
                apply_choice(&w, &choice, ScaleMethod::MinMax)
            })
            .unwrap()
    };
    let first = values(&get("a"));
    assert_eq!(values(&get("a")), first);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the second call is a hit");
    get("b");
    get("c");
    get("a"); // a is now the most recently used; b the least
    get("d"); // 4 KiB > 3 KiB: evicts b
    let s = cache.stats();
    assert_eq!(
        (s.hits, s.misses, s.evictions, s.entries, s.bytes),
        (2, 4, 1, 3, 3 * 1024),
        "{s:?}"
    );
    assert!(!cache.contains("b", &choice, ScaleMethod::MinMax));
    for l in ["a", "c", "d"] {
        assert!(cache.contains(l, &choice, ScaleMethod::MinMax), "{l}");
    }
    get("e"); // evicts c
    assert!(!cache.contains("c", &choice, ScaleMethod::MinMax));
    // Another scale method is another key; activation quantization is not part of the weight's key.
    assert!(!cache.contains("a", &choice, ScaleMethod::Mse));
    assert!(cache.contains(
        "a",
        &crate::util::choice("int8-sym-channel+act8-static"),
        ScaleMethod::MinMax
    ));
    // Too big to keep: computed, returned, not stored.
    let big = cache
        .get_or_compute("huge", &choice, ScaleMethod::MinMax, || {
            Ok(Tensor::zeros(2048, candle_core::DType::F32, &Device::Cpu)?)
        })
        .unwrap();
    assert_eq!(big.elem_count(), 2048);
    assert!(!cache.contains("huge", &choice, ScaleMethod::MinMax));
    assert!(CompressCache::new(0).is_err());
}

#[test]
fn cache_is_shared_across_threads() {
    let w = tensor(gaussian(20, 32 * 64), &[32, 64]);
    let cache = CompressCache::default();
    let choices = [
        choice("int4-asym-g32"),
        choice("int8-sym-channel+2:4"),
        choice("f16+sparse50"),
    ];
    let results: Vec<Vec<Vec<f32>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    choices
                        .iter()
                        .map(|ch| {
                            values(
                                &cache
                                    .get_or_apply("layer", &w, ch, ScaleMethod::Mse)
                                    .unwrap(),
                            )
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &results[1..] {
        assert_eq!(r, &results[0]);
    }
    let s = cache.stats();
    assert_eq!(s.hits + s.misses, 12);
    assert_eq!(s.entries, 3);
    assert!(s.misses >= 3);
}
