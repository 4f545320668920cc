//! `mpsearch export` round trips on the demo: the JSON export re-evaluates (`eval`) and re-costs
//! (`cost`) to the trial's stored figures; the llama.cpp lines have one parseable line per layer; the
//! safetensors export reads back (`load_compressed`) to the evaluator's compressed weights bit for bit
//! and the model run with them reproduces the evaluated quality — for front points of a real search
//! and for hand-built assignments that use every compact form (integer codes of every width, per
//! tensor / channel / group, unstructured, N:M, removed channels, low rank, f16, bf16).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::Tensor;
use mpsearch::compress::{Importance, Rounding, ScaleMethod};
use mpsearch::eval::{metrics, CandleEvaluator, EvalData, Evaluator};
use mpsearch::export::safetensors::{
    load_compressed, max_difference, read_compressed, write_compressed, ExportInfo,
    LayerCalibration,
};
use mpsearch::model::{ForwardCtx, LayerKernel, LayerOverride, Model, ModelSource, Overrides};
use mpsearch::space::{Assignment, Choice};

use crate::util::{close, fails, ok, run, trials_json, Dir, FEW};

/// Largest difference allowed between a weight read back from the file and the evaluator's
/// compressed weight: none (the reader repeats the same f32 operations).
const WEIGHT_TOL: f32 = 0.0;
/// Relative difference allowed between a re-evaluated quality and the stored one. The forward pass
/// and metrics are deterministic, so re-evaluation gives the same number; this only allows for the
/// f64 digits of a JSON round trip.
const QUALITY_REL_TOL: f64 = 1e-12;

/// GGML type names the llama.cpp lines may use.
const GGML_TYPES: [&str; 13] = [
    "f32", "f16", "bf16", "q8_0", "q6_k", "q5_k", "q5_0", "q5_1", "q4_k", "q4_0", "q4_1", "q3_k",
    "q2_k",
];

/// A seeded 24-trial NSGA-II search: its random half of generation 0 mixes quantization, sparsity and
/// rank in single layers, which the round trip needs (bayes, the default, stays near the front).
fn search(cwd: &Path) {
    ok(
        cwd,
        &[
            "search",
            "--store",
            "s",
            "--run",
            "r",
            "--trials",
            "24",
            "--pairs",
            "24",
            FEW[0],
            FEW[1],
            "--strategy",
            "evolution",
        ],
    );
}

fn front(cwd: &Path) -> Vec<serde_json::Value> {
    let runs: serde_json::Value =
        serde_json::from_str(&ok(cwd, &["runs", "--store", "s", "--json"])).unwrap();
    runs[0]["front"].as_array().unwrap().clone()
}

/// The model with `weights` in place of the compressed layers' weights (activations quantized as each
/// layer's choice says; dynamic only), scored against the f32 model as the evaluator scores.
fn quality_with(
    model: &dyn Model,
    data: &EvalData,
    weights: &BTreeMap<String, Tensor>,
    assignment: &Assignment,
) -> f64 {
    let mut overrides = Overrides::new();
    for l in &model.inventory().layers {
        let c = assignment.get(&l.name).copied().unwrap_or(Choice::F32);
        if c.is_uncompressed() {
            continue;
        }
        overrides.insert(
            l.name.clone(),
            LayerOverride {
                kernel: weights.get(&l.name).cloned().map(LayerKernel::Dense),
                act: c.act,
                act_range: None,
                straight_through: false,
            },
        );
    }
    let run = |ctx: &ForwardCtx| -> Vec<Vec<f32>> {
        data.eval
            .iter()
            .flat_map(|b| model.forward(b, ctx).unwrap().to_vec2::<f32>().unwrap())
            .collect()
    };
    let reference = run(&ForwardCtx::default());
    let out = run(&ForwardCtx {
        overrides: Some(&overrides),
        capture: None,
        timer: None,
    });
    metrics::classifier(&reference, &out, data.labels.as_ref().unwrap())["kl_divergence"]
}

/// The demo, its data and the evaluator a search with the command line's defaults runs.
fn evaluator() -> (Arc<dyn Model>, EvalData, CandleEvaluator) {
    let ev = crate::util::cli_evaluator(
        Some(FEW[1].parse().unwrap()),
        mpsearch::compress::Rounding::gptq(),
    );
    (ev.model().clone(), ev.data().clone(), ev)
}

