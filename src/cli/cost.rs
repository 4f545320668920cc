//! # `cost`
//!
//! Predicted latency, bytes and bit operations under a hardware profile: of one assignment per layer,
//! or of the baselines and the exact reachable range of a search space, with the `--max-*` budgets
//! checked against that range.

use std::process::ExitCode;

use anyhow::Context;
use mpsearch::cost::feasibility::{BudgetFit, Feasibility, Limit};
use mpsearch::cost::{Cost, CostModel, CostTable, LayerCost, Objective};
use mpsearch::shipped;
use mpsearch::space::{Assignment, Choice, LayerInfo, SearchSpace};

use super::args::{Budgets, CostArgs};
use super::output::{emit, table, thousands};
use super::setup::{load_model, load_space};

pub fn run(a: CostArgs) -> anyhow::Result<ExitCode> {
    let mut budgets = a.check()?;
    let inv = load_model(&a.input.model.model)?;
    budgets.resolve(&inv.layers);
    let space = load_space(a.input.space.as_deref(), &inv)?;
    let model = CostModel::new(shipped::profile(&a.profile)?, a.batch)?.for_model(&inv.layers);
    if let Some(path) = &a.assignment {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let asg = space.parse_assignment(&text, Some(&path.display().to_string()))?;
        return print_assignment(&model, &space, &inv.layers, &asg, a.json);
    }
    let costs = CostTable::new(&model, &space);
    let ranges: Vec<Feasibility> = Objective::ALL
        .iter()
        .map(|&o| costs.feasibility(o))
        .collect();
    let mut notes = budget_notes(&budgets, &ranges, &space, model.profile.name())?;
    notes.extend(joint_note(&budgets, &costs, &space, model.profile.name())?);
    let base = baselines(&model, &space, &inv.layers);
    if a.json {
        let doc = serde_json::json!({
            "model": inv.name, "space": space.name, "profile": model.profile.name(), "batch": a.batch,
            "non_matmul_us": model.non_matmul_us(),
            "baselines": base.iter().map(|(n, asg, c)| serde_json::json!({
                "name": n, "hash": asg.hash_hex(), "cost": c})).collect::<Vec<_>>(),
            "reachable": ranges.iter().map(|f| serde_json::json!({
                "objective": f.objective, "min": f.min, "max": f.max,
                "cheapest": space.assignment(&f.cheapest).to_json(),
                "dearest": space.assignment(&f.dearest).to_json()})).collect::<Vec<_>>(),
            "budgets": notes,
        });
        return emit(&format!("{}\n", serde_json::to_string_pretty(&doc)?));
    }
    let mut out = format!(
        "model {} · space `{}` · profile `{}` ({}) · batch {}\n\n",
        inv.name,
        space.name,
        model.profile.name(),
        model.profile.file.profile.description,
        a.batch
    );
    out.push_str(&ranges_text(&base, &ranges));
    for n in notes {
        out.push_str(&format!("\n{n}"));
    }
    out.push('\n');
    emit(&out)
}

/// Each budget against the reachable range: an impossible one is an error; the others get a note.
fn budget_notes(
    budgets: &Budgets,
    ranges: &[Feasibility],
    space: &SearchSpace,
    profile: &str,
) -> anyhow::Result<Vec<String>> {
    let mut notes = Vec::new();
    for (o, b) in budgets.given() {
        let Some(f) = ranges.iter().find(|f| f.objective == o) else {
            continue;
        };
        notes.push(match f.check_max(b, &space.name, profile)? {
            BudgetFit::NonBinding => format!(
                "max {o} {} is at or above the dearest reachable {}: it constrains nothing",
                o.format(b),
                o.format(f.max)
            ),
            BudgetFit::Binding => format!(
                "max {o} {} is reachable (range {} to {})",
                o.format(b),
                o.format(f.min),
                o.format(f.max)
            ),
        });
    }
    Ok(notes)
}

/// Several budgets checked together (each is within reach by then): an error naming them and, for each,
/// the cheapest point in its cost that meets the others, if no assignment meets them all.
fn joint_note(
    budgets: &Budgets,
    costs: &CostTable,
    space: &SearchSpace,
    profile: &str,
) -> anyhow::Result<Option<String>> {
    let limits: Vec<Limit> = budgets
        .given()
        .into_iter()
        .map(|(objective, max)| Limit { objective, max })
        .collect();
    if limits.len() < 2 {
        return Ok(None);
    }
    let names: Vec<String> = limits.iter().map(Limit::to_string).collect();
    Ok(Some(if costs.check_joint(&limits, &space.name, profile)? {
        format!("{} can be met together", names.join(", "))
    } else {
        format!(
            "{} were checked one at a time only: the space is too large to check them together",
            names.join(", ")
        )
    }))
}

/// The baselines `cost` and reports compare against: every searchable layer at one choice (and the
/// space's GGML baselines, which exist only where every searchable layer takes the format).
fn baselines(
    model: &CostModel,
    space: &SearchSpace,
    layers: &[LayerInfo],
) -> Vec<(String, Assignment, Cost)> {
    let ggml = space
        .baselines()
        .into_iter()
        .filter(|(_, c, _)| c.weights.ggml().is_some())
        .map(|(n, c, _)| (n, c));
    [
        ("all-f32", "f32"),
        ("all-int8", "int8-sym-channel"),
        ("all-int4", "int4-asym-g32"),
    ]
    .into_iter()
    .filter_map(|(n, c)| Some((n.to_string(), c.parse::<Choice>().ok()?)))
    .chain(ggml)
    .map(|(n, c)| {
        let asg = space.baseline(&c);
        let (_, total) = model.assignment(layers, &asg);
        (format!("{n} ({c})"), asg, total)
    })
    .collect()
}

