//! # `trials`
//!
//! Every trial of a run in trial order, as a table or one JSON line each.

use std::io::Write;
use std::process::ExitCode;

use mpsearch::cost::model::{format_bytes, format_us};
use mpsearch::store::{Access, TrialRecord};

use super::args::TrialsArgs;
use super::output::{emit, quality, table};
use super::setup::open_store;

pub fn run(a: TrialsArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&a.store.store, Access::Read)?;
    let m = mpsearch::store::find_run(&*store, &a.run)?;
    let trials = store.trials(&m.name)?;
    if a.json {
        return json_lines(&trials);
    }
    let rows: Vec<Vec<String>> = trials
        .iter()
        .map(|t| {
            vec![
                t.number.to_string(),
                t.state.to_string(),
                t.strategy.clone(),
                t.quality
                    .map_or_else(|| t.error.clone().unwrap_or_default(), quality),
                format_us(t.cost.latency_us),
                format_bytes(t.cost.bytes as f64),
                if t.cached {
                    "cache".into()
                } else {
                    format!("{:.2} s", t.seconds)
                },
            ]
        })
        .collect();
    emit(&table(
        &[
            "trial",
            "state",
            "strategy",
            "quality",
            "latency",
            "size",
            "evaluation",
        ],
        &rows,
        3,
    ))
}

fn json_lines(trials: &[TrialRecord]) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    for t in trials {
        let v = serde_json::json!({
            "trial": t.number, "state": t.state.to_string(), "strategy": t.strategy,
            "quality": t.quality, "cost": t.cost, "hash": t.hash,
            "assignment": t.assignment,
            "cached": t.cached, "seconds": t.seconds, "metrics": t.metrics, "error": t.error,
        });
        writeln!(out, "{v}")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
