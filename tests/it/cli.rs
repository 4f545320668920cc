//! The real binary: the JSON interfaces scripts rely on, and clear errors on bad input.

use std::path::Path;

use crate::util::{bert_tensors, describe, fails, minilm_folder, ok, run, write_safetensors, Dir};

#[test]
fn help_lists_the_commands() {
    let dir = Dir::new();
    let out = ok(dir.path(), &["--help"]);
    for cmd in ["inspect", "cost", "profiles", "calibrate"] {
        assert!(out.contains(cmd), "{cmd} missing from --help:\n{out}");
    }
}

#[test]
fn inspect_json_has_the_fixed_form() {
    let dir = Dir::new();
    let v: serde_json::Value =
        serde_json::from_str(&ok(dir.path(), &["inspect", "--json"])).unwrap();
    assert_eq!(v["model"], "demo");
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 7);
    assert_eq!(layers[0]["name"], "conv1");
    assert_eq!(layers[0]["kind"], "conv2d");
    assert_eq!(layers[0]["shape"], serde_json::json!([8, 1, 3, 3]));
    assert_eq!(layers[0]["params"], 72);
    assert_eq!(layers[0]["macs"], 72 * 28 * 28);
    assert_eq!(layers[5]["name"], "fc1");
    assert_eq!(layers[5]["shape"], serde_json::json!([256, 1568]));
    assert_eq!(layers[5]["macs"], 256 * 1568);
    assert!(
        layers[0].get("choices").is_none(),
        "choices only with --space"
    );

    let v: serde_json::Value = serde_json::from_str(&ok(
        dir.path(),
        &["inspect", "--model", "demo", "--space", "demo", "--json"],
    ))
    .unwrap();
    for l in v["layers"].as_array().unwrap() {
        let choices = l["choices"].as_array().unwrap();
        assert!(!choices.is_empty());
        for c in choices {
            let text = c.as_str().unwrap();
            let parsed: mpsearch::space::Choice = text.parse().unwrap();
            assert_eq!(parsed.to_string(), text, "choices are canonical");
        }
        assert_eq!(l["group"], l["name"], "demo has no groups");
    }
}

#[test]
fn inspect_a_hugging_face_folder_with_groups() {
    let dir = Dir::new();
    let m = minilm_folder(&dir);
    let m = m.to_str().unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(
        dir.path(),
        &["inspect", "--model", m, "--space", "bert-base", "--json"],
    ))
    .unwrap();
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 39, "no pooler: an encoder never runs it");
    let by = |n: &str| layers.iter().find(|l| l["name"] == n).unwrap().clone();
    let q = by("encoder.layer.3.attention.self.query");
    assert_eq!(q["macs"], 384 * 384);
    assert_eq!(
        q["group"],
        by("encoder.layer.3.attention.self.value")["group"]
    );
    assert_ne!(
        q["group"],
        by("encoder.layer.4.attention.self.query")["group"]
    );
    assert_eq!(by("embeddings.word_embeddings")["kind"], "embedding");
    assert_eq!(
        by("embeddings.position_embeddings")["choices"],
        serde_json::json!(["f32"])
    );
    // The table form prints totals.
    let out = ok(dir.path(), &["inspect", "--model", m]);
    assert!(out.contains("total: 22,"), "{out}");
}

#[test]
fn cost_of_an_assignment_and_of_the_baselines() {
    let dir = Dir::new();
    let a = dir.write(
        "a.json",
        r#"{"default": "int4-sym-channel", "layers": {"conv1": "int8-sym-channel"}}"#,
    );
    let args = [
        "cost",
        "--profile",
        "cortex-a76",
        "--assignment",
        a.to_str().unwrap(),
        "--json",
    ];
    let v: serde_json::Value = serde_json::from_str(&ok(dir.path(), &args)).unwrap();
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 7);
    assert_eq!(layers[0]["choice"], "int8-sym-channel");
    let sum: f64 = layers
        .iter()
        .map(|l| l["latency_us"].as_f64().unwrap())
        .sum();
    assert!((sum - v["total"]["latency_us"].as_f64().unwrap()).abs() < 1e-9);
    let out = ok(dir.path(), &["cost", "--profile", "x86-avx2"]);
    for needle in [
        "all-f32",
        "all-int8",
        "all-int4",
        "reachable range",
        "latency",
        "size",
        "bops",
    ] {
        assert!(out.contains(needle), "{needle}:\n{out}");
    }
    let out = ok(
        dir.path(),
        &["cost", "--profile", "x86-avx2", "--max-size", "1GB"],
    );
    assert!(out.contains("constrains nothing"), "{out}");
    let err = fails(
        dir.path(),
        &["cost", "--profile", "x86-avx2", "--max-latency", "1us"],
    );
    assert!(
        err.contains("impossible") && err.contains("reachable:"),
        "{err}"
    );
    let err = fails(
        dir.path(),
        &["cost", "--profile", "x86-avx2", "--max-size", "12parsecs"],
    );
    assert!(
        err.contains("--max-size") && err.contains("unknown unit"),
        "{err}"
    );
}

