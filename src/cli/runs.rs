//! # `runs`
//!
//! The runs of a store, one row (or one JSON object) each: status, strategy, profile, trials,
//! evaluations and cache hits, front (with each point's held-out quality, and the front's
//! search-vs-held-out gap), and what its latency measurements say.

use std::process::ExitCode;

use mpsearch::cost::model::format_us;
use mpsearch::store::{
    Access, Controller, HeldOut, HeldOutGap, MeasurementRecord, RecoveredRecord, RunManifest,
    RunStatus, Store, TrialRecord, WorkerSeen,
};

use super::args::RunsArgs;
use super::output::{emit, quality, table};
use super::setup::open_store;

/// The workers `runs` lists at most (the most recent heartbeats first).
const SHOWN_WORKERS: usize = 10;

pub fn run(a: RunsArgs) -> anyhow::Result<ExitCode> {
    let location = &a.store.store;
    let store = open_store(location, Access::Read)?;
    let controllers = store.controllers()?;
    let mut docs = Vec::new();
    let mut rows = Vec::new();
    for m in &store.runs()? {
        let trials = store.trials(&m.name)?;
        let s = Summary::of(&*store, m, &trials, &controllers)?;
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
    let workers: String = match store.queue() {
        Some(q) => {
            let seen = q.workers(None)?;
            let more = seen.len().saturating_sub(SHOWN_WORKERS);
            let lines: String = seen
                .iter()
                .take(SHOWN_WORKERS)
                .map(|w| {
                format!(
                    "worker {} (pid {} on host {}): {} trials finished, {} in hand, last heartbeat {} \
                     ago\n",
                    w.id,
                    w.pid,
                    w.host,
                    w.finished,
                    w.claims,
                    super::output::duration(
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs())
                            .saturating_sub(w.heartbeat_unix) as f64
                    )
                    )
                })
                .collect();
            if more > 0 {
                format!("{lines}… and {more} workers seen before them (`runs --json` lists each run's)\n")
            } else {
                lines
            }
        }
        None => String::new(),
    };
    emit(&format!(
        "{backend}{}{driven}{workers}",
        table(
            &[
                "run",
                "status",
                "strategy",
                "profile",
                "trials",
                "evaluated",
                "cache hits",
                "evaluations (set-up)",
                "front",
                "held-out gap (mean/worst)",
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
    /// Each front point's held-out evaluation, from the store.
    held_out: Vec<Option<HeldOut>>,
    gap: Option<HeldOutGap>,
    trials: usize,
    evaluated: usize,
    hits: usize,
    evaluations: mpsearch::store::EvaluationCounts,
    measurements: Vec<MeasurementRecord>,
    /// The workers that evaluated its trials (a shared store's).
    workers: Vec<WorkerSeen>,
    /// Its recovered variants (`mpsearch recover`).
    recovered: Vec<RecoveredRecord>,
}

impl<'t> Summary<'t> {
    fn of(
        store: &dyn Store,
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
        let front = mpsearch::store::front(&m.config, trials);
        let (held_out, gap) = mpsearch::store::front_held_out(store, m, &front)?;
        Ok(Summary {
            status: mpsearch::store::live_status(m, controllers),
            front,
            held_out,
            gap,
            trials: trials.len(),
            evaluated: done(false),
            hits: done(true),
            evaluations: mpsearch::store::evaluations(m, trials),
            measurements: store.measurements(&m.name)?,
            workers: match store.queue() {
                Some(q) => q.workers(Some(&m.name))?,
                None => Vec::new(),
            },
            recovered: store.recovered(&m.name)?,
        })
    }

    fn json(&self, m: &RunManifest, trials: &[TrialRecord]) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::json!({
            "name": m.name, "status": self.status.to_string(), "trials": self.trials,
            "evaluated": self.evaluated, "cache_hits": self.hits, "profile": m.config.profile,
            "objective": m.config.objective, "strategy": m.config.strategy,
            "elapsed_seconds": m.elapsed_seconds, "seed": m.config.seed,
            "hypervolume": mpsearch::store::hypervolume(m, trials),
            "held_out_hypervolume": mpsearch::store::held_out_hypervolume(m, &self.front, &self.held_out),
            "splits": m.splits, "held_out_gap": self.gap,
            "evaluations": self.evaluations, "setup": m.setup, "pairs": m.config.pairs,
            "fidelity": m.config.fidelity, "proxy": mpsearch::store::proxy_summary(trials),
            "refine": m.config.refine, "setup_seconds": m.setup_seconds,
            "importance": m.config.importance,
            "workers": self.workers,
            "evaluations_to_99_percent": mpsearch::report::data::HypervolumeSeries::of(m, trials, true).evaluations_to(0.99),
            "front": self.front.iter().zip(&self.held_out).map(|(t, h)| front_json(t, h.as_ref(), &self.recovered)).collect::<Vec<_>>(),
            "measurements": {
                "count": self.measurements.len(),
                "settings": mpsearch::store::measurement_summaries(&self.measurements),
            },
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
            match self.status {
                RunStatus::Interrupted if mpsearch::store::in_set_up(m) => {
                    "interrupted in set-up".to_string()
                }
                s => s.to_string(),
            },
            m.config.strategy.to_string(),
            m.config.profile.clone(),
            self.trials.to_string(),
            self.evaluated.to_string(),
            self.hits.to_string(),
            if self.evaluations.complete {
                format!(
                    "{} ({})",
                    self.evaluations.total, self.evaluations.setup.evaluated
                )
            } else {
                format!("{}+? (?)", self.evaluations.total)
            },
            self.front.len().to_string(),
            self.gap
                .map_or("-".into(), |g| format!("{:+.2e}/{:+.2e}", g.mean, g.worst)),
            format!("{:.0} s", m.elapsed_seconds),
            best,
        ]
    }
}

fn front_json(
    t: &TrialRecord,
    held_out: Option<&HeldOut>,
    recovered: &[RecoveredRecord],
) -> serde_json::Value {
    let variants: Vec<serde_json::Value> = recovered
        .iter()
        .filter(|r| r.trial == t.number)
        .map(super::trials::recovered_json)
        .collect();
    serde_json::json!({
        "recovered": variants,
        "trial": t.number, "quality": t.quality, "cost": t.cost, "hash": t.hash,
        "assignment": t.assignment,
        "held_out_quality": held_out.map(|h| h.quality),
        "held_out_metrics": held_out.map(|h| &h.metrics),
    })
}
