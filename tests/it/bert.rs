//! The BERT encoder on a tiny random BERT folder: shapes, masking, overrides, capture and errors (the
//! real all-MiniLM-L6-v2 against an independent reference is in `tests/external/minilm.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use mpsearch::data::Batch;
use mpsearch::model::{BertEncoder, ForwardCtx, LayerOverride, Model, Overrides};
use mpsearch::space::ActQuant;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::util::{forward_with_weight, max_abs_diff, Dir};

/// Largest difference allowed between two runs that should give the same embedding (f32 reordering).
const SAME_EMBEDDING_TOL: f32 = 1e-5;
/// Largest distance from 1 of the norm of an embedding the pipeline normalises.
const UNIT_NORM_TOL: f32 = 1e-5;
/// Smallest distance from 1 of some norm of embeddings the pipeline does not normalise.
const UNNORMALISED_MIN: f32 = 1e-3;
/// Smallest change of the embedding when the attention mask is dropped from padded ids.
const MASK_EFFECT_MIN: f32 = 1e-3;
/// Smallest change of the embedding when a layer's weight is halved.
const OVERRIDE_EFFECT_MIN: f32 = 1e-4;

// ---- a tiny random BERT -----------------------------------------------------------------------------

const HIDDEN: usize = 8;
const HEADS: usize = 2;
const INTER: usize = 16;
const LAYERS: usize = 2;
const POSITIONS: usize = 16;
const WORDS: [&str; 16] = [
    "the", "a", "cat", "dog", "sat", "on", "mat", "ran", "far", "away", "and", "slept", "big",
    "red", "house", ".",
];
/// [PAD], [UNK], [CLS], [SEP], then WORDS.
const VOCAB: usize = 4 + WORDS.len();

/// How to spoil the tiny folder, for the error tests.
#[derive(Clone, Copy, Default)]
struct Spoil {
    prefix: &'static str,
    skip_tensor: Option<&'static str>,
    /// Rows of the word-embedding table (VOCAB unless set).
    word_rows: Option<usize>,
    extra_tokenizer_words: usize,
}

fn config_json() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
        "hidden_size": HIDDEN, "num_attention_heads": HEADS, "num_hidden_layers": LAYERS,
        "intermediate_size": INTER, "layer_norm_eps": 1e-12, "max_position_embeddings": POSITIONS,
        "vocab_size": VOCAB, "type_vocab_size": 2, "pad_token_id": 0
    })
}

/// Tensors of the tiny BERT, random from a fixed seed.
fn tiny_tensors(spoil: Spoil) -> HashMap<String, Tensor> {
    let mut rng = StdRng::seed_from_u64(7);
    let mut t = HashMap::new();
    let mut add = |name: String, shape: &[usize], centre: f32, rng: &mut StdRng| {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| centre + rng.random_range(-0.5f32..0.5))
            .collect();
        t.insert(name, Tensor::from_vec(data, shape, &Device::Cpu).unwrap());
    };
    let p = spoil.prefix;
    add(
        format!("{p}embeddings.word_embeddings.weight"),
        &[spoil.word_rows.unwrap_or(VOCAB), HIDDEN],
        0.0,
        &mut rng,
    );
    add(
        format!("{p}embeddings.position_embeddings.weight"),
        &[POSITIONS, HIDDEN],
        0.0,
        &mut rng,
    );
    add(
        format!("{p}embeddings.token_type_embeddings.weight"),
        &[2, HIDDEN],
        0.0,
        &mut rng,
    );
    add(
        format!("{p}embeddings.LayerNorm.weight"),
        &[HIDDEN],
        1.0,
        &mut rng,
    );
    add(
        format!("{p}embeddings.LayerNorm.bias"),
        &[HIDDEN],
        0.0,
        &mut rng,
    );
    for i in 0..LAYERS {
        let l = format!("{p}encoder.layer.{i}");
        for (name, out, inp) in [
            ("attention.self.query", HIDDEN, HIDDEN),
            ("attention.self.key", HIDDEN, HIDDEN),
            ("attention.self.value", HIDDEN, HIDDEN),
            ("attention.output.dense", HIDDEN, HIDDEN),
            ("intermediate.dense", INTER, HIDDEN),
            ("output.dense", HIDDEN, INTER),
        ] {
            add(format!("{l}.{name}.weight"), &[out, inp], 0.0, &mut rng);
            add(format!("{l}.{name}.bias"), &[out], 0.0, &mut rng);
        }
        for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
            add(format!("{l}.{ln}.weight"), &[HIDDEN], 1.0, &mut rng);
            add(format!("{l}.{ln}.bias"), &[HIDDEN], 0.0, &mut rng);
        }
    }
    add(
        format!("{p}pooler.dense.weight"),
        &[HIDDEN, HIDDEN],
        0.0,
        &mut rng,
    );
    add(format!("{p}pooler.dense.bias"), &[HIDDEN], 0.0, &mut rng);
    if let Some(skip) = spoil.skip_tensor {
        t.remove(&format!("{p}{skip}"));
    }
    t
}

