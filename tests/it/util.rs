//! Helpers: temporary folders, synthetic Hugging Face model folders, running the binary, the demo
//! model and evaluator, and comparisons of numbers and tensors.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::Tensor;
use mpsearch::compress::ScaleMethod;
use mpsearch::data::Batch;
use mpsearch::eval::{load, CandleEvaluator, EvalSettings};
use mpsearch::model::{
    DemoModel, ForwardCtx, LayerKernel, LayerOverride, Model, ModelSource, Overrides,
};
use mpsearch::space::{Choice, LayerInfo};

/// A temporary folder that lives as long as the value.
pub struct Dir {
    pub tmp: tempfile::TempDir,
}

impl Dir {
    pub fn new() -> Dir {
        Dir {
            tmp: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Writes `text` to `name` inside the folder and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path().join(name);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// Writes a safetensors file holding f32 tensors of these shapes. The data region is left as a sparse
/// hole (all zeros), so large shapes cost no disk; `truncate_by` bytes are cut off the end.
pub fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>)], truncate_by: u64) {
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for (name, shape) in tensors {
        let bytes = 4 * shape.iter().map(|&d| d as u64).product::<u64>();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut text = serde_json::to_string(&header).unwrap();
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(&(text.len() as u64).to_le_bytes()).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    let total = 8 + text.len() as u64 + offset;
    f.set_len(total - truncate_by).unwrap();
}

/// Tensor list of a BERT-family encoder named as Hugging Face's BertModel does.
pub fn bert_tensors(
    prefix: &str,
    vocab: usize,
    hidden: usize,
    inter: usize,
    layers: usize,
) -> Vec<(String, Vec<usize>)> {
    let mut t = vec![
        (
            format!("{prefix}embeddings.word_embeddings.weight"),
            vec![vocab, hidden],
        ),
        (
            format!("{prefix}embeddings.position_embeddings.weight"),
            vec![512, hidden],
        ),
        (
            format!("{prefix}embeddings.token_type_embeddings.weight"),
            vec![2, hidden],
        ),
        (format!("{prefix}embeddings.LayerNorm.weight"), vec![hidden]),
        (format!("{prefix}embeddings.LayerNorm.bias"), vec![hidden]),
    ];
    for i in 0..layers {
        let l = format!("{prefix}encoder.layer.{i}");
        for (name, shape) in [
            ("attention.self.query", vec![hidden, hidden]),
            ("attention.self.key", vec![hidden, hidden]),
            ("attention.self.value", vec![hidden, hidden]),
            ("attention.output.dense", vec![hidden, hidden]),
            ("intermediate.dense", vec![inter, hidden]),
            ("output.dense", vec![hidden, inter]),
        ] {
            t.push((format!("{l}.{name}.weight"), shape.clone()));
            t.push((format!("{l}.{name}.bias"), vec![shape[0]]));
        }
        for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
            t.push((format!("{l}.{ln}.weight"), vec![hidden]));
            t.push((format!("{l}.{ln}.bias"), vec![hidden]));
        }
    }
    t.push((format!("{prefix}pooler.dense.weight"), vec![hidden, hidden]));
    t.push((format!("{prefix}pooler.dense.bias"), vec![hidden]));
    t
}

/// A Hugging Face folder with config.json and model.safetensors of all-MiniLM-L6-v2's shapes
/// (vocabulary 30522, hidden 384, intermediate 1536, 6 layers).
pub fn minilm_folder(dir: &Dir) -> PathBuf {
    let m = dir.path().join("all-MiniLM-L6-v2");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(
        m.join("config.json"),
        r#"{"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 384, "num_hidden_layers": 6}"#,
    )
    .unwrap();
    write_safetensors(
        &m.join("model.safetensors"),
        &bert_tensors("", 30522, 384, 1536, 6),
        0,
    );
    m
}

/// Layers of a tiny made-up model for space tests.
pub fn toy_layers() -> Vec<LayerInfo> {
    let l = |name: &str, rows: usize, cols: usize| LayerInfo {
        name: name.into(),
        kind: mpsearch::space::LayerKind::Linear,
        shape: vec![rows, cols],
        macs: (rows * cols) as u64,
        bias: true,
    };
    vec![
        l("block.0.q", 64, 64),
        l("block.0.k", 64, 64),
        l("block.0.v", 64, 64),
        l("block.0.ffn", 256, 64),
        l("block.1.q", 64, 64),
        l("block.1.k", 64, 64),
        l("block.1.v", 64, 64),
        l("block.1.ffn", 256, 64),
        l("head", 10, 64),
    ]
}

