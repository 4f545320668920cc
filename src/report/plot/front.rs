//! The Pareto plot: quality against the run's cost, the front numbered as in the report's table,
//! each front point's held-out quality as a ring joined to it, dominated points faint, points outside
//! the limits crossed out, baselines labelled, limits dashed.

use std::ops::Range;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::axes::{place_labels, CostAxis, QualityAxis, Rect};
use super::{
    centred_note, frame, mesh_style, plotters_error as pe, text, BASELINE, DOMINATED, FRONT,
    HELD_OUT, LIMIT, POINT_LABEL,
};
use crate::cost::model::format_bytes;
use crate::cost::{Cost, Objective};
use crate::error::Result;
use crate::report::data::{PointStatus, ReportData};

/// A recovered variant's marker and arrow (`mpsearch recover`).
const RECOVERED: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);

/// Radius of a front point's marker.
const FRONT_RADIUS: i32 = 7;

/// A chart on linear data coordinates (the axes' own scales map values to them).
type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The plot's scales (cost along x, quality along y) and the data ranges they span.
struct Axes {
    cost: CostAxis,
    quality: QualityAxis,
    x: Range<f64>,
    y: Range<f64>,
}

impl Axes {
    /// Axes that show every point, baseline and limit of `d`.
    fn new(d: &ReportData) -> Axes {
        let o = d.objective;
        let raw_costs = d
            .points
            .iter()
            .map(|p| o.of(&p.cost))
            .chain(d.baselines.iter().map(|b| o.of(&b.cost)))
            .chain(d.limits.on(o));
        let cost = CostAxis::new(o, raw_costs.clone().fold(0.0, f64::max));
        let quality = QualityAxis::new(
            d.points
                .iter()
                .map(|p| p.quality)
                .chain(
                    d.front
                        .iter()
                        .filter_map(|f| Some(f.held_out.as_ref()?.quality)),
                )
                .chain(
                    d.front
                        .iter()
                        .filter_map(|f| Some(f.recovered.as_ref()?.quality)),
                )
                .chain(d.baselines.iter().map(|b| b.quality))
                .chain(d.limits.max_drop),
        );
        let x = CostAxis::range(raw_costs.map(|c| cost.value(c)));
        let y = quality.range();
        Axes {
            cost,
            quality,
            x,
            y,
        }
    }

    /// Where a point of this cost and quality is drawn.
    fn at(&self, cost: &Cost, quality: f64) -> (f64, f64) {
        (self.cost.of(cost), self.quality.y(quality))
    }
}

pub fn draw<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, d: &ReportData) -> Result<()> {
    let axes = Axes::new(d);
    let mut chart = chart(area, d, &axes)?;
    let front: Vec<(f64, f64)> = d
        .front
        .iter()
        .map(|f| axes.at(&f.cost, f.quality))
        .collect();
    draw_other_trials(&mut chart, d, &axes)?;
    draw_held_out(&mut chart, d, &axes)?;
    draw_front(&mut chart, &front)?;
    draw_recovered(&mut chart, d, &axes)?;
    let baselines: Vec<(f64, f64)> = d
        .baselines
        .iter()
        .map(|b| axes.at(&b.cost, b.quality))
        .collect();
    draw_baselines(&mut chart, &baselines)?;
    draw_limits(&mut chart, d, &axes)?;
    draw_labels(area, &chart, &labels(d, &axes, &front, &baselines))?;
    if d.points.is_empty() {
        centred_note(area, "no evaluated trial yet")?;
    }
    super::legend(&mut chart, SeriesLabelPosition::UpperRight)
}

/// The chart with its caption, axis titles, ticks and grid.
fn chart<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    d: &ReportData,
    axes: &Axes,
) -> Result<Chart<'a, DB>> {
    let mut chart = frame(area, caption(d))
        .build_cartesian_2d(axes.x.clone(), axes.y.clone())
        .map_err(pe)?;
    let x_title = axes.cost.title(&d.profile);
    let y_title = axes.quality.title(&d.quality.label);
    let y_tick = |v: &f64| axes.quality.tick(*v);
    let x_tick = |v: &f64| super::axes::short(*v);
    mesh_style(&mut chart.configure_mesh())
        .x_desc(x_title)
        .y_desc(y_title)
        .y_labels(axes.quality.ticks())
        .y_label_formatter(&y_tick)
        .x_label_formatter(&x_tick)
        .draw()
        .map_err(pe)?;
    Ok(chart)
}

