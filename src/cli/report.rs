//! # `report`
//!
//! A run's plots and HTML page from the store, optionally re-costed under another profile; and the
//! report `search` and `resume` write when a run ends or is interrupted.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use mpsearch::report;
use mpsearch::store::{Access, Store};

use super::args::ReportArgs;
use super::setup::open_store;

pub fn run(a: ReportArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&a.store.store, Access::Read)?;
    let index = write(&*store, &a.run, a.profile.as_deref(), a.out.as_deref())?;
    println!("{}", index.display());
    Ok(ExitCode::SUCCESS)
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
