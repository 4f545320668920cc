//! The notation is the contract: for every shipped hardware profile and every choice of every shipped
//! search space (on the layers the space allows it, on the demo CNN and a MiniLM-shaped encoder), the
//! cost model charges the arithmetic the choice's notation names — float activations unless `act8-*`,
//! int8 with it, a GGML block format's own activation blocks on every factor — and credits N:M only
//! where the profile declares it for the kernel's precision.

use mpsearch::cost::{CostModel, HardwareProfile, KernelPath, LayerCost, NmCompute, Precision};
use mpsearch::model::{inventory, ModelSource};
use mpsearch::space::{
    ActQuant, Choice, GgmlFormat, LayerInfo, SearchSpace, Sparsity, WeightQuant,
};

use crate::util::{minilm_folder, Dir};

/// Batches checked: one sample (memory-bound layers) and many (compute-bound ones, where the rate of
/// the kernel decides the latency).
const BATCHES: [u32; 2] = [1, 64];

/// Relative slack for comparing a latency with a bound computed in another order.
const TOL: f64 = 1e-9;

fn is_float(p: Precision) -> bool {
    matches!(p, Precision::F32 | Precision::F16 | Precision::Bf16)
}

/// The fastest float kernel of the profile, GMAC/s: no kernel on float activations may beat it.
fn fastest_float(p: &HardwareProfile) -> f64 {
    p.gmacs
        .iter()
        .filter(|(q, _)| is_float(**q))
        .map(|(_, g)| *g)
        .fold(0.0, f64::max)
}

/// The activations the notation names for the layer's input.
fn named_acts(c: &Choice) -> Option<Precision> {
    match c.act {
        ActQuant::None => None,
        ActQuant::Int8Static | ActQuant::Int8Dynamic => Some(Precision::Int(8)),
    }
}

/// One (profile, batch, layer, choice) checked against the contract; `what` names it in messages.
fn check_arithmetic(m: &CostModel, c: &Choice, cost: &LayerCost, what: &str) {
    let k = &cost.kernel;
    assert_eq!(
        k.weights,
        Precision::of_weights(&c.weights),
        "{what}: weights charged"
    );
    if let Some(g) = c.weights.ggml() {
        check_ggml(m, g, cost, what);
        return;
    }
    match named_acts(c) {
        Some(a) => assert_eq!(
            k.acts, a,
            "{what}: act8 in the notation, {} charged",
            k.acts
        ),
        None => assert!(
            is_float(k.acts),
            "{what}: float activations in the notation, {} charged ({k})",
            k.acts
        ),
    }
    if let Some(t) = &cost.then {
        assert!(
            is_float(t.acts),
            "{what}: the second factor multiplies the float intermediate, {} charged ({t})",
            t.acts
        );
    }
    match (c.weights, c.act) {
        (WeightQuant::Int { .. }, ActQuant::None) => assert!(
            matches!(
                k.path,
                KernelPath::WeightOnly { .. } | KernelPath::Dequantized(_) | KernelPath::Lookup
            ),
            "{what}: weight-only, charged {k}"
        ),
        (WeightQuant::Int { .. }, _) => assert!(
            matches!(k.path, KernelPath::Int(_) | KernelPath::BitSerial { .. }),
            "{what}: W×A8, charged {k}"
        ),
        (_, _) => assert!(
            matches!(k.path, KernelPath::Float(_) | KernelPath::Lookup),
            "{what}: float weights, charged {k}"
        ),
    }
    // The behaviour, not only the label: with float activations everywhere, no MAC is computed faster
    // than the device's fastest float kernel.
    if c.act == ActQuant::None && !cost.measured {
        let floor = cost.macs * f64::from(m.batch) / (fastest_float(&m.profile) * 1e3);
        assert!(
            cost.cost.latency_us >= floor * (1.0 - TOL),
            "{what}: {} µs is faster than {} MACs at the fastest float rate ({floor} µs): {k}",
            cost.cost.latency_us,
            cost.macs
        );
    }
}

