//! The embedded demo: digits data, the CNN's forward contract, the shipped weights and training.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use mpsearch::data::{Batch, Digits, Split, CLASSES, SAMPLES};
use mpsearch::model::demo::{self, accuracy, DemoModel};
use mpsearch::model::{ForwardCtx, Model};

use crate::util::{demo_model, forward_with_weight, max_abs_diff};

/// The accuracy the shipped weights and a retrain must reach on the test split.
const MIN_ACCURACY: f64 = 0.97;
/// Largest difference allowed between logits that should be equal.
const LOGIT_TOLERANCE: f32 = 1e-5;
/// Most that any class's share of a split may differ from its share of the whole set.
const MAX_SHARE_GAP: f64 = 0.01;
/// Smallest change of the logits when fc2's weight is zeroed.
const ZEROED_EFFECT_MIN: f32 = 1.0;

fn first_images(split: &Split, n: usize) -> Batch {
    Batch::Images(split.images.narrow(0, 0, n).unwrap())
}

#[test]
fn digits_load_in_a_fixed_disjoint_split() {
    let d = Digits::load().unwrap();
    let parts = [
        (&d.train, Digits::TRAIN),
        (&d.calibration, Digits::CALIBRATION),
        (&d.test, Digits::TEST),
    ];
    let mut all: Vec<usize> = Vec::new();
    for (split, n) in parts {
        assert_eq!(split.len(), n);
        assert_eq!(split.images.dims(), [n, 1, 8, 8]);
        assert_eq!(split.images.dtype(), DType::F32);
        assert_eq!(split.labels.dims(), [n]);
        assert_eq!(split.labels.dtype(), DType::U32);
        assert_eq!(split.labels.to_vec1::<u32>().unwrap(), split.classes());
        assert!(split.rows.windows(2).all(|w| w[0] < w[1]), "rows ascending");
        all.extend(&split.rows);
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (0..SAMPLES).collect::<Vec<_>>(),
        "the splits partition the 1797 rows"
    );
    let again = Digits::load().unwrap();
    assert_eq!(again.test.rows, d.test.rows, "the split is fixed");

    let pixels = d
        .train
        .images
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let (lo, hi) = pixels
        .iter()
        .fold((f32::MAX, f32::MIN), |(l, h), &p| (l.min(p), h.max(p)));
    assert_eq!((lo, hi), (0.0, 1.0), "pixels scaled to [0, 1]");
    // The first row of the file is a 0 (scikit-learn's load_digits().images[0]).
    assert_eq!(
        d.train.rows[0]
            .min(d.test.rows[0])
            .min(d.calibration.rows[0]),
        0
    );
}

#[test]
fn digits_classes_are_balanced_in_every_split() {
    let d = Digits::load().unwrap();
    let mut whole = [0usize; CLASSES];
    for s in [&d.train, &d.calibration, &d.test] {
        for (c, n) in s.class_counts().iter().enumerate() {
            whole[c] += n;
        }
    }
    assert_eq!(
        whole,
        [178, 182, 177, 183, 181, 182, 181, 179, 174, 180],
        "scikit-learn's class counts"
    );
    for (name, s) in [
        ("train", &d.train),
        ("calibration", &d.calibration),
        ("test", &d.test),
    ] {
        for (c, &n) in s.class_counts().iter().enumerate() {
            let gap = (n as f64 / s.len() as f64 - whole[c] as f64 / SAMPLES as f64).abs();
            assert!(
                gap <= MAX_SHARE_GAP,
                "{name}: digit {c} has {n} of {} (share off by {gap:.4})",
                s.len()
            );
        }
    }
}

#[test]
fn batches_cover_a_split_in_order() {
    let d = Digits::load().unwrap();
    let mut seen = Vec::new();
    for b in d.calibration.batches(64).unwrap() {
        let (batch, labels) = b.unwrap();
        assert_eq!(batch.len(), labels.dims()[0]);
        seen.extend(labels.to_vec1::<u32>().unwrap());
    }
    assert_eq!(seen, d.calibration.classes());
    assert_eq!(
        d.calibration.batches(64).unwrap().count(),
        3,
        "180 = 64 + 64 + 52"
    );
    let err = d
        .calibration
        .batches(0)
        .err()
        .expect("size 0 refused")
        .to_string();
    assert!(err.contains("batch size: 0"), "{err}");
    let (batch, labels) = d.test.select(&[5, 0]).unwrap();
    assert_eq!(batch.len(), 2);
    assert_eq!(
        labels.to_vec1::<u32>().unwrap(),
        [d.test.classes()[5], d.test.classes()[0]]
    );
    assert!(
        d.test.select(&[360]).is_err(),
        "position past the end refused"
    );
}

