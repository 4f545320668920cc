//! # Assignments
//!
//! An [`Assignment`] gives every layer of a model one [`Choice`]. Its canonical byte encoding is one line
//! per layer, sorted by layer name, `name<TAB>choice<LF>`, after a version line; the content hash is
//! BLAKE3 of those bytes. Both depend only on layer names and the choice notation, which are stable, so
//! a hash never changes across releases (a test pins one).
//!
//! Users and scripts write assignments as JSON:
//! `{"default": "<choice>", "layers": {"<layer name>": "<choice>", …}}`. Searchable layers not listed
//! take `default`; pinned and excluded layers take their fixed choice unless listed (and a listed choice
//! must be the fixed one); every choice must be allowed for its layer and all members of a group must
//! share one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Choice, LayerInfo, LayerStatus, SearchSpace};
use crate::error::{Error, Result};

/// First line of the canonical encoding; bump only with a migration of every stored hash.
const ENCODING_VERSION: &str = "mpsearch-assignment-v1";

/// One choice per layer, by layer name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Assignment {
    layers: BTreeMap<String, Choice>,
}

/// The assignment JSON as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignmentJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default)]
    pub layers: BTreeMap<String, String>,
}

impl Assignment {
    /// An assignment from (layer, choice) pairs.
    pub fn new(layers: impl IntoIterator<Item = (String, Choice)>) -> Assignment {
        Assignment {
            layers: layers.into_iter().collect(),
        }
    }

    /// The choice of `layer`.
    pub fn get(&self, layer: &str) -> Option<&Choice> {
        self.layers.get(layer)
    }

    /// (layer, choice) pairs sorted by layer name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Choice)> {
        self.layers.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether it assigns nothing.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The canonical byte encoding (see the module docs).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(32 + self.layers.len() * 48);
        out.push_str(ENCODING_VERSION);
        out.push('\n');
        for (name, choice) in &self.layers {
            out.push_str(name);
            out.push('\t');
            out.push_str(&choice.to_string());
            out.push('\n');
        }
        out.into_bytes()
    }

    /// BLAKE3 of the canonical encoding.
    pub fn hash(&self) -> blake3::Hash {
        blake3::hash(&self.canonical_bytes())
    }

    /// The content hash as 64 lowercase hex digits.
    pub fn hash_hex(&self) -> String {
        self.hash().to_hex().to_string()
    }

    /// The JSON form: the most common choice as `default`, the other layers listed.
    pub fn to_json(&self) -> AssignmentJson {
        let mut counts: BTreeMap<&Choice, usize> = BTreeMap::new();
        for c in self.layers.values() {
            *counts.entry(c).or_default() += 1;
        }
        // Most common; ties go to the smallest choice so the output is deterministic.
        let default = counts
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(c, _)| **c);
        AssignmentJson {
            default: default.map(|c| c.to_string()),
            layers: self
                .layers
                .iter()
                .filter(|(_, c)| Some(**c) != default)
                .map(|(n, c)| (n.clone(), c.to_string()))
                .collect(),
        }
    }

    /// The JSON form as one line.
    pub fn to_json_string(&self) -> String {
        serde_json::to_string(&self.to_json()).unwrap_or_default()
    }
}

impl AssignmentJson {
    /// The assignment over the model's `layers` as journaled, without a search space: a listed layer
    /// takes its choice, the others `default` (f32 without one). Reports and measurements read stored
    /// assignments with it, so they survive a search-space file that changed since the run. A listed
    /// layer the model does not have is an error.
    pub fn over(&self, layers: &[LayerInfo]) -> Result<Assignment> {
        let default: Choice = match &self.default {
            Some(d) => d.parse()?,
            None => Choice::F32,
        };
        if let Some(unknown) = self
            .layers
            .keys()
            .find(|k| !layers.iter().any(|l| &l.name == *k))
        {
            return Err(Error::Assignment {
                source_name: None,
                message: format!(
                    "a stored assignment names layer `{unknown}`, which the model no longer has"
                ),
            });
        }
        layers
            .iter()
            .map(|l| {
                let c = match self.layers.get(&l.name) {
                    Some(text) => text.parse()?,
                    None => default,
                };
                Ok((l.name.clone(), c))
            })
            .collect::<Result<Vec<_>>>()
            .map(Assignment::new)
    }
}

