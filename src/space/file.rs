//! # Search-space files
//!
//! A search space is a TOML file: choice sets for all layers (`[defaults]`), per-layer overrides by
//! name pattern (`[[layer]]`), pins (`[[pin]]`), groups of layers that must share one choice
//! (`[[group]]`) and layers excluded from the search (`exclude`). Patterns are Rust regular expressions
//! searched anywhere in the layer name (anchor them with `^…$`).
//!
//! ```toml
//! [space]
//! name = "bert-base"
//! description = "..."
//! exclude = ['embeddings\.']          # these layers stay f32 and are not searched
//!
//! [defaults]                          # a product of the lists below...
//! float = ["f32"]                     # f32, f16, bf16
//! ggml = ["q8_0", "q4_k"]             # GGML block formats: q2_k … q6_k, q8_0, q4_0, q4_1, q5_0, q5_1
//! bits = [8, 4]                       # integer bit-widths, 2..=8
//! schemes = ["sym", "asym"]           # sym, asym
//! granularity = ["channel", "g32"]    # tensor, channel, g<N>
//! activations = ["none"]              # none, act8-static, act8-dynamic
//! sparsity = [0.0, 0.5]               # unstructured pruned fractions in [0, 1); 0.0 = dense
//! nm = ["2:4"]                        # N:M patterns (N < M)
//! channels = [0.25]                   # fractions of output channels removed, in [0, 1)
//! rank = [1.0, 0.5]                   # fractions of full rank kept, in (0, 1]; 1.0 = full rank
//! tucker = [0.5, 0.25]                # Tucker-2 of conv kernels: fractions of parameters kept, (0, 1)
//! cp = [0.25]                         # CP of conv kernels: fractions of parameters kept, (0, 1)
//! # min_bpw = 6.0                     # leave out weight formats of fewer stored bits per weight
//! # choices = ["int8-sym-channel", "int4-asym-g32+2:4"]   # ...or an explicit list (not both)
//!
//! [[layer]]                           # overrides for matching layers; later tables win
//! match = 'attention\.output\.dense$'
//! bits = [8]
//!
//! [[layer]]                           # kind = "linear" | "conv2d" | "embedding": only layers of
//! match = '^(output|token_embd)$'     # that kind among those the pattern matches (a tied
//! kind = "linear"                     # token_embd is the output head, a linear layer)
//! min_bpw = 6.0
//!
//! [[pin]]                             # a fixed choice
//! match = '^pooler\.dense$'
//! choice = "int8-sym-channel"
//!
//! [[group]]                           # layers whose captured text is equal share one choice
//! match = '^encoder\.layer\.(\d+)\.attention\.self\.(?:query|key|value)$'
//! ```
//!
//! Fields left out of `[defaults]` take these values: `float = ["f32"]`, `ggml = []`, `bits = []`,
//! `schemes = ["sym"]`, `granularity = ["channel"]`, `activations = ["none"]`, `sparsity = [0.0]`,
//! `nm = []`, `channels = []`, `rank = [1.0]`, `tucker = []`, `cp = []`, no `min_bpw`. `min_bpw` keeps only the weight formats
//! of at least that many stored bits per weight (a GGML format's block bytes × 8 / block — `q6_k`
//! 6.5625, `q5_1` 6, `q4_k` 4.5 —, 16 or 32 for the floats, an integer format's bit-width) — e.g. an
//! output head kept at 6 bits or more whatever formats `[defaults]` offers. A layer's choice set is the product
//! (float formats ∪ ggml formats ∪ bits × schemes × granularity) × activations × (sparsity ∪ nm ∪
//! channels) × (rank ∪ tucker ∪ cp), where a GGML format takes only the parts the notation lets it
//! combine with: activations `none` (its kernel quantizes them itself), dense or `channels<P>`, any
//! rank but no tucker or cp; and `tucker<P>` / `cp<P>` take dense weights only (no sparsity part).
//! A `[[layer]]` table with product fields replaces just those fields; one with `choices` replaces the
//! whole set. A group's choices are the intersection of its members' sets.
//!
//! Activation quantization (`act8-*`) applies to float inputs only: a layer whose input is integer ids
//! (an embedding) that would be offered an `act8-*` choice — from an `activations` list or a `choices`
//! list of its own, one inherited from `[defaults]`, or a pin — is refused at load, with the
//! `file:line:column` of the entry that gives it. Give such a layer `activations = ["none"]` in a
//! `[[layer]]` table, or exclude it.
//!
//! A GGML block format fits a layer only when the in-features of each of its factors are a multiple of
//! the format's row multiple ([`GgmlFormat::row_multiple`]: 256 for K-types, 32 or 64 for the others;
//! with `rank<P>` the first factor's in-features are the rank k). Offered by `[defaults]`, a format is
//! left out quietly where it does not fit (recorded in [`SearchSpace::dropped`]; `mpsearch inspect
//! --space` lists them); asked for by a `[[layer]]` table (`ggml` or `choices`) or a pin for a layer it
//! does not fit, it is an error at the `file:line:column` of that entry, naming the layer and the rule.
//!
//! `tucker<P>` and `cp<P>` follow the same rule ([`Choice::layer_misfit`]): they apply to convolutions
//! with a spatial kernel (not to linear or embedding layers, not to 1×1 convolutions; Tucker-2 not to a
//! convolution with one input or output channel, where it is `rank<P>`) whose budget holds rank 1.
//! From `[defaults]` they are left out quietly elsewhere (so `[defaults] tucker = [0.5]` offers them
//! on every convolution they fit); from a `[[layer]]` table, a `choices` list or a pin, a layer they
//! do not fit is an error naming the layer and why.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

