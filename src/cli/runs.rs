//! # `runs`
//!
//! The runs of a store, one row (or one JSON object) each: status, strategy, profile, trials,
//! evaluations and cache hits, front.

use std::process::ExitCode;

use mpsearch::cost::model::format_us;
use mpsearch::store::{Access, Controller, RunManifest, RunStatus, TrialRecord};

use super::args::RunsArgs;
use super::output::{emit, quality, table};
use super::setup::open_store;

pub fn run(a: RunsArgs) -> anyhow::Result<ExitCode> {
    let location = &a.store.store;
    let store = open_store(location, Access::Read)?;
    let controllers = store.controllers()?;
    let mut docs = Vec::new();
    let mut rows = Vec::new();
    for m in &store.runs()? {
        let trials = store.trials(&m.name)?;
        let s = Summary::of(m, &trials, &controllers)?;
        if a.json {
            docs.push(s.json(m, &trials)?);
        } else {
            rows.push(s.row(m));
        }
    }
    if a.json {
        return emit(&format!("{}\n", serde_json::to_string_pretty(&docs)?));
    }
    let backend = format!("store: {} {location}\n", location.backend());
    if rows.is_empty() {
        return emit(&format!(
            "{backend}it holds no runs; start one with `mpsearch search`\n"
        ));
    }
    let driven: String = controllers
        .iter()
        .map(|c| {
            format!(
                "run `{}` is being driven by pid {} on host {}\n",
                c.run, c.pid, c.host
            )
        })
        .collect();
    emit(&format!(
        "{backend}{}{driven}",
        table(
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
        )
    ))
}

/// What the listing shows of one run.
struct Summary<'t> {
    status: RunStatus,
    front: Vec<&'t TrialRecord>,
    trials: usize,
    evaluated: usize,
    hits: usize,
}

impl<'t> Summary<'t> {
    fn of(
        m: &RunManifest,
        trials: &'t [TrialRecord],
        controllers: &[Controller],
    ) -> anyhow::Result<Summary<'t>> {
        let done = |cached: bool| {
            trials
                .iter()
                .filter(|t| t.quality.is_some() && t.cached == cached)
                .count()
        };
        Ok(Summary {
            status: mpsearch::store::live_status(m, controllers),
            front: mpsearch::store::front(&m.config, trials),
            trials: trials.len(),
            evaluated: done(false),
            hits: done(true),
        })
    }

    fn json(&self, m: &RunManifest, trials: &[TrialRecord]) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::json!({
            "name": m.name, "status": self.status.to_string(), "trials": self.trials,
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
            self.status.to_string(),
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
