//! # llama.cpp's standard recipes as assignments
//!
//! `llama-quantize … Q4_K_M` types every tensor of a model by fixed rules: a default type per recipe,
//! more bits for the output head, for `attn_v` and `ffn_down` of some blocks, and a fallback type where
//! the default's blocks do not fit a tensor's rows. [`Recipe::assignment`] reproduces those rules for
//! the Llama-family decoders mpsearch loads, as an assignment of the `llm` space, so that a searched
//! front can be held against what users ship today.
//!
//! Source read: llama.cpp `src/llama-quant.cpp`, `llama_tensor_get_type`, at commit
//! `c392e5094deaf2d1a7c18683214f007fad3fe42b` (2025-02-21), for a dense model (no experts, not Falcon,
//! not 70B; `n_gqa` is not consulted by these three recipes):
//!
//! | tensor | Q3_K_M | Q4_K_M | Q5_K_M |
//! |---|---|---|---|
//! | output head (`output`, or a tied `token_embd`) | q8_0 if its rows are not a multiple of 256, else q6_k | same | same |
//! | `token_embd` (untied), `attn_q`, `attn_k`, `ffn_gate`, `ffn_up` | q3_k | q4_k | q5_k |
//! | `attn_v` of block i | q5_k if i < 2, else q4_k | q6_k if `use_more_bits(i, n)`, else q4_k | q6_k if `use_more_bits(i, n)`, else q5_k |
//! | `attn_output` | q4_k | q4_k | q5_k |
//! | `ffn_down` of block i | q5_k if i < n/16, else q4_k | q6_k if `use_more_bits(i, n)`, else q4_k | q6_k if `use_more_bits(i, n)`, else q5_k |
//!
//! with `use_more_bits(i, n) = i < n/8 || i >= 7n/8 || (i − n/8) % 3 == 2` (integer division; `n`
//! the number of blocks; llama.cpp counts `attn_v` and `ffn_down` tensors in file order, which for a
//! dense model is the block number). Then, where the type's blocks do not fit the tensor's rows
//! (`ne[0]`): q4_k → q5_0, q5_k → q5_1, q6_k → q8_0, and q2_k/q3_k → **q4_0**; if that does not fit
//! either, f16. The q2_k/q3_k fallback is q4_0 in llama.cpp's current `tensor_type_fallback`; the
//! commit above (and llama.cpp from February 2024 to early 2026) used IQ4_NL, a non-linear 4.5-bit
//! format candle has no kernel for — q4_0 has the same size and block.
//!
//! On SmolLM2-135M (576 wide; only `ffn_down`, 1 536 wide, fits the K-types): Q4_K_M is 166 × q5_0,
//! 15 × q8_0, 14 × q6_k, 16 × q4_k.

use std::fmt;
use std::str::FromStr;

use super::{Assignment, Choice, GgmlFormat, LayerInfo, WeightQuant};
use crate::error::{Error, Result};

/// One of llama.cpp's standard mixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipe {
    Q3KM,
    Q4KM,
    Q5KM,
}

impl Recipe {
    /// Every recipe, from the smallest.
    pub const ALL: [Recipe; 3] = [Recipe::Q3KM, Recipe::Q4KM, Recipe::Q5KM];

    /// llama.cpp's name (`Q4_K_M`).
    pub fn name(self) -> &'static str {
        match self {
            Recipe::Q3KM => "Q3_K_M",
            Recipe::Q4KM => "Q4_K_M",
            Recipe::Q5KM => "Q5_K_M",
        }
    }

    fn default_type(self) -> GgmlFormat {
        match self {
            Recipe::Q3KM => GgmlFormat::Q3K,
            Recipe::Q4KM => GgmlFormat::Q4K,
            Recipe::Q5KM => GgmlFormat::Q5K,
        }
    }

    /// The recipe's type for every layer of a Llama-family decoder (named as llama.cpp names its
    /// tensors), fallbacks applied. A layer of another name is an error naming it.
    pub fn assignment(self, layers: &[LayerInfo]) -> Result<Assignment> {
        let blocks = layers
            .iter()
            .filter_map(|l| block_of(&l.name).map(|(i, _)| i + 1))
            .max()
            .unwrap_or(0);
        let tied = !layers.iter().any(|l| l.name == "output");
        let mut out = Vec::with_capacity(layers.len());
        for l in layers {
            let cols = l.cols();
            let wanted = match (l.name.as_str(), block_of(&l.name)) {
                ("output", _) => head(cols),
                ("token_embd", _) if tied => head(cols),
                ("token_embd", _) => self.default_type(),
                (_, Some((i, kind))) => self
                    .block_type(kind, i, blocks)
                    .ok_or_else(|| self.unknown(&l.name))?,
                _ => return Err(self.unknown(&l.name)),
            };
            out.push((l.name.clone(), fallback(wanted, cols)));
        }
        Ok(Assignment::new(out))
    }

    fn block_type(self, kind: &str, i: usize, n: usize) -> Option<GgmlFormat> {
        let more = use_more_bits(i, n);
        Some(match (kind, self) {
            ("attn_q" | "attn_k" | "ffn_gate" | "ffn_up", r) => r.default_type(),
            ("attn_v", Recipe::Q3KM) if i < 2 => GgmlFormat::Q5K,
            ("attn_v", Recipe::Q3KM) => GgmlFormat::Q4K,
            ("attn_v" | "ffn_down", Recipe::Q4KM | Recipe::Q5KM) if more => GgmlFormat::Q6K,
            ("attn_v" | "ffn_down", r) if r != Recipe::Q3KM => r.default_type(),
            ("attn_output", Recipe::Q3KM) => GgmlFormat::Q4K,
            ("attn_output", r) => r.default_type(),
            ("ffn_down", Recipe::Q3KM) if i < n / 16 => GgmlFormat::Q5K,
            ("ffn_down", Recipe::Q3KM) => GgmlFormat::Q4K,
            _ => return None,
        })
    }

    fn unknown(self, layer: &str) -> Error {
        Error::Assignment {
            source_name: Some(format!("recipe {}", self.name())),
            message: format!(
                "llama.cpp's {} recipe types the tensors of Llama-family decoders (token_embd, \
                 output, blk.N.attn_q/attn_k/attn_v/attn_output/ffn_gate/ffn_up/ffn_down); this model \
                 has a layer `{layer}` it has no rule for",
                self.name()
            ),
        }
    }
}

