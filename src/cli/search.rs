//! `search`, `resume`, `runs` and `trials`: arguments resolved into a run configuration, the library's
//! controller driven with a progress bar and Ctrl-C, and the store's runs and trials printed.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use mpsearch::compress::ScaleMethod;
use mpsearch::cost::model::{format_bytes, format_us, parse_budget};
use mpsearch::cost::Objective;
use mpsearch::search::{self, Control, Outcome, Progress, SetupPhase, StopReason};
use mpsearch::store::{self, RunConfig, RunManifest, SledStore, Store, TrialRecord};
use mpsearch::strategy::StrategyKind;

use crate::{emit, progress_bar, table, ResumeArgs, RunsArgs, ScaleArg, SearchArgs, TrialsArgs};

/// The strategy `--strategy auto` picks, and why (the comparison is in BENCHMARKS.md: the best
/// hypervolume on MiniLM-L6 and on the synthetic problem, within 0.2% of the exact front on the demo, whose
/// sensitivity model is nearly exact; and unlike `exact` it goes on improving once the predicted front is
/// measured).
const AUTO: StrategyKind = StrategyKind::Bayes;
const AUTO_WHY: &str =
    "Gaussian process on the sensitivity model's residuals, seeded with its exact front";

/// Trial budget of a search given neither --trials nor --time.
const DEFAULT_TRIALS: u64 = 500;

/// Exit code of a run stopped by Ctrl-C (128 + SIGINT, as shells report it).
const INTERRUPTED: u8 = 130;

fn parse_duration(text: &str, flag: &str) -> anyhow::Result<f64> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        anyhow::anyhow!("{flag} `{text}`: {e}; write a duration such as 90s, 45m, 8h or 1h30m")
    })?;
    anyhow::ensure!(!d.is_zero(), "{flag} must be longer than 0");
    Ok(d.as_secs_f64())
}

fn open_store(dir: &Path) -> anyhow::Result<SledStore> {
    Ok(SledStore::open(dir)?)
}

/// Installs the Ctrl-C / SIGTERM handler: the first stops the run after the evaluations in flight, a
/// second one quits at once (the journal stays consistent: unfinished trials are re-run on resume).
fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || {
        if s.swap(true, Ordering::SeqCst) {
            eprintln!("\nstopped at once; unfinished trials will be re-run on resume");
            std::process::exit(INTERRUPTED as i32);
        }
        eprintln!(
            "\nstopping after the evaluations in flight (Ctrl-C again to quit at once; nothing is lost)"
        );
    })
    .context("cannot install the Ctrl-C handler")?;
    Ok(stop)
}

pub fn search_cmd(a: SearchArgs) -> anyhow::Result<ExitCode> {
    let objective: Objective = a.objective.parse().map_err(anyhow::Error::msg)?;
    let (kind, picked) = match a.strategy.as_str() {
        "auto" => (AUTO, true),
        s => (
            StrategyKind::parse(s).ok_or_else(|| {
                anyhow::anyhow!("--strategy `{s}`: use auto, exact, evolution, bayes or random")
            })?,
            false,
        ),
    };
    anyhow::ensure!(a.jobs >= 1, "--jobs must be at least 1");
    anyhow::ensure!(a.ask >= 1, "--ask must be at least 1");
    anyhow::ensure!(a.trials != Some(0), "--trials must be at least 1");
    // An overnight run given a time budget is not cut short by the default trial budget.
    let trials = match (a.trials, &a.time) {
        (Some(n), _) => Some(n),
        (None, Some(_)) => None,
        (None, None) => Some(DEFAULT_TRIALS),
    };
    let budget = |o: Objective, v: &Option<String>, flag: &str| -> anyhow::Result<Option<f64>> {
        v.as_deref()
            .map(|t| parse_budget(o, t).map_err(|e| anyhow::anyhow!("{flag}: {e}")))
            .transpose()
    };
    let inventory = crate::load_model(&a.model.model)?;
    let space = a
        .space
        .clone()
        .unwrap_or_else(|| inventory.default_space.to_string());
    let config = RunConfig {
        model: a.model.model.clone(),
        data: a.data.as_ref().map(|p| p.display().to_string()),
        space: space.clone(),
        profile: a.profile.clone(),
        batch: a.batch,
        strategy: kind,
        objective,
        max_latency_us: budget(Objective::Latency, &a.max_latency, "--max-latency")?,
        max_bytes: budget(Objective::Size, &a.max_size, "--max-size")?,
        max_bops: budget(Objective::Bops, &a.max_bops, "--max-bops")?,
        max_drop: a.max_drop,
        seed: a.seed,
        ask_batch: a.ask,
        trials,
        time_seconds: a
            .time
            .as_deref()
            .map(|t| parse_duration(t, "--time"))
            .transpose()?,
        scale: match a.scale {
            ScaleArg::Mse => ScaleMethod::Mse,
            ScaleArg::Minmax => ScaleMethod::MinMax,
        },
        pairs: a.pairs,
    };
    let store = open_store(&a.store.store)?;
    let name = match &a.run {
        Some(n) => {
            anyhow::ensure!(
                !n.is_empty() && !n.chars().any(|c| c.is_control() || c == '/'),
                "--run `{n}`: a run name needs at least one character and no `/` or control characters"
            );
            n.clone()
        }
        None => store::default_run_name(&store, &space, &a.profile)?,
    };
    if picked {
        eprintln!("strategy: auto picked `{}` ({AUTO_WHY})", kind.name());
    }
    let stop = stop_flag()?;
    let (session, manifest) = search::create(&store, &name, config, &mut setup_progress())?;
    describe(&session);
    drive(&session, &store, manifest, a.jobs, &stop, &a.store.store)
}

