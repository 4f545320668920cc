//! Where a long analysis keeps what it has done, so that one stopped part-way — killed, or stopped by
//! the user — continues where it stopped instead of starting again (a language model's set-up takes
//! hours). The search's set-up keeps it in the run's store ([`crate::search`]); `mpsearch sensitivity`
//! keeps nothing ([`NoCheckpoint`]).

use crate::error::Result;

/// What an analysis hands over as it goes: each group's cheap errors when computed, and each
/// one-at-a-time measurement when done (its evaluation itself is kept by the measurer, e.g. the store's
/// evaluation cache, so a later session's measurement of it is free). An error from the `keep_…` and
/// `measured` calls ends the analysis: a write that failed, or the user asking to stop.
pub trait Checkpoint {
    /// Group `group`'s cheap errors (weights only, one per choice, before any activation error) as an
    /// earlier session kept them, if it did.
    fn cheap_row(&mut self, group: usize) -> Result<Option<Vec<f64>>>;

    /// Keeps group `group`'s cheap errors (as [`Checkpoint::cheap_row`] returns them).
    fn keep_cheap_row(&mut self, group: usize, row: &[f64]) -> Result<()>;

    /// One more one-at-a-time measurement is done.
    fn measured(&mut self) -> Result<()>;

    /// The calibration pass the cheap errors need is done (a long one on a language model: where a
    /// stop can be honoured before the first group).
    fn captured(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Keeps nothing: an analysis stopped part-way starts again.
pub struct NoCheckpoint;

impl Checkpoint for NoCheckpoint {
    fn cheap_row(&mut self, _group: usize) -> Result<Option<Vec<f64>>> {
        Ok(None)
    }
    fn keep_cheap_row(&mut self, _group: usize, _row: &[f64]) -> Result<()> {
        Ok(())
    }
    fn measured(&mut self) -> Result<()> {
        Ok(())
    }
}
