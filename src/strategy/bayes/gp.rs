//! # The Gaussian process of the bayes strategy
//!
//! A Gaussian process regression on standardised targets (mean 0, standard deviation 1) over points
//! given as rows of coordinates, with a Matérn 5/2 kernel on their Euclidean distance,
//! `k(r) = s²(1 + √5 r/ℓ + 5r²/3ℓ²) e^{−√5 r/ℓ}`, plus a noise term `s²λ` on the diagonal.
//!
//! The lengthscale `ℓ` is chosen from [`LENGTHSCALES`] × the median pairwise training distance and the
//! noise ratio `λ` from [`NOISE_RATIOS`], by maximising the log marginal likelihood (Rasmussen &
//! Williams eq. 2.30); the signal variance `s²` is profiled out in closed form
//! (`s² = yᵀ(C + λI)⁻¹y / n`). One Cholesky factorisation (faer, sequential) per grid cell; a fit may
//! be restricted to one cell chosen earlier ([`Grid::Fixed`]). The posterior gives the mean and the
//! latent variance at new points, and the covariance between two of them (for the kriging believer).
//!
//! ## References
//!
//! - C. E. Rasmussen, C. K. I. Williams, "Gaussian processes for machine learning", MIT Press, 2006
//!   (algorithm 2.1, the Matérn class §4.2, the marginal likelihood §5.4).

use crate::cpu::clear_upper_avx;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor::{cholesky_in_place, cholesky_in_place_scratch};
use faer::linalg::matmul::matmul;
use faer::linalg::triangular_solve::{
    solve_lower_triangular_in_place, solve_upper_triangular_in_place,
};
use faer::{Accum, Mat, MatRef, Par};

/// Lengthscales tried, as multiples of the median pairwise distance of the training points.
pub const LENGTHSCALES: [f64; 5] = [0.25, 0.5, 1.0, 2.0, 4.0];
/// Noise variances tried, as fractions of the signal variance.
pub const NOISE_RATIOS: [f64; 3] = [1e-6, 1e-3, 1e-1];

/// One cell of the hyperparameter grid, fitted.
struct Fitted {
    log_likelihood: f64,
    /// The lengthscale as a multiple of the median distance.
    factor: f64,
    lengthscale: f64,
    noise_ratio: f64,
    signal: f64,
    /// Lower Cholesky factor of `C + λI`.
    chol: Mat<f64>,
    /// `L⁻¹ y`.
    z: Mat<f64>,
}

/// Which hyperparameters a fit may choose from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Grid {
    /// Every cell of `LENGTHSCALES × NOISE_RATIOS`.
    Full,
    /// One cell, chosen earlier (see [`super::REFIT`]).
    Fixed { factor: f64, noise_ratio: f64 },
}

impl Grid {
    /// The lengthscale factors and the noise ratios of the cells.
    fn cells(&self) -> (&[f64], &[f64]) {
        match self {
            Grid::Full => (&LENGTHSCALES, &NOISE_RATIOS),
            Grid::Fixed {
                factor,
                noise_ratio,
            } => (
                std::slice::from_ref(factor),
                std::slice::from_ref(noise_ratio),
            ),
        }
    }
}

/// The grid cell (lengthscale `median × LENGTHSCALES`, noise ratio `NOISE_RATIOS`) of largest log
/// marginal likelihood for standardised targets `ys` at pairwise distances `dist`, the signal variance
/// profiled out; ties keep the first. `None` if no cell factorises.
fn select_hyperparameters(dist: &Mat<f64>, median: f64, ys: &[f64], grid: Grid) -> Option<Fitted> {
    let mut mem = MemBuffer::new(cholesky_in_place_scratch::<f64>(
        ys.len(),
        Par::Seq,
        Default::default(),
    ));
    let mut best: Option<Fitted> = None;
    let (factors, noises) = grid.cells();
    for &factor in factors {
        let lengthscale = median * factor;
        let corr = correlation(dist, lengthscale);
        for &noise_ratio in noises {
            let Some(cell) = fit_cell(&corr, ys, (factor, lengthscale), noise_ratio, &mut mem)
            else {
                continue;
            };
            let better = best
                .as_ref()
                .is_none_or(|b| cell.log_likelihood.total_cmp(&b.log_likelihood).is_gt());
            if cell.log_likelihood.is_finite() && better {
                best = Some(cell);
            }
        }
    }
    best
}

/// The Matérn 5/2 correlations at distances `dist` with lengthscale `lengthscale`, below the diagonal
/// (the lower triangle is all the factorisation reads; the diagonal is left to the noise).
fn correlation(dist: &Mat<f64>, lengthscale: f64) -> Mat<f64> {
    let n = dist.ncols();
    let mut corr = Mat::<f64>::zeros(n, n);
    for j in 0..n {
        let d = &dist.col_as_slice(j)[j + 1..];
        for (c, &r) in corr.col_as_slice_mut(j)[j + 1..].iter_mut().zip(d) {
            *c = matern52(r, lengthscale);
        }
    }
    corr
}