#[test]
fn profiles_lists_shipped_and_local_ones() {
    let dir = Dir::new();
    let text = mpsearch::shipped::Kind::Profile
        .embedded()
        .iter()
        .find(|(n, _)| *n == "cortex-a72")
        .unwrap()
        .1
        .replace("name = \"cortex-a72\"", "name = \"my-board\"");
    dir.write("hardware-profiles/my-board.toml", &text);
    let out = ok(dir.path(), &["profiles"]);
    assert!(out.lines().count() >= 8, "{out}");
    assert!(
        out.contains("jetson-orin-nano") && out.contains("shipped"),
        "{out}"
    );
    assert!(out.contains("my-board") && out.contains("local"), "{out}");
    // A local profile is usable by bare name from that folder.
    ok(dir.path(), &["cost", "--profile", "my-board"]);
}

#[test]
fn bad_input_gives_a_clear_error_naming_the_file() {
    let dir = Dir::new();
    let p = dir.path();
    let err = fails(p, &["inspect", "--space", "/nonexistent/space.toml"]);
    assert!(err.contains("/nonexistent/space.toml"), "{err}");
    let bad = dir.write("bad.toml", "[space]\nname = \"x\"\n[defaults\n");
    let err = fails(p, &["inspect", "--space", bad.to_str().unwrap()]);
    assert!(err.contains("bad.toml:3:"), "{err}");
    let err = fails(p, &["cost", "--profile", "nope"]);
    assert!(
        err.contains("no hardware profile `nope`") && err.contains("cortex-a76"),
        "{err}"
    );
    let err = fails(p, &["inspect", "--model", "missing-folder"]);
    assert!(
        err.contains("missing-folder") && err.contains("not a folder"),
        "{err}"
    );

    let m = dir.path().join("no-weights");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(m.join("config.json"), r#"{"model_type": "bert"}"#).unwrap();
    let err = fails(p, &["inspect", "--model", m.to_str().unwrap()]);
    assert!(
        err.contains("no-weights") && err.contains("model.safetensors"),
        "{err}"
    );

    write_safetensors(
        &m.join("model.safetensors"),
        &bert_tensors("", 100, 32, 64, 2),
        1000,
    );
    let err = fails(p, &["inspect", "--model", m.to_str().unwrap()]);
    assert!(
        err.contains("model.safetensors") && err.contains("truncated"),
        "{err}"
    );

    std::fs::write(m.join("model.safetensors"), b"garbage").unwrap();
    let err = fails(p, &["inspect", "--model", m.to_str().unwrap()]);
    assert!(
        err.contains("model.safetensors") && err.contains("not a safetensors file"),
        "{err}"
    );

    std::fs::write(m.join("config.json"), "{").unwrap();
    let err = fails(p, &["inspect", "--model", m.to_str().unwrap()]);
    assert!(
        err.contains("config.json") && err.contains("not valid JSON"),
        "{err}"
    );

    let a = dir.write(
        "a.json",
        r#"{"default": "int4-sym-channel", "layers": {"conv9": "f32"}}"#,
    );
    let err = fails(
        p,
        &[
            "cost",
            "--profile",
            "cortex-a76",
            "--assignment",
            a.to_str().unwrap(),
        ],
    );
    assert!(
        err.contains("a.json") && err.contains("unknown layer `conv9`"),
        "{err}"
    );

    let prof = dir.write("p.toml", "[profile]\nname = \"p\"\n");
    let err = fails(p, &["cost", "--profile", prof.to_str().unwrap()]);
    assert!(
        err.contains("p.toml") && err.contains("missing field"),
        "{err}"
    );
}

#[test]
fn a_prefixed_classifier_folder_is_a_classifier() {
    let dir = Dir::new();
    let m = dir.path().join("clf");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(
        m.join("config.json"),
        r#"{"architectures": ["BertForSequenceClassification"], "model_type": "bert"}"#,
    )
    .unwrap();
    let mut t = bert_tensors("bert.", 100, 32, 64, 2);
    t.push(("classifier.weight".into(), vec![3, 32]));
    t.push(("classifier.bias".into(), vec![3]));
    write_safetensors(&m.join("model.safetensors"), &t, 0);
    let v: serde_json::Value = serde_json::from_str(&ok(
        dir.path(),
        &[
            "inspect",
            "--model",
            m.to_str().unwrap(),
            "--space",
            "bert-base",
            "--json",
        ],
    ))
    .unwrap();
    assert_eq!(v["model_kind"], "classifier");
    assert!(v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["name"] == "classifier"));
}

