//! Fashion-MNIST (28×28), the demo's data: a sample embedded in the binary, the full set read from disk.
//!
//! 70,000 grey-scale 28×28 images of ten kinds of clothing (T-shirt/top, trouser, pullover, dress, coat,
//! sandal, shirt, sneaker, bag, ankle boot), pixels 0..=255 (H. Xiao, K. Rasul, R. Vollgraf, 2017; Zalando
//! SE, MIT licence; provenance, licence and checksums in `src/data/FASHION-MNIST-LICENSE.txt`).
//!
//! ## What is embedded
//!
//! `fashion.bin` holds [`EMBEDDED`] records of 785 bytes (784 pixels row-major, then the label): the first
//! [`FashionMnist::TEST`] images of the test file (`t10k`), then the first [`FashionMnist::TUNE`] of the
//! training file. `FashionMnist::embedded_bytes` rebuilds it from the full set
//! (`cargo test --release --test it -- --ignored regenerate_demo_data`, after
//! `scripts/fetch-fashion-mnist.sh`).
//!
//! ## The split
//!
//! The embedded test images are split once, from [`SPLIT_SEED`], stratified: each class's images are
//! shuffled (ChaCha8 seeded with [`SPLIT_SEED`]), the i-th of a class's n images gets the position
//! (i + ½) / n, and all are ordered by position (ties by class), so that every prefix holds the classes in
//! proportion. The first [`FashionMnist::SEARCH`] of that order are the **search** split (the quality a
//! search steers by), the next [`FashionMnist::HELD_OUT`] the **held-out** split (the quality its front is
//! reported on, data it was not chosen on), the last [`FashionMnist::CALIBRATION`] the **calibration**
//! split (activation ranges, layer statistics, pruning importance). None of them is ever trained on. The
//! embedded training images are the **tune** split: what fine-tuning (recovery) trains on. Each split
//! lists its rows in file order.
//!
//! The demo's weights are trained on the whole training file ([`FashionMnist::full`]), which the binary
//! does not carry.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::Batch;
use crate::error::{Error, Result};

/// Classes (kinds of clothing).
pub const CLASSES: usize = 10;
/// The classes' names, by label.
pub const CLASS_NAMES: [&str; CLASSES] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];
/// Image side in pixels.
pub const SIDE: usize = 28;
/// Images embedded in the binary ([`FashionMnist::TEST`] test + [`FashionMnist::TUNE`] training images).
pub const EMBEDDED: usize = FashionMnist::TEST + FashionMnist::TUNE;
/// The seed of the fixed split.
pub const SPLIT_SEED: u64 = 2017;

const AREA: usize = SIDE * SIDE;
const RECORD: usize = AREA + 1;
const NAME: &str = "fashion-mnist";
static BYTES: &[u8] = include_bytes!("fashion.bin");

/// One part of the set: images and their labels, on the CPU.
#[derive(Clone, Debug)]
pub struct Split {
    /// The rows of the source (`fashion.bin`, or a file of the full set) in this split, ascending; row
    /// `i` of the tensors is row `rows[i]` of the source.
    pub rows: Vec<usize>,
    /// Images `[n, 1, 28, 28]`, f32 in [0, 1] (pixel value ÷ 255).
    pub images: Tensor,
    /// Labels `[n]`, u32 in 0..=9.
    pub labels: Tensor,
    classes: Vec<u32>,
}

/// The embedded sample of Fashion-MNIST in its fixed splits.
#[derive(Clone, Debug)]
pub struct FashionMnist {
    /// Training images, for fine-tuning (recovery): never measured on.
    pub tune: Split,
    /// For calibrating activation ranges and sensitivity scores: never trained on.
    pub calibration: Split,
    /// What a search measures quality on.
    pub search: Split,
    /// What a search's front is reported on.
    pub held_out: Split,
}

/// The full Fashion-MNIST files, for training the demo.
#[derive(Clone, Debug)]
pub struct FullSet {
    /// The 60,000 training images.
    pub train: Split,
    /// The 10,000 test images.
    pub test: Split,
}

impl FashionMnist {
    /// Test images embedded (the first of `t10k`).
    pub const TEST: usize = 900;
    /// Training images embedded (the first of the training file): the tune split.
    pub const TUNE: usize = 2000;
    /// Test images a search measures quality on (few, so that a trial is quick).
    pub const SEARCH: usize = 200;
    /// Test images held out of the search, for reporting its front (only front points are measured on
    /// them, so they can be more).
    pub const HELD_OUT: usize = 400;
    /// Test images for calibration.
    pub const CALIBRATION: usize = Self::TEST - Self::SEARCH - Self::HELD_OUT;

