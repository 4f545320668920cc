//! # The input a measurement times
//!
//! A batch of `samples` samples from the run's **search split**, in the shape the model runs:
//!
//! - images (the demo CNN): the split's first `samples` images, in order;
//! - token sequences (BERT-family encoders): every sentence exactly `tokens` long, so that the work is
//!   known and the same for every sample — the split's sentences of at least `tokens` tokens, in
//!   order, each cut as the tokenizer truncates (`[CLS]`, the first `tokens − 2` word pieces, then the
//!   sentence's own `[SEP]`), with no padding (the mask is all ones). A forward pass computes every
//!   position of a batch, padding included, so a padded batch would time more work than its real
//!   tokens.
//!
//! When the split has fewer such samples than asked, they are used again from the first (the
//! description says so): latency depends on the shape, not on which sample fills it.

use candle_core::{Device, Tensor};

use crate::data::Batch;
use crate::error::{Error, Result};
use crate::eval::EvalData;

/// Tokens per sentence when a sequence model's measurement does not say (one sentence of 32 tokens is
/// the usual on-device encoder request).
pub const DEFAULT_TOKENS: u32 = 32;

/// The batch a measurement times, and what it is.
#[derive(Clone, Debug)]
pub struct MeasureInput {
    pub batch: Batch,
    /// Samples in the batch.
    pub samples: u32,
    /// Tokens per sample of a sequence model (every sample exactly this long); `None` for images.
    pub tokens: Option<u32>,
    /// Samples per inference as the cost model counts them: images, or tokens (`samples × tokens`).
    pub cost_batch: u32,
    /// What the batch is, for people (`1 sentence of 32 tokens from the search split`).
    pub description: String,
}

/// `samples` samples of the search split of `data` (see the module docs); `tokens` is the length of
/// every sentence for a sequence model and must be `None` for images.
pub fn from_search_split(
    data: &EvalData,
    samples: u32,
    tokens: Option<u32>,
) -> Result<MeasureInput> {
    if samples == 0 {
        return Err(Error::measure("the batch must hold at least 1 sample"));
    }
    match data.eval.first() {
        Some(Batch::Images(_)) => images(data, samples, tokens),
        Some(Batch::Tokens { .. }) => sentences(data, samples, tokens.unwrap_or(DEFAULT_TOKENS)),
        None => Err(Error::measure(format!(
            "the evaluation data has no search split to take a batch from ({})",
            data.description
        ))),
    }
}

