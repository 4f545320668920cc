//! # Driving a run
//!
//! What `search` and `resume` share once their run is ready: Ctrl-C handling, progress of the set-up
//! and of the trials, the controller run (which ends by evaluating the front on the held-out split),
//! and the summary (front table with search and held-out qualities, where the run is stored, its
//! report, how to resume).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use mpsearch::cost::model::{format_bytes, format_us};
use mpsearch::search::{self, Control, Outcome, Progress, SetupPhase, StopReason};
use mpsearch::store::{HeldOut, HeldOutGap, Location, RunManifest, Store, TrialRecord};

use super::output::{progress_bar, quality, table, trial_bar};

/// Exit code of a run stopped by Ctrl-C (128 + SIGINT, as shells report it).
const INTERRUPTED: u8 = 130;

/// Installs the Ctrl-C / SIGTERM handler: the first stops the run after the evaluations in flight, a
/// second one quits at once (the journal stays consistent: unfinished trials are re-run on resume).
pub fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || {
        if s.swap(true, Ordering::SeqCst) {
            eprintln!("\nstopped at once; the unfinished work is done again on resume");
            std::process::exit(INTERRUPTED as i32);
        }
        eprintln!(
            "\nstopping after the work in flight (Ctrl-C again to quit at once; nothing is lost)"
        );
    })
    .context("cannot install the Ctrl-C handler")?;
    Ok(stop)
}

/// The session a set-up ([`search::create`], [`search::open`]) made ready, or `None` when the user
/// stopped it: then what the run kept is said, with how to resume it.
pub fn set_up(
    result: mpsearch::Result<(search::Session, RunManifest)>,
    name: &str,
    store: &dyn Store,
    location: &Location,
) -> anyhow::Result<Option<(search::Session, RunManifest)>> {
    let run = match result {
        Ok(ready) => return Ok(Some(ready)),
        Err(mpsearch::Error::Interrupted { run }) => run,
        Err(e) => {
            // A run that failed in its set-up is kept as far as it got: say how to go on.
            let kept = match &e {
                mpsearch::Error::RunChanged { .. } => None,
                _ => store
                    .run(name)
                    .ok()
                    .flatten()
                    .filter(mpsearch::store::in_set_up),
            };
            return Err(match kept {
                Some(m) => anyhow::Error::new(e).context(format!(
                    "run `{}` failed in its set-up; what it computed is kept, and once the cause is \
                     fixed `mpsearch resume {}{}` continues it",
                    m.name,
                    m.name,
                    store_arg(location)
                )),
                None => e.into(),
            });
        }
    };
    let m = mpsearch::store::find_run(store, &run)?;
    let measured = m.evaluations.map_or(0, |e| e.setup.evaluated);
    eprintln!(
        "run `{run}` stopped in its set-up after {}: what it computed is kept (its cheap errors so \
         far, and {measured} one-at-a-time measurements)\nresume with: mpsearch resume {run}{}",
        super::output::duration(m.setup_seconds.unwrap_or(0.0)),
        store_arg(location)
    );
    Ok(None)
}

/// The exit code of a run the user stopped.
pub fn interrupted() -> ExitCode {
    ExitCode::from(INTERRUPTED)
}

/// ` --store LOCATION` for a command line, or nothing for the default store.
fn store_arg(location: &Location) -> String {
    if *location == Location::Sled("mpsearch-store".into()) {
        String::new()
    } else {
        format!(" --store {location}")
    }
}

