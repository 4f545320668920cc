//! The evaluation data: a model's three splits (calibration, search, held-out) in batches, with
//! labels where there are any, and [`load`], which pairs each kind of model with its data.

use std::sync::Arc;

use candle_core::Tensor;

use super::{metrics, EvalSplit};
use crate::data::{Batch, SplitSizes};
use crate::error::{Error, Result};
use crate::model::Model;

/// Evaluation data in its three splits (see [`crate::data`]), already in batches: calibration,
/// search (`eval`, what every trial is measured on) and held-out (what front points are measured on
/// again, for reports).
#[derive(Clone, Debug)]
pub struct EvalData {
    /// What it is, for people (`Fashion-MNIST 28x28: 200 search images, 400 held-out, 300 calibration`).
    pub description: String,
    /// The search split: what strategies see.
    pub eval: Vec<Batch>,
    /// True labels of the search split's samples, in order (classifiers); for a language model, each
    /// position's next token ([`metrics::NO_TARGET`] at a window's last position).
    pub labels: Option<Vec<u32>>,
    /// The held-out split: never searched or calibrated on.
    pub held_out: Vec<Batch>,
    /// True labels of the held-out samples, in order (as `labels`).
    pub held_out_labels: Option<Vec<u32>>,
    /// The calibration split (static activation ranges, layer statistics).
    pub calibration: Vec<Batch>,
    /// True labels of the calibration samples, in order (classifiers; gradient importance takes
    /// its cross-entropy on them). Not part of [`EvalData::fingerprint`]: the evaluator's fingerprint
    /// hashes them when its settings read them.
    pub calibration_labels: Option<Vec<u32>>,
    /// Samples in each split.
    pub sizes: SplitSizes,
    /// Hash of the data's content: every split, and which sample is in which.
    pub fingerprint: blake3::Hash,
}

/// The first `n` samples of `batches` and their labels (per sample for a classifier, per position
/// for a language model), and how many samples that is: `--samples`' cut and a proxy's.
pub(super) fn cut(
    batches: &[Batch],
    labels: Option<&[u32]>,
    n: usize,
) -> Result<(Vec<Batch>, Option<Vec<u32>>, usize)> {
    let positions: usize = batches.iter().map(Batch::positions).sum();
    let mut kept = Vec::new();
    let mut left = n;
    for b in batches {
        if left == 0 {
            break;
        }
        let b = b.head(left)?;
        left -= b.len();
        kept.push(b);
    }
    let samples = n - left;
    let labels = labels.map(|l| {
        let per_position = l.len() == positions;
        let count: usize = if per_position {
            kept.iter().map(Batch::positions).sum()
        } else {
            samples
        };
        l[..count.min(l.len())].to_vec()
    });
    Ok((kept, labels, samples))
}

/// Hash of tensors' contents (f32 / u32 bytes), for data fingerprints.
fn hash_tensors(h: &mut blake3::Hasher, tensors: &[&Tensor]) -> Result<()> {
    for t in tensors {
        h.update(format!("{:?}{:?}", t.dtype(), t.dims()).as_bytes());
        match t.dtype() {
            candle_core::DType::U32 => {
                for v in t.flatten_all()?.to_vec1::<u32>()? {
                    h.update(&v.to_le_bytes());
                }
            }
            _ => {
                for v in t
                    .flatten_all()?
                    .to_dtype(candle_core::DType::F32)?
                    .to_vec1::<f32>()?
                {
                    h.update(&v.to_le_bytes());
                }
            }
        }
    }
    Ok(())
}

impl EvalData {
    /// The batches and labels (classifiers) of `split` (a proxy's are those of the search split,
    /// whose first samples it takes).
    pub fn split(&self, split: EvalSplit) -> (&[Batch], Option<&[u32]>) {
        match split {
            EvalSplit::Search | EvalSplit::Proxy(_) => (&self.eval, self.labels.as_deref()),
            EvalSplit::HeldOut => (&self.held_out, self.held_out_labels.as_deref()),
        }
    }

