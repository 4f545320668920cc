//! Search-space files, assignments and the canonical hash.

use mpsearch::space::{file, Assignment, Choice, LayerStatus, SearchSpace};

use crate::util::{choice, toy_layers, Dir};

const HEAD: &str = "[space]\nname = \"toy\"\n";

fn parse(body: &str) -> mpsearch::Result<SearchSpace> {
    file::parse(&format!("{HEAD}{body}"), "toy.toml", &toy_layers())
}

/// Asserts that `body` is refused with a message at `line:column` containing every one of `needles`.
fn refused_at(body: &str, line: usize, column: usize, needles: &[&str]) {
    let err = parse(body).expect_err("accepted").to_string();
    let place = format!("toy.toml:{line}:{column}:");
    assert!(
        err.starts_with(&place),
        "expected {place} in:\n{err}\n--- file\n{HEAD}{body}"
    );
    for n in needles {
        assert!(err.contains(n), "expected `{n}` in:\n{err}");
    }
}

#[test]
fn defaults_make_a_product_and_overrides_replace_fields() {
    let s = parse(
        "[defaults]\nfloat = [\"f32\"]\nbits = [8, 4]\nschemes = [\"sym\", \"asym\"]\nsparsity = [0.0, 0.5]\n\
         [[layer]]\nmatch = '^head$'\nbits = [8]\nsparsity = [0.0]\n",
    )
    .unwrap();
    // (f32 + 2 bits × 2 schemes) × (dense, sparse50) = 10
    assert_eq!(s.groups[0].choices.len(), 10);
    let head = s.groups.iter().find(|g| g.name == "head").unwrap();
    let names: Vec<String> = head.choices.iter().map(|c| c.to_string()).collect();
    assert_eq!(names, ["f32", "int8-sym-channel", "int8-asym-channel"]);
}

#[test]
fn groups_pins_and_exclusions() {
    let s = parse(
        "exclude = ['^head$']\n[defaults]\nbits = [8, 4]\n\
         [[group]]\nmatch = '^block\\.(\\d+)\\.[qkv]$'\n\
         [[pin]]\nmatch = 'block\\.1\\.ffn'\nchoice = \"int8-sym-channel\"\n",
    )
    .unwrap();
    // q/k/v of each block share one group: 2 groups + 2 ffn + head = 5.
    assert_eq!(s.groups.len(), 5);
    let qkv0 = &s.groups[s.layers[0].group];
    assert_eq!(qkv0.members, vec![0, 1, 2]);
    assert_ne!(
        s.layers[0].group, s.layers[4].group,
        "blocks 0 and 1 are separate groups"
    );
    let head = s.layers.iter().find(|l| l.info.name == "head").unwrap();
    assert_eq!(head.status, LayerStatus::Excluded);
    assert_eq!(s.groups[head.group].choices, vec![Choice::F32]);
    let ffn1 = s
        .layers
        .iter()
        .find(|l| l.info.name == "block.1.ffn")
        .unwrap();
    assert_eq!(ffn1.status, LayerStatus::Pinned);
    assert_eq!(s.searchable_groups().count(), 3);
}

#[test]
fn explicit_choices_list() {
    let s = parse(
        "[defaults]\nchoices = [\"int4-asym-g32+2:4\", \"f32\", \"int8-sym-channel+rank50\"]\n",
    )
    .unwrap();
    let names: Vec<String> = s.groups[0].choices.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        names,
        ["f32", "int4-asym-g32+2:4", "int8-sym-channel+rank50"]
    );
}

