//! # `resume`
//!
//! A stored run opened again (its inputs checked against its fingerprints), its budget extended by
//! `--trials` or `--time` if asked, and driven on (see [`super::drive`]).

use std::process::ExitCode;

use mpsearch::search;
use mpsearch::store::Access;

use super::args::ResumeArgs;
use super::drive;
use super::setup::open_store;

pub fn run(a: ResumeArgs) -> anyhow::Result<ExitCode> {
    let more_seconds = a.check()?;
    let store = open_store(&a.store.store, Access::Write)?;
    // This process drives the run (another driver of it is refused before anything is loaded).
    let stored = mpsearch::store::find_run(&*store, &a.run)?;
    store.lock_run(&a.run)?;
    let stop = drive::stop_flag()?;
    // A run stopped in its set-up continues it (with what is left of its share of `--time`); any
    // other reuses its stored set-up (one the store lost is rebuilt, cut as its first build was).
    let mut progress = if mpsearch::store::in_set_up(&stored) {
        let spent = stored.setup_seconds.unwrap_or(0.0);
        eprintln!(
            "resuming run `{}` in its set-up ({} spent on it so far): what it kept is read back, the \
             rest computed",
            stored.name,
            super::output::duration(spent)
        );
        drive::setup_progress(stored.config.time_seconds, spent)
    } else {
        drive::setup_progress(None, 0.0)
    };
    let opened = search::open(&*store, &a.run, &stop, &mut progress);
    let Some((session, mut manifest)) = drive::set_up(opened, &a.run, &*store, &a.store.store)?
    else {
        return Ok(drive::interrupted());
    };
    let done = store.trials(&manifest.name)?.len() as u64;
    if let Some(n) = a.trials {
        manifest.config.trials = Some(done + n);
    }
    if let Some(s) = more_seconds {
        manifest.config.time_seconds = Some(manifest.elapsed_seconds + s);
    }
    if a.trials.is_none() && a.time.is_none() {
        let spent_trials = manifest.config.trials.is_some_and(|n| done >= n);
        let spent_time = manifest
            .config
            .time_seconds
            .is_some_and(|s| manifest.elapsed_seconds >= s);
        if spent_trials || spent_time {
            eprintln!(
                "run `{}` has spent its budget ({done} trials, {:.0} s); extend it with --trials N or --time D",
                manifest.name, manifest.elapsed_seconds
            );
        }
    }
    eprintln!(
        "resuming run `{}` at trial {done} ({})",
        manifest.name,
        mpsearch::store::listed_status(&manifest)
    );
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