/// The baselines' table and the reachable range's table.
fn ranges_text(base: &[(String, Assignment, Cost)], ranges: &[Feasibility]) -> String {
    let rows: Vec<Vec<String>> = base
        .iter()
        .map(|(n, _, c)| {
            vec![
                n.clone(),
                Objective::Latency.format(c.latency_us),
                Objective::Size.format(c.bytes as f64),
                Objective::Bops.format(c.bops),
            ]
        })
        .collect();
    let mut out =
        "baselines (every searchable layer at one choice; excluded layers f32, pins kept)\n"
            .to_string();
    out.push_str(&table(&["baseline", "latency", "size", "BOPs"], &rows, 1));
    out.push_str("\nreachable range over the search space (exact)\n");
    let rows: Vec<Vec<String>> = ranges
        .iter()
        .map(|f| {
            vec![
                f.objective.to_string(),
                f.objective.format(f.min),
                f.objective.format(f.max),
            ]
        })
        .collect();
    out.push_str(&table(&["objective", "cheapest", "dearest"], &rows, 1));
    out
}

fn print_assignment(
    model: &CostModel,
    space: &SearchSpace,
    layers: &[LayerInfo],
    asg: &Assignment,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (per, total) = model.assignment(layers, asg);
    if json {
        let doc = serde_json::json!({
            "space": space.name, "profile": model.profile.name(), "batch": model.batch, "hash": asg.hash_hex(),
            "layers": layers.iter().zip(&per).map(|(l, c)| serde_json::json!({
                "name": l.name, "choice": asg.get(&l.name).map(|c| c.to_string()),
                "macs": c.macs, "bytes": c.cost.bytes, "latency_us": c.cost.latency_us, "bops": c.cost.bops,
                "runs_as": c.runs_as.to_string(), "measured": c.measured,
                "arithmetic": arithmetic(c), "kernel": kernel(c),
                "weights_charged": c.kernel.weights.to_string(), "acts_charged": c.kernel.acts.to_string(),
                "kernels": std::iter::once(&c.kernel).chain(&c.then).map(|k| serde_json::json!({
                    "arithmetic": k.arithmetic(), "kernel": k.to_string(), "path": k.path,
                    "weights": k.weights.to_string(), "acts": k.acts.to_string(),
                    "runs_as": k.compute().to_string(), "nm": k.nm.map(|(n, m, how)| serde_json::json!({
                        "pattern": format!("{n}:{m}"), "computed": how}))})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "non_matmul_us": model.non_matmul_us(),
            "total": total,
        });
        return emit(&format!("{}\n", serde_json::to_string_pretty(&doc)?));
    }
    let rows: Vec<Vec<String>> = layers
        .iter()
        .zip(&per)
        .map(|(l, c)| {
            vec![
                l.name.clone(),
                asg.get(&l.name)
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "f32".into()),
                c.runs_as.to_string(),
                arithmetic(c),
                kernel(c),
                thousands(c.macs.round() as u64),
                thousands(c.cost.bytes),
                format!(
                    "{:.2}{}",
                    c.cost.latency_us,
                    if c.measured { "*" } else { "" }
                ),
            ]
        })
        .collect();
    let mut out = format!(
        "space `{}` · profile `{}` · batch {} · assignment {}\n\n",
        space.name,
        model.profile.name(),
        model.batch,
        &asg.hash_hex()[..16]
    );
    out.push_str(&table(
        &[
            "layer",
            "choice",
            "runs as",
            "arithmetic",
            "kernel",
            "MACs",
            "bytes",
            "µs",
        ],
        &rows,
        5,
    ));
    if model.non_matmul_us() > 0.0 {
        out.push_str(&format!(
            "non-matmul work (attention, norms, activations; measured by calibrate --model): {}\n",
            Objective::Latency.format(model.non_matmul_us())
        ));
    }
    out.push_str(&format!(
        "total: {} · {} · {}   (* = measured entry of the profile)\n",
        Objective::Latency.format(total.latency_us),
        Objective::Size.format(total.bytes as f64),
        Objective::Bops.format(total.bops)
    ));
    emit(&out)
}

/// The arithmetic charged for a layer, weights × activations: `int8×int8`, or `int8×int8, then int8×f32`
/// for a factorized layer (the second factor multiplies the float intermediate).
fn arithmetic(c: &LayerCost) -> String {
    match &c.then {
        Some(t) => format!("{}, then {}", c.kernel.arithmetic(), t.arithmetic()),
        None => c.kernel.arithmetic(),
    }
}

/// The kernel or fallback charged for a layer (both kernels of a factorized layer).
fn kernel(c: &LayerCost) -> String {
    match &c.then {
        Some(t) => format!("{}, then {t}", c.kernel),
        None => c.kernel.to_string(),
    }
}
