//! Turning measurements into a hardware profile: throughputs, bandwidth, overhead, measured entries
//! and the facts about candle's kernels, with the measuring machine's provenance.

use super::*;
use crate::cost::profile::ComputeFile;

pub(super) fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// Today's date (UTC) from the system clock, `YYYY-MM-DD`.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar (H. Hinnant's
/// `civil_from_days`).
pub(super) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The CPU's model name from `/proc/cpuinfo` (or the architecture where there is none).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| {
                    l.starts_with("model name")
                        || l.starts_with("Model")
                        || l.starts_with("Hardware")
                })
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The SIMD extensions candle's kernels can use here, for the notes.
pub(super) fn simd_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! feature {
            ($($f:tt),*) => {$( if std::arch::is_x86_feature_detected!($f) { v.push($f) } )*};
        }
        feature!(
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512vnni",
            "avx512bf16"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! feature {
            ($($f:tt),*) => {$( if std::arch::is_aarch64_feature_detected!($f) { v.push($f) } )*};
        }
        feature!("neon", "dotprod", "i8mm", "fp16");
    }
    v
}

/// Writes the measurements as a complete hardware profile named `name` (see the module docs of
/// [`crate::cost::profile`] for the format):
///
/// - `[compute]`: f32, f16, bf16 and `int<b>` GMAC/s at the largest measured shape (most MACs per
///   sample) and the largest batch; f16/bf16 from the faster of their plain and `QMatMul` kernels,
///   `int<b>` from `[calibration] bit_types[b]`, the fastest candle type of b bits there. Candle's
///   quantized kernels quantize activations on the fly, so the integer rates are W×A8 (`act8-*`
///   choices); candle has no weight-only kernel, so no `[weight_only]` table: a weight-only choice is
///   charged as a dequantized f32 copy (the f32 entries).
/// - `[memory] bandwidth_gbs`: an effective figure, f32 weight bytes of the largest linear weight (the
///   largest weight when there is no linear one) over its f32 batch-1 time.
/// - `[overhead] per_layer_us`: the fastest kernel of the overhead probe (a `[16, 256]` weight at
///   batch 1, see [`CalibrateOptions::overhead_probe`]): the fixed cost every layer pays; without a
///   probe, the least-squares intercept of f32
///   batch-1 time against f32 weight bytes over the measured linear shapes, clamped to [0, smallest
///   f32 batch-1 time] (0 with fewer than two distinct sizes). The probe is not written to
///   `[[measured]]`.
/// - `[[measured]]`: per shape and batch, f32, f16, bf16 (faster kernel) with `act = "none"` and, per
///   bit-width, the fastest runnable candle type of that width with `act = "act8-dynamic"`, dense.
/// - `[calibration]`: `bit_types`, `slow_kernels` (kernels more than 10% slower than f32 at batch 1
///   on the largest shape where both ran: no fast SIMD kernel here) and notes (skips, CPU features).
pub fn to_profile(ms: &[Measurement], opts: &CalibrateOptions, name: &str) -> Result<ProfileFile> {
    let probes: Vec<&Measurement> = ms.iter().filter(|m| m.probe).collect();
    let probe_us = probes.iter().map(|m| m.median_us).min_by(f64::total_cmp);
    let requested: Vec<Measurement> = ms.iter().filter(|m| !m.probe).cloned().collect();
    let ms = requested.as_slice();
    let at = Reference::of(ms)?;
    let (compute, bit_types) = compute_rates(ms, &at)?;
    let bandwidth = bandwidth_gbs(ms, at.min_batch)?;
    let per_layer_us = probe_us.unwrap_or_else(|| intercept(&f32_time_by_bytes(ms, at.min_batch)));

    let mut notes = skip_notes(opts);
    let applications = applications(ms);
    notes.extend(several_applications_notes(&applications));
    let measured = measured_entries(ms, &applications);
    let slow_kernels = slow_kernels(ms, opts, at.min_batch);
    notes.extend(busy_machine_notes(ms));
    notes.extend(probe_note(&probes));
    notes.extend(slow_batched_note(ms, &at));
    notes.extend(kernel_notes());

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = cpu_model();
    Ok(ProfileFile {
        profile: Header {
            name: name.to_string(),
            description: format!(
                "This machine ({cpu}, {cores} threads) measured with candle-core {CANDLE_VERSION} CPU kernels"
            ),
            device: DeviceClass::Cpu,
        },
        provenance: Provenance {
            sources: vec![
                format!("candle-core {CANDLE_VERSION} (huggingface/candle) CPU and quantized kernels"),
                "measured by mpsearch calibrate".into(),
            ],
            date: today(),
            method: method(opts, &probes, &at),
            cpu: Some(cpu),
            cores: Some(cores),
            candle_version: Some(CANDLE_VERSION.into()),
            repetitions: Some(opts.repetitions.max(1)),
        },
        compute,
        weight_only: None,
        memory: Memory {
            bandwidth_gbs: Spanned::new(0..0, round(bandwidth, 3).max(0.001)),
        },
        overhead: Overhead {
            per_layer_us: round(per_layer_us, 2),
        },
        // candle's CPU kernels compute every pattern dense.
        sparsity: SparsitySupport {
            nm_precisions: Some(Vec::new()),
            ..SparsitySupport::default()
        },
        fallback: BTreeMap::new(),
        measured,
        calibration: Some(Calibration {
            bit_types,
            slow_kernels,
            notes,
        }),
    })
}