/// The file's weights equal the evaluator's compressed weights, and running the model with them
/// gives the evaluator's quality; returns (evaluated, reproduced).
fn check_weights(
    file: &Path,
    ev: &CandleEvaluator,
    data: &EvalData,
    asg: &Assignment,
) -> (f64, f64) {
    let loaded = load_compressed(file).unwrap();
    let overrides = ev.overrides(asg).unwrap();
    let mut compared = 0;
    for (name, o) in &overrides {
        match (o.dense_weight(), loaded.get(name)) {
            (Some(w), Some(l)) => {
                let d = max_difference(w, l).unwrap();
                assert!(
                    d <= WEIGHT_TOL,
                    "{}: layer {name} ({}) differs by {d} from the evaluator's weight",
                    file.display(),
                    asg.get(name).unwrap()
                );
                compared += 1;
            }
            (None, None) => {}
            (w, l) => panic!(
                "{}: layer {name}: evaluator weight {} but file weight {}",
                file.display(),
                w.is_some(),
                l.is_some()
            ),
        }
    }
    assert_eq!(
        compared,
        loaded.len(),
        "the file holds layers the evaluator does not change"
    );
    let evaluated = ev.evaluate(asg).unwrap().quality;
    let reproduced = quality_with(ev.model().as_ref(), data, &loaded, asg);
    (evaluated, reproduced)
}