/// Runs the binary with `args` in `cwd`.
/// `--samples 50`: a search measures the demo on its first 50 search and held-out images, a quarter
/// of the full splits' time per evaluation. What the search tests check (journals, resume, caching,
/// fronts against brute force) does not depend on the split sizes.
pub const FEW: [&str; 2] = ["--samples", "50"];

/// [`FEW`] and round-to-nearest: for the tests of the search's machinery (journals, kills and resumes,
/// workers, stores), which GPTQ's calibration in every process would only slow down.
pub const FAST: [&str; 4] = ["--samples", "50", "--rounding", "rtn"];

/// The run settings of [`FAST`], for tests that drive a search through the library.
pub fn fast_config() -> mpsearch::store::RunConfig {
    mpsearch::store::RunConfig {
        samples: Some(50),
        rounding: mpsearch::compress::Rounding::Rtn,
        ..mpsearch::store::RunConfig::default()
    }
}

/// `export RUN --point 1 --recovered --format safetensors --out FILE --store STORE` in `cwd`: the
/// weights of point 1's recovered variant.
pub fn export_recovered(cwd: &Path, run: &str, store: &str, file: &str) {
    ok(
        cwd,
        &[
            "export",
            run,
            "--point",
            "1",
            "--recovered",
            "--format",
            "safetensors",
            "--out",
            file,
            "--store",
            store,
        ],
    );
}

pub fn run(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mpsearch"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run mpsearch")
}

/// Describes a finished command for assertion messages.
pub fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "mpsearch {}\nexit: {:?}\n--- stdout\n{}\n--- stderr\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs and asserts success; returns stdout.
pub fn ok(cwd: &Path, args: &[&str]) -> String {
    let out = run(cwd, args);
    assert!(
        out.status.success(),
        "expected success:\n{}",
        describe(args, &out)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs and asserts exit code 1 with no panic; returns stderr.
pub fn fails(cwd: &Path, args: &[&str]) -> String {
    let out = run(cwd, args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit 1:\n{}",
        describe(args, &out)
    );
    assert!(
        !err.contains("panicked"),
        "panicked:\n{}",
        describe(args, &out)
    );
    err
}

/// Whether the tests run in CI (`CI=true`, as CI services set it): there, a missing resource fails its
/// tests instead of skipping them.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The fetched all-MiniLM-L6-v2 (`MPSEARCH_MINILM`, else scripts/fetch-minilm.sh's cache folder), or
/// why it is not there and how to fetch it.
pub fn minilm_folder_fetched() -> Result<PathBuf, String> {
    let dir = match std::env::var_os("MPSEARCH_MINILM") {
        Some(d) => PathBuf::from(d),
        None => {
            let cache = std::env::var_os("MPSEARCH_CACHE")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/mpsearch"))
                })
                .ok_or("neither MPSEARCH_MINILM, MPSEARCH_CACHE nor HOME is set")?;
            cache.join("all-MiniLM-L6-v2")
        }
    };
    if dir.join("model.safetensors").is_file() {
        Ok(dir)
    } else {
        Err(format!(
            "all-MiniLM-L6-v2 is not at {}: run scripts/fetch-minilm.sh (or set MPSEARCH_MINILM)",
            dir.display()
        ))
    }
}

/// The fetched all-MiniLM-L6-v2, for a test of this crate that can do without it. Tests that need it
/// belong in `tests/external/`, whose harness reports a missing model as an ignored test; here a
/// missing model panics under `CI=true` and is otherwise a `SKIPPED:` line on stderr (written
/// directly, so the harness does not capture it) and `None`.
#[allow(dead_code)] // for tests that can do without the model; none does today
pub fn minilm() -> Option<PathBuf> {
    match minilm_folder_fetched() {
        Ok(dir) => Some(dir),
        Err(why) if in_ci() => panic!("CI=true and {why}"),
        Err(why) => {
            let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
            None
        }
    }
}

/// The embedded demo model.
pub fn demo_model() -> DemoModel {
    DemoModel::embedded().expect("the shipped weights load")
}

