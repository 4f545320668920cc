//! all-MiniLM-L6-v2 itself (fetched by `scripts/fetch-minilm.sh`): the BERT encoder against an
//! independent reference, its inventory, and int8 weights through the candle evaluator.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use mpsearch::data::Batch;
use mpsearch::eval::{load, CandleEvaluator, EvalSettings, Evaluator};
use mpsearch::model::{BertEncoder, ForwardCtx, Model, ModelSource};
use mpsearch::space::{Assignment, Choice};

/// Cosine between our fp32 embeddings and sentence-transformers' that every reference sentence must reach.
const MIN_REFERENCE_COSINE: f64 = 0.99999;
/// Smallest mean cosine of MiniLM's int8 embeddings to its f32 ones.
const MIN_INT8_COSINE: f64 = 0.99;
/// Quality and metrics computed from each other agree to f64 rounding.
const EXACT_TOL: f64 = 1e-12;

#[derive(serde::Deserialize)]
struct Reference {
    sentences: Vec<String>,
    tokens: Vec<usize>,
    max_seq_length: usize,
    embeddings: Vec<Vec<f64>>,
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Our f32 embeddings of the reference sentences against sentence-transformers' (`scripts/minilm-reference.py`).
pub fn matches_sentence_transformers(dir: PathBuf) {
    let reference: Reference = serde_json::from_str(include_str!("../data/minilm_reference.json"))
        .expect("reference JSON");
    let model = BertEncoder::load(&dir)
        .unwrap()
        .with_max_tokens(reference.max_seq_length)
        .unwrap();
    assert!(
        model.normalizes(),
        "all-MiniLM-L6-v2's modules.json lists Normalize"
    );

    let batch = model.tokenize(&reference.sentences).unwrap();
    let Batch::Tokens { mask, .. } = &batch else {
        panic!("token batch")
    };
    let counts: Vec<u32> = mask.sum(1).unwrap().to_vec1().unwrap();
    let counts: Vec<usize> = counts.into_iter().map(|c| c as usize).collect();
    assert_eq!(
        counts, reference.tokens,
        "token counts (with [CLS], [SEP], truncation) differ from the tokenizers package"
    );

    let out = model.forward(&batch, &ForwardCtx::default()).unwrap();
    assert_eq!(out.dims(), [reference.sentences.len(), 384]);
    let ours: Vec<Vec<f32>> = out.to_vec2().unwrap();
    for (i, (row, want)) in ours.iter().zip(&reference.embeddings).enumerate() {
        let row: Vec<f64> = row.iter().map(|&x| x as f64).collect();
        let c = cosine(&row, want);
        let max_diff = row
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        eprintln!(
            "sentence {i}: cosine {c:.12} (1 - cos = {:.1e}), max |diff| {max_diff:.1e}, {} tokens",
            1.0 - c,
            reference.tokens[i]
        );
        assert!(
            c >= MIN_REFERENCE_COSINE,
            "sentence {i} ({:?}): cosine {c} < {MIN_REFERENCE_COSINE} (f32, {} tokens)",
            reference.sentences[i],
            reference.tokens[i]
        );
    }
}

/// The model's inventory is the folder's, without the pooler (which a sentence embedding does not use).
pub fn inventory_is_the_folder_inventory_without_the_pooler(dir: PathBuf) {
    let model = BertEncoder::load(&dir).unwrap();
    let folder = mpsearch::model::inventory(&ModelSource::Folder(dir)).unwrap();
    let expected: Vec<&str> = folder
        .layers
        .iter()
        .map(|l| l.name.as_str())
        .filter(|n| !n.starts_with("pooler."))
        .collect();
    let got: Vec<&str> = model
        .inventory()
        .layers
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(got, expected);
    assert_eq!(got.len(), 39, "3 embeddings + 6 blocks × 6 linears");
    assert_eq!(
        model.weight("encoder.layer.5.output.dense").unwrap().dims(),
        [384, 1536]
    );
}

/// fp32 forward time on the shipped evaluation sentences; prints the figure. Ignored unless asked for:
/// `cargo test --test external minilm::eval_timing -- --ignored` (add `--release` for release).
pub fn eval_timing(dir: PathBuf) {
    let model = BertEncoder::load(&dir).unwrap();
    let split = mpsearch::data::text::TextSplit::shipped();
    let ctx = ForwardCtx::default();
    let batch = model.tokenize(&split.search[..8]).unwrap();
    model.forward(&batch, &ctx).unwrap(); // warm-up
    for batch_size in [16, 32, 64] {
        let start = Instant::now();
        let out = model.embed(&split.search, batch_size, &ctx).unwrap();
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(out.dims(), [split.search.len(), 384]);
        eprintln!(
            "fp32 forward of {} evaluation sentences, batch {batch_size}: {secs:.2} s ({:.1} ms/sentence)",
            split.search.len(),
            1000.0 * secs / split.search.len() as f64
        );
    }
}

/// Every layer at int8-sym-channel keeps the embeddings (mean cosine to f32 at least
/// [`MIN_INT8_COSINE`]), and the quality is the cosine distance.
pub fn int8_keeps_the_embeddings(dir: PathBuf) {
    let (model, data) = load(&ModelSource::Folder(dir), None).unwrap();
    let s = data.sizes;
    assert_eq!((s.calibration, s.search, s.held_out), (100, 200, 100));
    let model: Arc<dyn Model> = model;
    let ev = CandleEvaluator::new(model, data, EvalSettings::default()).unwrap();
    assert_eq!(ev.objective(), "cosine_distance");
    let c: Choice = "int8-sym-channel".parse().unwrap();
    let all = Assignment::new(
        ev.model()
            .inventory()
            .layers
            .iter()
            .map(|l| (l.name.clone(), c)),
    );
    let e = ev.evaluate(&all).unwrap();
    assert!(
        e.metrics["mean_cosine"] >= MIN_INT8_COSINE,
        "{:?}",
        e.metrics
    );
    assert!((e.quality - (1.0 - e.metrics["mean_cosine"])).abs() < EXACT_TOL);
}

/// A q-format layer of MiniLM computes the arithmetic of candle's `QMatMul` on the weight quantized by
/// candle: on the input it saw in the model, the evaluator's layer equals candle's kernel to the order
/// of f32 sums (≤ 1e-5 of the row's largest output) on 384- and 1536-wide rows, and the input
/// quantized to the kernel's activation blocks times the dequantized weight, written out, bit for bit.
/// The 1536-wide `output.dense` layers take the K-types, the 384-wide ones the 32-blocks.
pub fn q_format_layer_is_candles_qmatmul(dir: PathBuf) {
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::Module;
    use mpsearch::model::{LayerKernel, Overrides};
    use std::collections::HashMap;
    use std::sync::Mutex;

    let (model, data) = load(&ModelSource::Folder(dir), None).unwrap();
    let ev = CandleEvaluator::new(model, data, EvalSettings::default()).unwrap();
    for (layer, c, dtype) in [
        ("encoder.layer.5.output.dense", "q4_k", GgmlDType::Q4K),
        ("encoder.layer.2.output.dense", "q6_k", GgmlDType::Q6K),
        (
            "encoder.layer.0.attention.self.query",
            "q8_0",
            GgmlDType::Q8_0,
        ),
        (
            "encoder.layer.3.intermediate.dense",
            "q4_0",
            GgmlDType::Q4_0,
        ),
    ] {
        let a = Assignment::new([(layer.to_string(), c.parse::<Choice>().unwrap())]);
        let o: Overrides = ev.overrides(&a).unwrap();
        assert!(matches!(o[layer].kernel, Some(LayerKernel::Emulated(_))));
        let capture = Mutex::new(HashMap::from([(layer.to_string(), Vec::new())]));
        let ctx = ForwardCtx {
            overrides: Some(&o),
            capture: Some(&capture),
            timer: None,
        };
        ev.model().forward(&ev.data().eval[0], &ctx).unwrap();
        let x = capture.lock().unwrap()[layer][0].clone();
        let w = ev.model().weight(layer).unwrap();
        let layer_only = ForwardCtx {
            overrides: Some(&o),
            capture: None,
            timer: None,
        };
        let got = layer_only.linear(layer, &x, &w, None).unwrap();
        let want = QMatMul::from_qtensor(QTensor::quantize(&w, dtype).unwrap())
            .unwrap()
            .forward(&x)
            .unwrap();
        assert_eq!(got.dims(), want.dims());
        let act = mpsearch::model::activation_blocks(dtype).unwrap();
        let cpu = candle_core::Device::Cpu;
        let by_hand = QTensor::quantize(&x, act)
            .unwrap()
            .dequantize(&cpu)
            .unwrap()
            .broadcast_matmul(
                &QTensor::quantize(&w, dtype)
                    .unwrap()
                    .dequantize(&cpu)
                    .unwrap()
                    .t()
                    .unwrap(),
            )
            .unwrap();
        let flat = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (got, want, by_hand) = (flat(&got), flat(&want), flat(&by_hand));
        let differ = got
            .iter()
            .zip(&by_hand)
            .filter(|(g, w)| g.to_bits() != w.to_bits())
            .count();
        assert_eq!(
            differ,
            0,
            "{layer} at {c}: {differ} of {} values differ from the arithmetic written out",
            got.len()
        );
        let out = *w.dims().first().unwrap();
        let mut worst = 0.0f32;
        for (g, k) in got.chunks(out).zip(want.chunks(out)) {
            let scale = k.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let diff = g
                .iter()
                .zip(k)
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            worst = worst.max(diff / scale);
        }
        assert!(
            worst < 1e-5,
            "{layer} at {c}: {worst:e} of the row's largest output from QMatMul"
        );
    }
}

/// `--pairs auto` on all-MiniLM-L6-v2 (a space of f16 and int8/int4 per channel or g32, 40 shipped sentences so that each evaluation
/// is quick): the set-up measures one pair per searchable group and no more than its budget — far
/// fewer than the space's pairs — and the run counts them as its set-up's evaluations.
pub fn frugal_setup_measures_fewer_pairs_than_the_space(dir: PathBuf) {
    let d = crate::util::Dir::new();
    let space = d.write(
        "space.toml",
        r#"[space]
name = "small"
exclude = ['embeddings\.(position|token_type)_embeddings$']

[defaults]
float = ["f32", "f16"]
bits = [8, 4]
schemes = ["sym"]
granularity = ["channel", "g32"]
activations = ["none"]
sparsity = [0.0]
nm = []
rank = [1.0]

[[group]]
match = 'encoder\.layer\.(\d+)\.attention\.self\.(?:query|key|value)$'
"#,
    );
    let shipped = mpsearch::data::text::TextSplit::shipped();
    let sentences: Vec<&str> = shipped
        .calibration
        .iter()
        .chain(&shipped.search)
        .take(40)
        .map(String::as_str)
        .collect();
    let data = d.write("sentences.txt", &sentences.join("\n"));
    let model = dir.to_str().unwrap();
    let (space_arg, data_arg) = (space.to_str().unwrap(), data.to_str().unwrap());
    crate::util::ok(
        d.path(),
        &[
            "search", "--model", model, "--space", space_arg, "--data", data_arg, "--trials", "8",
            "--store", "s", "--run", "r",
        ],
    );
    let runs: serde_json::Value = serde_json::from_str(&crate::util::ok(
        d.path(),
        &["runs", "--store", "s", "--json"],
    ))
    .unwrap();
    let r = &runs[0];
    let inventory = mpsearch::model::inventory(&ModelSource::Folder(dir.clone())).unwrap();
    let s = mpsearch::shipped::space(space_arg, &inventory.layers).unwrap();
    let pairs = mpsearch::sensitivity::pick_pairs(&s, usize::MAX, 0).len() as u64;
    let groups = s.searchable_groups().count() as u64;
    let measured = r["setup"]["measured"].as_u64().unwrap();
    let budget = r["setup"]["budget"].as_u64().unwrap();
    // A fifth of 8 trials is less than one per group: the budget is one per searchable group.
    assert_eq!(budget, groups, "{}", r["setup"]);
    assert!(
        measured <= budget && measured >= groups.min(budget),
        "{}",
        r["setup"]
    );
    assert!(
        measured < pairs,
        "measured {measured} of the space's {pairs} pairs"
    );
    assert_eq!(
        r["evaluations"]["setup"]["evaluated"].as_u64(),
        Some(measured)
    );
    eprintln!("MiniLM: {measured} of {pairs} pairs measured ({groups} searchable groups)");
}

/// Every layer of all-MiniLM-L6-v2 in int4, symmetric, per channel (the table of position and token
/// type embeddings left f32, as the shipped BERT space leaves them).
const INT4_SPACE: &str = r#"[space]
name = "all-int4-channel"
exclude = ['embeddings\.(position|token_type)_embeddings$']

[defaults]
float = []
bits = [4]
schemes = ["sym"]
granularity = ["channel"]
activations = ["none"]
sparsity = [0.0]
nm = []
rank = [1.0]
"#;

/// A store `s` in `d` with run `q4`: all-MiniLM-L6-v2 with every layer int4 per channel, `flags`
/// added to the search; returns the recovery's JSON for `recover` flags `extra`.
fn recovered_int4(
    d: &crate::util::Dir,
    dir: &Path,
    flags: &[&str],
    extra: &[&str],
) -> serde_json::Value {
    let space = d.write("int4.toml", INT4_SPACE);
    let mut args = vec![
        "search",
        "--model",
        dir.to_str().unwrap(),
        "--space",
        space.to_str().unwrap(),
        "--trials",
        "2",
        "--store",
        "s",
        "--run",
        "q4",
    ];
    args.extend_from_slice(flags);
    crate::util::ok(d.path(), &args);
    let mut args = vec!["recover", "q4", "--point", "1", "--store", "s", "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(crate::util::ok(d.path(), &args).trim()).unwrap()
}

fn held_out_cosine(metrics: &serde_json::Value) -> f64 {
    metrics["mean_cosine"]
        .as_f64()
        .expect("a held-out mean cosine")
}

/// A short distillation of the all-int4 point (round-to-nearest, the rounding recovery trains with)
/// on 160 of the shipped tune sentences (10 steps at the default lr 1e-4) already wins back held-out
/// cosine on 40 held-out sentences (release build: 0.9340 → 0.9584; at lr 3e-4 the same 10 steps
/// lose 0.008):
/// the encoder path of `recover` end to end — tokenized batches, the cosine loss, gradients through
/// every transformer block, the word embeddings run compressed but not trained.
pub fn recovery_of_an_int4_encoder_wins_back_held_out_cosine(dir: PathBuf) {
    let d = crate::util::Dir::new();
    let tune: Vec<&str> = mpsearch::data::text::shipped_tune_sentences()
        .into_iter()
        .take(160)
        .collect();
    let data = d.write("tune.txt", &tune.join("\n"));
    let r = recovered_int4(
        &d,
        &dir,
        &["--rounding", "rtn", "--samples", "40"],
        &["--epochs", "1", "--data", data.to_str().unwrap()],
    );
    let (before, after) = (
        held_out_cosine(&r["before_held_out_metrics"]),
        held_out_cosine(&r["held_out_metrics"]),
    );
    eprintln!("MiniLM int4 per channel, 10 steps on 160 sentences: held-out cosine {before:.4} → {after:.4}");
    assert!(
        after >= before + MIN_SHORT_RECOVERY_GAIN,
        "held-out mean cosine {before} → {after}: {r}"
    );
    assert_eq!(r["state"], "complete");
    assert!(
        r["recipe"]["data"]
            .as_str()
            .unwrap()
            .contains("160 sentences"),
        "{r}"
    );
}

/// Held-out mean cosine that 10 steps of recovery must win back on the all-int4 MiniLM point (it wins
/// 0.024).
const MIN_SHORT_RECOVERY_GAIN: f64 = 0.01;

/// Issue 14's target, by hand (about 12 minutes on 2 cores): the default recovery of the all-int4
/// MiniLM point (the command line's defaults: GPTQ for the search, 5 epochs on the shipped tune
/// sentences) reaches a held-out mean cosine of at least 0.98 on the 100 held-out sentences.
/// `cargo test --release --test external -- --ignored minilm::default_recovery`.
pub fn default_recovery_of_an_int4_encoder_reaches_0_98(dir: PathBuf) {
    let d = crate::util::Dir::new();
    let r = recovered_int4(&d, &dir, &[], &[]);
    let (before, after) = (
        held_out_cosine(&r["before_held_out_metrics"]),
        held_out_cosine(&r["held_out_metrics"]),
    );
    eprintln!(
        "MiniLM int4 per channel, default recovery ({} s on {} threads): held-out cosine {before:.4} → {after:.4}",
        r["seconds"], r["threads"]
    );
    assert!(
        after >= 0.98,
        "held-out mean cosine {before} → {after}: {r}"
    );
}
