//! # `store`
//!
//! Whole stores: `store copy FROM TO` copies every record of one store into another (sled folders
//! and PostgreSQL databases, either way), then says what it copied and what the target had already.

use std::process::ExitCode;

use mpsearch::store::{self, Access, CopySummary};

use super::args::{StoreCommand, StoreCommandArgs, StoreCopyArgs};
use super::setup::open_store;

pub fn run(a: StoreCommandArgs) -> anyhow::Result<ExitCode> {
    match a.command {
        StoreCommand::Copy(c) => copy(c),
    }
}

fn copy(a: StoreCopyArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        a.from != a.to,
        "FROM and TO are the same store ({}): give another TO",
        a.from
    );
    let from = open_store(&a.from, Access::Read)?;
    let to = open_store(&a.to, Access::Write)?;
    let s = store::copy(&*from, &*to)?;
    println!("{}", describe(&s, &a.from.to_string(), &a.to.to_string()));
    Ok(ExitCode::SUCCESS)
}

/// What a copy did, in one paragraph.
fn describe(s: &CopySummary, from: &str, to: &str) -> String {
    let mut text = format!(
        "copied {} ({} trials, {} strategy snapshots, {} latency measurements), {}, {} and {} from \
         {from} to {to}",
        plural(s.runs, "run"),
        s.trials,
        s.snapshots,
        s.measurements,
        plural(s.recovered, "recovered variant"),
        plural(s.cached, "cached evaluation"),
        plural(s.sensitivity, "sensitivity analysis"),
    );
    if s.runs_present + s.recovered_present + s.cached_present + s.sensitivity_present > 0 {
        text.push_str(&format!(
            "; {to} already held {} (identical), {}, {} and {} (kept)",
            plural(s.runs_present, "run"),
            plural(s.recovered_present, "recovered variant"),
            plural(s.cached_present, "cached evaluation"),
            plural(s.sensitivity_present, "sensitivity analysis"),
        ));
    }
    text
}

fn plural(n: usize, what: &str) -> String {
    match (n, what.strip_suffix("is")) {
        (1, _) => format!("1 {what}"),
        (_, Some(stem)) => format!("{n} {stem}es"),
        _ => format!("{n} {what}s"),
    }
}
