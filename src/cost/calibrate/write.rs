//! Turning measurements into a hardware profile: throughputs, bandwidth, overhead, measured entries
//! and the facts about candle's kernels, with the measuring machine's provenance.

use super::*;
use crate::cost::profile::{ComputeFile, ModelTerm};

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
/// [`crate::cost::profile`] for the format). What it charges is what `mpsearch measure` runs on candle
/// for each choice:
///
/// - `[compute]`: f32 (the `F32` kernel) and f16 (the plain `F16` matmul) GMAC/s at the largest
///   measured shape (most MACs per sample) and the largest batch. No bf16 and no integer entries:
///   candle has no bf16 gemm on the CPU and no integer kernel, so `[fallback]` says `bf16 = { copy =
///   "f32" }` (a dense f32 copy of the bf16 values) and `int2`..`int8 = "f32"` (a dequantized f32
///   copy; with `act8-*`, plus the quantize–dequantize pass). No `[weight_only]` table either: a
///   weight-only integer choice is that same dequantized f32 copy.
/// - `[ggml]`: per GGML block format, its `QMatMul` GMAC/s at the largest shape it ran on (most MACs
///   per sample) and the largest batch; a format that ran on no shape is left out (so charged as a
///   dequantized f32 copy) and a note says so.
/// - `[memory] bandwidth_gbs`: an effective figure, f32 weight bytes of the largest linear weight (the
///   largest weight when there is no linear one) over its f32 batch-1 time.
/// - `[overhead] per_layer_us`: the fastest kernel of the overhead probe (a `[16, 256]` weight at
///   batch 1, see [`CalibrateOptions::overhead_probe`]): the fixed cost every layer pays; without a
///   probe, the least-squares intercept of f32
///   batch-1 time against f32 weight bytes over the measured linear shapes, clamped to [0, smallest
///   f32 batch-1 time] (0 with fewer than two distinct sizes). The probe is not written to
///   `[[measured]]`.
/// - `[[measured]]`: per shape and batch, f32 and f16, and every GGML format that ran there (`weights
///   = "q4_k"`…), all with `act = "none"` (a GGML format's kernel quantizes its activations itself),
///   dense. bf16 and `int<b>` choices find the f32 entry through their copy.
/// - `[calibration]`: `slow_kernels` (kernels more than 10% slower than f32 at batch 1 on the largest
///   shape where both ran: no fast SIMD kernel here) and notes (skips, CPU features, what is charged).
///
/// `model`: the `[[model]]` terms of a calibration inside a model ([`super::in_model`]), whose
/// measurements `ms` then are (besides the overhead probes).
pub fn to_profile(
    ms: &[Measurement],
    model: &[ModelTerm],
    opts: &CalibrateOptions,
    name: &str,
) -> Result<ProfileFile> {
    let probes: Vec<&Measurement> = ms.iter().filter(|m| m.probe).collect();
    let probe_us = probes.iter().map(|m| m.fastest_us).min_by(f64::total_cmp);
    let requested: Vec<Measurement> = ms.iter().filter(|m| !m.probe).cloned().collect();
    let ms = requested.as_slice();
    let at = Reference::of(ms)?;
    let compute = compute_rates(ms, &at)?;
    let ggml = ggml_rates(ms, at.max_batch);
    let bandwidth = bandwidth_gbs(ms, at.min_batch)?;
    let per_layer_us = probe_us.unwrap_or_else(|| intercept(&f32_time_by_bytes(ms, at.min_batch)));

    let mut notes = skip_notes(opts);
    let applications = applications(ms);
    notes.extend(several_applications_notes(&applications));
    let measured = measured_entries(ms, &applications);
    let slow_kernels = slow_kernels(ms, opts, at.min_batch);
    notes.extend(unmeasured_formats_note(&ggml));
    notes.extend(busy_machine_notes(ms));
    notes.extend(probe_note(&probes));
    notes.extend(slow_batched_note(ms, &at));
    notes.extend(kernel_notes());

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = cpu_model();
    let threads = candle_core::utils::get_num_threads();
    Ok(ProfileFile {
        profile: Header {
            name: name.to_string(),
            description: format!(
                "This machine ({cpu}, {cores} threads) measured with candle-core {CANDLE_VERSION} CPU \
                 kernels on {threads} thread(s)"
            ),
            device: DeviceClass::Cpu,
        },
        provenance: Provenance {
            sources: vec![
                format!("candle-core {CANDLE_VERSION} (huggingface/candle) CPU and quantized kernels"),
                "measured by mpsearch calibrate".into(),
            ],
            date: today(),
            method: method(opts, &probes, &at, model.first()),
            cpu: Some(cpu),
            cores: Some(cores),
            threads: Some(threads),
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
        fallback: copies_to_f32(),
        ggml: ggml
            .into_iter()
            .filter_map(|(g, rate)| {
                let rate = toml::Value::Float(round(rate?, 3).max(0.001));
                Some((g.name().to_string(), Spanned::new(0..0, rate)))
            })
            .collect(),
        measured,
        calibration: Some(Calibration {
            bit_types: BTreeMap::new(),
            slow_kernels,
            notes,
        }),
        model: model.to_vec(),
    })
}

/// `[fallback]` of a calibrated profile: what candle has no kernel for runs from an f32 copy — bf16
/// weights widened to f32 at load (`{ copy = "f32" }`), integer weights dequantized to f32.
fn copies_to_f32() -> BTreeMap<String, Spanned<toml::Value>> {
    let mut out = BTreeMap::new();
    let mut copy = toml::map::Map::new();
    copy.insert("copy".into(), toml::Value::String("f32".into()));
    out.insert("bf16".into(), Spanned::new(0..0, toml::Value::Table(copy)));
    for b in crate::space::BITS {
        out.insert(
            format!("int{b}"),
            Spanned::new(0..0, toml::Value::String("f32".into())),
        );
    }
    out
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

/// The measurement a profile charges for each precision at one (shape, batch) ([`Kernel::precision`]:
/// one kernel per precision).
fn charged<'a>(
    ms: &'a [Measurement],
    shape: &MatrixShape,
    batch: u32,
) -> BTreeMap<Precision, &'a Measurement> {
    ms.iter()
        .filter(|m| &m.shape == shape && m.batch == batch)
        .filter_map(|m| Some((m.precision?, m)))
        .collect()
}