/// Runs and asserts exit code 2 (a usage error, reported by clap); returns stderr.
fn usage_error(cwd: &Path, args: &[&str]) -> String {
    let out = run(cwd, args);
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit 2:\n{}",
        describe(args, &out)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_name_not_in_a_flags_list_is_a_usage_error_that_lists_the_allowed_names() {
    let dir = Dir::new();
    let cases: [(&[&str], &str); 6] = [
        (
            &["search", "--store", "s", "--strategy", "annealing"],
            "[possible values: auto, exact, evolution, bayes, random]",
        ),
        (
            &["search", "--store", "s", "--objective", "energy"],
            "[possible values: latency, size, bops]",
        ),
        (
            &["search", "--store", "s", "--scale", "percentile"],
            "[possible values: minmax, mse, output]",
        ),
        (
            &["sensitivity", "--scale", "percentile"],
            "[possible values: minmax, mse, output]",
        ),
        (
            &["eval", "--stdin", "--rounding", "awq"],
            "[possible values: rtn, gptq]",
        ),
        (
            &["eval", "--stdin", "--scale", "percentile"],
            "[possible values: minmax, mse, output]",
        ),
    ];
    for (args, allowed) in cases {
        let err = usage_error(dir.path(), args);
        let bad = args[args.len() - 1];
        assert!(
            err.contains(&format!("invalid value '{bad}'")) && err.contains(allowed),
            "{}: {err}",
            args.join(" ")
        );
    }
    assert!(
        !dir.path().join("s").exists(),
        "no search started: no store"
    );
}

/// Values clap cannot judge alone (a count that must be positive, a budget's unit, a duration, a run
/// name) are checked by mpsearch, exit 1 with a message naming the flag, and always first: before a
/// model is loaded, a store opened or anything measured. Each case names a model folder that does not
/// exist (a check after loading would report the folder instead) or the demo, and then nothing else may
/// be said: no "model … loaded", no "cost of measuring", no store folder.
#[test]
fn bad_flag_values_are_refused_before_any_work() {
    let dir = Dir::new();
    let missing = "--model=missing-folder";
    let cases: [(&[&str], &str); 14] = [
        (
            &["sensitivity", "--validate", "1"],
            "--validate needs at least 2",
        ),
        (
            &["sensitivity", missing, "--validate", "1"],
            "--validate needs at least 2",
        ),
        (
            &["sensitivity", missing, "--pairs", "0"],
            "--pairs must be at least 1",
        ),
        (
            &["eval", "--stdin", missing, "--cache-mb", "0"],
            "--cache-mb must be at least 1",
        ),
        (
            &["eval", "--stdin", missing, "--profile", "nope"],
            "no hardware profile `nope`",
        ),
        (
            &["cost", missing, "--profile", "cortex-a76", "--batch", "0"],
            "--batch must be at least 1",
        ),
        (
            &[
                "cost",
                missing,
                "--profile",
                "cortex-a76",
                "--max-latency",
                "fast",
            ],
            "--max-latency",
        ),
        (
            &["search", "--store", "s", missing, "--max-size", "12parsecs"],
            "--max-size",
        ),
        (
            &["search", "--store", "s", missing, "--time", "soon"],
            "--time `soon`",
        ),
        (
            &["search", "--store", "s", missing, "--max-drop", "0"],
            "--max-drop must be a positive",
        ),
        (&["search", "--store", "s", "--run", "a/b"], "--run `a/b`"),
        (
            &["resume", "r", "--store", "s", "--trials", "0"],
            "--trials must be at least 1",
        ),
        (
            &["resume", "r", "--store", "s", "--time", "soon"],
            "--time `soon`",
        ),
        (
            &["calibrate", "--model", "demo", "--rounds", "0"],
            "--rounds must be at least 1",
        ),
    ];
    for (args, message) in cases {
        let err = fails(dir.path(), args);
        assert!(err.contains(message), "{}: {err}", args.join(" "));
        assert_eq!(
            err.lines().count(),
            1,
            "{}: only the error is printed, nothing was loaded or run:\n{err}",
            args.join(" ")
        );
    }
    assert!(
        !dir.path().join("s").exists(),
        "no store was opened for a refused value"
    );
}

#[test]
fn a_malformed_store_url_is_refused_without_echoing_its_password() {
    let d = Dir::new();
    for args in [
        &["runs", "--store", "postgres://me:s3cret@host:notaport/db"][..],
        &["store", "copy", "postgres://me:s3cret@h:x/db", "b"][..],
    ] {
        let e = usage_error(d.path(), args);
        assert!(!e.contains("s3cret"), "the password leaked: {e}");
        assert!(
            e.contains("is not a PostgreSQL URL") && e.contains("postgres://me@"),
            "{e}"
        );
    }
    let e = usage_error(d.path(), &["runs", "--store", "ftp://x"]);
    assert!(e.contains("`ftp://` stores are not supported"), "{e}");
}

/// `inspect --space ggml` says which formats `[defaults]` offered that a layer cannot take, and why.
#[test]
fn inspect_lists_the_ggml_formats_left_out_and_why() {
    let dir = Dir::new();
    let m = minilm_folder(&dir);
    let m = m.to_str().unwrap();
    let out = ok(dir.path(), &["inspect", "--model", m, "--space", "ggml"]);
    assert!(
        out.contains("left out of [defaults] where a layer cannot take them")
            && out.contains("q4_k on 31 layers: q4_k needs in-features that are a multiple of 256"),
        "{out}"
    );
    let v: serde_json::Value = serde_json::from_str(&ok(
        dir.path(),
        &["inspect", "--model", m, "--space", "ggml", "--json"],
    ))
    .unwrap();
    let dropped = v["dropped"].as_array().unwrap();
    assert_eq!(dropped.len(), 5 * 31);
    assert!(dropped
        .iter()
        .any(|d| d["layer"] == "embeddings.word_embeddings" && d["choice"] == "q2_k"));
}

/// `calibrate --model demo` measures inside the model and writes its non-matmul work; `cost` of the
/// demo under that profile adds it once, on its own line; `--tokens` on an image model is refused.
#[test]
fn calibrating_a_model_writes_its_non_matmul_work_and_cost_adds_it() {
    let dir = Dir::new();
    ok(
        dir.path(),
        &[
            "calibrate",
            "--model",
            "demo",
            "--batch",
            "2",
            "--repetitions",
            "3",
            "--rounds",
            "1",
            "--out",
            "hardware-profiles/here.toml",
        ],
    );
    let text = std::fs::read_to_string(dir.path().join("hardware-profiles/here.toml")).unwrap();
    let file: toml::Value = toml::from_str(&text).unwrap();
    let terms = file["model"].as_array().unwrap();
    assert_eq!(
        terms
            .iter()
            .map(|t| t["batch"].as_integer().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(terms
        .iter()
        .all(|t| t["us"].as_float().unwrap() > 0.0 && t["name"].as_str() == Some("demo")));
    assert!(file["measured"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["kind"].as_str() == Some("conv2d")));

    let a = dir.write("a.json", r#"{"default": "f32"}"#);
    let cost = |profile: &str| -> serde_json::Value {
        let args = [
            "cost",
            "--profile",
            profile,
            "--assignment",
            a.to_str().unwrap(),
            "--json",
        ];
        serde_json::from_str(&ok(dir.path(), &args)).unwrap()
    };
    let v = cost("here");
    let term = v["non_matmul_us"].as_f64().unwrap();
    assert_eq!(term, terms[0]["us"].as_float().unwrap());
    let sum: f64 = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["latency_us"].as_f64().unwrap())
        .sum();
    let total = v["total"]["latency_us"].as_f64().unwrap();
    assert!(
        (total - sum - term).abs() < 1e-6 * total,
        "{total} {sum} {term}"
    );
    assert_eq!(cost("cortex-a76")["non_matmul_us"].as_f64(), Some(0.0));
    let out = ok(
        dir.path(),
        &[
            "cost",
            "--profile",
            "here",
            "--assignment",
            a.to_str().unwrap(),
        ],
    );
    assert!(out.contains("non-matmul work"), "{out}");

    let e = fails(
        dir.path(),
        &["calibrate", "--model", "demo", "--tokens", "8"],
    );
    assert!(e.contains("--tokens") && e.contains("images"), "{e}");
    let written: Vec<_> = std::fs::read_dir(dir.path().join("hardware-profiles"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        written,
        vec![std::ffi::OsString::from("here.toml")],
        "nothing else written"
    );
}
