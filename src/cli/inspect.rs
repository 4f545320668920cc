//! # `inspect`
//!
//! A model's compressible layers and totals, and with `--space` each layer's status, group and allowed
//! choices: as tables or as the JSON scripts read.

use std::process::ExitCode;

use mpsearch::model::{Inventory, ModelKind};
use mpsearch::space::SearchSpace;

use super::args::InspectArgs;
use super::output::{emit, table, thousands, wrap};
use super::setup::{load_model, load_space};

pub fn run(a: InspectArgs) -> anyhow::Result<ExitCode> {
    let inv = load_model(&a.model.model)?;
    let space = a
        .space
        .as_deref()
        .map(|s| load_space(Some(s), &inv))
        .transpose()?;
    if a.json {
        let doc = json(&inv, space.as_ref());
        return emit(&format!("{}\n", serde_json::to_string_pretty(&doc)?));
    }
    let mut out = layer_table(&inv, space.as_ref());
    if let Some(s) = &space {
        out.push_str(&space_text(s));
    }
    emit(&out)
}

fn json(inv: &Inventory, space: Option<&SearchSpace>) -> serde_json::Value {
    let layers: Vec<serde_json::Value> = inv
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mut v = serde_json::json!({
                "name": l.name, "kind": l.kind, "shape": l.shape, "params": l.params(), "macs": l.macs,
            });
            if let Some(s) = space {
                let g = &s.groups[s.layers[i].group];
                v["choices"] = g.choices.iter().map(|c| c.to_string()).collect();
                v["group"] = g.name.clone().into();
                v["status"] = s.layers[i].status.to_string().into();
            }
            v
        })
        .collect();
    let mut doc = serde_json::json!({
        "model": inv.name, "model_kind": inv.kind, "architecture": inv.architecture,
        "totals": {"layers": inv.layers.len(), "params": inv.params(), "macs": inv.macs()},
        "layers": layers,
    });
    if let Some(s) = space {
        doc["space"] = s.name.clone().into();
        doc["dropped"] = s
            .dropped
            .iter()
            .map(|d| serde_json::json!({"layer": d.layer, "choice": d.choice.to_string(), "why": d.why}))
            .collect();
    }
    doc
}

/// The heading, one row per layer (with its status, choice count and group given a space), totals.
fn layer_table(inv: &Inventory, space: Option<&SearchSpace>) -> String {
    // A language model's MACs are per token (each token is one sample of its output).
    let per = match inv.kind {
        ModelKind::LanguageModel => "token",
        ModelKind::Classifier | ModelKind::Encoder => "sample",
    };
    let mut out = format!(
        "model {} ({}, {}): {} compressible layers, {} weights, {} MACs per {per}\n\n",
        inv.name,
        inv.architecture,
        inv.kind,
        inv.layers.len(),
        thousands(inv.params()),
        thousands(inv.macs())
    );
    let mut header = vec!["layer", "kind", "shape", "params", "MACs"];
    if space.is_some() {
        header.extend(["status", "choices", "group"]);
    }
    let rows: Vec<Vec<String>> = inv
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mut r = vec![
                l.name.clone(),
                l.kind.to_string(),
                l.shape_string(),
                thousands(l.params()),
                thousands(l.macs),
            ];
            if let Some(s) = space {
                let g = &s.groups[s.layers[i].group];
                r.push(s.layers[i].status.to_string());
                r.push(g.choices.len().to_string());
                r.push(if g.members.len() > 1 {
                    g.name.clone()
                } else {
                    "-".into()
                });
            }
            r
        })
        .collect();
    out.push_str(&table(&header, &rows, 3));
    out.push_str(&format!(
        "total: {} weights, {} MACs per {per}\n",
        thousands(inv.params()),
        thousands(inv.macs())
    ));
    out
}

/// The space's size and each group's members and choices.
fn space_text(s: &SearchSpace) -> String {
    let mut out = format!(
        "\nsearch space `{}` ({}): {} groups, {} searchable, {:.3e} assignments\n",
        s.name,
        s.origin.display(),
        s.groups.len(),
        s.searchable_groups().count(),
        s.size()
    );
    for g in &s.groups {
        let names: Vec<&str> = g
            .members
            .iter()
            .map(|&m| s.layers[m].info.name.as_str())
            .collect();
        out.push_str(&format!(
            "\n{} [{}, {} choices]\n",
            names.join(" + "),
            g.status,
            g.choices.len()
        ));
        let all: Vec<String> = g.choices.iter().map(|c| c.to_string()).collect();
        out.push_str(&wrap(&all, 100, "    "));
    }
    out.push_str(&dropped_text(s));
    out
}

/// The choices `[defaults]` offered that some layers cannot take (GGML blocks that do not fit their
/// in-features, `tucker<P>` / `cp<P>` where they do not apply), grouped by choice — by the
/// factorization alone for `tucker<P>` / `cp<P>`, whatever the weights — and reason, with the layers.
fn dropped_text(s: &SearchSpace) -> String {
    let mut by: Vec<((String, &str), Vec<String>)> = Vec::new();
    for d in &s.dropped {
        let choice = match d.choice.conv {
            Some(f) => format!("{f} (with any weights)"),
            None => d.choice.to_string(),
        };
        let key = (choice, d.why.as_str());
        match by.iter_mut().find(|(k, _)| *k == key) {
            Some((_, layers)) if !layers.contains(&d.layer) => layers.push(d.layer.clone()),
            Some(_) => {}
            None => by.push((key, vec![d.layer.clone()])),
        }
    }
    if by.is_empty() {
        return String::new();
    }
    let mut out = "\nleft out of [defaults] where a layer cannot take them:\n".to_string();
    for ((choice, why), layers) in by {
        out.push_str(&format!("  {choice} on {} layers: {why}\n", layers.len()));
        out.push_str(&wrap(&layers, 100, "    "));
    }
    out
}