/// `[compute]`: f32 and f16 GMAC/s, from the largest shape at the largest batch.
fn compute_rates(ms: &[Measurement], at: &Reference) -> Result<ComputeFile> {
    let compute: ComputeFile = charged(ms, &at.largest, at.max_batch)
        .into_iter()
        .filter(|(p, _)| p.is_float())
        .map(|(p, m)| {
            (
                p.to_string(),
                Spanned::new(0..0, toml::Value::Float(round(m.gmacs(), 3).max(0.001))),
            )
        })
        .collect();
    if !compute.contains_key("f32") {
        return Err(no_f32());
    }
    Ok(compute)
}

/// `[ggml]`: each GGML format's GMAC/s at the largest batch on the largest shape it ran on (by MACs per
/// sample); `None` for a format that ran on no shape.
fn ggml_rates(ms: &[Measurement], max_batch: u32) -> BTreeMap<GgmlFormat, Option<f64>> {
    GgmlFormat::ALL
        .into_iter()
        .map(|g| {
            let rate = ms
                .iter()
                .filter(|m| m.precision == Some(Precision::Ggml(g)) && m.batch == max_batch)
                .max_by_key(|m| (m.shape.macs(1), &m.shape))
                .map(Measurement::gmacs);
            (g, rate)
        })
        .collect()
}

/// The GGML formats that ran on no measured shape (no `[ggml]` rate: charged as a dequantized copy).
fn unmeasured_formats_note(ggml: &BTreeMap<GgmlFormat, Option<f64>>) -> Option<String> {
    let missing: Vec<&str> = ggml
        .iter()
        .filter(|(_, r)| r.is_none())
        .map(|(g, _)| g.name())
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "no [ggml] rate for {}: they ran on no measured shape (no shape fits their blocks, see \
             the skips, or they were not among the timed kernels), so this profile charges them as a \
             dequantized f32 copy",
            missing.join(", ")
        )
    })
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
    Ok(f32_bytes(&f32_b1.shape) / (f32_b1.fastest_us * 1e3))
}