#[test]
fn out_of_range_values_are_refused_at_their_file_line_and_column() {
    refused_at(
        "[defaults]\nbits = [8, 9]\n",
        4,
        12,
        &["bits: 9 is outside 2..=8"],
    );
    refused_at(
        "[defaults]\nsparsity = [0.0, 1.0]\n",
        4,
        18,
        &["sparsity: 1 is outside [0, 1)"],
    );
    refused_at(
        "[defaults]\nsparsity = [-0.5]\n",
        4,
        13,
        &["outside [0, 1)"],
    );
    refused_at("[defaults]\nnm = [\"4:4\"]\n", 4, 7, &["1 <= N < M"]);
    refused_at("[defaults]\nnm = [\"5:4\"]\n", 4, 7, &["N:M pattern"]);
    refused_at(
        "[defaults]\nrank = [1.0, 0.0]\n",
        4,
        14,
        &["rank: 0 is outside (0, 1]"],
    );
    refused_at("[defaults]\nrank = [1.5]\n", 4, 9, &["outside (0, 1]"]);
    refused_at(
        "[defaults]\nsparsity = [0.125]\n",
        4,
        13,
        &["not a whole percent"],
    );
    refused_at(
        "[defaults]\ngranularity = [\"g1\"]\n",
        4,
        16,
        &["granularity: `g1` is not allowed"],
    );
}

/// The toy layers with a word-embedding table in front, whose input is token ids.
fn with_embedding() -> Vec<mpsearch::space::LayerInfo> {
    let mut layers = toy_layers();
    layers.insert(
        0,
        mpsearch::space::LayerInfo {
            name: "embeddings.word".into(),
            kind: mpsearch::space::LayerKind::Embedding,
            shape: vec![1000, 64],
            macs: 0,
            bias: false,
        },
    );
    layers
}

fn parse_with_embedding(body: &str) -> mpsearch::Result<SearchSpace> {
    file::parse(&format!("{HEAD}{body}"), "toy.toml", &with_embedding())
}

/// Asserts that `body` (with an embedding among the layers) is refused at `line:column` with a
/// message naming the embedding and the act8 choice.
fn act8_refused_at(body: &str, line: usize, column: usize, act: &str) {
    let err = parse_with_embedding(body)
        .expect_err("act8 on an embedding accepted")
        .to_string();
    let place = format!("toy.toml:{line}:{column}:");
    assert!(
        err.starts_with(&place),
        "expected {place} in:\n{err}\n--- file\n{HEAD}{body}"
    );
    for needle in [
        "`embeddings.word` is an embedding",
        "token ids",
        act,
        "activations = [\"none\"]",
    ] {
        assert!(err.contains(needle), "expected `{needle}` in:\n{err}");
    }
}

#[test]
fn act8_on_an_embedding_is_refused_where_it_is_written() {
    // Inherited from [defaults]: the error points at the act8 entry of the defaults' list.
    act8_refused_at(
        "[defaults]\nbits = [8]\nactivations = [\"none\", \"act8-dynamic\"]\n",
        5,
        24,
        "act8-dynamic",
    );
    // From a [[layer]] table that matches the embedding.
    act8_refused_at(
        "[defaults]\nbits = [8]\n[[layer]]\nmatch = '^embeddings'\nactivations = [\"act8-static\"]\n",
        7,
        16,
        "act8-static",
    );
    // From an explicit `choices` list, in [defaults] or in a [[layer]] table.
    act8_refused_at(
        "[defaults]\nchoices = [\"f32\", \"int8-sym-channel+act8-dynamic\"]\n",
        4,
        19,
        "act8-dynamic",
    );
    act8_refused_at(
        "[[layer]]\nmatch = 'word'\nchoices = [\"int8-sym-channel\", \"int4-sym-channel+act8-static\"]\n",
        5,
        32,
        "act8-static",
    );
    // From a pin.
    act8_refused_at(
        "[[pin]]\nmatch = 'word'\nchoice = \"int8-sym-channel+act8-dynamic\"\n",
        5,
        10,
        "act8-dynamic",
    );
    // Accepted: the embedding overridden to `none`, or excluded, while the other layers keep act8.
    let body = "[defaults]\nbits = [8]\nactivations = [\"none\", \"act8-dynamic\"]\n";
    for fix in [
        "[[layer]]\nmatch = '^embeddings'\nactivations = [\"none\"]\n",
        "[[layer]]\nmatch = '^embeddings'\nchoices = [\"int8-sym-channel\"]\n",
    ] {
        let s = parse_with_embedding(&format!("{body}{fix}")).unwrap();
        let emb = &s.groups[s.layers[0].group];
        assert!(emb
            .choices
            .iter()
            .all(|c| c.act == mpsearch::space::ActQuant::None));
        let head = &s.groups[s.layers.last().unwrap().group];
        assert!(head
            .choices
            .iter()
            .any(|c| c.act != mpsearch::space::ActQuant::None));
    }
    let s = file::parse(
        &format!("[space]\nname = \"toy\"\nexclude = ['^embeddings']\n{body}"),
        "toy.toml",
        &with_embedding(),
    )
    .unwrap();
    assert_eq!(s.layers[0].status, LayerStatus::Excluded);
}