/// Rows `0..n` of `all`, taken again from the first when `all` has fewer.
fn cycled(all: &Tensor, n: usize) -> Result<Tensor> {
    let have = all.dim(0)?;
    let mut parts = Vec::new();
    let mut left = n;
    while left > 0 {
        let take = left.min(have);
        parts.push(all.narrow(0, 0, take)?);
        left -= take;
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// " (the split's N used again from the first)" when `have < samples`.
fn reuse_note(have: usize, samples: u32, what: &str) -> String {
    if have < samples as usize {
        format!(" (the split has {have} {what}: used again from the first)")
    } else {
        String::new()
    }
}

fn images(data: &EvalData, samples: u32, tokens: Option<u32>) -> Result<MeasureInput> {
    if let Some(t) = tokens {
        return Err(Error::measure(format!(
            "--tokens {t} applies to sequence models; this model takes images ({})",
            data.description
        )));
    }
    let parts: Vec<Tensor> = data
        .eval
        .iter()
        .filter_map(|b| match b {
            Batch::Images(t) => Some(t.clone()),
            Batch::Tokens { .. } => None,
        })
        .collect();
    let all = Tensor::cat(&parts, 0)?;
    let have = all.dim(0)?;
    let batch = Batch::Images(cycled(&all, samples as usize)?.contiguous()?);
    let s = if samples == 1 { "" } else { "s" };
    Ok(MeasureInput {
        batch,
        samples,
        tokens: None,
        cost_batch: samples,
        description: format!(
            "{samples} image{s} from the search split{}",
            reuse_note(have, samples, "images")
        ),
    })
}

fn sentences(data: &EvalData, samples: u32, tokens: u32) -> Result<MeasureInput> {
    if tokens < 2 {
        return Err(Error::measure(format!(
            "--tokens {tokens}: a sentence needs at least 2 tokens ([CLS] and [SEP])"
        )));
    }
    let t = tokens as usize;
    let mut rows: Vec<Vec<u32>> = Vec::new();
    let mut longest = 0;
    for b in &data.eval {
        let Batch::Tokens { ids, mask } = b else {
            continue;
        };
        for (row, m) in ids
            .to_vec2::<u32>()?
            .into_iter()
            .zip(mask.to_vec2::<u32>()?)
        {
            let real = m.iter().filter(|&&v| v != 0).count();
            longest = longest.max(real);
            if real >= t {
                // The tokenizer's truncation: the first t − 1 ids, then the sentence's own [SEP].
                let mut cut = row[..t - 1].to_vec();
                cut.push(row[real - 1]);
                rows.push(cut);
            }
        }
    }
    if rows.is_empty() {
        return Err(Error::measure(format!(
            "no sentence of the search split has {tokens} tokens (the longest has {longest}; {}): \
             pass a smaller --tokens",
            data.description
        )));
    }
    let have = rows.len();
    let flat: Vec<u32> = rows.into_iter().flatten().collect();
    let all = Tensor::from_vec(flat, (have, t), &Device::Cpu)?;
    let ids = cycled(&all, samples as usize)?.contiguous()?;
    let mask = Tensor::ones((samples as usize, t), candle_core::DType::U32, &Device::Cpu)?;
    let s = if samples == 1 { "" } else { "s" };
    Ok(MeasureInput {
        batch: Batch::Tokens { ids, mask },
        samples,
        tokens: Some(tokens),
        cost_batch: samples.saturating_mul(tokens),
        description: format!(
            "{samples} sentence{s} of exactly {tokens} tokens from the search split (its sentences \
             of at least {tokens} tokens, truncated as the tokenizer truncates, no padding){}",
            reuse_note(have, samples, &format!("{have} such sentences"))
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::SplitSizes;

    fn data(eval: Vec<Batch>) -> EvalData {
        EvalData {
            description: "test data".into(),
            eval,
            labels: None,
            held_out: Vec::new(),
            held_out_labels: None,
            calibration: Vec::new(),
            calibration_labels: None,
            sizes: SplitSizes {
                calibration: 0,
                search: 0,
                held_out: 0,
            },
            fingerprint: blake3::hash(b"test"),
        }
    }

    fn tokens(rows: &[&[u32]]) -> Batch {
        let seq = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let mut ids = Vec::new();
        let mut mask = Vec::new();
        for r in rows {
            ids.extend_from_slice(r);
            ids.extend(std::iter::repeat_n(0, seq - r.len()));
            mask.extend(std::iter::repeat_n(1u32, r.len()));
            mask.extend(std::iter::repeat_n(0u32, seq - r.len()));
        }
        Batch::Tokens {
            ids: Tensor::from_vec(ids, (rows.len(), seq), &Device::Cpu).unwrap(),
            mask: Tensor::from_vec(mask, (rows.len(), seq), &Device::Cpu).unwrap(),
        }
    }

    #[test]
    fn sentences_are_cut_to_exactly_the_tokens_asked_with_their_own_sep() {
        // 101 = [CLS], 102 = [SEP]; the second sentence is too short for 4 tokens.
        let d = data(vec![
            tokens(&[&[101, 5, 6, 7, 8, 102], &[101, 9, 102]]),
            tokens(&[&[101, 11, 12, 102]]),
        ]);
        let m = from_search_split(&d, 3, Some(4)).expect("input");
        let Batch::Tokens { ids, mask } = &m.batch else {
            panic!("tokens expected")
        };
        assert_eq!(
            ids.to_vec2::<u32>().unwrap(),
            vec![
                vec![101, 5, 6, 102],
                vec![101, 11, 12, 102],
                vec![101, 5, 6, 102]
            ]
        );
        assert_eq!(mask.to_vec2::<u32>().unwrap(), vec![vec![1; 4]; 3]);
        assert_eq!((m.samples, m.tokens, m.cost_batch), (3, Some(4), 12));
        assert!(m.description.contains("used again"), "{}", m.description);
        let e = from_search_split(&d, 1, Some(7)).unwrap_err().to_string();
        assert!(
            e.contains("no sentence of the search split has 7 tokens (the longest has 6"),
            "{e}"
        );
    }

    #[test]
    fn images_are_the_first_of_the_split_and_refuse_tokens() {
        let all = Tensor::arange(0f32, 12.0, &Device::Cpu)
            .unwrap()
            .reshape((3, 1, 2, 2))
            .unwrap();
        let d = data(vec![Batch::Images(all)]);
        let m = from_search_split(&d, 2, None).expect("input");
        let Batch::Images(x) = &m.batch else {
            panic!("images expected")
        };
        assert_eq!(x.dims(), &[2, 1, 2, 2]);
        assert_eq!(
            x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            (0..8).map(|v| v as f32).collect::<Vec<_>>()
        );
        assert_eq!((m.cost_batch, m.tokens), (2, None));
        let five = from_search_split(&d, 5, None).expect("cycled");
        assert_eq!(five.batch.len(), 5);
        let e = from_search_split(&d, 1, Some(32)).unwrap_err().to_string();
        assert!(e.contains("--tokens 32 applies to sequence models"), "{e}");
    }
}