#[test]
fn shipped_weights_reach_97_percent_on_the_test_split() {
    let d = Digits::load().unwrap();
    let acc = accuracy(&demo_model(), &d.test, &ForwardCtx::default()).unwrap();
    eprintln!("shipped weights: test accuracy {acc:.4}");
    assert!(
        acc >= MIN_ACCURACY,
        "test accuracy {acc:.4} < {MIN_ACCURACY}"
    );
}

#[test]
fn a_retrain_from_the_fixed_seed_reaches_97_percent() {
    let start = Instant::now();
    let trained = demo::train(demo::SEED, demo::EPOCHS).unwrap();
    let seconds = start.elapsed().as_secs_f64();
    let same = trained.safetensors == include_bytes!("../../src/model/demo.safetensors");
    eprintln!(
        "retrain (seed {}, {} epochs): {seconds:.1} s, test accuracy {:.4}, final loss {:.4}, \
         byte-identical to the shipped file: {same}",
        demo::SEED,
        demo::EPOCHS,
        trained.test_accuracy,
        trained.final_loss
    );
    assert!(
        trained.test_accuracy >= MIN_ACCURACY,
        "test accuracy {:.4} < {MIN_ACCURACY}",
        trained.test_accuracy
    );
    let reloaded = DemoModel::from_safetensors(&trained.safetensors, "retrained").unwrap();
    assert_eq!(
        reloaded.fingerprint(),
        trained.model.fingerprint(),
        "the bytes hold the trained model"
    );
}

#[test]
fn training_is_deterministic_for_a_seed() {
    let a = demo::train(7, 1).unwrap();
    let b = demo::train(7, 1).unwrap();
    assert_eq!(a.model.fingerprint(), b.model.fingerprint());
    let c = demo::train(8, 1).unwrap();
    assert_ne!(
        a.model.fingerprint(),
        c.model.fingerprint(),
        "another seed, other weights"
    );
    assert!(demo::train(7, 0).is_err(), "0 epochs refused");
}

#[test]
fn zeroing_fc2_leaves_only_its_bias() {
    let m = demo_model();
    let d = Digits::load().unwrap();
    let zero = m.weight("fc2").unwrap().zeros_like().unwrap();
    let logits = forward_with_weight(&m, &first_images(&d.test, 16), "fc2", zero).unwrap();
    let bias = m
        .bias("fc2")
        .unwrap()
        .unsqueeze(0)
        .unwrap()
        .broadcast_as((16, 10))
        .unwrap();
    assert!(
        max_abs_diff(&logits, &bias) <= LOGIT_TOLERANCE,
        "logits are fc2's bias in every row"
    );
    let plain = m
        .forward(&first_images(&d.test, 16), &ForwardCtx::default())
        .unwrap();
    assert!(
        max_abs_diff(&plain, &bias) > ZEROED_EFFECT_MIN,
        "the override changed the output"
    );
}

#[test]
fn every_layer_takes_its_weight_from_the_context() {
    let m = demo_model();
    let d = Digits::load().unwrap();
    let batch = first_images(&d.test, 8);
    let plain = m.forward(&batch, &ForwardCtx::default()).unwrap();
    for layer in &demo::inventory().layers {
        let w = m.weight(&layer.name).unwrap();
        let out = forward_with_weight(&m, &batch, &layer.name, (w * 0.5).unwrap()).unwrap();
        assert!(
            max_abs_diff(&plain, &out) > LOGIT_TOLERANCE,
            "halving {} changed nothing",
            layer.name
        );
    }
    let bad = Tensor::zeros((64, 256), DType::F32, &Device::Cpu).unwrap();
    let err = forward_with_weight(&m, &batch, "fc1", bad)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`fc1`") && err.contains("[64, 256]") && err.contains("[64, 512]"),
        "{err}"
    );
}