/// A WordLevel tokenizer with BERT's special tokens, built with the tokenizers crate and saved.
fn write_tokenizer(path: &Path, extra_words: usize) {
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::normalizers::Lowercase;
    use tokenizers::pre_tokenizers::whitespace::Whitespace;
    use tokenizers::processors::bert::BertProcessing;

    let mut words: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    words.extend(WORDS.iter().map(|s| s.to_string()));
    words.extend((0..extra_words).map(|i| format!("extra{i}")));
    let model = WordLevel::builder()
        .vocab(
            words
                .into_iter()
                .enumerate()
                .map(|(i, w)| (w, i as u32))
                .collect(),
        )
        .unk_token("[UNK]".into())
        .build()
        .unwrap();
    let mut tok = tokenizers::Tokenizer::new(model);
    tok.with_normalizer(Some(Lowercase)).unwrap();
    tok.with_pre_tokenizer(Some(Whitespace));
    tok.with_post_processor(Some(BertProcessing::new(
        ("[SEP]".into(), 3),
        ("[CLS]".into(), 2),
    )));
    tok.save(path, false).unwrap();
}

/// Writes the tiny BERT folder (config.json, model.safetensors, tokenizer.json) inside `dir`.
fn tiny_folder_with(dir: &Dir, spoil: Spoil) -> PathBuf {
    let m = dir.path().join("tiny-bert");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(m.join("config.json"), config_json().to_string()).unwrap();
    candle_core::safetensors::save(&tiny_tensors(spoil), m.join("model.safetensors")).unwrap();
    write_tokenizer(&m.join("tokenizer.json"), spoil.extra_tokenizer_words);
    m
}

fn tiny_folder(dir: &Dir) -> PathBuf {
    tiny_folder_with(dir, Spoil::default())
}

fn load_err(path: &Path) -> String {
    BertEncoder::load(path)
        .expect_err("load should fail")
        .to_string()
}

const SENTENCES: [&str; 3] = [
    "The cat sat on the mat .",
    "a big red dog ran far away and slept",
    "the house",
];

#[test]
fn tiny_bert_embeds_sentences_as_unit_vectors() {
    let dir = Dir::new();
    let model = BertEncoder::load(&tiny_folder(&dir)).unwrap();
    assert_eq!(
        model.max_tokens(),
        POSITIONS,
        "the default is capped by max_position_embeddings"
    );
    let out = model
        .forward(&model.tokenize(&SENTENCES).unwrap(), &ForwardCtx::default())
        .unwrap();
    assert_eq!(out.dims(), [3, HIDDEN]);
    assert_eq!(out.dtype(), DType::F32);
    let norms: Vec<f32> = out
        .sqr()
        .unwrap()
        .sum(1)
        .unwrap()
        .sqrt()
        .unwrap()
        .to_vec1()
        .unwrap();
    for n in norms {
        assert!((n - 1.0).abs() < UNIT_NORM_TOL, "norm {n}");
    }
    let rows: Vec<Vec<f32>> = out.to_vec2().unwrap();
    assert_ne!(rows[0], rows[1], "different sentences embed differently");
    // Running one sentence alone gives the same vector as in the batch.
    let alone = model
        .forward(
            &model.tokenize(&SENTENCES[2..]).unwrap(),
            &ForwardCtx::default(),
        )
        .unwrap();
    assert!(max_abs_diff(&alone, &out.narrow(0, 2, 1).unwrap()) < SAME_EMBEDDING_TOL);
    // An empty batch is an empty result.
    let empty: [&str; 0] = [];
    let out = model
        .forward(&model.tokenize(&empty).unwrap(), &ForwardCtx::default())
        .unwrap();
    assert_eq!(out.dims(), [0, HIDDEN]);
}

