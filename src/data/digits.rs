//! The UCI optical digits set (8×8), as shipped by scikit-learn, embedded in the binary.
//!
//! 1,797 grey-scale images of handwritten digits, 8×8 pixels with values 0..=16, labels 0..=9
//! (E. Alpaydin, C. Kaynak, 1998; scikit-learn's copy under BSD-3, provenance, licence and checksums in
//! `src/data/DIGITS-LICENSE.txt`; `scripts/make-digits.py` rebuilds `digits.bin` from the wheel).
//! `digits.bin` holds 1,797 records of 65 bytes: 64 pixels (row-major) then the label.
//!
//! ## The split
//!
//! Fixed, from [`SPLIT_SEED`], and stratified: each class's rows are shuffled (ChaCha8 seeded with
//! [`SPLIT_SEED`]), the i-th of a class's n rows gets the position (i + ½) / n, and all rows are ordered by
//! position (ties by class), so that every prefix holds the classes in proportion. The first
//! [`Digits::TEST`] rows of that order are the test split, the next [`Digits::CALIBRATION`] the
//! calibration split, the remaining [`Digits::TRAIN`] the training split. Each split lists its rows in
//! file order.
//!
//! The test split is divided once more, for the search: its first [`Digits::SEARCH`] rows in that
//! order are the **search** split (the quality a search steers by) and the last
//! [`Digits::HELD_OUT`] the **held-out** split (the quality its front is reported on, data it was
//! not chosen on). Both are stratified like the rest, and neither is ever trained or calibrated on.

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::Batch;
use crate::error::{Error, Result};

/// Images in the set.
pub const SAMPLES: usize = 1797;
/// Classes (the digits 0..=9).
pub const CLASSES: usize = 10;
/// Image side in pixels.
pub const SIDE: usize = 8;
/// The seed of the fixed split.
pub const SPLIT_SEED: u64 = 1998;

/// Largest pixel value in the file; pixels are divided by it to lie in [0, 1].
const MAX_PIXEL: u8 = 16;
const RECORD: usize = SIDE * SIDE + 1;
const NAME: &str = "digits";
static BYTES: &[u8] = include_bytes!("digits.bin");

/// One part of the set: images and their labels, on the CPU.
#[derive(Clone, Debug)]
pub struct Split {
    /// The rows of `digits.bin` (0..1797) in this split, ascending; row `i` of the tensors is row
    /// `rows[i]` of the file.
    pub rows: Vec<usize>,
    /// Images `[n, 1, 8, 8]`, f32 in [0, 1] (pixel value ÷ 16).
    pub images: Tensor,
    /// Labels `[n]`, u32 in 0..=9.
    pub labels: Tensor,
    classes: Vec<u32>,
}

/// The digits set in its fixed train / calibration / test split.
#[derive(Clone, Debug)]
pub struct Digits {
    /// For training the demo model.
    pub train: Split,
    /// For calibrating activation ranges and sensitivity scores: never trained on.
    pub calibration: Split,
    /// For measuring quality: never trained or calibrated on (the search and held-out splits together).
    pub test: Split,
    /// The first [`Digits::SEARCH`] test images: what a search measures quality on.
    pub search: Split,
    /// The last [`Digits::HELD_OUT`] test images: what a search's front is reported on.
    pub held_out: Split,
}

impl Digits {
    /// Images in the training split.
    pub const TRAIN: usize = 1257;
    /// Images in the calibration split.
    pub const CALIBRATION: usize = 180;
    /// Images in the test split.
    pub const TEST: usize = 360;
    /// Test images a search measures quality on (two thirds of the test split).
    pub const SEARCH: usize = 240;
    /// Test images held out of the search, for reporting its front (the other third).
    pub const HELD_OUT: usize = Self::TEST - Self::SEARCH;

    /// Decodes the embedded file and splits it.
    pub fn load() -> Result<Digits> {
        let (pixels, labels) = decode(BYTES)?;
        let order = stratified_order(&labels, SPLIT_SEED);
        let (test, rest) = order.split_at(Self::TEST);
        let (calibration, train) = rest.split_at(Self::CALIBRATION);
        let (search, held_out) = test.split_at(Self::SEARCH);
        Ok(Digits {
            train: Split::new(train, &pixels, &labels)?,
            calibration: Split::new(calibration, &pixels, &labels)?,
            test: Split::new(test, &pixels, &labels)?,
            search: Split::new(search, &pixels, &labels)?,
            held_out: Split::new(held_out, &pixels, &labels)?,
        })
    }
}

