//! The GGUF decoder on tiny hand-made files (see `tiny_gguf`): inventory, tokenizer, what its forward
//! pass guarantees (causal, padding-free, one tied layer), and clear errors for bad files. Its logits
//! against an independent implementation are tested in `tests/external` (numpy reference).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Tensor};
use mpsearch::model::llama::token_batch;
use mpsearch::model::{
    capture_input_stats, ForwardCtx, LayerKernel, LayerOverride, LlamaModel, Model, ModelKind,
    ModelSource, Overrides,
};
use mpsearch::space::LayerKind;

use crate::tiny_gguf::{self, Metadata, Spec, Tensors};
use crate::util::{fails, max_abs_diff, ok, Dir};

/// f32 forward passes that compute the same thing in another batch layout agree to this.
const LAYOUT_TOL: f32 = 1e-5;

fn tiny(dir: &Dir, name: &str, spec: &Spec) -> PathBuf {
    let path = dir.path().join(name);
    tiny_gguf::write_spec(&path, spec);
    path
}

fn logits(model: &LlamaModel, rows: &[Vec<u32>], ctx: &ForwardCtx) -> Tensor {
    model.forward(&token_batch(rows).unwrap(), ctx).unwrap()
}

#[test]
fn a_gguf_path_is_a_gguf_model_whatever_its_case() {
    assert_eq!(
        ModelSource::parse("models/x.GGUF"),
        ModelSource::Gguf(PathBuf::from("models/x.GGUF"))
    );
    assert_eq!(
        ModelSource::parse("models/gguf"),
        ModelSource::Folder(PathBuf::from("models/gguf"))
    );
}

#[test]
fn inventory_names_layers_as_llama_cpp_with_a_tied_head_as_one_linear_layer() {
    let dir = Dir::new();
    let path = tiny(&dir, "tiny.gguf", &Spec::llama());
    let inv = mpsearch::model::inventory(&ModelSource::Gguf(path.clone())).unwrap();
    assert_eq!(
        (inv.name.as_str(), inv.kind, inv.architecture.as_str()),
        ("tiny", ModelKind::LanguageModel, "llama")
    );
    let names: Vec<&str> = inv.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names.len(), 1 + 2 * 7);
    assert_eq!(
        &names[..9],
        [
            "token_embd",
            "blk.0.attn_q",
            "blk.0.attn_k",
            "blk.0.attn_v",
            "blk.0.attn_output",
            "blk.0.ffn_gate",
            "blk.0.ffn_up",
            "blk.0.ffn_down",
            "blk.1.attn_q"
        ]
    );
    let embd = &inv.layers[0];
    assert_eq!(embd.kind, LayerKind::Linear, "the tied head multiplies");
    assert_eq!(
        (embd.shape.as_slice(), embd.macs),
        (&[261, 32][..], 261 * 32)
    );
    assert_eq!(inv.layers[2].shape, [16, 32], "2 key/value heads of 8");
    assert_eq!(inv.layers[4].shape, [32, 32]);
    assert_eq!(inv.layers[7].shape, [32, 64]);
    assert!(inv.layers.iter().all(|l| !l.bias));
    let model = LlamaModel::load(&path).unwrap();
    assert_eq!(model.inventory().layers, inv.layers);
    for l in &inv.layers {
        assert_eq!(model.weight(&l.name).unwrap().dims(), l.shape.as_slice());
    }

    // The inspect table and JSON say the same.
    let cwd = Dir::new();
    let p = path.to_str().unwrap();
    let text = ok(cwd.path(), &["inspect", "--model", p]);
    assert!(
        text.starts_with("model tiny (llama, language-model): 15 compressible layers"),
        "{text}"
    );
    assert!(text.contains("MACs per token"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(cwd.path(), &["inspect", "--model", p, "--json"])).unwrap();
    assert_eq!(json["model_kind"], "language-model");
    assert_eq!(json["layers"][0]["name"], "token_embd");
    assert_eq!(json["layers"][0]["macs"], 261 * 32);
}