#[test]
fn tokenize_pads_to_the_longest_and_truncates() {
    let dir = Dir::new();
    let model = BertEncoder::load(&tiny_folder(&dir)).unwrap();
    let Batch::Tokens { ids, mask } = model.tokenize(&["the cat", "a dog ran far"]).unwrap() else {
        panic!()
    };
    assert_eq!(ids.dims(), [2, 6]);
    assert_eq!(mask.dtype(), DType::U32);
    assert_eq!(
        ids.to_vec2::<u32>().unwrap(),
        [[2, 4, 6, 3, 0, 0], [2, 5, 7, 11, 12, 3]]
    );
    assert_eq!(
        mask.to_vec2::<u32>().unwrap(),
        [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]
    );
    let unknown = model.tokenize(&["zebra"]).unwrap();
    let Batch::Tokens { ids, .. } = unknown else {
        panic!()
    };
    assert_eq!(
        ids.to_vec2::<u32>().unwrap(),
        [[2, 1, 3]],
        "unknown words are [UNK]"
    );

    let short = BertEncoder::load(&tiny_folder(&dir))
        .unwrap()
        .with_max_tokens(4)
        .unwrap();
    let Batch::Tokens { ids, .. } = short.tokenize(&["a dog ran far away"]).unwrap() else {
        panic!()
    };
    assert_eq!(
        ids.to_vec2::<u32>().unwrap(),
        [[2, 5, 7, 3]],
        "[CLS] a dog [SEP]"
    );
    for bad in [1, POSITIONS + 1] {
        let err = BertEncoder::load(&tiny_folder(&dir))
            .unwrap()
            .with_max_tokens(bad)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("max_tokens {bad}"))
                && err.contains(&format!("2 ..= {POSITIONS}")),
            "{err}"
        );
    }
}

#[test]
fn padding_does_not_change_an_embedding() {
    let dir = Dir::new();
    let model = BertEncoder::load(&tiny_folder(&dir)).unwrap();
    let ctx = ForwardCtx::default();
    let alone = model
        .forward(&model.tokenize(&["the cat"]).unwrap(), &ctx)
        .unwrap();
    // Padded by a longer neighbour in the batch.
    let batched = model
        .forward(&model.tokenize(&["the cat", SENTENCES[1]]).unwrap(), &ctx)
        .unwrap();
    let d = max_abs_diff(&alone, &batched.narrow(0, 0, 1).unwrap());
    assert!(
        d < SAME_EMBEDDING_TOL,
        "padding by batching changed the embedding by {d}"
    );
    // Padded by hand with arbitrary ids under a zero mask.
    let ids = Tensor::new(&[[2u32, 4, 6, 3, 9, 13, 17, 1]], &Device::Cpu).unwrap();
    let mask = Tensor::new(&[[1u32, 1, 1, 1, 0, 0, 0, 0]], &Device::Cpu).unwrap();
    let padded = model.forward(&Batch::Tokens { ids, mask }, &ctx).unwrap();
    let d = max_abs_diff(&alone, &padded);
    assert!(
        d < SAME_EMBEDDING_TOL,
        "garbage under the mask changed the embedding by {d}"
    );
    // Without the mask, the same ids mean a different sentence.
    let ids = Tensor::new(&[[2u32, 4, 6, 3, 9, 13, 17, 1]], &Device::Cpu).unwrap();
    let mask = Tensor::ones((1, 8), DType::U32, &Device::Cpu).unwrap();
    let unmasked = model.forward(&Batch::Tokens { ids, mask }, &ctx).unwrap();
    assert!(
        max_abs_diff(&alone, &unmasked) > MASK_EFFECT_MIN,
        "the mask must matter"
    );
}

