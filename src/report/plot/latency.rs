//! The measured end-to-end latency of a run's points against the predicted one: one panel per
//! setting (machine and batch size), both axes on a log scale in the same unit, the line
//! predicted = measured, each point's interquartile range as a bar, the all-f32 reference as a
//! triangle, front points numbered as in the page's table, and the MAPE and Spearman's ρ in the
//! panel's title.

use std::ops::Range;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::axes::short;
use super::{centred_note, frame, mesh_style, plotters_error as pe, text, BASELINE, FRONT};
use crate::error::Result;
use crate::report::data::{LatencyPanel, ReportData};

/// Pixel height of one panel.
pub const PANEL_HEIGHT: u32 = 760;

pub fn draw<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, d: &ReportData) -> Result<()> {
    if d.latency.is_empty() {
        return centred_note(
            area,
            "Latency: this run has no measurements (mpsearch measure RUN)",
        );
    }
    let panels = area.split_evenly((d.latency.len(), 1));
    for (panel, data) in panels.iter().zip(&d.latency) {
        draw_panel(panel, data)?;
    }
    Ok(())
}

/// The display unit of latencies up to `max` µs: µs below 2 ms, else ms.
fn unit(max: f64) -> (f64, &'static str) {
    if max < 2e3 {
        (1.0, "µs")
    } else {
        (1e3, "ms")
    }
}

/// A log range holding every value, widened by 15 % on each side (a decade around a single value).
fn log_range(values: impl Iterator<Item = f64>) -> Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return 1.0..10.0;
    }
    if hi / lo < 1.5 {
        let mid = (lo * hi).sqrt();
        return mid / 1.5..mid * 1.5;
    }
    lo / 1.15..hi * 1.15
}

/// Tick values for a log axis over `r`: decades, or 1-3, 1-2-5 … steps within them, down to steps
/// of a tenth of the decade's first value, the coarsest that gives at least 4 ticks (plotters' own
/// log ticks leave a range under a decade nearly bare).
pub fn log_ticks(r: &Range<f64>) -> Vec<f64> {
    if !(r.start > 0.0 && r.end > r.start) {
        return Vec::new();
    }
    let fixed: [&[f64]; 5] = [
        &[1.0],
        &[1.0, 3.0],
        &[1.0, 2.0, 5.0],
        &[1.0, 1.5, 2.0, 3.0, 5.0, 7.0],
        &[1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
    ];
    // Then every 0.5, 0.2 and 0.1 from 1 to 10.
    let even = |step: f64| -> Vec<f64> {
        (0..)
            .map(|i| 1.0 + step * f64::from(i))
            .take_while(|m| *m < 10.0 - 1e-9)
            .map(|m| (m * 10.0).round() / 10.0)
            .collect()
    };
    let evens = [even(0.5), even(0.2), even(0.1)];
    let ticks = |mantissas: &[f64]| -> Vec<f64> {
        let (lo, hi) = (r.start.log10().floor() as i32, r.end.log10().ceil() as i32);
        (lo..=hi)
            .flat_map(|k| mantissas.iter().map(move |m| m * 10f64.powi(k)))
            .filter(|v| *v >= r.start && *v <= r.end)
            .collect()
    };
    let mut last = Vec::new();
    for m in fixed.into_iter().chain(evens.iter().map(Vec::as_slice)) {
        last = ticks(m);
        if last.len() >= 4 {
            break;
        }
    }
    last
}

/// The panel's title: the setting, the MAPE and Spearman's ρ.
pub fn title(p: &LatencyPanel) -> String {
    match &p.fidelity {
        Some(f) => format!(
            "Latency, {}: MAPE {:.1} %, Spearman ρ {} ({} points)",
            p.setting,
            f.mape_percent,
            f.spearman.map_or("n/a".into(), |s| format!("{s:.3}")),
            f.points
        ),
        None => format!("Latency, {}: no usable measurement", p.setting),
    }
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &LatencyPanel) -> Result<()> {
    let max = p
        .points
        .iter()
        .flat_map(|x| [x.predicted_us, x.measured_us + x.spread_us])
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let (scale, unit) = unit(max);
    let r = log_range(p.points.iter().flat_map(|x| {
        [
            x.predicted_us / scale,
            x.measured_us / scale,
            (x.measured_us + x.spread_us) / scale,
        ]
    }));
    let ticks = log_ticks(&r);
    let mut chart = frame(area, title(p))
        .build_cartesian_2d(
            r.clone().log_scale().with_key_points(ticks.clone()),
            r.clone().log_scale().with_key_points(ticks),
        )
        .map_err(pe)?;
    let tick = |v: &f64| short(*v);
    mesh_style(&mut chart.configure_mesh())
        .x_desc(format!(
            "predicted latency on {} ({unit}, log scale)",
            p.profile
        ))
        .y_desc(format!(
            "measured latency on {} ({unit}, log scale)",
            p.setting.host
        ))
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
    let at = |v: f64| (v / scale).clamp(r.start, r.end);
    // The spread as a vertical bar above each figure (a fastest pass: nothing runs faster).
    chart
        .draw_series(p.points.iter().map(|x| {
            let lo = at(x.measured_us);
            let hi = at(x.measured_us + x.spread_us);
            PathElement::new(
                [(at(x.predicted_us), lo), (at(x.predicted_us), hi)],
                FRONT.mix(0.5).stroke_width(2),
            )
        }))
        .map_err(pe)?;
    let points = p.points.iter().filter(|x| !x.reference);
    chart
        .draw_series(points.clone().map(|x| {
            Circle::new(
                (at(x.predicted_us), at(x.measured_us)),
                6,
                FRONT.mix(0.7).filled(),
            )
        }))
        .map_err(pe)?
        .label(format!(
            "{} measured points (fastest pass; bar: interquartile range of a round, above it)",
            points.clone().count()
        ))
        .legend(|(x, y)| Circle::new((x, y), 6, FRONT.mix(0.7).filled()));
    chart
        .draw_series(p.points.iter().filter_map(|x| {
            let k = x.point?;
            Some(
                EmptyElement::at((at(x.predicted_us), at(x.measured_us)))
                    + Text::new(k.to_string(), (8, -20), text(super::POINT_LABEL)),
            )
        }))
        .map_err(pe)?;
    let reference: Vec<_> = p.points.iter().filter(|x| x.reference).collect();
    if !reference.is_empty() {
        chart
            .draw_series(reference.iter().map(|x| {
                TriangleMarker::new(
                    (at(x.predicted_us), at(x.measured_us)),
                    9,
                    BASELINE.filled(),
                )
            }))
            .map_err(pe)?
            .label("all-f32 (the reference of the speed-ups)")
            .legend(|(x, y)| TriangleMarker::new((x, y), 9, BASELINE.filled()));
    }
    // The legend goes in the corner the points leave free: above the diagonal when most are below.
    let above = p
        .points
        .iter()
        .filter(|x| x.measured_us > x.predicted_us)
        .count();
    let corner = if 2 * above > p.points.len() {
        SeriesLabelPosition::LowerRight
    } else {
        SeriesLabelPosition::UpperLeft
    };
    super::legend(&mut chart, corner)
}