/// Progress of the set-up (the sensitivity analysis) of a run with a time budget of `time_seconds`
/// (`--time`), if any, whose set-up already took `spent` seconds in earlier sessions.
pub fn setup_progress(
    time_seconds: Option<f64>,
    spent: f64,
) -> impl FnMut(SetupPhase, usize, usize) {
    let share = time_seconds.map(|t| (mpsearch::search::frugal::SETUP_SHARE * t - spent).max(0.0));
    let set_up_started = std::time::Instant::now();
    let bar = progress_bar(0, "sensitivity: cheap errors");
    let mut phase = None;
    let mut started = std::time::Instant::now();
    let mut told = false;
    move |p, d, t| {
        if phase != Some(p) {
            phase = Some(p);
            started = std::time::Instant::now();
            bar.reset();
            bar.set_length(t as u64);
            bar.set_message(match p {
                SetupPhase::Importance => "pruning importance: calibration gradients",
                SetupPhase::CheapErrors => "sensitivity: cheap errors",
                SetupPhase::Measurements => "sensitivity: one at a time",
                SetupPhase::Frugal => "sensitivity: one at a time (frugal, at most)",
            });
            if p == SetupPhase::Frugal {
                let time = share.map_or(String::new(), |s| {
                    format!(
                        ", and within {} of the run's time, cheap errors included",
                        super::output::duration(s)
                    )
                });
                bar.suspend(|| {
                    eprintln!(
                        "sensitivity: frugal set-up, at most {t} one-at-a-time measurements (a fifth of \
                         the run's budget, at least one per searchable group{time}; it stops once the \
                         predicted front is stable)"
                    )
                });
            }
        }
        // The set-up's time, said up front (also without a terminal, where no bar is drawn): from the
        // first measurements' pace.
        let measuring = matches!(p, SetupPhase::Measurements | SetupPhase::Frugal);
        if measuring && !told && d >= 2 && d < t {
            told = true;
            let each = started.elapsed().as_secs_f64() / d as f64;
            let (n, most) = match p {
                SetupPhase::Frugal => ("at most ", "at most "),
                _ => ("", ""),
            };
            // The frugal set-up also stops at its share of a time budget.
            let left = share
                .filter(|_| p == SetupPhase::Frugal)
                .map(|s| (s - set_up_started.elapsed().as_secs_f64()).max(0.0));
            let rest = each * t as f64;
            let bound = left.map_or(rest, |l| rest.min(started.elapsed().as_secs_f64() + l));
            bar.suspend(|| {
                eprintln!(
                    "sensitivity: {n}{t} one-at-a-time measurements, {each:.1} s each so far: {most}about \
                     {} for the set-up{}",
                    super::output::duration(bound),
                    if bound < rest {
                        " (its share of the run's time)"
                    } else {
                        ""
                    }
                )
            });
        }
        bar.set_position(d as u64);
        if d == t && measuring {
            bar.finish_and_clear();
        }
    }
}

/// Says on standard error what the run searches, the objective's reachable range, the data's splits,
/// and its notes.
pub fn describe(session: &search::Session) {
    let c = &session.config;
    let f = session.table.feasibility(session.objective);
    eprintln!(
        "model {}, space `{}` ({} searchable groups, {:.3e} assignments), profile `{}`; {} from {} to {}; \
         one evaluation ≈ {:.2} s",
        c.model,
        session.space.name,
        session.space.searchable_groups().count(),
        session.space.size(),
        session.profile.name(),
        session.objective,
        session.objective.format(f.min),
        session.objective.format(f.max),
        session.forward_seconds
    );
    eprintln!(
        "data: {} (quality is searched on the search split; the front is also measured on the \
         held-out one)",
        session.evaluator.data().description
    );
    if let Some(trials) = c.trials {
        eprintln!(
            "budget: {trials} trials, at most about {} of evaluations (fewer where the cache answers)",
            super::output::duration(trials as f64 * session.forward_seconds)
        );
    }
    for n in &session.notes {
        eprintln!("note: {n}");
    }
}

/// Runs the trials with a progress bar (evaluated here, `jobs` at once, or by workers), prints the
/// summary, and returns 0, or 130 when interrupted.
pub fn drive(
    session: &search::Session,
    store: &dyn Store,
    manifest: RunManifest,
    jobs: usize,
    workers: bool,
    stop: &AtomicBool,
    location: &Location,
) -> anyhow::Result<ExitCode> {
    let bar = trial_bar(&manifest.name, manifest.config.trials);
    if workers {
        bar.suspend(|| {
            eprintln!(
                "workers: each batch is queued in {location} for `mpsearch worker --store \
                 {location}` processes"
            )
        });
    }
    let mut say = |m: &str| bar.suspend(|| eprintln!("note: {m}"));
    let mut on_progress = |p: &Progress| {
        bar.set_position(p.trials);
        let pruned = if p.evaluations.proxy.evaluated + p.evaluations.proxy.cached > 0 {
            format!(" · pruned {}", p.pruned)
        } else {
            String::new()
        };
        bar.set_message(format!(
            "evaluations {} (set-up {}) · cache hits {} · failed {}{pruned} · front {} · HV {:.4}",
            p.evaluations.total,
            p.evaluations.setup.evaluated,
            p.cache_hits,
            p.failed,
            p.front,
            p.hypervolume
        ));
    };
    let mut control = Control {
        jobs,
        workers: if workers { Some(&mut say) } else { None },
        stop,
        progress: &mut on_progress,
    };
    let outcome = search::run(
        session,
        session.evaluator.as_ref(),
        store,
        manifest,
        &mut control,
    )?;
    bar.finish_and_clear();
    summarise(session, store, &outcome, location)?;
    Ok(if outcome.reason == StopReason::Interrupted {
        ExitCode::from(INTERRUPTED)
    } else {
        ExitCode::SUCCESS
    })
}