/// One grid cell, its lengthscale given as `(factor, factor × median)`: factorises
/// `corr + (1 + noise_ratio) I` and scores it by the log marginal likelihood of `ys`, the signal
/// variance profiled out; `None` if the factorisation fails.
fn fit_cell(
    corr: &Mat<f64>,
    ys: &[f64],
    (factor, lengthscale): (f64, f64),
    noise_ratio: f64,
    mem: &mut MemBuffer,
) -> Option<Fitted> {
    let n = ys.len();
    let mut chol = corr.clone();
    for i in 0..n {
        chol[(i, i)] = 1.0 + noise_ratio;
    }
    cholesky_in_place(
        chol.as_mut(),
        Default::default(),
        Par::Seq,
        MemStack::new(mem),
        Default::default(),
    )
    .ok()?;
    let mut z = Mat::from_fn(n, 1, |i, _| ys[i]);
    solve_lower_triangular_in_place(chol.as_ref(), z.as_mut(), Par::Seq);
    clear_upper_avx();
    let q: f64 = (0..n).map(|i| z[(i, 0)] * z[(i, 0)]).sum();
    let signal = (q / n as f64).max(1e-12);
    let log_det: f64 = (0..n).map(|i| chol[(i, i)].ln()).sum();
    let log_likelihood =
        -0.5 * n as f64 * (signal.ln() + 1.0 + (2.0 * std::f64::consts::PI).ln()) - log_det;
    Some(Fitted {
        log_likelihood,
        factor,
        lengthscale,
        noise_ratio,
        signal,
        chol,
        z,
    })
}

/// Matérn 5/2 correlation at distance `r` with lengthscale `l`.
fn matern52(r: f64, l: f64) -> f64 {
    let s = 5f64.sqrt() * r / l;
    (1.0 + s + s * s / 3.0) * (-s).exp()
}

/// Euclidean distances between the `p` rows of `a` and the `q` rows of `b` (row-major, `dim` columns),
/// as a `p × q` matrix, from the Gram matrix `a bᵀ` (one faer product).
fn distances(a: &[f64], p: usize, b: &[f64], q: usize, dim: usize) -> Mat<f64> {
    let mut d = Mat::zeros(p, q);
    if dim == 0 {
        return d;
    }
    let am = MatRef::from_row_major_slice(a, p, dim);
    let bm = MatRef::from_row_major_slice(b, q, dim);
    matmul(
        d.as_mut(),
        Accum::Replace,
        am,
        bm.transpose(),
        -2.0,
        Par::Seq,
    );
    let sq = |x: &[f64]| -> Vec<f64> {
        x.chunks_exact(dim)
            .map(|r| r.iter().map(|v| v * v).sum())
            .collect()
    };
    clear_upper_avx();
    let (na, nb) = (sq(a), sq(b));
    for (j, nbj) in nb.iter().enumerate() {
        for (v, nai) in d.col_as_slice_mut(j).iter_mut().zip(&na) {
            *v = (*v + nai + nbj).max(0.0).sqrt();
        }
    }
    d
}

fn distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

/// The median pairwise distance of a training set: the median of the entries of `dist` (`n × n`,
/// symmetric) above the diagonal that exceed 1e-9, or 1 when there is none.
fn median_distance(dist: &Mat<f64>) -> f64 {
    let mut pairs: Vec<f64> = (0..dist.ncols())
        .flat_map(|j| dist.col_as_slice(j)[..j].iter().copied())
        .filter(|&d| d > 1e-9)
        .collect();
    if pairs.is_empty() {
        1.0
    } else {
        let mid = pairs.len() / 2;
        *pairs.select_nth_unstable_by(mid, f64::total_cmp).1
    }
}

/// The offset and scale that standardise `y`: its mean and its standard deviation (1 when that is 0
/// or not finite); `(0, 1)` for no target.
fn standardisation(y: &[f64]) -> (f64, f64) {
    let n = y.len();
    if n == 0 {
        return (0.0, 1.0);
    }
    let offset = y.iter().sum::<f64>() / n as f64;
    let sd = (y.iter().map(|v| (v - offset).powi(2)).sum::<f64>() / n as f64).sqrt();
    let scale = if sd > 0.0 && sd.is_finite() { sd } else { 1.0 };
    (offset, scale)
}

/// A Gaussian process on standardised targets with a Matérn 5/2 kernel (see the module docs).
#[derive(Debug)]
pub(super) struct Gp {
    /// The lengthscale as a multiple of the median training distance (the grid cell chosen).
    pub(super) factor: f64,
    /// Training inputs, `n × dim` row-major.
    x: Vec<f64>,
    dim: usize,
    lengthscale: f64,
    /// Noise variance over signal variance.
    pub(super) noise_ratio: f64,
    /// Signal variance `s²` of the standardised targets.
    signal: f64,
    /// Lower Cholesky factor of `C + λI` (only the lower triangle is meaningful).
    chol: Mat<f64>,
    /// `(C + λI)⁻¹ y` for the standardised targets.
    alpha: Vec<f64>,
    /// Targets are `offset + scale · standardised`.
    offset: f64,
    scale: f64,
}