impl Split {
    fn new(rows: &[usize], pixels: &[u8], labels: &[u8]) -> Result<Split> {
        let mut rows = rows.to_vec();
        rows.sort_unstable();
        let area = SIDE * SIDE;
        let images: Vec<f32> = rows
            .iter()
            .flat_map(|&r| &pixels[r * area..(r + 1) * area])
            .map(|&p| f32::from(p) / f32::from(MAX_PIXEL))
            .collect();
        let classes: Vec<u32> = rows.iter().map(|&r| u32::from(labels[r])).collect();
        let n = rows.len();
        Ok(Split {
            images: Tensor::from_vec(images, (n, 1, SIDE, SIDE), &Device::Cpu)?,
            labels: Tensor::from_vec(classes.clone(), n, &Device::Cpu)?,
            rows,
            classes,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the split is empty (never, for the shipped set).
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The labels as plain numbers, in row order.
    pub fn classes(&self) -> &[u32] {
        &self.classes
    }

    /// How many images of each digit.
    pub fn class_counts(&self) -> [usize; CLASSES] {
        let mut counts = [0; CLASSES];
        for &c in &self.classes {
            counts[c as usize] += 1;
        }
        counts
    }

    /// The split in order as batches of `size` images (the last one smaller): `(Batch::Images [b,1,8,8],
    /// labels [b] u32)`. The tensors are views, not copies. `size` must be at least 1.
    pub fn batches(
        &self,
        size: usize,
    ) -> Result<impl Iterator<Item = Result<(Batch, Tensor)>> + '_> {
        if size == 0 {
            return Err(data_error("batch size: 0 is outside 1.."));
        }
        Ok((0..self.len()).step_by(size).map(move |start| {
            let b = size.min(self.len() - start);
            Ok((
                Batch::Images(self.images.narrow(0, start, b)?),
                self.labels.narrow(0, start, b)?,
            ))
        }))
    }

    /// The images at these positions of the split (0..len, in the given order) as one batch, with their
    /// labels: how training draws shuffled mini-batches.
    pub fn select(&self, positions: &[u32]) -> Result<(Batch, Tensor)> {
        if let Some(&p) = positions.iter().find(|&&p| p as usize >= self.len()) {
            return Err(data_error(format!(
                "position {p} is outside the split's 0..{}",
                self.len()
            )));
        }
        let index = Tensor::from_slice(positions, positions.len(), &Device::Cpu)?;
        Ok((
            Batch::Images(self.images.index_select(&index, 0)?),
            self.labels.index_select(&index, 0)?,
        ))
    }
}

/// Pixels (`SAMPLES × 64`) and labels (`SAMPLES`) of the file, checked.
fn decode(bytes: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    if bytes.len() != SAMPLES * RECORD {
        return Err(data_error(format!(
            "digits.bin has {} bytes, expected {} ({SAMPLES} records of {RECORD}): rebuild it with \
             scripts/make-digits.py",
            bytes.len(),
            SAMPLES * RECORD
        )));
    }
    let mut pixels = Vec::with_capacity(SAMPLES * (RECORD - 1));
    let mut labels = Vec::with_capacity(SAMPLES);
    for (i, record) in bytes.chunks_exact(RECORD).enumerate() {
        let (px, label) = record.split_at(RECORD - 1);
        if px.iter().any(|&p| p > MAX_PIXEL) || label[0] as usize >= CLASSES {
            return Err(data_error(format!(
                "digits.bin record {i}: a pixel above {MAX_PIXEL} or a label above 9"
            )));
        }
        pixels.extend_from_slice(px);
        labels.push(label[0]);
    }
    Ok((pixels, labels))
}

/// All rows, ordered so that every prefix is stratified by class (see the module docs).
fn stratified_order(labels: &[u8], seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); CLASSES];
    for (row, &c) in labels.iter().enumerate() {
        by_class[c as usize].push(row);
    }
    // (class, rank within class, class size, row)
    let mut keyed = Vec::with_capacity(labels.len());
    for (class, rows) in by_class.iter_mut().enumerate() {
        rows.shuffle(&mut rng);
        keyed.extend(
            rows.iter()
                .enumerate()
                .map(|(i, &row)| (class, i, rows.len(), row)),
        );
    }
    // Order by (2i + 1) / 2n exactly: compare (2i + 1)·n' with (2i' + 1)·n.
    keyed.sort_by(|a, b| {
        ((2 * a.1 + 1) * b.2)
            .cmp(&((2 * b.1 + 1) * a.2))
            .then(a.0.cmp(&b.0))
    });
    keyed.into_iter().map(|k| k.3).collect()
}

fn data_error(message: impl Into<String>) -> Error {
    Error::Data {
        name: NAME.into(),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_order_interleaves_classes() {
        let labels: Vec<u8> = (0..100).map(|i| (i % 2) as u8).collect();
        let order = stratified_order(&labels, 7);
        for pair in order.chunks(2) {
            let classes: Vec<u8> = pair.iter().map(|&r| labels[r]).collect();
            assert_eq!(
                classes,
                [0, 1],
                "every pair holds one of each class: {order:?}"
            );
        }
    }

    #[test]
    fn search_and_held_out_partition_the_test_split_in_proportion() {
        let d = Digits::load().unwrap();
        assert_eq!((d.search.len(), d.held_out.len()), (240, 120));
        let mut both: Vec<usize> = d
            .search
            .rows
            .iter()
            .chain(&d.held_out.rows)
            .copied()
            .collect();
        both.sort_unstable();
        assert_eq!(both, d.test.rows, "search ∪ held-out = test, disjoint");
        for (name, s) in [("search", &d.search), ("held-out", &d.held_out)] {
            for (c, &n) in s.class_counts().iter().enumerate() {
                let whole = d.test.class_counts()[c] as f64 / d.test.len() as f64;
                let gap = (n as f64 / s.len() as f64 - whole).abs();
                assert!(
                    gap <= 0.02,
                    "{name}: digit {c} has {n} of {} ({gap:.4} off)",
                    s.len()
                );
            }
        }
    }

    #[test]
    fn decode_refuses_a_truncated_file() {
        let err = decode(&BYTES[..BYTES.len() - 1]).unwrap_err().to_string();
        assert!(err.contains("116804 bytes, expected 116805"), "{err}");
    }
}