#[test]
fn unknown_fields_and_bad_syntax_are_refused_at_their_file_line_and_column() {
    refused_at(
        "[defaults]\nbitz = [8]\n",
        4,
        1,
        &["unknown field `bitz`", "bits"],
    );
    refused_at("[defaults]\nbits = [8\n", 4, 10, &[]);
}

#[test]
fn patterns_pins_groups_and_empty_sets_are_refused_at_their_file_line_and_column() {
    refused_at(
        "[[layer]]\nmatch = '^nope$'\nbits = [8]\n",
        4,
        9,
        &["matches no layer", "block.0.q"],
    );
    refused_at(
        "[[layer]]\nmatch = '('\n",
        4,
        9,
        &["not a valid regular expression"],
    );
    refused_at(
        "[[pin]]\nmatch = 'head'\nchoice = \"int4-sym-g7x\"\n",
        5,
        10,
        &["granularity `g7x`"],
    );
    refused_at(
        "[defaults]\nfloat = []\nbits = []\n",
        3,
        1,
        &["empty choice set"],
    );
    refused_at(
        "[defaults]\nbits = [8]\n[[layer]]\nmatch = 'ffn'\nactivations = []\n",
        6,
        9,
        &["empty choice set", "block.0.ffn"],
    );
    refused_at(
        "exclude = ['nothing-here']\n",
        3,
        12,
        &["exclude pattern", "matches no layer"],
    );
    refused_at(
        "exclude = ['head']\n[[pin]]\nmatch = 'head'\nchoice = \"f16\"\n",
        3,
        12,
        &["both pinned and excluded"],
    );
    refused_at(
        "[[group]]\nmatch = 'q$'\n[[group]]\nmatch = 'block.0.q'\n",
        6,
        9,
        &["belongs to one group"],
    );
}