    /// The data with its search and held-out splits cut to their first `n` samples (`--samples`; a
    /// split of fewer keeps them all); the calibration split is kept whole. The fingerprint hashes
    /// the cut, so a cut run's evaluations are cached under their own keys. An error when `n` is 0.
    pub fn head(self, n: usize) -> Result<EvalData> {
        if n == 0 {
            return Err(Error::eval(
                "--samples 0: a quality needs at least one sample; give a positive count, or leave \
                 --samples out to evaluate on every sample",
            ));
        }
        let (eval, labels, search) = cut(&self.eval, self.labels.as_deref(), n)?;
        let (held_out, held_out_labels, held) =
            cut(&self.held_out, self.held_out_labels.as_deref(), n)?;
        let mut h = blake3::Hasher::new();
        h.update(self.fingerprint.as_bytes());
        h.update(format!("head {n}: {search} search, {held} held-out").as_bytes());
        Ok(EvalData {
            description: format!(
                "{} — cut to the first {search} search and {held} held-out (--samples {n})",
                self.description
            ),
            eval,
            labels,
            held_out,
            held_out_labels,
            sizes: SplitSizes {
                search,
                held_out: held,
                ..self.sizes
            },
            fingerprint: h.finalize(),
            ..self
        })
    }

    /// The demo's data: the embedded Fashion-MNIST test images as a search split (200 images), a
    /// held-out split (400) and a calibration split (300).
    pub fn demo() -> Result<EvalData> {
        let fashion = crate::data::FashionMnist::load()?;
        let (search, held_out, calibration) =
            (&fashion.search, &fashion.held_out, &fashion.calibration);
        let mut h = blake3::Hasher::new();
        h.update(b"fashion-mnist-search+held-out+calibration\n");
        hash_tensors(
            &mut h,
            &[
                &search.images,
                &search.labels,
                &held_out.images,
                &held_out.labels,
                &calibration.images,
            ],
        )?;
        let sizes = SplitSizes {
            calibration: calibration.len(),
            search: search.len(),
            held_out: held_out.len(),
        };
        Ok(EvalData {
            description: format!(
                "Fashion-MNIST 28x28: {} search images, {} held-out, {} calibration",
                sizes.search, sizes.held_out, sizes.calibration
            ),
            eval: vec![Batch::Images(search.images.clone())],
            labels: Some(search.classes().to_vec()),
            held_out: vec![Batch::Images(held_out.images.clone())],
            held_out_labels: Some(held_out.classes().to_vec()),
            calibration: vec![Batch::Images(calibration.images.clone())],
            calibration_labels: Some(calibration.classes().to_vec()),
            sizes,
            fingerprint: h.finalize(),
        })
    }

    /// Sentences for an encoder, tokenized once into batches of `batch` sentences.
    pub fn sentences(
        encoder: &crate::model::BertEncoder,
        split: &crate::data::text::TextSplit,
        batch: usize,
        source: &str,
    ) -> Result<EvalData> {
        let tokenize = |s: &[String]| -> Result<Vec<Batch>> {
            s.chunks(batch.max(1))
                .map(|c| encoder.tokenize(c))
                .collect()
        };
        let mut h = blake3::Hasher::new();
        h.update(b"sentences: search, held-out, calibration\n");
        for part in [&split.search, &split.held_out, &split.calibration] {
            h.update(crate::data::text::fingerprint(part).as_bytes());
        }
        h.update(format!("max_tokens={}", encoder.max_tokens()).as_bytes());
        let sizes = SplitSizes {
            calibration: split.calibration.len(),
            search: split.search.len(),
            held_out: split.held_out.len(),
        };
        Ok(EvalData {
            description: format!(
                "{source}: {} search sentences, {} held-out, {} calibration",
                sizes.search, sizes.held_out, sizes.calibration
            ),
            eval: tokenize(&split.search)?,
            labels: None,
            held_out: tokenize(&split.held_out)?,
            held_out_labels: None,
            calibration: tokenize(&split.calibration)?,
            calibration_labels: None,
            sizes,
            fingerprint: h.finalize(),
        })
    }
}

/// Text windows per batch for language models.
pub const WINDOW_BATCH: usize = 8;

