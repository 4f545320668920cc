//! The candle evaluator and `mpsearch eval`: metrics against the f32 model, memoisation, the search
//! and held-out splits with their own content keys, and the JSON lines interface.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use mpsearch::compress::ScaleMethod;
use mpsearch::eval::{evaluation_key_on, load, CandleEvaluator, EvalSplit, Evaluator};
use mpsearch::model::ModelSource;
use mpsearch::space::{Assignment, Choice};

use crate::util::{demo_evaluator, fails, Dir};

/// The f32 demo's accuracy on its evaluation data, at least.
const MIN_ACCURACY: f64 = 0.85;
/// Largest KL divergence of all-f16 (nearly lossless) and of int8 activations, on the demo.
const F16_MAX_KL: f64 = 1e-6;
const ACT8_MAX_KL: f64 = 0.05;

/// Every layer of the model at `choice`.
fn uniform(ev: &CandleEvaluator, choice: &str) -> Assignment {
    let c: Choice = choice.parse().unwrap();
    Assignment::new(
        ev.model()
            .inventory()
            .layers
            .iter()
            .map(|l| (l.name.clone(), c)),
    )
}

#[test]
fn f32_is_the_reference_and_fewer_bits_cost_more() {
    let ev = demo_evaluator(ScaleMethod::Mse);
    assert_eq!(ev.objective(), "kl_divergence");
    let f = ev.evaluate(&uniform(&ev, "f32")).unwrap();
    assert_eq!(f.quality, 0.0);
    assert_eq!(f.metrics["accuracy_drop"], 0.0);
    assert!(f.metrics["accuracy"] >= MIN_ACCURACY, "{:?}", f.metrics);
    let kl = |c: &str| ev.evaluate(&uniform(&ev, c)).unwrap().quality;
    let (k8, k4, k2) = (
        kl("int8-sym-channel"),
        kl("int4-sym-channel"),
        kl("int2-sym-channel"),
    );
    assert!(
        0.0 < k8 && k8 < k4 && k4 < k2,
        "KL int8 {k8} int4 {k4} int2 {k2}"
    );
    // Pruning half the weights hurts more than int8; low rank 25% too.
    assert!(kl("f32+sparse50") > k8 && kl("f32+rank25") > k8);
    // f16 is nearly lossless.
    assert!(kl("f16") < F16_MAX_KL);
}

#[test]
fn activation_quantization_static_and_dynamic() {
    let ev = demo_evaluator(ScaleMethod::MinMax);
    let q = |c: &str| ev.evaluate(&uniform(&ev, c)).unwrap().quality;
    let (s, d) = (q("f32+act8-static"), q("f32+act8-dynamic"));
    assert!(
        s > 0.0 && d > 0.0,
        "activation quantization changes the outputs"
    );
    assert!(
        s < ACT8_MAX_KL && d < ACT8_MAX_KL,
        "int8 activations stay close: static {s}, dynamic {d}"
    );
}

#[test]
fn compressed_weights_are_memoised_per_layer_and_choice() {
    let ev = demo_evaluator(ScaleMethod::Mse);
    let a = uniform(&ev, "int4-asym-channel");
    let first = ev.evaluate(&a).unwrap();
    let misses = ev.cache().stats().misses;
    let layers = ev.model().inventory().layers.len() as u64;
    assert_eq!(misses, layers, "one compression per layer");
    let again = ev.evaluate(&a).unwrap();
    assert_eq!(again.quality, first.quality, "deterministic");
    let st = ev.cache().stats();
    assert_eq!((st.misses, st.hits), (layers, layers));
    // A new assignment made of the same (layer, choice) pairs plus one new pair costs one compression.
    let mut pairs: Vec<(String, Choice)> = a.iter().map(|(n, c)| (n.to_string(), *c)).collect();
    pairs[0].1 = "int8-sym-channel".parse().unwrap();
    ev.evaluate(&Assignment::new(pairs)).unwrap();
    assert_eq!(ev.cache().stats().misses, layers + 1);
}

#[test]
fn fingerprints_and_keys_follow_the_settings() {
    let (a, b) = (
        demo_evaluator(ScaleMethod::Mse),
        demo_evaluator(ScaleMethod::MinMax),
    );
    assert_ne!(a.fingerprint(), b.fingerprint());
    assert_eq!(
        a.fingerprint(),
        demo_evaluator(ScaleMethod::Mse).fingerprint()
    );
    let x = uniform(&a, "int8-sym-channel");
    assert_ne!(a.key(&x), b.key(&x));
    assert_ne!(a.key(&x), a.key(&uniform(&a, "int4-sym-channel")));
}

#[test]
fn the_demo_data_splits_into_calibration_search_and_held_out() {
    let (_, data) = load(&ModelSource::Demo, None).unwrap();
    let s = data.sizes;
    assert_eq!((s.calibration, s.search, s.held_out), (300, 200, 400));
    let count = |b: &[mpsearch::data::Batch]| b.iter().map(|x| x.len()).sum::<usize>();
    assert_eq!(count(&data.calibration), 300);
    assert_eq!(count(&data.eval), 200);
    assert_eq!(count(&data.held_out), 400);
    assert_eq!(data.labels.as_ref().map(Vec::len), Some(200));
    assert_eq!(data.held_out_labels.as_ref().map(Vec::len), Some(400));
    assert!(data.description.contains("200 search") && data.description.contains("400 held-out"));
}