/// How often the evaluator's emulated block layers found their dequantized weight in the process's
/// f32 tier ([`mpsearch::model::DenseTier`]); nothing when no such layer ran.
fn dense_tier_line(s: &mpsearch::model::DenseTierStats) -> String {
    let runs = s.hits + s.misses;
    if runs == 0 {
        return String::new();
    }
    format!(
        "f32 tier of dequantized block weights: {} of {} layer products hit ({:.1}%), {} MiB of {} MiB held\n",
        s.hits,
        runs,
        100.0 * s.hits as f64 / runs as f64,
        s.bytes >> 20,
        s.capacity_bytes >> 20
    )
}

fn summarise(
    session: &search::Session,
    store: &dyn Store,
    o: &Outcome,
    location: &Location,
) -> anyhow::Result<()> {
    let m = &o.manifest;
    let why = match o.reason {
        StopReason::Trials => "trial budget spent",
        StopReason::Time => "time budget spent",
        StopReason::Interrupted => "interrupted",
        StopReason::Exhausted => "the strategy has nothing left to propose",
    };
    if let Some(h) = &o.held_out {
        super::report::held_out_summary(h);
    }
    let front = mpsearch::store::front(&m.config, &o.trials);
    let (held_out, gap) = mpsearch::store::front_held_out(store, m, &front)?;
    let mut out = format!(
        "run `{}`: {why} after {} trials ({} this session: {} evaluated, {} from the cache) in {:.1} s; \
         strategy time {:.2}% of the session\n\n",
        m.name,
        o.trials.len(),
        o.new_trials,
        o.evaluated,
        o.cache_hits,
        o.seconds,
        100.0 * o.strategy_seconds / o.seconds.max(1e-9)
    );
    out.push_str(&evaluations_line(&mpsearch::store::evaluations(
        m, &o.trials,
    )));
    if let Some(p) = mpsearch::store::proxy_summary(&o.trials) {
        out.push_str(&proxy_line(&p));
    }
    out.push_str(&refinement_line(&o.refinements));
    out.push_str(&dense_tier_line(
        &mpsearch::model::DenseTier::global().stats(),
    ));
    out.push_str(&front_table(
        mpsearch::eval::Evaluator::objective(session.evaluator.as_ref()),
        &front,
        &held_out,
    ));
    out.push_str(&gap_line(session, gap.as_ref()));
    let store_arg = store_arg(location);
    out.push_str(&format!(
        "\nresults: store {} run `{}` — `mpsearch trials {}{store_arg}` lists every trial, `mpsearch runs{store_arg}` \
         every run\n",
        location,
        m.name,
        m.name
    ));
    // The report of the run as it stands (also when interrupted); a failure costs the plots, never
    // the run.
    match super::report::write(store, &m.name, None, None) {
        Ok(index) => out.push_str(&format!("report: {}\n", index.display())),
        Err(e) => eprintln!(
            "warning: the report of run `{}` could not be written: {e:#}",
            m.name
        ),
    }
    if o.reason == StopReason::Interrupted {
        out.push_str(&format!(
            "resume with: mpsearch resume {}{store_arg}\n",
            m.name
        ));
    }
    print!("{out}");
    Ok(())
}

/// The run's model evaluations by what they were for, in a sentence.
fn evaluations_line(e: &mpsearch::store::EvaluationCounts) -> String {
    let part = |what: &str, c: mpsearch::store::EvalCount| {
        if c.cached > 0 {
            format!("{what} {} (+{} from the cache)", c.evaluated, c.cached)
        } else {
            format!("{what} {}", c.evaluated)
        }
    };
    let proxies = e.proxy.evaluated + e.proxy.cached;
    let (in_full, proxy) = if proxies > 0 {
        (
            format!(" ({:.1} in full evaluations)", e.full_equivalent),
            format!(", {}", part("proxies", e.proxy)),
        )
    } else {
        (String::new(), String::new())
    };
    format!(
        "evaluations: {}{in_full} in all — {}, {}, {}{proxy}, {}{}\n\n",
        e.total,
        part("set-up", e.setup),
        part("baselines", e.baselines),
        part("trials", e.trials),
        part("held-out", e.held_out),
        if e.complete {
            ""
        } else {
            " (this run was recorded before its set-up and held-out evaluations were counted)"
        }
    )
}