#[test]
fn weight_overrides_change_the_output() {
    let dir = Dir::new();
    let model = BertEncoder::load(&tiny_folder(&dir)).unwrap();
    let batch = model.tokenize(&SENTENCES).unwrap();
    let base = model.forward(&batch, &ForwardCtx::default()).unwrap();
    for layer in [
        "embeddings.word_embeddings",
        "encoder.layer.0.attention.self.query",
        "encoder.layer.1.attention.self.value",
        "encoder.layer.1.intermediate.dense",
        "encoder.layer.1.output.dense",
    ] {
        let w = model.weight(layer).unwrap();
        let out = forward_with_weight(&model, &batch, layer, w.clone()).unwrap();
        assert!(
            max_abs_diff(&out, &base) < SAME_EMBEDDING_TOL,
            "{layer}: the original weight as override"
        );

        let out = forward_with_weight(&model, &batch, layer, (w * 0.5).unwrap()).unwrap();
        assert!(
            max_abs_diff(&out, &base) > OVERRIDE_EFFECT_MIN,
            "{layer}: a halved weight changed nothing"
        );
    }
    let w = Tensor::zeros((HIDDEN, HIDDEN + 1), DType::F32, &Device::Cpu).unwrap();
    let err = forward_with_weight(&model, &batch, "encoder.layer.0.attention.self.key", w)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("encoder.layer.0.attention.self.key")
            && err.contains("[8, 9]")
            && err.contains("[8, 8]"),
        "{err}"
    );
}

/// act8-dynamic on every linear layer of the tiny BERT: ranges are per token, so a sentence's
/// embedding is the same alone as in a padded batch of others (one range per batch would tie it to the
/// other sentences' values). An act8 override on an embedding, whose input is token ids, is refused by
/// the forward rather than cast through an 8-bit grid.
#[test]
fn act8_dynamic_ranges_are_per_token_and_ids_are_refused() {
    let dir = Dir::new();
    let model = BertEncoder::load(&tiny_folder(&dir)).unwrap();
    let act8 = |name: &str| {
        (
            name.to_string(),
            LayerOverride {
                act: ActQuant::Int8Dynamic,
                ..LayerOverride::default()
            },
        )
    };
    let linear: Overrides = model
        .inventory()
        .layers
        .iter()
        .filter(|l| !l.name.starts_with("embeddings."))
        .map(|l| act8(&l.name))
        .collect();
    let ctx = ForwardCtx {
        overrides: Some(&linear),
        capture: None,
        timer: None,
    };
    let batch = model
        .forward(&model.tokenize(&SENTENCES).unwrap(), &ctx)
        .unwrap();
    let plain = model
        .forward(&model.tokenize(&SENTENCES).unwrap(), &ForwardCtx::default())
        .unwrap();
    assert!(
        max_abs_diff(&batch, &plain) > OVERRIDE_EFFECT_MIN,
        "act8-dynamic changed nothing"
    );
    for i in 0..SENTENCES.len() {
        let alone = model
            .forward(&model.tokenize(&SENTENCES[i..=i]).unwrap(), &ctx)
            .unwrap();
        let d = max_abs_diff(&alone, &batch.narrow(0, i, 1).unwrap());
        assert!(d < SAME_EMBEDDING_TOL, "sentence {i}: {d} from its batch");
    }
    let ids: Overrides = [act8("embeddings.word_embeddings")].into_iter().collect();
    let err = model
        .forward(
            &model.tokenize(&SENTENCES).unwrap(),
            &ForwardCtx {
                overrides: Some(&ids),
                capture: None,
                timer: None,
            },
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("integer input"), "{err}");
}

#[test]
fn captured_inputs_are_the_real_tokens() {
    let dir = Dir::new();
    let model = BertEncoder::load(&tiny_folder(&dir)).unwrap();
    let batch = model.tokenize(&SENTENCES).unwrap();
    let Batch::Tokens { mask, .. } = &batch else {
        panic!()
    };
    let tokens = mask.sum_all().unwrap().to_scalar::<u32>().unwrap() as usize;
    assert!(tokens < 3 * mask.dim(1).unwrap(), "the batch has padding");
    let layers = model
        .inventory()
        .layers
        .iter()
        .map(|l| l.name.clone())
        .collect::<Vec<_>>();
    let capture = Mutex::new(
        layers
            .iter()
            .map(|n| (n.clone(), Vec::new()))
            .collect::<HashMap<_, _>>(),
    );
    model
        .forward(
            &batch,
            &ForwardCtx {
                overrides: None,
                capture: Some(&capture),
                timer: None,
            },
        )
        .unwrap();
    let got = capture.into_inner().unwrap();
    for layer in &model.inventory().layers {
        let inputs = &got[&layer.name];
        assert_eq!(inputs.len(), 1, "{}: one call per forward", layer.name);
        let x = &inputs[0];
        if layer.name.starts_with("embeddings.") {
            assert_eq!(
                (x.dims(), x.dtype()),
                (&[tokens][..], DType::U32),
                "{}: the ids looked up",
                layer.name
            );
        } else {
            assert_eq!(
                x.dims(),
                [tokens, layer.shape[1]],
                "{}: [real tokens, in_features]",
                layer.name
            );
        }
    }
    let words: Vec<u32> = got["embeddings.word_embeddings"][0].to_vec1().unwrap();
    assert_eq!(&words[..4], [2, 4, 6, 8], "[CLS] the cat sat");
}