#[test]
fn exports_of_a_search_round_trip() {
    let d = Dir::new();
    let cwd = d.path();
    search(cwd);
    let all = trials_json(cwd, "s", "r");
    let fr = front(cwd);
    assert!(!fr.is_empty());
    let (model, data, ev) = evaluator();
    let space = mpsearch::shipped::space("demo", &model.inventory().layers).unwrap();

    for k in 1..=fr.len() {
        let point = k.to_string();
        let trial = &fr[k - 1];
        let stored_q = trial["quality"].as_f64().unwrap();

        // JSON: exactly the trial's assignment; eval and cost reproduce its quality and cost.
        // Standard error quotes its held-out quality beside the search one.
        let held_q = trial["held_out_quality"]
            .as_f64()
            .expect("held-out quality");
        let args = [
            "export", "r", "--store", "s", "--point", &point, "--format", "json",
        ];
        let out = run(cwd, &args);
        assert!(
            out.status.success(),
            "{}",
            crate::util::describe(&args, &out)
        );
        let json = String::from_utf8(out.stdout).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("search quality {stored_q:.4e}"))
                && err.contains(&format!("held-out quality {held_q:.4e}")),
            "{err}"
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v, trial["assignment"], "point {k}: plain assignment JSON");
        let file = d.write(&format!("p{k}.json"), &json);
        let file = file.to_str().unwrap();
        let e: serde_json::Value = serde_json::from_str(&ok(
            cwd,
            &[
                "eval",
                "--assignment",
                file,
                "--profile",
                "cortex-a76",
                FEW[0],
                FEW[1],
            ],
        ))
        .unwrap();
        let q = e["quality"].as_f64().unwrap();
        assert!(
            close(q, stored_q, QUALITY_REL_TOL),
            "point {k}: eval gives {q}, stored {stored_q}"
        );
        let c: serde_json::Value = serde_json::from_str(&ok(
            cwd,
            &[
                "cost",
                "--profile",
                "cortex-a76",
                "--assignment",
                file,
                "--json",
            ],
        ))
        .unwrap();
        assert_eq!(c["total"]["bytes"], trial["cost"]["bytes"], "point {k}");
        let (lat, stored_lat) = (
            c["total"]["latency_us"].as_f64().unwrap(),
            trial["cost"]["latency_us"].as_f64().unwrap(),
        );
        assert!(
            close(lat, stored_lat, QUALITY_REL_TOL),
            "point {k}: latency {lat} vs {stored_lat}"
        );

        // Safetensors: the evaluator's weights bit for bit, and the stored quality.
        let out = format!("p{k}.safetensors");
        ok(
            cwd,
            &[
                "export",
                "r",
                "--store",
                "s",
                "--point",
                &point,
                "--format",
                "safetensors",
                "--out",
                &out,
            ],
        );
        let asg = space
            .assignment_from_json(&serde_json::from_value(trial["assignment"].clone()).unwrap())
            .unwrap();
        assert_eq!(asg.hash_hex(), trial["hash"].as_str().unwrap());
        let number = trial["trial"].as_u64().unwrap() as usize;
        assert_eq!(all[number]["hash"], trial["hash"]);
        let (evaluated, reproduced) = check_weights(&cwd.join(&out), &ev, &data, &asg);
        assert!(
            close(evaluated, stored_q, QUALITY_REL_TOL),
            "point {k}: {evaluated} vs stored {stored_q}"
        );
        assert!(
            close(reproduced, stored_q, QUALITY_REL_TOL),
            "point {k}: the file's weights give {reproduced}, stored {stored_q}"
        );
        eprintln!(
            "point {k}: stored quality {stored_q:e}, reproduced from the file {reproduced:e}"
        );
        let meta = read_compressed(&cwd.join(&out)).unwrap().metadata;
        assert_eq!(meta["run"], "r");
        assert_eq!(meta["trial"], trial["trial"].to_string());
        assert_eq!(meta["point"], point);
        assert_eq!(meta["assignment_hash"], trial["hash"].as_str().unwrap());
        assert_eq!(meta["held_out_quality"].parse::<f64>().unwrap(), held_q);

        // llama.cpp: one comment and one parseable --tensor-type line per layer, in layer order.
        let lines = ok(
            cwd,
            &[
                "export",
                "r",
                "--store",
                "s",
                "--point",
                &point,
                "--format",
                "llama-cpp",
            ],
        );
        let tt: Vec<&str> = lines
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .collect();
        let layers = &model.inventory().layers;
        assert_eq!(tt.len(), layers.len(), "{lines}");
        for (line, l) in tt.iter().zip(layers) {
            let spec = line.strip_prefix("--tensor-type ").expect(line);
            let (name, ty) = spec.split_once('=').expect(line);
            assert_eq!(name, format!("{}.weight", l.name), "{lines}");
            assert!(GGML_TYPES.contains(&ty), "{ty}: {lines}");
            assert!(
                lines.contains(&format!(
                    "# {}: {} -> {ty} (",
                    l.name,
                    asg.get(&l.name).unwrap()
                )),
                "no comment for {}: {lines}",
                l.name
            );
        }
        assert!(lines.contains("has no GGUF form"), "{lines}");
    }

    // --trial: a trial off the front whose layer combines integer codes, sparsity and low rank.
    let mixed = all
        .iter()
        .find(|t| {
            t["state"] == "complete"
                && t["assignment"]["layers"]
                    .as_object()
                    .into_iter()
                    .flat_map(|m| m.values())
                    .chain(std::iter::once(&t["assignment"]["default"]))
                    .filter_map(|c| c.as_str())
                    .any(|c| {
                        c.starts_with("int")
                            && c.contains("rank")
                            && (c.contains("sparse") || c.contains(':'))
                    })
        })
        .expect("the seeded 24-trial search has a trial with int + sparsity + rank in one layer");
    let n = mixed["trial"].to_string();
    ok(
        cwd,
        &[
            "export",
            "r",
            "--store",
            "s",
            "--trial",
            &n,
            "--format",
            "safetensors",
        ],
    );
    let asg = space
        .assignment_from_json(&serde_json::from_value(mixed["assignment"].clone()).unwrap())
        .unwrap();
    let file = cwd.join(format!("r-trial{n}.safetensors"));
    let file = if file.exists() {
        file
    } else {
        // The trial is on the front: the file is named by its point.
        let k = fr
            .iter()
            .position(|t| t["trial"] == mixed["trial"])
            .unwrap()
            + 1;
        cwd.join(format!("r-point{k}.safetensors"))
    };
    let (_, reproduced) = check_weights(&file, &ev, &data, &asg);
    let stored_q = mixed["quality"].as_f64().unwrap();
    assert!(
        close(reproduced, stored_q, QUALITY_REL_TOL),
        "trial {n}: {reproduced} vs stored {stored_q}"
    );
    eprintln!(
        "trial {n} (int + sparsity + rank): stored quality {stored_q:e}, reproduced {reproduced:e}"
    );
    std::fs::remove_file(&file).unwrap();

    // Without --point: the best point (no limits: the knee), said on stderr; the default file name.
    let out = run(
        cwd,
        &["export", "r", "--store", "s", "--format", "safetensors"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("picked as front point"), "{err}");
    assert!(
        err.contains("knee") || err.contains("ideal corner"),
        "{err}"
    );
    let written: Vec<_> = std::fs::read_dir(cwd)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("r-point") && n.ends_with(".safetensors"))
        .collect();
    assert_eq!(written.len(), 1, "{written:?}");

    // Errors name the run and the range.
    let n = fr.len().to_string();
    let e = fails(
        cwd,
        &[
            "export", "r", "--store", "s", "--point", "99", "--format", "json",
        ],
    );
    assert!(e.contains(&format!("--point takes 1 to {n}")), "{e}");
    let e = fails(cwd, &["export", "nope", "--store", "s", "--format", "json"]);
    assert!(e.contains("has no run `nope`") && e.contains("r"), "{e}");
}