#[test]
fn a_group_without_common_choices_is_refused() {
    let err = parse(
        "[defaults]\nbits = [8]\n[[group]]\nmatch = '^block\\.0\\.'\n\
         [[layer]]\nmatch = 'block\\.0\\.ffn'\nfloat = []\nbits = [4]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("toy.toml: group `block.0.q`"), "{err}");
    assert!(err.contains("no choice in common"), "{err}");
}

#[test]
fn unknown_top_level_and_missing_files() {
    let err = file::parse("[space]\nname='x'\n[defaultz]\n", "a.toml", &toy_layers())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("a.toml:3:2:") && err.contains("unknown field `defaultz`"),
        "{err}"
    );
    let err = file::load(
        std::path::Path::new("/nonexistent/space.toml"),
        &toy_layers(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("/nonexistent/space.toml"), "{err}");
}

fn toy_space() -> SearchSpace {
    parse(
        "exclude = ['^head$']\n[defaults]\nbits = [8, 4]\ngranularity = [\"channel\", \"g32\"]\nnm = [\"2:4\"]\n\
         [[group]]\nmatch = '^block\\.(\\d+)\\.[qkv]$'\n",
    )
    .unwrap()
}

#[test]
fn assignment_json_fills_defaults_and_checks_everything() {
    let s = toy_space();
    let a = s
        .parse_assignment(
            r#"{"default": "int8-sym-channel", "layers": {"block.1.ffn": "int4-sym-g32+2:4"}}"#,
            None,
        )
        .unwrap();
    assert_eq!(a.len(), 9);
    assert_eq!(a.get("block.0.q").unwrap().to_string(), "int8-sym-channel");
    assert_eq!(
        a.get("block.1.ffn").unwrap().to_string(),
        "int4-sym-g32+2:4"
    );
    assert_eq!(
        a.get("head"),
        Some(&Choice::F32),
        "excluded layers stay f32"
    );
    // The JSON form re-loads to the same assignment.
    let back = s.parse_assignment(&a.to_json_string(), None).unwrap();
    assert_eq!(back, a);
    assert_eq!(back.hash_hex(), a.hash_hex());
    // A point round-trips too.
    assert_eq!(s.assignment(&s.point(&a).unwrap()), a);

    let bad = |json: &str, needles: &[&str]| {
        let e = s
            .parse_assignment(json, Some("a.json"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("assignment a.json: "), "{e}");
        for n in needles {
            assert!(e.contains(n), "expected `{n}` in: {e}");
        }
    };
    bad(
        r#"{"default": "f32", "layers": {"block.0.qq": "f32"}}"#,
        &["unknown layer `block.0.qq`", "`block.0.q`"],
    );
    bad(
        r#"{"default": "int2-sym-channel"}"#,
        &[
            "`int2-sym-channel` (from \"default\") is not allowed",
            "int8-sym-channel",
        ],
    );
    bad(
        r#"{"default": "f32", "layers": {"head": "int8-sym-channel"}}"#,
        &["layer `head`", "allowed: f32"],
    );
    bad(
        r#"{"default": "f32", "layers": {"block.0.q": "int8-sym-channel"}}"#,
        &["one group", "block.0.k"],
    );
    bad(
        r#"{"layers": {"block.0.q": "f32"}}"#,
        &["has no choice", "default"],
    );
    bad(
        r#"{"default": "int8-sym-chanel"}"#,
        &["granularity `chanel`"],
    );
    bad(
        r#"{"default": "f32", "extra": 1}"#,
        &["unknown field `extra`"],
    );
    bad("{not json", &["not valid assignment JSON"]);
}

#[test]
fn canonical_encoding_and_hash_are_pinned() {
    let a = Assignment::new([
        (
            "fc1".to_string(),
            "int4-asym-g32+2:4+rank50".parse().unwrap(),
        ),
        ("conv1".to_string(), "int8-sym-channel".parse().unwrap()),
        ("fc2".to_string(), Choice::F32),
    ]);
    assert_eq!(
        String::from_utf8(a.canonical_bytes()).unwrap(),
        "mpsearch-assignment-v1\nconv1\tint8-sym-channel\nfc1\tint4-asym-g32+2:4+rank50\nfc2\tf32\n"
    );
    // Pinned: this hash keys every stored evaluation. If it changes, stored caches are orphaned.
    assert_eq!(a.hash_hex(), PINNED_HASH);
}

/// BLAKE3 of the encoding above, checked independently with the Python `blake3` package.
const PINNED_HASH: &str = "9066216af0ad7425ea881f1fc94a67e075df57220c13fcadb79db530f192da95";

#[test]
fn every_choice_of_the_shipped_spaces_round_trips() {
    let inv = mpsearch::model::inventory(&mpsearch::model::ModelSource::Demo).unwrap();
    let s = mpsearch::shipped::space("demo", &inv.layers).unwrap();
    let mut n = 0;
    for g in &s.groups {
        for c in &g.choices {
            let text = c.to_string();
            assert_eq!(text.parse::<Choice>().unwrap(), *c, "{text}");
            n += 1;
        }
    }
    assert!(n > 100, "{n} choices");
}

#[test]
fn bert_base_fits_a_minilm_shaped_folder() {
    let dir = Dir::new();
    let folder = crate::util::minilm_folder(&dir);
    let inv = mpsearch::model::inventory(&mpsearch::model::ModelSource::Folder(folder)).unwrap();
    // 3 embeddings + 6 × 6 linear; the pooler is never run by an encoder.
    assert_eq!(inv.layers.len(), 39);
    assert!(inv.layers.iter().all(|l| !l.name.starts_with("pooler")));
    // Natural order: layer 2 before layer 10 would hold; names within a block sort alphabetically.
    assert_eq!(inv.layers[0].name, "embeddings.position_embeddings");
    assert!(inv
        .layers
        .iter()
        .any(|l| l.name == "encoder.layer.5.attention.self.query"));
    let s = mpsearch::shipped::space("bert-base", &inv.layers).unwrap();
    // 6 blocks × (qkv + attention.output + intermediate + output) + word embeddings + 2 excluded.
    assert_eq!(s.groups.len(), 6 * 4 + 3);
    let word_layer = s
        .layers
        .iter()
        .find(|l| l.info.name == "embeddings.word_embeddings")
        .unwrap();
    let word = &s.groups[word_layer.group];
    assert!(word
        .choices
        .iter()
        .all(|c| c.sparsity == mpsearch::space::Sparsity::None));
    // Its input is token ids: never activation-quantized (the loader would refuse the space).
    assert!(word
        .choices
        .iter()
        .all(|c| c.act == mpsearch::space::ActQuant::None));
    assert_eq!(
        s.layers[0].status,
        LayerStatus::Excluded,
        "position embeddings"
    );
}

#[test]
fn baselines_of_the_demo_space_are_the_uniform_references_it_allows() {
    use mpsearch::space::{Choice, Sparsity, WeightQuant};
    let inv = mpsearch::model::inventory(&mpsearch::model::ModelSource::Demo).unwrap();
    let space = mpsearch::shipped::space("demo", &inv.layers).unwrap();
    let b = space.baselines();
    let labels: Vec<&str> = b.iter().map(|x| x.0.as_str()).collect();
    assert_eq!(
        labels,
        ["all-f32", "all-f16", "all-int8", "all-int4", "all-2:4"]
    );
    for (label, choice, a) in &b {
        // Every baseline is an assignment the space allows.
        let p = space.point(a).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(&space.assignment(&p), a);
        match label.as_str() {
            "all-f32" => assert!(a.iter().all(|(_, c)| c.is_uncompressed())),
            "all-f16" => assert!(a.iter().all(|(_, c)| c.to_string() == "f16")),
            "all-int8" | "all-int4" => {
                let bits = if label == "all-int8" { 8 } else { 4 };
                assert!(matches!(choice.weights, WeightQuant::Int { bits: b, .. } if b == bits));
                assert!(
                    a.iter().all(|(_, c)| c == choice),
                    "{label}: every demo layer allows it"
                );
            }
            _ => {
                assert_eq!(choice.sparsity, Sparsity::NM { n: 2, m: 4 });
                // conv1 and fc2 allow no 2:4: they stay f32.
                assert_eq!(a.get("conv1"), Some(&Choice::F32));
                assert_eq!(a.get("fc2"), Some(&Choice::F32));
                assert_eq!(a.get("fc1"), Some(choice));
            }
        }
    }
}

/// A GGML block format is offered where its blocks fit every factor's in-features, combined only with
/// the parts it takes; what `[defaults]` offered a layer that cannot take it is left out and recorded.
#[test]
fn ggml_formats_are_offered_only_where_their_blocks_fit() {
    let s = parse(
        "[defaults]\nfloat = [\"f32\"]\nggml = [\"q8_0\", \"q4_k\", \"q5_0\"]\n\
         activations = [\"none\", \"act8-dynamic\"]\nsparsity = [0.0, 0.5]\nchannels = [0.25]\n\
         rank = [1.0, 0.5]\n",
    )
    .unwrap();
    // block.0.ffn is 256 × 64: rank50 keeps k = 32. f32 takes every part (2 × 3 × 2 = 12); q8_0
    // takes no act8 and no sparse50 (2 × 2 = 4, k = 32 fits its 32-blocks); q5_0 needs 64 in-features
    // per factor (its 32-blocks in pairs): full rank only (2); q4_k needs 256: nothing.
    let ffn = s.groups.iter().find(|g| g.name == "block.0.ffn").unwrap();
    let ggml: Vec<String> = ffn
        .choices
        .iter()
        .filter(|c| c.weights.ggml().is_some())
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        ggml,
        [
            "q8_0",
            "q8_0+rank50",
            "q8_0+channels25",
            "q8_0+channels25+rank50",
            "q5_0",
            "q5_0+channels25"
        ]
    );
    assert_eq!(ffn.choices.len(), 12 + 6);
    let dropped: Vec<(String, &str)> = s
        .dropped
        .iter()
        .filter(|d| d.layer == "block.0.ffn")
        .map(|d| (d.choice.to_string(), d.why.as_str()))
        .collect();
    assert_eq!(dropped.len(), 4 + 2, "{dropped:?}");
    assert!(dropped
        .iter()
        .filter(|(c, _)| c.starts_with("q4_k"))
        .all(|(_, why)| why.contains("multiple of 256") && why.contains("has 64")));
    let (_, why) = dropped.iter().find(|(c, _)| c == "q5_0+rank50").unwrap();
    assert!(
        why.contains("k = 32") && why.contains("multiple of 64"),
        "{why}"
    );
    // A [[layer]] table that changes only the rank inherits the formats from [defaults]: what no
    // longer fits is left out quietly there too.
    let s = parse(
        "[defaults]\nggml = [\"q5_0\"]\n[[layer]]\nmatch = '^head$'\nrank = [0.5]\nfloat = [\"f32\"]\n",
    )
    .unwrap();
    let head = s.groups.iter().find(|g| g.name == "head").unwrap();
    assert_eq!(head.choices, vec![choice("f32+rank50")]);
}

/// Asked for by a `[[layer]]` table or a pin for a layer it does not fit, a GGML format is refused at
/// the entry, naming the layer and the block rule.
#[test]
fn a_ggml_format_asked_for_a_layer_it_does_not_fit_is_refused_where_it_is_asked() {
    refused_at(
        "[[layer]]\nmatch = '^head$'\nggml = [\"q8_0\", \"q4_k\"]\n",
        5,
        17,
        &["`head`", "cannot take `q4_k`", "multiple of 256", "has 64"],
    );
    refused_at(
        "[[layer]]\nmatch = '^head$'\nchoices = [\"f32\", \"q8_0+rank50\"]\n",
        5,
        19,
        &["`head`", "q8_0+rank50", "k = 5", "multiple of 32"],
    );
    refused_at(
        "[[pin]]\nmatch = '^head$'\nchoice = \"q5_1+rank50\"\n",
        5,
        10,
        &["`head`", "q5_1+rank50", "k = 5", "multiple of 64"],
    );
    refused_at(
        "[defaults]\nfloat = []\nggml = [\"q4_k\"]\n",
        3,
        1,
        &["`block.0.q`", "empty choice set", "q4_k left out"],
    );
    refused_at(
        "[defaults]\nfloat = [\"q4_k\"]\n",
        4,
        10,
        &["GGML block formats go in `ggml`"],
    );
}

/// On a MiniLM-shaped encoder (384 wide, 1536 in the FFN), the shipped `ggml` space offers every
/// format that fits: the legacy ones everywhere, the K-types only on the FFN down projections; the
/// position and token-type tables stay f32 as llama.cpp leaves them; its uniform baselines are the
/// formats every layer takes.
#[test]
fn the_ggml_space_fits_a_minilm_shaped_folder() {
    let dir = Dir::new();
    let folder = crate::util::minilm_folder(&dir);
    let inv = mpsearch::model::inventory(&mpsearch::model::ModelSource::Folder(folder)).unwrap();
    let s = mpsearch::shipped::space("ggml", &inv.layers).unwrap();
    let names = |layer: &str| -> Vec<String> {
        let l = s.layers.iter().find(|l| l.info.name == layer).unwrap();
        s.groups[l.group]
            .choices
            .iter()
            .map(|c| c.to_string())
            .collect()
    };
    let legacy = ["f32", "f16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1"];
    for layer in [
        "embeddings.word_embeddings",
        "encoder.layer.0.attention.self.query",
        "encoder.layer.3.intermediate.dense",
    ] {
        let mut got = names(layer);
        got.sort();
        let mut want: Vec<String> = legacy.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "{layer}");
    }
    assert_eq!(names("encoder.layer.5.output.dense").len(), 12);
    assert_eq!(names("embeddings.position_embeddings"), ["f32"]);
    // 5 K-types left out of 31 layers of 384 in-features (q, k, v, attention output, FFN up × 6,
    // and the word embeddings).
    assert_eq!(s.dropped.len(), 5 * 31);
    assert!(s.dropped.iter().all(|d| d.why.contains("has 384")));
    let labels: Vec<String> = s.baselines().into_iter().map(|b| b.0).collect();
    assert_eq!(labels, ["all-f32", "all-f16", "all-q8_0", "all-q4_0"]);
    // Every q-format choice round-trips through the notation.
    for g in &s.groups {
        for c in &g.choices {
            assert_eq!(c.to_string().parse::<Choice>().unwrap(), *c);
        }
    }
}

