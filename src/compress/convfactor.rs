//! # Tucker-2 and CP factorizations of a convolution kernel
//!
//! A kernel `W [o, i, kh, kw]` (its matrix view `o × i·kh·kw`, `k = kh·kw`) factorized into the
//! chains [`crate::space::conv`] names, with the ranks its functions give for `P`:
//!
//! **Tucker-2** (`tucker<P>`): `W ≈ G ×₀ U_out ×₁ U_in`, `U_out` (o × r_out) and `U_in` (i × r_in) with
//! orthonormal columns, the core `G = W ×₀ U_outᵀ ×₁ U_inᵀ` (r_out × r_in × kh × kw). Started from the
//! truncated HOSVD (the leading left singular vectors of the mode-0 unfolding `o × i·k` and the
//! mode-1 unfolding `i × o·k`), then [`HOOI_SWEEPS`] sweeps of HOOI: `U_out` from the mode-0 unfolding
//! of `W ×₁ U_inᵀ`, `U_in` from the mode-1 unfolding of `W ×₀ U_outᵀ`. Each sweep cannot increase the
//! error `‖W − Ŵ‖_F`, and `‖W − Ŵ‖²_F = ‖W‖²_F − ‖G‖²_F`; a kernel of exact multilinear rank
//! `(r_out, r_in)` is recovered exactly (tested).
//!
//! **CP** (`cp<P>`): `W[o,i,y,x] ≈ Σ_r A[o,r]·B[i,r]·C[y,r]·D[x,r]` by alternating least squares:
//! each factor in turn is the least-squares solution with the others fixed,
//! `F_n = X_(n) (⊙_{m≠n} F_m) (⊛_{m≠n} F_mᵀF_m)⁻¹` (Khatri–Rao product ⊙, Hadamard product ⊛; the
//! Gram system solved by Cholesky with a tiny ridge), its columns then normalised. Started from the
//! leading singular vectors of each unfolding (columns past a mode's size from a fixed pseudo-random
//! sequence), [`CP_SWEEPS`] sweeps. The column norms are shared evenly by the four factors at the end
//! (`λ_r^{1/4}` each), so every factor has a similar range for quantization. CP is not unique in
//! general and ALS can be slow to converge; an exactly rank-`R` tensor is recovered (tested).
//!
//! Everything runs in f64, sequentially (faer with [`Par::Seq`]), with no RNG: a factorization never
//! depends on the thread count.
//!
//! Factors are returned as matrices in storage order (the last applied first, as `rank<P>`'s `A, B`):
//! Tucker-2 `[U_out (o × r_out), G (r_out × r_in·kh·kw), U_inᵀ (r_in × i)]`; CP `[A (o × R),
//! Dᵀ (R × kw), Cᵀ (R × kh), Bᵀ (R × i)]`. As convolution weights: `[o, r_out, 1, 1]`, `[r_out, r_in,
//! kh, kw]`, `[r_in, i, 1, 1]`; `[o, R, 1, 1]`, `[R, 1, 1, kw]` and `[R, 1, kh, 1]` (depthwise),
//! `[R, i, 1, 1]` ([`factor_shapes`]).
//!
//! ## References
//!
//! - L. De Lathauwer, B. De Moor, J. Vandewalle, "On the Best Rank-1 and Rank-(R1,R2,...,RN)
//!   Approximation of Higher-Order Tensors", SIAM J. Matrix Anal. Appl. 21(4), 2000 (HOSVD, HOOI).
//! - T. G. Kolda, B. W. Bader, "Tensor Decompositions and Applications", SIAM Review 51(3), 2009
//!   (CP-ALS, Tucker).
//! - Y.-D. Kim et al., ICLR 2016; V. Lebedev et al., ICLR 2015 (the convolution chains).

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::matmul::matmul;
use faer::linalg::svd::{svd, svd_scratch, ComputeSvdVectors};
use faer::{Accum, Mat, MatRef, Par};

use super::matrix::WeightMatrix;
use crate::error::{Error, Result};
use crate::space::{cp_rank, tucker_ranks, ConvDims, ConvFactor};

/// HOOI sweeps after the HOSVD start.
pub const HOOI_SWEEPS: usize = 8;
/// CP-ALS sweeps.
pub const CP_SWEEPS: usize = 200;

