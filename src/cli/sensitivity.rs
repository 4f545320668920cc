//! `sensitivity`: the analysis as `mpsearch::sensitivity::analysis` runs it, with progress, printed as a
//! per-layer table (or JSON) with the trust figures of `--validate`.

use std::process::ExitCode;

use crate::{emit, progress_bar, setup_evaluator, table, SensitivityArgs};

pub fn sensitivity_cmd(a: SensitivityArgs) -> anyhow::Result<ExitCode> {
    use mpsearch::sensitivity::{analysis, pick_pairs};
    let (ev, space, forward) = setup_evaluator(&a.setup)?;
    let pairs = pick_pairs(&space, a.pairs, a.seed);
    let n_validate = a.validate.unwrap_or(0);
    let evaluations = pairs.len() + n_validate;
    let weights: usize = space
        .groups
        .iter()
        .filter(|g| g.status == mpsearch::space::LayerStatus::Searchable)
        .map(|g| g.choices.len() * g.members.len())
        .sum();
    eprintln!(
        "cost of measuring: 1 capture pass over the calibration data and {weights} compressed weights for the \
         cheap errors, then {} one-at-a-time + {n_validate} validation evaluations = {evaluations} forward \
         passes over the evaluation data, about {:.0} s at {:.2} s per forward (plus compression)",
        pairs.len(),
        evaluations as f64 * forward,
        forward
    );
    let bar = progress_bar(space.groups.len(), "cheap errors");
    let mut phase = analysis::Phase::CheapErrors;
    let an = analysis::analyse(&ev, &ev, &space, &pairs, &mut |p, d, t| {
        if p != phase {
            phase = p;
            bar.reset();
            bar.set_length(t as u64);
            bar.set_message("one at a time");
        }
        bar.set_position(d as u64)
    })?;
    bar.finish_and_clear();
    let validation = match a.validate {
        Some(n) if n >= 2 => {
            let bar = progress_bar(n, "validation");
            let v = analysis::validate(&ev, &space, &an.predictor, n, a.seed, &mut |d, _| {
                bar.set_position(d as u64)
            })?;
            bar.finish_and_clear();
            Some(v)
        }
        Some(_) => anyhow::bail!("--validate needs at least 2 assignments to rank"),
        None => None,
    };
    let measured: std::collections::HashMap<(usize, u16), f64> = an
        .measurements
        .iter()
        .map(|m| ((m.group, m.choice), m.quality))
        .collect();
    let group_name = |g: &mpsearch::space::SpaceGroup| {
        g.members
            .iter()
            .map(|&m| space.layers[m].info.name.as_str())
            .collect::<Vec<_>>()
            .join(" + ")
    };
    use mpsearch::eval::Evaluator;
    if a.json {
        let rows: Vec<serde_json::Value> = space
            .groups
            .iter()
            .enumerate()
            .flat_map(|(gi, g)| {
                let an = &an;
                let measured = &measured;
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
        if let Some(v) = &validation {
            doc["validation"] = serde_json::json!({
                "assignments": v.points.len(), "spearman": v.spearman, "kendall": v.kendall,
                "mean_absolute_error": v.mean_absolute_error, "seconds": v.seconds,
                "points": v.points.iter().map(|(p, pr, me)| serde_json::json!({
                    "assignment": space.assignment(p).to_json(), "predicted": pr, "measured": me}))
                    .collect::<Vec<_>>(),
            });
        }
        return emit(&format!("{}\n", serde_json::to_string_pretty(&doc)?));
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
    let mut rows = Vec::new();
    for (gi, g) in space.groups.iter().enumerate() {
        if g.status != mpsearch::space::LayerStatus::Searchable {
            continue;
        }
        let mut order: Vec<usize> = (0..g.choices.len()).collect();
        order.sort_by(|&x, &y| an.predictor.table()[gi][x].total_cmp(&an.predictor.table()[gi][y]));
        for ci in order {
            rows.push(vec![
                group_name(g),
                g.choices[ci].to_string(),
                format!("{:.3e}", an.errors[gi][ci]),
                format!("{:.5}", an.predictor.table()[gi][ci]),
                measured
                    .get(&(gi, ci as u16))
                    .map_or("-".to_string(), |m| format!("{m:.5}")),
            ]);
        }
    }
    out.push_str(&table(
        &["layer", "choice", "output error", "predicted", "measured"],
        &rows,
        2,
    ));
    if let Some(v) = &validation {
        out.push_str(&format!(
            "\nvalidation on {} random assignments ({:.1} s): Spearman {:.3}, Kendall {:.3}, mean absolute \
             error {:.5}\nlargest misses (where layers interact):\n",
            v.points.len(),
            v.seconds,
            v.spearman,
            v.kendall,
            v.mean_absolute_error
        ));
        let mut misses: Vec<&(mpsearch::space::Point, f64, f64)> = v.points.iter().collect();
        misses.sort_by(|x, y| (y.2 - y.1).abs().total_cmp(&(x.2 - x.1).abs()));
        for (p, pr, me) in misses.into_iter().take(5) {
            out.push_str(&format!(
                "  predicted {pr:.5}  measured {me:.5}  {}\n",
                space.assignment(p).to_json_string()
            ));
        }
    }
    emit(&out)
}
