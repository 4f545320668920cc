//! # `runs`
//!
//! The runs of a store, one row (or one JSON object) each: status, strategy, profile, trials,
//! evaluations and cache hits, front.

use std::process::ExitCode;

use mpsearch::cost::model::format_us;
use mpsearch::store::{RunManifest, Store, TrialRecord};

use super::args::RunsArgs;
use super::output::{emit, quality, table};
use super::setup::open_store;

pub fn run(a: RunsArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&a.store.store)?;
    let mut docs = Vec::new();
    let mut rows = Vec::new();
    for m in &store.runs()? {
        let trials = store.trials(&m.name)?;
        let s = Summary::of(m, &trials)?;
        if a.json {
            docs.push(s.json(m, &trials)?);
        } else {
            rows.push(s.row(m));
        }
    }
    if a.json {
        return emit(&format!("{}\n", serde_json::to_string_pretty(&docs)?));
    }
    if rows.is_empty() {
        return emit(&format!(
            "store {} holds no runs; start one with `mpsearch search`\n",
            a.store.store.display()
        ));
    }
    emit(&table(
        &[
            "run",
            "status",
            "strategy",
            "profile",
            "trials",
            "evaluated",
            "cache hits",
            "front",
            "elapsed",
            "cheapest front points (quality@latency)",
        ],
        &rows,
        4,
    ))
}

/// What the listing shows of one run.
struct Summary<'t> {
    front: Vec<&'t TrialRecord>,
    trials: usize,
    evaluated: usize,
    hits: usize,
}

impl<'t> Summary<'t> {
    fn of(m: &RunManifest, trials: &'t [TrialRecord]) -> anyhow::Result<Summary<'t>> {
        let done = |cached: bool| {
            trials
                .iter()
                .filter(|t| t.quality.is_some() && t.cached == cached)
                .count()
        };
        Ok(Summary {
            front: mpsearch::store::front(&m.config, trials),
            trials: trials.len(),
            evaluated: done(false),
            hits: done(true),
        })
    }

    fn json(&self, m: &RunManifest, trials: &[TrialRecord]) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::json!({
            "name": m.name, "status": mpsearch::store::listed_status(m).to_string(), "trials": self.trials,
            "evaluated": self.evaluated, "cache_hits": self.hits, "profile": m.config.profile,
            "objective": m.config.objective, "strategy": m.config.strategy,
            "elapsed_seconds": m.elapsed_seconds, "seed": m.config.seed,
            "hypervolume": mpsearch::store::hypervolume(m, trials),
            "front": self.front.iter().map(|t| front_json(t)).collect::<Vec<_>>(),
        }))
    }

    fn row(&self, m: &RunManifest) -> Vec<String> {
        let best = self
            .front
            .iter()
            .map(|t| {
                format!(
                    "{}@{}",
                    quality(t.quality.unwrap_or(f64::NAN)),
                    format_us(t.cost.latency_us)
                )
            })
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        vec![
            m.name.clone(),
            mpsearch::store::listed_status(m).to_string(),
            m.config.strategy.to_string(),
            m.config.profile.clone(),
            self.trials.to_string(),
            self.evaluated.to_string(),
            self.hits.to_string(),
            self.front.len().to_string(),
            format!("{:.0} s", m.elapsed_seconds),
            best,
        ]
    }
}

fn front_json(t: &TrialRecord) -> serde_json::Value {
    serde_json::json!({
        "trial": t.number, "quality": t.quality, "cost": t.cost, "hash": t.hash,
        "assignment": t.assignment,
    })
}