impl EvalData {
    /// A language model's data: `text` tokenized once and cut into windows
    /// ([`crate::data::windows`]: of [`crate::data::windows::WINDOW`] tokens, or the model's context
    /// length if shorter), in batches of `WINDOW_BATCH` (8) windows; each position's label is
    /// the next token of its window ([`metrics::NO_TARGET`] at a window's last position).
    pub fn windows(model: &crate::model::LlamaModel, text: &str, source: &str) -> Result<EvalData> {
        let (tokens, window, split) =
            text_windows(model.tokenizer(), model.config().context, text, source)?;
        let batches = |windows: &[Vec<u32>]| -> Result<Vec<Batch>> {
            windows
                .chunks(WINDOW_BATCH)
                .map(crate::model::llama::token_batch)
                .collect()
        };
        let next = |windows: &[Vec<u32>]| -> Vec<u32> {
            windows
                .iter()
                .flat_map(|w| {
                    w.iter()
                        .skip(1)
                        .copied()
                        .chain(std::iter::once(metrics::NO_TARGET))
                })
                .collect()
        };
        let mut h = blake3::Hasher::new();
        h.update(b"text windows: search, held-out, calibration\n");
        for part in [&split.search, &split.held_out, &split.calibration] {
            h.update(&(part.len() as u64).to_le_bytes());
            for w in part {
                h.update(&(w.len() as u64).to_le_bytes());
                w.iter().for_each(|t| {
                    h.update(&t.to_le_bytes());
                });
            }
        }
        let sizes = SplitSizes {
            calibration: split.calibration.len(),
            search: split.search.len(),
            held_out: split.held_out.len(),
        };
        Ok(EvalData {
            description: format!(
                "{source}: {} tokens in {} windows of {window}; {} search windows, {} held-out, {} \
                 calibration",
                tokens.len(),
                split.total,
                sizes.search,
                sizes.held_out,
                sizes.calibration
            ),
            eval: batches(&split.search)?,
            labels: Some(next(&split.search)),
            held_out: batches(&split.held_out)?,
            held_out_labels: Some(next(&split.held_out)),
            calibration: batches(&split.calibration)?,
            calibration_labels: None,
            sizes,
            fingerprint: h.finalize(),
        })
    }
}

/// `text` tokenized and cut into windows for a model with `tokenizer` and `context` (see
/// [`EvalData::windows`]): its tokens, the window length and the split.
fn text_windows(
    tokenizer: &crate::model::GgufTokenizer,
    context: Option<usize>,
    text: &str,
    source: &str,
) -> Result<(Vec<u32>, usize, crate::data::windows::WindowSplit)> {
    use crate::data::windows::{WindowSplit, WINDOW};
    let tokens = tokenizer.encode_plain(text)?;
    let bos = tokenizer.bos().filter(|_| tokenizer.adds_bos());
    // A model trained on shorter contexts gets windows of its context length.
    let window = WINDOW.min(context.unwrap_or(WINDOW));
    let split = WindowSplit::new(&tokens, window, bos, source)?;
    Ok((tokens, window, split))
}

/// The text (a language model's) or sentence file (an encoder's) a model would be evaluated on,
/// checked without loading the model's weights: a file that cannot be read, or a language model's text
/// too short for its windows, is the error [`load`] would give. Lets a command refuse bad data before
/// it writes anything.
pub fn check_data(
    source: &crate::model::ModelSource,
    data: Option<&std::path::Path>,
) -> Result<()> {
    use crate::model::ModelSource;
    match (source, data) {
        (ModelSource::Gguf(file), _) => {
            let (tokenizer, context) = crate::model::llama::tokenizer(file)?;
            let (text, what) = language_text(data)?;
            text_windows(&tokenizer, context, &text, &what).map(|_| ())
        }
        (ModelSource::Folder(_), Some(p)) => crate::data::text::TextSplit::from_file(p).map(|_| ()),
        _ => Ok(()),
    }
}

/// A language model's text: the file's, or the shipped sentences one a line; and its name.
fn language_text(data: Option<&std::path::Path>) -> Result<(String, String)> {
    Ok(match data {
        Some(p) => (crate::data::text::load_text(p)?, p.display().to_string()),
        None => (
            crate::data::text::shipped_text(),
            "shipped text (The Devil's Dictionary)".to_string(),
        ),
    })
}

/// Sentences per batch for encoders.
pub const SENTENCE_BATCH: usize = 32;

