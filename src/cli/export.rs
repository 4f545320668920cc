//! # `export`
//!
//! A point of a stored run as assignment JSON, llama.cpp `--tensor-type` lines, or compressed weights
//! in a safetensors file. The run's front points and the exported trial are evaluated on the
//! held-out split first if the store lacks their held-out quality (see [`super::report`]), so that
//! standard error and the safetensors metadata quote it beside the search-split quality; the
//! assignment JSON stays plain assignment JSON.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use mpsearch::cost::model::{format_bytes, format_us};
use mpsearch::eval::{CandleEvaluator, EvalData, Evaluator};
use mpsearch::export::safetensors::LayerCalibration;
use mpsearch::export::{self, llama, safetensors, Pick, Selected};
use mpsearch::model::{Model, ModelSource};
use mpsearch::recover::{RecoveredModel, RecoveredWeights};
use mpsearch::space::{Assignment, SearchSpace};
use mpsearch::store::{
    self, Access, HeldOut, Location, RecoveredRecord, RecoveredState, RunManifest, Store,
    TrialRecord,
};

use super::args::{ExportArgs, ExportFormat};
use super::output::emit;
use super::setup::open_opened;

pub fn run(a: ExportArgs) -> anyhow::Result<ExitCode> {
    if let Location::Sled(dir) = &a.store.store {
        anyhow::ensure!(
            dir.is_dir(),
            "store {} does not exist: pass the --store folder the search used (default ./mpsearch-store)",
            dir.display()
        );
    }
    let opened = open_opened(&a.store.store, Access::Read)?;
    let store = opened.store;
    let manifest = store::find_run(&*store, &a.run)?;
    let trials = store.trials(&manifest.name)?;
    let pick = match (a.point, a.trial) {
        (Some(k), _) => Pick::Point(k),
        (_, Some(n)) => Pick::Trial(n),
        _ => Pick::Best,
    };
    let sel = export::select(&manifest, &trials, pick)?;
    let mut shown: Vec<&TrialRecord> = store::front(&manifest.config, &trials);
    if !shown.iter().any(|t| t.number == sel.trial.number) {
        shown.push(sel.trial);
    }
    super::report::complete_held_out(&*store, opened.live.as_ref(), &manifest, &shown);
    let mut held_out = store::held_out(&*store, &manifest, sel.trial)?;
    let recovered = if a.recovered {
        let r = best_recovered(&*store, &manifest, sel.trial)?;
        let weights = mpsearch::recover::stored_weights(&*store, &r)?;
        held_out = r.held_out_quality.map(|quality| HeldOut {
            quality,
            metrics: r.held_out_metrics.clone(),
        });
        Some((r, weights))
    } else {
        None
    };
    // Release the store before the export's own work (a search may open it meanwhile).
    drop(store);
    describe(&manifest, &sel, held_out.as_ref());
    if let Some((r, _)) = &recovered {
        eprintln!(
            "exporting its recovered variant {} (fine-tuned: search quality {}, {} steps{})",
            &r.key[..12.min(r.key.len())],
            super::output::quality(r.quality),
            r.steps,
            if r.state == RecoveredState::Interrupted {
                ", interrupted"
            } else {
                ""
            }
        );
    }
    match a.format {
        ExportFormat::Json => output(a.out.as_deref(), &export::assignment_json(sel.trial)?),
        ExportFormat::LlamaCpp => {
            let inv = mpsearch::model::inventory(&ModelSource::parse(&manifest.config.model))?;
            let (_, asg) = resolve(&manifest, &sel, &inv.layers)?;
            let header = llama::LinesHeader {
                source: source_text(&manifest, &sel),
                architecture: inv.architecture.clone(),
            };
            output(
                a.out.as_deref(),
                &llama::tensor_type_lines(&inv.layers, &asg, &header),
            )
        }
        ExportFormat::Safetensors => {
            write_weights(&manifest, &sel, held_out.as_ref(), recovered, a.out)
        }
        ExportFormat::Gguf => write_gguf(&manifest, &sel, held_out.as_ref(), a.out),
    }
}