#[test]
fn a_separate_head_is_the_layer_output_and_the_table_an_embedding() {
    let dir = Dir::new();
    let path = tiny(&dir, "qwen.gguf", &Spec::qwen2());
    let model = LlamaModel::load(&path).unwrap();
    let inv = model.inventory();
    assert_eq!(inv.architecture, "qwen2");
    let first = &inv.layers[0];
    let last = inv.layers.last().unwrap();
    assert_eq!(
        (first.name.as_str(), first.kind, first.macs),
        ("token_embd", LayerKind::Embedding, 0)
    );
    assert_eq!(
        (last.name.as_str(), last.kind),
        ("output", LayerKind::Linear)
    );
    let biased: Vec<&str> = inv
        .layers
        .iter()
        .filter(|l| l.bias)
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(
        biased,
        [
            "blk.0.attn_q",
            "blk.0.attn_k",
            "blk.0.attn_v",
            "blk.1.attn_q",
            "blk.1.attn_k",
            "blk.1.attn_v"
        ]
    );

    // What each layer reads: ids for the table, hidden states for the head.
    let capture = Mutex::new(HashMap::from([
        ("token_embd".to_string(), Vec::new()),
        ("output".to_string(), Vec::new()),
    ]));
    let ctx = ForwardCtx {
        overrides: None,
        capture: Some(&capture),
        timer: None,
    };
    let out = logits(&model, &[vec![257, 7], vec![3]], &ctx);
    assert_eq!(out.dims(), [3, 261]);
    let seen = capture.into_inner().unwrap();
    assert_eq!(seen["token_embd"][0].dtype(), DType::U32);
    assert_eq!(seen["token_embd"][0].to_vec1::<u32>().unwrap(), [257, 7, 3]);
    assert_eq!(seen["output"][0].dims(), [3, 32]);
}

#[test]
fn the_tokenizer_is_built_from_the_metadata() {
    let dir = Dir::new();
    let model = LlamaModel::load(&tiny(&dir, "tiny.gguf", &Spec::llama())).unwrap();
    let tok = model.tokenizer();
    // 256 byte tokens (id = byte), then ab, abc, Ġt, he, Ġthe.
    assert_eq!(tok.encode("abc the").unwrap(), [257, 260]);
    assert_eq!(tok.encode("abd").unwrap(), [256, u32::from(b'd')]);
    assert_eq!(tok.encode("he, the").unwrap(), [259, u32::from(b','), 260]);
    assert_eq!(tok.encode("é").unwrap(), [0xc3, 0xa9], "bytes of U+00E9");
    assert_eq!(tok.decode(&[257, 260, 0xc3, 0xa9]).unwrap(), "abc theé");
    assert!(!tok.adds_bos());
    assert_eq!(tok.vocab_size(), 261);
}

#[test]
fn forward_is_causal_and_padding_changes_nothing() {
    let dir = Dir::new();
    for spec in [Spec::llama(), Spec::qwen2()] {
        let model = LlamaModel::load(&tiny(&dir, &format!("{}.gguf", spec.arch), &spec)).unwrap();
        let ctx = ForwardCtx::default();
        let long = vec![5, 257, 260, 9, 100, 33];
        let short = vec![7, 8, 9];
        let alone_long = logits(&model, std::slice::from_ref(&long), &ctx);
        let alone_short = logits(&model, std::slice::from_ref(&short), &ctx);
        let both = logits(&model, &[short.clone(), long.clone()], &ctx);
        assert_eq!(
            both.dims(),
            [9, 261],
            "one row per real token, none for padding"
        );
        let d = max_abs_diff(&both.narrow(0, 0, 3).unwrap(), &alone_short);
        assert!(
            d < LAYOUT_TOL,
            "{}: padded short prompt differs by {d}",
            spec.arch
        );
        let d = max_abs_diff(&both.narrow(0, 3, 6).unwrap(), &alone_long);
        assert!(
            d < LAYOUT_TOL,
            "{}: batched long prompt differs by {d}",
            spec.arch
        );

        // Changing the last tokens changes nothing before them, and changes them.
        let mut other = long.clone();
        other[4] = 42;
        other[5] = 43;
        let changed = logits(&model, &[other], &ctx);
        let d = max_abs_diff(
            &changed.narrow(0, 0, 4).unwrap(),
            &alone_long.narrow(0, 0, 4).unwrap(),
        );
        assert!(
            d < LAYOUT_TOL,
            "{}: earlier positions saw later tokens ({d})",
            spec.arch
        );
        let d = max_abs_diff(
            &changed.narrow(0, 4, 2).unwrap(),
            &alone_long.narrow(0, 4, 2).unwrap(),
        );
        assert!(
            d > 1e-3,
            "{}: the changed tokens changed nothing",
            spec.arch
        );
    }
}

