//! # `sensitivity`
//!
//! The analysis as `mpsearch::sensitivity::analysis` runs it, with progress, printed as a per-layer
//! table (or JSON) with the trust figures of `--validate`.

use std::collections::HashMap;
use std::process::ExitCode;

use mpsearch::eval::{CandleEvaluator, Evaluator};
use mpsearch::sensitivity::analysis::{self, Analysis, Validation};
use mpsearch::sensitivity::{pick_pairs, NoCheckpoint, Predictor};
use mpsearch::space::{LayerStatus, Point, SearchSpace, SpaceGroup};

use super::args::SensitivityArgs;
use super::output::{emit, progress_bar, table};
use super::setup;

/// The measured quality of each measured (group, choice) pair.
type Measured = HashMap<(usize, u16), f64>;

pub fn run(a: SensitivityArgs) -> anyhow::Result<ExitCode> {
    a.check()?;
    let (ev, space, forward) = setup::evaluator(&a.setup)?;
    let pairs = pick_pairs(&space, a.pairs, a.seed);
    announce(&space, pairs.len(), a.validate.unwrap_or(0), forward);
    let an = analyse(&ev, &space, &pairs)?;
    let validation = a
        .validate
        .map(|n| validate(&ev, &space, &an.predictor, n, a.seed))
        .transpose()?;
    let measured: Measured = an
        .measurements
        .iter()
        .map(|m| ((m.group, m.choice), m.quality))
        .collect();
    if a.json {
        let doc = json(&ev, &space, &an, &measured, validation.as_ref());
        return emit(&format!("{}\n", serde_json::to_string_pretty(&doc)?));
    }
    let mut out = layer_table(&ev, &space, &an, &measured);
    if let Some(v) = &validation {
        out.push_str(&validation_text(&space, v));
    }
    emit(&out)
}

/// Says up front how many compressions and forward passes the analysis takes, and about how long.
fn announce(space: &SearchSpace, pairs: usize, n_validate: usize, forward: f64) {
    let evaluations = pairs + n_validate;
    let weights: usize = space
        .groups
        .iter()
        .filter(|g| g.status == LayerStatus::Searchable)
        .map(|g| g.choices.len() * g.members.len())
        .sum();
    eprintln!(
        "cost of measuring: 1 capture pass over the calibration data and {weights} compressed weights for the \
         cheap errors, then {pairs} one-at-a-time + {n_validate} validation evaluations = {evaluations} forward \
         passes over the evaluation data, about {:.0} s at {:.2} s per forward (plus compression)",
        evaluations as f64 * forward,
        forward
    );
}

/// Cheap errors, one-at-a-time measurements and the fitted predictor, with a progress bar.
fn analyse(
    ev: &CandleEvaluator,
    space: &SearchSpace,
    pairs: &[(usize, u16)],
) -> anyhow::Result<Analysis> {
    let bar = progress_bar(space.groups.len(), "cheap errors");
    let mut phase = analysis::Phase::CheapErrors;
    let an = analysis::analyse(ev, ev, space, pairs, &mut NoCheckpoint, &mut |p, d, t| {
        if p != phase {
            phase = p;
            bar.reset();
            bar.set_length(t as u64);
            bar.set_message("one at a time");
        }
        bar.set_position(d as u64)
    })?;
    bar.finish_and_clear();
    Ok(an)
}

/// `n` seeded random assignments measured against their prediction, with a progress bar.
fn validate(
    ev: &CandleEvaluator,
    space: &SearchSpace,
    predictor: &Predictor,
    n: usize,
    seed: u64,
) -> anyhow::Result<Validation> {
    let bar = progress_bar(n, "validation");
    let v = analysis::validate(ev, space, predictor, n, seed, &mut |d, _| {
        bar.set_position(d as u64)
    })?;
    bar.finish_and_clear();
    Ok(v)
}

fn json(
    ev: &CandleEvaluator,
    space: &SearchSpace,
    an: &Analysis,
    measured: &Measured,
    validation: Option<&Validation>,
) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = space
        .groups
        .iter()
        .enumerate()
        .flat_map(|(gi, g)| {
            g.choices.iter().enumerate().map(move |(ci, c)| {
                serde_json::json!({
                    "group": g.name, "choice": c.to_string(), "cheap_error": an.errors[gi][ci],
                    "predicted": an.predictor.table()[gi][ci],
                    "measured": measured.get(&(gi, ci as u16)),
                })
            })
        })
        .collect();
    let mut doc = serde_json::json!({
        "objective": ev.objective(), "space": space.name, "table": rows,
        "seconds": {"cheap_errors": an.cheap_seconds, "measurements": an.measure_seconds},
    });
    if let Some(v) = validation {
        doc["validation"] = serde_json::json!({
            "assignments": v.points.len(), "spearman": v.spearman, "kendall": v.kendall,
            "mean_absolute_error": v.mean_absolute_error, "seconds": v.seconds,
            "points": v.points.iter().map(|(p, pr, me)| serde_json::json!({
                "assignment": space.assignment(p).to_json(), "predicted": pr, "measured": me}))
                .collect::<Vec<_>>(),
        });
    }
    doc
}

/// The heading and, per searchable group, its choices from the least to the most predicted loss.
fn layer_table(
    ev: &CandleEvaluator,
    space: &SearchSpace,
    an: &Analysis,
    measured: &Measured,
) -> String {
    let group_name = |g: &SpaceGroup| {
        g.members
            .iter()
            .map(|&m| space.layers[m].info.name.as_str())
            .collect::<Vec<_>>()
            .join(" + ")
    };
    let predicted = an.predictor.table();
    let mut rows = Vec::new();
    for (gi, g) in space.groups.iter().enumerate() {
        if g.status != LayerStatus::Searchable {
            continue;
        }
        let mut order: Vec<usize> = (0..g.choices.len()).collect();
        order.sort_by(|&x, &y| predicted[gi][x].total_cmp(&predicted[gi][y]));
        for ci in order {
            rows.push(vec![
                group_name(g),
                g.choices[ci].to_string(),
                format!("{:.3e}", an.errors[gi][ci]),
                format!("{:.5}", predicted[gi][ci]),
                measured
                    .get(&(gi, ci as u16))
                    .map_or("-".to_string(), |m| format!("{m:.5}")),
            ]);
        }
    }
    let mut out = format!(
        "sensitivity of space `{}` ({}, lower is better); cheap errors in {:.1} s, {} one-at-a-time \
         measurements in {:.1} s\n\n",
        space.name,
        ev.objective(),
        an.cheap_seconds,
        an.measurements.len(),
        an.measure_seconds
    );
    out.push_str(&table(
        &["layer", "choice", "output error", "predicted", "measured"],
        &rows,
        2,
    ));
    out
}

/// The trust figures and the five largest misses.
fn validation_text(space: &SearchSpace, v: &Validation) -> String {
    let mut out = format!(
        "\nvalidation on {} random assignments ({:.1} s): Spearman {:.3}, Kendall {:.3}, mean absolute \
         error {:.5}\nlargest misses (where layers interact):\n",
        v.points.len(),
        v.seconds,
        v.spearman,
        v.kendall,
        v.mean_absolute_error
    );
    let mut misses: Vec<&(Point, f64, f64)> = v.points.iter().collect();
    misses.sort_by(|x, y| (y.2 - y.1).abs().total_cmp(&(x.2 - x.1).abs()));
    for (p, pr, me) in misses.into_iter().take(5) {
        out.push_str(&format!(
            "  predicted {pr:.5}  measured {me:.5}  {}\n",
            space.assignment(p).to_json_string()
        ));
    }
    out
}
