//! # Tucker-2 and CP factorizations of convolution kernels: notation, sizes, where they apply
//!
//! `tucker<P>` and `cp<P>` fill the rank slot of a choice (in place of `rank<P>`), `P` the percent of
//! the layer's weight parameters the factors keep. They apply to a convolution kernel `W [o, i, kh,
//! kw]` with a spatial extent (`kh·kw > 1`):
//!
//! - **Tucker-2** (on the output- and input-channel modes): `W ≈ G ×₀ U_out ×₁ U_in`, run as a chain
//!   of three convolutions: 1×1 (`i → r_in`), the `kh×kw` core (`r_in → r_out`), 1×1 (`r_out → o`).
//!   Parameters `i·r_in + r_in·r_out·kh·kw + r_out·o`. The ranks keep the channel ratio
//!   (`r_in/i = r_out/o = α`, rounded down, at least 1) with the largest `α` whose parameters fit in
//!   `P%` of `o·i·kh·kw` ([`tucker_ranks`]).
//! - **CP** (rank `R`): `W[o,i,y,x] ≈ Σ_r A[o,r]·B[i,r]·C[y,r]·D[x,r]`, run as 1×1 (`i → R`), a `kh×1`
//!   depthwise, a `1×kw` depthwise, 1×1 (`R → o`). Parameters `R·(o + i + kh + kw)`; `R` is the
//!   largest that fits in `P%` ([`cp_rank`]).
//!
//! The compressor ([`crate::compress`]) and the cost model count with these same functions, so the
//! factors evaluated are the factors costed.
//!
//! ## References
//!
//! - Y.-D. Kim, E. Park, S. Yoo, T. Choi, L. Yang, D. Shin, "Compression of Deep Convolutional Neural
//!   Networks for Fast and Low Power Mobile Applications", ICLR 2016 (Tucker-2 of convolution kernels).
//! - V. Lebedev, Y. Ganin, M. Rakhuba, I. Oseledets, V. Lempitsky, "Speeding-up Convolutional Neural
//!   Networks Using Fine-tuned CP-Decomposition", ICLR 2015 (the 1×1 → k×1 → 1×k → 1×1 chain).

use std::fmt;

use super::layer::{LayerInfo, LayerKind};

/// A factorization of a convolution kernel into a chain of smaller convolutions, with the percent of
/// the layer's parameters it keeps (1..=99).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConvFactor {
    /// Tucker-2 on the channel modes: 1×1 → kh×kw core → 1×1.
    Tucker(u8),
    /// Rank-R CP: 1×1 → kh×1 depthwise → 1×kw depthwise → 1×1.
    Cp(u8),
}

impl ConvFactor {
    /// The percent of the layer's parameters kept.
    pub fn percent(&self) -> u8 {
        match self {
            ConvFactor::Tucker(p) | ConvFactor::Cp(p) => *p,
        }
    }

