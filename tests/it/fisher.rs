//! Gradient-based importance on the demo: the backprop gradient against central finite differences,
//! the Taylor estimates against the measured loss change, and the Fisher error table's ordering.

use candle_core::{DType, Tensor};
use candle_nn::loss::cross_entropy;
use mpsearch::compress::ScaleMethod;
use mpsearch::data::{Batch, FashionMnist};
use mpsearch::model::{DemoModel, Model};
use mpsearch::sensitivity::fisher::DEFAULT_CHUNK;
use mpsearch::sensitivity::{fisher_errors, FisherDiagonal};
use mpsearch::space::Choice;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::util::{demo_model, forward_with_weight};

/// Relative tolerance of the backprop gradient against central finite differences (f32 forward).
const GRAD_RTOL: f64 = 1e-2;
/// Step of the central finite differences.
const FD_STEP: f32 = 3e-3;
/// Step of the central finite differences on the convolutions, whose loss curves faster (ReLU and
/// max-pool switches): 1e-2 is not yet converged there.
const CONV_FD_STEP: f32 = 1e-3;
/// Relative tolerance of the first-order Taylor estimate against the measured loss change.
const FIRST_ORDER_RTOL: f64 = 5e-2;
/// Relative tolerance of the quadratic scaling of `taylor_drop`: ΔW is rounded to f32 at both steps,
/// so doubling it is exact only up to f32 rounding of `W + ΔW`.
const QUADRATIC_RTOL: f64 = 1e-4;
/// Relative tolerance of the convolutions' gradients against central finite differences (ReLU and
/// max-pool switches make their loss less smooth).
const CONV_GRAD_RTOL: f64 = 5e-2;
/// Entries checked per layer: those with the largest gradients.
const ENTRIES: usize = 3;

/// The demo model and its whole calibration split as one labelled batch.
fn demo_with_calibration() -> (DemoModel, Vec<(Batch, Tensor)>) {
    let cal = FashionMnist::load().unwrap().calibration;
    let batch = (Batch::Images(cal.images.clone()), cal.labels.clone());
    (demo_model(), vec![batch])
}

