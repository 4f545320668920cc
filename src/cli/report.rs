//! # `report`
//!
//! A run's plots and HTML page from the store, optionally re-costed under another profile; and the
//! report `search` and `resume` write when a run ends or is interrupted. Before building it, the
//! command evaluates on the held-out split the front points that lack a held-out quality (the run's
//! model and data are loaded only then); the report itself is built from the store.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use mpsearch::report::{self, data::decode};
use mpsearch::search::held_out;
use mpsearch::store::{Access, LiveInfo, RunManifest, Store, TrialRecord};

use super::args::ReportArgs;
use super::setup::open_opened;

pub fn run(a: ReportArgs) -> anyhow::Result<ExitCode> {
    let opened = open_opened(&a.store.store, Access::Read)?;
    let store = &*opened.store;
    let data = report::load(store, &a.run, a.profile.as_deref())?;
    let manifest = mpsearch::store::find_run(store, &a.run)?;
    let trials = store.trials(&manifest.name)?;
    let front: Vec<&TrialRecord> = data
        .front
        .iter()
        .filter(|f| f.held_out.is_none())
        .filter_map(|f| trials.iter().find(|t| t.number == f.trial))
        .collect();
    complete_held_out(store, opened.live.as_ref(), &manifest, &front);
    let index = write(store, &a.run, a.profile.as_deref(), a.out.as_deref())?;
    println!("{}", index.display());
    Ok(ExitCode::SUCCESS)
}

/// Evaluates on the held-out split those of `trials` (of run `manifest`) whose held-out quality the
/// store lacks, loading the run's model and data only if one does. Says on standard error what it
/// did; when the run's evaluator cannot be had (the model or data moved or changed), warns and
/// leaves them missing: reports and exports still work, without those figures. So it does when
/// `store` is the `live` view of a sled store that a running search holds, which takes no writes:
/// nothing is evaluated then.
pub fn complete_held_out(
    store: &dyn Store,
    live: Option<&LiveInfo>,
    manifest: &RunManifest,
    trials: &[&TrialRecord],
) {
    let missing = match held_out::missing(store, manifest, trials) {
        Ok(m) if m.is_empty() => return,
        Ok(m) => m,
        Err(e) => {
            eprintln!("warning: held-out qualities could not be read: {e}");
            return;
        }
    };
    if let Some(live) = live {
        eprintln!(
            "note: {} point{} of run `{}` keep no held-out quality for now: the store is read \
             through the live view of the search that holds it (pid {}), which takes no \
             evaluations; run this again when that search has ended",
            missing.len(),
            if missing.len() == 1 { "" } else { "s" },
            manifest.name,
            live.pid
        );
        return;
    }
    eprintln!(
        "evaluating {} point{} of run `{}` on the held-out split…",
        missing.len(),
        if missing.len() == 1 { "" } else { "s" },
        manifest.name
    );
    let outcome = held_out::run_evaluator(manifest).and_then(|ev| {
        let layers = &ev.model().inventory().layers;
        let points = missing
            .iter()
            .map(|&t| Ok((t, decode(&t.assignment, layers)?)))
            .collect::<mpsearch::Result<Vec<_>>>()?;
        held_out::complete(&ev, store, manifest, &points)
    });
    match outcome {
        Ok(o) => {
            held_out_summary(&o);
            if let Err(e) = held_out::record(store, &manifest.name, &o) {
                eprintln!(
                    "warning: run `{}`: its held-out evaluations could not be counted: {e}",
                    manifest.name
                );
            }
        }
        Err(e) => eprintln!(
            "warning: {} point{} of run `{}` keep no held-out quality: {e}",
            missing.len(),
            if missing.len() == 1 { "" } else { "s" },
            manifest.name
        ),
    }
}

/// One line on standard error about completed held-out evaluations (and a warning per failure).
pub fn held_out_summary(o: &held_out::HeldOutOutcome) {
    if o.evaluated > 0 {
        eprintln!(
            "held-out split: {} point{} evaluated in {:.1} s ({} already in the store)",
            o.evaluated,
            if o.evaluated == 1 { "" } else { "s" },
            o.seconds,
            o.cached
        );
    }
    for f in &o.failed {
        eprintln!("warning: no held-out quality: {f}");
    }
}

/// Builds and writes the report of `run` (to `out`, default `mpsearch-reports/<run>[@<profile>]/`),
/// printing its notes to standard error; returns the page's path.
pub fn write(
    store: &dyn Store,
    run: &str,
    profile: Option<&str>,
    out: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    let data = report::load(store, run, profile)?;
    for n in &data.notes {
        eprintln!("note: {n}");
    }
    let dir = out.map_or_else(|| report::default_dir(&data), Path::to_path_buf);
    Ok(report::write(&data, &dir)?)
}
