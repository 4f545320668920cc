//! # GGML block formats through candle's own quantizer
//!
//! A [`GgmlFormat`] weight is quantized by candle (`QTensor::quantize`, a port of ggml's reference
//! quantizers) exactly as the kernel that runs it will see it: [`quantize`] gives the `QTensor` a
//! `QMatMul` multiplies (its activations quantized on the fly to Q8_K or Q8_0 blocks by the kernel),
//! and [`fake_quantize`] its dequantized values, which is what the weight *is* wherever a dense copy
//! is needed (a factor's product, an export's reconstruction). candle's quantizer is used as is: no
//! importance weighting (llama.cpp's imatrix) and no GPTQ (the rounding setting applies to the
//! `int*` formats only).

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;

use super::matrix::WeightMatrix;
use crate::error::{Error, Result};
use crate::space::GgmlFormat;

/// candle's type for a format.
pub fn dtype(g: GgmlFormat) -> GgmlDType {
    match g {
        GgmlFormat::Q2K => GgmlDType::Q2K,
        GgmlFormat::Q3K => GgmlDType::Q3K,
        GgmlFormat::Q4K => GgmlDType::Q4K,
        GgmlFormat::Q5K => GgmlDType::Q5K,
        GgmlFormat::Q6K => GgmlDType::Q6K,
        GgmlFormat::Q8_0 => GgmlDType::Q8_0,
        GgmlFormat::Q4_0 => GgmlDType::Q4_0,
        GgmlFormat::Q4_1 => GgmlDType::Q4_1,
        GgmlFormat::Q5_0 => GgmlDType::Q5_0,
        GgmlFormat::Q5_1 => GgmlDType::Q5_1,
    }
}

/// `m` (`rows × cols`, rows being output features) quantized to `g` by candle. The in-features must
/// fit the format ([`GgmlFormat::misfit`]): an error says why otherwise, before candle is called (a
/// misfit shape can panic inside candle's kernels).
pub fn quantize(m: &WeightMatrix, g: GgmlFormat) -> Result<QTensor> {
    if let Some(why) = g.misfit(m.cols() as u64) {
        return Err(Error::compress(why));
    }
    let t = m.to_tensor(&[m.rows(), m.cols()])?;
    Ok(QTensor::quantize(&t, dtype(g))?)
}

/// The values of `m` after quantizing it to `g` with candle and dequantizing it back.
pub fn fake_quantize(m: &WeightMatrix, g: GgmlFormat) -> Result<WeightMatrix> {
    let q = quantize(m, g)?;
    WeightMatrix::from_tensor(&q.dequantize(&Device::Cpu)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_facts_are_candles() {
        for g in GgmlFormat::ALL {
            let t = dtype(g);
            assert_eq!(g.block(), t.block_size(), "{g}");
            assert_eq!(g.block_bytes(), t.type_size(), "{g}");
            assert_eq!(format!("{t:?}").to_lowercase().replace("k", "_k"), g.name());
        }
    }

    #[test]
    fn fake_quantization_error_shrinks_with_the_width() {
        // Gaussian-ish weights from a fixed sequence; the error of q2_k > q4_k > q6_k > q8_0 > 0.
        let cols = 256;
        let data: Vec<f32> = (0..8 * cols)
            .map(|i| ((i as f32 * 0.618_034).fract() - 0.5) * 0.1)
            .collect();
        let m = WeightMatrix::new(8, cols, data.clone()).unwrap();
        let err = |g| {
            let q = fake_quantize(&m, g).unwrap();
            q.data()
                .iter()
                .zip(&data)
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum::<f64>()
        };
        let e: Vec<f64> = [
            GgmlFormat::Q2K,
            GgmlFormat::Q4K,
            GgmlFormat::Q6K,
            GgmlFormat::Q8_0,
        ]
        .into_iter()
        .map(err)
        .collect();
        assert!(e.windows(2).all(|w| w[0] > w[1]) && e[3] > 0.0, "{e:?}");
        let bad = WeightMatrix::new(2, 96, vec![0.1; 192]).unwrap();
        let msg = fake_quantize(&bad, GgmlFormat::Q4K)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("multiple of 256"), "{msg}");
    }
}