/// Mean cross-entropy of `model` on `data` with `layer`'s weight replaced by `w`, in f64.
fn loss_with(model: &DemoModel, data: &[(Batch, Tensor)], layer: &str, w: &Tensor) -> f64 {
    let (batch, labels) = &data[0];
    let logits = forward_with_weight(model, batch, layer, w.clone()).unwrap();
    cross_entropy(&logits, labels)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

fn with_entry(w: &Tensor, index: usize, delta: f32) -> Tensor {
    let mut v = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v[index] += delta;
    Tensor::from_vec(v, w.dims(), w.device()).unwrap()
}

#[test]
fn fisher_gradient_matches_central_finite_differences_on_the_demo_linear_layers() {
    let (model, data) = demo_with_calibration();
    // One chunk over the whole split: g is the gradient of the very loss `loss_with` computes.
    let n = data[0].0.len();
    let f = FisherDiagonal::estimate(&model, &data, n).unwrap();
    assert_eq!((f.samples(), f.chunks()), (n, 1));
    // The convolutions in the next test.
    for layer in ["fc1", "fc2"] {
        for (i, g, fd) in gradient_and_fd(&model, &data, &f, layer, FD_STEP) {
            assert!(
                (g - fd).abs() <= GRAD_RTOL * fd.abs(),
                "{layer}[{i}] (f32): backprop gradient {g}, central difference {fd} (relative \
                 tolerance {GRAD_RTOL})"
            );
        }
    }
}

/// The backprop gradient of a layer's `ENTRIES` largest entries and their central differences.
fn gradient_and_fd(
    model: &DemoModel,
    data: &[(Batch, Tensor)],
    f: &FisherDiagonal,
    layer: &str,
    step: f32,
) -> Vec<(usize, f64, f64)> {
    let g = f.gradient(layer).unwrap();
    let w = model.weight(layer).unwrap();
    let mut order: Vec<usize> = (0..g.len()).collect();
    order.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
    order[..ENTRIES]
        .iter()
        .map(|&i| {
            let plus = loss_with(model, data, layer, &with_entry(&w, i, step));
            let minus = loss_with(model, data, layer, &with_entry(&w, i, -step));
            (i, g[i], (plus - minus) / (2.0 * f64::from(step)))
        })
        .collect()
}

/// The convolutions, three of them before a max-pool: the demo pools by max-reductions, whose backward
/// is exact (candle 0.11.1's `max_pool2d` backward would scale those gradients by 1/4 per pool; see
/// `model::demo`).
#[test]
fn conv_gradients_match_finite_differences_through_the_max_pools() {
    let (model, data) = demo_with_calibration();
    let n = data[0].0.len();
    let f = FisherDiagonal::estimate(&model, &data, n).unwrap();
    for layer in ["conv1", "conv2", "conv3", "conv4", "conv5"] {
        for (i, g, fd) in gradient_and_fd(&model, &data, &f, layer, CONV_FD_STEP) {
            assert!(
                (g - fd).abs() <= CONV_GRAD_RTOL * fd.abs(),
                "{layer}[{i}] (f32): backprop gradient {g}, central difference {fd} (relative \
                 tolerance {CONV_GRAD_RTOL})"
            );
        }
    }
}

#[test]
fn taylor_estimates_track_the_measured_loss_change_and_scale_as_they_should() {
    let (model, data) = demo_with_calibration();
    let f = FisherDiagonal::estimate(&model, &data, 1).unwrap();
    assert_eq!(f.chunks(), data[0].0.len(), "chunk 1: one pass per sample");
    let base = loss_with(&model, &data, "fc1", &model.weight("fc1").unwrap());
    let w = model.weight("fc1").unwrap();
    let g = f.gradient("fc1").unwrap();
    // A small step against the gradient's sign, with random magnitudes, so the first-order term
    // dominates: ΔW = −t · sign(g) · u, u uniform in [0.5, 1).
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let dir: Vec<f32> = g
        .iter()
        .map(|&x| -(x.signum() as f32) * rng.random_range(0.5..1.0))
        .collect();
    let step = |t: f32| {
        let d = Tensor::from_vec(dir.iter().map(|v| v * t).collect(), w.dims(), w.device());
        (&w + d.unwrap()).unwrap()
    };
    let w1 = step(3e-5);
    let first = f.first_order("fc1", &w1).unwrap();
    let measured = loss_with(&model, &data, "fc1", &w1) - base;
    assert!(first < 0.0, "a step against the gradient lowers the loss");
    assert!(
        (first - measured).abs() <= FIRST_ORDER_RTOL * measured.abs(),
        "fc1 (f32): first-order estimate {first}, measured loss change {measured} (relative \
         tolerance {FIRST_ORDER_RTOL})"
    );
    // The quadratic term: 0 at W, positive off it, ×4 when ΔW doubles.
    assert_eq!(f.taylor_drop("fc1", &w).unwrap(), 0.0);
    let (q1, q2) = (
        f.taylor_drop("fc1", &w1).unwrap(),
        f.taylor_drop("fc1", &step(6e-5)).unwrap(),
    );
    assert!(q1 > 0.0, "taylor_drop {q1}");
    assert!(
        (q2 / q1 - 4.0).abs() <= 4.0 * QUADRATIC_RTOL,
        "doubling ΔW: taylor_drop {q1} → {q2}, ratio {}",
        q2 / q1
    );
    // A weight of another shape and an unknown layer are errors that name the layer.
    let bad = Tensor::zeros((2, 2), DType::F32, w.device()).unwrap();
    let err = f.taylor_drop("fc1", &bad).unwrap_err().to_string();
    assert!(err.contains("`fc1`"), "{err}");
    assert!(f.first_order("nope", &w).is_err());
    assert!(FisherDiagonal::estimate(&model, &data, 0).is_err());
}

#[test]
fn fisher_errors_rank_int2_above_int4_above_int8_for_fc1() {
    let (model, data) = demo_with_calibration();
    let space = mpsearch::shipped::space("demo", &model.inventory().layers).unwrap();
    let f = FisherDiagonal::estimate(&model, &data, DEFAULT_CHUNK).unwrap();
    let table = fisher_errors(&space, &f, ScaleMethod::Mse).unwrap();
    assert_eq!(table.len(), space.groups.len());
    let g = space
        .layers
        .iter()
        .find(|l| l.info.name == "fc1")
        .unwrap()
        .group;
    let at = |c: &str| {
        let c: Choice = c.parse().unwrap();
        let i = space.groups[g]
            .choices
            .iter()
            .position(|x| *x == c)
            .unwrap();
        table[g][i]
    };
    let (e8, e4, e2) = (
        at("int8-sym-channel"),
        at("int4-sym-channel"),
        at("int2-sym-channel"),
    );
    assert_eq!(at("f32"), 0.0);
    assert!(
        0.0 < e8 && e8 < e4 && e4 < e2,
        "fc1 Fisher error int8 {e8} int4 {e4} int2 {e2}"
    );
}