#[test]
fn limits_pick_the_best_point_or_the_closest_trial() {
    let d = Dir::new();
    let cwd = d.path();
    // A quality limit: the cheapest front point.
    ok(
        cwd,
        &[
            "search",
            "--store",
            "s",
            "--run",
            "q",
            "--trials",
            "16",
            "--pairs",
            "24",
            FEW[0],
            FEW[1],
            "--max-drop",
            "0.001",
        ],
    );
    let out = run(cwd, &["export", "q", "--store", "s", "--format", "json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("front point 1 of"), "{err}");
    assert!(
        err.contains("cheapest point within the quality limit"),
        "{err}"
    );

    // A quality limit nothing meets: the closest trial, said loudly; --point has nothing to pick. The
    // space has no float choice, so no trial can reach the f32 model's quality (the dear end of the
    // predicted front is all-f32 in the shipped space).
    d.write(
        "int-only.toml",
        "[space]\nname = \"int-only\"\n[defaults]\nfloat = []\nbits = [8, 4]\n",
    );
    ok(
        cwd,
        &[
            "search",
            "--space",
            "int-only.toml",
            "--store",
            "s",
            "--run",
            "none",
            "--trials",
            "8",
            "--pairs",
            "24",
            FEW[0],
            FEW[1],
            "--max-drop",
            "1e-30",
        ],
    );
    let out = run(cwd, &["export", "none", "--store", "s", "--format", "json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("NO TRIAL MEETS THE RUN'S LIMITS"), "{err}");
    assert!(err.contains("does NOT meet the run's limits"), "{err}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["layers"].is_object());
    let e = fails(
        cwd,
        &[
            "export", "none", "--store", "s", "--point", "1", "--format", "json",
        ],
    );
    assert!(e.contains("has no front yet"), "{e}");
}

/// Every compact form, on assignments the demo space need not allow (the library takes any).
#[test]
fn every_compact_form_reads_back_exactly() {
    let d = Dir::new();
    // Round-to-nearest: the hand exports below are written without calibration statistics.
    let ev = crate::util::demo_evaluator(ScaleMethod::Mse);
    let data = ev.data().clone();
    let assignments = [
        [
            ("conv1", "int6-sym-tensor"),
            ("conv2", "int4-asym-channel+sparse50+rank50"),
            ("fc1", "int3-sym-g32+2:4+rank50"),
            ("fc2", "bf16+channels25"),
        ],
        [
            ("conv1", "f16+sparse30"),
            ("conv2", "int5-asym-g16+channels25+rank50"),
            ("fc1", "f32+4:8"),
            ("fc2", "int2-asym-g32+act8-dynamic"),
        ],
        [
            ("conv1", "f32+act8-dynamic"),
            ("conv2", "f32+rank25"),
            ("fc1", "int8-sym-channel+act8-dynamic+sparse70+rank30"),
            ("fc2", "int7-asym-tensor+channels10"),
        ],
        // N:M along input channels: conv1 has one input channel (all of it a dense tail), conv2
        // 8 channels at 9 kernel positions, fc2's A (10×5) one run of 4 and a tail of 1.
        [
            ("conv1", "int8-sym-channel+2:4"),
            ("conv2", "int4-asym-g32+2:4"),
            ("fc1", "bf16+4:8+rank50"),
            ("fc2", "int5-sym-channel+2:4+rank50"),
        ],
    ];
    for (i, a) in assignments.iter().enumerate() {
        let asg = Assignment::new(a.iter().map(|(l, c)| (l.to_string(), c.parse().unwrap())));
        let path = d.path().join(format!("a{i}.safetensors"));
        let info = hand_export(i as u64, &asg);
        let s = write_compressed(
            ev.model().as_ref(),
            &asg,
            &info,
            &LayerCalibration::default(),
            &path,
        )
        .unwrap();
        let (evaluated, reproduced) = check_weights(&path, &ev, &data, &asg);
        assert!(
            close(evaluated, reproduced, QUALITY_REL_TOL),
            "assignment {i}: evaluated {evaluated}, from the file {reproduced}"
        );
        // Low-rank layers are stored as two factors, never as the product.
        let file = read_compressed(&path).unwrap();
        let header = std::fs::read(&path).unwrap();
        let names = safetensors::SafeTensors::deserialize(&header)
            .unwrap()
            .names()
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>();
        for (layer, c) in &file.choices {
            if c.rank.is_some() {
                assert!(
                    names.iter().any(|n| n.starts_with(&format!("{layer}.a."))),
                    "{names:?}"
                );
                assert!(
                    !names.iter().any(|n| n.starts_with(&format!("{layer}.w."))),
                    "{names:?}"
                );
            }
        }
        if i == 2 {
            // conv1 is f32 with int8 activations; conv3..conv5 are not in the assignment.
            assert_eq!(s.left_out, ["conv1", "conv3", "conv4", "conv5"]);
        }
        eprintln!(
            "assignment {i}: {} tensors, {} bytes; quality {evaluated:e} reproduced {reproduced:e}",
            s.tensors, s.bytes
        );
    }
    // Compact: int3 2:4 codes take 3 bits per kept value plus 2 index bits.
    let names: Vec<String> = {
        let bytes = std::fs::read(d.path().join("a0.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let b = st.tensor("fc1.b.codes").unwrap();
        // fc1 at rank 50: B is 128×1568, 2:4 keeps 100,352 values: 3 bits each.
        assert_eq!(b.data().len(), 100352 * 3 / 8);
        assert_eq!(
            st.tensor("fc1.b.nm_index").unwrap().data().len(),
            100352 * 2 / 8
        );
        st.names().into_iter().map(str::to_string).collect()
    };
    assert!(names.contains(&"fc2.w.rows".to_string()), "{names:?}");
    assert!(names.contains(&"conv2.a.mask".to_string()), "{names:?}");
}

/// N:M on a convolution: the file stores, for every output channel and kernel position, 2 of each run
/// of 4 input channels (channels-last order), and reads back to the pruner's weight, 2 non-zeros in
/// every `w[o, c..c+4, i, j]`.
#[test]
fn conv_nm_is_stored_along_input_channels() {
    let d = Dir::new();
    let (_, _, ev) = evaluator();
    let asg = Assignment::new([("conv3".to_string(), "f32+2:4".parse().unwrap())]);
    let path = d.path().join("nm.safetensors");
    let info = hand_export(0, &asg);
    write_compressed(
        ev.model().as_ref(),
        &asg,
        &info,
        &LayerCalibration::default(),
        &path,
    )
    .unwrap();
    let w = load_compressed(&path).unwrap()["conv3"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    // conv3: [16, 16, 3, 3].
    let at = |o: usize, c: usize, p: usize| (o * 16 + c) * 9 + p;
    for o in 0..16 {
        for p in 0..9 {
            for c0 in (0..16).step_by(4) {
                let nz = (c0..c0 + 4).filter(|&c| w[at(o, c, p)] != 0.0).count();
                assert_eq!(nz, 2, "w[{o}, {c0}..{}, {p}]", c0 + 4);
            }
        }
    }
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    // 16 rows × 9 positions × 4 runs × 2 kept: f32 values, and a 2-bit place each.
    let stored = 16 * 9 * 4 * 2;
    assert_eq!(
        st.tensor("conv3.w.values").unwrap().data().len(),
        stored * 4
    );
    let places = st.tensor("conv3.w.nm_index").unwrap().data().to_vec();
    assert_eq!(places.len(), stored * 2 / 8);
    // The first run is w[0, 0..4, 0, 0]: its two places are those of its non-zeros.
    let first: Vec<u8> = (0..4u8)
        .filter(|&c| w[at(0, c as usize, 0)] != 0.0)
        .collect();
    assert_eq!(vec![places[0] & 3, (places[0] >> 2) & 3], first);
    let file = read_compressed(&path).unwrap();
    assert_eq!(file.metadata["format_version"], "3");
}

#[test]
fn a_file_that_is_not_an_export_is_refused() {
    let d = Dir::new();
    let p = d.path().join("x.safetensors");
    std::fs::write(&p, b"not a safetensors file").unwrap();
    let e = load_compressed(&p).unwrap_err().to_string();
    assert!(
        e.contains("x.safetensors") && e.contains("not a safetensors file"),
        "{e}"
    );
    // A safetensors file without the export's metadata.
    let weights = d.path().join("w.safetensors");
    let t = Tensor::zeros(4, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    candle_core::safetensors::save(&std::collections::HashMap::from([("x", t)]), &weights).unwrap();
    let e = load_compressed(&weights).unwrap_err().to_string();
    assert!(e.contains("not an mpsearch compressed-weights file"), "{e}");
}

/// BERT-family layers take llama.cpp's GGUF tensor names (all-MiniLM-L6-v2's shapes; header only).
#[test]
fn bert_lines_use_gguf_names() {
    use mpsearch::export::llama::{tensor_type_lines, LinesHeader};
    let d = Dir::new();
    let folder = crate::util::minilm_folder(&d);
    let inv = mpsearch::model::inventory(&ModelSource::Folder(folder)).unwrap();
    let c: Choice = "int4-asym-g32".parse().unwrap();
    let asg = Assignment::new(inv.layers.iter().map(|l| (l.name.clone(), c)));
    let text = tensor_type_lines(
        &inv.layers,
        &asg,
        &LinesHeader {
            source: "test".into(),
            architecture: inv.architecture.clone(),
        },
    );
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("--tensor-type "))
        .collect();
    assert_eq!(lines.len(), inv.layers.len(), "{text}");
    for want in [
        "--tensor-type token_embd.weight=q4_1",
        "--tensor-type blk.0.attn_q.weight=q4_1",
        "--tensor-type blk.0.attn_k.weight=q4_1",
        "--tensor-type blk.0.attn_v.weight=q4_1",
        "--tensor-type blk.3.attn_output.weight=q4_1",
        "--tensor-type blk.5.ffn_up.weight=q4_1",
        "--tensor-type blk.5.ffn_down.weight=q4_1",
    ] {
        assert!(lines.contains(&want), "{want} missing:\n{text}");
    }
    assert!(text.contains("llama.cpp's GGUF names for BERT"), "{text}");
    assert!(text.contains("(same format)"), "{text}");
}

/// What a hand-made export of `asg` (no run behind it) records: trial `trial`, MSE scales, rounded to
/// nearest.
fn hand_export(trial: u64, asg: &Assignment) -> ExportInfo {
    ExportInfo {
        run: "hand".into(),
        trial,
        point: None,
        hash: asg.hash_hex(),
        quality: None,
        held_out_quality: None,
        quality_metric: "kl_divergence".into(),
        cost_objective: "latency".into(),
        model: "demo".into(),
        space: "none".into(),
        scale: ScaleMethod::Mse,
        rounding: Rounding::Rtn,
        importance: Importance::Magnitude,
    }
}

/// A GGML-format layer is stored as candle's blocks (ggml's byte layout, U8, format in the metadata)
/// and reads back to exactly the compressed weight: the blocks dequantized, the values candle's kernel
/// multiplies. Removed channels keep their kept rows' blocks only; a factorized layer stores both
/// factors' blocks.
#[test]
fn ggml_layers_are_stored_as_their_blocks_and_read_back_exactly() {
    use candle_core::quantized::{GgmlDType, QTensor};
    use mpsearch::compress::apply_choice;
    let d = Dir::new();
    let (model, _, _) = evaluator();
    for (i, a) in [
        [("fc1", "q4_0"), ("fc2", "q5_1+channels25")],
        [("fc1", "q8_0+rank50"), ("fc2", "q4_0")],
    ]
    .iter()
    .enumerate()
    {
        let asg = Assignment::new(a.iter().map(|(l, c)| (l.to_string(), c.parse().unwrap())));
        let path = d.path().join(format!("g{i}.safetensors"));
        write_compressed(
            model.as_ref(),
            &asg,
            &hand_export(i as u64, &asg),
            &LayerCalibration::default(),
            &path,
        )
        .unwrap();
        let file = read_compressed(&path).unwrap();
        assert_eq!(file.metadata["format_version"], "3");
        for (layer, c) in a {
            let choice: Choice = c.parse().unwrap();
            let w = model.weight(layer).unwrap();
            let expected = apply_choice(&w, &choice, ScaleMethod::Mse).unwrap();
            let d = max_difference(&expected, &file.weights[*layer]).unwrap();
            assert_eq!(d, 0.0, "{layer} `{c}` reads back {d} away");
            assert!(file.metadata["layers"].contains(&format!("\"format\":\"{}\"", choice.weights)));
        }
        let bytes = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let len = |t: &str| st.tensor(t).unwrap().data().len();
        if i == 0 {
            // fc1 [256, 1568] in q4_0: 256 rows × 49 blocks × 18 bytes, byte for byte candle's.
            let blocks = st.tensor("fc1.w.blocks").unwrap();
            assert_eq!(blocks.dtype(), safetensors::Dtype::U8);
            let w = model.weight("fc1").unwrap();
            let q = QTensor::quantize(&w, GgmlDType::Q4_0).unwrap();
            assert_eq!(blocks.data(), &*q.data().unwrap());
            assert_eq!(blocks.data().len(), 256 * 49 * 18);
            // ... and they dequantize to the weight read back.
            let back = q.dequantize(&candle_core::Device::Cpu).unwrap();
            assert_eq!(max_difference(&back, &file.weights["fc1"]).unwrap(), 0.0);
            // fc2 [10, 256] without 25% of its rows: 7 kept rows × 8 blocks × 24 bytes.
            assert_eq!(len("fc2.w.blocks"), 7 * 8 * 24);
            assert_eq!(len("fc2.w.rows"), 7 * 4);
            assert!(st.tensor("fc2.w.values").is_err());
        } else {
            // fc1 at rank 50: A is 256 × 128 (four 32-blocks a row), B 128 × 1568 (49 blocks a row).
            assert_eq!(len("fc1.a.blocks"), 256 * 4 * 34);
            assert_eq!(len("fc1.b.blocks"), 128 * 49 * 34);
            assert_eq!(len("fc2.w.blocks"), 10 * 8 * 18);
        }
    }
}

/// A GGML block-format choice is written as exactly its type, the same format; an int choice still
/// maps to the closest one.
#[test]
fn ggml_choices_are_exported_to_llama_cpp_as_their_own_type() {
    use mpsearch::export::llama::{tensor_type_lines, LinesHeader};
    let d = Dir::new();
    let folder = crate::util::minilm_folder(&d);
    let inv = mpsearch::model::inventory(&ModelSource::Folder(folder)).unwrap();
    let asg = Assignment::new(inv.layers.iter().map(|l| {
        let c = if l.name.ends_with("output.dense") && !l.name.contains("attention") {
            "q4_k"
        } else if l.name.contains("attention.self.value") {
            "q8_0+channels25"
        } else {
            "q5_0"
        };
        (l.name.clone(), c.parse::<Choice>().unwrap())
    }));
    let text = tensor_type_lines(
        &inv.layers,
        &asg,
        &LinesHeader {
            source: "test".into(),
            architecture: inv.architecture.clone(),
        },
    );
    assert!(
        text.contains("--tensor-type blk.0.ffn_down.weight=q4_k"),
        "{text}"
    );
    assert!(
        text.contains("--tensor-type blk.2.attn_q.weight=q5_0"),
        "{text}"
    );
    assert!(
        text.contains("--tensor-type blk.4.attn_v.weight=q8_0"),
        "{text}"
    );
    assert!(
        text.contains("# encoder.layer.0.output.dense: q4_k -> q4_k (same format)"),
        "{text}"
    );
    assert!(
        text.contains("q8_0+channels25 -> q8_0 (NOT EXACT: channels25 dropped"),
        "{text}"
    );
    for line in text.lines().filter(|l| l.starts_with("# encoder")) {
        assert!(
            !line.contains("becomes"),
            "a q-format is never approximated: {line}"
        );
    }
}
