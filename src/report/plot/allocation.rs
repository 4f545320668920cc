//! The per-layer allocation chart: one column per front point (numbered as in the table), one row
//! per layer; the colour is the weight format's bits, the text in a cell its sparsity, rank and
//! activation quantization, with corner marks for sparsity (▲) and low rank (●) that stay visible
//! when the text is small.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{plotters_error as pe, text, title, LEGEND, TICKS};
use crate::error::Result;
use crate::report::data::ReportData;
use crate::space::{ActQuant, Choice, ConvFactor, Sparsity, WeightQuant};

const CELL_W: i32 = 74;
const CELL_H: i32 = 40;
const LEFT_PAD: i32 = 24;
const TOP: i32 = 112;
const LEGEND_W: i32 = 330;
const CELL_TEXT: u32 = 13;

/// The weight formats in legend order, with their colours (more bits: cooler).
const FORMATS: [(&str, RGBColor); 9] = [
    ("f32", RGBColor(49, 84, 140)),
    ("f16 / bf16", RGBColor(86, 148, 201)),
    ("int8", RGBColor(92, 173, 103)),
    ("int7", RGBColor(150, 196, 96)),
    ("int6", RGBColor(201, 214, 92)),
    ("int5", RGBColor(242, 205, 82)),
    ("int4", RGBColor(245, 160, 80)),
    ("int3", RGBColor(229, 100, 70)),
    ("int2", RGBColor(180, 40, 50)),
];

/// The legend row of a weight format.
fn format_index(w: &WeightQuant) -> usize {
    match w {
        WeightQuant::F32 => 0,
        WeightQuant::F16 | WeightQuant::Bf16 => 1,
        WeightQuant::Int { bits, .. } => (10 - usize::from(*bits).clamp(2, 8)).min(8),
        WeightQuant::Ggml(g) => (10 - usize::from(g.code_bits()).clamp(2, 8)).min(8),
    }
}

/// The short text of a choice's parts besides the weight bits: `2:4 r50`, `s50 a8`.
pub fn parts(c: &Choice) -> String {
    let mut p = Vec::new();
    match c.sparsity {
        Sparsity::None => {}
        Sparsity::Unstructured(x) => p.push(format!("s{x}")),
        Sparsity::NM { n, m } => p.push(format!("{n}:{m}")),
        Sparsity::Channels(x) => p.push(format!("c{x}")),
    }
    if let Some(r) = c.rank {
        p.push(format!("r{r}"));
    }
    match c.conv {
        Some(ConvFactor::Tucker(x)) => p.push(format!("t{x}")),
        Some(ConvFactor::Cp(x)) => p.push(format!("cp{x}")),
        None => {}
    }
    if c.act != ActQuant::None {
        p.push("a8".into());
    }
    p.join(" ")
}

/// The short text of a choice's weights: `f32`, `bf16`, `int4`, `int4g32`.
pub fn weights(c: &Choice) -> String {
    match c.weights {
        WeightQuant::F32 => "f32".into(),
        WeightQuant::F16 => "f16".into(),
        WeightQuant::Bf16 => "bf16".into(),
        WeightQuant::Int {
            bits, granularity, ..
        } => match granularity {
            crate::space::Granularity::Group(g) => format!("int{bits}g{g}"),
            _ => format!("int{bits}"),
        },
        WeightQuant::Ggml(g) => g.name().into(),
    }
}

/// Width of the layer-name column: the longest name at the tick font.
fn names_width(d: &ReportData) -> i32 {
    let longest = d
        .layers
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(4) as i32;
    longest * 9 + 20
}

pub fn size(d: &ReportData) -> (u32, u32) {
    let cols = d.front.len().max(1) as i32;
    let rows = d.layers.len().max(1) as i32;
    let w = LEFT_PAD + names_width(d) + cols * CELL_W + LEGEND_W;
    let h = TOP + rows * CELL_H + 60;
    (w.max(900) as u32, h.max(420) as u32)
}

