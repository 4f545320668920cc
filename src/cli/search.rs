//! # `search`
//!
//! The flags resolved into a run configuration, the run created in the store, and the library's
//! controller driven (see [`super::drive`]) until a budget is spent or Ctrl-C.

use std::process::ExitCode;

use mpsearch::search;
use mpsearch::store::{self, Access, RunConfig};

use super::args::{SearchArgs, SearchChecked, StrategyArg, AUTO_WHY};
use super::drive;
use super::setup::{load_model, open_store};

pub fn run(a: SearchArgs) -> anyhow::Result<ExitCode> {
    let mut checked = a.check()?;
    let inventory = load_model(&a.input.model.model)?;
    checked.budgets.resolve(&inventory.layers);
    // Data that cannot be used is refused before the store is opened: nothing is written.
    mpsearch::eval::check_data(
        &mpsearch::model::ModelSource::parse(&a.input.model.model),
        a.data.data.as_deref(),
    )?;
    let space = a
        .input
        .space
        .clone()
        .unwrap_or_else(|| inventory.default_space.to_string());
    let config = run_config(&a, checked, space.clone());
    let store = open_store(&a.store.store, Access::Write)?;
    let name = match &a.run {
        Some(n) => n.clone(),
        None => store::default_run_name(&*store, &space, &a.profile)?,
    };
    // This process drives the run from its set-up on (another driver of it is refused here).
    store.lock_run(&name)?;
    if a.strategy == StrategyArg::Auto {
        eprintln!(
            "strategy: auto picked `{}` ({AUTO_WHY})",
            a.strategy.kind().name()
        );
    }
    if config.importance.needs_gradients() {
        eprintln!(
            "pruning importance: {} — scores from one backward pass per calibration sample, taken \
             once before the cheap errors (seconds on the demo, about a minute on MiniLM-L6)",
            config.importance
        );
    }
    let stop = drive::stop_flag()?;
    let time = config.time_seconds;
    let created = search::create(
        &*store,
        &name,
        config,
        &stop,
        &mut drive::setup_progress(time, 0.0),
    );
    let Some((session, manifest)) = drive::set_up(created, &name, &*store, &a.store.store)? else {
        return Ok(drive::interrupted());
    };
    drive::describe(&session);
    drive::drive(
        &session,
        &*store,
        manifest,
        a.jobs,
        a.workers,
        &stop,
        &a.store.store,
    )
}

/// The run's configuration as the store records it.
fn run_config(a: &SearchArgs, checked: SearchChecked, space: String) -> RunConfig {
    // An overnight run given a time budget is not cut short by the default trial budget.
    let trials = match (a.trials, &a.time) {
        (Some(n), _) => Some(n),
        (None, Some(_)) => None,
        // Neither: the default budget of a run (RunConfig::default).
        (None, None) => RunConfig::default().trials,
    };
    RunConfig {
        model: a.input.model.model.clone(),
        data: a.data.data.as_ref().map(|p| p.display().to_string()),
        space,
        profile: a.profile.clone(),
        batch: a.batch,
        strategy: a.strategy.kind(),
        objective: a.objective.objective(),
        max_latency_us: checked.budgets.latency_us,
        max_bytes: checked.budgets.bytes,
        max_bops: checked.budgets.bops,
        max_drop: a.max_drop,
        seed: a.seed,
        ask_batch: a.ask,
        trials,
        time_seconds: checked.time_seconds,
        scale: a.data.scale.method(),
        rounding: checked.rounding,
        importance: a.data.importance.importance(),
        pairs: a.pairs,
        fidelity: a.fidelity,
        refine: !a.no_refine,
        samples: a.data.samples.map(|n| n as usize),
    }
}
