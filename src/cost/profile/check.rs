//! Validation of a profile file's sections ([`Checker`]): each value checked against what the
//! format allows (see the parent module's docs), an error pointing at its place in the file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use toml::Spanned;

use super::{
    ComputeFile, MeasuredEntry, MeasuredKey, Memory, Overhead, Precision, SparsitySupport,
    WeightOnlyFile, WeightOnlyKernels, ALL_PRECISIONS, FALLBACK_FORMS, GGML_FORMS,
};
use crate::error::{Error, Result};
use crate::space::{ActQuant, GgmlFormat, Sparsity};

/// `[compute]`, validated.
pub(super) struct Compute {
    pub(super) gmacs: BTreeMap<Precision, f64>,
    /// The older `[compute] weight_only = "<precision>"`, with the span of its value.
    pub(super) legacy_weight_only: Option<(Precision, std::ops::Range<usize>)>,
    pub(super) bit_serial_gbops: Option<f64>,
}

/// Validates the sections of a profile file read from `path`, pointing each error at its place in
/// `text` where the parser kept one.
pub(super) struct Checker<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
}

impl Checker<'_> {
    fn at(&self, span: std::ops::Range<usize>, message: String) -> Error {
        Error::at(self.path, self.text, span.start, message)
    }

    /// `[compute]`: a throughput per precision (f32 required), `bit_serial_gbops` and the older
    /// `weight_only`.
    pub(super) fn compute(&self, compute: &ComputeFile) -> Result<Compute> {
        let mut gmacs = BTreeMap::new();
        let mut weight_only = None;
        let mut bit_serial_gbops = None;
        for (key, value) in compute {
            match key.as_str() {
                "weight_only" => {
                    let p = value
                        .get_ref()
                        .as_str()
                        .ok_or_else(|| "weight_only must be a string".to_string())
                        .and_then(str::parse)
                        .map_err(|e: String| {
                            self.at(value.span(), format!("[compute] weight_only: {e}"))
                        })?;
                    weight_only = Some((p, value.span()));
                }
                "bit_serial_gbops" => {
                    bit_serial_gbops = Some(self.throughput("[compute] bit_serial_gbops", value)?)
                }
                _ => {
                    let p: Precision = key.parse().map_err(|e: String| {
                        self.at(
                            value.span(),
                            format!("[compute] key {e}; the other allowed keys are weight_only and bit_serial_gbops"),
                        )
                    })?;
                    if let Precision::Ggml(g) = p {
                        return Err(self.at(
                            value.span(),
                            format!(
                                "[compute] {g}: a GGML block format's kernel goes in the [ggml] table \
                                 ({g} = <GMAC/s>, or {g} = {{ fallback = \"f32\" }}); [compute] holds \
                                 the float and integer kernels"
                            ),
                        ));
                    }
                    gmacs.insert(p, self.throughput(&format!("[compute] {key}"), value)?);
                }
            }
        }
        if !gmacs.contains_key(&Precision::F32) {
            return Err(Error::file(
                self.path,
                "[compute] has no f32 entry: every profile needs the f32 throughput, which is what a \
                 precision the device lacks finally runs as (for an accelerator, give its host fallback)",
            ));
        }
        Ok(Compute {
            gmacs,
            legacy_weight_only: weight_only,
            bit_serial_gbops,
        })
    }

    /// `[weight_only]`, or the older `[compute] weight_only` (a kernel for every integer width): a float
    /// precision the device has, and integer widths in 2..=8.
    pub(super) fn weight_only(
        &self,
        table: Option<&WeightOnlyFile>,
        legacy: Option<(Precision, std::ops::Range<usize>)>,
        gmacs: &BTreeMap<Precision, f64>,
    ) -> Result<Option<WeightOnlyKernels>> {
        let (precision, span, bits) = match (table, legacy) {
            (Some(_), Some((_, span))) => return Err(self.at(
                span,
                "[compute] weight_only and a [weight_only] table both describe the weight-only \
                     kernels: keep the [weight_only] table (precision and bits) and remove the \
                     [compute] key"
                    .into(),
            )),
            (None, None) => return Ok(None),
            (None, Some((p, span))) => (p, span, crate::space::BITS.collect::<Vec<u8>>()),
            (Some(t), None) => {
                let p: Precision = t.precision.get_ref().parse().map_err(|e: String| {
                    self.at(t.precision.span(), format!("[weight_only] precision: {e}"))
                })?;
                let mut bits = Vec::new();
                for b in &t.bits {
                    if !crate::space::BITS.contains(b.get_ref()) {
                        return Err(self.at(
                            b.span(),
                            format!(
                                "[weight_only] bits: {} is not an integer width in 2..=8",
                                b.get_ref()
                            ),
                        ));
                    }
                    bits.push(*b.get_ref());
                }
                if bits.is_empty() {
                    return Err(self.at(
                        t.precision.span(),
                        "[weight_only] bits is empty: list the integer widths that have a weight-only \
                         kernel (e.g. [8, 4]), or remove the table"
                            .into(),
                    ));
                }
                (p, t.precision.span(), bits)
            }
        };
        if !precision.is_float() {
            return Err(self.at(
                span,
                format!(
                    "weight-only kernels multiply with float activations, so their precision is f32, \
                     f16 or bf16, not {precision}; integer activations are the act8-* choices, which run \
                     an integer kernel of [compute], and GGML block formats run their [ggml] kernels"
                ),
            ));
        }
        if !gmacs.contains_key(&precision) {
            return Err(self.at(
                span,
                format!("weight-only precision \"{precision}\": the device has no {precision} throughput in [compute]"),
            ));
        }
        let mut bits = bits;
        bits.sort_unstable();
        bits.dedup();
        Ok(Some(WeightOnlyKernels { precision, bits }))
    }

    /// A `[compute]` or `[ggml]` rate (`what` names it): positive and finite.
    fn throughput(&self, what: &str, value: &Spanned<toml::Value>) -> Result<f64> {
        let v = match value.get_ref() {
            toml::Value::Float(f) => *f,
            toml::Value::Integer(i) => *i as f64,
            _ => f64::NAN,
        };
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(self.at(
                value.span(),
                format!("{what} must be a positive number (GMAC/s, or giga bit-operations/s for bit_serial_gbops)"),
            ))
        }
    }

    /// `[memory] bandwidth_gbs`: positive and finite.
    pub(super) fn bandwidth(&self, memory: &Memory) -> Result<f64> {
        let bw = *memory.bandwidth_gbs.get_ref();
        if !(bw.is_finite() && bw > 0.0) {
            return Err(self.at(
                memory.bandwidth_gbs.span(),
                format!("[memory] bandwidth_gbs = {bw}: must be a positive number of GB/s"),
            ));
        }
        Ok(bw)
    }

    /// `[overhead] per_layer_us`: a finite number >= 0.
    pub(super) fn overhead(&self, overhead: &Overhead) -> Result<f64> {
        let us = overhead.per_layer_us;
        if !(us.is_finite() && us >= 0.0) {
            return Err(Error::file(
                self.path,
                "[overhead] per_layer_us must be a number of microseconds >= 0",
            ));
        }
        Ok(us)
    }

    /// `[[model]]`: every term names a layer key and a batch once, with a time in µs.
    pub(super) fn model_terms(&self, terms: &[super::ModelTerm]) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for (i, t) in terms.iter().enumerate() {
            let bad = |msg: String| {
                Err(Error::file(
                    self.path,
                    format!("[[model]] entry {} (`{}`): {msg}", i + 1, t.name),
                ))
            };
            if t.batch == 0 {
                return bad("batch must be at least 1".into());
            }
            if !(t.us.is_finite() && t.us >= 0.0) {
                return bad(format!(
                    "us must be a number of microseconds >= 0, not {}",
                    t.us
                ));
            }
            if let Some((p, us)) = t.spill_us.iter().find(|(_, us)| !us.is_finite()) {
                return bad(format!(
                    "spill_us.{p} must be a number of microseconds, not {us}"
                ));
            }
            if t.spill_us.contains_key(&Precision::F32) {
                return bad(
                    "spill_us names f32: it is what a layer on another kernel adds to a pass \
                     of f32 layers, so f32 has none; remove it"
                        .into(),
                );
            }
            if t.layers.len() != 16 || !t.layers.bytes().all(|c| c.is_ascii_hexdigit()) {
                return bad(format!(
                    "layers must be the model's 16-hex-digit layer key as `calibrate --model` \
                     writes it, not `{}`",
                    t.layers
                ));
            }
            if !seen.insert((t.layers.clone(), t.batch)) {
                return bad(format!(
                    "a second term for the same model at batch {}; keep one",
                    t.batch
                ));
            }
        }
        Ok(())
    }

    /// `[sparsity] nm`: the N:M patterns the device accelerates.
    pub(super) fn nm_patterns(&self, list: &[Spanned<String>]) -> Result<Vec<(u8, u8)>> {
        list.iter()
            .map(|p| match p.get_ref().parse::<Sparsity>() {
                Ok(Sparsity::NM { n, m }) => Ok((n, m)),
                Ok(_) => Err(self.at(
                    p.span(),
                    format!(
                        "[sparsity] nm: `{}` is not an N:M pattern such as 2:4",
                        p.get_ref()
                    ),
                )),
                Err(_) => Err(self.at(
                    p.span(),
                    format!(
                        "[sparsity] nm: `{}` is not an N:M pattern such as 2:4 (1 <= N < M)",
                        p.get_ref()
                    ),
                )),
            })
            .collect()
    }

    /// `[sparsity] nm_precisions`: precisions the device computes in (or, on a bit-serial device, any
    /// integer width); every precision when left out.
    pub(super) fn nm_precisions(
        &self,
        list: Option<&[Spanned<String>]>,
        gmacs: &BTreeMap<Precision, f64>,
        bit_serial: bool,
    ) -> Result<Vec<Precision>> {
        let Some(list) = list else {
            return Ok(ALL_PRECISIONS.to_vec());
        };
        let mut out = Vec::new();
        for p in list {
            let prec: Precision = p
                .get_ref()
                .parse()
                .map_err(|e: String| self.at(p.span(), format!("[sparsity] nm_precisions: {e}")))?;
            if let Precision::Ggml(g) = prec {
                return Err(self.at(
                    p.span(),
                    format!(
                        "[sparsity] nm_precisions: {g} is a GGML block format, which takes no N:M \
                         sparsity (a block stores every weight)"
                    ),
                ));
            }
            let has =
                gmacs.contains_key(&prec) || (bit_serial && matches!(prec, Precision::Int(_)));
            if !has {
                return Err(self.at(
                    p.span(),
                    format!("[sparsity] nm_precisions: the device has no {prec} kernel (no {prec} throughput in [compute])"),
                ));
            }
            out.push(prec);
        }
        Ok(out)
    }

    /// `[sparsity] unstructured_efficiency`: in [0, 1], 0 when left out.
    pub(super) fn unstructured_efficiency(&self, sparsity: &SparsitySupport) -> Result<f64> {
        match &sparsity.unstructured_efficiency {
            Some(e) if !(0.0..=1.0).contains(e.get_ref()) => Err(self.at(
                e.span(),
                format!(
                    "[sparsity] unstructured_efficiency = {}: must be in [0, 1]",
                    e.get_ref()
                ),
            )),
            Some(e) => Ok(*e.get_ref()),
            None => Ok(0.0),
        }
    }

    /// `[fallback]`: precision → the precision it runs as (`int4 = "int8"`), which the device must
    /// have; a float precision may instead run from a copy made at load (`bf16 = { copy = "f32" }`).
    /// Returns the fallbacks and the precisions run from a copy.
    pub(super) fn fallbacks(
        &self,
        fallback: &BTreeMap<String, Spanned<toml::Value>>,
        gmacs: &BTreeMap<Precision, f64>,
    ) -> Result<(BTreeMap<Precision, Precision>, BTreeSet<Precision>)> {
        let mut out = BTreeMap::new();
        let mut copies = BTreeSet::new();
        for (from, value) in fallback {
            let span = value.span();
            let f: Precision = from
                .parse()
                .map_err(|e: String| self.at(span.clone(), format!("[fallback] key {e}")))?;
            if let Precision::Ggml(g) = f {
                return Err(self.at(
                    span,
                    format!(
                        "[fallback] {g}: a GGML block format's fallback goes in the [ggml] table \
                         ({g} = {{ fallback = \"f32\" }})"
                    ),
                ));
            }
            let (to, copy) = match value.get_ref() {
                toml::Value::String(t) => (t.as_str(), false),
                toml::Value::Table(t) if f.is_float() && t.len() == 1 => match t.get("copy") {
                    Some(toml::Value::String(c)) => (c.as_str(), true),
                    _ => return Err(self.at(span, format!("[fallback] {from}: {FALLBACK_FORMS}"))),
                },
                _ => return Err(self.at(span, format!("[fallback] {from}: {FALLBACK_FORMS}"))),
            };
            let t: Precision = to
                .parse()
                .map_err(|e: String| self.at(span.clone(), format!("[fallback] {from}: {e}")))?;
            if !gmacs.contains_key(&t) || matches!(t, Precision::Ggml(_)) {
                return Err(self.at(
                    span,
                    format!("[fallback] {from} = \"{t}\": the device has no {t} throughput in [compute]"),
                ));
            }
            if copy && !t.is_float() {
                return Err(self.at(
                    span,
                    format!(
                        "[fallback] {from} = {{ copy = \"{t}\" }}: a copy is in a float precision"
                    ),
                ));
            }
            if copy {
                copies.insert(f);
            }
            out.insert(f, t);
        }
        Ok((out, copies))
    }

    /// `[ggml]`: per GGML block format, its kernel's rate (GMAC/s) or what it falls back to: a float
    /// precision of `[compute]` (a dequantized copy) or a format with a kernel here that holds it
    /// exactly ([`GgmlFormat::held_exactly_by`]). Returns the rates and the fallbacks.
    #[allow(clippy::type_complexity)]
    pub(super) fn ggml(
        &self,
        table: &BTreeMap<String, Spanned<toml::Value>>,
        gmacs: &BTreeMap<Precision, f64>,
    ) -> Result<(BTreeMap<Precision, f64>, BTreeMap<Precision, Precision>)> {
        let mut rates = BTreeMap::new();
        let mut wanted = Vec::new();
        for (key, value) in table {
            let span = value.span();
            let g: GgmlFormat = key.parse().map_err(|_| {
                self.at(
                    span.clone(),
                    format!(
                        "[ggml] key `{key}` is not a GGML block format; the keys are q2_k, q3_k, q4_k, \
                         q5_k, q6_k, q8_0, q4_0, q4_1, q5_0, q5_1"
                    ),
                )
            })?;
            match value.get_ref() {
                toml::Value::Float(_) | toml::Value::Integer(_) => {
                    rates.insert(
                        Precision::Ggml(g),
                        self.throughput(&format!("[ggml] {g}"), value)?,
                    );
                }
                toml::Value::Table(t) if t.len() == 1 => match t.get("fallback") {
                    Some(toml::Value::String(to)) => wanted.push((g, to.clone(), span)),
                    _ => return Err(self.at(span, format!("[ggml] {g}: {GGML_FORMS}"))),
                },
                _ => return Err(self.at(span, format!("[ggml] {g}: {GGML_FORMS}"))),
            }
        }
        let mut fallbacks = BTreeMap::new();
        for (g, to, span) in wanted {
            let t: Precision = to
                .parse()
                .map_err(|e: String| self.at(span.clone(), format!("[ggml] {g} fallback: {e}")))?;
            let ok = match t {
                p if p.is_float() => gmacs.contains_key(&p).then_some(()).ok_or_else(|| {
                    format!(
                        "the device has no {p} throughput in [compute] to run the dequantized copy"
                    )
                }),
                Precision::Ggml(h) if !g.held_exactly_by().contains(&h) => Err(format!(
                    "{h}'s blocks do not hold every {g} value exactly{}; fall back to a float \
                     precision (a dequantized copy)",
                    match g.held_exactly_by() {
                        [] => String::new(),
                        some => format!(
                            " (the formats that do: {})",
                            some.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
                        ),
                    }
                )),
                Precision::Ggml(h) => rates.contains_key(&t).then_some(()).ok_or_else(|| {
                    format!("{h} has no kernel rate in [ggml] (`{h} = <GMAC/s>`) to fall back to")
                }),
                _ => Err(format!(
                    "an integer kernel multiplies int8 activations with one range per tensor or \
                     sample, not the {} blocks {g}'s arithmetic quantizes them to; fall back to a \
                     float precision (a dequantized copy) or a GGML format that holds {g} exactly",
                    g.act_blocks()
                )),
            };
            ok.map_err(|why| {
                self.at(
                    span,
                    format!("[ggml] {g} = {{ fallback = \"{to}\" }}: {why}"),
                )
            })?;
            fallbacks.insert(Precision::Ggml(g), t);
        }
        Ok((rates, fallbacks))
    }

    /// `[[measured]]`: latency by what must match for an entry to apply. `calibrated`: the profile was
    /// written by `mpsearch calibrate` (see the module docs on its integer entries).
    pub(super) fn measured(
        &self,
        entries: &[MeasuredEntry],
        calibrated: bool,
    ) -> Result<HashMap<MeasuredKey, f64>> {
        entries
            .iter()
            .enumerate()
            .map(|(i, m)| Ok((self.measured_key(i, m, calibrated)?, m.us)))
            .collect()
    }

    /// The key of `[[measured]]` entry `i` (0-based), its latency checked.
    fn measured_key(&self, i: usize, m: &MeasuredEntry, calibrated: bool) -> Result<MeasuredKey> {
        let bad =
            |msg: String| Error::file(self.path, format!("[[measured]] entry {}: {msg}", i + 1));
        let act: ActQuant = m.act.parse().map_err(|_| {
            bad(format!(
                "act `{}` is not none, act8-static or act8-dynamic",
                m.act
            ))
        })?;
        let sparsity: Sparsity = m.sparsity.parse().map_err(|_| {
            bad(format!(
                "sparsity `{}` is not dense, sparse<P>, <N>:<M> or channels<P>",
                m.sparsity
            ))
        })?;
        if !(m.us.is_finite() && m.us >= 0.0) {
            return Err(bad(format!(
                "us = {} must be a number of microseconds >= 0",
                m.us
            )));
        }
        if m.rank.is_some_and(|r| !(1..=99).contains(&r)) {
            return Err(bad(format!(
                "rank = {} must be the percent of full rank kept, 1 to 99",
                m.rank.unwrap_or_default()
            )));
        }
        // The notation's own parser, on the part alone.
        let conv = match &m.conv {
            None => None,
            Some(c) => Some(
                format!("f32+{c}")
                    .parse::<crate::space::Choice>()
                    .ok()
                    .and_then(|choice| choice.conv)
                    .ok_or_else(|| {
                        bad(format!(
                            "conv = \"{c}\" is not tucker<P> or cp<P> (P the percent of the \
                             layer's parameters kept, 1 to 99)"
                        ))
                    })?,
            ),
        };
        if conv.is_some() && m.rank.is_some() {
            return Err(bad(
                "rank and conv both set: an entry times one factorization of the layer, give one"
                    .into(),
            ));
        }
        if m.batch == 0 || m.shape.is_empty() || m.shape.contains(&0) {
            return Err(bad("batch and every dimension of shape must be >= 1".into()));
        }
        if let Precision::Ggml(g) = m.weights {
            if act != ActQuant::None {
                return Err(bad(format!(
                    "weights = \"{g}\" with act = \"{act}\": a GGML block format's kernel quantizes \
                     its activations itself ({} blocks), so its entries have act = \"none\" (or \
                     leave act out)",
                    g.act_blocks()
                )));
            }
            if !matches!(sparsity, Sparsity::None | Sparsity::Channels(_)) {
                return Err(bad(format!(
                    "weights = \"{g}\" with sparsity = \"{sparsity}\": a GGML block format takes \
                     dense or channels<P> only"
                )));
            }
        }
        // Older calibrated profiles: candle's quantized kernels, which `calibrate` timed for the
        // integer widths, quantize activations on the fly.
        let act = match (act, m.weights) {
            (ActQuant::None, Precision::Int(_)) if calibrated => ActQuant::Int8Dynamic,
            _ => act,
        };
        Ok(MeasuredKey {
            kind: m.kind,
            shape: m.shape.clone(),
            batch: m.batch,
            weights: m.weights,
            act,
            sparsity,
            rank: m.rank,
            conv,
        })
    }
}