/// A GGML block format: its weights times its activation blocks on every factor (a lookup's rows come
/// out f32), computed by its kernel where the profile has one (`[ggml]` rate, or a format that holds it
/// exactly), else by the float kernel the profile names on a dequantized copy with the quantize–
/// dequantize pass of the input to those blocks.
fn check_ggml(m: &CostModel, g: GgmlFormat, cost: &LayerCost, what: &str) {
    for k in std::iter::once(&cost.kernel).chain(&cost.then) {
        if k.path == KernelPath::Lookup {
            assert_eq!(k.acts, Precision::F32, "{what}: {k}");
            continue;
        }
        assert_eq!(k.acts, Precision::Q8(g.act_blocks()), "{what}: {k}");
        assert_eq!(
            k.arithmetic(),
            format!("{g}×{}", g.act_blocks()),
            "{what}: {k}"
        );
        match m.profile.ggml_kernel(g) {
            Ok(_) => assert_eq!(k.path, KernelPath::Ggml(g), "{what}: {k}"),
            Err(Precision::Ggml(h)) => {
                assert!(g.held_exactly_by().contains(&h), "{what}");
                assert_eq!(k.path, KernelPath::Ggml(h), "{what}: {k}");
            }
            Err(float) => {
                assert!(float.is_float(), "{what}: falls back to {float}");
                assert_eq!(k.path, KernelPath::Dequantized(float), "{what}: {k}");
                assert!(
                    k.qdq(),
                    "{what}: the quantize–dequantize pass is charged: {k}"
                );
            }
        }
    }
}

/// An N:M choice against its dense twin: sparse work only where the profile declares the pattern at
/// the kernel's precision; elsewhere exactly the dense latency and work.
fn check_nm(m: &CostModel, layer: &LayerInfo, c: &Choice, cost: &LayerCost, what: &str) -> bool {
    let Sparsity::NM { n, m: group } = c.sparsity else {
        return false;
    };
    let dense = m.layer(
        layer,
        &Choice {
            sparsity: Sparsity::None,
            ..*c
        },
    );
    let k = &cost.kernel;
    let declared = m.profile.accelerates_nm(n, group)
        && m.profile.nm_precisions.contains(&k.compute())
        && !matches!(k.path, KernelPath::WeightOnly { .. } | KernelPath::Lookup);
    assert_eq!(
        k.nm.map(|(_, _, how)| matches!(how, NmCompute::Sparse { .. })),
        Some(declared),
        "{what}: {k}"
    );
    if declared {
        assert!(
            cost.macs < dense.macs && cost.cost.latency_us <= dense.cost.latency_us,
            "{what}: declared {n}:{group} at {} but {} MACs / {} µs vs dense {} / {}",
            k.compute(),
            cost.macs,
            cost.cost.latency_us,
            dense.macs,
            dense.cost.latency_us
        );
    } else {
        assert!(
            cost.macs == dense.macs && cost.cost.latency_us == dense.cost.latency_us,
            "{what}: {n}:{group} not declared at {} but {} MACs / {} µs vs dense {} / {}",
            k.compute(),
            cost.macs,
            cost.cost.latency_us,
            dense.macs,
            dense.cost.latency_us
        );
    }
    assert!(
        cost.cost.bytes <= dense.cost.bytes,
        "{what}: N:M never stores more"
    );
    true
}

fn spaces(dir: &Dir) -> Vec<(String, Vec<LayerInfo>, SearchSpace)> {
    let minilm = minilm_folder(dir);
    [
        (ModelSource::Demo, "demo"),
        (ModelSource::Folder(minilm.clone()), "bert-base"),
        (ModelSource::Folder(minilm), "ggml"),
    ]
    .into_iter()
    .map(|(model, name)| {
        let inv = inventory(&model).unwrap();
        let space = mpsearch::shipped::space(name, &inv.layers).unwrap();
        (name.to_string(), inv.layers, space)
    })
    .collect()
}

