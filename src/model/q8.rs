//! # The activation blocks of candle's quantized matmul, quantized and dequantized in one pass
//!
//! candle's `QMatMul` quantizes its input rows to 8-bit blocks — Q8_0 (32 values, an f16 scale), Q8_1
//! (the same plus the block's sum, f16) or Q8_K (256 values, an f32 scale) — before its integer dot
//! products. The evaluator's dense emulation of that kernel ([`super::LayerKernel::Emulated`]) needs the
//! input exactly as those blocks hold it, dequantized. Going through candle's API for that means a
//! tensor per run of rows, its blocks, and a dequantized tensor copied out: on a language model's
//! windows that was most of the emulation's extra time over an f32 product (perf: the scalar
//! quantizer's `roundf` calls, copies and allocations). Here each block is quantized and dequantized
//! straight into the output with the arithmetic of candle 0.11's `from_float` and `to_float` for those
//! three types, expression for expression; a test holds every value to candle's own quantizer bit for
//! bit, on random rows, zero blocks and ties. (If a candle upgrade changes its quantizers, that test
//! fails.)

use half::f16;

/// `f32::round(v) as i8` (half away from zero, then a saturating cast) without a call to `roundf`:
/// `v` is clamped to the `i8` range first (the same result after the saturating cast), so the
/// truncation `as i32` is exact and `v − trunc(v)` is exact too. NaN gives 0, as the cast does.
#[inline(always)]
fn round_i8(v: f32) -> i8 {
    let v = v.clamp(-128.0, 128.0);
    let t = v as i32;
    let frac = v - t as f32;
    (t + i32::from(frac >= 0.5) - i32::from(frac <= -0.5)).clamp(-128, 127) as i8
}

/// One row quantized to Q8_0 blocks and dequantized into `out` (`row.len()` a multiple of 32).
pub fn q8_0_row(row: &[f32], out: &mut [f32]) {
    for (xs, ys) in row.chunks_exact(32).zip(out.chunks_exact_mut(32)) {
        let (id, d) = q8_0_scales(xs);
        for (y, &x) in ys.iter_mut().zip(xs) {
            *y = f32::from(round_i8(x * id)) * d;
        }
    }
}

/// One row quantized to Q8_1 blocks and dequantized into `out`; `terms` gets each block's
/// `S − X̄`: the block's sum as Q8_1 stores it (`f16(Σq) · f16(d)`, an f16 product) minus the sum of
/// its dequantized values.
pub fn q8_1_row(row: &[f32], out: &mut [f32], terms: &mut [f32]) {
    for ((xs, ys), term) in row
        .chunks_exact(32)
        .zip(out.chunks_exact_mut(32))
        .zip(terms.iter_mut())
    {
        let (id, d) = q8_0_scales(xs);
        let mut sum = 0i32;
        for (y, &x) in ys.iter_mut().zip(xs) {
            let q = round_i8(x * id);
            sum += i32::from(q);
            *y = f32::from(q) * d;
        }
        let s = f16::from_f32(sum as f32) * f16::from_f32(d_raw(xs));
        *term = s.to_f32() - ys.iter().sum::<f32>();
    }
}

/// One row quantized to Q8_K blocks and dequantized into `out` (`row.len()` a multiple of 256).
pub fn q8_k_row(row: &[f32], out: &mut [f32]) {
    for (xs, ys) in row.chunks_exact(256).zip(out.chunks_exact_mut(256)) {
        let mut max = 0f32;
        let mut amax = 0f32;
        for &x in xs {
            if amax < x.abs() {
                amax = x.abs();
                max = x;
            }
        }
        if amax == 0f32 {
            ys.fill(0.0);
            continue;
        }
        let iscale = -127f32 / max;
        let d = 1.0 / iscale;
        for (y, &x) in ys.iter_mut().zip(xs) {
            *y = d * f32::from(round_i8(iscale * x));
        }
    }
}