use super::choice::{
    ActQuant, Choice, GgmlFormat, Granularity, QuantScheme, Sparsity, WeightQuant, BITS,
};
use super::conv::ConvFactor;
use super::{
    DroppedChoice, LayerInfo, LayerKind, LayerStatus, SearchSpace, SpaceGroup, SpaceLayer,
};
use crate::error::{Error, Result};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpaceFile {
    space: Header,
    #[serde(default)]
    defaults: Option<Spanned<ChoiceSet>>,
    #[serde(default)]
    layer: Vec<ChoiceSet>,
    #[serde(default)]
    pin: Vec<Pin>,
    #[serde(default)]
    group: Vec<GroupRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct ChoiceSet {
    /// Only in `[[layer]]` tables.
    #[serde(rename = "match")]
    pattern: Option<Spanned<String>>,
    /// Only in `[[layer]]` tables: the table applies to matching layers of this kind only.
    kind: Option<Spanned<String>>,
    choices: Option<Vec<Spanned<String>>>,
    float: Option<Vec<Spanned<String>>>,
    ggml: Option<Vec<Spanned<String>>>,
    bits: Option<Vec<Spanned<i64>>>,
    schemes: Option<Vec<Spanned<String>>>,
    granularity: Option<Vec<Spanned<String>>>,
    activations: Option<Vec<Spanned<String>>>,
    sparsity: Option<Vec<Spanned<f64>>>,
    nm: Option<Vec<Spanned<String>>>,
    channels: Option<Vec<Spanned<f64>>>,
    rank: Option<Vec<Spanned<f64>>>,
    tucker: Option<Vec<Spanned<f64>>>,
    cp: Option<Vec<Spanned<f64>>>,
    min_bpw: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pin {
    #[serde(rename = "match")]
    pattern: Spanned<String>,
    choice: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupRule {
    #[serde(rename = "match")]
    pattern: Spanned<String>,
}

/// Reads `path` and resolves it against `layers`.
pub fn load(path: &Path, layers: &[LayerInfo]) -> Result<SearchSpace> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse(&text, path, layers)
}

/// Parses search-space TOML `text` (read from `path`) and resolves it against a model's `layers`.
pub fn parse(text: &str, path: impl Into<PathBuf>, layers: &[LayerInfo]) -> Result<SearchSpace> {
    let path: PathBuf = path.into();
    let file: SpaceFile = toml::from_str(text).map_err(|e| Error::toml(&path, text, &e))?;
    Resolver {
        path: &path,
        text,
        layers,
    }
    .resolve(file)
}

struct Resolver<'a> {
    path: &'a Path,
    text: &'a str,
    layers: &'a [LayerInfo],
}

/// The product fields with defaults filled in, already validated.
#[derive(Clone, Debug)]
struct Product {
    float: Vec<WeightQuant>,
    /// GGML block formats, each with where a `[[layer]]` table asked for it (`None`: from `[defaults]`).
    ggml: Vec<(GgmlFormat, Option<Range<usize>>)>,
    bits: Vec<u8>,
    schemes: Vec<QuantScheme>,
    granularity: Vec<Granularity>,
    activations: Vec<ActQuant>,
    sparsity: Vec<Sparsity>,
    nm: Vec<Sparsity>,
    channels: Vec<Sparsity>,
    rank: Vec<Option<u8>>,
    /// Convolution factorizations offered besides `rank`, with where a `[[layer]]` table gave them
    /// (`None`: from `[defaults]`).
    conv: Vec<(ConvFactor, Option<Range<usize>>)>,
    /// Weight formats of fewer stored bits per weight are left out ([`WeightQuant::bits_per_weight`]).
    min_bpw: Option<f64>,
    /// Where the first activation quantization of `activations` was written, if it has one.
    act_span: Option<Range<usize>>,
}

impl Default for Product {
    fn default() -> Self {
        Product {
            float: vec![WeightQuant::F32],
            ggml: vec![],
            bits: vec![],
            schemes: vec![QuantScheme::Symmetric],
            granularity: vec![Granularity::Channel],
            activations: vec![ActQuant::None],
            sparsity: vec![Sparsity::None],
            nm: vec![],
            channels: vec![],
            rank: vec![None],
            conv: vec![],
            min_bpw: None,
            act_span: None,
        }
    }
}

impl Product {
    fn choices(&self) -> Vec<Choice> {
        let mut weights = self.float.clone();
        weights.extend(self.ggml.iter().map(|(g, _)| WeightQuant::Ggml(*g)));
        for &bits in &self.bits {
            for &scheme in &self.schemes {
                for &granularity in &self.granularity {
                    weights.push(WeightQuant::Int {
                        bits,
                        scheme,
                        granularity,
                    });
                }
            }
        }
        if let Some(min) = self.min_bpw {
            weights.retain(|w| w.bits_per_weight() >= min);
        }
        let sparsities: Vec<Sparsity> = self
            .sparsity
            .iter()
            .chain(&self.nm)
            .chain(&self.channels)
            .copied()
            .collect();
        let mut out = Vec::new();
        for &w in &weights {
            for &act in &self.activations {
                for &sparsity in &sparsities {
                    // A GGML format takes only the parts it combines with (see the module docs).
                    let takes = act == ActQuant::None
                        && matches!(sparsity, Sparsity::None | Sparsity::Channels(_));
                    if w.ggml().is_some() && !takes {
                        continue;
                    }
                    for &rank in &self.rank {
                        out.push(Choice {
                            weights: w,
                            act,
                            sparsity,
                            rank,
                            conv: None,
                        });
                    }
                    // A convolution factorization takes dense, non-block weights.
                    if w.ggml().is_some() || sparsity != Sparsity::None {
                        continue;
                    }
                    for &(conv, _) in &self.conv {
                        out.push(Choice {
                            weights: w,
                            act,
                            sparsity,
                            rank: None,
                            conv: Some(conv),
                        });
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// A layer's choice set while overrides are applied.
// One per layer while a file resolves, never in a hot loop: boxing the product would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
enum Set {
    Product(Product),
    /// A `choices` list, where its first choice with activation quantization was written, and where
    /// each of its GGML block-format choices was written (empty when it is `[defaults]`' list).
    Explicit(
        Vec<Choice>,
        Option<Range<usize>>,
        Vec<(Choice, Range<usize>)>,
    ),
}

impl Set {
    fn choices(&self) -> Vec<Choice> {
        match self {
            Set::Product(p) => p.choices(),
            Set::Explicit(c, ..) => c.clone(),
        }
    }

    /// Where the set's activation quantization was written, if it offers any.
    fn act_span(&self) -> Option<Range<usize>> {
        match self {
            Set::Product(p) => p.act_span.clone(),
            Set::Explicit(_, span, _) => span.clone(),
        }
    }

    /// The GGML block-format and convolution-factorization choices a `[[layer]]` table (not
    /// `[defaults]`) asked for, with where.
    fn asked(&self) -> Vec<(Choice, Range<usize>)> {
        match self {
            Set::Product(p) => p
                .choices()
                .into_iter()
                .filter_map(|c| {
                    let conv = c
                        .conv
                        .and_then(|f| p.conv.iter().find(|(g, _)| *g == f)?.1.clone());
                    let block = || {
                        let g = c.weights.ggml()?;
                        p.ggml.iter().find(|(f, _)| *f == g)?.1.clone()
                    };
                    Some((c, conv.or_else(block)?))
                })
                .collect(),
            Set::Explicit(_, _, asked) => asked.clone(),
        }
    }

    /// The same set as `[defaults]` gives it: no choice of it was asked for by a `[[layer]]` table.
    fn into_defaults(self) -> Set {
        match self {
            Set::Product(mut p) => {
                p.ggml.iter_mut().for_each(|(_, span)| *span = None);
                p.conv.iter_mut().for_each(|(_, span)| *span = None);
                Set::Product(p)
            }
            Set::Explicit(c, act, _) => Set::Explicit(c, act, Vec::new()),
        }
    }
}

/// Every layer's choices while the file is resolved, with where they came from.
struct Layers {
    choices: Vec<Vec<Choice>>,
    status: Vec<LayerStatus>,
    /// Where each layer's set was last given (for an empty set).
    span: Vec<Range<usize>>,
    /// Where each layer's activation quantization was given, if it is offered any.
    act_span: Vec<Option<Range<usize>>>,
    /// Each layer's GGML block-format choices asked for by a `[[layer]]` table or a pin, with where.
    asked: Vec<Vec<(Choice, Range<usize>)>>,
    /// Choices `[defaults]` offered that a layer's weight cannot take (filled by `fit_blocks`).
    dropped: Vec<DroppedChoice>,
}

impl Resolver<'_> {
    fn err(&self, span: Range<usize>, message: impl Into<String>) -> Error {
        Error::at(self.path, self.text, span.start, message)
    }

    fn regex(&self, p: &Spanned<String>) -> Result<Regex> {
        Regex::new(p.get_ref()).map_err(|e| {
            self.err(
                p.span(),
                format!("`{}` is not a valid regular expression: {e}", p.get_ref()),
            )
        })
    }

    /// Indices of the layers `p` matches; an error if none.
    fn matching(&self, p: &Spanned<String>, re: &Regex, what: &str) -> Result<Vec<usize>> {
        let hits: Vec<usize> = (0..self.layers.len())
            .filter(|&i| re.is_match(&self.layers[i].name))
            .collect();
        if hits.is_empty() {
            let names: Vec<&str> = self
                .layers
                .iter()
                .take(6)
                .map(|l| l.name.as_str())
                .collect();
            return Err(self.err(
                p.span(),
                format!(
                    "{what} pattern `{}` matches no layer of the model; its {} layers are named like {}{} \
                     (`mpsearch inspect` lists them all)",
                    p.get_ref(),
                    self.layers.len(),
                    names.join(", "),
                    if self.layers.len() > 6 { ", …" } else { "" }
                ),
            ));
        }
        Ok(hits)
    }

    fn strings<T>(
        &self,
        list: &[Spanned<String>],
        field: &str,
        allowed: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Vec<T>> {
        list.iter()
            .map(|s| {
                parse(s.get_ref()).ok_or_else(|| {
                    self.err(
                        s.span(),
                        format!("{field}: `{}` is not allowed; use {allowed}", s.get_ref()),
                    )
                })
            })
            .collect()
    }

    fn percents(
        &self,
        list: &[Spanned<f64>],
        field: &str,
        range: &str,
        ok: impl Fn(f64) -> bool,
    ) -> Result<Vec<u8>> {
        list.iter()
            .map(|v| {
                let x = *v.get_ref();
                if !ok(x) {
                    return Err(self.err(v.span(), format!("{field}: {x} is outside {range}")));
                }
                let p = (x * 100.0).round();
                if (x * 100.0 - p).abs() > 1e-6 {
                    return Err(self.err(
                        v.span(),
                        format!("{field}: {x} is not a whole percent; use two decimals at most (e.g. 0.25)"),
                    ));
                }
                Ok(p as u8)
            })
            .collect()
    }

    /// Applies the product fields of `set` on top of `base`, validating each value.
    fn merge(&self, mut base: Product, set: &ChoiceSet) -> Result<Product> {
        if let Some(v) = &set.float {
            base.float = self.strings(
                v,
                "float",
                "f32, f16 or bf16 (GGML block formats go in `ggml`)",
                |s| s.parse::<WeightQuant>().ok().filter(WeightQuant::is_float),
            )?;
        }
        if let Some(v) = &set.ggml {
            let formats = self.strings(
                v,
                "ggml",
                "a GGML block format: q2_k, q3_k, q4_k, q5_k, q6_k, q8_0, q4_0, q4_1, q5_0, q5_1",
                |s| s.parse::<GgmlFormat>().ok(),
            )?;
            base.ggml = formats
                .into_iter()
                .zip(v)
                .map(|(g, s)| (g, Some(s.span())))
                .collect();
        }
        if let Some(v) = &set.bits {
            base.bits = self.bits(v)?;
        }
        if let Some(v) = &set.schemes {
            base.schemes = self.strings(v, "schemes", "sym or asym", |s| s.parse().ok())?;
        }
        if let Some(v) = &set.granularity {
            base.granularity = self.strings(
                v,
                "granularity",
                "tensor, channel or g<N> (N in 2..=65536)",
                |s| s.parse().ok(),
            )?;
        }
        if let Some(v) = &set.activations {
            base.activations =
                self.strings(v, "activations", "none, act8-static or act8-dynamic", |s| {
                    s.parse().ok()
                })?;
            base.act_span = v
                .iter()
                .zip(&base.activations)
                .find(|(_, a)| **a != ActQuant::None)
                .map(|(s, _)| s.span());
        }
        if let Some(v) = &set.sparsity {
            base.sparsity = self.unstructured(v)?;
        }
        if let Some(v) = &set.nm {
            base.nm = self.nm_patterns(v)?;
        }
        if let Some(v) = &set.channels {
            base.channels = self.removed_channels(v)?;
        }
        if let Some(v) = &set.rank {
            base.rank = self.ranks(v)?;
        }
        if set.tucker.is_some() || set.cp.is_some() {
            let mut conv = Vec::new();
            for (list, make) in [
                (&set.tucker, ConvFactor::Tucker as fn(u8) -> ConvFactor),
                (&set.cp, ConvFactor::Cp),
            ] {
                match list {
                    Some(v) => conv.extend(self.conv_factors(v, make)?),
                    // A table that gives one of the two keeps the other's values.
                    None => conv.extend(
                        base.conv
                            .iter()
                            .filter(|(f, _)| {
                                std::mem::discriminant(f) == std::mem::discriminant(&make(1))
                            })
                            .cloned(),
                    ),
                }
            }
            base.conv = conv;
        }
        if let Some(v) = &set.min_bpw {
            let x = *v.get_ref();
            if !(x.is_finite() && (0.0..=32.0).contains(&x)) {
                return Err(self.err(
                    v.span(),
                    format!("min_bpw = {x}: give bits per weight between 0 and 32 (e.g. 6.0)"),
                ));
            }
            base.min_bpw = Some(x);
        }
        Ok(base)
    }

    /// `kind = "..."`: a layer kind as `inspect` prints it.
    fn kind(&self, k: &Spanned<String>) -> Result<LayerKind> {
        [LayerKind::Linear, LayerKind::Conv2d, LayerKind::Embedding]
            .into_iter()
            .find(|kind| kind.to_string() == *k.get_ref())
            .ok_or_else(|| {
                self.err(
                    k.span(),
                    format!(
                        "kind = \"{}\": give linear, conv2d or embedding",
                        k.get_ref()
                    ),
                )
            })
    }

    /// `bits = [...]`: integer bit-widths in [`BITS`].
    fn bits(&self, list: &[Spanned<i64>]) -> Result<Vec<u8>> {
        list.iter()
            .map(|b| {
                u8::try_from(*b.get_ref())
                    .ok()
                    .filter(|b| BITS.contains(b))
                    .ok_or_else(|| {
                        self.err(
                            b.span(),
                            format!(
                                "bits: {} is outside 2..=8 (use float = [...] for 16 and 32 bits)",
                                b.get_ref()
                            ),
                        )
                    })
            })
            .collect()
    }

    /// `sparsity = [...]`: unstructured pruned fractions; 0.0 is dense.
    fn unstructured(&self, list: &[Spanned<f64>]) -> Result<Vec<Sparsity>> {
        Ok(self
            .percents(list, "sparsity", "[0, 1)", |x| (0.0..1.0).contains(&x))?
            .into_iter()
            .map(|p| {
                if p == 0 {
                    Sparsity::None
                } else {
                    Sparsity::Unstructured(p)
                }
            })
            .collect())
    }

    /// `nm = [...]`: N:M patterns.
    fn nm_patterns(&self, list: &[Spanned<String>]) -> Result<Vec<Sparsity>> {
        list.iter()
            .map(|s| match s.get_ref().parse::<Sparsity>() {
                Ok(nm @ Sparsity::NM { .. }) => Ok(nm),
                _ => Err(self.err(
                    s.span(),
                    format!(
                        "nm: `{}` is not an N:M pattern with 1 <= N < M <= {} (e.g. \"2:4\", \"4:8\")",
                        s.get_ref(),
                        super::MAX_M
                    ),
                )),
            })
            .collect()
    }

    /// `channels = [...]`: fractions of output channels removed; 0.0 adds nothing.
    fn removed_channels(&self, list: &[Spanned<f64>]) -> Result<Vec<Sparsity>> {
        Ok(self
            .percents(list, "channels", "[0, 1)", |x| (0.0..1.0).contains(&x))?
            .into_iter()
            .filter(|&p| p > 0)
            .map(Sparsity::Channels)
            .collect())
    }

    /// `rank = [...]`: fractions of full rank kept; 1.0 is full rank (no factorization).
    fn ranks(&self, list: &[Spanned<f64>]) -> Result<Vec<Option<u8>>> {
        let ranks = self
            .percents(list, "rank", "(0, 1]", |x| x > 0.0 && x <= 1.0)?
            .into_iter()
            .map(|p| if p >= 100 { None } else { Some(p) })
            .collect();
        if let Some(bad) = list.iter().find(|x| (*x.get_ref() * 100.0).round() < 1.0) {
            return Err(self.err(bad.span(), "rank: keep at least 1% of full rank (0.01)"));
        }
        Ok(ranks)
    }

    /// `tucker = [...]` or `cp = [...]`: fractions of the layer's parameters kept, in (0, 1).
    fn conv_factors(
        &self,
        list: &[Spanned<f64>],
        make: fn(u8) -> ConvFactor,
    ) -> Result<Vec<(ConvFactor, Option<Range<usize>>)>> {
        let field = make(1).name();
        let percents = self.percents(list, field, "(0, 1)", |x| x > 0.0 && x < 1.0)?;
        list.iter()
            .zip(percents)
            .map(|(v, p)| {
                if p < 1 {
                    return Err(self.err(
                        v.span(),
                        format!("{field}: keep at least 1% of the parameters (0.01)"),
                    ));
                }
                Ok((make(p), Some(v.span())))
            })
            .collect()
    }

    fn explicit(&self, list: &[Spanned<String>]) -> Result<Set> {
        let mut out = list
            .iter()
            .map(|s| {
                s.get_ref()
                    .parse::<Choice>()
                    .map_err(|e| self.err(s.span(), format!("choices: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let act_span = list
            .iter()
            .zip(&out)
            .find(|(_, c)| c.act != ActQuant::None)
            .map(|(s, _)| s.span());
        let asked = list
            .iter()
            .zip(&out)
            .filter(|(_, c)| c.weights.ggml().is_some() || c.conv.is_some())
            .map(|(s, c)| (*c, s.span()))
            .collect();
        out.sort();
        out.dedup();
        Ok(Set::Explicit(out, act_span, asked))
    }

    /// Applies one table (defaults or an override) to a layer's set.
    fn apply(&self, current: &Set, table: &ChoiceSet, span: Range<usize>) -> Result<Set> {
        let has_product = table.float.is_some()
            || table.ggml.is_some()
            || table.bits.is_some()
            || table.schemes.is_some()
            || table.granularity.is_some()
            || table.activations.is_some()
            || table.sparsity.is_some()
            || table.nm.is_some()
            || table.channels.is_some()
            || table.rank.is_some()
            || table.tucker.is_some()
            || table.cp.is_some()
            || table.min_bpw.is_some();
        if let Some(list) = &table.choices {
            if has_product {
                return Err(self.err(
                    span,
                    "a table gives either `choices` or the product fields (float, ggml, bits, schemes, \
                     granularity, activations, sparsity, nm, channels, rank, tucker, cp, min_bpw), \
                     not both",
                ));
            }
            return self.explicit(list);
        }
        let base = match current {
            Set::Product(p) => p.clone(),
            Set::Explicit(..) => Product::default(),
        };
        Ok(Set::Product(self.merge(base, table)?))
    }

    /// The steps of resolving a file against the model's layers, in order: choice sets from
    /// `[defaults]` and `[[layer]]` tables, pins, exclusions, checks, groups.
    fn resolve(&self, file: SpaceFile) -> Result<SearchSpace> {
        if self.layers.is_empty() {
            return Err(Error::file(
                self.path,
                "the model has no compressible layers",
            ));
        }
        let mut layers = self.layer_sets(&file)?;
        self.pin(&file.pin, &mut layers)?;
        self.exclude(&file.space.exclude, &mut layers)?;
        self.fit_blocks(&mut layers)?;
        self.check_not_empty(&layers)?;
        self.check_ids_not_quantized(&layers)?;
        let group_of = self.groups(&file.group)?;
        self.build(file.space, layers, group_of)
    }

    /// Each layer's choice set from `[defaults]` and the `[[layer]]` tables that match it.
    fn layer_sets(&self, file: &SpaceFile) -> Result<Layers> {
        let n = self.layers.len();
        let default_span = file.defaults.as_ref().map(|d| d.span()).unwrap_or(0..0);
        let defaults = match &file.defaults {
            Some(d) if d.get_ref().pattern.is_some() || d.get_ref().kind.is_some() => {
                return Err(self.err(
                    d.span(),
                    "[defaults] applies to every layer and takes no `match` or `kind`; put per-layer choices in a [[layer]] table",
                ))
            }
            Some(d) => self
                .apply(&Set::Product(Product::default()), d.get_ref(), d.span())?
                .into_defaults(),
            None => Set::Product(Product::default()),
        };
        let mut sets: Vec<Set> = vec![defaults; n];
        let mut span: Vec<Range<usize>> = vec![default_span; n];
        for o in &file.layer {
            let Some(pattern) = &o.pattern else {
                return Err(Error::file(
                    self.path,
                    "every [[layer]] table needs `match = '<regex>'` naming the layers it overrides",
                ));
            };
            let re = self.regex(pattern)?;
            let kind = o.kind.as_ref().map(|k| self.kind(k)).transpose()?;
            let hits = self.matching(pattern, &re, "[[layer]]")?;
            let hits: Vec<usize> = hits
                .into_iter()
                .filter(|&i| kind.is_none_or(|k| self.layers[i].kind == k))
                .collect();
            if let (Some(k), true) = (&o.kind, hits.is_empty()) {
                return Err(self.err(
                    k.span(),
                    format!(
                        "[[layer]] pattern `{}` matches no {} layer of the model (`mpsearch inspect` \
                         lists every layer with its kind)",
                        pattern.get_ref(),
                        k.get_ref()
                    ),
                ));
            }
            for i in hits {
                sets[i] = self.apply(&sets[i], o, pattern.span())?;
                span[i] = pattern.span();
            }
        }
        Ok(Layers {
            choices: sets.iter().map(Set::choices).collect(),
            act_span: sets.iter().map(Set::act_span).collect(),
            asked: sets.iter().map(Set::asked).collect(),
            dropped: Vec::new(),
            status: vec![LayerStatus::Searchable; n],
            span,
        })
    }

    /// `[[pin]]`: the matching layers get the one choice.
    fn pin(&self, pins: &[Pin], layers: &mut Layers) -> Result<()> {
        for p in pins {
            let re = self.regex(&p.pattern)?;
            let choice: Choice = p
                .choice
                .get_ref()
                .parse()
                .map_err(|e| self.err(p.choice.span(), format!("pin: {e}")))?;
            for i in self.matching(&p.pattern, &re, "[[pin]]")? {
                layers.choices[i] = vec![choice];
                layers.status[i] = LayerStatus::Pinned;
                layers.span[i] = p.pattern.span();
                layers.act_span[i] = (choice.act != ActQuant::None).then(|| p.choice.span());
                layers.asked[i] = vec![(choice, p.choice.span())];
            }
        }
        Ok(())
    }

    /// `exclude`: the matching layers stay f32 (a pinned layer cannot also be excluded).
    fn exclude(&self, patterns: &[Spanned<String>], layers: &mut Layers) -> Result<()> {
        for e in patterns {
            let re = self.regex(e)?;
            for i in self.matching(e, &re, "exclude")? {
                if layers.status[i] == LayerStatus::Pinned {
                    return Err(self.err(
                        e.span(),
                        format!(
                            "layer `{}` is both pinned and excluded; remove it from one of them",
                            self.layers[i].name
                        ),
                    ));
                }
                layers.choices[i] = vec![Choice::F32];
                layers.status[i] = LayerStatus::Excluded;
                layers.act_span[i] = None;
                layers.asked[i].clear();
            }
        }
        Ok(())
    }

    /// GGML block formats only where every factor's in-features fit their blocks
    /// ([`Choice::block_misfit`]), `tucker<P>` / `cp<P>` only where they apply
    /// ([`Choice::layer_misfit`]): one asked for by a `[[layer]]` table or a pin is an error there,
    /// naming the layer and the rule; one from `[defaults]` is dropped and recorded.
    fn fit_blocks(&self, layers: &mut Layers) -> Result<()> {
        for (i, info) in self.layers.iter().enumerate() {
            let mut kept = Vec::with_capacity(layers.choices[i].len());
            for &c in &layers.choices[i] {
                let Some(why) = c.layer_misfit(info) else {
                    kept.push(c);
                    continue;
                };
                if let Some((_, span)) = layers.asked[i].iter().find(|(a, _)| *a == c) {
                    return Err(self.err(
                        span.clone(),
                        format!(
                            "layer `{}` ({} {}) cannot take `{c}`: {why}. Leave {} out of the list \
                             for this layer (in [defaults] {} is left out quietly where it does \
                             not fit), or narrow the pattern to layers it fits",
                            info.name,
                            info.kind,
                            info.shape_string(),
                            match c.conv {
                                Some(f) => f.to_string(),
                                None => c.weights.to_string(),
                            },
                            if c.conv.is_some() { "a factorization" } else { "a format" }
                        ),
                    ));
                }
                layers.dropped.push(DroppedChoice {
                    layer: info.name.clone(),
                    choice: c,
                    why,
                });
            }
            layers.choices[i] = kept;
        }
        Ok(())
    }

    /// Every layer has at least one choice.
    fn check_not_empty(&self, layers: &Layers) -> Result<()> {
        let Some(i) = layers.choices.iter().position(Vec::is_empty) else {
            return Ok(());
        };
        let name = &self.layers[i].name;
        let dropped: Vec<String> = layers
            .dropped
            .iter()
            .filter(|d| &d.layer == name)
            .map(|d| d.choice.to_string())
            .collect();
        let also = if dropped.is_empty() {
            String::new()
        } else {
            format!(
                " ({} left out: they do not fit it: `mpsearch inspect --space` says why)",
                dropped.join(", ")
            )
        };
        Err(self.err(
            layers.span[i].clone(),
            format!(
                "layer `{name}` has an empty choice set{also}: a list here (or in [defaults]) is \
                 empty, so there is nothing to choose from; give at least one weight format (float, \
                 ggml or bits) and one value of each other list"
            ),
        ))
    }

    /// No layer whose input is ids (an embedding) is offered activation quantization: the error points
    /// at the entry that offers it.
    fn check_ids_not_quantized(&self, layers: &Layers) -> Result<()> {
        for (i, info) in self.layers.iter().enumerate() {
            if !info.kind.takes_ids() {
                continue;
            }
            let Some(c) = layers.choices[i].iter().find(|c| c.act != ActQuant::None) else {
                continue;
            };
            return Err(self.err(
                layers.act_span[i].clone().unwrap_or(0..0),
                format!(
                    "layer `{}` is an {}: its input is integer token ids, and `{c}` would quantize the \
                     ids themselves (an 8-bit grid turns them into other ids), so activation \
                     quantization is not allowed for it. Give it activations = [\"none\"] in a \
                     [[layer]] table matching it (a list in [defaults] applies to every layer), drop \
                     act8 from its `choices` or pin, or exclude it",
                    info.name, info.kind
                ),
            ));
        }
        Ok(())
    }

    /// Group key per layer: `Some((rule, captures))` for grouped layers.
    fn groups(&self, rules: &[GroupRule]) -> Result<Vec<Option<(usize, String)>>> {
        let mut out: Vec<Option<(usize, String)>> = vec![None; self.layers.len()];
        for (r, rule) in rules.iter().enumerate() {
            let re = self.regex(&rule.pattern)?;
            for i in self.matching(&rule.pattern, &re, "[[group]]")? {
                let caps = re
                    .captures(&self.layers[i].name)
                    .map(|c| {
                        c.iter()
                            .skip(1)
                            .map(|m| m.map_or("", |m| m.as_str()))
                            .collect::<Vec<_>>()
                            .join("\u{1f}")
                    })
                    .unwrap_or_default();
                if let Some((prev, _)) = &out[i] {
                    return Err(self.err(
                        rule.pattern.span(),
                        format!(
                            "layer `{}` is matched by group rule {} and by group rule {}; a layer belongs to one group",
                            self.layers[i].name,
                            prev + 1,
                            r + 1
                        ),
                    ));
                }
                out[i] = Some((r, caps));
            }
        }
        Ok(out)
    }

    /// The search space: layers joined into groups (a group's choices are its members' common
    /// ones), then each group's and layer's status settled.
    fn build(
        &self,
        header: Header,
        layers: Layers,
        group_of: Vec<Option<(usize, String)>>,
    ) -> Result<SearchSpace> {
        let (mut groups, mut members) = self.join_groups(&layers, &group_of)?;
        settle_status(&mut groups, &mut members);
        Ok(SearchSpace {
            name: header.name,
            description: header.description,
            origin: self.path.to_path_buf(),
            layers: members,
            groups,
            dropped: layers.dropped,
        })
    }

    /// One group per group key (or per ungrouped layer), in layer order, with its members and the
    /// choices they have in common; an error when they have none.
    fn join_groups(
        &self,
        layers: &Layers,
        group_of: &[Option<(usize, String)>],
    ) -> Result<(Vec<SpaceGroup>, Vec<SpaceLayer>)> {
        let mut groups: Vec<SpaceGroup> = Vec::new();
        let mut by_key: BTreeMap<(usize, String), usize> = BTreeMap::new();
        let mut members = Vec::with_capacity(self.layers.len());
        for (i, info) in self.layers.iter().enumerate() {
            let (choices, status) = (&layers.choices[i], layers.status[i]);
            let known = group_of[i]
                .as_ref()
                .and_then(|key| by_key.get(key).copied());
            let g = match known {
                Some(g) => {
                    self.join(&mut groups[g], i, choices, status)?;
                    g
                }
                None => {
                    if let Some(key) = &group_of[i] {
                        by_key.insert(key.clone(), groups.len());
                    }
                    groups.push(SpaceGroup::new(
                        info.name.clone(),
                        i,
                        choices.clone(),
                        status,
                    ));
                    groups.len() - 1
                }
            };
            members.push(SpaceLayer {
                info: info.clone(),
                group: g,
                status,
            });
        }
        Ok((groups, members))
    }

    /// Layer `i` joins `group`, which keeps the choices they have in common.
    fn join(
        &self,
        group: &mut SpaceGroup,
        i: usize,
        choices: &[Choice],
        status: LayerStatus,
    ) -> Result<()> {
        let before = group.choices.len();
        group.choices.retain(|c| choices.contains(c));
        if group.choices.is_empty() {
            return Err(Error::file(
                self.path,
                format!(
                    "group `{}`: its layers have no choice in common (`{}` allows {}; the group \
                     so far allowed {} choices); align their [[layer]] overrides, pins and exclusions",
                    group.name,
                    self.layers[i].name,
                    list(choices),
                    before
                ),
            ));
        }
        group.members.push(i);
        group.status = merge_status(group.status, status);
        Ok(())
    }
}

/// A group that mixes searchable and pinned/excluded members ends with one choice: it is pinned, and
/// so are its searchable members.
fn settle_status(groups: &mut [SpaceGroup], layers: &mut [SpaceLayer]) {
    for g in groups.iter_mut() {
        if g.choices.len() == 1 && g.status == LayerStatus::Searchable {
            g.status = LayerStatus::Pinned;
        }
    }
    for l in layers {
        if l.status == LayerStatus::Searchable {
            l.status = groups[l.group].status;
        }
    }
}

fn merge_status(a: LayerStatus, b: LayerStatus) -> LayerStatus {
    use LayerStatus::*;
    match (a, b) {
        (Excluded, _) | (_, Excluded) => Excluded,
        (Pinned, _) | (_, Pinned) => Pinned,
        _ => Searchable,
    }
}

/// `a, b, c` (at most 12, then `… (N in all)`).
pub(crate) fn list(choices: &[Choice]) -> String {
    let mut s = choices
        .iter()
        .take(12)
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if choices.len() > 12 {
        s.push_str(&format!(", … ({} in all)", choices.len()));
    }
    s
}