    /// Decodes the embedded file and splits it.
    pub fn load() -> Result<FashionMnist> {
        let (pixels, labels) = decode(BYTES, "fashion.bin")?;
        if labels.len() != EMBEDDED {
            return Err(data_error(format!(
                "fashion.bin has {} records, expected {EMBEDDED}: rebuild it (see src/data/fashion.rs)",
                labels.len()
            )));
        }
        let order = stratified_order(&labels[..Self::TEST], SPLIT_SEED);
        let (search, rest) = order.split_at(Self::SEARCH);
        let (held_out, calibration) = rest.split_at(Self::HELD_OUT);
        let tune: Vec<usize> = (Self::TEST..EMBEDDED).collect();
        Ok(FashionMnist {
            tune: Split::new(&tune, &pixels, &labels)?,
            calibration: Split::new(calibration, &pixels, &labels)?,
            search: Split::new(search, &pixels, &labels)?,
            held_out: Split::new(held_out, &pixels, &labels)?,
        })
    }

    /// The full set from the decompressed idx files in `dir` (what `scripts/fetch-fashion-mnist.sh`
    /// writes; see [`default_dir`]).
    pub fn full(dir: &Path) -> Result<FullSet> {
        let read = |stem: &str| -> Result<(Vec<u8>, Vec<u8>)> {
            let images = read_idx(&dir.join(format!("{stem}-images-idx3-ubyte")), 3)?;
            let labels = read_idx(&dir.join(format!("{stem}-labels-idx1-ubyte")), 1)?;
            if images.len() != labels.len() * AREA {
                return Err(data_error(format!(
                    "{}: {} images for {} labels",
                    dir.display(),
                    images.len() / AREA,
                    labels.len()
                )));
            }
            if let Some(bad) = labels.iter().find(|&&l| l as usize >= CLASSES) {
                return Err(data_error(format!(
                    "{}: label {bad} above 9",
                    dir.display()
                )));
            }
            Ok((images, labels))
        };
        let (train_px, train_labels) = read("train")?;
        let (test_px, test_labels) = read("t10k")?;
        Ok(FullSet {
            train: Split::new(
                &(0..train_labels.len()).collect::<Vec<_>>(),
                &train_px,
                &train_labels,
            )?,
            test: Split::new(
                &(0..test_labels.len()).collect::<Vec<_>>(),
                &test_px,
                &test_labels,
            )?,
        })
    }

    /// What `fashion.bin` holds, built from the idx files in `dir`.
    pub fn embedded_bytes(dir: &Path) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(EMBEDDED * RECORD);
        for (stem, n) in [("t10k", Self::TEST), ("train", Self::TUNE)] {
            let images = read_idx(&dir.join(format!("{stem}-images-idx3-ubyte")), 3)?;
            let labels = read_idx(&dir.join(format!("{stem}-labels-idx1-ubyte")), 1)?;
            if labels.len() < n || images.len() < n * AREA {
                return Err(data_error(format!(
                    "{}: fewer than {n} {stem} images",
                    dir.display()
                )));
            }
            for i in 0..n {
                out.extend_from_slice(&images[i * AREA..(i + 1) * AREA]);
                out.push(labels[i]);
            }
        }
        Ok(out)
    }
}

/// Where `scripts/fetch-fashion-mnist.sh` puts the full set: `$MPSEARCH_CACHE/fashion-mnist`, by default
/// `~/.cache/mpsearch/fashion-mnist`.
pub fn default_dir() -> PathBuf {
    let cache = std::env::var_os("MPSEARCH_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/mpsearch")))
        .unwrap_or_else(|| PathBuf::from(".cache/mpsearch"));
    cache.join("fashion-mnist")
}

/// The payload of an idx file (`ubyte` data with `dims` dimensions), its header checked.
fn read_idx(path: &Path, dims: u8) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| {
        data_error(format!(
            "cannot read {} ({e}): run scripts/fetch-fashion-mnist.sh first",
            path.display()
        ))
    })?;
    let header = 4 + 4 * dims as usize;
    if bytes.len() < header || bytes[..3] != [0, 0, 8] || bytes[3] != dims {
        return Err(data_error(format!(
            "{} is not an idx file of unsigned bytes with {dims} dimensions",
            path.display()
        )));
    }
    let shape: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let expected: usize = shape.iter().product();
    if bytes.len() - header != expected || (dims == 3 && shape[1..] != [SIDE, SIDE]) {
        return Err(data_error(format!(
            "{}: header says {shape:?} ({expected} bytes), the file has {} (truncated?): fetch it again",
            path.display(),
            bytes.len() - header
        )));
    }
    Ok(bytes[header..].to_vec())
}