/// A kernel `[o, i, kh, kw]` as a 3-way tensor `o × i × k` in f64.
struct Kernel {
    o: usize,
    i: usize,
    kh: usize,
    kw: usize,
    x: Vec<f64>,
}

impl Kernel {
    fn k(&self) -> usize {
        self.kh * self.kw
    }
}

/// The kernel dimensions of a weight of shape `dims`, or an error.
fn conv_dims(dims: &[usize], f: ConvFactor) -> Result<ConvDims> {
    ConvDims::from_shape(dims).ok_or_else(|| {
        Error::compress(format!(
            "{f} factorizes a convolution kernel [out, in, kh, kw]; this weight has shape {dims:?}"
        ))
    })
}

/// Factorizations kept for reuse ([`factorize`]): every weight format of a `tucker<P>` / `cp<P>`
/// choice starts from the same unquantized factors.
const MEMO_ENTRIES: usize = 32;

/// The last [`MEMO_ENTRIES`] factorizations, keyed by the kernel's bytes, shape and `f`.
type Memo = Vec<(blake3::Hash, Vec<WeightMatrix>)>;
static MEMO: std::sync::Mutex<Memo> = std::sync::Mutex::new(Vec::new());

fn memo_key(w: &WeightMatrix, dims: &[usize], f: ConvFactor) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(f.to_string().as_bytes());
    for d in dims {
        h.update(&(*d as u64).to_le_bytes());
    }
    for v in w.data() {
        h.update(&v.to_le_bytes());
    }
    h.finalize()
}

/// Factorizes the weight `w` (matrix view of a kernel of shape `dims`) under `f` (see the module
/// docs), with the ranks [`tucker_ranks`] / [`cp_rank`] give; an error says why `f` does not apply.
/// A pure function of its inputs, memoised for the last few kernels (CP-ALS is the slow part of
/// compressing such a layer, and every weight format of the choice needs the same factors).
pub fn factorize(w: &WeightMatrix, dims: &[usize], f: ConvFactor) -> Result<Vec<WeightMatrix>> {
    let key = memo_key(w, dims, f);
    if let Ok(memo) = MEMO.lock() {
        if let Some((_, factors)) = memo.iter().find(|(k, _)| *k == key) {
            return Ok(factors.clone());
        }
    }
    let factors = factorize_uncached(w, dims, f)?;
    if let Ok(mut memo) = MEMO.lock() {
        if memo.len() >= MEMO_ENTRIES {
            memo.remove(0);
        }
        memo.push((key, factors.clone()));
    }
    Ok(factors)
}

fn factorize_uncached(
    w: &WeightMatrix,
    dims: &[usize],
    f: ConvFactor,
) -> Result<Vec<WeightMatrix>> {
    let d = conv_dims(dims, f)?;
    if let Some(why) = f.misfit(d) {
        return Err(Error::compress(format!("{f} on a {dims:?} kernel: {why}")));
    }
    let kernel = Kernel {
        o: dims[0],
        i: dims[1],
        kh: dims[2],
        kw: dims[3],
        x: w.data().iter().map(|&v| f64::from(v)).collect(),
    };
    match f {
        ConvFactor::Tucker(p) => {
            let (r_in, r_out) = tucker_ranks(d, p).expect("misfit checked the budget");
            tucker2(&kernel, r_in as usize, r_out as usize, HOOI_SWEEPS)
        }
        ConvFactor::Cp(p) => {
            let r = cp_rank(d, p).expect("misfit checked the budget");
            cp_als(&kernel, r as usize, CP_SWEEPS)
        }
    }
}

