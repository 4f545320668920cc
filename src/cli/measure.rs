//! # `measure`
//!
//! Points of a stored run built as real compressed models and timed end to end on this machine,
//! against the latency the run's hardware profile predicts ([`mpsearch::measure`]). Every point is
//! checked before anything is loaded, the run's model and data are checked against its fingerprints,
//! and the measurements are stored with the run in one write once all of them are done: an error
//! leaves the store as it was.

use std::process::ExitCode;

use mpsearch::cost::model::format_us;
use mpsearch::measure::{self, input, timing, Machine, ProfileMatch, Selection, Target};
use mpsearch::model::ModelKind;
use mpsearch::store::{self, Access, Location, MeasurementRecord, RunManifest, TrialRecord};

use super::args::MeasureArgs;
use super::output::{emit, measure_bar, quality, show_progress, table};
use super::setup::open_store;

pub fn run(a: MeasureArgs) -> anyhow::Result<ExitCode> {
    a.check()?;
    if let Location::Sled(dir) = &a.store.store {
        anyhow::ensure!(
            dir.is_dir(),
            "store {} does not exist: pass the --store folder the search used (default ./mpsearch-store)",
            dir.display()
        );
    }
    // Measuring writes its results with the run: the store is opened for writing, and the run is
    // driven by this process meanwhile (a search driving it would also load the machine).
    let store = open_store(&a.store.store, Access::Write)?;
    let manifest = store::find_run(&*store, &a.run)?;
    store.lock_run(&manifest.name)?;
    let trials = store.trials(&manifest.name)?;
    let selection = Selection {
        picks: a
            .points
            .iter()
            .map(|&k| measure::Pick::Point(k))
            .chain(a.trials.iter().map(|&n| measure::Pick::Trial(n)))
            .collect(),
        front: a.front,
        random: a.random.unwrap_or(0),
        seed: a.seed,
    };
    let plan = measure::plan(&manifest, &trials, &selection)?;
    if let (Some(t), ModelKind::Classifier) = (a.tokens, plan.kind) {
        anyhow::bail!(
            "--tokens {t} applies to sequence models; model {} of run `{}` takes images",
            manifest.config.model,
            manifest.name
        );
    }
    eprintln!(
        "run `{}`: loading model {} and its data…",
        manifest.name, manifest.config.model
    );
    let loaded = measure::load_run(&manifest)?;
    let input = input::from_search_split(loaded.evaluator.data(), a.batch, a.tokens)?;
    let machine = Machine::this();
    let matched = measure::profile_match(&loaded.profile, &machine);
    let mut notes = plan.notes.clone();
    notes.extend(loaded.notes.iter().cloned());
    notes.push(prediction_note(&manifest, &matched));
    notes.push(non_matmul_note(&loaded, input.cost_batch));
    describe(
        &manifest,
        &plan.targets,
        &input,
        &machine,
        a.repetitions,
        a.seconds,
        a.rounds,
    );
    for n in &notes {
        eprintln!("note: {n}");
    }
    let opts = measure::Options {
        schedule: mpsearch::timing::Schedule {
            repetitions: a.repetitions,
            max_seconds: a.seconds,
            least: mpsearch::timing::Schedule::least_per_round(a.rounds),
            ..measure::Options::default().schedule
        },
        rounds: a.rounds,
        ..measure::Options::default()
    };
    let bar = measure_bar();
    let measured = measure::time_run(
        &loaded.evaluator,
        &input.batch,
        &plan.targets,
        &opts,
        &mut show_progress(&bar),
    )?;
    bar.finish_and_clear();
    let first = store
        .measurements(&manifest.name)?
        .last()
        .map_or(0, |m| m.number + 1);
    let records = measure::records(
        &plan.targets,
        &measured,
        &measure::Context {
            first,
            input: &input,
            layers: &plan.layers,
            profile_name: &manifest.config.profile,
            profile: &loaded.profile,
            machine: &machine,
            measured_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        },
    )?;
    store.put_measurements(&manifest.name, &records)?;
    eprintln!(
        "stored {} measurements with run `{}` (numbers {} to {})",
        records.len(),
        manifest.name,
        first,
        first + records.len() as u64 - 1
    );
    if let Some(w) = noisy_warning(&records) {
        eprintln!("warning: {w}");
    }
    if a.json {
        return emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&json(
                &manifest, &records, &input, &machine, &matched, &notes
            ))?
        ));
    }
    emit(&text(&records, &trials))
}

/// Says on standard error what is measured, on what, and how.
fn describe(
    m: &RunManifest,
    targets: &[Target],
    input: &input::MeasureInput,
    machine: &Machine,
    repetitions: usize,
    seconds: f64,
    rounds: usize,
) {
    let least = mpsearch::timing::Schedule::least_per_round(rounds);
    eprintln!(
        "run `{}`: measuring {} assignment{} and the all-f32 model on {} ({}, {} cores, candle \
         {} on {} thread(s)): {}; per assignment and round, warm-up passes then up to {repetitions} timed passes \
         (none started after {seconds} s once {} {} done), {rounds} round{} over all of them, the fastest pass reported (other processes only ever slow \
         a pass down)",
        m.name,
        targets.len(),
        if targets.len() == 1 { "" } else { "s" },
        machine.host,
        machine.cpu,
        machine.cores,
        machine.candle_version,
        machine.threads,
        input.description,
        least,
        if least == 1 { "is" } else { "are" },
        if rounds == 1 { "" } else { "s" }
    );
}

