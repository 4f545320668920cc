//! # `trials`
//!
//! Every trial of a run in trial order, as a table or one JSON line each, with its quality on the
//! search split and, where the store holds it (front points), on the held-out split, and its measured
//! latencies (`mpsearch measure`).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use mpsearch::cost::model::{format_bytes, format_us};
use mpsearch::store::{
    Access, HeldOut, MeasuredSource, MeasurementRecord, RecoveredRecord, RunManifest, Store,
    TrialRecord,
};

use super::args::TrialsArgs;
use super::output::{emit, quality, table};
use super::setup::open_store;

pub fn run(a: TrialsArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&a.store.store, Access::Read)?;
    let m = mpsearch::store::find_run(&*store, &a.run)?;
    let trials = store.trials(&m.name)?;
    let held_out = held_out(&*store, &m, &trials)?;
    let points = points(&m, &trials);
    let recovered = store.recovered(&m.name)?;
    if a.json {
        let measured = store.measurements(&m.name)?;
        return json_lines(&trials, &held_out, &points, &measured, &recovered);
    }
    let rows: Vec<Vec<String>> = trials
        .iter()
        .flat_map(|t| {
            let variants = recovered
                .iter()
                .filter(|r| r.trial == t.number)
                .map(|r| recovered_row(t, r, points.get(&t.number)));
            std::iter::once(trial_row(t, &points, &held_out)).chain(variants)
        })
        .collect();
    emit(&table(
        &[
            "trial",
            "state",
            "strategy",
            "point",
            "quality",
            "held-out",
            "latency",
            "size",
            "evaluation",
        ],
        &rows,
        3,
    ))
}

/// A recovered variant's row, under its trial's: `17r`, its state, `recover`, its qualities.
fn recovered_row(t: &TrialRecord, r: &RecoveredRecord, point: Option<&usize>) -> Vec<String> {
    vec![
        format!("{}r", t.number),
        format!("recovered ({})", r.state),
        "recover".into(),
        point.map_or(String::new(), |k| format!("{k}r")),
        quality(r.quality),
        r.held_out_quality.map_or("-".into(), quality),
        format_us(t.cost.latency_us),
        format_bytes(t.cost.bytes as f64),
        format!("{:.2} s", r.seconds),
    ]
}

fn trial_row(
    t: &TrialRecord,
    points: &BTreeMap<u64, usize>,
    held_out: &BTreeMap<u64, HeldOut>,
) -> Vec<String> {
    {
        {
            vec![
                t.number.to_string(),
                t.state.to_string(),
                t.strategy.clone(),
                points
                    .get(&t.number)
                    .map_or(String::new(), |k| k.to_string()),
                match (t.quality, &t.proxy) {
                    (Some(q), _) => quality(q),
                    // A pruned trial: its proxy quality, marked as such.
                    (None, Some(p)) if t.error.is_none() => {
                        format!("{} (proxy)", quality(p.quality))
                    }
                    _ => t.error.clone().unwrap_or_default(),
                },
                held_out
                    .get(&t.number)
                    .map_or("-".into(), |h| quality(h.quality)),
                format_us(t.cost.latency_us),
                format_bytes(t.cost.bytes as f64),
                if t.cached {
                    "cache".into()
                } else {
                    format!("{:.2} s", t.seconds)
                },
            ]
        }
    }
}

/// The held-out evaluation of every complete trial that the store holds one for, by trial number.
fn held_out(
    store: &dyn Store,
    m: &RunManifest,
    trials: &[TrialRecord],
) -> anyhow::Result<BTreeMap<u64, HeldOut>> {
    let mut out = BTreeMap::new();
    for t in trials.iter().filter(|t| t.quality.is_some()) {
        if let Some(h) = mpsearch::store::held_out(store, m, t)? {
            out.insert(t.number, h);
        }
    }
    Ok(out)
}

/// The front points' positions (1-based, in cost order), by trial number.
fn points(m: &RunManifest, trials: &[TrialRecord]) -> BTreeMap<u64, usize> {
    mpsearch::store::front(&m.config, trials)
        .iter()
        .enumerate()
        .map(|(i, t)| (t.number, i + 1))
        .collect()
}

/// A trial's measurement as `trials --json` shows it (the assignment is the trial's).
fn measurement_json(m: &MeasurementRecord) -> serde_json::Value {
    serde_json::json!({
        "number": m.number, "batch": m.batch, "tokens": m.tokens, "cost_batch": m.cost_batch,
        "latency_us": m.figure_us(), "median_us": m.median_us, "spread_us": m.spread_us,
        "predicted_us": m.predicted_us, "reference_latency_us": m.reference_figure_us(),
        "reference_us": m.reference_us, "speedup": m.speedup(), "repetitions": m.repetitions,
        "round_medians_us": m.round_medians_us, "host": m.host, "profile": m.profile,
        "measured_unix": m.measured_unix,
    })
}

/// A recovered variant as `trials --json` and `runs --json` show it (under its trial or front
/// point, whose assignment and cost it shares).
pub fn recovered_json(r: &RecoveredRecord) -> serde_json::Value {
    serde_json::json!({
        "key": r.key, "state": r.state, "quality": r.quality, "metrics": r.metrics,
        "held_out_quality": r.held_out_quality, "held_out_metrics": r.held_out_metrics,
        "before_held_out_quality": r.before_held_out_quality,
        "before_held_out_metrics": r.before_held_out_metrics,
        "recipe": r.recipe, "steps": r.steps, "total_steps": r.total_steps,
        "best_step": r.best_step, "validation_loss": r.validation_loss,
        "initial_validation_loss": r.initial_validation_loss, "seconds": r.seconds,
        "threads": r.threads, "weights": r.weights,
    })
}

fn json_lines(
    trials: &[TrialRecord],
    held_out: &BTreeMap<u64, HeldOut>,
    points: &BTreeMap<u64, usize>,
    measured: &[MeasurementRecord],
    recovered: &[RecoveredRecord],
) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    for t in trials {
        let h = held_out.get(&t.number);
        let ms: Vec<serde_json::Value> = measured
            .iter()
            .filter(
                |m| matches!(m.source, MeasuredSource::Trial { trial, .. } if trial == t.number),
            )
            .map(measurement_json)
            .collect();
        let v = serde_json::json!({
            "trial": t.number, "state": t.state.to_string(), "strategy": t.strategy,
            "quality": t.quality, "cost": t.cost, "hash": t.hash,
            "assignment": t.assignment,
            "cached": t.cached, "seconds": t.seconds, "metrics": t.metrics, "error": t.error,
            "point": points.get(&t.number),
            "held_out_quality": h.map(|h| h.quality), "held_out_metrics": h.map(|h| &h.metrics),
            "proxy": t.proxy,
            "measurements": ms,
            "recovered": recovered.iter().filter(|r| r.trial == t.number).map(recovered_json)
                .collect::<Vec<_>>(),
        });
        writeln!(out, "{v}")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
