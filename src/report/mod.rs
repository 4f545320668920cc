//! # Reports
//!
//! What a person looks at in the morning: the Pareto front of a run as a picture that answers "which
//! point do I ship, and what does it cost me", with the per-layer allocation of every front point,
//! the hypervolume over trials of this run and of comparable ones, how well the sensitivity model
//! predicted the measured qualities, and — once `mpsearch measure` has timed some of its points — how
//! well the cost model predicted their measured latency.
//!
//! Data first, drawing second ([`data`]): the report's plain data is built from the stored trials,
//! the evaluation cache (search and held-out qualities) and the model's layer shapes — never by
//! evaluating anything —, and can be re-costed under another hardware profile. (The `report` command
//! first completes missing held-out evaluations through [`crate::search::held_out`], then builds the
//! report from the store.) Then [`plot`] draws it with plotters to SVG and PNG
//! (with an embedded font) and [`html`] writes one self-contained page. This module is the only one
//! that touches plotters. Exports of a chosen point are [`crate::export`]'s.

pub mod data;
pub mod html;
pub mod plot;

use std::path::{Path, PathBuf};

pub use self::data::{load, ReportData};
use self::plot::Plot;
use crate::error::{Error, Result};

/// The folder reports go to by default: `mpsearch-reports/<run>/`, or `mpsearch-reports/<run>@<profile>/`
/// for a report re-costed under another profile.
pub fn default_dir(data: &ReportData) -> PathBuf {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c == '/' || c == '\\' || c.is_control() {
                    '-'
                } else {
                    c
                }
            })
            .collect()
    };
    let name = match &data.recosted_from {
        Some(_) => format!("{}@{}", clean(&data.run), clean(&data.profile)),
        None => clean(&data.run),
    };
    Path::new("mpsearch-reports").join(name)
}

/// Draws every plot of `data` into `dir` (SVG and PNG) and writes `dir/index.html`; returns its path.
/// Every file is written to a temporary name and renamed, so a reader never sees half a file.
pub fn write(data: &ReportData, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut images = Vec::new();
    for p in Plot::ALL.into_iter().filter(|p| p.applies(data)) {
        let svg = p.svg(data)?;
        crate::fs::write_atomic(&dir.join(format!("{}.svg", p.name())), svg.as_bytes())?;
        let png_path = dir.join(format!("{}.png", p.name()));
        let tmp = dir.join(format!(".{}.tmp.png", p.name()));
        // plotters' bitmap backend writes a file itself: draw to a scratch file, then publish its
        // bytes through the one atomic write.
        p.png(data, &tmp)?;
        let png = std::fs::read(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let _ = std::fs::remove_file(&tmp);
        crate::fs::write_atomic(&png_path, &png)?;
        images.push(html::Image {
            name: p.name(),
            caption: caption(p, data),
            png,
        });
    }
    let index = dir.join("index.html");
    crate::fs::write_atomic(&index, html::page(data, &images).as_bytes())?;
    Ok(index)
}

/// What a plot shows, in a sentence (the figure's caption and alt text).
fn caption(p: Plot, d: &ReportData) -> String {
    match p {
        Plot::Front => format!(
            "Quality ({}) against {} on {}: front points numbered as in the table (quality on the \
             search split), their held-out qualities as rings, dominated points faint, points outside \
             the limits crossed, uniform baselines as triangles, limits dashed.",
            d.quality.name, d.objective, d.profile
        ),
        Plot::Allocation => "Per-layer choice of every front point: colour = weight format, text and \
                             marks = sparsity, low rank and activation quantization."
            .into(),
        Plot::Hypervolume => format!(
            "Normalised hypervolume after each trial, for this run and every comparable run of the \
             store (same model, data, space, profile, objective and limits), under {}.",
            d.profile
        ),
        Plot::HypervolumeEvaluations => format!(
            "The same hypervolume against the model evaluations computed (the set-up's one-at-a-time \
             measurements and the baselines included, a proxy evaluation counted as its share of a full \
             one, the cache's answers free): what the search paid for its front, under {}.",
            d.profile
        ),
        Plot::Sensitivity => "The sensitivity model's predicted quality of each evaluated trial \
                              against the measured one; Spearman's ρ in the title."
            .into(),
        Plot::Latency => format!(
            "Measured end-to-end latency on this machine (mpsearch measure) against the latency \
             predicted on {}, one panel per machine and batch size, log scales: MAPE and Spearman's \
             ρ in each title, the all-f32 reference as a triangle, front points numbered.",
            d.latency
                .first()
                .map_or(d.profile.as_str(), |p| p.profile.as_str())
        ),
    }
}

#[cfg(test)]
mod tests;