/// The trials off the front: dominated ones faint, those outside the limits crossed out.
fn draw_other_trials<DB: DrawingBackend>(
    chart: &mut Chart<DB>,
    d: &ReportData,
    axes: &Axes,
) -> Result<()> {
    let of = |s: PointStatus| -> Vec<(f64, f64)> {
        d.points
            .iter()
            .filter(|p| p.status == s)
            .map(|p| axes.at(&p.cost, p.quality))
            .collect()
    };
    let dominated = of(PointStatus::Dominated);
    let infeasible = of(PointStatus::Infeasible);
    if !dominated.is_empty() {
        chart
            .draw_series(
                dominated
                    .iter()
                    .map(|&p| Circle::new(p, 4, DOMINATED.mix(0.35).filled())),
            )
            .map_err(pe)?
            .label(format!("dominated ({})", dominated.len()))
            .legend(|(x, y)| Circle::new((x, y), 4, DOMINATED.mix(0.5).filled()));
    }
    if !infeasible.is_empty() {
        chart
            .draw_series(
                infeasible
                    .iter()
                    .map(|&p| Cross::new(p, 5, LIMIT.mix(0.6).stroke_width(2))),
            )
            .map_err(pe)?
            .label(format!("outside the limits ({})", infeasible.len()))
            .legend(|(x, y)| Cross::new((x, y), 5, LIMIT.mix(0.6).stroke_width(2)));
    }
    Ok(())
}

/// The front: its attainment line and its points.
fn draw_front<DB: DrawingBackend>(chart: &mut Chart<DB>, front: &[(f64, f64)]) -> Result<()> {
    if front.is_empty() {
        return Ok(());
    }
    chart
        .draw_series(LineSeries::new(
            staircase(front),
            FRONT.mix(0.6).stroke_width(2),
        ))
        .map_err(pe)?;
    chart
        .draw_series(
            front
                .iter()
                .map(|&p| Circle::new(p, FRONT_RADIUS, FRONT.filled())),
        )
        .map_err(pe)?
        .label(format!(
            "front ({} points, numbered as in the table)",
            front.len()
        ))
        .legend(|(x, y)| Circle::new((x, y), FRONT_RADIUS, FRONT.filled()));
    Ok(())
}

/// Each front point's held-out quality: a ring at (cost, held-out quality), joined to the point.
fn draw_held_out<DB: DrawingBackend>(
    chart: &mut Chart<DB>,
    d: &ReportData,
    axes: &Axes,
) -> Result<()> {
    let pairs: Vec<((f64, f64), (f64, f64))> = d
        .front
        .iter()
        .filter_map(|f| {
            let h = f.held_out.as_ref()?;
            Some((axes.at(&f.cost, f.quality), axes.at(&f.cost, h.quality)))
        })
        .collect();
    if pairs.is_empty() {
        return Ok(());
    }
    for &(search, held) in &pairs {
        chart
            .draw_series(LineSeries::new(
                [search, held],
                HELD_OUT.mix(0.5).stroke_width(1),
            ))
            .map_err(pe)?;
    }
    chart
        .draw_series(
            pairs
                .iter()
                .map(|&(_, h)| Circle::new(h, FRONT_RADIUS - 1, HELD_OUT.stroke_width(2))),
        )
        .map_err(pe)?
        .label(format!(
            "held-out quality of front points ({})",
            pairs.len()
        ))
        .legend(|(x, y)| Circle::new((x, y), FRONT_RADIUS - 1, HELD_OUT.stroke_width(2)));
    Ok(())
}

/// Each front point's recovered variant (search quality after fine-tuning, same cost): a line
/// from the point to a green dot.
fn draw_recovered<DB: DrawingBackend>(
    chart: &mut Chart<DB>,
    d: &ReportData,
    axes: &Axes,
) -> Result<()> {
    let pairs: Vec<((f64, f64), (f64, f64))> = d
        .front
        .iter()
        .filter_map(|f| {
            let r = f.recovered.as_ref()?;
            Some((axes.at(&f.cost, f.quality), axes.at(&f.cost, r.quality)))
        })
        .collect();
    if pairs.is_empty() {
        return Ok(());
    }
    for &(before, after) in &pairs {
        chart
            .draw_series(LineSeries::new(
                [before, after],
                RECOVERED.mix(0.8).stroke_width(2),
            ))
            .map_err(pe)?;
    }
    chart
        .draw_series(
            pairs
                .iter()
                .map(|&(_, after)| Circle::new(after, FRONT_RADIUS - 2, RECOVERED.filled())),
        )
        .map_err(pe)?
        .label(format!(
            "recovered (fine-tuned) front points ({}): before → after",
            pairs.len()
        ))
        .legend(|(x, y)| Circle::new((x, y), FRONT_RADIUS - 2, RECOVERED.filled()));
    Ok(())
}

/// The uniform baselines' markers.
fn draw_baselines<DB: DrawingBackend>(
    chart: &mut Chart<DB>,
    baselines: &[(f64, f64)],
) -> Result<()> {
    if baselines.is_empty() {
        return Ok(());
    }
    chart
        .draw_series(
            baselines
                .iter()
                .map(|&p| TriangleMarker::new(p, 9, BASELINE.filled())),
        )
        .map_err(pe)?
        .label("uniform baselines")
        .legend(|(x, y)| TriangleMarker::new((x, y), 9, BASELINE.filled()));
    Ok(())
}

