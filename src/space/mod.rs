//! # Search spaces
//!
//! The types every other module speaks: a layer's [`Choice`] (weight quantization, activation
//! quantization, sparsity, rank) and its notation, [`LayerInfo`], an [`Assignment`] of choices to layers
//! with its canonical encoding and content hash, and the [`SearchSpace`] read from a TOML file and
//! resolved against a model's layers (per-layer choice sets, pins, groups, exclusions).
//!
//! This module depends on nothing else of ours.

mod assignment;
mod choice;
pub mod conv;
pub mod file;
mod layer;
pub mod recipe;

use std::path::PathBuf;

pub use assignment::{Assignment, AssignmentJson};
pub use choice::{
    kept_rows, rank_k, ActBlocks, ActQuant, Choice, GgmlFormat, Granularity, QuantScheme, Sparsity,
    WeightQuant, BITS, GROUP_SIZES, MAX_M, PERCENT,
};
pub use conv::{cp_rank, tucker_params, tucker_ranks, ConvDims, ConvFactor};
pub use layer::{LayerInfo, LayerKind};

/// Whether the search may change a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerStatus {
    /// Several choices.
    Searchable,
    /// One fixed choice (a pin, or a group whose members leave one choice in common).
    Pinned,
    /// Left f32 and not searched.
    Excluded,
}

impl std::fmt::Display for LayerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LayerStatus::Searchable => "searchable",
            LayerStatus::Pinned => "pinned",
            LayerStatus::Excluded => "excluded",
        })
    }
}

/// A layer of the model as the space sees it.
#[derive(Clone, Debug)]
pub struct SpaceLayer {
    pub info: LayerInfo,
    /// Index into [`SearchSpace::groups`].
    pub group: usize,
    pub status: LayerStatus,
}

/// Layers that take one shared choice (a single layer is a group of one).
#[derive(Clone, Debug)]
pub struct SpaceGroup {
    /// The group's id: the name of its first layer.
    pub name: String,
    /// Indices into [`SearchSpace::layers`].
    pub members: Vec<usize>,
    /// Allowed choices, sorted; never empty.
    pub choices: Vec<Choice>,
    pub status: LayerStatus,
}

impl SpaceGroup {
    fn new(name: String, first: usize, choices: Vec<Choice>, status: LayerStatus) -> SpaceGroup {
        SpaceGroup {
            name,
            members: vec![first],
            choices,
            status,
        }
    }
}

/// A choice `[defaults]` offered a layer that its weight cannot take — a GGML block format whose
/// blocks do not fit the in-features of one of its factors ([`Choice::block_misfit`]), or a
/// `tucker<P>` / `cp<P>` where it does not apply ([`Choice::layer_misfit`]) — left out of the layer's
/// set (a `[[layer]]` table or pin that asks for one is an error instead).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppedChoice {
    pub layer: String,
    pub choice: Choice,
    /// Why: the block rule it breaks.
    pub why: String,
}

/// A point of the space: one choice index per group (the form strategies work with).
pub type Point = Vec<u16>;

/// A search space resolved against a model's layers.
#[derive(Clone, Debug)]
pub struct SearchSpace {
    pub name: String,
    pub description: String,
    /// The file it was read from (`shipped:NAME` for an embedded one).
    pub origin: PathBuf,
    /// Every compressible layer of the model, in inventory order.
    pub layers: Vec<SpaceLayer>,
    pub groups: Vec<SpaceGroup>,
    /// Choices `[defaults]` offered that some layers cannot take, left out of their sets.
    pub dropped: Vec<DroppedChoice>,
}

impl SearchSpace {
    /// A hash of the resolved space: each group's members and allowed choices (a run's `space`
    /// fingerprint; a space file edited into the same groups and choices keeps it).
    pub fn fingerprint(&self) -> blake3::Hash {
        let mut h = blake3::Hasher::new();
        h.update(b"mpsearch-space-v1\n");
        for g in &self.groups {
            for &m in &g.members {
                h.update(self.layers[m].info.name.as_bytes());
                h.update(b"\t");
            }
            h.update(b"=");
            for c in &g.choices {
                h.update(c.to_string().as_bytes());
                h.update(b" ");
            }
            h.update(b"\n");
        }
        h.finalize()
    }

    /// The assignment of `point` (one choice index per group).
    pub fn assignment(&self, point: &[u16]) -> Assignment {
        Assignment::new(self.layers.iter().map(|l| {
            let g = &self.groups[l.group];
            (l.info.name.clone(), g.choices[point[l.group] as usize])
        }))
    }

    /// The point of an assignment that fits this space (see [`SearchSpace::assignment_from_json`]).
    pub fn point(&self, a: &Assignment) -> crate::Result<Point> {
        self.groups
            .iter()
            .map(|g| {
                let name = &self.layers[g.members[0]].info.name;
                let c = a.get(name).ok_or_else(|| crate::Error::Assignment {
                    source_name: None,
                    message: format!("layer `{name}` has no choice"),
                })?;
                g.choices
                    .iter()
                    .position(|x| x == c)
                    .map(|i| i as u16)
                    .ok_or_else(|| crate::Error::Assignment {
                        source_name: None,
                        message: format!(
                            "layer `{name}`: `{c}` is not allowed by search space `{}`",
                            self.name
                        ),
                    })
            })
            .collect()
    }

