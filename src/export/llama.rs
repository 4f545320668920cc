//! # llama.cpp `--tensor-type` lines
//!
//! `llama-quantize` takes per-tensor overrides `--tensor-type NAME=TYPE` (the name is matched as a
//! regular expression against the GGUF tensor names, the type case-insensitively against
//! `ggml_type_name`). [`tensor_type_lines`] writes one such line per layer, preceded by a `#` comment
//! that gives the layer, its choice, the type and, where the type is not the same format, what
//! differs or is dropped.
//!
//! **Types** ([`GgmlType::of`]): f32, f16, bf16 and the GGML block formats (`q4_k`…, the notation's
//! [`GgmlFormat`]) are themselves — a q-format choice is written as exactly its type, which
//! `llama-quantize` quantizes with ggml's own quantizer (candle's, which mpsearch evaluated, is a port
//! of ggml's reference quantizers; `--imatrix` would weigh them differently). An `int<b>` choice maps
//! to the closest type by bit-width — 8 → `q8_0`; 7 → `q8_0` (no 7-bit type); 6 → `q6_k`; 5 → `q5_0`
//! (symmetric) or `q5_1` (asymmetric); 4 → `q4_0` / `q4_1`; 3 → `q3_k`; 2 → `q2_k` — and is the **same
//! format** only when the bits, the scheme (symmetric ↔ a scale only, asymmetric ↔ a scale and a
//! minimum) and the group size (the values per scale) agree; otherwise the comment says what differs
//! (per-channel or per-tensor scales become blocks, an asymmetric grid becomes symmetric, …). Every
//! GGML type stores its block scales in f16 (K-types quantize the sub-block scales again, to 4–8
//! bits), and GGML's symmetric types `q4_0`, `q5_0`, `q3_k`, `q6_k` use the full signed range (e.g.
//! −8…7) where mpsearch's symmetric grid is restricted (−7…7): `llama-quantize` re-quantizes the
//! original weights with its own scales, so an `int<b>` line transfers the per-layer bit allocation,
//! not mpsearch's codes.
//!
//! **Dropped** (no GGML equivalent): sparsity (unstructured, N:M, removed channels — GGUF tensors are
//! dense and `llama-quantize` starts from the dense original), low rank (GGUF stores the full matrix),
//! and int8 activations (llama.cpp chooses activation precision itself: its quantized matrix
//! products quantize activations to 8 bits per block on the fly, which is close to `act8-dynamic`).
//!
//! **Names**: BERT-family layers take the GGUF names of llama.cpp's converter
//! (`gguf-py/gguf/tensor_mapping.py`): `embeddings.word_embeddings` → `token_embd`,
//! `embeddings.position_embeddings` → `position_embd`, `embeddings.token_type_embeddings` →
//! `token_types`, and in block N `attention.self.query|key|value` → `blk.N.attn_q|attn_k|attn_v`,
//! `attention.output.dense` → `blk.N.attn_output`, `intermediate.dense` → `blk.N.ffn_up`,
//! `output.dense` → `blk.N.ffn_down`, each with the `.weight` suffix. Other models (the demo CNN has
//! no GGUF form) keep mpsearch's tensor names (`LAYER.weight`), and the header says so.

use crate::space::{
    ActQuant, Assignment, Choice, GgmlFormat, Granularity, LayerInfo, QuantScheme, Sparsity,
    WeightQuant,
};

/// The GGUF tensor types the lines use: the float types and the GGML block formats, whose facts are
/// [`GgmlFormat`]'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Bf16,
    Block(GgmlFormat),
}