/// The output head's type: q6_k, or q8_0 where q6_k's blocks do not fit.
fn head(cols: u64) -> GgmlFormat {
    if cols % 256 != 0 {
        GgmlFormat::Q8_0
    } else {
        GgmlFormat::Q6K
    }
}

/// llama.cpp's `use_more_bits`.
fn use_more_bits(i: usize, n: usize) -> bool {
    // Past the first test, i ≥ n/8: the subtraction cannot underflow (C's `||` short-circuits alike).
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The choice llama.cpp stores a `cols`-wide tensor in when it wants `g` (see the module docs).
fn fallback(g: GgmlFormat, cols: u64) -> Choice {
    if g.misfit(cols).is_none() {
        return Choice::weights(WeightQuant::Ggml(g));
    }
    let next = match g {
        GgmlFormat::Q2K | GgmlFormat::Q3K => GgmlFormat::Q4_0,
        GgmlFormat::Q4K => GgmlFormat::Q5_0,
        GgmlFormat::Q5K => GgmlFormat::Q5_1,
        _ => GgmlFormat::Q8_0,
    };
    if next.misfit(cols).is_none() {
        Choice::weights(WeightQuant::Ggml(next))
    } else {
        Choice::weights(WeightQuant::F16)
    }
}

/// `(N, kind)` of a `blk.N.kind` name.
fn block_of(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("blk.")?;
    let (n, kind) = rest.split_once('.')?;
    Some((n.parse().ok()?, kind))
}

impl fmt::Display for Recipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Recipe {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Recipe::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("`{s}` is not a recipe; give Q3_K_M, Q4_K_M or Q5_K_M"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::LayerKind;

    /// SmolLM2-135M's layers: 30 blocks, 576 wide, 1 536 FFN, 3 of 9 heads for k and v, tied head.
    fn smollm2() -> Vec<LayerInfo> {
        let linear = |name: String, rows: usize, cols: usize| LayerInfo {
            name,
            kind: LayerKind::Linear,
            shape: vec![rows, cols],
            bias: false,
            macs: (rows * cols) as u64,
        };
        let mut v = vec![linear("token_embd".into(), 49152, 576)];
        for i in 0..30 {
            for (k, r, c) in [
                ("attn_q", 576, 576),
                ("attn_k", 192, 576),
                ("attn_v", 192, 576),
                ("attn_output", 576, 576),
                ("ffn_gate", 1536, 576),
                ("ffn_up", 1536, 576),
                ("ffn_down", 576, 1536),
            ] {
                v.push(linear(format!("blk.{i}.{k}"), r, c));
            }
        }
        v
    }

    fn counts(r: Recipe) -> std::collections::BTreeMap<String, usize> {
        let a = r.assignment(&smollm2()).unwrap();
        let mut m = std::collections::BTreeMap::new();
        for (_, c) in a.iter() {
            *m.entry(c.to_string()).or_insert(0) += 1;
        }
        m
    }

    #[test]
    fn use_more_bits_is_llama_cpps_for_30_blocks() {
        let more: Vec<usize> = (0..30).filter(|&i| use_more_bits(i, 30)).collect();
        assert_eq!(more, [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]);
    }

    #[test]
    fn smollm2_recipes_count_as_llama_cpp_types_them() {
        let m = |pairs: &[(&str, usize)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        assert_eq!(
            counts(Recipe::Q4KM),
            m(&[("q8_0", 15), ("q5_0", 166), ("q6_k", 14), ("q4_k", 16)])
        );
        assert_eq!(
            counts(Recipe::Q5KM),
            m(&[("q8_0", 15), ("q5_1", 166), ("q6_k", 14), ("q5_k", 16)])
        );
        assert_eq!(
            counts(Recipe::Q3KM),
            m(&[
                ("q8_0", 1),
                ("q4_0", 120),
                ("q5_1", 2),
                ("q5_0", 58),
                ("q5_k", 1),
                ("q4_k", 29)
            ])
        );
        let a = Recipe::Q3KM.assignment(&smollm2()).unwrap();
        let get = |n: &str| a.get(n).unwrap().to_string();
        assert_eq!(
            (
                get("token_embd"),
                get("blk.0.ffn_down"),
                get("blk.1.ffn_down"),
                get("blk.1.attn_v"),
                get("blk.2.attn_v")
            ),
            (
                "q8_0".into(),
                "q5_k".into(),
                "q4_k".into(),
                "q5_1".into(),
                "q5_0".into()
            )
        );
    }

    #[test]
    fn names_parse_and_foreign_layers_are_refused() {
        assert_eq!("q4_k_m".parse::<Recipe>(), Ok(Recipe::Q4KM));
        assert!("Q4_K_S".parse::<Recipe>().unwrap_err().contains("Q3_K_M"));
        let mut layers = smollm2();
        layers[3].name = "encoder.layer.0.query".into();
        let err = Recipe::Q4KM.assignment(&layers).unwrap_err().to_string();
        assert!(
            err.contains("encoder.layer.0.query") && err.contains("Q4_K_M"),
            "{err}"
        );
    }
}