pub fn resume_cmd(a: ResumeArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.jobs >= 1, "--jobs must be at least 1");
    let store = open_store(&a.store.store)?;
    let stop = stop_flag()?;
    let (session, mut manifest) = search::open(&store, &a.run, &mut setup_progress())?;
    let done = store.trials(&manifest.name)?.len() as u64;
    if let Some(n) = a.trials {
        anyhow::ensure!(n >= 1, "--trials must be at least 1");
        manifest.config.trials = Some(done + n);
    }
    if let Some(t) = &a.time {
        manifest.config.time_seconds =
            Some(manifest.elapsed_seconds + parse_duration(t, "--time")?);
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
        store::listed_status(&manifest)
    );
    describe(&session);
    drive(&session, &store, manifest, a.jobs, &stop, &a.store.store)
}

/// Progress of the set-up (the sensitivity analysis).
fn setup_progress() -> impl FnMut(SetupPhase, usize, usize) {
    let bar = progress_bar(0, "sensitivity: cheap errors");
    let mut phase = None;
    move |p, d, t| {
        if phase != Some(p) {
            phase = Some(p);
            bar.reset();
            bar.set_length(t as u64);
            bar.set_message(match p {
                SetupPhase::CheapErrors => "sensitivity: cheap errors",
                SetupPhase::Measurements => "sensitivity: one at a time",
            });
        }
        bar.set_position(d as u64);
        if d == t && p == SetupPhase::Measurements {
            bar.finish_and_clear();
        }
    }
}

fn describe(session: &search::Session) {
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
    for n in &session.notes {
        eprintln!("note: {n}");
    }
}

