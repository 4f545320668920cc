//! # Tests that need something from outside the repository
//!
//! all-MiniLM-L6-v2 (fetched by `scripts/fetch-minilm.sh`), SmolLM2-135M as a GGUF file (fetched by
//! `scripts/fetch-smollm2.sh`; its reference test also needs python3 with numpy and gguf) and headless
//! Chromium (Debian's `chromium`).
//! This target has its own harness (libtest-mimic, `harness = false`) because whether they can run is
//! known only when the tests start, and the built-in harness can mark a test ignored only when it is
//! compiled. So a test whose resource is missing is:
//!
//! - **ignored** outside CI: `cargo test` prints `test NAME ... ignored (what is missing and how to get
//!   it)`, counts it in the summary line, and repeats what is missing after it — never a silent pass;
//! - **failed** under `CI=true`, with the same message: CI must have every resource.
//!
//! Run one with `cargo test --test external NAME`; `-- --ignored` runs the tests run only by hand (the
//! MiniLM timing).

#[allow(dead_code)]
#[path = "../it/util.rs"]
mod util;

mod minilm;
mod page;
mod smollm2;
#[allow(dead_code)]
#[path = "../it/tiny_gguf.rs"]
mod tiny_gguf;
mod tiny_llama;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use libtest_mimic::{Arguments, Completion, Failed, Trial};

use crate::util::{in_ci, minilm_folder_fetched};

/// Headless Chromium's command, or why there is none and how to install it.
fn chromium() -> Result<String, String> {
    ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(str::to_string)
        .ok_or_else(|| {
            "chromium is not installed: apt-get install chromium (.ci/run installs it)".to_string()
        })
}

/// A test that needs `resource`: run with it when it is there; else failed under CI and ignored, with
/// the reason, outside. `by_hand` tests are ignored unless asked for (`-- --ignored`).
fn needs<T: Clone + Send + 'static>(
    name: &str,
    resource: &Result<T, String>,
    by_hand: bool,
    test: fn(T),
) -> Trial {
    let resource = resource.clone();
    Trial::ignorable_test(name, move || match resource {
        Ok(r) => {
            test(r);
            Ok(Completion::Completed)
        }
        Err(why) if in_ci() => Err(Failed::from(format!("CI=true and {why}"))),
        Err(why) => Ok(Completion::ignored_with(why)),
    })
    .with_ignored_flag(by_hand)
}

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let minilm: Result<PathBuf, String> = minilm_folder_fetched();
    let chromium = chromium();
    let smollm2 = smollm2::fetched();
    let reference = smollm2::with_reference();
    let python = smollm2::python_reference();
    let trials = vec![
        needs(
            "tiny_llama::match_the_numpy_reference",
            &python,
            false,
            tiny_llama::match_the_numpy_reference,
        ),
        needs(
            "smollm2::logits_match_the_numpy_reference",
            &reference,
            false,
            smollm2::logits_match_the_numpy_reference,
        ),
        needs(
            "smollm2::tokenizer_matches_independent_ids",
            &smollm2,
            false,
            smollm2::tokenizer_matches_independent_ids,
        ),
        needs(
            "smollm2::inventory_has_llama_cpp_names",
            &smollm2,
            false,
            smollm2::inventory_has_llama_cpp_names,
        ),
        needs(
            "minilm::matches_sentence_transformers",
            &minilm,
            false,
            minilm::matches_sentence_transformers,
        ),
        needs(
            "minilm::inventory_is_the_folder_inventory_without_the_pooler",
            &minilm,
            false,
            minilm::inventory_is_the_folder_inventory_without_the_pooler,
        ),
        needs(
            "minilm::int8_keeps_the_embeddings",
            &minilm,
            false,
            minilm::int8_keeps_the_embeddings,
        ),
        needs(
            "minilm::q_format_layer_is_candles_qmatmul",
            &minilm,
            false,
            minilm::q_format_layer_is_candles_qmatmul,
        ),
        needs(
            "minilm::frugal_setup_measures_fewer_pairs_than_the_space",
            &minilm,
            false,
            minilm::frugal_setup_measures_fewer_pairs_than_the_space,
        ),
        needs(
            "minilm::recovery_of_an_int4_encoder_wins_back_held_out_cosine",
            &minilm,
            false,
            minilm::recovery_of_an_int4_encoder_wins_back_held_out_cosine,
        ),
        needs(
            "minilm::default_recovery_of_an_int4_encoder_reaches_0_98",
            &minilm,
            true,
            minilm::default_recovery_of_an_int4_encoder_reaches_0_98,
        ),
        needs("minilm::eval_timing", &minilm, true, minilm::eval_timing),
        needs(
            "page::loads_in_headless_chromium_with_every_image_decoded",
            &chromium,
            false,
            page::loads_with_every_image_decoded,
        ),
    ];
    let conclusion = libtest_mimic::run(&args, trials);
    if !args.list && !in_ci() {
        let missing = [minilm.err(), chromium.err(), reference.err()];
        for why in missing.into_iter().flatten() {
            eprintln!("ignored because {why}");
        }
    }
    conclusion.exit_code()
}
