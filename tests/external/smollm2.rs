//! SmolLM2-135M-Instruct as a GGUF file (fetched by `scripts/fetch-smollm2.sh`): the decoder's logits
//! against the independent numpy reference (`scripts/llama-reference.py`, needs numpy and gguf), its
//! tokenizer against token ids produced independently, and its inventory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mpsearch::model::{ForwardCtx, LlamaModel, Model, ModelKind, ModelSource};
use mpsearch::space::LayerKind;

/// Largest |difference| allowed between our f32 logits and the reference's f64 logits.
const MAX_LOGIT_DIFF: f32 = 1e-3;

/// The GGUF file: `MPSEARCH_SMOLLM2`, or where `scripts/fetch-smollm2.sh` puts it.
pub fn fetched() -> Result<PathBuf, String> {
    let path = match std::env::var_os("MPSEARCH_SMOLLM2") {
        Some(p) => PathBuf::from(p),
        None => {
            let cache = std::env::var_os("MPSEARCH_CACHE")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/mpsearch"))
                })
                .ok_or("neither MPSEARCH_SMOLLM2, MPSEARCH_CACHE nor HOME is set")?;
            cache.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        }
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "SmolLM2 is not at {}: run scripts/fetch-smollm2.sh (or set MPSEARCH_SMOLLM2)",
            path.display()
        ))
    }
}

/// A `python3` that imports numpy and gguf (what `scripts/llama-reference.py` needs).
pub fn python_reference() -> Result<String, String> {
    let ok = Command::new("python3")
        .args(["-c", "import numpy, gguf"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Ok("python3".into())
    } else {
        Err(
            "python3 with numpy and gguf is not installed: python3 -m pip install numpy \
             gguf==0.17.1 (.ci/run installs them)"
                .into(),
        )
    }
}

/// The GGUF file and a `python3` that imports numpy and gguf.
pub fn with_reference() -> Result<(PathBuf, String), String> {
    Ok((fetched()?, python_reference()?))
}

/// The reference's next-token logits of `prompts` on the model in `path`: one row per token, prompt
/// by prompt (the layout of the decoder's output).
pub fn reference_logits(python: &str, path: &Path, prompts: &[Vec<u32>]) -> Vec<Vec<f64>> {
    let mut child = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/llama-reference.py"
        ))
        .arg("logits")
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the reference");
    let request = serde_json::to_vec(prompts).unwrap();
    child.stdin.take().unwrap().write_all(&request).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "scripts/llama-reference.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    #[derive(serde::Deserialize)]
    struct Answer {
        logits: Vec<Vec<Vec<f64>>>,
    }
    let answer: Answer = serde_json::from_slice(&out.stdout).expect("reference JSON");
    answer.logits.into_iter().flatten().collect()
}

/// The largest |difference| between our rows and the reference's, and the row where it is.
pub fn max_diff(ours: &[Vec<f32>], reference: &[Vec<f64>]) -> (f32, usize) {
    assert_eq!(ours.len(), reference.len(), "rows");
    let mut worst = (0.0f32, 0usize);
    for (row, (a, b)) in ours.iter().zip(reference).enumerate() {
        assert_eq!(a.len(), b.len(), "row {row}: vocabulary");
        for (x, y) in a.iter().zip(b) {
            let d = (*x - *y as f32).abs();
            if d > worst.0 {
                worst = (d, row);
            }
        }
    }
    worst
}

/// Sentences and their token ids, produced once by the pure-Python byte-level BPE of
/// `scripts/llama-reference.py tokenize` (GPT-2's pre-tokenizer regex written out by hand with
/// `unicodedata`, digits split off first as SmolLM2's `tokenizer.ggml.pre = "smollm"` asks, merges
/// applied by rank): `python3 scripts/llama-reference.py tokenize FILE.gguf < sentences.json`.
const TOKENIZED: &[(&str, &[u32])] = &[
    ("The capital of France is", &[504, 3575, 282, 4649, 314]),
    (
        "In 1969, Neil Armstrong walked on the Moon. It wasn't easy: 3.5 days!",
        &[
            788, 216, 33, 41, 38, 41, 28, 27639, 24955, 13197, 335, 260, 8872, 30, 657, 5603, 982,
            2807, 42, 216, 35, 30, 37, 2009, 17,
        ],
    ),
    (
        "  Two  spaces,\ttabs\nand new lines\n\n",
        &[
            216, 5713, 216, 5600, 28, 197, 100, 7366, 198, 397, 725, 3204, 1116,
        ],
    ),
    (
        "Café owners in São Paulo — déjà vu? Ünïcödé 😀 works.",
        &[
            51, 1939, 2756, 5139, 281, 40481, 36619, 1841, 32564, 90, 16739, 386, 101, 47, 5549,
            246, 94, 25972, 83, 7466, 84, 2756, 40303, 218, 1806, 30,
        ],
    ),
    (
        "def add(a, b):\n    return a + b  # they'll see",
        &[
            1604, 803, 24, 81, 28, 278, 727, 472, 1003, 253, 1232, 278, 216, 907, 502, 3060, 963,
        ],
    ),
    // Control tokens written in text are text (llama.cpp's parse_special = false).
    (
        "<|im_start|>user\nHi!<|im_end|>",
        &[
            44, 108, 306, 79, 3738, 108, 46, 4093, 198, 26843, 17, 44, 108, 306, 79, 486, 108, 46,
        ],
    ),
    (
        "1234567890 x 42 = 51851851380",
        &[
            33, 34, 35, 36, 37, 38, 39, 40, 41, 32, 1792, 216, 36, 34, 446, 216, 37, 33, 40, 37,
            33, 40, 37, 33, 35, 40, 32,
        ],
    ),
];