/// A Q8_0/Q8_1 block's scale as `from_float` computes it (`amax / 127`, f32).
fn d_raw(xs: &[f32]) -> f32 {
    let mut amax = 0f32;
    for &x in xs {
        amax = amax.max(x.abs())
    }
    amax / ((1 << 7) - 1) as f32
}

/// The inverse scale `from_float` multiplies by and the stored (f16) scale `to_float` multiplies by.
fn q8_0_scales(xs: &[f32]) -> (f32, f32) {
    let d = d_raw(xs);
    let id = if d != 0f32 { 1. / d } else { 0. };
    (id, f16::from_f32(d).to_f32())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};
    use rand::{Rng, SeedableRng};

    /// Rows of every kind a block meets: random at several scales, all zero, one value, exact ties
    /// after scaling (multiples of amax/254), negative extremes, and tiny values.
    fn rows(cols: usize) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut v = Vec::new();
        for scale in [1e-6f32, 0.01, 1.0, 300.0] {
            for _ in 0..cols * 3 {
                v.push(rng.random_range(-1.0f32..1.0) * scale);
            }
        }
        v.extend(std::iter::repeat_n(0.0, cols));
        let mut one = vec![0.0; cols];
        one[5] = -3.25;
        v.extend(one);
        // Ties: values k·(127/254) for amax 127 give k/2 after scaling.
        v.extend((0..cols).map(|i| (i as f32 - (cols / 2) as f32) * 0.5));
        v.extend((0..cols).map(|i| if i % 7 == 0 { -1e4 } else { i as f32 * 1e-3 }));
        v
    }

    fn candle(values: &[f32], cols: usize, blocks: GgmlDType) -> (Vec<f32>, Vec<u8>) {
        let t = Tensor::from_slice(values, (values.len() / cols, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, blocks).unwrap();
        let d = q.dequantize(&Device::Cpu).unwrap();
        (
            d.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            q.data().unwrap().to_vec(),
        )
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn q8_0_and_q8_k_equal_candles_quantizer_bit_for_bit() {
        for (blocks, cols) in [(GgmlDType::Q8_0, 64), (GgmlDType::Q8K, 512)] {
            let x = rows(cols);
            let (want, _) = candle(&x, cols, blocks);
            let mut got = vec![f32::NAN; x.len()];
            for (r, o) in x.chunks_exact(cols).zip(got.chunks_exact_mut(cols)) {
                match blocks {
                    GgmlDType::Q8_0 => q8_0_row(r, o),
                    _ => q8_k_row(r, o),
                }
            }
            assert_eq!(bits(&got), bits(&want), "{blocks:?}");
        }
    }

    #[test]
    fn q8_1_equals_candles_quantizer_and_its_stored_sums() {
        let cols = 96;
        let x = rows(cols);
        let (want, data) = candle(&x, cols, GgmlDType::Q8_1);
        let nb = x.len() / 32;
        let size = GgmlDType::Q8_1.type_size();
        let mut got = vec![f32::NAN; x.len()];
        let mut terms = vec![f32::NAN; nb];
        for ((r, o), t) in x
            .chunks_exact(cols)
            .zip(got.chunks_exact_mut(cols))
            .zip(terms.chunks_exact_mut(cols / 32))
        {
            q8_1_row(r, o, t);
        }
        assert_eq!(bits(&got), bits(&want));
        for (b, t) in terms.iter().enumerate() {
            let block = &data[b * size..(b + 1) * size];
            let s = f16::from_le_bytes([block[2], block[3]]).to_f32();
            let xbar: f32 = want[b * 32..(b + 1) * 32].iter().sum();
            assert_eq!(t.to_bits(), (s - xbar).to_bits(), "block {b}");
        }
    }

    #[test]
    fn rounding_is_half_away_from_zero_and_saturates() {
        for v in [
            0.0f32,
            0.49999997,
            0.5,
            1.5,
            2.5,
            -0.5,
            -2.5,
            -0.49999997,
            126.5,
            127.4,
            300.0,
            -300.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ] {
            assert_eq!(round_i8(v), f32::round(v) as i8, "{v}");
        }
    }
}
