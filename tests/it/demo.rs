//! The embedded demo: its Fashion-MNIST images, the CNN's forward contract, the shipped weights and training.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use mpsearch::data::{
    fashion_dir, Batch, FashionMnist, Split, CLASSES, CLASS_NAMES, EMBEDDED, SIDE,
};
use mpsearch::model::demo::{self, accuracy, DemoModel};
use mpsearch::model::{ForwardCtx, Model};

use crate::util::{demo_model, forward_with_weight, max_abs_diff};

/// The accuracy the shipped weights must reach on the embedded test images, and a retrain on the full
/// test set.
const MIN_ACCURACY: f64 = 0.90;
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
fn the_embedded_images_load_in_fixed_disjoint_splits() {
    let d = FashionMnist::load().unwrap();
    let parts = [
        (&d.search, FashionMnist::SEARCH),
        (&d.held_out, FashionMnist::HELD_OUT),
        (&d.calibration, FashionMnist::CALIBRATION),
        (&d.tune, FashionMnist::TUNE),
    ];
    let mut all: Vec<usize> = Vec::new();
    for (split, n) in parts {
        assert_eq!(split.len(), n);
        assert_eq!(split.images.dims(), [n, 1, SIDE, SIDE]);
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
        (0..EMBEDDED).collect::<Vec<_>>(),
        "the splits partition the embedded records"
    );
    let again = FashionMnist::load().unwrap();
    assert_eq!(again.held_out.rows, d.held_out.rows, "the split is fixed");

    let pixels = d
        .tune
        .images
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let (lo, hi) = pixels
        .iter()
        .fold((f32::MAX, f32::MIN), |(l, h), &p| (l.min(p), h.max(p)));
    assert_eq!((lo, hi), (0.0, 1.0), "pixels scaled to [0, 1]");
    // The first images of Fashion-MNIST's files: t10k starts with an ankle boot (9), train with one too.
    assert_eq!(
        d.search.rows[0]
            .min(d.held_out.rows[0])
            .min(d.calibration.rows[0]),
        0
    );
    let first_test = [&d.search, &d.held_out, &d.calibration]
        .into_iter()
        .find(|s| s.rows[0] == 0)
        .unwrap();
    assert_eq!(first_test.classes()[0], 9);
    assert_eq!(d.tune.classes()[0], 9);
}

#[test]
fn every_class_is_in_every_split_in_proportion() {
    let d = FashionMnist::load().unwrap();
    let mut test = [0usize; CLASSES];
    for s in [&d.search, &d.held_out, &d.calibration] {
        for (c, n) in s.class_counts().iter().enumerate() {
            test[c] += n;
        }
    }
    assert_eq!(test.iter().sum::<usize>(), FashionMnist::TEST);
    for (name, s) in [
        ("search", &d.search),
        ("held-out", &d.held_out),
        ("calibration", &d.calibration),
    ] {
        for (c, &n) in s.class_counts().iter().enumerate() {
            let gap =
                (n as f64 / s.len() as f64 - test[c] as f64 / FashionMnist::TEST as f64).abs();
            assert!(
                gap <= MAX_SHARE_GAP,
                "{name}: class {c} ({}) has {n} of {} (share off by {gap:.4})",
                CLASS_NAMES[c],
                s.len()
            );
        }
    }
    assert!(
        d.tune.class_counts().iter().all(|&n| n >= 150),
        "the tune split holds every class: {:?}",
        d.tune.class_counts()
    );
}

#[test]
fn batches_cover_a_split_in_order() {
    let d = FashionMnist::load().unwrap();
    let mut seen = Vec::new();
    for b in d.calibration.batches(64).unwrap() {
        let (batch, labels) = b.unwrap();
        assert_eq!(batch.len(), labels.dims()[0]);
        seen.extend(labels.to_vec1::<u32>().unwrap());
    }
    assert_eq!(seen, d.calibration.classes());
    assert_eq!(
        d.calibration.batches(64).unwrap().count(),
        5,
        "300 = 4 × 64 + 44"
    );
    let err = d
        .calibration
        .batches(0)
        .err()
        .expect("size 0 refused")
        .to_string();
    assert!(err.contains("batch size: 0"), "{err}");
    let (batch, labels) = d.held_out.select(&[5, 0]).unwrap();
    assert_eq!(batch.len(), 2);
    assert_eq!(
        labels.to_vec1::<u32>().unwrap(),
        [d.held_out.classes()[5], d.held_out.classes()[0]]
    );
    assert!(
        d.held_out.select(&[FashionMnist::HELD_OUT as u32]).is_err(),
        "position past the end refused"
    );
}

#[test]
fn shipped_weights_reach_their_accuracy_on_the_held_out_images() {
    let d = FashionMnist::load().unwrap();
    for (name, split) in [("search", &d.search), ("held-out", &d.held_out)] {
        let acc = accuracy(&demo_model(), split, &ForwardCtx::default()).unwrap();
        eprintln!("shipped weights: {name} accuracy {acc:.4}");
        assert!(
            acc >= MIN_ACCURACY,
            "{name} accuracy {acc:.4} < {MIN_ACCURACY}"
        );
    }
}

