//! # Set-up
//!
//! The ready library objects several commands build from their (already checked) flags: a model's
//! layer inventory, a search space resolved against it, a store, and a loaded evaluator.

use mpsearch::eval::{CandleEvaluator, EvalSettings};
use mpsearch::model::{self, Inventory, ModelSource};
use mpsearch::shipped;
use mpsearch::space::SearchSpace;
use mpsearch::store::{self, Access, Location, Store};

use super::args::EvaluatorArgs;

/// The layer inventory of `--model` (`demo` or a folder), read without loading weights.
pub fn load_model(arg: &str) -> anyhow::Result<Inventory> {
    Ok(model::inventory(&ModelSource::parse(arg))?)
}

/// `--space` (or the model's own space) resolved against the model's layers.
pub fn load_space(arg: Option<&str>, inv: &Inventory) -> anyhow::Result<SearchSpace> {
    Ok(shipped::space(
        arg.unwrap_or(inv.default_space),
        &inv.layers,
    )?)
}

/// The store `--store` names (a folder or a `postgres://` URL), opened for `access`. A sled store
/// that a running search holds is read through its live view, and standard error says so and how old
/// the view is.
pub fn open_store(location: &Location, access: Access) -> anyhow::Result<Box<dyn Store>> {
    Ok(open_opened(location, access)?.store)
}

/// [`open_store`], keeping what [`store::Opened`] says of a live view (commands that would add to the
/// store, such as held-out evaluations, must not try through one).
pub fn open_opened(location: &Location, access: Access) -> anyhow::Result<store::Opened> {
    let opened = store::open(location, access)?;
    if let Some(live) = &opened.live {
        eprintln!("note: store {location}: {live}");
    }
    Ok(opened)
}

/// A ready evaluator, the space resolved against the layers the model runs, and the seconds the f32
/// reference took. Says on standard error what was loaded and how long it took.
pub fn evaluator(a: &EvaluatorArgs) -> anyhow::Result<(CandleEvaluator, SearchSpace, f64)> {
    let started = std::time::Instant::now();
    let data_file = a.data.data.as_deref().map(|p| p.display().to_string());
    let (net, data) = mpsearch::eval::load_run_data(
        &a.input.model.model,
        data_file.as_deref(),
        a.data.samples.map(|n| n as usize),
    )?;
    // The space is resolved against the layers the model runs (an encoder never runs its pooler).
    let space = load_space(a.input.space.as_deref(), net.inventory())?;
    let settings = EvalSettings {
        scale: a.data.scale.method(),
        rounding: a.data.rounding()?,
        importance: a.data.importance.importance(),
        cache_bytes: a.cache_mb.saturating_mul(1 << 20),
        ..EvalSettings::default()
    };
    let description = data.description.clone();
    let name = net.inventory().name.clone();
    let t0 = std::time::Instant::now();
    let evaluator = CandleEvaluator::new(net, data, settings)?;
    let forward = t0.elapsed().as_secs_f64();
    eprintln!(
        "model {name} ({} layers), space `{}`, data: {description}; loaded and f32 reference computed in {:.1} s",
        evaluator.model().inventory().layers.len(),
        space.name,
        started.elapsed().as_secs_f64()
    );
    importance_scores(&evaluator, &space)?;
    Ok((evaluator, space, forward))
}

/// Takes `ev`'s gradient importance scores now, under a progress bar, when a choice of `space` prunes
/// by them (rather than silently inside the first pruned evaluation); they are kept by the evaluator.
pub fn importance_scores(ev: &CandleEvaluator, space: &SearchSpace) -> anyhow::Result<()> {
    if ev.space_needs_scores(space) {
        let started = std::time::Instant::now();
        let samples = ev.data().sizes.calibration;
        let bar = super::output::progress_bar(samples, "pruning importance: calibration gradients");
        ev.weight_scores_with(&mut |d, _| bar.set_position(d as u64))?;
        bar.finish_and_clear();
        eprintln!(
            "pruning importance: {} scores from {samples} calibration samples in {:.1} s",
            ev.settings().importance,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