#[test]
fn inventory_drops_the_pooler_and_keeps_a_bert_prefix() {
    let dir = Dir::new();
    let plain = BertEncoder::load(&tiny_folder(&dir)).unwrap();
    let inv = plain.inventory();
    assert_eq!(inv.layers.len(), 3 + 6 * LAYERS);
    assert!(inv.layers.iter().all(|l| !l.name.starts_with("pooler")));
    assert_eq!(inv.kind, mpsearch::model::ModelKind::Encoder);

    let dir2 = Dir::new();
    let spoil = Spoil {
        prefix: "bert.",
        ..Default::default()
    };
    let prefixed = BertEncoder::load(&tiny_folder_with(&dir2, spoil)).unwrap();
    let names: Vec<&str> = prefixed
        .inventory()
        .layers
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    assert!(
        names.contains(&"bert.encoder.layer.1.output.dense"),
        "{names:?}"
    );
    assert!(prefixed.weight("bert.embeddings.word_embeddings").is_ok());
    let err = prefixed
        .weight("encoder.layer.1.output.dense")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no compressible layer `encoder.layer.1.output.dense`"),
        "{err}"
    );
    // Same tensors under another name: same embeddings.
    let batch = plain.tokenize(&SENTENCES).unwrap();
    let a = plain.forward(&batch, &ForwardCtx::default()).unwrap();
    let b = prefixed.forward(&batch, &ForwardCtx::default()).unwrap();
    assert!(max_abs_diff(&a, &b) < SAME_EMBEDDING_TOL);
}

#[test]
fn fingerprint_follows_the_files_and_the_truncation() {
    let dir = Dir::new();
    let folder = tiny_folder(&dir);
    let a = BertEncoder::load(&folder).unwrap();
    assert_eq!(
        a.fingerprint(),
        BertEncoder::load(&folder).unwrap().fingerprint()
    );
    let shorter = BertEncoder::load(&folder)
        .unwrap()
        .with_max_tokens(8)
        .unwrap();
    assert_ne!(a.fingerprint(), shorter.fingerprint());
    // One weight changed.
    let mut t = tiny_tensors(Spoil::default());
    let w = t["encoder.layer.0.output.dense.bias"].clone();
    t.insert(
        "encoder.layer.0.output.dense.bias".into(),
        (w + 1e-3).unwrap(),
    );
    candle_core::safetensors::save(&t, folder.join("model.safetensors")).unwrap();
    assert_ne!(
        a.fingerprint(),
        BertEncoder::load(&folder).unwrap().fingerprint()
    );
}

#[test]
fn sentence_transformers_pipeline_decides_normalisation_and_pooling() {
    let dir = Dir::new();
    let folder = tiny_folder(&dir);
    let modules = |normalize: bool| {
        let mut m = vec![
            serde_json::json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
            serde_json::json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
        ];
        if normalize {
            m.push(serde_json::json!({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}));
        }
        serde_json::Value::Array(m).to_string()
    };
    std::fs::write(folder.join("modules.json"), modules(false)).unwrap();
    std::fs::create_dir_all(folder.join("1_Pooling")).unwrap();
    let pooling = |mean: bool, cls: bool| {
        serde_json::json!({"word_embedding_dimension": HIDDEN, "pooling_mode_mean_tokens": mean, "pooling_mode_cls_token": cls})
            .to_string()
    };
    std::fs::write(folder.join("1_Pooling/config.json"), pooling(true, false)).unwrap();
    let model = BertEncoder::load(&folder).unwrap();
    assert!(!model.normalizes());
    let out = model
        .forward(&model.tokenize(&SENTENCES).unwrap(), &ForwardCtx::default())
        .unwrap();
    let norms: Vec<f32> = out
        .sqr()
        .unwrap()
        .sum(1)
        .unwrap()
        .sqrt()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(
        norms.iter().any(|n| (n - 1.0).abs() > UNNORMALISED_MIN),
        "not normalised: {norms:?}"
    );

    std::fs::write(folder.join("modules.json"), modules(true)).unwrap();
    assert!(BertEncoder::load(&folder).unwrap().normalizes());

    std::fs::write(folder.join("1_Pooling/config.json"), pooling(false, true)).unwrap();
    let err = load_err(&folder);
    assert!(
        err.contains("1_Pooling/config.json") && err.contains("mean pooling only"),
        "{err}"
    );
}

