//! # `calibrate`
//!
//! This machine's candle CPU kernels measured on a model's layer shapes (or a standard grid), written
//! atomically as a hardware profile that loads back, with a table of the measurements.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use mpsearch::cost::calibrate::in_model::{self, ModelInput};
use mpsearch::cost::calibrate::{self, CalibrateOptions, Measurement};
use mpsearch::cost::profile::{MeasuredEntry, ModelTerm, ProfileFile};
use mpsearch::cost::HardwareProfile;
use mpsearch::data::Batch;
use mpsearch::measure::input::{from_search_split, DEFAULT_TOKENS};
use mpsearch::model::ModelSource;
use mpsearch::space::Choice;

use super::args::CalibrateArgs;
use super::output::{emit, measure_bar, show_progress};
use super::setup::load_space;

pub fn run(a: CalibrateArgs) -> anyhow::Result<ExitCode> {
    a.check()?;
    let out = a.out.clone().unwrap_or_else(default_out);
    let name = a.name.clone().unwrap_or_else(|| {
        out.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "calibrated".into())
    });
    let alone = |mut opts: CalibrateOptions| -> anyhow::Result<_> {
        opts.repetitions = a.repetitions;
        opts.rounds = a.rounds;
        opts.batches = vec![1, a.batch];
        Ok(Calibrated {
            ms: measure(&opts, a.batch)?,
            terms: Vec::new(),
            variants: Vec::new(),
            opts,
        })
    };
    let Calibrated {
        ms,
        terms,
        variants,
        opts,
    } = match &a.model {
        Some(m) => match ModelSource::parse(m) {
            // A language model's in-model calibration would run every q-format on ~200 tensors inside
            // forward passes of 128-token windows: hours on 2 cores. Its shapes (7 distinct ones for
            // SmolLM2) are timed alone instead.
            source @ ModelSource::Gguf(_) => {
                let inventory = mpsearch::model::inventory(&source)?;
                eprintln!(
                    "note: `{m}` is a language model: its layer shapes are timed alone (as without \
                     --model), at 1 and {} rows: timing every format inside its forward passes would \
                     take hours; no non-matmul term is written",
                    a.batch
                );
                alone(CalibrateOptions::for_layers(&inventory.layers))?
            }
            _ => in_model(&a, m)?,
        },
        None => alone(CalibrateOptions::standard_grid())?,
    };
    let mut file = calibrate::to_profile(&ms, &terms, &opts, &name)?;
    file.measured.extend(variants);
    let text = toml::to_string_pretty(&file).context("serialising the profile")?;
    // Check that what we write loads back before writing it.
    HardwareProfile::from_toml(&text, &out)?;
    mpsearch::fs::write_atomic(&out, text.as_bytes())?;
    emit(&report(&ms, &file, &out, name))
}

/// What a calibration measured, and how.
struct Calibrated {
    ms: Vec<Measurement>,
    /// `[[model]]` terms and the variants' `[[measured]]` entries (calibrating inside a model).
    terms: Vec<ModelTerm>,
    variants: Vec<MeasuredEntry>,
    opts: CalibrateOptions,
}

