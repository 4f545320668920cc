//! # `eval`
//!
//! Assignments evaluated with the candle evaluator, one result JSON line per assignment (from a file,
//! or from standard input line by line, flushed as each is answered), costed too with `--profile`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use mpsearch::cost::CostModel;
use mpsearch::eval::{CandleEvaluator, Evaluator};
use mpsearch::shipped;
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
    };
    let mut out = std::io::stdout().lock();
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
}

impl Answerer {
    /// The result line of assignment JSON `text` (`source` names it in errors).
    fn answer(&self, text: &str, source: &str) -> mpsearch::Result<serde_json::Value> {
        let asg = self.space.parse_assignment(text, Some(source))?;
        let e = self.evaluator.evaluate(&asg)?;
        let mut v = serde_json::json!({
            "hash": self.evaluator.key(&asg).to_hex().to_string(),
            "quality": e.quality,
            "objective": self.evaluator.objective(),
            "metrics": e.metrics,
            "seconds": e.seconds,
        });
        if let Some(m) = &self.cost {
            let (_, total) = m.assignment(&self.layers, &asg);
            v["cost"] = serde_json::json!({"latency_us": total.latency_us, "bytes": total.bytes, "bops": total.bops});
        }
        Ok(v)
    }
}
