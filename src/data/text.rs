//! # Sentences
//!
//! Text data for sentence encoders: a user's sentence file (one sentence a line), or the shipped
//! default of 400 English sentences from Ambrose Bierce's *The Devil's Dictionary* (1911, public domain;
//! taken from Debian's `dict-devil` package — `src/data/sentences.md` gives the provenance and
//! `scripts/make-sentences.py` rebuilds the file). Either is split deterministically into calibration
//! and evaluation sentences: every [`CALIBRATION_EVERY`]-th sentence (the 1st, 5th, 9th, …) calibrates,
//! the rest evaluate, so both halves span the whole text.

use std::path::Path;

use crate::error::{Error, Result};

/// The shipped sentences, one a line.
const SHIPPED: &str = include_str!("sentences.txt");

/// One sentence in this many goes to calibration.
pub const CALIBRATION_EVERY: usize = 4;

/// Sentences divided into a calibration part and an evaluation part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextSplit {
    pub calibration: Vec<String>,
    pub evaluation: Vec<String>,
}

impl TextSplit {
    /// Splits `sentences` in order: indices 0, 4, 8, … calibrate, the others evaluate.
    pub fn new(sentences: Vec<String>) -> TextSplit {
        let (mut calibration, mut evaluation) = (Vec::new(), Vec::new());
        for (i, s) in sentences.into_iter().enumerate() {
            if i % CALIBRATION_EVERY == 0 {
                calibration.push(s);
            } else {
                evaluation.push(s);
            }
        }
        TextSplit {
            calibration,
            evaluation,
        }
    }

    /// The shipped sentences, split.
    pub fn shipped() -> TextSplit {
        TextSplit::new(
            shipped_sentences()
                .into_iter()
                .map(str::to_string)
                .collect(),
        )
    }

    /// A user's sentence file, split.
    pub fn from_file(path: &Path) -> Result<TextSplit> {
        Ok(TextSplit::new(load_sentences(path)?))
    }
}

/// The shipped sentences, in the book's order.
pub fn shipped_sentences() -> Vec<&'static str> {
    parse(SHIPPED)
}

/// Reads a sentence file: UTF-8 text, one sentence a line; surrounding spaces are trimmed and blank
/// lines skipped. A missing, unreadable or empty file is an error naming it.
pub fn load_sentences(path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).map_err(|e| {
        Error::file(
            path,
            format!(
                "cannot read the sentence file ({e}); give a text file with one sentence a line"
            ),
        )
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::file(
            path,
            format!(
                "is not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    let sentences: Vec<String> = parse(&text).into_iter().map(str::to_string).collect();
    if sentences.is_empty() {
        return Err(Error::file(
            path,
            "has no sentences: it should hold one sentence a line",
        ));
    }
    Ok(sentences)
}

/// A fingerprint of a sentence list (order and content), for evaluation-cache keys.
pub fn fingerprint<S: AsRef<str>>(sentences: &[S]) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"mpsearch sentences v1\0");
    for s in sentences {
        let s = s.as_ref().as_bytes();
        h.update(&(s.len() as u64).to_le_bytes());
        h.update(s);
    }
    h.finalize()
}

fn parse(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_sentences_are_real_and_of_reasonable_length() {
        let s = shipped_sentences();
        assert_eq!(s.len(), 400);
        for line in &s {
            let words = line.split_whitespace().count();
            assert!((5..=60).contains(&words), "{words} words: {line}");
        }
        assert!(s[0].starts_with("ABASEMENT, n."), "{}", s[0]);
    }

    #[test]
    fn split_is_deterministic_and_complete() {
        let split = TextSplit::shipped();
        assert_eq!(split.calibration.len(), 100);
        assert_eq!(split.evaluation.len(), 300);
        assert_eq!(split, TextSplit::shipped());
        let all = shipped_sentences();
        assert_eq!(split.calibration[1], all[4]);
        assert_eq!(split.evaluation[0], all[1]);
        assert_eq!(split.evaluation[3], all[5]);
    }

    #[test]
    fn blank_lines_are_skipped_and_spaces_trimmed() {
        assert_eq!(parse("  one two \r\n\n\t\nthree\n"), ["one two", "three"]);
    }

    #[test]
    fn missing_empty_and_binary_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.txt");
        let err = load_sentences(&missing).unwrap_err().to_string();
        assert!(
            err.contains("nope.txt") && err.contains("cannot read"),
            "{err}"
        );

        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "\n  \n\n").unwrap();
        let err = load_sentences(&empty).unwrap_err().to_string();
        assert!(
            err.contains("empty.txt") && err.contains("no sentences"),
            "{err}"
        );

        let binary = dir.path().join("bin.txt");
        std::fs::write(&binary, [b'a', 0xff, b'\n']).unwrap();
        let err = load_sentences(&binary).unwrap_err().to_string();
        assert!(err.contains("bin.txt") && err.contains("UTF-8"), "{err}");

        let ok = dir.path().join("ok.txt");
        std::fs::write(&ok, "First sentence.\n\nSecond one.\n").unwrap();
        assert_eq!(
            load_sentences(&ok).unwrap(),
            ["First sentence.", "Second one."]
        );
    }

    #[test]
    fn fingerprint_depends_on_order_and_boundaries() {
        assert_ne!(fingerprint(&["a", "b"]), fingerprint(&["b", "a"]));
        assert_ne!(fingerprint(&["ab", "c"]), fingerprint(&["a", "bc"]));
        assert_eq!(fingerprint(&["a"]), fingerprint(&[String::from("a")]));
    }
}