impl GgmlType {
    /// The name `llama-quantize` accepts (lowercase; it compares case-insensitively).
    pub fn name(&self) -> &'static str {
        match self {
            GgmlType::F32 => "f32",
            GgmlType::F16 => "f16",
            GgmlType::Bf16 => "bf16",
            GgmlType::Block(g) => g.name(),
        }
    }

    /// Bits per weight code (float types: their width).
    pub fn bits(&self) -> u8 {
        match self {
            GgmlType::F32 => 32,
            GgmlType::F16 | GgmlType::Bf16 => 16,
            GgmlType::Block(g) => g.code_bits(),
        }
    }

    /// Whether blocks carry a minimum besides the scale (affine, like mpsearch's asymmetric scheme).
    pub fn affine(&self) -> bool {
        matches!(self, GgmlType::Block(g) if g.affine())
    }

    /// Values per scale (the block, or a K-type's sub-block); `None` for float types.
    pub fn scale_group(&self) -> Option<u32> {
        match self {
            GgmlType::Block(g) => Some(g.scale_group() as u32),
            _ => None,
        }
    }

    /// Columns a row must be a multiple of for `llama-quantize` to store this type: its block (256 for
    /// K-types, 32 otherwise); 1 for float types.
    pub fn row_multiple(&self) -> usize {
        match self {
            GgmlType::Block(g) => g.block(),
            _ => 1,
        }
    }

    /// The type of a weight format: itself for the float types and the GGML block formats, the closest
    /// one by bit-width and scheme for `int<b>` (see the module docs).
    pub fn of(w: &WeightQuant) -> GgmlType {
        let block = GgmlType::Block;
        match *w {
            WeightQuant::F32 => GgmlType::F32,
            WeightQuant::F16 => GgmlType::F16,
            WeightQuant::Bf16 => GgmlType::Bf16,
            WeightQuant::Ggml(g) => block(g),
            WeightQuant::Int { bits, scheme, .. } => {
                let asym = scheme == QuantScheme::Asymmetric;
                block(match bits {
                    7.. => GgmlFormat::Q8_0,
                    6 => GgmlFormat::Q6K,
                    5 if asym => GgmlFormat::Q5_1,
                    5 => GgmlFormat::Q5_0,
                    4 if asym => GgmlFormat::Q4_1,
                    4 => GgmlFormat::Q4_0,
                    3 => GgmlFormat::Q3K,
                    _ => GgmlFormat::Q2K,
                })
            }
        }
    }
}

/// A layer's choice mapped to a GGML type.
#[derive(Clone, Debug, PartialEq)]
pub struct GgmlMapping {
    pub ggml: GgmlType,
    /// What differs from the choice or is dropped; empty when the type is the same format.
    pub differences: Vec<String>,
}