/// `--model`: the overhead probes timed alone, then the model's layers and its non-matmul work
/// inside its forward passes at 1 and `--batch` samples.
fn in_model(a: &CalibrateArgs, model: &str) -> anyhow::Result<Calibrated> {
    let (net, data) = mpsearch::eval::load(&ModelSource::parse(model), a.data.as_deref())?;
    let inventory = net.inventory();
    let space = load_space(a.space.as_deref(), inventory)?;
    let choices: Vec<Choice> = space
        .groups
        .iter()
        .flat_map(|g| g.choices.iter().copied())
        .collect();
    let variants = in_model::variants(&choices);
    let sequence = matches!(data.eval.first(), Some(Batch::Tokens { .. }));
    if a.tokens.is_some() && !sequence {
        anyhow::bail!(
            "--tokens: model `{model}` takes images, not token sequences; leave --tokens out"
        );
    }
    let tokens = sequence.then(|| a.tokens.unwrap_or(DEFAULT_TOKENS));
    let inputs = [1, a.batch]
        .into_iter()
        .map(|samples| {
            let i = from_search_split(&data, samples, tokens)?;
            Ok(ModelInput {
                batch: i.batch,
                cost_batch: i.cost_batch,
                description: i.description,
            })
        })
        .collect::<mpsearch::Result<Vec<_>>>()?;
    let mut opts = CalibrateOptions::for_layers(&inventory.layers);
    opts.repetitions = a.repetitions;
    opts.rounds = a.rounds;
    opts.batches = inputs.iter().map(|i| i.cost_batch).collect();
    let kernels = in_model::kernels(&opts.kernels);
    // Passes a deployment always gets: its rounds' least, or all its repetitions.
    let certain = (opts.least_per_round() * opts.rounds.max(1)).min(opts.repetitions.max(1));
    if certain < in_model::SPILL_LEAST_PASSES && kernels.len() > 1 {
        eprintln!(
            "note: {certain} passes per deployment are certain with these settings; where the time \
             budget allows no more (a large model, a large batch), a kernel's spill (what its layers \
             add to the rest of a pass) cannot be told from noise and is written as 0 ({} passes \
             needed; the default 9 rounds give at least 9)",
            in_model::SPILL_LEAST_PASSES
        );
    }
    eprintln!(
        "measuring model `{}` inside its forward passes at cost batches {} ({}): {} layers, {} kernels \
         ({}) and {} structured variants of space `{}` ({}) one at a time on every layer each fits, \
         up to {} passes each, and its non-matmul work",
        inventory.name,
        opts.batches
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(" and "),
        inputs
            .iter()
            .map(|i| i.description.as_str())
            .collect::<Vec<_>>()
            .join("; "),
        inventory.layers.len(),
        kernels.len(),
        kernels.iter().map(|k| k.name()).collect::<Vec<_>>().join(", "),
        variants.len(),
        space.name,
        if variants.is_empty() {
            "none".to_string()
        } else {
            variants
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        },
        opts.repetitions
    );
    let probes = CalibrateOptions {
        shapes: Vec::new(),
        ..opts.clone()
    };
    let mut ms = calibrate::measure(&probes, &mut |_, _, _| {})?;
    let bar = measure_bar();
    let measured = in_model::measure(
        net.as_ref(),
        &inputs,
        &opts,
        &variants,
        &mut show_progress(&bar),
    )?;
    bar.finish_and_clear();
    let terms = measured.terms(&inventory.name, &inventory.layers);
    ms.extend(measured.measurements);
    Ok(Calibrated {
        terms,
        ms,
        variants: measured.variants,
        opts,
    })
}

/// `hardware-profiles/calibrated-<host>.toml`.
fn default_out() -> PathBuf {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this-machine".into());
    PathBuf::from("hardware-profiles").join(format!("calibrated-{host}.toml"))
}

/// Says what will be measured, then measures it with a progress bar.
fn measure(opts: &CalibrateOptions, batch: u32) -> anyhow::Result<Vec<Measurement>> {
    let shapes: Vec<String> = opts.shapes.iter().map(|s| s.shape_string()).collect();
    eprintln!(
        "measuring {} shapes ({}) at batch 1 and {batch} with {} kernels, up to {} repetitions each",
        opts.shapes.len(),
        shapes.join(", "),
        opts.kernels.len(),
        opts.repetitions
    );
    let bar = measure_bar();
    let ms = calibrate::measure(opts, &mut show_progress(&bar))?;
    bar.finish_and_clear();
    Ok(ms)
}

/// The measurements' table, the GGML formats' rates, and where the profile went.
fn report(ms: &[Measurement], file: &ProfileFile, out: &Path, name: String) -> String {
    let mut report = calibrate::table(ms);
    report.push_str(&format!(
        "\nGGML formats, GMAC/s ([ggml]): {}\n",
        file.ggml
            .iter()
            .map(|(g, rate)| format!("{g} {}", rate.get_ref()))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if let Some(c) = &file.calibration {
        report.push_str(&format!(
            "no fast kernel here (slower than f32 at batch 1): {}\n",
            if c.slow_kernels.is_empty() {
                "none".into()
            } else {
                c.slow_kernels.join(", ")
            }
        ));
    }
    for t in &file.model {
        report.push_str(&format!(
            "non-matmul work of `{}` at cost batch {}: {} ({})\n",
            t.name,
            t.batch,
            mpsearch::cost::model::format_us(t.us),
            t.input.as_deref().unwrap_or("")
        ));
        let spills: Vec<String> = t
            .spill_us
            .iter()
            .filter(|(_, &us)| us != 0.0)
            .map(|(p, &us)| format!("{p} {us:+.1} µs"))
            .collect();
        if !spills.is_empty() {
            report.push_str(&format!(
                "  spill per layer on a kernel (charged on top of its own time): {}\n",
                spills.join(", ")
            ));
        }
    }
    report.push_str(&format!(
        "\nwrote {} (use it as --profile {})\n",
        out.display(),
        if out.parent() == Some(Path::new("hardware-profiles")) {
            name
        } else {
            out.display().to_string()
        }
    ));
    report
}