#[test]
fn capture_records_the_input_of_all_four_layers() {
    let m = demo_model();
    let d = Digits::load().unwrap();
    let names: Vec<String> = demo::inventory()
        .layers
        .iter()
        .map(|l| l.name.clone())
        .collect();
    let capture = Mutex::new(
        names
            .iter()
            .map(|n| (n.clone(), Vec::new()))
            .collect::<HashMap<_, _>>(),
    );
    let ctx = ForwardCtx {
        capture: Some(&capture),
        ..Default::default()
    };
    for b in d.calibration.batches(100).unwrap() {
        m.forward(&b.unwrap().0, &ctx).unwrap();
    }
    let got = capture.into_inner().unwrap();
    let expected: [(&str, [usize; 3]); 4] = [
        ("conv1", [1, 8, 8]),
        ("conv2", [16, 8, 8]),
        ("fc1", [512, 0, 0]),
        ("fc2", [64, 0, 0]),
    ];
    for (name, rest) in expected {
        let shapes: Vec<Vec<usize>> = got[name].iter().map(|t| t.dims().to_vec()).collect();
        let tail: Vec<usize> = rest.iter().copied().filter(|&d| d > 0).collect();
        let want: Vec<Vec<usize>> = [100, 80]
            .iter()
            .map(|&n| [vec![n], tail.clone()].concat())
            .collect();
        assert_eq!(shapes, want, "inputs of {name}");
    }
    let conv1_in = Tensor::cat(&got["conv1"], 0).unwrap();
    assert_eq!(
        max_abs_diff(&conv1_in, &d.calibration.images),
        0.0,
        "conv1's input is the images"
    );
}

#[test]
fn the_forward_runs_exactly_the_inventory_layers() {
    let m = demo_model();
    let inv = demo::inventory();
    assert_eq!(m.inventory().layers, inv.layers);
    assert_eq!(
        inv.layers
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>(),
        ["conv1", "conv2", "fc1", "fc2"]
    );
    for l in &inv.layers {
        assert_eq!(
            m.weight(&l.name).unwrap().dims(),
            l.shape.as_slice(),
            "{}",
            l.name
        );
        assert_eq!(m.bias(&l.name).unwrap().dims(), [l.shape[0]], "{}", l.name);
    }
    // Ask for the inputs of the inventory's layers and of names a forward might wrongly use: only the
    // inventory's layers, in order, get inputs.
    let asked = [
        "conv1", "conv2", "fc1", "fc2", "conv3", "fc0", "pool", "input", "logits",
    ];
    let capture = Mutex::new(
        asked
            .iter()
            .map(|n| (n.to_string(), Vec::new()))
            .collect::<HashMap<_, _>>(),
    );
    let ctx = ForwardCtx {
        capture: Some(&capture),
        ..Default::default()
    };
    let d = Digits::load().unwrap();
    let logits = m.forward(&first_images(&d.test, 4), &ctx).unwrap();
    assert_eq!(logits.dims(), [4, 10]);
    let got = capture.into_inner().unwrap();
    let seen: Vec<&str> = asked.into_iter().filter(|n| !got[*n].is_empty()).collect();
    assert_eq!(seen, ["conv1", "conv2", "fc1", "fc2"]);

    let err = m.weight("fc3").unwrap_err().to_string();
    assert!(
        err.contains("`fc3`") && err.contains("conv1, conv2, fc1, fc2"),
        "{err}"
    );
}

#[test]
fn fingerprint_depends_on_the_weights() {
    let a = demo_model();
    assert_eq!(a.fingerprint(), demo_model().fingerprint(), "stable");
    let bytes = rebuilt(|name, t| {
        if name == "fc2.bias" {
            (t + 1.0).unwrap()
        } else {
            t.clone()
        }
    });
    let b = DemoModel::from_safetensors(&bytes, "edited").unwrap();
    assert_ne!(a.fingerprint(), b.fingerprint());
}

/// The shipped tensors by name, in file order.
fn shipped_tensors() -> Vec<(String, Tensor)> {
    let m = demo_model();
    demo::tensor_shapes()
        .into_iter()
        .map(|(n, _)| {
            let (layer, kind) = n.split_once('.').unwrap();
            let t = if kind == "weight" {
                m.weight(layer)
            } else {
                m.bias(layer)
            };
            (n, t.unwrap())
        })
        .collect()
}