/// `--format gguf`: the point as a llama.cpp GGUF file of the run's model, with where it came from and
/// its qualities in `mpsearch.*` metadata.
fn write_gguf(
    m: &RunManifest,
    sel: &Selected,
    held_out: Option<&HeldOut>,
    out: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    use candle_core::quantized::gguf_file::Value;
    let c = &m.config;
    let ModelSource::Gguf(source) = ModelSource::parse(&c.model) else {
        anyhow::bail!(
            "run `{}` searched {}, which is not a GGUF model: --format gguf writes language models              (use --format safetensors)",
            m.name,
            c.model
        );
    };
    let inv = mpsearch::model::inventory(&ModelSource::Gguf(source.clone()))?;
    let (_, asg) = resolve(m, sel, &inv.layers)?;
    let path = out.unwrap_or_else(|| PathBuf::from(format!("{}-{}.gguf", m.name, sel.label())));
    let mut extra = vec![
        (
            "mpsearch.source".to_string(),
            Value::String(source_text(m, sel)),
        ),
        (
            "mpsearch.assignment".to_string(),
            Value::String(sel.trial.hash.clone()),
        ),
    ];
    if let Some(q) = sel.trial.quality {
        extra.push(("mpsearch.kl_search".to_string(), Value::F64(q)));
    }
    if let Some(h) = held_out {
        extra.push(("mpsearch.kl_held_out".to_string(), Value::F64(h.quality)));
    }
    mpsearch::export::gguf::write_gguf(&source, &inv.layers, &asg, &extra, &path)?;
    eprintln!(
        "wrote {} (check it: mpsearch eval --model {} --from-gguf {})",
        path.display(),
        c.model,
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The secondary metric of a trial's metrics, in words (`, accuracy 0.9833`).
fn secondary(metrics: &std::collections::BTreeMap<String, f64>) -> String {
    metrics
        .get("accuracy")
        .map(|a| format!(", accuracy {a:.4}"))
        .or_else(|| {
            metrics
                .get("mean_cosine")
                .map(|c| format!(", mean cosine {c:.6}"))
        })
        .unwrap_or_default()
}

/// Tells standard error which trial is exported and why, with its quality on the search split (the
/// one it was picked by) and on the held-out split.
fn describe(m: &RunManifest, sel: &Selected, held_out: Option<&HeldOut>) {
    let t = sel.trial;
    let quality = t.quality.map_or("-".to_string(), |q| format!("{q:.4e}"));
    let held = match (held_out, t.quality) {
        (Some(h), Some(q)) => format!(
            "; held-out quality {:.4e}{} (held-out − search {:+.3e})",
            h.quality,
            secondary(&h.metrics),
            h.quality - q
        ),
        _ => "; no held-out quality".to_string(),
    };
    eprintln!(
        "run `{}`: exporting trial {} — search quality {quality}{}{held}; latency {}, size {} — picked \
         as {}",
        m.name,
        t.number,
        secondary(&t.metrics),
        format_us(t.cost.latency_us),
        format_bytes(t.cost.bytes as f64),
        sel.reason
    );
    if !sel.feasible {
        eprintln!(
            "warning: trial {} does NOT meet the run's limits{}",
            t.number,
            limits(m)
        );
    }
}

fn limits(m: &RunManifest) -> String {
    let c = &m.config;
    let mut parts = Vec::new();
    if let Some(v) = c.max_latency_us {
        parts.push(format!("latency ≤ {}", format_us(v)));
    }
    if let Some(v) = c.max_bytes {
        parts.push(format!("size ≤ {}", format_bytes(v)));
    }
    if let Some(v) = c.max_bops {
        parts.push(format!("BOPs ≤ {v:.3e}"));
    }
    if let Some(v) = c.max_drop {
        parts.push(format!("quality ≤ {v}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

fn source_text(m: &RunManifest, sel: &Selected) -> String {
    format!(
        "run `{}`, trial {}{} (model {}, space {}, profile {})",
        m.name,
        sel.trial.number,
        sel.point
            .map(|k| format!(", front point {k} of {}", sel.front_len))
            .unwrap_or_default(),
        m.config.model,
        m.config.space,
        m.config.profile
    )
}

/// The run's space resolved against the model's layers, and the trial's assignment checked against it.
fn resolve(
    m: &RunManifest,
    sel: &Selected,
    layers: &[mpsearch::space::LayerInfo],
) -> anyhow::Result<(SearchSpace, Assignment)> {
    let space = mpsearch::shipped::space(&m.config.space, layers)?;
    let asg = space.assignment_from_json(&sel.trial.assignment).map_err(|e| {
        anyhow::anyhow!(
            "trial {} of run `{}` does not fit search space `{}` as it is now ({e}); the space file \
             changed since the search: restore it, or export --format json, which needs no space",
            sel.trial.number,
            m.name,
            m.config.space
        )
    })?;
    Ok((space, asg))
}

/// Writes `text` to `out`, or to standard output.
fn output(out: Option<&Path>, text: &str) -> anyhow::Result<ExitCode> {
    match out {
        Some(p) => {
            mpsearch::fs::write_atomic(p, text.as_bytes())?;
            eprintln!("wrote {}", p.display());
            Ok(ExitCode::SUCCESS)
        }
        None => emit(text),
    }
}

/// What the calibration data says about the layers when the run's settings use it — the input
/// statistics for its scale method or rounding (GPTQ, output-error scales), the importance scores for
/// a gradient pruning importance — from an evaluator with the run's settings, which must be the one
/// that evaluated the run (same model, data and settings), so that the exported weights are the
/// evaluated ones.
fn layer_calibration(
    m: &RunManifest,
    model: Arc<dyn Model>,
    data: EvalData,
) -> anyhow::Result<LayerCalibration> {
    let settings = mpsearch::search::evaluator_settings(&m.config);
    let (inputs, scores) = (
        settings.compress().uses_inputs(),
        settings.importance.needs_gradients(),
    );
    if !inputs && !scores {
        return Ok(LayerCalibration::default());
    }
    let ev = CandleEvaluator::new(model, data, settings)?;
    let (recorded, now) = (
        &m.fingerprints.evaluator,
        ev.fingerprint().to_hex().to_string(),
    );
    anyhow::ensure!(
        *recorded == now,
        "run `{}` was evaluated with {} scales, {} rounding and {} pruning importance, which fit \
         each weight to the calibration data; that data or the evaluator changed since \
         (fingerprint {} → {}), so the exported weights would not be the ones evaluated. Restore the \
         data, or export --format json and evaluate it again",
        m.name,
        m.config.scale,
        m.config.rounding,
        m.config.importance,
        short(recorded),
        short(&now)
    );
    Ok(LayerCalibration {
        inputs: inputs.then(|| ev.input_stats().cloned()).transpose()?,
        scores: scores.then(|| ev.weight_scores().cloned()).transpose()?,
    })
}

/// The recovered variant of `trial` with the best held-out quality (else search quality), complete
/// ones first; an error when the trial has none.
fn best_recovered(
    store: &dyn Store,
    m: &RunManifest,
    trial: &TrialRecord,
) -> anyhow::Result<RecoveredRecord> {
    let key = |r: &RecoveredRecord| {
        (
            r.state != RecoveredState::Complete,
            r.held_out_quality.unwrap_or(r.quality),
        )
    };
    store
        .recovered(&m.name)?
        .into_iter()
        .filter(|r| r.trial == trial.number)
        .min_by(|a, b| {
            key(a)
                .partial_cmp(&key(b))
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "trial {} of run `{}` has no recovered variant: make one with `mpsearch recover {} \
                 --point K`, or export without --recovered",
                trial.number,
                m.name,
                m.name
            )
        })
}

/// [`layer_calibration`] of a recovered variant's model: the statistics its evaluation used (of
/// the fine-tuned weights, on the run's calibration split).
fn recovered_calibration(
    m: &RunManifest,
    model: Arc<dyn Model>,
    teacher: Arc<dyn Model>,
    data: EvalData,
) -> anyhow::Result<LayerCalibration> {
    let settings =
        mpsearch::recover::variant_settings(&mpsearch::search::evaluator_settings(&m.config));
    let (inputs, scores) = (
        settings.compress().uses_inputs(),
        settings.importance.needs_gradients(),
    );
    if !inputs && !scores {
        return Ok(LayerCalibration::default());
    }
    let ev = CandleEvaluator::with_teacher(model, teacher, data, settings)?;
    Ok(LayerCalibration {
        inputs: inputs.then(|| ev.input_stats().cloned()).transpose()?,
        scores: scores.then(|| ev.weight_scores().cloned()).transpose()?,
    })
}

fn write_weights(
    m: &RunManifest,
    sel: &Selected,
    held_out: Option<&HeldOut>,
    recovered: Option<(RecoveredRecord, RecoveredWeights)>,
    out: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let c = &m.config;
    let path = out.unwrap_or_else(|| {
        let suffix = if recovered.is_some() {
            "-recovered"
        } else {
            ""
        };
        PathBuf::from(format!("{}-{}{suffix}.safetensors", m.name, sel.label()))
    });
    let (model, data) = mpsearch::eval::load_run_data(&c.model, c.data.as_deref(), c.samples)?;
    let recorded = &m.fingerprints.model;
    let now = model.fingerprint().to_hex().to_string();
    anyhow::ensure!(
        *recorded == now,
        "model {}: its weights changed since run `{}` searched it (fingerprint {} → {}); the exported \
         weights would not be the ones evaluated. Restore the model, or export --format json and \
         evaluate it again",
        c.model,
        m.name,
        short(recorded),
        short(&now)
    );
    let (_, asg) = resolve(m, sel, &model.inventory().layers)?;
    let teacher = model.clone();
    let model: Arc<dyn Model> = match &recovered {
        Some((_, w)) => Arc::new(RecoveredModel::new(model, w)?),
        None => model,
    };
    let info = safetensors::ExportInfo {
        run: m.name.clone(),
        trial: sel.trial.number,
        point: sel.point,
        hash: sel.trial.hash.clone(),
        quality: match &recovered {
            Some((r, _)) => Some(r.quality),
            None => sel.trial.quality,
        },
        held_out_quality: held_out.map(|h| h.quality),
        quality_metric: match model.inventory().kind {
            mpsearch::model::ModelKind::Classifier => "kl_divergence",
            mpsearch::model::ModelKind::Encoder => "cosine_distance",
            mpsearch::model::ModelKind::LanguageModel => "kl_divergence",
        }
        .to_string(),
        cost_objective: c.objective.to_string(),
        model: c.model.clone(),
        space: c.space.clone(),
        scale: recovered.as_ref().map_or(c.scale, |(r, _)| r.scale),
        rounding: recovered.as_ref().map_or(c.rounding, |(r, _)| r.rounding),
        importance: c.importance,
    };
    let calibration = match recovered {
        Some(_) => recovered_calibration(m, model.clone(), teacher, data)?,
        None => layer_calibration(m, model.clone(), data)?,
    };
    let s = safetensors::write_compressed(model.as_ref(), &asg, &info, &calibration, &path)?;
    eprintln!(
        "wrote {}: {} compressed layers in {} tensors, {} of weight data ({} bytes in all); left out \
         (unchanged): {}",
        path.display(),
        s.layers.len(),
        s.tensors,
        format_bytes(s.data_bytes as f64),
        s.bytes,
        if s.left_out.is_empty() {
            "none".to_string()
        } else {
            s.left_out.join(", ")
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// The first 12 characters of a fingerprint (a recorded one comes from the store: no byte slicing).
fn short(hex: &str) -> String {
    hex.chars().take(12).collect()
}