/// The candle evaluator of the embedded demo (its model and evaluation data), its weights quantized
/// with scales chosen by `scale`, every other setting the default.
pub fn demo_evaluator(scale: ScaleMethod) -> CandleEvaluator {
    let (model, data) = load(&ModelSource::Demo, None).unwrap();
    let settings = EvalSettings {
        scale,
        ..EvalSettings::default()
    };
    CandleEvaluator::new(model, data, settings).unwrap()
}

/// The demo evaluator with the command line's default scales (MSE), `rounding` (GPTQ by default) and
/// `--samples samples`: what `mpsearch search` and `eval` run with those flags.
pub fn cli_evaluator(
    samples: Option<usize>,
    rounding: mpsearch::compress::Rounding,
) -> CandleEvaluator {
    let (model, data) = mpsearch::eval::load_run_data("demo", None, samples).unwrap();
    let settings = EvalSettings {
        scale: ScaleMethod::Mse,
        rounding,
        ..EvalSettings::default()
    };
    CandleEvaluator::new(model, data, settings).unwrap()
}

/// `model`'s output on `batch` with `layer`'s weight replaced by `weight`.
pub fn forward_with_weight(
    model: &dyn Model,
    batch: &Batch,
    layer: &str,
    weight: Tensor,
) -> mpsearch::Result<Tensor> {
    let overrides: Overrides = [(
        layer.to_string(),
        LayerOverride {
            kernel: Some(LayerKernel::Dense(weight)),
            ..LayerOverride::default()
        },
    )]
    .into();
    let ctx = ForwardCtx {
        overrides: Some(&overrides),
        capture: None,
        timer: None,
    };
    model.forward(batch, &ctx)
}

/// A choice in canonical notation.
pub fn choice(s: &str) -> Choice {
    s.parse().unwrap()
}

/// Largest absolute difference between two f32 tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Whether `a` and `b` differ by at most `rtol` times the larger of their magnitudes (equal zeros
/// are close).
pub fn close(a: f64, b: f64, rtol: f64) -> bool {
    (a - b).abs() <= rtol * a.abs().max(b.abs()).max(1e-300)
}

/// The trials of run `run_name` in store `store` (relative to `cwd`), one JSON value per trial, from
/// `mpsearch trials --json`.
pub fn trials_json(cwd: &Path, store: &str, run_name: &str) -> Vec<serde_json::Value> {
    ok(cwd, &["trials", run_name, "--store", store, "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The environment variable naming a PostgreSQL server for the tests (a superuser's `postgres://`
/// URL; `.ci/run` and `scripts/test-postgres.sh run` set it).
pub const POSTGRES_ENV: &str = "MPSEARCH_TEST_POSTGRES";

/// A fresh database on the test server, dropped (with `FORCE`) when the value goes.
pub struct PgDatabase {
    admin: String,
    name: String,
    /// The database's URL, for `--store`.
    pub url: String,
}

impl PgDatabase {
    /// A fresh database on the server [`POSTGRES_ENV`] names; `None` after a loud `SKIPPED` when
    /// there is none or it cannot be reached, except under `CI=true`, where that fails the test.
    pub fn new(test: &str) -> Option<PgDatabase> {
        let admin = std::env::var(POSTGRES_ENV).ok().filter(|u| !u.is_empty());
        let reached = match admin {
            None => Err(format!("{POSTGRES_ENV} is not set")),
            Some(u) => postgres::Client::connect(&u, postgres::NoTls)
                .map(|c| (u.clone(), c))
                .map_err(|e| format!("cannot connect to {POSTGRES_ENV}={u}: {e}")),
        };
        let (admin, mut client) = match reached {
            Ok(r) => r,
            Err(problem) => {
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!(
                        "{test}: {problem}: under CI=true the PostgreSQL tests must run \
                         (.ci/run starts the server)"
                    );
                }
                // Written to stderr directly, not with eprintln!, so that the harness shows it.
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: {test}: {problem} (`bash scripts/test-postgres.sh run cargo test` \
                     starts a throw-away server)"
                );
                return None;
            }
        };
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "mpsearch_it_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
        let (base, query) = admin
            .split_once('?')
            .map_or((admin.as_str(), None), |(b, q)| (b, Some(q)));
        let scheme_end = base.find("://").map_or(0, |i| i + 3);
        let base = base[scheme_end..]
            .find('/')
            .map_or(base, |i| &base[..scheme_end + i]);
        let url = match query {
            Some(q) => format!("{base}/{name}?{q}"),
            None => format!("{base}/{name}"),
        };
        Some(PgDatabase { admin, name, url })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}