fn drive(
    session: &search::Session,
    store: &SledStore,
    manifest: RunManifest,
    jobs: usize,
    stop: &AtomicBool,
    dir: &Path,
) -> anyhow::Result<ExitCode> {
    let name = manifest.name.clone();
    let bar = match manifest.config.trials {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::no_length(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} {bar:25} {pos}/{len} trials  {msg}  {elapsed_precise} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(name.clone());
    let mut on_progress = |p: &Progress| {
        bar.set_position(p.trials);
        bar.set_message(format!(
            "evaluated {} · cache hits {} · failed {} · front {} · HV {:.4}",
            p.evaluated, p.cache_hits, p.failed, p.front, p.hypervolume
        ));
    };
    let mut control = Control {
        jobs,
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
    summarise(session, store, &outcome, dir)?;
    Ok(if outcome.reason == StopReason::Interrupted {
        ExitCode::from(INTERRUPTED)
    } else {
        ExitCode::SUCCESS
    })
}

fn summarise(
    session: &search::Session,
    store: &dyn Store,
    o: &Outcome,
    dir: &Path,
) -> anyhow::Result<()> {
    let m = &o.manifest;
    let why = match o.reason {
        StopReason::Trials => "trial budget spent",
        StopReason::Time => "time budget spent",
        StopReason::Interrupted => "interrupted",
        StopReason::Exhausted => "the strategy has nothing left to propose",
    };
    let front = store::front(&m.config, &o.trials);
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
    out.push_str(&front_table(
        mpsearch::eval::Evaluator::objective(session.evaluator.as_ref()),
        &front,
    ));
    let store_arg = if dir == Path::new("mpsearch-store") {
        String::new()
    } else {
        format!(" --store {}", dir.display())
    };
    out.push_str(&format!(
        "\nresults: store {} run `{}` — `mpsearch trials {}{store_arg}` lists every trial, `mpsearch runs{store_arg}` \
         every run\n",
        dir.display(),
        m.name,
        m.name
    ));
    // The report of the run as it stands (also when interrupted); a failure costs the plots, never
    // the run.
    match crate::cli::report::write(store, &m.name, None, None) {
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

/// A quality value with 4 significant digits (KL divergences of good points are ~1e-5).
fn quality(q: f64) -> String {
    if q != 0.0 && q.abs() < 1e-3 {
        format!("{q:.3e}")
    } else {
        format!("{q:.5}")
    }
}

/// The front as a table: point number, trial, quality, accuracy (classifiers), latency, size.
fn front_table(objective: &str, front: &[&TrialRecord]) -> String {
    if front.is_empty() {
        return "no complete trial meets the limits yet\n".to_string();
    }
    let rows: Vec<Vec<String>> = front
        .iter()
        .enumerate()
        .map(|(i, t)| {
            vec![
                format!("{}", i + 1),
                t.number.to_string(),
                quality(t.quality.unwrap_or(f64::NAN)),
                t.metrics
                    .get("accuracy")
                    .or_else(|| t.metrics.get("mean_cosine"))
                    .map_or("-".into(), |v| format!("{v:.4}")),
                format_us(t.cost.latency_us),
                format_bytes(t.cost.bytes as f64),
            ]
        })
        .collect();
    let second = if front[0].metrics.contains_key("accuracy") {
        "accuracy"
    } else {
        "mean cosine"
    };
    format!(
        "front ({} points, {objective}, lower is better):\n{}",
        front.len(),
        table(
            &["point", "trial", objective, second, "latency", "size"],
            &rows,
            0
        )
    )
}

pub fn runs_cmd(a: RunsArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&a.store.store)?;
    let runs = store.runs()?;
    let mut docs = Vec::new();
    let mut rows = Vec::new();
    for m in &runs {
        let trials = store.trials(&m.name)?;
        let front = store::front(&m.config, &trials);
        let evaluated = trials
            .iter()
            .filter(|t| t.quality.is_some() && !t.cached)
            .count();
        let hits = trials
            .iter()
            .filter(|t| t.quality.is_some() && t.cached)
            .count();
        let status = store::listed_status(m);
        if a.json {
            docs.push(serde_json::json!({
                "name": m.name, "status": status.to_string(), "trials": trials.len(),
                "evaluated": evaluated, "cache_hits": hits, "profile": m.config.profile,
                "objective": m.config.objective, "strategy": m.config.strategy,
                "elapsed_seconds": m.elapsed_seconds, "seed": m.config.seed,
                "hypervolume": store::hypervolume(m, &trials),
                "front": front.iter().map(|t| front_json(t)).collect::<Vec<_>>(),
            }));
        } else {
            let best = front
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
            rows.push(vec![
                m.name.clone(),
                status.to_string(),
                m.config.strategy.to_string(),
                m.config.profile.clone(),
                trials.len().to_string(),
                evaluated.to_string(),
                hits.to_string(),
                front.len().to_string(),
                format!("{:.0} s", m.elapsed_seconds),
                best,
            ]);
        }
    }
    if a.json {
        return emit(&format!("{}\n", serde_json::to_string_pretty(&docs)?));
    }
    if rows.is_empty() {
        return emit(&format!(
            "store {} holds no runs; start one with `mpsearch search`\n",
            a.store.store.display()
        ));
    }
    emit(&table(
        &[
            "run",
            "status",
            "strategy",
            "profile",
            "trials",
            "evaluated",
            "cache hits",
            "front",
            "elapsed",
            "cheapest front points (quality@latency)",
        ],
        &rows,
        4,
    ))
}

fn front_json(t: &TrialRecord) -> serde_json::Value {
    serde_json::json!({
        "trial": t.number, "quality": t.quality, "cost": t.cost, "hash": t.hash,
        "assignment": t.assignment,
    })
}

pub fn trials_cmd(a: TrialsArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let store = open_store(&a.store.store)?;
    let m = store::find_run(&store, &a.run)?;
    let trials = store.trials(&m.name)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        for t in &trials {
            let v = serde_json::json!({
                "trial": t.number, "state": t.state.to_string(), "strategy": t.strategy,
                "quality": t.quality, "cost": t.cost, "hash": t.hash,
                "assignment": t.assignment,
                "cached": t.cached, "seconds": t.seconds, "metrics": t.metrics, "error": t.error,
            });
            writeln!(out, "{v}")?;
        }
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = trials
        .iter()
        .map(|t| {
            vec![
                t.number.to_string(),
                t.state.to_string(),
                t.strategy.clone(),
                t.quality
                    .map_or_else(|| t.error.clone().unwrap_or_default(), quality),
                format_us(t.cost.latency_us),
                format_bytes(t.cost.bytes as f64),
                if t.cached {
                    "cache".into()
                } else {
                    format!("{:.2} s", t.seconds)
                },
            ]
        })
        .collect();
    drop(out);
    emit(&table(
        &[
            "trial",
            "state",
            "strategy",
            "quality",
            "latency",
            "size",
            "evaluation",
        ],
        &rows,
        3,
    ))
}