/// (f32 weight bytes, f32 time) of the linear shapes at the smallest batch, for the `[overhead]`
/// intercept when there is no probe.
fn f32_time_by_bytes(ms: &[Measurement], min_batch: u32) -> Vec<(f64, f64)> {
    ms.iter()
        .filter(|m| m.kernel == "F32" && m.batch == min_batch && m.shape.applications == 1)
        .map(|m| (f32_bytes(&m.shape), m.fastest_us))
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

/// `[[measured]]`: per shape and batch (in measurement order), the kernel charged for every precision;
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
        for (p, m) in charged(ms, shape, batch) {
            measured.push(MeasuredEntry {
                kind: shape.kind,
                shape: shape.shape.clone(),
                batch,
                weights: p,
                act: "none".into(),
                sparsity: "dense".into(),
                us: round(m.fastest_us, 2),
                spread_us: Some(round(m.spread_us, 2)),
                kernel: Some(m.kernel.clone()),
                rank: None,
                conv: None,
            });
        }
    }
    measured
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
                Some((m.shape.macs(1), m.fastest_us, f.fastest_us))
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
             machine was busy with other work; each uses its fastest run",
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
            .map(|m| format!("{} {:.1} µs", m.kernel, m.fastest_us))
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
            (m.fastest_us > 1.1 * f.fastest_us)
                .then(|| format!("{} {:.2}x", m.kernel, m.fastest_us / f.fastest_us))
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
         f32 once; GGML formats via QMatMul::forward (activations quantized on the fly to Q8_K, Q8_0 or \
         Q8_1 blocks)"
            .to_string(),
    );
    notes.push(
        "charged as mpsearch measure runs them: f32 = F32, f16 = F16, each GGML format = its QMatMul \
         ([ggml] and its [[measured]] entries); bf16 = a dense f32 copy (candle has no bf16 gemm on the \
         CPU) and int<b> = a dequantized f32 copy, plus the quantize-dequantize pass with act8-* (candle \
         has no integer kernel): [fallback]; BF16 and QMatMul-F16/BF16 are in the table only"
            .to_string(),
    );
    notes
}

/// The provenance's `method`: how the kernels were timed and where each figure comes from.
fn method(
    opts: &CalibrateOptions,
    probes: &[&Measurement],
    at: &Reference,
    model: Option<&ModelTerm>,
) -> String {
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
    let reps = opts.reps_per_round();
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
    // What a round does, of `runs` (the grid's matrix products, or the model's forward passes).
    let round = |runs: &str| {
        format!(
            "at least {} warm-up {runs} and {:.2} s of warm-up, then up to {reps} timed {runs} \
             (stopping after {:.2} s once {} are done)",
            opts.warmup.max(1),
            opts.warmup_seconds,
            opts.max_seconds / rounds as f64,
            opts.least_per_round(),
        )
    };
    let what = match model {
        None => format!(
            "y = x·Wᵀ on candle-core {CANDLE_VERSION} CPU kernels with seeded N(0, 0.02) weights and \
             N(0, 1) inputs; each shape's kernels timed in {rounds} rounds, each round doing {}; \
             the figure is the fastest run of all rounds, in µs (spread_us: the interquartile range of \
             the round with the lowest median); batch sizes [{batches}] (a \
             convolution is timed as its im2col product, batch x output-pixel rows)",
            round("runs"),
        ),
        Some(m) => format!(
            "every layer timed inside whole forward passes of model `{}` on its own data (cost \
             batches [{batches}]), deployed with one candle-core {CANDLE_VERSION} kernel at a time on \
             every layer it fits, as `mpsearch measure` builds it (a convolution runs candle's conv2d \
             in f32, else im2col, the product and the output layout); {rounds} rounds over every \
             deployment and batch, each of {}; a shape's figure is the mean over its layers in a \
             pass, the least over the passes of every round, in µs (spread_us: the interquartile \
             range of the round with the lowest median); \
             [[model]] is the f32 passes' time outside every layer's product and look-up",
            m.name,
            round("passes"),
        ),
    };
    format!(
        "measured by mpsearch calibrate: {what}; [compute] GMAC/s (f32, f16) from the largest shape ({}) at batch \
         {max_batch}, [ggml] from each format's largest shape at that batch; [memory] \
         bandwidth_gbs is an effective figure: f32 weight bytes of the largest linear weight / its f32 \
         batch-{min_batch} time; [overhead] per_layer_us {overhead}",
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
