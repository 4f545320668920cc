//! Drawing the report data with plotters, each plot to SVG and PNG. Text is set in the embedded
//! DejaVu Sans (registered once with plotters' `ab_glyph` renderer), so PNGs render the same on a
//! machine without any font installed; SVGs name `sans-serif` and let the viewer pick.
//!
//! Each plot is one function generic over the backend ([`Plot::draw`]); [`Plot::svg`] and
//! [`Plot::png`] run it on the SVG and bitmap backends.

mod allocation;
mod axes;
mod front;
mod glyphs;
pub mod latency;
mod trends;

use std::path::Path;
use std::sync::OnceLock;

use plotters::chart::MeshStyle;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::data::ReportData;
use crate::error::{Error, Result};

/// The font family every plot uses (registered under this name).
const FONT: &str = "sans-serif";
const REGULAR: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");
const BOLD: &[u8] = include_bytes!("../fonts/DejaVuSans-Bold.ttf");

/// Text sizes in pixels.
const TITLE: u32 = 26;
const AXIS_TITLE: u32 = 20;
const TICKS: u32 = 16;
const LEGEND: u32 = 16;
const POINT_LABEL: u32 = 15;

/// Colours: the front, the baselines, limits, and a palette for several runs.
const FRONT: RGBColor = RGBColor(31, 119, 180);
const BASELINE: RGBColor = RGBColor(214, 106, 0);
const LIMIT: RGBColor = RGBColor(200, 30, 30);
const DOMINATED: RGBColor = RGBColor(120, 120, 120);
/// Front points' qualities on the held-out split.
const HELD_OUT: RGBColor = RGBColor(148, 103, 189);
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 106, 0),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(23, 190, 207),
];

/// Registers the embedded fonts with plotters, once per process.
fn fonts() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        for (style, bytes) in [(FontStyle::Normal, REGULAR), (FontStyle::Bold, BOLD)] {
            plotters::style::register_font(FONT, style, bytes)
                .map_err(|_| "the embedded DejaVu Sans font could not be read".to_string())?;
        }
        Ok(())
    })
    .clone()
    .map_err(Error::report)
}

/// The plots of a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plot {
    /// Quality against the chosen cost: the front, dominated and infeasible points, baselines, limits.
    Front,
    /// The choice of every layer in every front point.
    Allocation,
    /// Hypervolume after each trial, one line per comparable run.
    Hypervolume,
    /// The same against model evaluations, the set-up's included.
    HypervolumeEvaluations,
    /// The sensitivity model's predicted quality against the measured one.
    Sensitivity,
    /// Measured end-to-end latency against the predicted one (runs with measurements only).
    Latency,
}

impl Plot {
    pub const ALL: [Plot; 6] = [
        Plot::Front,
        Plot::Allocation,
        Plot::Hypervolume,
        Plot::HypervolumeEvaluations,
        Plot::Sensitivity,
        Plot::Latency,
    ];

    /// Whether a report of `data` has this plot: the latency plot only when the run has
    /// measurements, every other plot always.
    pub fn applies(self, data: &ReportData) -> bool {
        self != Plot::Latency || !data.latency.is_empty()
    }