pub fn draw<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, d: &ReportData) -> Result<()> {
    let caption = format!(
        "Per-layer allocation of the {} front points (run {})",
        d.front.len(),
        d.run
    );
    area.draw(&Text::new(caption, (LEFT_PAD, 20), title()))
        .map_err(pe)?;
    let x0 = LEFT_PAD + names_width(d);
    let centre = Pos::new(HPos::Center, VPos::Center);
    let head = text(TICKS).pos(centre);
    area.draw(&Text::new(
        "front point (as numbered in the table and the Pareto plot)",
        (x0, TOP - 56),
        text(TICKS),
    ))
    .map_err(pe)?;
    for (j, f) in d.front.iter().enumerate() {
        let x = x0 + j as i32 * CELL_W + CELL_W / 2;
        area.draw(&Text::new(
            f.number.to_string(),
            (x, TOP - 22),
            head.clone(),
        ))
        .map_err(pe)?;
    }
    let name_style = text(TICKS).pos(Pos::new(HPos::Right, VPos::Center));
    for (i, name) in d.layers.iter().enumerate() {
        let y = TOP + i as i32 * CELL_H + CELL_H / 2;
        area.draw(&Text::new(name.as_str(), (x0 - 10, y), name_style.clone()))
            .map_err(pe)?;
    }
    for (j, f) in d.front.iter().enumerate() {
        for (i, c) in f.choices.iter().enumerate() {
            cell(area, (x0 + j as i32 * CELL_W, TOP + i as i32 * CELL_H), c)?;
        }
    }
    if d.front.is_empty() {
        area.draw(&Text::new(
            "no front point yet",
            (x0 + 20, TOP + 10),
            text(TICKS),
        ))
        .map_err(pe)?;
    }
    let used: Vec<usize> = d
        .front
        .iter()
        .flat_map(|f| f.choices.iter().map(|c| format_index(&c.weights)))
        .collect();
    legend(area, x0 + d.front.len().max(1) as i32 * CELL_W + 30, &used)
}

/// One cell at top-left `(x, y)`.
fn cell<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    (x, y): (i32, i32),
    c: &Choice,
) -> Result<()> {
    let colour = FORMATS[format_index(&c.weights)].1;
    area.draw(&Rectangle::new(
        [(x + 1, y + 1), (x + CELL_W - 1, y + CELL_H - 1)],
        colour.filled(),
    ))
    .map_err(pe)?;
    let dark = format_index(&c.weights) <= 1 || format_index(&c.weights) >= 7;
    let ink = if dark { WHITE } else { BLACK };
    let style = text(CELL_TEXT)
        .color(&ink)
        .pos(Pos::new(HPos::Center, VPos::Center));
    let p = parts(c);
    let (line1, line2) = (weights(c), p);
    if line2.is_empty() {
        area.draw(&Text::new(line1, (x + CELL_W / 2, y + CELL_H / 2), style))
            .map_err(pe)?;
    } else {
        area.draw(&Text::new(
            line1,
            (x + CELL_W / 2, y + CELL_H / 2 - 8),
            style.clone(),
        ))
        .map_err(pe)?;
        area.draw(&Text::new(
            line2,
            (x + CELL_W / 2, y + CELL_H / 2 + 9),
            style,
        ))
        .map_err(pe)?;
    }
    if c.sparsity != Sparsity::None {
        area.draw(&Polygon::new(
            [
                (x + CELL_W - 12, y + 2),
                (x + CELL_W - 2, y + 2),
                (x + CELL_W - 2, y + 12),
            ],
            ink.filled(),
        ))
        .map_err(pe)?;
    }
    if c.rank.is_some() || c.conv.is_some() {
        area.draw(&Circle::new((x + 7, y + CELL_H - 7), 4, ink.filled()))
            .map_err(pe)?;
    }
    Ok(())
}

/// The colour key of the formats in use, and what the marks mean.
fn legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, x: i32, used: &[usize]) -> Result<()> {
    let style = text(LEGEND);
    let mut y = TOP;
    area.draw(&Text::new("weights (colour)", (x, y), style.clone()))
        .map_err(pe)?;
    y += 26;
    for (i, (name, colour)) in FORMATS.iter().enumerate() {
        if !used.contains(&i) {
            continue;
        }
        area.draw(&Rectangle::new([(x, y), (x + 26, y + 18)], colour.filled()))
            .map_err(pe)?;
        area.draw(&Text::new(*name, (x + 34, y + 1), style.clone()))
            .map_err(pe)?;
        y += 24;
    }
    y += 16;
    let key = [
        "▲ pruned: s50 = 50 % of weights,",
        "   2:4 = N:M, c25 = 25 % of channels",
        "● low rank: r50 = 50 % of rank kept,",
        "   t50 / cp50 = Tucker-2 / CP, 50 % of params",
        "a8 = int8 activations",
        "g32 = one scale per 32 columns",
    ];
    for line in key {
        area.draw(&Text::new(line, (x, y), text(14))).map_err(pe)?;
        y += 22;
    }
    Ok(())
}