#[test]
fn images_are_refused() {
    let dir = Dir::new();
    let model = BertEncoder::load(&tiny_folder(&dir)).unwrap();
    let images = Batch::Images(Tensor::zeros((1, 1, 8, 8), DType::F32, &Device::Cpu).unwrap());
    let err = model
        .forward(&images, &ForwardCtx::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("token batches"), "{err}");
    let ids = Tensor::new(&[[2u32, VOCAB as u32, 3]], &Device::Cpu).unwrap();
    let mask = Tensor::ones((1, 3), DType::U32, &Device::Cpu).unwrap();
    let err = model
        .forward(&Batch::Tokens { ids, mask }, &ForwardCtx::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("token id {VOCAB}")), "{err}");
}

// ---- errors -------------------------------------------------------------------------------------

#[test]
fn a_missing_folder_or_config_is_named() {
    let dir = Dir::new();
    let err = load_err(&dir.path().join("nowhere"));
    assert!(
        err.contains("nowhere") && err.contains("is not a folder"),
        "{err}"
    );

    let folder = tiny_folder(&dir);
    std::fs::remove_file(folder.join("config.json")).unwrap();
    let err = load_err(&folder);
    assert!(
        err.contains("config.json") && err.contains("cannot read"),
        "{err}"
    );

    std::fs::write(folder.join("config.json"), "{ not json").unwrap();
    let err = load_err(&folder);
    assert!(
        err.contains("config.json") && err.contains("not a BERT config"),
        "{err}"
    );

    let mut c = config_json();
    c.as_object_mut().unwrap().remove("hidden_size");
    std::fs::write(folder.join("config.json"), c.to_string()).unwrap();
    let err = load_err(&folder);
    assert!(
        err.contains("config.json") && err.contains("hidden_size"),
        "{err}"
    );

    let mut c = config_json();
    c["hidden_act"] = "relu".into();
    std::fs::write(folder.join("config.json"), c.to_string()).unwrap();
    let err = load_err(&folder);
    assert!(
        err.contains("config.json") && err.contains("hidden_act is `relu`"),
        "{err}"
    );

    let mut c = config_json();
    c["num_attention_heads"] = 3.into();
    std::fs::write(folder.join("config.json"), c.to_string()).unwrap();
    let err = load_err(&folder);
    assert!(
        err.contains("not a multiple of num_attention_heads 3"),
        "{err}"
    );
}

#[test]
fn a_truncated_or_corrupted_safetensors_is_named() {
    let dir = Dir::new();
    let folder = tiny_folder(&dir);
    let path = folder.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let err = load_err(&folder);
    assert!(
        err.contains("model.safetensors") && err.contains("truncated"),
        "{err}"
    );

    std::fs::write(&path, b"this is not a safetensors file at all").unwrap();
    let err = load_err(&folder);
    assert!(
        err.contains("model.safetensors") && err.contains("safetensors"),
        "{err}"
    );

    std::fs::remove_file(&path).unwrap();
    let err = load_err(&folder);
    assert!(err.contains("no model.safetensors"), "{err}");
}

#[test]
fn a_missing_or_mismatched_tokenizer_is_named() {
    let dir = Dir::new();
    let folder = tiny_folder(&dir);
    std::fs::remove_file(folder.join("tokenizer.json")).unwrap();
    let err = load_err(&folder);
    assert!(
        err.contains("tokenizer.json") && err.contains("missing"),
        "{err}"
    );

    std::fs::write(folder.join("tokenizer.json"), "{}").unwrap();
    let err = load_err(&folder);
    assert!(
        err.contains("tokenizer.json") && err.contains("not a valid tokenizers file"),
        "{err}"
    );

    let dir = Dir::new();
    let folder = tiny_folder_with(
        &dir,
        Spoil {
            extra_tokenizer_words: 5,
            ..Default::default()
        },
    );
    let err = load_err(&folder);
    assert!(
        err.contains("tokenizer.json")
            && err.contains("does not match")
            && err.contains(&format!("{} tokens", VOCAB + 5)),
        "{err}"
    );
}

