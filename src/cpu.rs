//! What the CPU needs told: the AVX state faer's kernels leave behind.

/// Clears the upper halves of the AVX registers (`vzeroupper`); a no-op without AVX. faer's kernels
/// return without it, and the scalar code after them — libm's `exp` in every kernel evaluation, `erf`
/// in the EHVI — then ran about 20 times slower on this machine (AMD EPYC: 65,536 Matérn evaluations
/// right after a faer product took 8.4 ms, 0.36 ms after this; BENCHMARKS.md), the penalty for
/// mixing dirty upper AVX state with SSE instructions. Called after each faer call of the GP and of
/// the predictor's refinement; it changes no value.
pub fn clear_upper_avx() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX (checked just above), which is all `vzeroupper` needs; it only
        // zeroes the upper halves of the YMM registers, and no value lives in them across this call
        // (compiled code assumes nothing about them across a call).
        unsafe { vzeroupper() }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn vzeroupper() {
    std::arch::x86_64::_mm256_zeroupper();
}