/// A proxy is the first `n` search samples: all of them give the search split's own metrics, fewer
/// give another mean under another key, and a size the split cannot give is refused.
#[test]
fn a_proxy_evaluates_the_first_search_samples_under_its_own_key() {
    let ev = demo_evaluator(ScaleMethod::Mse);
    assert_eq!(ev.search_samples(), Some(200));
    let a = uniform(&ev, "int4-sym-channel");
    let full = ev.evaluate(&a).unwrap();
    let all = ev.evaluate_on(EvalSplit::Proxy(200), &a).unwrap();
    assert!(
        (all.quality - full.quality).abs() <= 1e-12 * full.quality,
        "{} vs {}",
        all.quality,
        full.quality
    );
    assert_eq!(all.metrics["accuracy"], full.metrics["accuracy"]);
    let quarter = ev.evaluate_on(EvalSplit::Proxy(50), &a).unwrap();
    assert!(quarter.quality > 0.0 && quarter.quality != full.quality);
    // Its accuracy is a count over its 50 images.
    let correct = quarter.metrics["accuracy"] * 50.0;
    assert!((correct - correct.round()).abs() < 1e-9, "{correct}");
    // The f32 model against itself on the proxy too.
    assert_eq!(
        ev.evaluate_on(EvalSplit::Proxy(50), &uniform(&ev, "f32"))
            .unwrap()
            .quality,
        0.0
    );
    let keys = [
        ev.key_on(EvalSplit::Search, &a),
        ev.key_on(EvalSplit::Proxy(200), &a),
        ev.key_on(EvalSplit::Proxy(50), &a),
        ev.key_on(EvalSplit::HeldOut, &a),
    ];
    for i in 0..keys.len() {
        for j in i + 1..keys.len() {
            assert_ne!(keys[i], keys[j], "keys {i} and {j}");
        }
    }
    for n in [0, 201] {
        let e = ev
            .evaluate_on(EvalSplit::Proxy(n), &a)
            .unwrap_err()
            .to_string();
        assert!(e.contains("200"), "{e}");
    }
}

#[test]
fn each_split_is_evaluated_on_its_own_data_under_its_own_key() {
    let ev = demo_evaluator(ScaleMethod::Mse);
    let f32 = uniform(&ev, "f32");
    let held = ev.evaluate_on(EvalSplit::HeldOut, &f32).unwrap();
    assert_eq!(
        held.quality, 0.0,
        "the f32 model against itself, held-out too"
    );
    assert!(
        held.metrics["accuracy"] >= MIN_ACCURACY,
        "{:?}",
        held.metrics
    );

    let a = uniform(&ev, "int4-sym-channel");
    let search = ev.evaluate(&a).unwrap();
    assert_eq!(
        ev.evaluate_on(EvalSplit::Search, &a).unwrap().quality,
        search.quality
    );
    let held = ev.evaluate_on(EvalSplit::HeldOut, &a).unwrap();
    assert!(held.quality > 0.0 && held.quality.is_finite());
    assert_ne!(held.quality, search.quality, "another split, another mean");
    // The held-out split's accuracy is a count over its 400 images.
    let correct = held.metrics["accuracy"] * 400.0;
    assert!(
        (correct - correct.round()).abs() < 1e-9,
        "{:?}",
        held.metrics
    );

    // The split is part of the content key, and the key is computable without the evaluator.
    let (ks, kh) = (ev.key(&a), ev.key_on(EvalSplit::HeldOut, &a));
    assert_eq!(ks, ev.key_on(EvalSplit::Search, &a));
    assert_ne!(ks, kh);
    assert_eq!(
        kh,
        evaluation_key_on(&ev.fingerprint(), EvalSplit::HeldOut, &a.hash())
    );
    assert_eq!(ks, mpsearch::eval::evaluation_key(&ev.fingerprint(), &a));
}

#[test]
fn eval_streams_json_lines_and_answers_each_line_at_once() {
    let dir = Dir::new();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mpsearch"))
        .args(["eval", "--stdin", "--profile", "cortex-a76"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut ask = |line: &str| -> serde_json::Value {
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let mut answer = String::new();
        out.read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer:?}"))
    };
    // Each answer is read before the next question is sent: the output is flushed per line.
    let v = ask(r#"{"default": "int8-sym-channel"}"#);
    for key in ["hash", "quality", "objective", "metrics", "seconds", "cost"] {
        assert!(v.get(key).is_some(), "{key} missing in {v}");
    }
    assert_eq!(v["objective"], "kl_divergence");
    assert_eq!(v["hash"].as_str().unwrap().len(), 64);
    assert!(
        v["cost"]["latency_us"].as_f64().unwrap() > 0.0 && v["cost"]["bytes"].as_u64().unwrap() > 0
    );
    let e = ask(r#"{"default": "int8-sym-channel", "layers": {"fc9": "f32"}}"#);
    assert!(
        e["error"].as_str().unwrap().contains("unknown layer `fc9`"),
        "{e}"
    );
    let e = ask("{nope");
    assert!(e["error"].as_str().unwrap().contains("line 3"), "{e}");
    let again = ask(r#"{"default": "int8-sym-channel"}"#);
    assert_eq!(again["hash"], v["hash"]);
    assert_eq!(again["quality"], v["quality"]);
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[test]
fn eval_one_file_and_bad_input() {
    let dir = Dir::new();
    let a = dir.write("a.json", r#"{"default": "int6-asym-channel"}"#);
    let out = crate::util::ok(dir.path(), &["eval", "--assignment", a.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["quality"].as_f64().unwrap() > 0.0);
    let bad = dir.write("bad.json", r#"{"default": "int6-asym-chanel"}"#);
    let err = fails(dir.path(), &["eval", "--assignment", bad.to_str().unwrap()]);
    assert!(err.contains("bad.json") && err.contains("chanel"), "{err}");
    let out = crate::util::run(dir.path(), &["eval"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--assignment or --stdin is required"
    );
    let err = fails(dir.path(), &["eval", "--stdin", "--data", "x.txt"]);
    assert!(err.contains("x.txt") && err.contains("encoder"), "{err}");
}