#[test]
fn missing_and_misshaped_tensors_are_named_with_both_shapes() {
    let dir = Dir::new();
    let spoil = Spoil {
        skip_tensor: Some("encoder.layer.1.attention.self.key.weight"),
        ..Default::default()
    };
    let err = load_err(&tiny_folder_with(&dir, spoil));
    assert!(
        err.contains("model.safetensors")
            && err.contains("`encoder.layer.1.attention.self.key.weight`")
            && err.contains("[8, 8]"),
        "{err}"
    );

    let dir = Dir::new();
    let spoil = Spoil {
        word_rows: Some(VOCAB + 3),
        extra_tokenizer_words: 3,
        ..Default::default()
    };
    let err = load_err(&tiny_folder_with(&dir, spoil));
    assert!(
        err.contains("`embeddings.word_embeddings.weight`")
            && err.contains(&format!("[{}, {HIDDEN}]", VOCAB + 3))
            && err.contains(&format!("[{VOCAB}, {HIDDEN}]")),
        "{err}"
    );
}

/// The encoders' distillation probe (`--importance` on an encoder) estimates the curvature of the
/// distillation loss at the f32 model: the mean of `(Jᵀε)²` over seeded probes is `diag(JᵀJ)`, `J` the
/// Jacobian of the normalised embedding with respect to a layer's weights — here held against `J` by
/// central finite differences, weight by weight, on one layer of the tiny BERT.
#[test]
fn the_distillation_probe_estimates_the_gauss_newton_diagonal() {
    use mpsearch::model::gradients::{chunk_gradients, CalibrationLoss};
    /// Probes (chunks of the same sentence, each with its own ε): the estimate's relative spread per
    /// weight is about √(2/PROBES) = 3.5%.
    const PROBES: usize = 1600;
    const STEP: f32 = 1e-3;
    let dir = Dir::new();
    let model = BertEncoder::load(&tiny_folder(&dir)).unwrap();
    let one = model.tokenize(&SENTENCES[..1]).unwrap();
    let layer = "encoder.layer.1.attention.self.value";
    let index = (model.inventory().layers.iter())
        .position(|l| l.name == layer)
        .unwrap();
    let w = model.weight(layer).unwrap();
    let n = w.elem_count();
    let mut estimate = vec![0.0f64; n];
    chunk_gradients(
        &model,
        &vec![one.clone(); PROBES],
        CalibrationLoss::Distillation,
        1,
        &mut |i, g, _| {
            if i == index {
                for (e, x) in estimate.iter_mut().zip(g) {
                    *e += f64::from(*x).powi(2) / PROBES as f64;
                }
            }
            Ok(())
        },
        &mut |_, _| {},
    )
    .unwrap();
    let normalised = |t: Tensor| -> Vec<f64> {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        v.iter().map(|x| f64::from(*x) / norm).collect()
    };
    let flat: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
    let exact: Vec<f64> = (0..n)
        .map(|k| {
            let at = |d: f32| {
                let mut v = flat.clone();
                v[k] += d;
                let t = Tensor::from_vec(v, w.dims(), &Device::Cpu).unwrap();
                normalised(forward_with_weight(&model, &one, layer, t).unwrap())
            };
            let (plus, minus) = (at(STEP), at(-STEP));
            (plus.iter().zip(&minus))
                .map(|(p, m)| ((p - m) / (2.0 * f64::from(STEP))).powi(2))
                .sum()
        })
        .collect();
    let (se, sx): (f64, f64) = (estimate.iter().sum(), exact.iter().sum());
    assert!(
        (se - sx).abs() <= 0.05 * sx,
        "Σ diag: probe {se} against finite differences {sx}"
    );
    // Weight by weight: the probe follows the exact diagonal (Pearson over the layer's weights).
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (me, mx) = (mean(&estimate), mean(&exact));
    let cov: f64 = (estimate.iter().zip(&exact))
        .map(|(e, x)| (e - me) * (x - mx))
        .sum();
    let var = |v: &[f64], m: f64| v.iter().map(|x| (x - m).powi(2)).sum::<f64>();
    let r = cov / (var(&estimate, me) * var(&exact, mx)).sqrt();
    assert!(r > 0.95, "correlation {r}");
    eprintln!("probe vs finite differences: Σ {se:.4e} / {sx:.4e}, correlation {r:.4}");
}