#[test]
fn every_shipped_profile_charges_the_arithmetic_every_shipped_choice_names() {
    let dir = Dir::new();
    let (mut checked, mut nm_checked, mut act8_checked) = (0usize, 0usize, 0usize);
    let (mut nm_sparse, mut ggml_kernel, mut ggml_fallback) = (0usize, 0usize, 0usize);
    for (space_name, _, space) in spaces(&dir) {
        for (profile, _) in mpsearch::shipped::Kind::Profile.embedded() {
            for batch in BATCHES {
                let m =
                    CostModel::new(mpsearch::shipped::profile(profile).unwrap(), batch).unwrap();
                for g in &space.groups {
                    for &member in &g.members {
                        let layer = &space.layers[member].info;
                        for c in &g.choices {
                            let what = format!(
                                "{profile} batch {batch} {space_name} {} `{c}`",
                                layer.name
                            );
                            let cost = m.layer(layer, c);
                            check_arithmetic(&m, c, &cost, &what);
                            if check_nm(&m, layer, c, &cost, &what) {
                                nm_checked += 1;
                                nm_sparse += usize::from(cost.kernel.sparse_nm());
                            }
                            act8_checked += usize::from(c.act != ActQuant::None);
                            if c.weights.ggml().is_some() {
                                match cost.kernel.path {
                                    KernelPath::Ggml(_) => ggml_kernel += 1,
                                    KernelPath::Dequantized(_) => ggml_fallback += 1,
                                    _ => {}
                                }
                            }
                            checked += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(
        checked > 10_000 && act8_checked > 1000 && nm_checked > 500 && nm_sparse > 50,
        "only {checked} layer choices ({act8_checked} with act8, {nm_checked} N:M, {nm_sparse} sparse)"
    );
    // Every shipped profile states what it does with the q-formats: the CPUs and the GPU run them,
    // the NPU and the bit-serial overlays fall back.
    assert!(
        ggml_kernel > 500 && ggml_fallback > 300,
        "{ggml_kernel} q-format layers on a kernel, {ggml_fallback} on a fallback"
    );
    for (name, _) in mpsearch::shipped::Kind::Profile.embedded() {
        let p = mpsearch::shipped::profile(name).unwrap();
        assert_eq!(
            p.file.ggml.len(),
            GgmlFormat::ALL.len(),
            "{name}.toml: [ggml] names every format"
        );
    }
}

/// The Jetson's sparse tensor cores: 2:4 at int8 and f16 is computed sparsely, at f32 (the CUDA-core
/// path its profile says has no sparsity) and in the weight-only kernels it is dense.
#[test]
fn the_edge_gpu_credits_2_4_only_to_its_tensor_core_kernels() {
    let dir = Dir::new();
    let (_, layers, _) = spaces(&dir).remove(1);
    let ffn = layers
        .iter()
        .find(|l| l.name == "encoder.layer.0.intermediate.dense")
        .unwrap();
    let m = CostModel::new(mpsearch::shipped::profile("jetson-orin-nano").unwrap(), 64).unwrap();
    let c = |s: &str| m.layer(ffn, &s.parse::<Choice>().unwrap());
    let ratio = |s: &str, dense: &str| c(s).cost.latency_us / c(dense).cost.latency_us;
    assert!(
        ratio(
            "int8-sym-channel+act8-dynamic+2:4",
            "int8-sym-channel+act8-dynamic"
        ) < 1.0
    );
    assert!(ratio("f16+2:4", "f16") < 1.0);
    assert_eq!(ratio("f32+2:4", "f32"), 1.0, "{}", c("f32+2:4").kernel);
    assert_eq!(
        ratio("int8-sym-channel+2:4", "int8-sym-channel"),
        1.0,
        "{}",
        c("int8-sym-channel+2:4").kernel
    );
    assert_eq!(
        c("f32+2:4").kernel.to_string(),
        "f32 kernel + 2:4 dense (no N:M on f32)"
    );
}