/// The error of measurements a profile cannot be built from.
fn no_f32() -> Error {
    Error::file("<calibrate>", "no f32 measurement to build a profile from")
}

/// Where the profile's headline figures are read: the largest shape f32 was measured on (most MACs
/// per sample), and the smallest and largest batch measured on it.
struct Reference {
    largest: MatrixShape,
    min_batch: u32,
    max_batch: u32,
}

impl Reference {
    fn of(ms: &[Measurement]) -> Result<Reference> {
        let largest = ms
            .iter()
            .filter(|m| m.kernel == "F32")
            .map(|m| &m.shape)
            .max_by_key(|s| (s.macs(1), *s))
            .ok_or_else(no_f32)?
            .clone();
        let batches = || ms.iter().filter(|m| m.shape == largest).map(|m| m.batch);
        let max_batch = batches().max().ok_or_else(no_f32)?;
        let min_batch = batches().min().ok_or_else(no_f32)?;
        Ok(Reference {
            largest,
            min_batch,
            max_batch,
        })
    }
}

/// Fastest measurement per precision at one (shape, batch).
fn best<'a>(
    ms: &'a [Measurement],
    shape: &MatrixShape,
    batch: u32,
) -> BTreeMap<Precision, &'a Measurement> {
    let mut b: BTreeMap<Precision, &Measurement> = BTreeMap::new();
    for m in ms.iter().filter(|m| &m.shape == shape && m.batch == batch) {
        let e = b.entry(m.precision).or_insert(m);
        if m.median_us < e.median_us {
            *e = m;
        }
    }
    b
}

/// `[compute]` (GMAC/s per precision) and `bit_types` (the candle type of each integer width), from the
/// largest shape at the largest batch.
fn compute_rates(
    ms: &[Measurement],
    at: &Reference,
) -> Result<(ComputeFile, BTreeMap<String, String>)> {
    let mut compute = BTreeMap::new();
    let mut bit_types = BTreeMap::new();
    for (p, m) in best(ms, &at.largest, at.max_batch) {
        compute.insert(
            p.to_string(),
            Spanned::new(0..0, toml::Value::Float(round(m.gmacs(), 3).max(0.001))),
        );
        if let Precision::Int(b) = p {
            bit_types.insert(b.to_string(), m.kernel.clone());
        }
    }
    if !compute.contains_key("f32") {
        return Err(no_f32());
    }
    Ok((compute, bit_types))
}

/// f32 weight bytes of a shape.
fn f32_bytes(s: &MatrixShape) -> f64 {
    (s.rows * s.cols * 4) as f64
}

/// `[memory] bandwidth_gbs`, from f32 at the smallest batch on the weight that streams the most bytes
/// per application (a linear layer where there is one: a convolution reuses its weight over many
/// pixels and is compute-bound).
fn bandwidth_gbs(ms: &[Measurement], min_batch: u32) -> Result<f64> {
    let f32_b1 = ms
        .iter()
        .filter(|m| m.kernel == "F32" && m.batch == min_batch)
        .max_by(|a, b| {
            let key = |m: &Measurement| (m.shape.applications == 1, m.shape.rows * m.shape.cols);
            key(a).cmp(&key(b))
        })
        .ok_or_else(no_f32)?;
    Ok(f32_bytes(&f32_b1.shape) / (f32_b1.median_us * 1e3))
}

/// (f32 weight bytes, f32 time) of the linear shapes at the smallest batch, for the `[overhead]`
/// intercept when there is no probe.
fn f32_time_by_bytes(ms: &[Measurement], min_batch: u32) -> Vec<(f64, f64)> {
    ms.iter()
        .filter(|m| m.kernel == "F32" && m.batch == min_batch && m.shape.applications == 1)
        .map(|m| (f32_bytes(&m.shape), m.median_us))
        .collect()
}