/// The posterior at some points: mean and latent variance (target units), and `V = L⁻¹ C(train, ·)`.
pub(super) struct Posterior {
    pub(super) mean: Vec<f64>,
    pub(super) var: Vec<f64>,
    v: Mat<f64>,
}

impl Gp {
    /// Fits `y` at `x` (`y.len() × dim`, row-major), choosing the hyperparameters on the grid by the log
    /// marginal likelihood; with no point or no usable factorisation, the prior.
    pub(super) fn fit(x: Vec<f64>, dim: usize, y: &[f64], grid: Grid) -> Gp {
        let n = y.len();
        let (offset, scale) = standardisation(y);
        let ys: Vec<f64> = y.iter().map(|v| (v - offset) / scale).collect();
        let dist = distances(&x, n, &x, n, dim);
        let median = median_distance(&dist);
        let Some(Fitted {
            factor,
            lengthscale,
            noise_ratio,
            signal,
            chol,
            mut z,
            ..
        }) = select_hyperparameters(&dist, median, &ys, grid)
        else {
            return Gp::prior(dim, offset, scale);
        };
        solve_upper_triangular_in_place(chol.as_ref().transpose(), z.as_mut(), Par::Seq);
        clear_upper_avx();
        Gp {
            x,
            dim,
            factor,
            lengthscale,
            noise_ratio,
            signal,
            chol,
            alpha: (0..n).map(|i| z[(i, 0)]).collect(),
            offset,
            scale,
        }
    }

    /// The prior (no training point) for targets standardised by `offset` and `scale`.
    fn prior(dim: usize, offset: f64, scale: f64) -> Gp {
        Gp {
            x: Vec::new(),
            dim,
            factor: 1.0,
            lengthscale: 1.0,
            noise_ratio: NOISE_RATIOS[0],
            signal: 1.0,
            chol: Mat::zeros(0, 0),
            alpha: Vec::new(),
            offset,
            scale,
        }
    }

    fn len(&self) -> usize {
        self.alpha.len()
    }

    /// The posterior at `xs` (`m × dim`, row-major).
    pub(super) fn predict(&self, xs: &[f64]) -> Posterior {
        let n = self.len();
        let m = xs.len().checked_div(self.dim).unwrap_or(0);
        let mut v = distances(&self.x, n, xs, m, self.dim);
        for j in 0..m {
            for k in v.col_as_slice_mut(j) {
                *k = matern52(*k, self.lengthscale);
            }
        }
        let mean: Vec<f64> = (0..m)
            .map(|j| {
                let k = v.col_as_slice(j);
                let s: f64 = k.iter().zip(&self.alpha).map(|(a, b)| a * b).sum();
                self.offset + self.scale * s
            })
            .collect();
        solve_lower_triangular_in_place(self.chol.as_ref(), v.as_mut(), Par::Seq);
        clear_upper_avx();
        let s2 = self.signal * self.scale * self.scale;
        let var = (0..m)
            .map(|j| {
                let explained: f64 = v.col_as_slice(j).iter().map(|a| a * a).sum();
                (s2 * (1.0 - explained)).max(0.0)
            })
            .collect();
        Posterior { mean, var, v }
    }

    /// The posterior covariance (target units) of points `a` and `b` of `xs`, given `predict(xs)`.
    pub(super) fn cov(&self, xs: &[f64], post: &Posterior, a: usize, b: usize) -> f64 {
        let at = |j: usize| &xs[j * self.dim..(j + 1) * self.dim];
        let prior = matern52(distance(at(a), at(b)), self.lengthscale);
        let shared: f64 = post
            .v
            .col_as_slice(a)
            .iter()
            .zip(post.v.col_as_slice(b))
            .map(|(p, q)| p * q)
            .sum();
        self.signal * self.scale * self.scale * (prior - shared)
    }

    /// The observation noise variance (target units).
    pub(super) fn noise_variance(&self) -> f64 {
        self.signal * self.noise_ratio * self.scale * self.scale
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// Noiseless GP: how close the mean interpolates, and how small the variance is, at training points
    /// (relative to the targets' standard deviation and variance).
    const GP_INTERP_TOL: f64 = 1e-2;
    const GP_VAR_TOL: f64 = 1e-3;
    /// Far from the data the variance is at least this share of the prior variance.
    const FAR_PRIOR_SHARE: f64 = 0.9;
    /// Largest error between the training points, relative to the targets' standard deviation.
    const HELD_OUT_TOL: f64 = 0.1;

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
            post.var[0] > FAR_PRIOR_SHARE * prior,
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
        assert!(
            worst < HELD_OUT_TOL * sd,
            "held-out error {worst} (sd {sd})"
        );
    }
}