    /// The same choice for every group that allows it, the group's first choice elsewhere; `None` if no
    /// searchable group allows `choice`.
    pub fn uniform(&self, choice: &Choice) -> Option<Point> {
        let mut any = false;
        let point = self
            .groups
            .iter()
            .map(|g| match g.choices.iter().position(|c| c == choice) {
                Some(i) => {
                    any |= g.status == LayerStatus::Searchable;
                    i as u16
                }
                None => 0,
            })
            .collect();
        any.then_some(point)
    }

    /// Every layer at `choice`, whether the space allows it or not, except excluded layers (f32) and
    /// pinned ones (their pin): the reference points reports compare against (all-int8, all-int4, …).
    pub fn baseline(&self, choice: &Choice) -> Assignment {
        Assignment::new(self.layers.iter().map(|l| {
            let c = match l.status {
                LayerStatus::Searchable => *choice,
                _ => self.groups[l.group].choices[0],
            };
            (l.info.name.clone(), c)
        }))
    }

    /// The uniform reference assignments reports compare against (and every run's first trials), where
    /// the space allows them: `all-f32` (always), `all-f16`, `all-bf16` (plain float weights),
    /// `all-int8`, `all-int4` (plain weight quantization, no activation quantization, sparsity or rank)
    /// and `all-2:4` (f32 weights pruned 2:4). For each, the matching
    /// choice allowed by the most searchable groups (the first in choice order on a tie) is given to every
    /// searchable group that allows it; the others stay f32 where allowed (else their first choice).
    /// Pinned and excluded layers keep their fixed choice.
    ///
    /// Then `all-q8_0`, `all-q4_k` and `all-q4_0` (the plain GGML formats with fast kernels in candle and
    /// the staples of llama.cpp's mixes), each only where **every** searchable group allows it: whether
    /// a format fits a layer is its in-features' business, not the space's, so a partial "all-q4_k"
    /// (q4_k where the blocks fit, f32 elsewhere) would be a mix under a uniform name.
    pub fn baselines(&self) -> Vec<(String, Choice, Assignment)> {
        let plain_int = |c: &Choice, b: u8| {
            matches!(c.weights, WeightQuant::Int { bits, .. } if bits == b)
                && c.act == ActQuant::None
                && c.sparsity == Sparsity::None
                && c.rank.is_none()
                && c.conv.is_none()
        };
        let plain_float = |c: &Choice, w: WeightQuant| {
            *c == Choice {
                weights: w,
                ..Choice::F32
            }
        };
        type Matches<'a> = &'a dyn Fn(&Choice) -> bool;
        let kinds: [(&str, Matches); 6] = [
            ("all-f32", &|c: &Choice| c.is_uncompressed()),
            ("all-f16", &|c: &Choice| plain_float(c, WeightQuant::F16)),
            ("all-bf16", &|c: &Choice| plain_float(c, WeightQuant::Bf16)),
            ("all-int8", &|c: &Choice| plain_int(c, 8)),
            ("all-int4", &|c: &Choice| plain_int(c, 4)),
            ("all-2:4", &|c: &Choice| {
                *c == Choice {
                    sparsity: Sparsity::NM { n: 2, m: 4 },
                    ..Choice::F32
                }
            }),
        ];
        let mut out = Vec::new();
        for (label, matches) in kinds {
            let mut votes: std::collections::BTreeMap<Choice, usize> = Default::default();
            for g in self.searchable_groups() {
                for c in g.choices.iter().filter(|c| matches(c)) {
                    *votes.entry(*c).or_default() += 1;
                }
            }
            let best = votes
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                .map(|(c, _)| *c);
            let choice = match (label, best) {
                (_, Some(c)) => c,
                ("all-f32", None) => Choice::F32,
                _ => continue,
            };
            let a = Assignment::new(self.layers.iter().map(|l| {
                let g = &self.groups[l.group];
                let pick = if l.status != LayerStatus::Searchable {
                    g.choices[0]
                } else if g.choices.contains(&choice) || label == "all-f32" {
                    choice
                } else if g.choices.contains(&Choice::F32) {
                    Choice::F32
                } else {
                    g.choices[0]
                };
                (l.info.name.clone(), pick)
            }));
            out.push((label.to_string(), choice, a));
        }
        for g in [GgmlFormat::Q8_0, GgmlFormat::Q4K, GgmlFormat::Q4_0] {
            let choice = Choice::weights(WeightQuant::Ggml(g));
            let mut searchable = self.searchable_groups().peekable();
            if searchable.peek().is_none() || !searchable.all(|gr| gr.choices.contains(&choice)) {
                continue;
            }
            out.push((format!("all-{g}"), choice, self.baseline(&choice)));
        }
        out
    }

    /// Number of points in the space (saturating).
    pub fn size(&self) -> f64 {
        self.groups.iter().map(|g| g.choices.len() as f64).product()
    }

    /// The groups the search can change.
    pub fn searchable_groups(&self) -> impl Iterator<Item = &SpaceGroup> {
        self.groups
            .iter()
            .filter(|g| g.status == LayerStatus::Searchable)
    }
}
