//! What the CPU needs told: the AVX state faer's kernels leave behind, and candle's thread count.

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

/// Fixes the number of threads candle's CPU kernels use, by setting `RAYON_NUM_THREADS` to the count
/// candle would pick itself (the physical cores), unless the variable is already set.
///
/// candle-core 0.11.1 asks `candle_core::utils::get_num_threads` on **every** f32 matmul (and every
/// tile of its direct convolution), and without the variable that reads and parses `/proc/cpuinfo`
/// to count the physical cores: 45 µs per read on this machine, against 460–500 µs for a whole
/// batch-1 forward of the demo. Measured (BENCHMARKS.md, "End-to-end latency"): 9,343 reads of
/// `/proc/cpuinfo` in an 8-trial search of the demo; the demo's all-f32 forward at batch 64 took
/// 28.5 ms without the variable and 20.7 ms with it; a 32-trial search 21.1 s (3.4 s of it in the
/// kernel) and 18.8 s (0.4 s). With the variable set, the count is one environment look-up. The value
/// is the one candle computes, so candle's kernels run on as many threads as before; rayon's global
/// pool, which candle's quantized kernels and this crate's parallel loops use, takes the same count
/// (candle's own `init_global_threadpool` sizes it the same way).
///
/// Changing the environment is only sound while no other thread reads it: call this first thing in
/// `main`, before any thread starts (the binary does; the library never calls it).
pub fn pin_candle_threads() {
    const VAR: &str = "RAYON_NUM_THREADS";
    if std::env::var_os(VAR).is_none() {
        std::env::set_var(VAR, candle_core::utils::get_num_threads().to_string());
    }
}