impl SearchSpace {
    /// Parses assignment JSON `text` and checks it against this space. `source` names where the text came
    /// from (a file, or `line 3` of standard input) for error messages.
    pub fn parse_assignment(&self, text: &str, source: Option<&str>) -> Result<Assignment> {
        let err = |message: String| Error::Assignment {
            source_name: source.map(str::to_string),
            message,
        };
        let json: AssignmentJson = serde_json::from_str(text).map_err(|e| {
            err(format!(
                "not valid assignment JSON ({e}); the form is {{\"default\": \"<choice>\", \"layers\": {{\"<layer>\": \"<choice>\"}}}}"
            ))
        })?;
        self.assignment_from_json(&json).map_err(|e| match e {
            Error::Assignment { message, .. } => err(message),
            Error::Choice { .. } => err(e.to_string()),
            other => other,
        })
    }

    /// Checks an [`AssignmentJson`] against this space.
    pub fn assignment_from_json(&self, json: &AssignmentJson) -> Result<Assignment> {
        let err = |message: String| Error::Assignment {
            source_name: None,
            message,
        };
        let default: Option<Choice> = json.default.as_deref().map(str::parse).transpose()?;
        let index: BTreeMap<&str, usize> = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| (l.info.name.as_str(), i))
            .collect();
        let mut listed: Vec<Option<Choice>> = vec![None; self.layers.len()];
        for (name, text) in &json.layers {
            let Some(&i) = index.get(name.as_str()) else {
                return Err(err(format!(
                    "unknown layer `{name}`; {} (`mpsearch inspect` lists every layer)",
                    self.closest_names(name)
                )));
            };
            let choice: Choice = text.parse()?;
            listed[i] = Some(choice);
        }
        let mut out = BTreeMap::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let group = &self.groups[layer.group];
            let choice = match (listed[i], layer.status, default) {
                (Some(c), _, _) => c,
                (None, LayerStatus::Searchable, Some(d)) => d,
                (None, LayerStatus::Searchable, None) => {
                    return Err(err(format!(
                        "layer `{}` has no choice: list it under \"layers\" or give a \"default\"",
                        layer.info.name
                    )))
                }
                (None, _, _) => group.choices[0],
            };
            if !group.choices.contains(&choice) {
                let how = if listed[i].is_some() {
                    ""
                } else {
                    " (from \"default\")"
                };
                return Err(err(format!(
                    "layer `{}`: `{choice}`{how} is not allowed by search space `{}`; allowed: {}",
                    layer.info.name,
                    self.name,
                    super::file::list(&group.choices)
                )));
            }
            out.insert(layer.info.name.clone(), choice);
        }
        for g in &self.groups {
            let first = &self.layers[g.members[0]].info.name;
            for &m in &g.members[1..] {
                let name = &self.layers[m].info.name;
                if out[name] != out[first] {
                    return Err(err(format!(
                        "layers `{first}` ({}) and `{name}` ({}) are in one group and must share a choice",
                        out[first], out[name]
                    )));
                }
            }
        }
        Ok(Assignment { layers: out })
    }

    /// "did you mean a or b" / "the layers are named like …" for an unknown `name`.
    fn closest_names(&self, name: &str) -> String {
        let mut scored: Vec<(usize, &str)> = self
            .layers
            .iter()
            .map(|l| (edit_distance(name, &l.info.name), l.info.name.as_str()))
            .collect();
        scored.sort();
        let near: Vec<String> = scored
            .iter()
            .take(3)
            .map(|(_, n)| format!("`{n}`"))
            .collect();
        format!("the closest layer names are {}", near.join(", "))
    }
}

/// Levenshtein distance (for suggestions; names are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for j in 0..b.len() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != b[j]))
                .min(row[j] + 1)
                .min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