/// The kernel `[o, i·kh·kw]` the factors of `f` compute (the same linear map as their chain).
pub fn reconstruct(
    f: ConvFactor,
    dims: &[usize],
    factors: &[WeightMatrix],
) -> Result<WeightMatrix> {
    conv_dims(dims, f)?;
    let (o, i, kh, kw) = (dims[0], dims[1], dims[2], dims[3]);
    let k = kh * kw;
    let m = |f: &WeightMatrix| to_mat(f);
    let out: Vec<f64> = match (f, factors) {
        (ConvFactor::Tucker(_), [u_out, g, u_in_t]) => {
            let r_in = u_in_t.rows();
            // U_out · G: o × r_in·k, then contract r_in with U_inᵀ.
            let t = mul(m(u_out).as_ref(), m(g).as_ref());
            let t: Vec<f64> = (0..o)
                .flat_map(|a| (0..r_in * k).map(move |c| (a, c)))
                .map(|(a, c)| t[(a, c)])
                .collect();
            mode1(&t, o, r_in, k, m(u_in_t).transpose())
        }
        (ConvFactor::Cp(_), [a, d_t, c_t, b_t]) => {
            let r = a.cols();
            let mut out = vec![0.0; o * i * k];
            for ao in 0..o {
                for b in 0..i {
                    for y in 0..kh {
                        for x in 0..kw {
                            let mut s = 0.0;
                            for q in 0..r {
                                s += f64::from(a.row(ao)[q])
                                    * f64::from(b_t.row(q)[b])
                                    * f64::from(c_t.row(q)[y])
                                    * f64::from(d_t.row(q)[x]);
                            }
                            out[((ao * i + b) * kh + y) * kw + x] = s;
                        }
                    }
                }
            }
            out
        }
        _ => {
            return Err(Error::compress(format!(
                "{f} has {} factors, not {}",
                factors.len(),
                if matches!(f, ConvFactor::Tucker(_)) {
                    3
                } else {
                    4
                }
            )))
        }
    };
    WeightMatrix::new(o, i * k, out.into_iter().map(|v| v as f32).collect())
}

/// The convolution weight shape of each factor (see the module docs) and its groups (1, or the
/// channels of a depthwise factor).
pub fn factor_shapes(
    f: ConvFactor,
    dims: &[usize],
    factors: &[WeightMatrix],
) -> Vec<(Vec<usize>, usize)> {
    let (kh, kw) = (dims[2], dims[3]);
    match f {
        ConvFactor::Tucker(_) => {
            let (r_in, r_out) = (factors[2].rows(), factors[1].rows());
            vec![
                (vec![dims[0], r_out, 1, 1], 1),
                (vec![r_out, r_in, kh, kw], 1),
                (vec![r_in, dims[1], 1, 1], 1),
            ]
        }
        ConvFactor::Cp(_) => {
            let r = factors[0].cols();
            vec![
                (vec![dims[0], r, 1, 1], 1),
                (vec![r, 1, 1, kw], r),
                (vec![r, 1, kh, 1], r),
                (vec![r, dims[1], 1, 1], 1),
            ]
        }
    }
}

fn to_mat(w: &WeightMatrix) -> Mat<f64> {
    Mat::from_fn(w.rows(), w.cols(), |r, c| f64::from(w.row(r)[c]))
}

fn to_matrix(m: MatRef<'_, f64>) -> Result<WeightMatrix> {
    let data = (0..m.nrows())
        .flat_map(|r| (0..m.ncols()).map(move |c| (r, c)))
        .map(|(r, c)| m[(r, c)] as f32)
        .collect();
    WeightMatrix::new(m.nrows(), m.ncols(), data)
}