/// Training on the embedded tune split (2,000 images, one epoch): what `train` does with the full set,
/// small enough for CI. It learns (far above the 10% of chance on the held-out images) and the bytes it
/// returns hold the model it trained.
#[test]
fn training_on_the_tune_split_learns() {
    let d = FashionMnist::load().unwrap();
    let start = Instant::now();
    let trained = demo::train(&d.tune, &d.held_out, demo::SEED, 1).unwrap();
    eprintln!(
        "1 epoch on {} images: {:.1} s, held-out accuracy {:.4}, final loss {:.4}",
        d.tune.len(),
        start.elapsed().as_secs_f64(),
        trained.test_accuracy,
        trained.final_loss
    );
    assert!(
        trained.test_accuracy >= 0.5,
        "held-out accuracy {:.4} after one epoch",
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
    let d = FashionMnist::load().unwrap();
    let tune = d.tune.first(256).unwrap();
    assert_eq!(tune.len(), 256);
    assert_eq!(tune.classes(), &d.tune.classes()[..256]);
    let a = demo::train(&tune, &d.calibration, 7, 1).unwrap();
    let b = demo::train(&tune, &d.calibration, 7, 1).unwrap();
    assert_eq!(a.model.fingerprint(), b.model.fingerprint());
    let c = demo::train(&tune, &d.calibration, 8, 1).unwrap();
    assert_ne!(
        a.model.fingerprint(),
        c.model.fingerprint(),
        "another seed, other weights"
    );
    assert!(
        demo::train(&tune, &d.calibration, 7, 0).is_err(),
        "0 epochs refused"
    );
}

#[test]
fn zeroing_fc2_leaves_only_its_bias() {
    let m = demo_model();
    let d = FashionMnist::load().unwrap();
    let zero = m.weight("fc2").unwrap().zeros_like().unwrap();
    let logits = forward_with_weight(&m, &first_images(&d.held_out, 16), "fc2", zero).unwrap();
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
        .forward(&first_images(&d.held_out, 16), &ForwardCtx::default())
        .unwrap();
    assert!(
        max_abs_diff(&plain, &bias) > ZEROED_EFFECT_MIN,
        "the override changed the output"
    );
}

#[test]
fn every_layer_takes_its_weight_from_the_context() {
    let m = demo_model();
    let d = FashionMnist::load().unwrap();
    let batch = first_images(&d.held_out, 8);
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
    let bad = Tensor::zeros((256, 128), DType::F32, &Device::Cpu).unwrap();
    let err = forward_with_weight(&m, &batch, "fc1", bad)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`fc1`") && err.contains("[256, 128]") && err.contains("[256, 1568]"),
        "{err}"
    );
}

#[test]
fn capture_records_the_input_of_every_layer() {
    let m = demo_model();
    let d = FashionMnist::load().unwrap();
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
    let expected: [(&str, [usize; 3]); 7] = [
        ("conv1", [1, 28, 28]),
        ("conv2", [8, 14, 14]),
        ("conv3", [16, 14, 14]),
        ("conv4", [16, 7, 7]),
        ("conv5", [32, 7, 7]),
        ("fc1", [1568, 0, 0]),
        ("fc2", [256, 0, 0]),
    ];
    for (name, rest) in expected {
        let shapes: Vec<Vec<usize>> = got[name].iter().map(|t| t.dims().to_vec()).collect();
        let tail: Vec<usize> = rest.iter().copied().filter(|&d| d > 0).collect();
        let want: Vec<Vec<usize>> = [100, 100, 100]
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
        ["conv1", "conv2", "conv3", "conv4", "conv5", "fc1", "fc2"]
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
        "conv1", "conv2", "conv3", "conv4", "conv5", "fc1", "fc2", "conv6", "fc0", "pool", "input",
        "logits",
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
    let d = FashionMnist::load().unwrap();
    let logits = m.forward(&first_images(&d.held_out, 4), &ctx).unwrap();
    assert_eq!(logits.dims(), [4, 10]);
    let got = capture.into_inner().unwrap();
    let seen: Vec<&str> = asked.into_iter().filter(|n| !got[*n].is_empty()).collect();
    assert_eq!(
        seen,
        ["conv1", "conv2", "conv3", "conv4", "conv5", "fc1", "fc2"]
    );

    let err = m.weight("fc3").unwrap_err().to_string();
    assert!(
        err.contains("`fc3`") && err.contains("conv1, conv2, conv3, conv4, conv5, fc1, fc2"),
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
            t.narrow(0, 0, 8).unwrap()
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
            && err.contains("[16, 8, 3, 3]")
            && err.contains("[8, 8, 3, 3]"),
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
    let wrong = Batch::Images(Tensor::zeros((2, 1, 8, 8), DType::F32, &Device::Cpu).unwrap());
    let err = m
        .forward(&wrong, &ForwardCtx::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[n, 1, 28, 28]") && err.contains("[2, 1, 8, 8]"),
        "{err}"
    );
}

/// Retrains the shipped weights on the full Fashion-MNIST training set (after
/// `scripts/fetch-fashion-mnist.sh`) and rewrites `src/model/demo.safetensors`:
/// `cargo test --release --test it -- --ignored --exact demo::regenerate_demo_weights --nocapture`
/// (what `scripts/train-demo.sh` runs).
#[test]
#[ignore = "rewrites the shipped weights; needs the full data set (scripts/fetch-fashion-mnist.sh)"]
fn regenerate_demo_weights() {
    let full = FashionMnist::full(&fashion_dir()).unwrap();
    let start = Instant::now();
    let trained = demo::train(&full.train, &full.test, demo::SEED, demo::EPOCHS).unwrap();
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

/// Rebuilds `src/data/fashion.bin` from the full set (after `scripts/fetch-fashion-mnist.sh`) and checks
/// that it is the shipped file: `cargo test --release --test it -- --ignored --exact
/// demo::regenerate_demo_data --nocapture`.
#[test]
#[ignore = "needs the full data set (scripts/fetch-fashion-mnist.sh)"]
fn regenerate_demo_data() {
    let bytes = FashionMnist::embedded_bytes(&fashion_dir()).unwrap();
    let shipped = include_bytes!("../../src/data/fashion.bin");
    assert_eq!(bytes.len(), shipped.len());
    assert!(bytes == shipped, "fashion.bin differs from the fetched set");
}
