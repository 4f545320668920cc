//! # `eval`
//!
//! Assignments evaluated with the candle evaluator, one result JSON line per assignment (from a file,
//! or from standard input line by line, flushed as each is answered), or llama.cpp's recipe for a
//! language model (`--recipe`), on the search or the held-out split; with stored bytes and bits per
//! weight, and costed too with `--profile`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use mpsearch::cost::model::{assignment_bytes, bits_per_weight};
use mpsearch::cost::CostModel;
use mpsearch::eval::{CandleEvaluator, EvalSplit, Evaluator};
use mpsearch::shipped;
use mpsearch::space::recipe::Recipe;
use mpsearch::space::{LayerInfo, SearchSpace};

use super::args::EvalArgs;
use super::setup;

pub fn run(a: EvalArgs) -> anyhow::Result<ExitCode> {
    a.check()?;
    // The profile is a flag's value too: checked before the model is loaded.
    let cost = a
        .profile
        .as_deref()
        .map(|p| -> anyhow::Result<_> { Ok(CostModel::new(shipped::profile(p)?, a.batch)?) })
        .transpose()?;
    let (evaluator, space, _) = setup::evaluator(&a.setup)?;
    let layers = evaluator.model().inventory().layers.clone();
    let answerer = Answerer {
        cost: cost.map(|c| c.for_model(&layers)),
        layers,
        evaluator,
        space,
        split: a.split.split(),
    };
    let mut out = std::io::stdout().lock();
    let given = match (&a.recipe, &a.from_gguf) {
        (Some(r), _) => {
            let recipe: Recipe = r.parse().map_err(anyhow::Error::msg)?;
            Some((
                recipe.assignment(&answerer.layers)?,
                ("recipe", recipe.name().to_string()),
            ))
        }
        (None, Some(path)) => {
            let model = answerer.evaluator.model().clone();
            let asg = mpsearch::export::gguf::stored_assignment(path, &answerer.layers, &|l| {
                model.weight(l)
            })?;
            Some((asg, ("gguf", path.display().to_string())))
        }
        (None, None) => None,
    };
    if let Some((asg, (key, name))) = given {
        let mut v = answerer.answer(&asg.to_json_string(), &format!("{key} {name}"))?;
        v[key] = serde_json::json!(name);
        writeln!(out, "{v}")?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(path) = &a.assignment {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let v = answerer.answer(&text, &path.display().to_string())?;
        writeln!(out, "{v}")?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let stdin = std::io::stdin();
    for (i, line) in std::io::BufRead::lines(stdin.lock()).enumerate() {
        let line = line.context("reading standard input")?;
        if line.trim().is_empty() {
            continue;
        }
        let v = answerer
            .answer(&line, &format!("line {}", i + 1))
            .unwrap_or_else(|e| serde_json::json!({"error": e.to_string()}));
        writeln!(out, "{v}")?;
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Everything needed to answer one assignment.
struct Answerer {
    evaluator: CandleEvaluator,
    space: SearchSpace,
    layers: Vec<LayerInfo>,
    cost: Option<CostModel>,
    split: EvalSplit,
}

impl Answerer {
    /// The result line of assignment JSON `text` (`source` names it in errors).
    fn answer(&self, text: &str, source: &str) -> mpsearch::Result<serde_json::Value> {
        let asg = self.space.parse_assignment(text, Some(source))?;
        let e = self.evaluator.evaluate_on(self.split, &asg)?;
        let bytes = assignment_bytes(&self.layers, &asg);
        let mut v = serde_json::json!({
            "hash": self.evaluator.key_on(self.split, &asg).to_hex().to_string(),
            "quality": e.quality,
            "objective": self.evaluator.objective(),
            "metrics": e.metrics,
            "seconds": e.seconds,
            "split": self.split.name(),
            "bytes": bytes,
            "bits_per_weight": bits_per_weight(&self.layers, bytes as f64),
        });
        if let Some(m) = &self.cost {
            let (_, total) = m.assignment(&self.layers, &asg);
            v["cost"] = serde_json::json!({"latency_us": total.latency_us, "bytes": total.bytes, "bops": total.bops});
        }
        Ok(v)
    }
}