    /// `tucker` or `cp`, the part's name in the notation.
    pub fn name(&self) -> &'static str {
        match self {
            ConvFactor::Tucker(_) => "tucker",
            ConvFactor::Cp(_) => "cp",
        }
    }

    /// The factor matrices' shapes `(rows, cols)` in storage order (the last applied first, as
    /// `rank<P>`'s `A, B`), for a kernel `[o, i, kh, kw]`, or why it cannot be factorized so:
    /// Tucker-2 `[o × r_out, r_out × r_in·kh·kw, r_in × i]`; CP `[o × R, R × kw, R × kh, R × i]`
    /// (the two middle ones depthwise).
    pub fn matrices(&self, dims: ConvDims) -> Result<Vec<(u64, u64)>, String> {
        if let Some(why) = self.misfit(dims) {
            return Err(why);
        }
        let ConvDims { o, i, kh, kw } = dims;
        Ok(match *self {
            ConvFactor::Tucker(p) => {
                let (r_in, r_out) = tucker_ranks(dims, p).ok_or_else(|| too_small(self, dims))?;
                vec![(o, r_out), (r_out, r_in * kh * kw), (r_in, i)]
            }
            ConvFactor::Cp(p) => {
                let r = cp_rank(dims, p).ok_or_else(|| too_small(self, dims))?;
                vec![(o, r), (r, kw), (r, kh), (r, i)]
            }
        })
    }

    /// Why this factorization does not apply to a kernel of `dims` (no spatial extent, one channel,
    /// or a budget that does not hold rank 1), or `None`.
    pub fn misfit(&self, dims: ConvDims) -> Option<String> {
        let ConvDims { o, i, kh, kw } = dims;
        if kh * kw <= 1 {
            return Some(format!(
                "{self} factorizes a convolution's spatial kernel, and a 1×1 convolution has none \
                 (it is a matrix: use rank<P>)"
            ));
        }
        match self {
            ConvFactor::Tucker(p) => {
                if i == 1 || o == 1 {
                    return Some(format!(
                        "Tucker-2 reduces the input and output channels, and this convolution has \
                         {} {} channel: it would be the flattened SVD (rank<P>) with an extra \
                         1×1 scaling; use rank<P>",
                        if i == 1 { i } else { o },
                        if i == 1 { "input" } else { "output" }
                    ));
                }
                tucker_ranks(dims, *p)
                    .is_none()
                    .then(|| too_small(self, dims))
            }
            ConvFactor::Cp(p) => cp_rank(dims, *p).is_none().then(|| too_small(self, dims)),
        }
    }
}

fn too_small(f: &ConvFactor, d: ConvDims) -> String {
    format!(
        "{f} keeps {}% of {} parameters, too few for rank 1 of a [{}, {}, {}, {}] kernel",
        f.percent(),
        d.params(),
        d.o,
        d.i,
        d.kh,
        d.kw
    )
}

impl fmt::Display for ConvFactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.name(), self.percent())
    }
}

/// The dimensions of a convolution kernel `[o, i, kh, kw]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvDims {
    pub o: u64,
    pub i: u64,
    pub kh: u64,
    pub kw: u64,
}

impl ConvDims {
    /// The kernel of a 2-d convolution layer, `None` for any other layer (or shape).
    pub fn of(layer: &LayerInfo) -> Option<ConvDims> {
        ConvDims::from_shape(&layer.shape).filter(|_| layer.kind == LayerKind::Conv2d)
    }

    /// A 4-d shape `[o, i, kh, kw]`.
    pub fn from_shape(shape: &[usize]) -> Option<ConvDims> {
        match *shape {
            [o, i, kh, kw] => Some(ConvDims {
                o: o as u64,
                i: i as u64,
                kh: kh as u64,
                kw: kw as u64,
            }),
            _ => None,
        }
    }

    /// Weight parameters `o·i·kh·kw`.
    pub fn params(&self) -> u64 {
        self.o * self.i * self.kh * self.kw
    }

    /// The parameter budget of `percent`: `⌊P% · params⌋`.
    fn budget(&self, percent: u8) -> u64 {
        self.params() * u64::from(percent) / 100
    }
}

/// Parameters of a Tucker-2 factorization with ranks `(r_in, r_out)`.
pub fn tucker_params(d: ConvDims, r_in: u64, r_out: u64) -> u64 {
    d.i * r_in + r_in * r_out * d.kh * d.kw + r_out * d.o
}

