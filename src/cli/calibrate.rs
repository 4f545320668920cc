//! # `calibrate`
//!
//! This machine's candle CPU kernels measured on a model's layer shapes (or a standard grid), written
//! atomically as a hardware profile that loads back, with a table of the measurements.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use mpsearch::cost::calibrate::{self, CalibrateOptions, Measurement};
use mpsearch::cost::profile::ProfileFile;
use mpsearch::cost::HardwareProfile;

use super::args::CalibrateArgs;
use super::output::{emit, measure_bar};
use super::setup::load_model;

pub fn run(a: CalibrateArgs) -> anyhow::Result<ExitCode> {
    a.check()?;
    let mut opts = match &a.model {
        Some(m) => CalibrateOptions::for_layers(&load_model(m)?.layers),
        None => CalibrateOptions::standard_grid(),
    };
    opts.repetitions = a.repetitions;
    opts.batches = vec![1, a.batch];
    let out = a.out.clone().unwrap_or_else(default_out);
    let name = a.name.clone().unwrap_or_else(|| {
        out.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "calibrated".into())
    });
    let ms = measure(&opts, a.batch)?;
    let file = calibrate::to_profile(&ms, &opts, &name)?;
    let text = toml::to_string_pretty(&file).context("serialising the profile")?;
    // Check that what we write loads back before writing it.
    HardwareProfile::from_toml(&text, &out)?;
    mpsearch::fs::write_atomic(&out, text.as_bytes())?;
    emit(&report(&ms, &file, &out, name))
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
    let ms = calibrate::measure(opts, &mut |done, total, what| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(what.to_string());
    })?;
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
