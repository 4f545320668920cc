//! # Text windows for language models
//!
//! A language model is evaluated on fixed-length windows of one token stream: the text (the user's
//! `--data` file as it is, or the shipped text — the 400 sentences of *The Devil's Dictionary*, one a
//! line, see [`super::text`]) is tokenized once, without BOS or EOS, and cut into consecutive,
//! non-overlapping windows of [`WINDOW`] tokens (or the model's context length, if shorter); a tokenizer that adds BOS gets it as the first
//! token of every window (then [`WINDOW`] − 1 text tokens follow). The tail shorter than a window is
//! dropped. Windows are dealt out as sentences are: of every [`super::text::SPLIT_EVERY`] consecutive
//! windows the 1st calibrates, the 2nd and 3rd are the search split and the 4th is held out, so that
//! every split spans the whole text; each split then keeps at most its cap ([`SEARCH_WINDOWS`],
//! [`HELD_OUT_WINDOWS`], [`CALIBRATION_WINDOWS`]) of its windows, evenly spaced (the 1st, and every
//! `len/cap`-th after it), which bounds the time of one evaluation whatever the length of the text.
//!
//! The shipped text is 11 113 tokens for SmolLM2's tokenizer (86 windows): 4 search windows
//! (512 tokens: one evaluation of SmolLM2-135M takes about 2.5 s on 2 cores, so that a default search
//! of several hundred evaluations fits in an hour), 8 held-out windows (1 024 tokens, for the few
//! front points reported) and 8 calibration windows are used.

use crate::error::{Error, Result};

/// Tokens per window (a model whose context is shorter gets windows of its context length).
pub const WINDOW: usize = 128;
/// At most this many windows are in the search split (the quality every trial is measured on).
pub const SEARCH_WINDOWS: usize = 4;
/// At most this many windows are held out (the quality a front is reported on).
pub const HELD_OUT_WINDOWS: usize = 8;
/// At most this many windows calibrate (layer statistics for GPTQ and the sensitivity model).
pub const CALIBRATION_WINDOWS: usize = 8;

/// A token stream's windows, in their three splits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowSplit {
    /// Windows of the calibration split.
    pub calibration: Vec<Vec<u32>>,
    /// Windows of the search split.
    pub search: Vec<Vec<u32>>,
    /// Windows of the held-out split.
    pub held_out: Vec<Vec<u32>>,
    /// Windows the whole stream made, before the caps.
    pub total: usize,
}

impl WindowSplit {
    /// Cuts `tokens` (a text's ids, without BOS) into windows of `window` tokens (BOS first in each
    /// when `bos` is given) and deals them out (see the module docs). Fewer than
    /// [`super::text::SPLIT_EVERY`] windows is an error naming `source` and the tokens it needs.
    pub fn new(
        tokens: &[u32],
        window: usize,
        bos: Option<u32>,
        source: &str,
    ) -> Result<WindowSplit> {
        let body = window - usize::from(bos.is_some());
        let windows: Vec<Vec<u32>> = tokens
            .chunks_exact(body.max(1))
            .map(|c| bos.into_iter().chain(c.iter().copied()).collect())
            .collect();
        let every = super::text::SPLIT_EVERY;
        if windows.len() < every {
            return Err(Error::Data {
                name: source.to_string(),
                message: format!(
                    "has {} tokens, {} window{} of {window}; a language model needs at least \
                     {every} windows ({} tokens of text: of every {every} windows one calibrates, two \
                     are searched on and one is held out) — give a longer text",
                    tokens.len(),
                    windows.len(),
                    if windows.len() == 1 { "" } else { "s" },
                    every * body
                ),
            });
        }
        let total = windows.len();
        let (mut calibration, mut search, mut held_out) = (Vec::new(), Vec::new(), Vec::new());
        for (i, w) in windows.into_iter().enumerate() {
            match i % every {
                0 => calibration.push(w),
                3 => held_out.push(w),
                _ => search.push(w),
            }
        }
        Ok(WindowSplit {
            calibration: evenly(calibration, CALIBRATION_WINDOWS),
            search: evenly(search, SEARCH_WINDOWS),
            held_out: evenly(held_out, HELD_OUT_WINDOWS),
            total,
        })
    }
}

/// At most `cap` of `items`, evenly spaced: item `⌊k·len/cap⌋` for k = 0, 1, ….
fn evenly<T>(items: Vec<T>, cap: usize) -> Vec<T> {
    let len = items.len();
    if len <= cap {
        return items;
    }
    let keep: Vec<usize> = (0..cap).map(|k| k * len / cap).collect();
    items
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep.binary_search(i).is_ok())
        .map(|(_, t)| t)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_dealt_out_and_capped_evenly() {
        let tokens: Vec<u32> = (0..100 * 10).collect();
        let s = WindowSplit::new(&tokens, 10, None, "t").unwrap();
        assert_eq!(s.total, 100);
        // 25 calibration windows (0, 4, 8, …) capped to 8 evenly spaced: 0, 3, 6, … of them.
        assert_eq!(s.calibration.len(), CALIBRATION_WINDOWS);
        assert_eq!(s.calibration[0], (0..10).collect::<Vec<u32>>());
        assert_eq!(
            s.calibration[1][0],
            12 * 10,
            "the 4th calibration window is window 12"
        );
        assert_eq!(s.search[0][0], 10);
        assert_eq!(s.held_out[0][0], 30);
        assert!(s.search.iter().chain(&s.held_out).all(|w| w.len() == 10));
        // No window is in two splits.
        let mut firsts: Vec<u32> = s
            .calibration
            .iter()
            .chain(&s.search)
            .chain(&s.held_out)
            .map(|w| w[0])
            .collect();
        let n = firsts.len();
        firsts.sort();
        firsts.dedup();
        assert_eq!(firsts.len(), n);
    }

    #[test]
    fn bos_opens_every_window_and_the_tail_is_dropped() {
        let tokens: Vec<u32> = (10..10 + 4 * 3 + 2).collect();
        let s = WindowSplit::new(&tokens, 4, Some(1), "t").unwrap();
        assert_eq!(s.total, 4);
        assert_eq!(s.calibration, vec![vec![1, 10, 11, 12]]);
        assert_eq!(s.search, vec![vec![1, 13, 14, 15], vec![1, 16, 17, 18]]);
        assert_eq!(s.held_out, vec![vec![1, 19, 20, 21]]);
    }

    #[test]
    fn a_text_too_short_is_refused_saying_what_it_needs() {
        let tokens: Vec<u32> = (0..35).collect();
        let err = WindowSplit::new(&tokens, 10, None, "short.txt")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("short.txt") && err.contains("35 tokens") && err.contains("40 tokens"),
            "{err}"
        );
    }
}