/// Whether the predictions include the model's non-matmul work (`[[model]]` of the profile).
fn non_matmul_note(loaded: &measure::RunModel, cost_batch: u32) -> String {
    let layers = &loaded.evaluator.model().inventory().layers;
    let key = mpsearch::cost::profile::layers_key(layers);
    match loaded.profile.non_matmul_us(&key, cost_batch) {
        Some(us) => format!(
            "predictions include the model's non-matmul work at cost batch {cost_batch}: {} \
             (profile `{}`, [[model]])",
            mpsearch::cost::model::format_us(us),
            loaded.profile.name()
        ),
        None => format!(
            "profile `{}` has no non-matmul term for this model: the predictions are its layers' \
             products alone (`mpsearch calibrate --model M` measures the rest on this machine)",
            loaded.profile.name()
        ),
    }
}

/// What the predictions are worth here: the run's profile against this machine.
fn prediction_note(m: &RunManifest, matched: &ProfileMatch) -> String {
    let p = &m.config.profile;
    match matched {
        ProfileMatch::ThisMachine => {
            format!("predictions: profile `{p}`, calibrated on this machine")
        }
        ProfileMatch::OtherMachine(on) => format!(
            "predictions: profile `{p}` was calibrated on another machine ({on}): the comparison is \
             against another machine's model, not a check of it (`mpsearch calibrate` makes one of \
             this machine; `mpsearch report RUN --profile calibrated-<host>` compares under it)"
        ),
        ProfileMatch::OtherThreads { calibrated, here } => format!(
            "predictions: profile `{p}` was calibrated on this machine with candle on {calibrated} \
             thread(s), and candle runs on {here} here (RAYON_NUM_THREADS): a \
             small model's latency changes several-fold with the thread count, so the comparison is \
             with another configuration's model (calibrate again with the same setting)"
        ),
        ProfileMatch::OtherDevice => format!(
            "predictions: profile `{p}` models another device, not this machine: the comparison is \
             against another device's model, not a check of it (`mpsearch calibrate` makes a profile \
             of this machine; `mpsearch report RUN --profile calibrated-<host>` compares under it)"
        ),
    }
}

/// A warning when some figures are noisy (see [`timing::noisy`]).
fn noisy_warning(records: &[MeasurementRecord]) -> Option<String> {
    let noisy: Vec<&MeasurementRecord> = records
        .iter()
        .filter(|r| timing::noisy(r.median_us, r.spread_us, &r.round_medians_us))
        .collect();
    if noisy.is_empty() {
        return None;
    }
    let load = records
        .iter()
        .filter_map(|r| r.other_load)
        .fold(None, |a: Option<f64>, l| Some(a.map_or(l, |a| a.max(l))));
    Some(format!(
        "{} of {} figures are noisy (spread above {:.0}% of the median, or rounds more than {}× \
         apart): {}{}. The machine is not quiet: candle's quantized kernels spin-wait and slow down \
         badly (up to 20×) when other processes share the cores. The figures are each the fastest \
         pass, which limits but does not remove the effect: measure again on a quiet machine",
        noisy.len(),
        records.len(),
        100.0 * timing::NOISY_SPREAD,
        timing::NOISY_ROUNDS,
        noisy
            .iter()
            .map(|r| r.source.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        load.map_or(String::new(), |l| format!(
            "; other processes used up to {:.0}% of the CPUs meanwhile",
            100.0 * l
        ))
    ))
}

/// The table of a measurement, and what it says in one line.
fn text(records: &[MeasurementRecord], trials: &[TrialRecord]) -> String {
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let q = match r.source {
                store::MeasuredSource::Trial { trial, .. } => trials
                    .iter()
                    .find(|t| t.number == trial)
                    .and_then(|t| t.quality)
                    .map_or("-".into(), quality),
                store::MeasuredSource::Reference => quality(0.0),
                store::MeasuredSource::Random { .. } => "-".into(),
            };
            vec![
                r.source.to_string(),
                q,
                format_us(r.figure_us()),
                format!("{:.1}%", 100.0 * r.spread_us / r.median_us),
                format_us(r.predicted_us),
                format!("{:.2}", r.figure_us() / r.predicted_us),
                format!("{:.2}×", r.speedup()),
            ]
        })
        .collect();
    let mut s = table(
        &[
            "measured",
            "quality",
            "latency",
            "spread",
            "predicted",
            "measured/predicted",
            "speed-up vs f32",
        ],
        &rows,
        1,
    );
    for summary in store::measurement_summaries(records) {
        if let Some(f) = summary.fidelity {
            s.push_str(&format!(
                "\n{}: predicted against measured over {} points: MAPE {:.1}%, Spearman {}\n",
                summary.setting,
                f.points,
                f.mape_percent,
                f.spearman.map_or("n/a".into(), |r| format!("{r:.3}"))
            ));
        }
    }
    s
}

fn json(
    m: &RunManifest,
    records: &[MeasurementRecord],
    input: &input::MeasureInput,
    machine: &Machine,
    matched: &ProfileMatch,
    notes: &[String],
) -> serde_json::Value {
    let matches = match matched {
        ProfileMatch::ThisMachine => "this-machine",
        ProfileMatch::OtherMachine(_) => "other-machine",
        ProfileMatch::OtherThreads { .. } => "other-threads",
        ProfileMatch::OtherDevice => "other-device",
    };
    serde_json::json!({
        "run": m.name,
        "machine": {"host": machine.host, "cpu": machine.cpu, "cores": machine.cores,
                    "threads": machine.threads,
                    "candle_version": machine.candle_version},
        "input": {"batch": input.samples, "tokens": input.tokens, "cost_batch": input.cost_batch,
                  "description": input.description},
        "profile": {"name": m.config.profile, "describes": matches},
        "measurements": records,
        "summary": store::measurement_summaries(records),
        "notes": notes,
    })
}