#[test]
fn the_tied_table_is_one_layer_for_the_lookup_and_the_head() {
    let dir = Dir::new();
    let spec = Spec::llama();
    let base = LlamaModel::load(&tiny(&dir, "base.gguf", &spec)).unwrap();
    // Another table, stored exactly (f32), in an otherwise identical file.
    let other = tiny_gguf::tensor(&[261, 32], 2.0, 0.61, 99, GgmlDType::F32);
    let (metadata, mut tensors) = tiny_gguf::parts(&spec);
    tensors[0].1 = QTensor::quantize(
        &other.dequantize(&candle_core::Device::Cpu).unwrap(),
        GgmlDType::F32,
    )
    .unwrap();
    let path = dir.path().join("other.gguf");
    tiny_gguf::write(&path, &metadata, &tensors);
    let swapped = LlamaModel::load(&path).unwrap();

    let table = swapped.weight("token_embd").unwrap();
    let overrides: Overrides = [(
        "token_embd".to_string(),
        LayerOverride {
            kernel: Some(LayerKernel::Dense(table)),
            ..LayerOverride::default()
        },
    )]
    .into();
    let ctx = ForwardCtx {
        overrides: Some(&overrides),
        capture: None,
        timer: None,
    };
    let rows = [vec![3, 257, 260, 40]];
    let via_override = logits(&base, &rows, &ctx);
    let via_file = logits(&swapped, &rows, &ForwardCtx::default());
    let d = max_abs_diff(&via_override, &via_file);
    assert!(
        d < LAYOUT_TOL,
        "overriding token_embd must change the look-up and the head alike ({d})"
    );
    let unchanged = logits(&base, &rows, &ForwardCtx::default());
    assert!(max_abs_diff(&via_override, &unchanged) > 1e-2);
}

#[test]
fn layer_inputs_are_captured_as_rows_and_shared_by_q_k_v() {
    let dir = Dir::new();
    let model = LlamaModel::load(&tiny(&dir, "tiny.gguf", &Spec::llama())).unwrap();
    let batch = token_batch(&[vec![1, 2, 3, 4], vec![257, 260]]).unwrap();
    let stats = capture_input_stats(&model, &[batch]).unwrap();
    assert_eq!(
        stats.len(),
        15,
        "every layer has statistics, the tied head too"
    );
    assert!(Arc::ptr_eq(&stats["blk.0.attn_q"], &stats["blk.0.attn_v"]));
    assert!(Arc::ptr_eq(
        &stats["blk.1.ffn_gate"],
        &stats["blk.1.ffn_up"]
    ));
    assert!(!Arc::ptr_eq(&stats["blk.0.attn_q"], &stats["blk.1.attn_q"]));
    assert_eq!(
        stats["token_embd"].samples(),
        6,
        "the head saw the 6 real tokens, no padding"
    );
}

