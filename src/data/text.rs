//! # Sentences
//!
//! Text data for sentence encoders: a user's sentence file (one sentence a line), or the shipped
//! default of 400 English sentences from Ambrose Bierce's *The Devil's Dictionary* (1911, public domain;
//! taken from Debian's `dict-devil` package — `src/data/sentences.md` gives the provenance and
//! `scripts/make-sentences.py` rebuilds the file). Either is split deterministically, in runs of
//! [`SPLIT_EVERY`] sentences: the 1st of every run calibrates, the 2nd and 3rd are the search split,
//! the 4th is held out (sentences 1, 5, 9, … calibrate; 2, 3, 6, 7, … are searched on; 4, 8, 12, … are
//! held out), so that every split spans the whole text. The shipped 400 give 100 / 200 / 100; a file
//! needs at least [`SPLIT_EVERY`] sentences, so that each split has one.
//!
//! The same book's other 1,393 sentences ship as the *tune* sentences: what `recover` distils an
//! encoder on by default (none of them is one of the 400, so none is held out).

use std::path::Path;

use crate::error::{Error, Result};

/// The shipped sentences, one a line.
const SHIPPED: &str = include_str!("sentences.txt");

/// The book's sentences that are not among the shipped 400, one a line.
const TUNE: &str = include_str!("tune-sentences.txt");

/// Sentences are dealt out in runs of this many: one calibrates, two are searched on, one is held out.
pub const SPLIT_EVERY: usize = 4;

/// Sentences divided into a calibration, a search and a held-out split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextSplit {
    /// Static activation ranges and layer statistics.
    pub calibration: Vec<String>,
    /// The quality a search steers by.
    pub search: Vec<String>,
    /// The quality a search's front is reported on.
    pub held_out: Vec<String>,
}

impl TextSplit {
    /// Splits `sentences` in order: indices 0, 4, 8, … calibrate, 3, 7, 11, … are held out, the
    /// others are the search split. A split may come out empty for fewer than [`SPLIT_EVERY`]
    /// sentences ([`TextSplit::from_file`] refuses such a file).
    pub fn new(sentences: Vec<String>) -> TextSplit {
        let mut split = TextSplit {
            calibration: Vec::new(),
            search: Vec::new(),
            held_out: Vec::new(),
        };
        for (i, s) in sentences.into_iter().enumerate() {
            match i % SPLIT_EVERY {
                0 => split.calibration.push(s),
                3 => split.held_out.push(s),
                _ => split.search.push(s),
            }
        }
        split
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

    /// A user's sentence file, split; a file of fewer than [`SPLIT_EVERY`] sentences is an error
    /// naming it (one split would be empty).
    pub fn from_file(path: &Path) -> Result<TextSplit> {
        let sentences = load_sentences(path)?;
        if sentences.len() < SPLIT_EVERY {
            return Err(Error::file(
                path,
                format!(
                    "has {} sentence{}; at least {SPLIT_EVERY} are needed (of every {SPLIT_EVERY}, one \
                     calibrates, two are searched on and one is held out to report the front on)",
                    sentences.len(),
                    if sentences.len() == 1 { "" } else { "s" }
                ),
            ));
        }
        Ok(TextSplit::new(sentences))
    }
}

/// The shipped sentences, in the book's order.
pub fn shipped_sentences() -> Vec<&'static str> {
    parse(SHIPPED)
}

/// The shipped tune sentences (the book's sentences not among [`shipped_sentences`]), in the book's
/// order: training data for recovery that never touches a held-out sentence.
pub fn shipped_tune_sentences() -> Vec<&'static str> {
    parse(TUNE)
}

/// Reads a sentence file: UTF-8 text, one sentence a line; surrounding spaces are trimmed and blank
/// lines skipped. A missing, unreadable or empty file is an error naming it.
pub fn load_sentences(path: &Path) -> Result<Vec<String>> {
    let text = read_text(
        path,
        "sentence file",
        "a text file with one sentence a line",
    )?;
    let sentences: Vec<String> = parse(&text).into_iter().map(str::to_string).collect();
    if sentences.is_empty() {
        return Err(Error::file(
            path,
            "has no sentences: it should hold one sentence a line",
        ));
    }
    Ok(sentences)
}

/// The shipped sentences as one text for a language model, one sentence a line.
pub fn shipped_text() -> String {
    shipped_sentences().join("\n")
}

/// Reads a language model's text file, as it is (UTF-8). A missing, unreadable, non-UTF-8 or blank
/// file is an error naming it.
pub fn load_text(path: &Path) -> Result<String> {
    let text = read_text(path, "text file", "a UTF-8 text file")?;
    if text.trim().is_empty() {
        return Err(Error::file(
            path,
            "is empty: give a UTF-8 text file of running text",
        ));
    }
    Ok(text)
}

/// A UTF-8 file's text; errors name the file, saying it was read as `what` and should be `want`.
fn read_text(path: &Path, what: &str, want: &str) -> Result<String> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::file(path, format!("cannot read the {what} ({e}); give {want}")))?;
    String::from_utf8(bytes).map_err(|e| {
        Error::file(
            path,
            format!(
                "is not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
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
    fn the_tune_sentences_are_the_books_others() {
        let tune = shipped_tune_sentences();
        assert_eq!(tune.len(), 1393);
        let shipped: std::collections::HashSet<&str> = shipped_sentences().into_iter().collect();
        assert!(tune.iter().all(|s| !shipped.contains(s)));
        let distinct: std::collections::HashSet<&&str> = tune.iter().collect();
        assert_eq!(distinct.len(), tune.len());
    }

    #[test]
    fn split_is_deterministic_and_complete() {
        let split = TextSplit::shipped();
        assert_eq!(split.calibration.len(), 100);
        assert_eq!(split.search.len(), 200);
        assert_eq!(split.held_out.len(), 100);
        assert_eq!(split, TextSplit::shipped());
        let all = shipped_sentences();
        assert_eq!(split.calibration[1], all[4]);
        assert_eq!(
            (split.search[0].as_str(), split.search[1].as_str()),
            (all[1], all[2])
        );
        assert_eq!(split.search[2], all[5]);
        assert_eq!(
            (split.held_out[0].as_str(), split.held_out[1].as_str()),
            (all[3], all[7])
        );
        let mut every: Vec<&String> = split
            .calibration
            .iter()
            .chain(&split.search)
            .chain(&split.held_out)
            .collect();
        every.sort();
        let mut want: Vec<&str> = all.clone();
        want.sort();
        assert_eq!(every, want, "the three splits partition the sentences");
    }

    #[test]
    fn a_file_too_short_to_split_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("three.txt");
        std::fs::write(&short, "One.\nTwo.\nThree.\n").unwrap();
        let err = TextSplit::from_file(&short).unwrap_err().to_string();
        assert!(
            err.contains("three.txt") && err.contains("3 sentences") && err.contains("at least 4"),
            "{err}"
        );
        let four = dir.path().join("four.txt");
        std::fs::write(&four, "One.\nTwo.\nThree.\nFour.\n").unwrap();
        let s = TextSplit::from_file(&four).unwrap();
        assert_eq!(
            (s.calibration.len(), s.search.len(), s.held_out.len()),
            (1, 2, 1)
        );
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
