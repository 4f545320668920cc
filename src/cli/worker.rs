//! # `worker`
//!
//! A worker on a shared store (see [`mpsearch::search::worker`]): it says what it does, one line per
//! event, until Ctrl-C (the evaluations in hand are finished and handed back first; a second Ctrl-C
//! quits at once, and their claims lapse for other workers to take) or `--idle`.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mpsearch::search::worker::{self, WorkerEvent, WorkerOptions};
use mpsearch::store::{Access, TrialState};

use super::args::WorkerArgs;
use super::drive;
use super::output::quality;
use super::setup::open_store;

pub fn run(a: WorkerArgs) -> anyhow::Result<ExitCode> {
    let (lease, idle) = a.check()?;
    let store = open_store(&a.store, Access::Write)?;
    let stop = drive::stop_flag()?;
    let options = WorkerOptions {
        jobs: a.jobs,
        lease: Duration::from_secs_f64(lease),
        idle: idle.map(Duration::from_secs_f64),
    };
    let location = a.store.clone();
    let say = move |e: WorkerEvent| match e {
        WorkerEvent::Started(me) => eprintln!(
            "worker {} on {location}: evaluating what runs queue for workers ({} at once; Ctrl-C \
             to stop)",
            me.id, options.jobs
        ),
        WorkerEvent::Attached { run, seconds } => {
            eprintln!(
                "run `{run}`: its model, data and profile loaded and checked in {seconds:.1} s"
            )
        }
        WorkerEvent::Refused { run, why } => {
            eprintln!("run `{run}`: refused, its trials are left to other workers — {why}")
        }
        WorkerEvent::Finished {
            run,
            trial,
            seconds,
            kept,
        } => {
            let what = match (trial.state, trial.quality) {
                (TrialState::Complete, Some(q)) => format!("quality {}", quality(q)),
                (TrialState::Pruned, _) => "pruned on its proxy".to_string(),
                _ => format!("failed: {}", trial.error.as_deref().unwrap_or("no quality")),
            };
            let dropped = if kept {
                ""
            } else {
                " (another worker had finished it: dropped)"
            };
            eprintln!(
                "run `{run}` trial {}: {what} in {seconds:.2} s{}{dropped}",
                trial.number,
                if trial.cached {
                    " (from the cache)"
                } else {
                    ""
                }
            )
        }
        WorkerEvent::HeartbeatFailed(why) => {
            eprintln!("warning: a heartbeat failed (claims lapse if this goes on): {why}")
        }
    };
    let summary = worker::work(&*store, options, &stop, &say)?;
    eprintln!(
        "worker stopped: {} trials finished{}",
        summary.finished,
        if summary.dropped > 0 {
            format!(
                ", {} finished after another worker (dropped)",
                summary.dropped
            )
        } else {
            String::new()
        }
    );
    Ok(if stop.load(Ordering::SeqCst) {
        drive::interrupted()
    } else {
        ExitCode::SUCCESS
    })
}