#[test]
fn bad_token_batches_are_errors() {
    let dir = Dir::new();
    let model = LlamaModel::load(&tiny(&dir, "tiny.gguf", &Spec::llama())).unwrap();
    let ctx = ForwardCtx::default();
    let err = model
        .forward(&token_batch(&[vec![261]]).unwrap(), &ctx)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("token id 261 is outside the vocabulary (261 tokens)"),
        "{err}"
    );
    let ids = Tensor::new(&[[1u32, 2, 3]], &candle_core::Device::Cpu).unwrap();
    let mask = Tensor::new(&[[0u32, 1, 1]], &candle_core::Device::Cpu).unwrap();
    let err = model
        .forward(&mpsearch::data::Batch::Tokens { ids, mask }, &ctx)
        .unwrap_err()
        .to_string();
    assert!(err.contains("padded on the right"), "{err}");
    let ids = Tensor::zeros((1, 65), DType::U32, &candle_core::Device::Cpu).unwrap();
    let mask = Tensor::ones((1, 65), DType::U32, &candle_core::Device::Cpu).unwrap();
    let err = model
        .forward(&mpsearch::data::Batch::Tokens { ids, mask }, &ctx)
        .unwrap_err()
        .to_string();
    assert!(err.contains("at most 64 (context_length)"), "{err}");
}

/// `inspect` on a bad file fails with exit 1 and one line that names the file and contains `want`.
fn refused(cwd: &Path, path: &Path, want: &[&str]) -> String {
    let err = fails(cwd, &["inspect", "--model", path.to_str().unwrap()]);
    let line = err.trim();
    assert_eq!(line.lines().count(), 1, "one paragraph:\n{err}");
    assert!(
        line.contains(&path.display().to_string()),
        "names the file:\n{err}"
    );
    for w in want {
        assert!(line.contains(w), "expected {w:?} in:\n{err}");
    }
    err
}

#[test]
fn truncated_or_foreign_files_are_refused_naming_the_file_and_tensor() {
    let dir = Dir::new();
    let good = tiny(&dir, "good.gguf", &Spec::llama());
    let bytes = std::fs::read(&good).unwrap();

    // Cut in the tensor data: the first tensor that does not fit is named.
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 600]).unwrap();
    refused(dir.path(), &cut, &["tensor `", "the file is truncated"]);
    let err = LlamaModel::load(&cut).unwrap_err().to_string();
    assert!(err.contains("truncated"), "{err}");

    // Cut in the header.
    let head = dir.path().join("head.gguf");
    std::fs::write(&head, &bytes[..300]).unwrap();
    refused(
        dir.path(),
        &head,
        &["cannot read its GGUF header", "truncated"],
    );

    // Not GGUF at all.
    let other = dir.path().join("other.gguf");
    std::fs::write(&other, b"PK\x03\x04 this is a zip file, not a model").unwrap();
    refused(dir.path(), &other, &["is not a GGUF file"]);
}