fn mul(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> Mat<f64> {
    let mut out = Mat::<f64>::zeros(a.nrows(), b.ncols());
    matmul(out.as_mut(), Accum::Replace, a, b, 1.0, Par::Seq);
    out
}

/// Mode-0 unfolding of a `d0 × d1 × k` tensor: `d0 × d1·k`.
fn unfold0(t: &[f64], d0: usize, d1: usize, k: usize) -> Mat<f64> {
    Mat::from_fn(d0, d1 * k, |a, c| t[a * d1 * k + c])
}

/// Mode-1 unfolding of a `d0 × d1 × k` tensor: `d1 × d0·k`.
fn unfold1(t: &[f64], d0: usize, d1: usize, k: usize) -> Mat<f64> {
    Mat::from_fn(d1, d0 * k, |b, c| {
        let (a, p) = (c / k, c % k);
        t[(a * d1 + b) * k + p]
    })
}

/// `t ×₀ m` for a `d0 × d1 × k` tensor and `m` (r × d0): `r × d1 × k`.
fn mode0(t: &[f64], d0: usize, d1: usize, k: usize, m: MatRef<'_, f64>) -> Vec<f64> {
    let y = mul(m, unfold0(t, d0, d1, k).as_ref());
    (0..y.nrows())
        .flat_map(|r| (0..d1 * k).map(move |c| (r, c)))
        .map(|(r, c)| y[(r, c)])
        .collect()
}

/// `t ×₁ m` for a `d0 × d1 × k` tensor and `m` (r × d1): `d0 × r × k`.
fn mode1(t: &[f64], d0: usize, d1: usize, k: usize, m: MatRef<'_, f64>) -> Vec<f64> {
    let r = m.nrows();
    let mut out = vec![0.0; d0 * r * k];
    for a in 0..d0 {
        let slice = Mat::from_fn(d1, k, |b, p| t[(a * d1 + b) * k + p]);
        let y = mul(m, slice.as_ref());
        for q in 0..r {
            for p in 0..k {
                out[(a * r + q) * k + p] = y[(q, p)];
            }
        }
    }
    out
}

/// The `r` leading left singular vectors of `a` (m × r; columns past `min(m, n)` are zero).
fn leading_left(a: MatRef<'_, f64>, r: usize) -> Result<Mat<f64>> {
    let (m, n) = (a.nrows(), a.ncols());
    let full = m.min(n);
    let mut u = Mat::<f64>::zeros(m, full);
    let mut s = faer::diag::Diag::<f64>::zeros(full);
    let scratch = svd_scratch::<f64>(
        m,
        n,
        ComputeSvdVectors::Thin,
        ComputeSvdVectors::No,
        Par::Seq,
        Default::default(),
    );
    let mut mem = MemBuffer::new(scratch);
    svd(
        a,
        s.as_mut(),
        Some(u.as_mut()),
        None,
        Par::Seq,
        MemStack::new(&mut mem),
        Default::default(),
    )
    .map_err(|e| Error::compress(format!("the SVD of a {m}×{n} unfolding failed: {e:?}")))?;
    Ok(Mat::from_fn(
        m,
        r,
        |i, j| if j < full { u[(i, j)] } else { 0.0 },
    ))
}

/// Tucker-2 by HOSVD and `sweeps` HOOI sweeps (see the module docs).
fn tucker2(w: &Kernel, r_in: usize, r_out: usize, sweeps: usize) -> Result<Vec<WeightMatrix>> {
    let (o, i, k) = (w.o, w.i, w.k());
    let mut u_out = leading_left(unfold0(&w.x, o, i, k).as_ref(), r_out)?;
    let mut u_in = leading_left(unfold1(&w.x, o, i, k).as_ref(), r_in)?;
    for _ in 0..sweeps {
        let y = mode1(&w.x, o, i, k, u_in.transpose());
        u_out = leading_left(unfold0(&y, o, r_in, k).as_ref(), r_out)?;
        let z = mode0(&w.x, o, i, k, u_out.transpose());
        u_in = leading_left(unfold1(&z, r_out, i, k).as_ref(), r_in)?;
    }
    let z = mode0(&w.x, o, i, k, u_out.transpose());
    let g = mode1(&z, r_out, i, k, u_in.transpose());
    let g = Mat::from_fn(r_out, r_in * k, |a, c| g[a * r_in * k + c]);
    Ok(vec![
        to_matrix(u_out.as_ref())?,
        to_matrix(g.as_ref())?,
        to_matrix(u_in.transpose())?,
    ])
}

/// A fixed pseudo-random value in [-1, 1) for entry `n` (splitmix64): the CP start's columns past a
/// mode's size, the same on every machine.
fn fixed_noise(n: u64) -> f64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

/// The CP start of mode `mode` (`rows` × `r`): the leading left singular vectors of `unfolding`,
/// then fixed noise.
fn cp_start(unfolding: MatRef<'_, f64>, r: usize, mode: u64) -> Result<Mat<f64>> {
    let rows = unfolding.nrows();
    let full = rows.min(unfolding.ncols()).min(r);
    let u = leading_left(unfolding, full)?;
    Ok(Mat::from_fn(rows, r, |i, j| {
        if j < full {
            u[(i, j)]
        } else {
            fixed_noise((mode << 48) ^ ((j as u64) << 24) ^ i as u64) / (rows as f64).sqrt()
        }
    }))
}

/// `FᵀF`.
fn gram(f: &Mat<f64>) -> Mat<f64> {
    mul(f.transpose(), f.as_ref())
}

/// Solves `F · V = M` for `F` (V symmetric positive semi-definite, r × r) by Cholesky with a small
/// ridge, raised until the factorization succeeds; an error if it never does (a non-finite `V`).
fn solve_gram(m: &Mat<f64>, v: &Mat<f64>) -> Result<Mat<f64>> {
    let r = v.nrows();
    let scale = (0..r).map(|j| v[(j, j)]).fold(0.0f64, f64::max).max(1e-300);
    let mut ridge = 1e-12 * scale;
    for _ in 0..20 {
        if let Some(l) = cholesky(v, ridge) {
            // F Lᵀ… : for each row x of M, solve L Lᵀ fᵀ = xᵀ.
            let mut f = Mat::<f64>::zeros(m.nrows(), r);
            let mut y = vec![0.0; r];
            for row in 0..m.nrows() {
                for j in 0..r {
                    let mut s = m[(row, j)];
                    for q in 0..j {
                        s -= l[(j, q)] * y[q];
                    }
                    y[j] = s / l[(j, j)];
                }
                for j in (0..r).rev() {
                    let mut s = y[j];
                    for q in j + 1..r {
                        s -= l[(q, j)] * f[(row, q)];
                    }
                    f[(row, j)] = s / l[(j, j)];
                }
            }
            return Ok(f);
        }
        ridge *= 100.0;
    }
    Err(Error::compress(format!(
        "CP-ALS: the {r}×{r} Gram system stayed singular (a non-finite kernel?)"
    )))
}

/// The lower Cholesky factor of `v + ridge·I`, or `None` if a pivot is not positive.
fn cholesky(v: &Mat<f64>, ridge: f64) -> Option<Mat<f64>> {
    let r = v.nrows();
    let mut l = Mat::<f64>::zeros(r, r);
    for j in 0..r {
        let mut d = v[(j, j)] + ridge;
        for q in 0..j {
            d -= l[(j, q)] * l[(j, q)];
        }
        if d <= 0.0 || !d.is_finite() {
            return None;
        }
        let d = d.sqrt();
        l[(j, j)] = d;
        for row in j + 1..r {
            let mut s = v[(row, j)];
            for q in 0..j {
                s -= l[(row, q)] * l[(j, q)];
            }
            l[(row, j)] = s / d;
        }
    }
    Some(l)
}

/// Normalises the columns of `f` to unit norm, returning the norms (a zero column stays zero).
fn normalise(f: &mut Mat<f64>) -> Vec<f64> {
    (0..f.ncols())
        .map(|j| {
            let n = (0..f.nrows())
                .map(|i| f[(i, j)] * f[(i, j)])
                .sum::<f64>()
                .sqrt();
            if n > 0.0 {
                for i in 0..f.nrows() {
                    f[(i, j)] /= n;
                }
            }
            n
        })
        .collect()
}

/// Element-wise product of Gram matrices.
fn hadamard(ms: &[&Mat<f64>]) -> Mat<f64> {
    let r = ms[0].nrows();
    Mat::from_fn(r, r, |a, b| ms.iter().map(|m| m[(a, b)]).product())
}

/// Rank-`r` CP by `sweeps` ALS sweeps (see the module docs).
fn cp_als(w: &Kernel, r: usize, sweeps: usize) -> Result<Vec<WeightMatrix>> {
    let (o, i, kh, kw) = (w.o, w.i, w.kh, w.kw);
    let k = kh * kw;
    // X as (o·i) × k, and the unfoldings of the start.
    let xm = Mat::from_fn(o * i, k, |row, p| w.x[row * k + p]);
    let unfold = |mode: usize| -> Mat<f64> {
        let dims = [o, i, kh, kw];
        let n = dims[mode];
        let rest = o * i * k / n;
        Mat::from_fn(n, rest, |a, c| {
            // The other three indices in order, c = ((u·d2) + v)·d3 + z.
            let others: Vec<usize> = (0..4).filter(|&m| m != mode).collect();
            let (d1, d2) = (dims[others[1]], dims[others[2]]);
            let mut idx = [0usize; 4];
            idx[mode] = a;
            idx[others[0]] = c / (d1 * d2);
            idx[others[1]] = (c / d2) % d1;
            idx[others[2]] = c % d2;
            w.x[((idx[0] * i + idx[1]) * kh + idx[2]) * kw + idx[3]]
        })
    };
    let mut f: Vec<Mat<f64>> = (0..4)
        .map(|m| cp_start(unfold(m).as_ref(), r, m as u64))
        .collect::<Result<_>>()?;
    let mut lambda = vec![1.0; r];
    for _ in 0..sweeps {
        // Modes 0 and 1 share T = X (o·i × k) · (C ⊙ D) (k × r).
        let p23 = Mat::from_fn(k, r, |p, q| f[2][(p / kw, q)] * f[3][(p % kw, q)]);
        let t = mul(xm.as_ref(), p23.as_ref());
        for mode in 0..2 {
            let other = 1 - mode;
            let rows = [o, i][mode];
            let m = Mat::from_fn(rows, r, |a, q| {
                (0..[o, i][other])
                    .map(|b| {
                        let row = if mode == 0 { a * i + b } else { b * i + a };
                        t[(row, q)] * f[other][(b, q)]
                    })
                    .sum()
            });
            let v = hadamard(&[&gram(&f[other]), &gram(&f[2]), &gram(&f[3])]);
            f[mode] = solve_gram(&m, &v)?;
            lambda = normalise(&mut f[mode]);
        }
        // Modes 2 and 3 share S = Xᵀ (k × o·i) · (A ⊙ B) (o·i × r).
        let k01 = Mat::from_fn(o * i, r, |row, q| f[0][(row / i, q)] * f[1][(row % i, q)]);
        let s = mul(xm.transpose(), k01.as_ref());
        for mode in 2..4 {
            let other = 5 - mode;
            let rows = [kh, kw][mode - 2];
            let m = Mat::from_fn(rows, r, |a, q| {
                (0..[kh, kw][other - 2])
                    .map(|b| {
                        let p = if mode == 2 { a * kw + b } else { b * kw + a };
                        s[(p, q)] * f[other][(b, q)]
                    })
                    .sum()
            });
            let v = hadamard(&[&gram(&f[0]), &gram(&f[1]), &gram(&f[other])]);
            f[mode] = solve_gram(&m, &v)?;
            lambda = normalise(&mut f[mode]);
        }
    }
    // Share each component's weight (a column norm, ≥ 0) evenly: λ^{1/4} into every factor.
    for (q, l) in lambda.iter().enumerate() {
        let share = l.powf(0.25);
        for fm in f.iter_mut() {
            for row in 0..fm.nrows() {
                fm[(row, q)] *= share;
            }
        }
    }
    Ok(vec![
        to_matrix(f[0].as_ref())?,
        to_matrix(f[3].transpose())?,
        to_matrix(f[2].transpose())?,
        to_matrix(f[1].transpose())?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative Frobenius error of `b` against `a`.
    fn rel_err(a: &WeightMatrix, b: &WeightMatrix) -> f64 {
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for (x, y) in a.data().iter().zip(b.data()) {
            num += f64::from(x - y).powi(2);
            den += f64::from(*x).powi(2);
        }
        (num / den).sqrt()
    }

    /// A pseudo-random `[o, i, kh, kw]` kernel.
    fn kernel(dims: [usize; 4], seed: u64) -> WeightMatrix {
        let n: usize = dims.iter().product();
        let v = (0..n as u64)
            .map(|j| fixed_noise(seed * 1_000_003 + j) as f32)
            .collect();
        WeightMatrix::new(dims[0], n / dims[0], v).unwrap()
    }

    /// A kernel of exact multilinear rank (r_out, r_in) on the channel modes.
    fn low_multilinear(dims: [usize; 4], r_in: usize, r_out: usize) -> WeightMatrix {
        let [o, i, kh, kw] = dims;
        let g = kernel([r_out, r_in, kh, kw], 1);
        let u_out = kernel([o, r_out, 1, 1], 2);
        let u_in_t = kernel([r_in, i, 1, 1], 3);
        let m = reconstruct(ConvFactor::Tucker(50), &dims, &[u_out, g, u_in_t]).unwrap();
        assert_eq!(m.cols(), i * kh * kw);
        m
    }

    #[test]
    fn tucker2_recovers_a_kernel_of_its_multilinear_rank() {
        let dims = [12, 8, 3, 3];
        let w = low_multilinear(dims, 3, 5);
        let x = Kernel {
            o: 12,
            i: 8,
            kh: 3,
            kw: 3,
            x: w.data().iter().map(|&v| f64::from(v)).collect(),
        };
        let f = tucker2(&x, 3, 5, 0).unwrap();
        let back = reconstruct(ConvFactor::Tucker(50), &dims, &f).unwrap();
        assert!(
            rel_err(&w, &back) < 1e-5,
            "HOSVD error {}",
            rel_err(&w, &back)
        );
        // Full ranks reproduce any kernel.
        let w = kernel(dims, 7);
        let x = Kernel {
            x: w.data().iter().map(|&v| f64::from(v)).collect(),
            ..x
        };
        let f = tucker2(&x, 8, 12, 2).unwrap();
        let back = reconstruct(ConvFactor::Tucker(50), &dims, &f).unwrap();
        assert!(
            rel_err(&w, &back) < 1e-5,
            "full-rank error {}",
            rel_err(&w, &back)
        );
    }

    #[test]
    fn tucker2_error_falls_with_the_budget_and_hooi_does_not_hurt() {
        let dims = [16, 12, 3, 3];
        let w = low_multilinear(dims, 6, 8);
        // Plus a little noise, so that every rank loses something.
        let noisy: Vec<f32> = w
            .data()
            .iter()
            .enumerate()
            .map(|(j, v)| v + 0.05 * fixed_noise(99 + j as u64) as f32)
            .collect();
        let w = WeightMatrix::new(16, 108, noisy).unwrap();
        let mut last = f64::INFINITY;
        for p in [10, 25, 50, 90] {
            let f = factorize(&w, &dims, ConvFactor::Tucker(p)).unwrap();
            let e = rel_err(&w, &reconstruct(ConvFactor::Tucker(p), &dims, &f).unwrap());
            assert!(e <= last + 1e-9, "tucker{p}: error {e} above {last}");
            last = e;
        }
        let x = Kernel {
            o: 16,
            i: 12,
            kh: 3,
            kw: 3,
            x: w.data().iter().map(|&v| f64::from(v)).collect(),
        };
        let err = |sweeps| {
            let f = tucker2(&x, 4, 5, sweeps).unwrap();
            rel_err(&w, &reconstruct(ConvFactor::Tucker(1), &dims, &f).unwrap())
        };
        assert!(
            err(HOOI_SWEEPS) <= err(0) + 1e-6,
            "HOOI {} > HOSVD {}",
            err(HOOI_SWEEPS),
            err(0)
        );
    }

    #[test]
    fn cp_recovers_an_exact_rank_r_kernel() {
        let (o, i, kh, kw, r) = (7, 5, 3, 3, 3);
        let a = kernel([o, r, 1, 1], 11);
        let d_t = kernel([r, kw, 1, 1], 12);
        let c_t = kernel([r, kh, 1, 1], 13);
        let b_t = kernel([r, i, 1, 1], 14);
        let dims = [o, i, kh, kw];
        let w = reconstruct(ConvFactor::Cp(10), &dims, &[a, d_t, c_t, b_t]).unwrap();
        let x = Kernel {
            o,
            i,
            kh,
            kw,
            x: w.data().iter().map(|&v| f64::from(v)).collect(),
        };
        let f = cp_als(&x, r, CP_SWEEPS).unwrap();
        let back = reconstruct(ConvFactor::Cp(10), &dims, &f).unwrap();
        assert!(rel_err(&w, &back) < 1e-3, "CP error {}", rel_err(&w, &back));
        // Deterministic: the same factors again.
        assert_eq!(cp_als(&x, r, CP_SWEEPS).unwrap(), f);
    }

    #[test]
    fn factors_fit_the_parameter_budget() {
        let dims = [32, 16, 3, 3];
        let w = kernel(dims, 5);
        for f in [
            ConvFactor::Tucker(50),
            ConvFactor::Tucker(25),
            ConvFactor::Cp(50),
            ConvFactor::Cp(25),
        ] {
            let fs = factorize(&w, &dims, f).unwrap();
            let params: usize = fs.iter().map(WeightMatrix::len).sum();
            assert!(
                params * 100 <= 4608 * usize::from(f.percent()),
                "{f}: {params}"
            );
            let shapes = factor_shapes(f, &dims, &fs);
            for ((shape, groups), m) in shapes.iter().zip(&fs) {
                assert_eq!(
                    shape.iter().product::<usize>(),
                    m.len(),
                    "{f} {shape:?} g{groups}"
                );
            }
        }
        assert!(factorize(&w, &[32, 144], ConvFactor::Tucker(50)).is_err());
        let msg = factorize(
            &kernel([4, 1, 3, 3], 1),
            &[4, 1, 3, 3],
            ConvFactor::Tucker(50),
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("1 input channel"), "{msg}");
    }
}