/// Loads a model and the data it is evaluated on: the demo with its Fashion-MNIST images, an encoder folder with
/// `sentences` (a file, one per line) or the shipped sentences, or a GGUF decoder with the text of
/// that file (or the shipped sentences, one a line) cut into windows.
pub fn load(
    source: &crate::model::ModelSource,
    sentences: Option<&std::path::Path>,
) -> Result<(Arc<dyn Model>, EvalData)> {
    use crate::model::ModelSource;
    match source {
        ModelSource::Demo => {
            if let Some(p) = sentences {
                return Err(Error::file(
                    p,
                    "the demo model is evaluated on its embedded Fashion-MNIST images; --data applies to encoder and language models",
                ));
            }
            Ok((
                Arc::new(crate::model::DemoModel::embedded()?),
                EvalData::demo()?,
            ))
        }
        ModelSource::Folder(dir) => {
            let encoder = crate::model::BertEncoder::load(dir)?;
            let (split, what) = match sentences {
                Some(p) => (
                    crate::data::text::TextSplit::from_file(p)?,
                    p.display().to_string(),
                ),
                None => (
                    crate::data::text::TextSplit::shipped(),
                    "shipped sentences (The Devil's Dictionary)".to_string(),
                ),
            };
            let data = EvalData::sentences(&encoder, &split, SENTENCE_BATCH, &what)?;
            Ok((Arc::new(encoder), data))
        }
        ModelSource::Gguf(file) => {
            let model = crate::model::LlamaModel::load(file)?;
            let (text, what) = language_text(sentences)?;
            let data = EvalData::windows(&model, &text, &what)?;
            Ok((Arc::new(model), data))
        }
    }
}

/// What a run evaluates on, from its settings: the model `model` names (`demo`, a folder or a GGUF
/// file) with its data ([`load`]), the search and held-out splits cut to their first `samples`
/// when the run set `--samples` ([`EvalData::head`]).
pub fn load_run_data(
    model: &str,
    data: Option<&str>,
    samples: Option<usize>,
) -> Result<(Arc<dyn Model>, EvalData)> {
    let (model, d) = load(
        &crate::model::ModelSource::parse(model),
        data.map(std::path::Path::new),
    )?;
    let d = match samples {
        Some(n) => d.head(n)?,
        None => d,
    };
    Ok((model, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_cuts_the_search_and_held_out_splits_and_their_labels() {
        let full = EvalData::demo().unwrap();
        let cut = full.clone().head(50).unwrap();
        assert_eq!((cut.sizes.search, cut.sizes.held_out), (50, 50));
        assert_eq!(cut.sizes.calibration, full.sizes.calibration);
        assert_eq!(
            cut.labels.as_deref(),
            Some(&full.labels.as_ref().unwrap()[..50])
        );
        assert_eq!(
            cut.held_out_labels.as_deref(),
            Some(&full.held_out_labels.as_ref().unwrap()[..50])
        );
        let samples: usize = cut.eval.iter().map(Batch::len).sum();
        assert_eq!(samples, 50);
        assert_ne!(cut.fingerprint, full.fingerprint);
        assert!(
            cut.description.contains("--samples 50"),
            "{}",
            cut.description
        );
        // More than a split has: that split is kept whole (the held-out one here).
        let wide = full.clone().head(300).unwrap();
        assert_eq!((wide.sizes.search, wide.sizes.held_out), (200, 300));
        assert_ne!(wide.fingerprint, full.fingerprint);
        let err = full.head(0).unwrap_err().to_string();
        assert!(err.contains("--samples 0"), "{err}");
    }

    #[test]
    fn head_cuts_per_position_labels_by_the_positions_kept() {
        let ids =
            Tensor::zeros((3, 4), candle_core::DType::U32, &candle_core::Device::Cpu).unwrap();
        let batch = Batch::Tokens {
            ids: ids.clone(),
            mask: ids,
        };
        let labels: Vec<u32> = (0..12).collect();
        let (kept, l, n) = cut(&[batch], Some(&labels), 2).unwrap();
        assert_eq!(n, 2);
        assert_eq!(kept[0].len(), 2);
        assert_eq!(l.unwrap(), (0..8).collect::<Vec<u32>>());
    }
}