#[test]
fn unsupported_architectures_and_inconsistent_files_are_refused() {
    let dir = Dir::new();
    let spec = Spec::llama();
    let write = |name: &str, edit: &dyn Fn(&mut Metadata, &mut Tensors)| {
        let (mut m, mut t) = tiny_gguf::parts(&spec);
        edit(&mut m, &mut t);
        let path = dir.path().join(name);
        tiny_gguf::write(&path, &m, &t);
        path
    };
    let set = |m: &mut Vec<(String, Value)>, key: &str, v: Value| {
        let slot = m.iter_mut().find(|(k, _)| k == key).unwrap();
        slot.1 = v;
    };

    let gpt2 = write("gpt2.gguf", &|m, _| {
        set(m, "general.architecture", Value::String("gpt2".into()))
    });
    refused(
        dir.path(),
        &gpt2,
        &["architecture `gpt2`", "`llama`", "`qwen2`"],
    );

    // attn_k of block 1 with the rows of 4 key/value heads while the metadata says 2.
    let wrong = write("shape.gguf", &|_, t| {
        let slot = t
            .iter_mut()
            .find(|(n, _)| n == "blk.1.attn_k.weight")
            .unwrap();
        slot.1 = tiny_gguf::tensor(&[32, 32], 0.5, 0.0, 5, GgmlDType::F32);
    });
    refused(
        dir.path(),
        &wrong,
        &[
            "tensor `blk.1.attn_k.weight`",
            "[32, 32]",
            "[16, 32]",
            "disagree",
        ],
    );

    // The metadata says 3 blocks; the file has 2.
    let blocks = write("blocks.gguf", &|m, _| {
        set(m, "llama.block_count", Value::U32(3))
    });
    refused(dir.path(), &blocks, &["tensor `blk.2.", "is missing"]);

    // A tensor the decoder would not run.
    let extra = write("extra.gguf", &|_, t| {
        t.push((
            "blk.0.ffn_gate_inp.weight".into(),
            tiny_gguf::tensor(&[4, 32], 0.5, 0.0, 6, GgmlDType::F32),
        ))
    });
    refused(
        dir.path(),
        &extra,
        &["tensor `blk.0.ffn_gate_inp.weight`", "refuses the file"],
    );

    // A vocabulary one token short of the table.
    let vocab = write("vocab.gguf", &|m, _| {
        let slot = m
            .iter_mut()
            .find(|(k, _)| k == "tokenizer.ggml.tokens")
            .unwrap();
        if let Value::Array(v) = &mut slot.1 {
            v.pop();
        }
        let types = m
            .iter_mut()
            .find(|(k, _)| k == "tokenizer.ggml.token_type")
            .unwrap();
        if let Value::Array(v) = &mut types.1 {
            v.pop();
        }
    });
    let err = LlamaModel::load(&vocab).unwrap_err().to_string();
    assert!(
        err.contains("tensor `token_embd.weight`") && err.contains("260 tokens"),
        "{err}"
    );

    // A SentencePiece vocabulary is named as unsupported.
    let spm = write("spm.gguf", &|m, _| {
        set(m, "tokenizer.ggml.model", Value::String("llama".into()))
    });
    let err = LlamaModel::load(&spm).unwrap_err().to_string();
    assert!(
        err.contains("`llama` tokenizer") && err.contains("spm.gguf"),
        "{err}"
    );
}