/// " Paris" in SmolLM2's vocabulary.
const PARIS: u32 = 7042;

fn load(path: &Path) -> LlamaModel {
    LlamaModel::load(path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// Our tokenizer gives the independently produced ids, and decodes them back to the text.
pub fn tokenizer_matches_independent_ids(path: PathBuf) {
    let model = load(&path);
    let tok = model.tokenizer();
    assert!(!tok.adds_bos(), "SmolLM2's file says add_bos_token = false");
    assert_eq!((tok.bos(), tok.eos()), (Some(1), Some(2)));
    for (text, want) in TOKENIZED {
        let ids = tok.encode(text).unwrap();
        assert_eq!(&ids, want, "token ids of {text:?}");
        assert_eq!(&tok.decode(&ids).unwrap(), text, "decoding {text:?}");
    }
    // Ids another project pins for SmolLM's pre-tokenizer in its own tests (found in a public
    // repository's test file, expected ids keyed by `tokenizer.ggml.pre == "smollm"`): a third source.
    for (text, want) in [
        ("Hello world! 123", &[19556, 905, 17, 216, 33, 34, 35][..]),
        (
            "Café déjà vu.",
            &[51, 1939, 2756, 32564, 90, 16739, 386, 101, 30],
        ),
        ("  multiple   spaces", &[216, 2701, 256, 5600]),
        ("\n", &[198]),
    ] {
        assert_eq!(tok.encode(text).unwrap(), want, "token ids of {text:?}");
    }
}

/// Every position's next-token logits, prompts batched with padding, against the numpy reference.
pub fn logits_match_the_numpy_reference((path, python): (PathBuf, String)) {
    let model = load(&path);
    let prompts: Vec<Vec<u32>> = [0usize, 1, 4]
        .iter()
        .map(|&i| TOKENIZED[i].1.to_vec())
        .collect();
    let batch = mpsearch::model::llama::token_batch(&prompts).unwrap();
    let ours = model.forward(&batch, &ForwardCtx::default()).unwrap();
    let total: usize = prompts.iter().map(Vec::len).sum();
    assert_eq!(ours.dims(), [total, 49152], "one row per real token");
    let ours: Vec<Vec<f32>> = ours.to_vec2().unwrap();

    let reference = reference_logits(&python, &path, &prompts);
    let worst = max_diff(&ours, &reference);
    eprintln!(
        "SmolLM2 logits vs numpy reference: max |diff| {:.2e} over {total} positions x 49152 (row {})",
        worst.0, worst.1
    );
    assert!(
        worst.0 <= MAX_LOGIT_DIFF,
        "max |logit difference| {} > {MAX_LOGIT_DIFF} (f32 vs f64 reference, row {})",
        worst.0,
        worst.1
    );
    // The base model knows its geography: after "The capital of France is" comes " Paris".
    let last = &ours[prompts[0].len() - 1];
    let top = (0..last.len())
        .max_by(|&i, &j| last[i].total_cmp(&last[j]))
        .unwrap();
    assert_eq!(top as u32, PARIS, "top-1 after {:?}", TOKENIZED[0].0);
}

/// The inventory: llama.cpp's names, the tied head as one linear layer, MACs per token.
pub fn inventory_has_llama_cpp_names(path: PathBuf) {
    let inv = mpsearch::model::inventory(&ModelSource::parse(path.to_str().unwrap())).unwrap();
    assert_eq!(inv.kind, ModelKind::LanguageModel);
    assert_eq!(inv.architecture, "llama");
    assert_eq!(
        inv.layers.len(),
        1 + 30 * 7,
        "tied token_embd + 30 blocks x 7"
    );
    let head = &inv.layers[0];
    assert_eq!(
        (head.name.as_str(), head.kind, head.shape.as_slice()),
        ("token_embd", LayerKind::Linear, &[49152, 576][..])
    );
    assert_eq!(
        head.macs,
        49152 * 576,
        "the tied head multiplies every token"
    );
    let names: Vec<&str> = inv.layers[1..8].iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "blk.0.attn_q",
            "blk.0.attn_k",
            "blk.0.attn_v",
            "blk.0.attn_output",
            "blk.0.ffn_gate",
            "blk.0.ffn_up",
            "blk.0.ffn_down"
        ]
    );
    assert_eq!(inv.layers[2].shape, [192, 576], "3 key/value heads of 64");
    assert_eq!(inv.layers[7].shape, [576, 1536]);
    assert_eq!(inv.params(), 134_479_872);
    let model = load(&path);
    assert_eq!(model.inventory().layers, inv.layers);
}