impl Split {
    fn new(rows: &[usize], pixels: &[u8], labels: &[u8]) -> Result<Split> {
        let mut rows = rows.to_vec();
        rows.sort_unstable();
        let images: Vec<f32> = rows
            .iter()
            .flat_map(|&r| &pixels[r * AREA..(r + 1) * AREA])
            .map(|&p| f32::from(p) / 255.0)
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

    /// How many images of each class.
    pub fn class_counts(&self) -> [usize; CLASSES] {
        let mut counts = [0; CLASSES];
        for &c in &self.classes {
            counts[c as usize] += 1;
        }
        counts
    }

    /// The split in order as batches of `size` images (the last one smaller): `(Batch::Images [b,1,28,28],
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

    /// The first `n` images of the split (all of them if it has fewer), e.g. a quick training run.
    pub fn first(&self, n: usize) -> Result<Split> {
        let n = n.min(self.len());
        Ok(Split {
            rows: self.rows[..n].to_vec(),
            images: self.images.narrow(0, 0, n)?,
            labels: self.labels.narrow(0, 0, n)?,
            classes: self.classes[..n].to_vec(),
        })
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

/// Pixels (`n × 784`) and labels (`n`) of the embedded file, checked; `name` names it in errors.
fn decode(bytes: &[u8], name: &str) -> Result<(Vec<u8>, Vec<u8>)> {
    if bytes.len() % RECORD != 0 {
        return Err(data_error(format!(
            "{name} has {} bytes, not a whole number of {RECORD}-byte records: rebuild it (see \
             src/data/fashion.rs)",
            bytes.len()
        )));
    }
    let mut pixels = Vec::with_capacity(bytes.len() / RECORD * AREA);
    let mut labels = Vec::with_capacity(bytes.len() / RECORD);
    for (i, record) in bytes.chunks_exact(RECORD).enumerate() {
        let (px, label) = record.split_at(AREA);
        if label[0] as usize >= CLASSES {
            return Err(data_error(format!(
                "{name} record {i}: label {} above 9",
                label[0]
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
    fn the_splits_partition_the_embedded_test_images_in_proportion() {
        let d = FashionMnist::load().unwrap();
        assert_eq!(
            (d.search.len(), d.held_out.len(), d.calibration.len()),
            (200, 400, 300)
        );
        let mut all: Vec<usize> = [&d.search, &d.held_out, &d.calibration]
            .iter()
            .flat_map(|s| s.rows.iter().copied())
            .collect();
        all.sort_unstable();
        assert_eq!(
            all,
            (0..FashionMnist::TEST).collect::<Vec<_>>(),
            "disjoint, whole"
        );
        assert_eq!(
            d.tune.rows,
            (FashionMnist::TEST..EMBEDDED).collect::<Vec<_>>()
        );
        let (_, labels) = decode(BYTES, "fashion.bin").unwrap();
        let mut whole = [0usize; CLASSES];
        for &l in &labels[..FashionMnist::TEST] {
            whole[l as usize] += 1;
        }
        for (name, s) in [
            ("search", &d.search),
            ("held-out", &d.held_out),
            ("calibration", &d.calibration),
        ] {
            for (c, &n) in s.class_counts().iter().enumerate() {
                let share = whole[c] as f64 / FashionMnist::TEST as f64;
                let gap = (n as f64 / s.len() as f64 - share).abs();
                assert!(
                    gap <= 0.01,
                    "{name}: class {c} has {n} of {} ({gap:.4} off)",
                    s.len()
                );
            }
        }
    }

    #[test]
    fn decode_refuses_a_truncated_file() {
        let err = decode(&BYTES[..BYTES.len() - 1], "fashion.bin")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not a whole number of 785-byte records"),
            "{err}"
        );
    }

    #[test]
    fn read_idx_refuses_a_truncated_file_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t10k-labels-idx1-ubyte");
        let mut bytes = vec![0, 0, 8, 1];
        bytes.extend_from_slice(&10u32.to_be_bytes());
        bytes.extend_from_slice(&[1; 9]);
        std::fs::write(&path, &bytes).unwrap();
        let err = read_idx(&path, 1).unwrap_err().to_string();
        assert!(
            err.contains("t10k-labels-idx1-ubyte") && err.contains("truncated"),
            "{err}"
        );
        let missing = read_idx(&dir.path().join("nothing"), 1)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("fetch-fashion-mnist.sh"), "{missing}");
    }
}