/// The ranks `(r_in, r_out)` of `tucker<P>` on a kernel of `d`: `r_in = ⌊α·i⌋`, `r_out = ⌊α·o⌋` (at
/// least 1, at most the channels) with the largest `α` whose parameters ([`tucker_params`]) fit in
/// `⌊P% · o·i·kh·kw⌋`; when rounding up to 1 overshoots, the rank further from its share is lowered
/// first. `None` when even rank (1, 1) does not fit.
pub fn tucker_ranks(d: ConvDims, percent: u8) -> Option<(u64, u64)> {
    let budget = d.budget(percent);
    let (i, o, k) = (d.i as f64, d.o as f64, (d.kh * d.kw) as f64);
    // k·i·o·α² + (i² + o²)·α = budget.
    let (a, b) = (k * i * o, i * i + o * o);
    let alpha = (-b + (b * b + 4.0 * a * budget as f64).sqrt()) / (2.0 * a);
    let mut r_in = ((alpha * i).floor() as u64).clamp(1, d.i);
    let mut r_out = ((alpha * o).floor() as u64).clamp(1, d.o);
    while tucker_params(d, r_in, r_out) > budget {
        let (share_in, share_out) = (r_in as f64 / i, r_out as f64 / o);
        if r_in > 1 && (share_in >= share_out || r_out == 1) {
            r_in -= 1;
        } else if r_out > 1 {
            r_out -= 1;
        } else {
            return None;
        }
    }
    Some((r_in, r_out))
}

/// The rank `R` of `cp<P>` on a kernel of `d`: the largest with `R·(o + i + kh + kw) ≤ ⌊P% ·
/// o·i·kh·kw⌋`; `None` when that is 0.
pub fn cp_rank(d: ConvDims, percent: u8) -> Option<u64> {
    let r = d.budget(percent) / (d.o + d.i + d.kh + d.kw);
    (r >= 1).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn dims(o: u64, i: u64, kh: u64, kw: u64) -> ConvDims {
        ConvDims { o, i, kh, kw }
    }

    #[test]
    fn tucker_ranks_fit_the_budget_and_keep_the_channel_ratio() {
        for d in [
            dims(32, 16, 3, 3),
            dims(64, 64, 3, 3),
            dims(64, 32, 5, 5),
            dims(7, 3, 3, 1),
        ] {
            for p in [1, 10, 25, 50, 75, 99] {
                let Some((ri, ro)) = tucker_ranks(d, p) else {
                    continue;
                };
                let params = tucker_params(d, ri, ro);
                assert!(
                    params <= d.params() * u64::from(p) / 100,
                    "{d:?} {p}%: {params}"
                );
                assert!(ri <= d.i && ro <= d.o && ri >= 1 && ro >= 1);
            }
        }
        // 32×16×3×3 = 4608 parameters, 50% = 2304: α solves 4608α² + 1280α = 2304 → α ≈ 0.582,
        // r_in = ⌊9.3⌋ = 9, r_out = ⌊18.6⌋ = 18: 144 + 1458 + 576 = 2178.
        assert_eq!(tucker_ranks(dims(32, 16, 3, 3), 50), Some((9, 18)));
        assert_eq!(tucker_params(dims(32, 16, 3, 3), 9, 18), 2178);
        assert_eq!(tucker_ranks(dims(4, 4, 3, 3), 1), None);
    }

    #[test]
    fn cp_rank_fits_the_budget() {
        // 4608 · 25% = 1152 over 32 + 16 + 3 + 3 = 54 per rank: R = 21.
        assert_eq!(cp_rank(dims(32, 16, 3, 3), 25), Some(21));
        assert_eq!(cp_rank(dims(2, 2, 3, 3), 10), None);
    }

    #[test]
    fn misfits_say_why() {
        let t = ConvFactor::Tucker(50);
        assert!(t.misfit(dims(32, 16, 1, 1)).unwrap().contains("1×1"));
        assert!(t.misfit(dims(16, 1, 3, 3)).unwrap().contains("1 input"));
        assert!(t.misfit(dims(32, 16, 3, 3)).is_none());
        let c = ConvFactor::Cp(50);
        assert!(c.misfit(dims(16, 1, 3, 3)).is_none());
        assert!(ConvFactor::Cp(1)
            .misfit(dims(2, 2, 3, 3))
            .unwrap()
            .contains("too few"));
        assert_eq!(
            c.matrices(dims(32, 16, 3, 3)).unwrap(),
            vec![(32, 42), (42, 3), (42, 3), (42, 16)]
        );
    }
}
