//! The two plots that say how far to trust the search: the hypervolume after each trial (this run
//! and every comparable run of the store, by strategy), and the sensitivity model's predicted
//! quality against the measured one, with its rank correlation in the title.

use std::ops::Range;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::axes::{short, QualityAxis};
use super::{centred_note, frame, mesh_style, plotters_error as pe, FRONT, PALETTE};
use crate::error::Result;
use crate::report::data::{HypervolumeSeries, ReportData};

/// What the hypervolume plot's x axis counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Along {
    /// Trials.
    Trials,
    /// Model evaluations computed, the set-up's included (what a search pays for).
    Evaluations,
}

pub fn hypervolume<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    d: &ReportData,
    along: Along,
) -> Result<()> {
    let x = |s: &HypervolumeSeries, k: usize| match along {
        Along::Trials => (k + 1) as f64,
        Along::Evaluations => s.evaluations.get(k).copied().unwrap_or(0.0),
    };
    let n = d
        .hypervolume
        .iter()
        .filter_map(|s| s.values.len().checked_sub(1).map(|k| x(s, k)))
        .fold(1.0, f64::max);
    let mut chart = frame(area, hypervolume_caption(d, along))
        .build_cartesian_2d(0.0..n, hypervolume_range(d))
        .map_err(pe)?;
    let y_tick = |v: &f64| short(*v);
    let x_tick = |v: &f64| format!("{v:.0}");
    mesh_style(&mut chart.configure_mesh())
        .x_desc(match along {
            Along::Trials => "trials",
            Along::Evaluations => "model evaluations (set-up, baselines and trials)",
        })
        .y_desc(format!(
            "hypervolume of the front (normalised; {} profile)",
            d.profile
        ))
        .y_label_formatter(&y_tick)
        .x_label_formatter(&x_tick)
        .draw()
        .map_err(pe)?;
    for (i, s) in d.hypervolume.iter().enumerate() {
        let (colour, width) = if s.current {
            (FRONT, 4)
        } else {
            (PALETTE[1 + (i - 1) % (PALETTE.len() - 1)], 2)
        };
        let pts: Vec<(f64, f64)> = s
            .values
            .iter()
            .enumerate()
            .map(|(k, v)| (x(s, k), *v))
            .collect();
        let label = match along {
            Along::Evaluations if !s.counted => {
                format!("{} (set-up not counted)", series_label(s))
            }
            _ => series_label(s),
        };
        chart
            .draw_series(LineSeries::new(pts, colour.stroke_width(width)))
            .map_err(pe)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new([(x - 14, y), (x + 14, y)], colour.stroke_width(width))
            });
    }
    super::legend(&mut chart, SeriesLabelPosition::LowerRight)
}

/// The hypervolume plot's title: this run, and how many comparable runs are drawn with it.
fn hypervolume_caption(d: &ReportData, along: Along) -> String {
    let after = match along {
        Along::Trials => "Hypervolume after each trial",
        Along::Evaluations => "Hypervolume against model evaluations",
    };
    if d.hypervolume.len() > 1 {
        let n = d.hypervolume.len() - 1;
        let s = if n == 1 { "" } else { "s" };
        format!("{after}: run {} and {n} comparable run{s}", d.run)
    } else {
        format!("{after}: run {}", d.run)
    }
}

/// The hypervolume axis, zoomed on the values (after the first point is found) so that strategies can
/// be told apart, within [0, 1].
fn hypervolume_range(d: &ReportData) -> Range<f64> {
    let values = d
        .hypervolume
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .filter(|v| *v > 0.0);
    let y = super::axes::padded(values, 0.08);
    y.start.max(0.0)..y.end.min(1.0).max(y.start.max(0.0) + 1e-3)
}

/// A run's legend entry: its name, strategy and final hypervolume.
fn series_label(s: &HypervolumeSeries) -> String {
    let last = short(s.values.last().copied().unwrap_or(0.0));
    if s.current {
        format!("{} ({}) — this run: {last}", s.run, s.strategy)
    } else {
        format!("{} ({}): {last}", s.run, s.strategy)
    }
}

pub fn sensitivity<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    d: &ReportData,
) -> Result<()> {
    let Some(fit) = d.sensitivity.as_ref().filter(|f| !f.pairs.is_empty()) else {
        return centred_note(
            area,
            "Sensitivity model: no predicted-vs-measured pairs for this run (see the notes)",
        );
    };
    let values = fit.pairs.iter().flat_map(|p| [p.predicted, p.measured]);
    let axis = QualityAxis::new(values);
    let r = axis.range();
    let rho = fit
        .spearman
        .map_or("n/a".to_string(), |s| format!("{s:.3}"));
    let caption = format!("Predicted vs measured quality: Spearman ρ = {rho}");
    let mut chart = frame(area, caption)
        .build_cartesian_2d(r.clone(), r.clone())
        .map_err(pe)?;
    let tick = |v: &f64| axis.tick(*v);
    mesh_style(&mut chart.configure_mesh())
        .x_desc(axis_title(&axis, "predicted", &d.quality.label))
        .y_desc(axis_title(&axis, "measured", &d.quality.label))
        .x_labels(axis.ticks())
        .y_labels(axis.ticks())
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .draw()
        .map_err(pe)?;
    chart
        .draw_series(DashedLineSeries::new(
            [(r.start, r.start), (r.end, r.end)],
            8,
            6,
            BLACK.mix(0.5).stroke_width(2),
        ))
        .map_err(pe)?
        .label("predicted = measured")
        .legend(|(x, y)| {
            PathElement::new([(x - 12, y), (x + 12, y)], BLACK.mix(0.5).stroke_width(2))
        });
    chart
        .draw_series(fit.pairs.iter().map(|p| {
            Circle::new(
                (axis.y(p.predicted), axis.y(p.measured)),
                5,
                FRONT.mix(0.6).filled(),
            )
        }))
        .map_err(pe)?
        .label(format!(
            "{} trials (the model was fitted to {} one-at-a-time measurements)",
            fit.pairs.len(),
            fit.measurements
        ))
        .legend(|(x, y)| Circle::new((x, y), 5, FRONT.mix(0.6).filled()));
    super::legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

fn axis_title(axis: &QualityAxis, what: &str, label: &str) -> String {
    if axis.log {
        format!("{what} {label} (log scale)")
    } else {
        format!("{what} {label}")
    }
}