/// What the trials' refits of the predictor chose in this session, in a sentence (empty without one).
fn refinement_line(refits: &[mpsearch::strategy::refine::Choice]) -> String {
    if refits.is_empty() {
        return String::new();
    }
    let each: Vec<String> = refits
        .iter()
        .map(|c| match (c.fit, &c.failure) {
            (_, Some(why)) => format!(
                "at {} trials the set-up's kept (no refit could be computed: {why})",
                c.at
            ),
            (None, None) if c.checked == 0 => format!(
                "at {} trials the set-up's kept (no complete trial in the later half to check a \
                 refit on)",
                c.at
            ),
            (None, None) => format!(
                "at {} trials the set-up's kept (mean squared log error {:.3} on the later {}; no \
                 refit fitted on the first half did 5% better)",
                c.at, c.set_up_error, c.checked
            ),
            (Some(fit), None) => format!(
                "at {at} trials the {kind} refit (mean squared log error on the later {checked}: \
                 {before:.3} with the set-up's, {after:.3} fitted on the first half)",
                at = c.at,
                kind = match fit {
                    mpsearch::sensitivity::Fit::Absolute => "absolute",
                    mpsearch::sensitivity::Fit::Relative => "relative",
                },
                checked = c.checked,
                before = c.set_up_error,
                after = c.error
            ),
        })
        .collect();
    format!(
        "predictor: refitted to the trials — {}\n\n",
        each.join("; ")
    )
}

/// What the proxy evaluations (`--fidelity`) did, in a sentence.
fn proxy_line(p: &mpsearch::store::ProxySummary) -> String {
    let rho = p
        .spearman
        .map_or("no proxy-vs-full rank correlation yet".to_string(), |r| {
            format!(
                "proxy-vs-full Spearman ρ {r:.3} over the {} trials evaluated both ways",
                p.promoted
            )
        });
    format!(
        "proxy: the first {} search samples ({:.0}% of the split); {} trials evaluated on it, {} \
         then in full, {} pruned; {rho}\n\n",
        p.samples,
        100.0 * p.share,
        p.proxies,
        p.promoted,
        p.pruned
    )
}

/// The front as a table: point number, trial, quality and accuracy (classifiers) or mean cosine on
/// the search split and on the held-out split, latency, size.
fn front_table(objective: &str, front: &[&TrialRecord], held_out: &[Option<HeldOut>]) -> String {
    if front.is_empty() {
        return "no complete trial meets the limits yet\n".to_string();
    }
    let second = |m: &std::collections::BTreeMap<String, f64>| {
        m.get("accuracy")
            .or_else(|| m.get("mean_cosine"))
            .map_or("-".into(), |v| format!("{v:.4}"))
    };
    let rows: Vec<Vec<String>> = front
        .iter()
        .zip(held_out)
        .enumerate()
        .map(|(i, (t, h))| {
            vec![
                format!("{}", i + 1),
                t.number.to_string(),
                quality(t.quality.unwrap_or(f64::NAN)),
                h.as_ref().map_or("-".into(), |h| quality(h.quality)),
                second(&t.metrics),
                h.as_ref().map_or("-".into(), |h| second(&h.metrics)),
                format_us(t.cost.latency_us),
                format_bytes(t.cost.bytes as f64),
            ]
        })
        .collect();
    let name = if front[0].metrics.contains_key("accuracy") {
        "accuracy"
    } else {
        "mean cosine"
    };
    let (held, held_second) = ("held-out".to_string(), format!("held-out {name}"));
    format!(
        "front ({} points, {objective} on the search split and on the held-out split, lower is \
         better):\n{}",
        front.len(),
        table(
            &[
                "point",
                "trial",
                objective,
                &held,
                name,
                &held_second,
                "latency",
                "size"
            ],
            &rows,
            0
        )
    )
}

/// The search-vs-held-out gap of the front, in a sentence (with the splits' sizes).
fn gap_line(session: &search::Session, gap: Option<&HeldOutGap>) -> String {
    let sizes = session.evaluator.data().sizes;
    let Some(g) = gap else {
        return format!(
            "held-out split ({} samples): no front point evaluated on it yet (`mpsearch report` or \
             `mpsearch resume` does it)\n",
            sizes.held_out
        );
    };
    let relative = g
        .mean_relative
        .map(|r| format!(" ({:+.1}% of the quality)", 100.0 * r))
        .unwrap_or_default();
    format!(
        "held-out − search quality over {} front points ({} held-out samples, {} search samples): mean \
         {:+.3e}{relative}, worst {:+.3e} (trial {}){}\n",
        g.points,
        sizes.held_out,
        sizes.search,
        g.mean,
        g.worst,
        g.worst_trial,
        if g.missing > 0 {
            format!("; {} points not evaluated on it", g.missing)
        } else {
            String::new()
        }
    )
}