    /// The file stem (`front` → `front.svg`, `front.png`).
    pub fn name(self) -> &'static str {
        match self {
            Plot::Front => "front",
            Plot::Allocation => "allocation",
            Plot::Hypervolume => "hypervolume",
            Plot::HypervolumeEvaluations => "hypervolume-evaluations",
            Plot::Sensitivity => "sensitivity",
            Plot::Latency => "latency",
        }
    }

    /// Pixel size for `data`.
    pub fn size(self, data: &ReportData) -> (u32, u32) {
        match self {
            Plot::Front => (1200, 760),
            Plot::Allocation => allocation::size(data),
            Plot::Hypervolume | Plot::HypervolumeEvaluations => (1200, 640),
            Plot::Sensitivity => (1000, 760),
            Plot::Latency => (
                1000,
                latency::PANEL_HEIGHT * data.latency.len().max(1) as u32,
            ),
        }
    }

    /// Draws the plot on `area`.
    pub fn draw<DB: DrawingBackend>(
        self,
        area: &DrawingArea<DB, Shift>,
        data: &ReportData,
    ) -> Result<()> {
        area.fill(&WHITE).map_err(drawing(self))?;
        match self {
            Plot::Front => front::draw(area, data),
            Plot::Allocation => allocation::draw(area, data),
            Plot::Hypervolume => trends::hypervolume(area, data, trends::Along::Trials),
            Plot::HypervolumeEvaluations => {
                trends::hypervolume(area, data, trends::Along::Evaluations)
            }
            Plot::Sensitivity => trends::sensitivity(area, data),
            Plot::Latency => latency::draw(area, data),
        }
        .map_err(|e| match e {
            Error::Report { message } => {
                Error::report(format!("drawing the {} plot: {message}", self.name()))
            }
            other => other,
        })
    }

    /// The plot as an SVG document.
    pub fn svg(self, data: &ReportData) -> Result<String> {
        fonts()?;
        let mut out = String::new();
        {
            let root = SVGBackend::with_string(&mut out, self.size(data)).into_drawing_area();
            self.draw(&root, data)?;
            root.present().map_err(drawing(self))?;
        }
        Ok(out)
    }

    /// Draws the plot into the PNG file `path` (its extension must be `.png`).
    pub fn png(self, data: &ReportData, path: &Path) -> Result<()> {
        fonts()?;
        let root = glyphs::Png(BitMapBackend::new(path, self.size(data))).into_drawing_area();
        self.draw(&root, data)?;
        root.present()
            .map_err(|e| Error::report(format!("writing {}: {e}", path.display())))
    }
}

/// Maps a plotters error to ours.
fn drawing<E: std::fmt::Display>(plot: Plot) -> impl Fn(E) -> Error {
    move |e| Error::report(format!("drawing the {} plot: {e}", plot.name()))
}

/// Maps a plotters error to ours, inside a plot function (the plot's name is added by [`Plot::draw`]).
fn plotters_error<E: std::fmt::Display>(e: E) -> Error {
    Error::report(e.to_string())
}

/// Draws a chart's legend (the labelled series) at `position`, on a light box.
fn legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<()>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.3))
        .label_font(text(LEGEND))
        .draw()
        .map_err(plotters_error)
}

/// The frame every x–y plot shares: `caption` in the title style, the margin and the label areas.
fn frame<'a, 'b, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    caption: String,
) -> ChartBuilder<'a, 'b, DB> {
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, title())
        .margin(24)
        .x_label_area_size(64)
        .y_label_area_size(92);
    builder
}

/// The text styles and grid every x–y plot's mesh shares.
fn mesh_style<'m, 'a, 'b, X: Ranged, Y: Ranged, DB: DrawingBackend>(
    mesh: &'m mut MeshStyle<'a, 'b, X, Y, DB>,
) -> &'m mut MeshStyle<'a, 'b, X, Y, DB> {
    mesh.axis_desc_style(text(AXIS_TITLE))
        .label_style(text(TICKS))
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(215, 215, 215))
}

/// `note` in the middle of `area` (a plot with nothing to show).
fn centred_note<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, note: &str) -> Result<()> {
    let style = text(AXIS_TITLE).pos(Pos::new(HPos::Center, VPos::Center));
    let (w, h) = area.dim_in_pixel();
    area.draw(&Text::new(note, (w as i32 / 2, h as i32 / 2), style))
        .map_err(plotters_error)
}

/// A text style of the plot font.
fn text(size: u32) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font()).color(&BLACK)
}

/// The plot title style.
fn title() -> TextStyle<'static> {
    TextStyle::from((FONT, TITLE).into_font().style(FontStyle::Bold)).color(&BLACK)
}