/// Convolution layers for the `tucker` / `cp` keys: a 3×3 convolution with several input channels, one
/// with a single input channel, a 1×1 convolution and a linear layer.
fn conv_layers() -> Vec<mpsearch::space::LayerInfo> {
    use mpsearch::space::{LayerInfo, LayerKind};
    let l = |name: &str, kind, shape: Vec<usize>| LayerInfo {
        name: name.into(),
        kind,
        macs: shape.iter().product::<usize>() as u64 * 64,
        shape,
        bias: true,
    };
    vec![
        l("conv.a", LayerKind::Conv2d, vec![16, 1, 3, 3]),
        l("conv.b", LayerKind::Conv2d, vec![32, 16, 3, 3]),
        l("conv.pw", LayerKind::Conv2d, vec![32, 32, 1, 1]),
        l("fc", LayerKind::Linear, vec![10, 64]),
    ]
}

fn parse_convs(body: &str) -> mpsearch::Result<SearchSpace> {
    file::parse(&format!("{HEAD}{body}"), "toy.toml", &conv_layers())
}

/// `tucker` and `cp` from `[defaults]` are offered where they apply (dense float or integer weights,
/// no sparsity part) and left out quietly elsewhere, with the reason; asked for a layer they do not
/// fit by a `[[layer]]` table, a `choices` list or a pin, they are refused there, naming the layer.
#[test]
fn conv_factorizations_are_offered_only_where_they_apply() {
    let s = parse_convs(
        "[defaults]\nfloat = [\"f32\"]\nbits = [8]\nsparsity = [0.0, 0.5]\ntucker = [0.5, 0.25]\ncp = [0.25]\n",
    )
    .unwrap();
    let of = |name: &str| -> Vec<String> {
        let g = s.groups.iter().find(|g| g.name == name).unwrap();
        g.choices
            .iter()
            .filter(|c| c.conv.is_some())
            .map(|c| c.to_string())
            .collect()
    };
    assert_eq!(
        of("conv.b"),
        [
            "f32+tucker25",
            "f32+tucker50",
            "f32+cp25",
            "int8-sym-channel+tucker25",
            "int8-sym-channel+tucker50",
            "int8-sym-channel+cp25"
        ]
    );
    // One input channel: CP applies, Tucker-2 (which would be rank<P>) does not.
    assert_eq!(of("conv.a"), ["f32+cp25", "int8-sym-channel+cp25"]);
    assert!(of("conv.pw").is_empty() && of("fc").is_empty());
    let why = |layer: &str, c: &str| -> String {
        s.dropped
            .iter()
            .find(|d| d.layer == layer && d.choice.to_string() == c)
            .unwrap_or_else(|| panic!("{c} on {layer} not dropped: {:?}", s.dropped))
            .why
            .clone()
    };
    assert!(why("conv.a", "f32+tucker50").contains("1 input channel"));
    assert!(why("conv.pw", "f32+cp25").contains("1×1"));
    assert!(why("fc", "f32+tucker25").contains("linear layer"));
    let e = parse_convs("[[layer]]\nmatch = '^fc$'\ntucker = [0.5]\n")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("toy.toml:5:11:"), "{e}");
    for needle in ["`fc`", "cannot take `f32+tucker50`", "linear layer"] {
        assert!(e.contains(needle), "{needle} in {e}");
    }
    let e = parse_convs("[[layer]]\nmatch = 'pw'\nchoices = [\"f32\", \"f16+cp50\"]\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("`conv.pw`") && e.contains("1×1"), "{e}");
    let e = parse_convs("[[pin]]\nmatch = 'conv.a'\nchoice = \"f32+tucker50\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("`conv.a`") && e.contains("rank<P>"), "{e}");
    let e = parse_convs("[defaults]\ntucker = [1.0]\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("tucker: 1 is outside (0, 1)"), "{e}");
    let e = parse_convs("[defaults]\ncp = [0.001]\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("cp"), "{e}");
}
