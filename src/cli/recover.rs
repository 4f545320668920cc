//! # `recover`
//!
//! Fine-tunes a front point of a stored run ([`mpsearch::recover`]) under a progress bar (epoch,
//! step, loss), stores the recovered variant in the run, and says what it gained: the point's
//! held-out and search quality before → after. Ctrl-C ends training after the current step and
//! stores the best checkpoint so far, marked interrupted (exit code 130).

use std::process::ExitCode;
use std::sync::atomic::Ordering;

use indicatif::{ProgressBar, ProgressStyle};
use mpsearch::recover::{self, Progress, Recovered, Request};
use mpsearch::store::{self, Access, Location, RecoveredRecord, RecoveredState};

use super::args::RecoverArgs;
use super::output::{emit, quality};
use super::setup::open_opened;

/// Exit code of a recovery stopped by Ctrl-C (its best checkpoint stored).
const INTERRUPTED: u8 = 130;

pub fn run(a: RecoverArgs) -> anyhow::Result<ExitCode> {
    if let Location::Sled(dir) = &a.store.store {
        anyhow::ensure!(
            dir.is_dir(),
            "store {} does not exist: pass the --store folder the search used (default ./mpsearch-store)",
            dir.display()
        );
    }
    let opened = open_opened(&a.store.store, Access::Write)?;
    let store = opened.store;
    let manifest = store::find_run(&*store, &a.run)?;
    let request = Request {
        point: a.point,
        epochs: a.epochs,
        lr: a.lr,
        batch: a.batch,
        alpha: a.alpha,
        temperature: a.temperature,
        seed: a.seed,
        loss: a.loss.clone(),
        data: a.data.clone(),
    };
    let stop = super::drive::stop_flag()?;
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template(
            "recover {bar:30} {pos}/{len} steps  {msg}  {elapsed_precise} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut show = |p: &Progress| {
        bar.set_length(p.total_steps);
        bar.set_position(p.step);
        bar.set_message(format!(
            "epoch {}/{}  loss {:.4}  best validation {:.4}",
            p.epoch, p.epochs, p.loss, p.best
        ));
    };
    let result = recover::recover(&*store, &manifest, &request, &mut show, &stop);
    bar.finish_and_clear();
    let r = result?;
    if a.json {
        emit(&(json(&manifest.name, &r)? + "\n"))?;
    } else {
        describe(&manifest.name, &r, &a.store.store);
    }
    Ok(
        if r.record.state == RecoveredState::Interrupted && !r.cached && stop.load(Ordering::SeqCst)
        {
            ExitCode::from(INTERRUPTED)
        } else {
            ExitCode::SUCCESS
        },
    )
}

/// The stored record with the run, the point and whether it was found in the store.
fn json(run: &str, r: &Recovered) -> anyhow::Result<String> {
    let mut v = serde_json::to_value(&r.record)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("run".into(), run.into());
        o.insert("point".into(), r.point.into());
        o.insert("cached".into(), r.cached.into());
        o.insert(
            "assignment".into(),
            serde_json::to_value(&r.trial.assignment)?,
        );
    }
    Ok(serde_json::to_string(&v)?)
}

/// `accuracy 0.7750 → 0.9750` for each metric both have that people read.
pub fn gains(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) -> String {
    ["accuracy", "mean_cosine"]
        .iter()
        .filter_map(|m| {
            Some(format!(
                "{m} {:.4} → {:.4}",
                before.get(*m)?,
                after.get(*m)?
            ))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe(run: &str, r: &Recovered, location: &Location) {
    let rec: &RecoveredRecord = &r.record;
    let c = &rec.recipe;
    let how = if r.cached {
        "found in the store (same point, recipe and seed: nothing trained)".to_string()
    } else {
        format!("trained in {:.1} s on {} threads", rec.seconds, rec.threads)
    };
    eprintln!(
        "run `{run}` point {} (trial {}): recovered variant {} — {how}",
        r.point,
        rec.trial,
        &rec.key[..12.min(rec.key.len())]
    );
    let state = match rec.state {
        RecoveredState::Complete => String::new(),
        RecoveredState::Interrupted => " — INTERRUPTED, best checkpoint so far kept".to_string(),
    };
    eprintln!(
        "  {} of {} steps ({} epochs, batch {}, lr {:e}, alpha {}, T {}, seed {}){state}; weights of \
         step {} (validation loss {:.4}, was {:.4} on {})",
        rec.steps,
        rec.total_steps,
        c.epochs,
        c.batch,
        c.lr,
        c.alpha,
        c.temperature,
        c.seed,
        rec.best_step,
        rec.validation_loss,
        rec.initial_validation_loss,
        rec.validation
    );
    eprintln!(
        "  trained on {}: straight-through fake quantization (scales re-derived from the current \
         weights every step), pruning masks fixed, low-rank factors trained, lookup tables not \
         trained",
        c.data
    );
    if let (Some(b), Some(h)) = (rec.before_held_out_quality, rec.held_out_quality) {
        let g = gains(&rec.before_held_out_metrics, &rec.held_out_metrics);
        eprintln!(
            "  held-out: quality {} → {}{}",
            quality(b),
            quality(h),
            if g.is_empty() { g } else { format!(", {g}") }
        );
    }
    if let Some(q) = r.trial.quality {
        let g = gains(&r.trial.metrics, &rec.metrics);
        eprintln!(
            "  search:   quality {} → {}{}",
            quality(q),
            quality(rec.quality),
            if g.is_empty() { g } else { format!(", {g}") }
        );
    }
    let store_arg = match location {
        Location::Sled(d) if d.as_os_str() == "mpsearch-store" => String::new(),
        l => format!(" --store {l}"),
    };
    eprintln!(
        "  export it: mpsearch export {run} --point {} --recovered --format safetensors{store_arg}",
        r.point
    );
}