#[test]
fn commands_that_score_measure_kl_on_text_windows_and_short_text_is_refused() {
    let dir = Dir::new();
    let path = tiny(&dir, "tiny.gguf", &Spec::llama());
    let p = path.to_str().unwrap();
    let cwd = Dir::new();
    let space = cwd.write(
        "space.toml",
        "[space]\nname = \"t\"\ndescription = \"t\"\n[defaults]\nfloat = [\"f32\", \"f16\"]\nbits = [8]\n\
         schemes = [\"sym\"]\ngranularity = [\"g32\"]\nactivations = [\"none\"]\nsparsity = [0.0]\nnm = []\n\
         rank = [1.0]\n",
    );
    let s = space.to_str().unwrap();
    let base = cwd.write("a.json", r#"{"default": "f32"}"#);
    let int8 = cwd.write("b.json", r#"{"default": "int8-sym-g32"}"#);
    // The base against itself: KL 0, equal perplexities, full agreement; int8 costs a little KL.
    let json = |a: &Path| -> serde_json::Value {
        let out = ok(
            cwd.path(),
            &[
                "eval",
                "--model",
                p,
                "--space",
                s,
                "--assignment",
                a.to_str().unwrap(),
            ],
        );
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };
    let b = json(&base);
    let m = &b["metrics"];
    assert_eq!(m["kl_divergence"].as_f64(), Some(0.0), "{b}");
    assert_eq!(m["top1_agreement"].as_f64(), Some(1.0), "{b}");
    let ppl = m["perplexity"].as_f64().unwrap();
    assert!(
        ppl > 1.0 && ppl == m["base_perplexity"].as_f64().unwrap(),
        "{b}"
    );
    let q = json(&int8);
    let kl = q["metrics"]["kl_divergence"].as_f64().unwrap();
    assert!(kl > 0.0 && kl < 0.1, "{q}");
    assert_eq!(
        q["quality"].as_f64(),
        Some(kl),
        "the objective is the KL: {q}"
    );

    // Text shorter than the four windows it needs (of 64 tokens, the tiny model's context): a clear error naming the file, nothing written.
    let short = cwd.write("short.txt", "Too short to make even one window of text.");
    let sh = short.to_str().unwrap();
    let store = cwd.path().join("store");
    for args in [
        vec![
            "eval",
            "--model",
            p,
            "--space",
            s,
            "--assignment",
            base.to_str().unwrap(),
            "--data",
            sh,
        ],
        vec![
            "search",
            "--model",
            p,
            "--space",
            s,
            "--trials",
            "2",
            "--data",
            sh,
            "--store",
            store.to_str().unwrap(),
        ],
    ] {
        let err = fails(cwd.path(), &args);
        assert!(
            err.contains("short.txt")
                && err.contains("windows of 64")
                && err.contains("longer text"),
            "{err}"
        );
    }
    let mut entries: Vec<String> = std::fs::read_dir(cwd.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        ["a.json", "b.json", "short.txt", "space.toml"],
        "nothing written"
    );
}

#[test]
fn every_compression_path_runs_on_a_decoder() {
    // An evaluator built by hand on a few token rows compresses every layer and runs the decoder
    // through each kind of choice.
    use mpsearch::eval::metrics::NO_TARGET;
    use mpsearch::eval::{CandleEvaluator, EvalData, EvalSettings, Evaluator};
    use mpsearch::space::{Assignment, Choice};
    let dir = Dir::new();
    let model = Arc::new(LlamaModel::load(&tiny(&dir, "tiny.gguf", &Spec::llama())).unwrap());
    let batch = |rows: &[Vec<u32>]| token_batch(rows).unwrap();
    let data = EvalData {
        description: "tiny".into(),
        eval: vec![batch(&[vec![5, 257, 260, 9], vec![7, 8]])],
        labels: Some(vec![257, 260, 9, NO_TARGET, 8, NO_TARGET]),
        held_out: vec![batch(&[vec![3, 4, 5]])],
        held_out_labels: Some(vec![4, 5, NO_TARGET]),
        calibration: vec![batch(&[vec![1, 2, 3, 4, 5, 6], vec![259, 260]])],
        calibration_labels: None,
        sizes: mpsearch::data::SplitSizes {
            calibration: 2,
            search: 2,
            held_out: 1,
        },
        fingerprint: blake3::hash(b"tiny"),
    };
    let ev = CandleEvaluator::new(model.clone(), data, EvalSettings::default()).unwrap();
    let layers = &model.inventory().layers;
    let all = |c: &str| {
        let c: Choice = c.parse().unwrap();
        Assignment::new(layers.iter().map(|l| (l.name.clone(), c)))
    };
    assert_eq!(ev.evaluate(&all("f32")).unwrap().quality, 0.0);
    for c in [
        "f16",
        "int8-sym-channel",
        "int4-asym-g32",
        "int8-sym-channel+act8-dynamic",
        "int8-sym-channel+act8-static",
        "int8-sym-channel+2:4",
        "int8-sym-channel+channels25",
        "int8-sym-channel+rank50",
        "q8_0",
    ] {
        let e = ev.evaluate(&all(c)).unwrap();
        assert!(e.quality.is_finite() && e.quality > 0.0, "{c}: {e:?}");
    }
}

#[test]
fn a_searched_point_exports_to_gguf_and_reads_back_to_its_stored_kl() {
    let dir = Dir::new();
    let path = tiny(&dir, "tiny.gguf", &Spec::llama());
    let p = path.to_str().unwrap();
    let cwd = Dir::new();
    // The shipped `llm` space on the tiny decoder (32 wide: q8_0, q4_0 and f16; its tied head at 6
    // bits per weight or more), searched on size under a bits-per-weight budget.
    let out = ok(
        cwd.path(),
        &[
            "search",
            "--model",
            p,
            "--objective",
            "size",
            "--max-size",
            "12bpw",
            "--trials",
            "8",
            "--pairs",
            "12",
            "--store",
            "s",
            "--run",
            "r",
        ],
    );
    assert!(!out.is_empty());
    let runs: serde_json::Value =
        serde_json::from_str(&ok(cwd.path(), &["runs", "--store", "s", "--json"])).unwrap();
    let front = runs[0]["front"].as_array().unwrap().clone();
    assert!(!front.is_empty(), "{runs}");
    let trial = front[0]["trial"].as_u64().unwrap();
    let trials: Vec<serde_json::Value> = ok(cwd.path(), &["trials", "r", "--store", "s", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let stored = trials
        .iter()
        .find(|t| t["trial"].as_u64() == Some(trial))
        .unwrap();
    let bytes = stored["cost"]["bytes"].as_f64().unwrap();

    let gguf = cwd.path().join("point.gguf");
    ok(
        cwd.path(),
        &[
            "export",
            "r",
            "--store",
            "s",
            "--point",
            "1",
            "--format",
            "gguf",
            "--out",
            gguf.to_str().unwrap(),
        ],
    );
    // The file is a model mpsearch (and llama.cpp) loads, its tensors in the chosen types.
    let back = LlamaModel::load(&gguf).unwrap();
    assert_eq!(back.inventory().layers.len(), 15);
    let read: serde_json::Value = serde_json::from_str(&ok(
        cwd.path(),
        &["eval", "--model", p, "--from-gguf", gguf.to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(
        read["quality"].as_f64(),
        stored["quality"].as_f64(),
        "the exported file's KL is the stored one, exactly: {read} vs {stored}"
    );
    assert_eq!(read["bytes"].as_f64(), Some(bytes), "{read}");
    assert!(read["bits_per_weight"].as_f64().unwrap() <= 12.0, "{read}");

    // A file not exported from this model: refused naming the file and the tensor.
    let other = tiny(
        &dir,
        "other.gguf",
        &Spec {
            seed: 0.5,
            ..Spec::llama()
        },
    );
    let err = fails(
        cwd.path(),
        &["eval", "--model", p, "--from-gguf", other.to_str().unwrap()],
    );
    assert!(
        err.contains("other.gguf") && err.contains("not exported by mpsearch from this model"),
        "{err}"
    );
    // llama.cpp's recipe of the same model, as an assignment of the space.
    let recipe: serde_json::Value = serde_json::from_str(&ok(
        cwd.path(),
        &[
            "eval", "--model", p, "--recipe", "Q4_K_M", "--split", "held-out",
        ],
    ))
    .unwrap();
    assert_eq!(recipe["recipe"], "Q4_K_M");
    assert_eq!(recipe["split"], "held-out");
    assert!(recipe["quality"].as_f64().unwrap() > 0.0, "{recipe}");
}

#[test]
fn a_size_in_bits_per_weight_is_the_models_weights_times_bpw() {
    let dir = Dir::new();
    let path = tiny(&dir, "tiny.gguf", &Spec::llama());
    let p = path.to_str().unwrap();
    let cwd = Dir::new();
    let inv = mpsearch::model::inventory(&ModelSource::Gguf(path.clone())).unwrap();
    let weights = inv.params() as f64;
    let cost = |size: &'static str| {
        vec![
            "cost",
            "--model",
            p,
            "--profile",
            "cortex-a76",
            "--max-size",
            size,
        ]
    };
    // 1 bit per weight is below anything the llm space reaches (q4_0 is 4.5): the error gives the
    // reachable range, in bytes of these weights.
    let err = fails(cwd.path(), &cost("1bpw"));
    assert!(err.contains("size") && err.contains("reach"), "{err}");
    // 9 bpw is reachable, and is 9/8 bytes a weight.
    let mut json = cost("9bpw");
    json.push("--json");
    let out: serde_json::Value = serde_json::from_str(&ok(cwd.path(), &json)).unwrap();
    let text = out["budgets"].to_string();
    let bytes = mpsearch::cost::model::format_bytes(9.0 * weights / 8.0);
    assert!(
        text.contains(&format!("max size {bytes} ")),
        "the budget is {bytes}: {text}"
    );
    for bad in ["40bpw", "xbpw", "0bpw"] {
        let err = fails(cwd.path(), &cost(bad));
        assert!(
            err.contains("--max-size") && err.contains("bits per weight"),
            "{bad}: {err}"
        );
    }
}
