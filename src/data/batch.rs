//! The unit of model input: a batch of images or of token sequences, as candle tensors.

use candle_core::Tensor;

/// One batch of model input.
#[derive(Clone, Debug)]
pub enum Batch {
    /// Images `[n, channels, height, width]`, f32.
    Images(Tensor),
    /// Token ids `[n, seq]` (u32) with attention mask `[n, seq]` (u32, 1 = real token).
    Tokens { ids: Tensor, mask: Tensor },
}

impl Batch {
    /// Number of samples.
    pub fn len(&self) -> usize {
        let t = match self {
            Batch::Images(t) => t,
            Batch::Tokens { ids, .. } => ids,
        };
        t.dims().first().copied().unwrap_or(0)
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its first `n` samples (all of them if it has fewer).
    pub fn head(&self, n: usize) -> candle_core::Result<Batch> {
        let n = n.min(self.len());
        Ok(match self {
            Batch::Images(t) => Batch::Images(t.narrow(0, 0, n)?),
            Batch::Tokens { ids, mask } => Batch::Tokens {
                ids: ids.narrow(0, 0, n)?,
                mask: mask.narrow(0, 0, n)?,
            },
        })
    }

    /// Token positions (samples × sequence length) for token batches, samples for images: the
    /// output rows of a language model, the labels of a classifier.
    pub fn positions(&self) -> usize {
        match self {
            Batch::Images(t) => t.dims().first().copied().unwrap_or(0),
            Batch::Tokens { ids, .. } => ids.dims().iter().take(2).product(),
        }
    }
}