fn serialize(tensors: &[(String, Tensor)]) -> Vec<u8> {
    safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), None).unwrap()
}

/// The shipped tensors, each passed through `edit`, as safetensors bytes.
fn rebuilt(edit: impl Fn(&str, &Tensor) -> Tensor) -> Vec<u8> {
    let edited: Vec<(String, Tensor)> = shipped_tensors()
        .into_iter()
        .map(|(n, t)| {
            let t = edit(&n, &t);
            (n, t)
        })
        .collect();
    serialize(&edited)
}

#[test]
fn weights_of_the_wrong_shape_dtype_or_name_are_refused_by_name() {
    let bytes = rebuilt(|name, t| {
        if name == "conv2.weight" {
            t.narrow(0, 0, 16).unwrap()
        } else {
            t.clone()
        }
    });
    let err = DemoModel::from_safetensors(&bytes, "bad.safetensors")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad.safetensors")
            && err.contains("`conv2.weight`")
            && err.contains("[32, 16, 3, 3]")
            && err.contains("[16, 16, 3, 3]"),
        "{err}"
    );
    let bytes = rebuilt(|name, t| {
        if name == "fc1.bias" {
            t.to_dtype(DType::F16).unwrap()
        } else {
            t.clone()
        }
    });
    let err = DemoModel::from_safetensors(&bytes, "half")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`fc1.bias`") && err.contains("F16"), "{err}");

    let only_one = serialize(&shipped_tensors()[..1]);
    let err = DemoModel::from_safetensors(&only_one, "partial")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`conv1.bias`") && err.contains("missing"),
        "{err}"
    );

    let mut tensors = shipped_tensors();
    let extra = Tensor::zeros(10, DType::F32, &Device::Cpu).unwrap();
    tensors.push(("fc3.bias".into(), extra));
    let bytes = serialize(&tensors);
    let err = DemoModel::from_safetensors(&bytes, "extra")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`fc3.bias`") && err.contains("not a tensor of the demo"),
        "{err}"
    );

    let err = DemoModel::from_safetensors(b"not a file", "junk")
        .unwrap_err()
        .to_string();
    assert!(err.contains("junk") && err.contains("safetensors"), "{err}");
}

#[test]
fn tokens_and_misshapen_images_are_refused() {
    let m = demo_model();
    let ids = Tensor::zeros((2, 4), DType::U32, &Device::Cpu).unwrap();
    let tokens = Batch::Tokens {
        ids: ids.clone(),
        mask: ids,
    };
    assert!(m
        .forward(&tokens, &ForwardCtx::default())
        .unwrap_err()
        .to_string()
        .contains("tokens"));
    let wrong = Batch::Images(Tensor::zeros((2, 1, 28, 28), DType::F32, &Device::Cpu).unwrap());
    let err = m
        .forward(&wrong, &ForwardCtx::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[n, 1, 8, 8]") && err.contains("[2, 1, 28, 28]"),
        "{err}"
    );
}

/// Rewrites `src/model/demo.safetensors` from `demo::train(SEED, EPOCHS)`. Run it with
/// `cargo test --release -- --ignored regenerate_demo_weights` (or `scripts/train-demo.sh`).
#[test]
#[ignore = "rewrites the shipped weights"]
fn regenerate_demo_weights() {
    let start = Instant::now();
    let trained = demo::train(demo::SEED, demo::EPOCHS).unwrap();
    assert!(
        trained.test_accuracy >= MIN_ACCURACY,
        "test accuracy {:.4}: not shipping it",
        trained.test_accuracy
    );
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/model/demo.safetensors");
    let tmp = path.with_extension("safetensors.tmp");
    std::fs::write(&tmp, &trained.safetensors).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    eprintln!(
        "wrote {} ({} bytes): seed {}, {} epochs, {:.1} s, test accuracy {:.4}, final loss {:.4}, fingerprint {}",
        path.display(),
        trained.safetensors.len(),
        demo::SEED,
        demo::EPOCHS,
        start.elapsed().as_secs_f64(),
        trained.test_accuracy,
        trained.final_loss,
        trained.model.fingerprint()
    );
}