/// The cost limit (vertical) and the quality limit (horizontal), dashed.
fn draw_limits<DB: DrawingBackend>(
    chart: &mut Chart<DB>,
    d: &ReportData,
    axes: &Axes,
) -> Result<()> {
    let o = d.objective;
    let (xr, yr) = (&axes.x, &axes.y);
    if let Some(l) = d.limits.on(o) {
        let x = axes.cost.value(l);
        chart
            .draw_series(DashedLineSeries::new(
                [(x, yr.start), (x, yr.end)],
                10,
                6,
                LIMIT.stroke_width(2),
            ))
            .map_err(pe)?
            .label(format!("max {o} {}", limit_text(o, l)))
            .legend(|(x, y)| PathElement::new([(x - 12, y), (x + 12, y)], LIMIT.stroke_width(2)));
    }
    if let Some(m) = d.limits.max_drop {
        let y = axes.quality.y(m);
        chart
            .draw_series(DashedLineSeries::new(
                [(xr.start, y), (xr.end, y)],
                10,
                6,
                LIMIT.mix(0.7).stroke_width(2),
            ))
            .map_err(pe)?
            .label(format!("max {} {}", d.quality.name, super::axes::short(m)))
            .legend(|(x, y)| {
                PathElement::new([(x - 12, y), (x + 12, y)], LIMIT.mix(0.7).stroke_width(2))
            });
    }
    Ok(())
}

/// The numbers of the front points and the names of the baselines (text, data point, colour).
fn labels(
    d: &ReportData,
    axes: &Axes,
    front: &[(f64, f64)],
    baselines: &[(f64, f64)],
) -> Vec<(String, (f64, f64), RGBColor)> {
    let mut labels: Vec<(String, (f64, f64), RGBColor)> = front
        .iter()
        .enumerate()
        .map(|(i, &p)| ((i + 1).to_string(), p, FRONT))
        .collect();
    for (b, &p) in d.baselines.iter().zip(baselines) {
        let name = if b.quality <= 0.0 && axes.quality.log {
            format!("{} (0)", b.label)
        } else {
            b.label.clone()
        };
        labels.push((name, p, BASELINE));
    }
    labels
}

fn caption(d: &ReportData) -> String {
    let cost = match d.objective {
        // Size and BOPs do not depend on the device: no profile in the title.
        Objective::Latency => format!("latency on {}", d.profile),
        Objective::Size => "size".to_string(),
        Objective::Bops => "BOPs".to_string(),
    };
    match (&d.recosted_from, d.objective) {
        (Some(from), Objective::Latency) => format!(
            "Run {}: quality vs {cost} (re-costed; searched on {from})",
            d.run
        ),
        _ => format!("Run {}: quality vs {cost}", d.run),
    }
}

/// A limit in its unit (bytes as KiB/MiB, latency as µs/ms).
fn limit_text(o: Objective, v: f64) -> String {
    match o {
        Objective::Size => format_bytes(v),
        _ => o.format(v),
    }
}

/// The front's attainment line: from each point across to the next one's cost, then down.
fn staircase(front: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(2 * front.len());
    for (i, &p) in front.iter().enumerate() {
        out.push(p);
        if let Some(n) = front.get(i + 1) {
            out.push((n.0, p.1));
        }
    }
    out
}

/// Draws `labels` (text, data point, colour) next to their points, clear of each other and of the
/// front's markers.
fn draw_labels<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    chart: &Chart<DB>,
    labels: &[(String, (f64, f64), RGBColor)],
) -> Result<()> {
    let style = text(POINT_LABEL);
    let anchors: Vec<(i32, i32)> = labels.iter().map(|l| chart.backend_coord(&l.1)).collect();
    let sizes = labels
        .iter()
        .map(|l| {
            area.estimate_text_size(&l.0, &style)
                .map(|(w, h)| (w as i32, h as i32))
                .map_err(pe)
        })
        .collect::<Result<Vec<_>>>()?;
    let avoid: Vec<Rect> = anchors
        .iter()
        .map(|&(x, y)| {
            (
                x - FRONT_RADIUS,
                y - FRONT_RADIUS,
                2 * FRONT_RADIUS,
                2 * FRONT_RADIUS,
            )
        })
        .collect();
    let (xs, ys) = chart.plotting_area().get_pixel_range();
    let (ox, oy) = area.get_base_pixel();
    let bounds = (
        xs.start - ox,
        ys.start - oy,
        xs.end - xs.start,
        ys.end - ys.start,
    );
    let local: Vec<(i32, i32)> = anchors.iter().map(|&(x, y)| (x - ox, y - oy)).collect();
    let avoid: Vec<Rect> = avoid
        .iter()
        .map(|r| (r.0 - ox, r.1 - oy, r.2, r.3))
        .collect();
    let spots = place_labels(&local, &sizes, &avoid, bounds);
    for ((label, _, colour), spot) in labels.iter().zip(spots) {
        area.draw(&Text::new(label.as_str(), spot, style.color(colour)))
            .map_err(pe)?;
    }
    Ok(())
}