impl GgmlMapping {
    /// Whether the type is the same format as the choice (nothing differs or is dropped).
    pub fn exact(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Maps `choice` for a weight of `cols` input columns to its GGML type: exactly its own for float and
/// GGML formats, the closest for `int<b>`.
pub fn map_choice(choice: &Choice, cols: usize) -> GgmlMapping {
    let ggml = GgmlType::of(&choice.weights);
    let mut d = Vec::new();
    if let WeightQuant::Int {
        bits,
        scheme,
        granularity,
    } = choice.weights
    {
        if bits != ggml.bits() {
            d.push(format!(
                "no {bits}-bit GGML type: stored at {} bits",
                ggml.bits()
            ));
        }
        let asym = scheme == QuantScheme::Asymmetric;
        if asym && !ggml.affine() {
            d.push(format!(
                "asymmetric (zero-point) grid becomes {}'s symmetric one",
                ggml.name()
            ));
        } else if !asym && ggml.affine() {
            d.push(format!(
                "symmetric grid becomes {}'s affine one (scale and minimum per block)",
                ggml.name()
            ));
        }
        let block = ggml.scale_group().unwrap_or(32);
        let blocks = match ggml {
            GgmlType::Block(g) if g.is_k() => format!("blocks of {block} in super-blocks of 256"),
            _ => format!("blocks of {block}"),
        };
        match granularity {
            Granularity::Group(g) if g == block => {}
            Granularity::Group(g) => d.push(format!("groups of {g} become {blocks}")),
            Granularity::Channel => d.push(format!("per-channel scales become {blocks}")),
            Granularity::Tensor => d.push(format!("the per-tensor scale becomes {blocks}")),
        }
    }
    let multiple = ggml.row_multiple();
    if cols % multiple != 0 {
        d.push(format!(
            "{cols} input columns are not a multiple of {multiple}: llama-quantize cannot store this \
             tensor as {} and falls back to another type",
            ggml.name()
        ));
    }
    match choice.act {
        ActQuant::None => {}
        ActQuant::Int8Dynamic => d.push(
            "act8-dynamic dropped (llama.cpp quantizes activations itself, 8 bits per block on the fly, \
             for quantized types)"
                .into(),
        ),
        ActQuant::Int8Static => d.push(
            "act8-static dropped (GGUF has no calibrated activation ranges; llama.cpp quantizes \
             activations on the fly)"
                .into(),
        ),
    }
    match choice.sparsity {
        Sparsity::None => {}
        s @ (Sparsity::Unstructured(_) | Sparsity::NM { .. }) => d.push(format!(
            "{s} sparsity dropped (GGML has no sparse types; the dense weight is quantized)"
        )),
        s @ Sparsity::Channels(_) => {
            d.push(format!("{s} dropped (GGUF keeps the tensor's full shape)"))
        }
    }
    if let Some(p) = choice.rank {
        d.push(format!(
            "rank{p} dropped (GGUF has no factorized tensors; the full matrix is quantized)"
        ));
    }
    if let Some(f) = choice.conv {
        d.push(format!(
            "{f} dropped (GGUF has no factorized tensors; the full kernel is quantized)"
        ));
    }
    GgmlMapping {
        ggml,
        differences: d,
    }
}

/// The GGUF tensor name llama.cpp's converter gives a BERT-family layer's weight, if it has one.
pub fn gguf_name(layer: &str) -> Option<String> {
    // Checkpoints saved from a task model prefix the encoder (`bert.`); the converter strips it.
    let at = ["embeddings.", "encoder.layer."]
        .iter()
        .filter_map(|p| layer.find(p))
        .min()?;
    let name = &layer[at..];
    if let Some(emb) = name.strip_prefix("embeddings.") {
        let t = match emb {
            "word_embeddings" => "token_embd",
            "position_embeddings" => "position_embd",
            "token_type_embeddings" => "token_types",
            _ => return None,
        };
        return Some(format!("{t}.weight"));
    }
    let rest = name.strip_prefix("encoder.layer.")?;
    let (block, part) = rest.split_once('.')?;
    let block: usize = block.parse().ok()?;
    let t = match part {
        "attention.self.query" => "attn_q",
        "attention.self.key" => "attn_k",
        "attention.self.value" => "attn_v",
        "attention.output.dense" => "attn_output",
        "intermediate.dense" => "ffn_up",
        "output.dense" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{block}.{t}.weight"))
}

/// What the lines are for (the header).
#[derive(Clone, Debug)]
pub struct LinesHeader {
    /// `run `r`, trial 17 (front point 3 of 12)`.
    pub source: String,
    /// The model's architecture (`bert`, `demo-cnn …`).
    pub architecture: String,
}

/// The `--tensor-type` lines of `assignment` for `layers` (in inventory order): a header of `#`
/// comments, then per layer one `#` comment and one `--tensor-type NAME=TYPE` line.
pub fn tensor_type_lines(
    layers: &[LayerInfo],
    assignment: &Assignment,
    header: &LinesHeader,
) -> String {
    let bert = header.architecture == "bert";
    let mut out = format!(
        "# llama-quantize per-tensor types from mpsearch, {}\n\
         # usage: llama-quantize $(grep -v '^#' THIS_FILE) MODEL-f32.gguf OUT.gguf TYPE\n\
         # A GGML block-format choice (q4_k, q8_0, ...) is exactly its type; an int<b> choice maps to the\n\
         # closest type, and its comment says where that is not the same format. Comments also say what\n\
         # is dropped. llama-quantize quantizes the original weights with ggml's own quantizer: for an\n\
         # int<b> layer these lines carry the bit allocation, not mpsearch's codes.\n",
        header.source
    );
    if bert {
        out.push_str(
            "# Tensor names: llama.cpp's GGUF names for BERT (gguf-py/gguf/tensor_mapping.py); names are\n\
             # matched as regular expressions, and each one here matches only its own tensor.\n",
        );
    } else {
        out.push_str(&format!(
            "# Tensor names: architecture `{}` has no GGUF form in llama.cpp; the names are mpsearch's\n\
             # own (LAYER.weight), for a converter that keeps them.\n",
            header.architecture
        ));
    }
    for l in layers {
        let choice = assignment.get(&l.name).copied().unwrap_or(Choice::F32);
        let m = map_choice(&choice, l.cols() as usize);
        let name = if bert {
            gguf_name(&l.name).unwrap_or_else(|| format!("{}.weight", l.name))
        } else {
            format!("{}.weight", l.name)
        };
        let how = if m.exact() {
            "same format".to_string()
        } else {
            format!("NOT EXACT: {}", m.differences.join("; "))
        };
        out.push_str(&format!(
            "# {}: {choice} -> {} ({how})\n--tensor-type {name}={}\n",
            l.name,
            m.ggml.name(),
            m.ggml.name()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(c: &str, cols: usize) -> GgmlMapping {
        map_choice(&c.parse().unwrap(), cols)
    }

    #[test]
    fn ggml_formats_are_their_own_type_exactly() {
        for g in GgmlFormat::ALL {
            let m = map(g.name(), 512);
            assert_eq!(m.ggml, GgmlType::Block(g));
            assert_eq!(m.ggml.name(), g.name());
            assert!(m.exact(), "{g}: {:?}", m.differences);
        }
        // Their removed channels and rank are dropped (GGUF keeps the full dense tensor); the type is
        // still exact.
        let m = map("q4_k+channels25+rank50", 512);
        assert_eq!(m.ggml, GgmlType::Block(GgmlFormat::Q4K));
        assert_eq!(m.differences.len(), 2, "{:?}", m.differences);
        assert!(m.differences.iter().all(|d| d.contains("dropped")));
    }

    #[test]
    fn exact_formats_map_without_notes() {
        for (c, t) in [
            ("f32", "f32"),
            ("f16", "f16"),
            ("bf16", "bf16"),
            ("int8-sym-g32", "q8_0"),
            ("int4-asym-g32", "q4_1"),
            ("int4-sym-g32", "q4_0"),
            ("int5-asym-g32", "q5_1"),
            ("int6-sym-g16", "q6_k"),
            ("int3-sym-g16", "q3_k"),
            ("int2-asym-g16", "q2_k"),
        ] {
            let m = map(c, 512);
            assert_eq!(m.ggml.name(), t, "{c}");
            assert!(m.exact(), "{c}: {:?}", m.differences);
        }
    }

    #[test]
    fn inexact_formats_say_what_differs() {
        let m = map("int4-asym-channel", 512);
        assert_eq!(m.ggml, GgmlType::Block(GgmlFormat::Q4_1));
        assert_eq!(m.differences, ["per-channel scales become blocks of 32"]);
        let m = map("int7-asym-tensor+act8-dynamic+2:4+rank50", 512);
        assert_eq!(m.ggml, GgmlType::Block(GgmlFormat::Q8_0));
        let all = m.differences.join("; ");
        for part in [
            "no 7-bit",
            "symmetric one",
            "per-tensor",
            "act8-dynamic dropped",
            "2:4 sparsity dropped",
            "rank50 dropped",
        ] {
            assert!(all.contains(part), "{part} missing from {all}");
        }
        // K-types need rows of a multiple of 256 columns.
        let m = map("int3-sym-g16", 64);
        assert!(m.differences[0].contains("not a multiple of 256"), "{m:?}");
        assert!(map("int2-sym-g16", 512).differences[0].contains("affine"));
        assert!(map("f16+channels25", 512).differences[0].contains("channels25 dropped"));
    }

    #[test]
    fn bert_layers_take_gguf_names() {
        for (l, g) in [
            (
                "encoder.layer.0.attention.self.query",
                "blk.0.attn_q.weight",
            ),
            (
                "encoder.layer.11.attention.self.key",
                "blk.11.attn_k.weight",
            ),
            (
                "encoder.layer.3.attention.self.value",
                "blk.3.attn_v.weight",
            ),
            (
                "encoder.layer.2.attention.output.dense",
                "blk.2.attn_output.weight",
            ),
            ("encoder.layer.5.intermediate.dense", "blk.5.ffn_up.weight"),
            ("bert.encoder.layer.5.output.dense", "blk.5.ffn_down.weight"),
            ("embeddings.word_embeddings", "token_embd.weight"),
        ] {
            assert_eq!(gguf_name(l).as_deref(), Some(g), "{l}");
        }
        assert_eq!(gguf_name("pooler.dense"), None);
        assert_eq!(gguf_name("fc1"), None);
    }
}