/// The output sizes (applications) each (kind, weight shape) was measured at.
fn applications(ms: &[Measurement]) -> BTreeMap<(LayerKind, &[usize]), Vec<usize>> {
    let mut applications: BTreeMap<(LayerKind, &[usize]), Vec<usize>> = BTreeMap::new();
    for m in ms {
        let a = applications
            .entry((m.shape.kind, &m.shape.shape))
            .or_default();
        if !a.contains(&m.shape.applications) {
            a.push(m.shape.applications);
        }
    }
    applications
}

/// A profile entry is keyed by the stored weight shape, which cannot tell one convolution weight
/// applied at two output sizes apart: a note for each such shape (it gets no `[[measured]]` entry, so
/// the analytic model prices it).
fn several_applications_notes(
    applications: &BTreeMap<(LayerKind, &[usize]), Vec<usize>>,
) -> Vec<String> {
    applications
        .iter()
        .filter(|(_, a)| a.len() > 1)
        .map(|((kind, shape), a)| {
            format!(
                "{kind} {} is applied at {} different output sizes ({}); [[measured]] entries are \
                 keyed by weight shape only, so none is written for it",
                shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("x"),
                a.len(),
                a.iter()
                    .map(|n| format!("{n} pixels"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect()
}

/// `[[measured]]`: per shape and batch (in measurement order), the fastest kernel of every precision;
/// none for a weight shape measured at several output sizes.
fn measured_entries(
    ms: &[Measurement],
    applications: &BTreeMap<(LayerKind, &[usize]), Vec<usize>>,
) -> Vec<MeasuredEntry> {
    let mut measured = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (shape, batch) in ms.iter().map(|m| (&m.shape, m.batch)) {
        if !seen.insert((shape, batch))
            || applications[&(shape.kind, shape.shape.as_slice())].len() > 1
        {
            continue;
        }
        for (p, m) in best(ms, shape, batch) {
            measured.push(MeasuredEntry {
                kind: shape.kind,
                shape: shape.shape.clone(),
                batch,
                weights: p,
                act: measured_act(p).into(),
                sparsity: "dense".into(),
                us: round(m.median_us, 2),
                spread_us: Some(round(m.spread_us, 2)),
                kernel: Some(m.kernel.clone()),
            });
        }
    }
    measured
}

/// The activations a measured kernel of precision `p` multiplies: candle's quantized kernels (every
/// integer width) quantize them on the fly (Q8_0 / Q8_K blocks, per row: `act8-dynamic`); its float
/// kernels keep them float.
fn measured_act(p: Precision) -> &'static str {
    match p {
        Precision::Int(_) => "act8-dynamic",
        _ => "none",
    }
}

/// The f32 measurement of `m`'s shape and batch.
fn f32_twin<'a>(ms: &'a [Measurement], m: &Measurement) -> Option<&'a Measurement> {
    ms.iter()
        .find(|o| o.kernel == "F32" && o.shape == m.shape && o.batch == m.batch)
}

/// `slow_kernels`: the kernels of `opts` more than 10% slower than f32 at the smallest batch, on the
/// largest shape where both ran.
fn slow_kernels(ms: &[Measurement], opts: &CalibrateOptions, min_batch: u32) -> Vec<String> {
    let mut slow_kernels = Vec::new();
    for k in &opts.kernels {
        let name = k.name();
        if name == "F32" {
            continue;
        }
        let pair = ms
            .iter()
            .filter(|m| m.kernel == name && m.batch == min_batch)
            .filter_map(|m| {
                let f = f32_twin(ms, m)?;
                Some((m.shape.macs(1), m.median_us, f.median_us))
            })
            .max_by(|a, b| a.0.cmp(&b.0));
        if let Some((_, us, f32_us)) = pair {
            if us > 1.1 * f32_us {
                slow_kernels.push(name);
            }
        }
    }
    slow_kernels
}

/// Notes on measurements a busy machine may have spoiled: rounds far apart, other processes' load.
fn busy_machine_notes(ms: &[Measurement]) -> Vec<String> {
    let mut notes = Vec::new();
    let disagreeing = ms.iter().filter(|m| m.round_disagreement() > 1.5).count();
    if disagreeing > 0 {
        let worst = ms
            .iter()
            .max_by(|a, b| a.round_disagreement().total_cmp(&b.round_disagreement()))
            .map(|m| {
                format!(
                    "{} {} batch {}: {:.1}x",
                    m.shape.shape_string(),
                    m.kernel,
                    m.batch,
                    m.round_disagreement()
                )
            })
            .unwrap_or_default();
        notes.push(format!(
            "{disagreeing} of {} measurements had rounds more than 1.5x apart (worst {worst}): the \
             machine was busy with other work; each uses its fastest round",
            ms.len()
        ));
    }
    let loaded: Vec<&Measurement> = ms
        .iter()
        .filter(|m| m.other_load.is_some_and(|l| l > 0.2))
        .collect();
    if !loaded.is_empty() {
        let worst = loaded
            .iter()
            .filter_map(|m| m.other_load)
            .fold(0.0, f64::max);
        notes.push(format!(
            "{} of {} measurements were timed while other processes used more than 20% of the CPUs \
             (up to {:.0}%): candle's quantized kernels slow down sharply when their threads share a \
             core, so recalibrate on a quiet machine",
            loaded.len(),
            ms.len(),
            worst * 100.0
        ));
    }
    notes
}

/// The overhead probe's times, if there was one.
fn probe_note(probes: &[&Measurement]) -> Option<String> {
    if probes.is_empty() {
        return None;
    }
    Some(format!(
        "overhead probe ({PROBE_ROWS}x{PROBE_COLS} weight, batch 1): {}",
        probes
            .iter()
            .map(|m| format!("{} {:.1} µs", m.kernel, m.median_us))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Kernels with no fast batched path: slower than f32 at the largest batch on the largest shape.
fn slow_batched_note(ms: &[Measurement], at: &Reference) -> Option<String> {
    let batched: Vec<String> = ms
        .iter()
        .filter(|m| m.shape == at.largest && m.batch == at.max_batch && m.kernel != "F32")
        .filter_map(|m| {
            let f = f32_twin(ms, m)?;
            (m.median_us > 1.1 * f.median_us)
                .then(|| format!("{} {:.2}x", m.kernel, m.median_us / f.median_us))
        })
        .collect();
    (at.max_batch != at.min_batch && !batched.is_empty()).then(|| {
        format!(
            "slower than f32 at batch {} on {}: {}",
            at.max_batch,
            at.largest.shape_string(),
            batched.join(", ")
        )
    })
}

/// The CPU's SIMD features, and what each timed kernel is.
fn kernel_notes() -> Vec<String> {
    let mut notes = Vec::new();
    let features = simd_features();
    if !features.is_empty() {
        notes.push(format!(
            "CPU SIMD features detected: {}",
            features.join(" ")
        ));
    }
    notes.push(
        "timed kernels: F32 = x.matmul(w.t()) as candle-nn Linear; F16/BF16 = plain candle half matmul \
         (BF16 widens to f32 on every call); QMatMul-F16/BF16 = QMatMul, which dequantizes the weight to \
         f32 once; quantized types via QMatMul::forward (activations quantized on the fly); \
         f16/bf16 entries use the faster of the two"
            .to_string(),
    );
    notes
}

/// The provenance's `method`: how the kernels were timed and where each figure comes from.
fn method(opts: &CalibrateOptions, probes: &[&Measurement], at: &Reference) -> String {
    let Reference {
        largest,
        min_batch,
        max_batch,
    } = at;
    let batches = opts
        .batches
        .iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let rounds = opts.rounds.max(1);
    let reps = opts.repetitions.max(1).div_ceil(rounds);
    let overhead = if probes.is_empty() {
        format!(
            "is the least-squares intercept of f32 batch-{min_batch} time against weight bytes over the \
             measured linear shapes, clamped to [0, smallest time]"
        )
    } else {
        format!(
            "is the fixed cost every layer pays: the fastest of {} on a {PROBE_ROWS}x{PROBE_COLS} weight \
             at batch 1 ({} MACs; see [calibration] notes)",
            probes.iter().map(|m| m.kernel.as_str()).collect::<Vec<_>>().join(", "),
            PROBE_ROWS * PROBE_COLS
        )
    };
    format!(
        "measured by mpsearch calibrate: y = x·Wᵀ on candle-core {CANDLE_VERSION} CPU kernels with seeded \
         N(0, 0.02) weights and N(0, 1) inputs; each shape's kernels timed in {rounds} rounds, each \
         round doing at least {} warm-up runs and {:.2} s of warm-up, then up to {} timed runs \
         (stopping after {:.2} s once {} are done); median and interquartile range in µs of the \
         fastest round; batch sizes [{batches}] (a convolution is timed as its im2col product, batch \
         x output-pixel rows); [compute] GMAC/s from the largest shape ({}) at batch {max_batch}, \
         int<b> from the fastest candle type of b bits there (see [calibration] bit_types); [memory] \
         bandwidth_gbs is an effective figure: f32 weight bytes of the largest linear weight / its f32 \
         batch-{min_batch} time; [overhead] per_layer_us {overhead}",
        opts.warmup.max(1),
        opts.warmup_seconds,
        reps,
        opts.max_seconds / rounds as f64,
        MIN_REPETITIONS.min(reps),
        largest.shape_string(),
    )
}

/// Least-squares intercept of `y` against `x`, clamped to [0, min y]; 0 without two distinct x.
pub(super) fn intercept(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let min_y = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    if points.len() < 2 || sxx <= 0.0 {
        return 0.0;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (my - sxy / sxx * mx).clamp(0.0, min_y)
}
